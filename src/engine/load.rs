//! Loading an [`Engine`]: a bundle read and verified, its encoder built on
//! the backend and device asked for; on the native CPU engine, the
//! schedule read from a native section ([`native::section`]) the bundle
//! ships ([`shipped`]) or a section cache holds, else lowered (and saved in
//! the cache).

use std::path::Path;
use std::time::Instant;

#[cfg(feature = "tract")]
use tract_core::internal::*;

#[cfg(feature = "cuda")]
use super::cuda_encoder;
use super::{native, shipped, Device, Engine, EngineError, EngineKind};
#[cfg(feature = "tract")]
use super::{one_line, open_encoder, parse_encoder, tract, Opened};
use crate::bundle::{Bundle, Trust};
use crate::section_cache::SectionCache;
#[cfg(feature = "tract")]
use crate::tract_graph;

/// What became of the native section: read from the bundle, or, on a load
/// with a section cache, read from it or saved there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SectionUse {
    /// The schedule was read from the section the bundle ships for this
    /// kernel path.
    Shipped,
    /// The schedule was read from the saved section.
    Read,
    /// The graph was lowered and its section saved; `refused`: why the
    /// section that was there could not be used.
    Saved { refused: Option<String> },
    /// The graph was lowered and no section saved: why.
    NotSaved(String),
}

impl Engine {
    pub fn load(dir: &Path) -> Result<Self, EngineError> {
        Self::load_with(dir, &Trust::default())
    }

    /// Loads a bundle that must first satisfy `trust` (a required signature),
    /// on the native engine.
    pub fn load_with(dir: &Path, trust: &Trust) -> Result<Self, EngineError> {
        Self::load_on(dir, trust, EngineKind::Native, 1)
    }

    /// Loads a bundle that must first satisfy `trust`, on the backend `kind`
    /// with `threads` compute threads (tract's are set process-wide, see
    /// `tract_linalg::multithread`). The encoder is parsed from the bytes
    /// that were hashed.
    pub fn load_on(
        dir: &Path,
        trust: &Trust,
        kind: EngineKind,
        threads: usize,
    ) -> Result<Self, EngineError> {
        Self::load_device(dir, trust, kind, threads, Device::Cpu)
    }

    /// As [`Engine::load_on`], the encoder on `device` (`Device::Cuda`
    /// runs the native engine's schedule on the GPU).
    pub fn load_device(
        dir: &Path,
        trust: &Trust,
        kind: EngineKind,
        threads: usize,
        device: Device,
    ) -> Result<Self, EngineError> {
        Self::load_cached(dir, trust, kind, threads, device, None)
    }

    /// As [`Engine::load_device`]. The native engine on the CPU reads its
    /// schedule from the native section the bundle ships for this CPU's
    /// kernel path when there is one ([`shipped`]), else, with a `cache`,
    /// from the section saved there for this bundle and kernel path (no
    /// graph parsed, no weight packed or copied: see [`native::section`]),
    /// else lowers the graph (and saves its section in the cache for the
    /// next start).
    pub fn load_cached(
        dir: &Path,
        trust: &Trust,
        kind: EngineKind,
        threads: usize,
        device: Device,
        cache: Option<&SectionCache>,
    ) -> Result<Self, EngineError> {
        if let (EngineKind::Native, Device::Cpu) = (kind, device) {
            return Self::load_native(dir, trust, threads, cache);
        }
        Self::load_graph(dir, trust, kind, device)
    }

    /// tract on the CPU, or the native schedule on a GPU.
    #[cfg(feature = "tract")]
    fn load_graph(
        dir: &Path,
        trust: &Trust,
        kind: EngineKind,
        device: Device,
    ) -> Result<Self, EngineError> {
        let t0 = Instant::now();
        if device == Device::Cuda && kind == EngineKind::Tract {
            return Err(EngineError::Device(
                "--device cuda runs the native engine's schedule; --engine tract runs on the CPU only".into(),
            ));
        }
        if device == Device::Cuda && !cfg!(feature = "cuda") {
            return Err(EngineError::Device(
                "--device cuda: this clip-edge was built without CUDA (cargo build --features cuda)".into(),
            ));
        }
        let opened = open_encoder(dir, trust)?;
        #[cfg(feature = "cuda")]
        if device == Device::Cuda {
            let enc = cuda_encoder(&opened, 1)?;
            log_stage(t0, "encoder ready on the GPU");
            let macs = count_macs(&opened.model);
            let Opened { bundle, .. } = opened;
            return Self::with_encoder(bundle, Box::new(enc), macs);
        }
        let Opened {
            bundle,
            model,
            path,
        } = opened;
        let r = bundle.manifest.preprocess.resolution as usize;
        let dim = bundle.manifest.model.embed_dim;
        let macs = count_macs(&model);
        let encoder = tract::TractEncoder::new(model, r, dim).map_err(|e| EngineError::Graph {
            path,
            why: one_line(&format!("{e:#}")),
        })?;
        log_stage(t0, "encoder ready");
        Self::with_encoder(bundle, Box::new(encoder), macs)
    }

    /// A build without tract runs the native engine on the CPU only.
    #[cfg(not(feature = "tract"))]
    fn load_graph(
        _dir: &Path,
        _trust: &Trust,
        kind: EngineKind,
        device: Device,
    ) -> Result<Self, EngineError> {
        Err(EngineError::Unsupported(format!(
            "--engine {kind} --device {device}: this clip-edge was built without tract (the `tract` feature): it runs the native engine on the CPU, from native sections"
        )))
    }

    fn load_native(
        dir: &Path,
        trust: &Trust,
        threads: usize,
        cache: Option<&SectionCache>,
    ) -> Result<Self, EngineError> {
        let t0 = Instant::now();
        let stage = |what: &str| log_stage(t0, what);
        let bundle = Bundle::open_without_encoder(dir, trust)?;
        stage("manifest and table read and verified");
        let kernels = crate::kernels::Kernels::detect();
        // Without a graph to lower, a section for a lesser path this CPU
        // runs is better than none.
        #[cfg(feature = "tract")]
        let candidates = [kernels];
        #[cfg(not(feature = "tract"))]
        let candidates = shipped::candidates(&bundle, kernels);
        let options = section_options(&bundle);
        // The bundle's own sections, this path's first.
        let mut shipped_refused: Vec<String> = Vec::new();
        for (i, &kern) in candidates.iter().enumerate() {
            let layout = kern.packing().name;
            let why = match shipped::open(&bundle, layout) {
                Ok(Some((path, bytes))) => {
                    let mb = (*bytes).as_ref().len() as f64 / 1e6;
                    let key = shipped::key(&bundle, layout, &options);
                    match from_section(bytes, kern, &key, threads) {
                        Ok((native, macs)) => {
                            let best = kernels.packing().name;
                            if layout != best {
                                let mut why = Vec::new();
                                if shipped::entry(&bundle, best).is_none() {
                                    why.push(format!("the bundle ships none for {best}"));
                                }
                                why.extend(shipped_refused.iter().map(|w| format!("refused {w}")));
                                log::info!(
                                    "native section: {}; running the bundle's {} section (this CPU runs that path too)",
                                    why.join("; "),
                                    layout
                                );
                            }
                            log::info!(
                                "native section {}: read ({mb:.1} MB, {} kernels)",
                                path.display(),
                                kern.name
                            );
                            stage("encoder ready from the bundle's native section");
                            let mut engine = Self::with_encoder(bundle, Box::new(native), macs)?;
                            engine.section = Some(SectionUse::Shipped);
                            return Ok(engine);
                        }
                        Err(native::section::SectionError::Key) => format!(
                            "{}: made by another clip-edge version or with other schedule options \
                             (this is clip-edge {}; {options}): make it again with this version's \
                             `clip-quantize sections`",
                            path.display(),
                            env!("CARGO_PKG_VERSION"),
                        ),
                        Err(why) => format!("{}: {why}", path.display()),
                    }
                }
                Ok(None) => continue,
                Err(why) => why,
            };
            let next = candidates.get(i + 1).map_or(String::new(), |k| {
                format!("; trying its {} section", k.packing().name)
            });
            log::warn!("native section {why}; not used{next}");
            shipped_refused.push(why);
        }
        #[cfg(feature = "tract")]
        {
            // Said in the log; lowering the graph stands in for it.
            let _ = shipped_refused;
            Self::load_lowered(bundle, kernels, &options, threads, cache, t0)
        }
        #[cfg(not(feature = "tract"))]
        {
            // Sections in the cache are only ever saved by a build that
            // lowers, and read by that build alone.
            let _ = cache;
            let listed = bundle
                .manifest
                .native
                .iter()
                .map(|n| n.kernels.as_str())
                .collect::<Vec<_>>();
            let why = if !shipped_refused.is_empty() {
                shipped_refused.join("; ")
            } else if listed.is_empty() {
                "it ships no native section".to_string()
            } else {
                format!("it ships native sections for {} only", listed.join(", "))
            };
            Err(EngineError::Unsupported(format!(
                "{}: {why}; this clip-edge runs only native sections (built without the `tract` feature): make one for this CPU on the host with `clip-quantize sections {} --kernels {}` (and --sign KEY if the bundle is signed)",
                dir.display(),
                dir.display(),
                kernels.packing().name
            )))
        }
    }

    /// The native engine from the section saved in `cache` for this bundle
    /// and kernel path, else from the graph lowered (its section saved
    /// there for the next start).
    #[cfg(feature = "tract")]
    fn load_lowered(
        mut bundle: Bundle,
        kernels: crate::kernels::Kernels,
        options: &str,
        threads: usize,
        cache: Option<&SectionCache>,
        t0: Instant,
    ) -> Result<Self, EngineError> {
        let stage = |what: &str| log_stage(t0, what);
        let float = float_weights(&bundle);
        let graph_err = |path: &str, e: super::schedule::ir::LowerError| EngineError::Graph {
            path: path.to_string(),
            why: one_line(&e.to_string()),
        };
        let (entry, mut not_saved) =
            match cache.map(|c| c.entry(&bundle, kernels.packing().name, options)) {
                Some(Ok(e)) => (Some(e), None),
                Some(Err(why)) => {
                    log::warn!("native section: {why}; the cache is not used");
                    (None, Some(why.0))
                }
                None => (None, None),
            };
        let mut refused = None;
        if let (Some(cache), Some(e)) = (cache, &entry) {
            let shown = e.path.display();
            match cache.open(e) {
                Ok(Some(bytes)) => {
                    let mb = (*bytes).as_ref().len() as f64 / 1e6;
                    match from_section(bytes, kernels, &e.key, threads) {
                        Ok((native, macs)) => {
                            log::info!("native section {shown}: read ({mb:.1} MB, {} kernels)", kernels.name);
                            stage("encoder ready from its native section");
                            let mut engine = Self::with_encoder(bundle, Box::new(native), macs)?;
                            engine.section = Some(SectionUse::Read);
                            return Ok(engine);
                        }
                        Err(why) => {
                            // Stale after an upgrade or a change of CPU or
                            // options: expected. Anything else: a damaged or
                            // forged file.
                            let level = match why {
                                native::section::SectionError::Key
                                | native::section::SectionError::Kernels { .. }
                                | native::section::SectionError::Version { .. } => log::Level::Info,
                                _ => log::Level::Warn,
                            };
                            log::log!(level, "native section {shown}: {why}; lowering the graph again");
                            refused = Some(why.to_string());
                        }
                    }
                }
                Ok(None) => log::info!(
                    "native section: none in {} for this bundle and the {} kernels yet; lowering the graph (saved for the next start)",
                    cache.dir().display(),
                    kernels.name
                ),
                Err(why) => {
                    log::warn!("native section {shown}: {why}");
                    not_saved = Some(why.0);
                }
            }
        }
        bundle.read_encoder()?;
        stage("encoder file read and verified");
        let Graph {
            bundle,
            model,
            path,
            macs,
        } = Graph::for_lowering(parse_encoder(bundle, t0)?)?;
        let schedule = lowered(&model, &kernels.packing(), float, &path)?;
        drop(model);
        stage("graph lowered");
        let section = match (cache, &entry) {
            (Some(cache), Some(e)) => Some(save_section(
                cache,
                e,
                &schedule,
                &kernels.packing(),
                macs,
                not_saved,
                refused,
            )),
            _ => not_saved.map(SectionUse::NotSaved),
        };
        let native = native::Native::from_lowered(schedule, kernels, threads)
            .map_err(|e| graph_err(&path, e))?;
        stage("encoder ready");
        let mut engine = Self::with_encoder(bundle, Box::new(native), macs)?;
        engine.section = section;
        Ok(engine)
    }
}

/// A bundle's graph made ready for lowering, with the multiply-adds of one
/// frame.
#[cfg(feature = "tract")]
pub(super) struct Graph {
    pub bundle: Bundle,
    pub model: TypedModel,
    /// The encoder's file, for errors.
    pub path: String,
    pub macs: f64,
}

#[cfg(feature = "tract")]
impl Graph {
    pub fn for_lowering(opened: Opened) -> Result<Graph, EngineError> {
        let Opened {
            bundle,
            model,
            path,
        } = opened;
        let macs = count_macs(&model);
        let model = tract_graph::for_native(model).map_err(|e| EngineError::Graph {
            path: path.clone(),
            why: one_line(&format!("{e:#}")),
        })?;
        Ok(Graph {
            bundle,
            model,
            path,
            macs,
        })
    }
}

/// `model` lowered with its weights packed for `packing`, and checked as
/// [`native::Native::from_lowered`] checks it; errors name `path`.
#[cfg(feature = "tract")]
pub(super) fn lowered(
    model: &TypedModel,
    packing: &crate::kernels::Packing,
    float: native::FloatWeights,
    path: &str,
) -> Result<super::schedule::ir::Lowered, EngineError> {
    let err = |e: super::schedule::ir::LowerError| EngineError::Graph {
        path: path.to_string(),
        why: one_line(&e.to_string()),
    };
    let schedule = native::Native::schedule(model, packing, float).map_err(err)?;
    native::Native::check_schedule(&schedule).map_err(err)?;
    Ok(schedule)
}

/// The native engine on `kernels` from the section in `bytes`, made under
/// `key`, with the multiply-adds it records.
fn from_section(
    bytes: crate::engine::schedule::blob::SharedBytes,
    kernels: crate::kernels::Kernels,
    key: &str,
    threads: usize,
) -> Result<(native::Native, f64), native::section::SectionError> {
    let sec = native::section::read(bytes, &kernels.packing(), key)?;
    native::Native::from_lowered(sec.schedule, kernels, threads)
        .map(|n| (n, sec.macs))
        .map_err(|err| native::section::SectionError::Invalid(err.why))
}

/// Saves `schedule`'s section at `e` unless `not_saved` says why not (or
/// the schedule is past what a section may hold: it would be refused at
/// every start); what became of it.
#[cfg(feature = "tract")]
fn save_section(
    cache: &SectionCache,
    e: &crate::section_cache::Entry,
    schedule: &super::schedule::ir::Lowered,
    packing: &crate::kernels::Packing,
    macs: f64,
    not_saved: Option<String>,
    refused: Option<String>,
) -> SectionUse {
    let not_saved = not_saved.or_else(|| {
        native::section::check(schedule, packing)
            .err()
            .map(|why| format!("the schedule is past a section's limits: {why}"))
    });
    if let Some(why) = not_saved {
        return SectionUse::NotSaved(why);
    }
    let t = Instant::now();
    match cache.save(e, |w| {
        native::section::write(schedule, packing.name, &e.key, macs, w)
    }) {
        Ok(n) => {
            log::info!(
                "native section {}: saved ({:.1} MB in {:.0} ms)",
                e.path.display(),
                n as f64 / 1e6,
                t.elapsed().as_secs_f64() * 1e3
            );
            SectionUse::Saved { refused }
        }
        Err(why) => {
            log::warn!("native section: not saved: {why}");
            SectionUse::NotSaved(why.0)
        }
    }
}

/// How the native engine keeps f32 weights that are exactly f16: an fp32
/// bundle runs its products in f32 even where its weights are f16 values
/// (OpenAI's are): widening f16 costs more per product than the memory it
/// saves is worth there.
pub(super) fn float_weights(bundle: &Bundle) -> native::FloatWeights {
    match bundle.manifest.precision.as_str() {
        "fp32" => native::FloatWeights::F32,
        _ => native::FloatWeights::F16WhereExact,
    }
}

/// What a native section of `bundle` depends on besides the bundle, the
/// build and the kernel path: the weights' precision and the options that
/// shape a schedule (its cache entry's options, [`SectionCache::entry`]).
pub fn section_options(bundle: &Bundle) -> String {
    format!(
        "{:?} {}",
        float_weights(bundle),
        native::Native::schedule_options()
    )
}

/// A load stage in the log: the time since `t0` and the process's memory.
pub(super) fn log_stage(t0: Instant, what: &str) {
    log::info!(
        "load: {what} at {:.0} ms, {}",
        t0.elapsed().as_secs_f64() * 1e3,
        rss_mb()
    )
}

/// `VmRSS` / `VmHWM` of this process in MB, for the load log (Linux only).
fn rss_mb() -> String {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return "?".into();
    };
    let get = |key: &str| {
        s.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or("?".to_string(), |kb| format!("{}", kb / 1024))
    };
    format!("rss {} MB, peak {} MB", get("VmRSS:"), get("VmHWM:"))
}

/// Multiply-accumulates of a graph, from tract's per-op cost model.
#[cfg(feature = "tract")]
pub fn count_macs(model: &TypedModel) -> f64 {
    let mut total = 0f64;
    for node in &model.nodes {
        let Ok(facts) = model.node_input_facts(node.id) else {
            continue;
        };
        if let Ok(costs) = node.op.cost(&facts) {
            for (c, n) in costs {
                if let Cost::FMA(_) = c {
                    total += n.to_i64().unwrap_or(0) as f64;
                }
            }
        }
    }
    total
}
