//! `clip-edge`: the board binary. Loads a bundle and classifies frames.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::json;

use clip_edge::alloc_count::{self, Counting};
use clip_edge::board::BoardProfile;
use clip_edge::bundle::{Bundle, Trust};
use clip_edge::decode::decode_file;
use clip_edge::engine::{Device, Engine, EngineKind};
use clip_edge::eval::{list_labelled, Tally};
use clip_edge::preprocess::{ImageView, Mode, Preprocessor, CLIP_MEAN, CLIP_STD, MAX_RESOLUTION};
use clip_edge::signature::read_public_key;
use clip_edge::watch::config::WatchArgs;

/// `println!` that ends the process quietly when stdout is closed (`| head`)
/// instead of panicking.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($t)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// `clip-edge check-cuda` and the GPU part of `bench`.
#[path = "cli/check_cuda.rs"]
mod check_cuda;
/// `clip-edge watch`: settings, the service's parts, the run and reloads.
#[path = "cli/watch.rs"]
mod watch_cmd;

#[derive(Parser)]
#[command(
    name = "clip-edge",
    version,
    about = "CLIP zero-shot classification on edge boards"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The bundle to load, and what it must prove.
#[derive(clap::Args)]
struct BundleArg {
    /// The bundle directory (clip-quantize build --out).
    #[arg(long)]
    bundle: PathBuf,
    /// Refuse the bundle unless its manifest.sig is this public key's
    /// signature of its manifest (a KEY.pub from clip-quantize keygen).
    #[arg(long, value_name = "PUBKEY")]
    require_signature: Option<PathBuf>,
    /// Which backend runs the image encoder: native (ours; no allocation
    /// per frame) or tract (the reference). `info` only reads the bundle.
    #[arg(long, value_enum, default_value_t = EngineKind::Native)]
    engine: EngineKind,
    /// Where the encoder runs: cpu, or cuda (the first CUDA GPU, in a build
    /// with `--features cuda`).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
}

impl BundleArg {
    fn trust(&self) -> Result<Trust> {
        Ok(Trust {
            require_signature: match &self.require_signature {
                Some(p) => Some(read_public_key(p)?),
                None => None,
            },
        })
    }

    fn context(&self) -> String {
        format!("loading bundle {}", self.bundle.display())
    }

    fn engine(&self, threads: usize) -> Result<Engine> {
        Engine::load_device(
            &self.bundle,
            &self.trust()?,
            self.engine,
            threads,
            self.device,
        )
        .with_context(|| self.context())
    }

    fn open(&self) -> Result<Bundle> {
        Bundle::open_with(&self.bundle, &self.trust()?).with_context(|| self.context())
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Top-k labels of each image: softmax over all labels of logit_scale * cos(image, label).
    Classify {
        #[command(flatten)]
        bundle: BundleArg,
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// One JSON object per image and line.
        #[arg(long)]
        json: bool,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Zero-shot accuracy over an ImageNet-style folder (one sub-folder per label).
    Eval {
        #[command(flatten)]
        bundle: BundleArg,
        /// One sub-folder per label, named as the label or with `_` for spaces.
        #[arg(long)]
        images: PathBuf,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// How many of the most frequent confusion pairs to report.
        #[arg(long, default_value_t = 10)]
        confusions: usize,
        /// One JSON object: n, top1, top5, per_class, confusions, failed.
        #[arg(long)]
        json: bool,
    },
    /// Per-frame latency, throughput, memory and allocations of the steady state.
    Bench {
        #[command(flatten)]
        bundle: BundleArg,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long, default_value_t = 20)]
        iterations: usize,
        /// A board profile (boards/NAME.toml): adds achieved throughput as a percentage of its peak.
        #[arg(long)]
        board: Option<String>,
        /// Where the board profiles are (default: ./boards, else the source tree's).
        #[arg(long)]
        boards_dir: Option<PathBuf>,
        /// Native engine: adds `profile_ms`, milliseconds per frame by op class (timed per op), and `profile_steps`, each step's name, class, multiply-adds, ms and GMAC/s.
        #[arg(long)]
        profile: bool,
        /// `--device cuda`: also images per second at this batch (one CUDA
        /// graph of that many images).
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long)]
        json: bool,
    },
    /// The GPU encoder against the CPU native engine on random inputs:
    /// embedding cosine, top-1 agreement, batch consistency, GPU timings
    /// (`scripts/gpu-check`). Exit 1 when parity fails.
    CheckCuda {
        #[command(flatten)]
        bundle: BundleArg,
        #[arg(long, default_value_t = 8)]
        frames: usize,
        /// Images per run of the batched encoder compared too.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long)]
        json: bool,
    },
    /// The native kernels against tract's matrix multiply on ViT-B/32's
    /// linear-layer shapes, one thread: median ms per path.
    BenchKernels {
        #[arg(long, default_value_t = 10)]
        iterations: usize,
        #[arg(long)]
        json: bool,
    },
    /// What the manifest says, and whether every checksum matches.
    Info {
        #[command(flatten)]
        bundle: BundleArg,
        #[arg(long)]
        json: bool,
    },
    /// The camera loop: classify each frame of a source, raise events for
    /// watched labels (JSON lines, GPIO, MQTT).
    Watch(Box<WatchArgs>),
    /// Decode and preprocess images; prints per-image channel means as JSON lines.
    Preprocess {
        #[arg(long, default_value_t = 224)]
        resolution: u32,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"));
    // Under systemd (stderr is the journal): no timestamps of our own, the
    // level as a syslog priority prefix (sd-daemon(3)) so journald keeps it.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        logger.format(|buf, r| {
            use std::io::Write as _;
            let prio = match r.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(buf, "<{prio}>{}: {}", r.target(), r.args())
        });
    }
    logger.init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--threads`: at least 1 and at most four per CPU of this machine (more
/// cannot make an encoder faster, and a huge count fails to spawn inside
/// the thread pool).
fn set_threads(n: usize) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(16, |n| n.get());
    let max = 4 * cpus;
    if n == 0 || n > max {
        bail!("--threads {n}: expected 1 to {max} (4 x the {cpus} CPUs of this machine)");
    }
    // The native engine makes its own pool at load; tract's is process-wide.
    if n > 1 {
        use tract_linalg::multithread::{set_default_executor, Executor};
        set_default_executor(Executor::multithread(n));
    }
    log::info!("{n} thread(s)");
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Classify {
            bundle,
            top_k,
            threads,
            json,
            images,
        } => classify(&bundle, top_k, threads, json, &images),
        Cmd::Eval {
            bundle,
            images,
            threads,
            confusions,
            json,
        } => eval(&bundle, &images, threads, confusions, json),
        Cmd::Bench {
            bundle,
            threads,
            iterations,
            board,
            boards_dir,
            profile,
            batch,
            json,
        } => {
            let board = match board {
                Some(name) => {
                    let dir = boards_dir.unwrap_or_else(default_boards_dir);
                    Some(BoardProfile::by_name(&dir, &name)?)
                }
                None => None,
            };
            bench(
                &bundle,
                threads,
                iterations,
                board.as_ref(),
                profile,
                batch,
                json,
            )
        }
        Cmd::CheckCuda {
            bundle,
            frames,
            batch,
            json,
        } => check_cuda::run(&bundle.bundle, &bundle.trust()?, frames, batch, json),
        Cmd::Info { bundle, json } => info(&bundle, json),
        Cmd::BenchKernels { iterations, json } => bench_kernels(iterations, json),
        Cmd::Preprocess { resolution, images } => preprocess(resolution, &images),
        Cmd::Watch(args) => watch_cmd::watch(*args),
    }
}

fn bench_kernels(iterations: usize, json_out: bool) -> Result<ExitCode> {
    let kernels = clip_edge::kernels::Kernels::detect();
    let rows = clip_edge::kernel_bench::run(
        &clip_edge::kernel_bench::VIT_B32_SHAPES,
        iterations,
        kernels,
    )?;
    let peaks = clip_edge::kernel_bench::peaks(iterations, kernels);
    if json_out {
        out!(
            "{}",
            json!({"kernels": kernels.name, "cpu_features": cpu_features(), "fma_peaks": peaks, "rows": rows})
        );
        return Ok(ExitCode::SUCCESS);
    }
    for p in &peaks {
        out!(
            "{} f32 multiply-add peak: {:.1} GMAC/s",
            p.path,
            p.gmacs_per_s
        );
    }
    // A path's rows are named after it; the longest matching name wins
    // (`x86_64-avx512-vnni` over `x86_64-avx512`).
    let peak_of = |name: &str| {
        peaks
            .iter()
            .filter(|p| name.starts_with(&format!("{} ", p.path)))
            .max_by_key(|p| p.path.len())
            .map(|p| p.gmacs_per_s)
    };
    for r in &rows {
        out!("m {} k {} n {}:", r.m, r.k, r.n);
        let base = r.ms[0].1;
        let macs = (r.m * r.k * r.n) as f64;
        for (name, ms) in &r.ms {
            let rate = macs / ms / 1e6;
            // Float products only: the peak is f32 multiply-adds.
            let float = name.contains(" f32") || name.contains(" f16");
            let share = peak_of(name)
                .filter(|_| float)
                .map(|p| format!("  {:>5.1} % of the f32 peak", 100.0 * rate / p))
                .unwrap_or_default();
            out!(
                "  {name:<40} {ms:>9.3} ms  {:>6.2}x tract f32  {rate:>7.1} GMAC/s{share}",
                base / ms
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

fn classify(
    bundle: &BundleArg,
    top_k: usize,
    threads: usize,
    json: bool,
    images: &[PathBuf],
) -> Result<ExitCode> {
    set_threads(threads)?;
    if top_k == 0 {
        bail!("--top-k must be at least 1");
    }
    let mut engine = bundle.engine(threads)?;
    let mut failed = 0;
    for path in images {
        let t0 = Instant::now();
        let img = match decode_file(path) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
                continue;
            }
        };
        let decode = ms(t0);
        let t = match engine.classify(&img.view(), top_k) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                failed += 1;
                continue;
            }
        };
        let (top, labels) = (engine.top(), engine.bundle.labels());
        if json {
            let top: Vec<_> = top
                .iter()
                .map(|(i, s)| json!({"label": labels[*i], "score": s}))
                .collect();
            out!(
                "{}",
                json!({"image": path, "top": top,
                       "timings_ms": {"decode": decode, "preprocess": t.preprocess, "encode": t.encode, "score": t.score}})
            );
        } else {
            let parts: Vec<String> = top
                .iter()
                .map(|(i, s)| format!("{} ({:.3})", labels[*i], s))
                .collect();
            out!("{}: {}", path.display(), parts.join(", "));
        }
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn eval(
    bundle: &BundleArg,
    images: &Path,
    threads: usize,
    max_confusions: usize,
    json_out: bool,
) -> Result<ExitCode> {
    set_threads(threads)?;
    let mut engine = bundle.engine(threads)?;
    let labels = engine.bundle.labels().to_vec();
    let set = list_labelled(images, &labels)?;
    let mut tally = Tally::new(&labels);
    let mut failed = Vec::new();
    let bar = clip_edge::progress::bar(!json_out, set.len() as u64, "images");
    for (path, truth) in &set {
        bar.inc(1);
        let ranked = decode_file(path)
            .map_err(anyhow::Error::from)
            .and_then(|img| {
                engine
                    .classify(&img.view(), 5)
                    .with_context(|| path.display().to_string())
            });
        match ranked {
            Ok(_) => {
                let ranked: Vec<usize> = engine.top().iter().map(|(i, _)| *i).collect();
                tally.add(*truth, &ranked);
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                failed.push(path.display().to_string());
            }
        }
    }
    bar.finish_and_clear();
    let s = tally.summary(max_confusions);
    if json_out {
        let mut v = serde_json::to_value(&s)?;
        v["failed"] = json!(failed);
        out!("{v}");
    } else {
        out!(
            "{} images, {} labels: top-1 {:.2}%  top-5 {:.2}%",
            s.n,
            labels.len(),
            100.0 * s.top1,
            100.0 * s.top5
        );
        out!("per class (top-1):");
        for c in &s.per_class {
            out!("  {:>7.2}%  {:>5}  {}", 100.0 * c.top1, c.n, c.label);
        }
        if !s.confusions.is_empty() {
            out!("most frequent confusions (truth -> predicted):");
            for c in &s.confusions {
                out!("  {:>5}  {} -> {}", c.count, c.truth, c.predicted);
            }
        }
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn percentiles(v: &mut [f64]) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    json!({"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": v[v.len() - 1]})
}

fn peak_rss_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// What the CPU reports (std's runtime detection; none on 32-bit Arm, where
/// it is unstable: tract's ISA set, logged beside it, says whether NEON runs).
fn cpu_features() -> Vec<&'static str> {
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(unused_mut)
    )]
    let mut f = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        for (name, on) in [
            ("sse4.1", is_x86_feature_detected!("sse4.1")),
            ("avx", is_x86_feature_detected!("avx")),
            ("avx2", is_x86_feature_detected!("avx2")),
            ("fma", is_x86_feature_detected!("fma")),
            ("f16c", is_x86_feature_detected!("f16c")),
            ("avx512f", is_x86_feature_detected!("avx512f")),
            ("avx512vnni", is_x86_feature_detected!("avx512vnni")),
        ] {
            if on {
                f.push(name);
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        for (name, on) in [
            ("neon", std::arch::is_aarch64_feature_detected!("neon")),
            ("fp16", std::arch::is_aarch64_feature_detected!("fp16")),
            (
                "dotprod",
                std::arch::is_aarch64_feature_detected!("dotprod"),
            ),
            ("i8mm", std::arch::is_aarch64_feature_detected!("i8mm")),
        ] {
            if on {
                f.push(name);
            }
        }
    }
    f
}

fn default_boards_dir() -> PathBuf {
    let here = PathBuf::from("boards");
    if here.is_dir() {
        here
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("boards")
    }
}

fn bench(
    bundle: &BundleArg,
    threads: usize,
    iterations: usize,
    board: Option<&BoardProfile>,
    profile: bool,
    batch: usize,
    json_out: bool,
) -> Result<ExitCode> {
    set_threads(threads)?;
    if iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    let mut engine = bundle.engine(threads)?;
    // A deterministic 640x480 camera-like frame.
    log::info!(
        "cpu features: {:?}; tract kernels for {:?}",
        cpu_features(),
        tract_linalg::isa::native()
    );
    let (w, h) = (640u32, 480u32);
    let frame: Vec<u8> = (0..w * h * 3)
        .map(|i| ((i * 7 + i / 1920 * 13) % 251) as u8)
        .collect();
    let img = ImageView::new(w, h, Mode::Rgb, &frame);
    let k = 5.min(engine.bundle.labels().len());
    for _ in 0..3 {
        engine.classify(&img, k)?;
    }
    if profile && !engine.set_profiling(true) {
        bail!("--profile times the native engine's ops; `--engine tract` has no such timing");
    }
    let (mut pre, mut enc, mut sc, mut tot) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    pre.reserve(iterations);
    enc.reserve(iterations);
    sc.reserve(iterations);
    tot.reserve(iterations);
    let mut allocs = [0u64; 3];
    let mut bytes = 0u64;
    for _ in 0..iterations {
        let t0 = Instant::now();
        let a0 = alloc_count::snapshot();
        engine.preprocess(&img)?;
        let a1 = alloc_count::snapshot();
        let t1 = Instant::now();
        engine.encode()?;
        let a2 = alloc_count::snapshot();
        let t2 = Instant::now();
        engine.score(k);
        let a3 = alloc_count::snapshot();
        let t3 = Instant::now();
        allocs[0] += a1.0 - a0.0;
        allocs[1] += a2.0 - a1.0;
        allocs[2] += a3.0 - a2.0;
        bytes += a3.1 - a0.1;
        pre.push((t1 - t0).as_secs_f64() * 1e3);
        enc.push((t2 - t1).as_secs_f64() * 1e3);
        sc.push((t3 - t2).as_secs_f64() * 1e3);
        tot.push((t3 - t0).as_secs_f64() * 1e3);
    }
    let n = iterations as f64;
    let mean_total = tot.iter().sum::<f64>() / n;
    let mean_encode = enc.iter().sum::<f64>() / n;
    let m = &engine.bundle.manifest;
    let mut report = json!({
        "bundle": bundle.bundle,
        "architecture": m.model.architecture,
        "precision": m.precision,
        "resolution": m.preprocess.resolution,
        "labels": m.labels.len(),
        "threads": threads,
        "iterations": iterations,
        "latency_ms": {
            "preprocess": percentiles(&mut pre),
            "encode": percentiles(&mut enc),
            "score": percentiles(&mut sc),
            "total": percentiles(&mut tot),
        },
        "fps": 1e3 / mean_total,
        "peak_rss_kb": peak_rss_kb(),
        "allocations_per_frame": {
            "preprocess": allocs[0] as f64 / n,
            "encode": allocs[1] as f64 / n,
            "score": allocs[2] as f64 / n,
        },
        "bytes_allocated_per_frame": bytes as f64 / n,
        "encoder_macs": engine.macs,
        "encoder_gflops": 2.0 * engine.macs / (mean_encode * 1e-3) / 1e9,
        "cpu_features": cpu_features(),
        "engine": engine.kind(),
        "ops": engine.op_summary().into_iter().map(|(k, (n, info))| (k, json!({"count": n, "info": info}))).collect::<serde_json::Map<_, _>>(),
        "native": engine.native_summary(),
        "arch": std::env::consts::ARCH,
    });
    if profile {
        report["profile_ms"] = json!(engine.profile());
        report["profile_steps"] = json!(engine.profile_steps());
    }
    report["device"] = json!(engine.device());
    #[cfg(feature = "cuda")]
    if engine.device() == Device::Cuda {
        report["cuda"] = check_cuda::bench_cuda(&bundle.bundle, &bundle.trust()?, &engine, batch)?;
    }
    #[cfg(not(feature = "cuda"))]
    let _ = batch;
    if let Some(b) = board {
        // tract runs every bundle's arithmetic in f32 (see README), so the fp32 peak applies.
        let used = threads.min(b.cpu.cores) as f64;
        let peak = b.peak_per_core.fp32 * used;
        let achieved = report["encoder_gflops"].as_f64().unwrap_or(0.0);
        report["board"] = json!({
            "name": b.name,
            "peak_gflops": peak,
            "percent_of_peak": 100.0 * achieved / peak,
            "peak_basis": "fp32 x threads",
        });
    }
    if json_out {
        out!("{report}");
    } else {
        out!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn info(bundle: &BundleArg, json_out: bool) -> Result<ExitCode> {
    let b = bundle.open()?;
    let dir = &bundle.bundle;
    let m = &b.manifest;
    if json_out {
        let mut v = serde_json::to_value(m)?;
        v["checksums"] = json!("ok");
        out!("{v}");
    } else {
        out!(
            "bundle {} (format {}, written by {} with tract {})",
            dir.display(),
            m.format_version,
            m.created_by,
            m.tract_version
        );
        out!(
            "  model      {} ({}), embed dim {}, {} px",
            m.model.architecture,
            m.model.family,
            m.model.embed_dim,
            m.preprocess.resolution
        );
        out!(
            "  source     {} ({}), sha256 {}",
            m.source.checkpoint,
            m.source.format,
            m.source.sha256
        );
        out!(
            "  precision  {} (activations {})",
            m.precision,
            m.activation
        );
        out!(
            "  labels     {} ({} template(s)), table {} [{}x{}]",
            m.labels.len(),
            m.templates.len(),
            m.table.dtype,
            m.table.rows,
            m.table.dim
        );
        out!(
            "  report     cosine mean {:.6} min {:.6}, top-1 agreement {:.1}%",
            m.report.cosine_mean,
            m.report.cosine_min,
            100.0 * m.report.top1_agreement
        );
        out!("  checksums  ok ({} files)", m.files.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn preprocess(resolution: u32, images: &[PathBuf]) -> Result<ExitCode> {
    if resolution == 0 || resolution > MAX_RESOLUTION {
        bail!("--resolution {resolution}: expected 1 to {MAX_RESOLUTION}");
    }
    let mut pre = Preprocessor::new();
    let mut buf = vec![0f32; Preprocessor::output_len(resolution)];
    let plane = resolution as usize * resolution as usize;
    let mut failed = false;
    for path in images {
        let res = decode_file(path)
            .map_err(anyhow::Error::from)
            .and_then(|img| {
                pre.run(&img.view(), resolution, CLIP_MEAN, CLIP_STD, &mut buf)
                    .with_context(|| format!("preprocessing {}", path.display()))
            });
        match res {
            Ok(()) => {
                let means: Vec<f32> = buf
                    .chunks(plane)
                    .map(|c| c.iter().sum::<f32>() / plane as f32)
                    .collect();
                out!("{}", json!({"image": path, "channel_means": means}));
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
