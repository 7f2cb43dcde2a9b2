//! Native sections a bundle ships: the encoder lowered and its weights
//! packed on the host for a board's kernel path (`clip-quantize sections`,
//! which packs with [`crate::kernels::Packing::named`]), listed in the
//! manifest's `[[native]]` with their digest, and read in place at load
//! ([`crate::engine::native::section`]). A board then runs the bundle
//! without lowering the graph; a build without the `tract` feature runs
//! only such sections.

use std::path::PathBuf;

use crate::bundle::{Bundle, NativeSection, IMAGE_ENCODER};
use crate::engine::native::section;
use crate::engine::schedule::blob::SharedBytes;
use crate::kernels::Kernels;

/// The file name of the section shipped for `kernels`.
pub fn file_name(kernels: &str) -> String {
    format!("native-{kernels}.section")
}

/// The key a section shipped in `bundle` for `kernels` carries: the
/// version, the section format and the fingerprint of the sources that
/// give a section's bytes their meaning (the schedule, the executor, the
/// weight layouts: `build.rs`), the encoder it was lowered from, the kernel
/// path and the options that shape a schedule
/// ([`crate::engine::section_options`]). The manifest names the section
/// by its digest, so the key needs no more.
pub fn key(bundle: &Bundle, kernels: &str, options: &str) -> String {
    format!(
        "clip-edge {} section {} sources {}; shipped; encoder sha256 {}; kernels {kernels}; {options}",
        env!("CARGO_PKG_VERSION"),
        section::VERSION,
        env!("CLIP_EDGE_SECTION_SOURCES"),
        bundle
            .manifest
            .files
            .get(IMAGE_ENCODER)
            .map_or("none", String::as_str),
    )
}

/// The kernel paths whose shipped sections a build without a graph to
/// lower tries, in order: `best` (this CPU's path), then every lesser path
/// this CPU runs that the bundle ships a section for, best first (the
/// scalar twins last), so that a section refused (damaged, from another
/// build) still leaves the next. `best` alone when the bundle ships none
/// of them, or when a path was forced (`CLIP_EDGE_KERNELS`).
pub fn candidates(bundle: &Bundle, best: Kernels) -> Vec<Kernels> {
    if std::env::var_os("CLIP_EDGE_KERNELS").is_some() {
        return vec![best];
    }
    let mut paths = Kernels::available();
    paths.insert(0, Kernels::SCALAR);
    let layout = |k: &Kernels| k.packing().name;
    let mut v: Vec<Kernels> = paths
        .into_iter()
        .rev()
        .filter(|k| layout(k) != layout(&best) && entry(bundle, layout(k)).is_some())
        .collect();
    if entry(bundle, layout(&best)).is_some() || v.is_empty() {
        v.insert(0, best);
    }
    v
}

/// The manifest's entry for `kernels`, if the bundle ships one.
pub fn entry<'b>(bundle: &'b Bundle, kernels: &str) -> Option<&'b NativeSection> {
    bundle.manifest.native.iter().find(|n| n.kernels == kernels)
}

/// The section `bundle` ships for `kernels`, mapped, with its path:
/// `Ok(None)` when the manifest lists none; an error when its file is
/// missing, not private to this user (or root: another user could change
/// it under the mapping; [`crate::section_cache::map_private`]), or its
/// digest is not the manifest's (the section's reader then checks that
/// digest against its bytes).
pub fn open(bundle: &Bundle, kernels: &str) -> Result<Option<(PathBuf, SharedBytes)>, String> {
    let Some(n) = entry(bundle, kernels) else {
        return Ok(None);
    };
    let path = bundle.dir.join(&n.file);
    let shown = path.display();
    let bytes = crate::section_cache::map_private(&path)
        .map_err(|why| format!("{shown}: {why}"))?
        .ok_or_else(|| format!("{shown}: listed in the manifest, missing"))?;
    let all: &[u8] = (*bytes).as_ref();
    if all.len() as u64 != n.bytes {
        return Err(format!(
            "{shown}: {} bytes, the manifest says {}",
            all.len(),
            n.bytes
        ));
    }
    if section::digest_hex(all).as_deref() != Some(n.blake3.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "{shown}: its digest is not the manifest's: the file was changed or replaced"
        ));
    }
    Ok(Some((path, bytes)))
}

/// What `clip-quantize sections` makes sections with: a bundle's encoder
/// read and verified, ready to lower and pack for any kernel path.
#[cfg(feature = "tract")]
pub struct Maker(super::load::Graph);

#[cfg(feature = "tract")]
impl Maker {
    /// The bundle at `dir`, its encoder read, verified and parsed.
    pub fn open(dir: &std::path::Path) -> Result<Maker, super::EngineError> {
        let opened = super::open_encoder(dir, &crate::bundle::Trust::default())?;
        super::load::Graph::for_lowering(opened).map(Maker)
    }

    pub fn bundle(&self) -> &Bundle {
        &self.0.bundle
    }

    /// The section this bundle ships for `packing`'s kernel path, as the
    /// board would lower and pack it, ready to write.
    pub fn section(
        &self,
        packing: &crate::kernels::Packing,
    ) -> Result<Section, super::EngineError> {
        let g = &self.0;
        let in_section = |why: String| super::EngineError::Graph {
            path: g.path.clone(),
            why: format!("the {} section: {why}", packing.name),
        };
        let float = super::load::float_weights(&g.bundle);
        let schedule =
            super::load::lowered(&g.model, packing, float, &g.path).map_err(|e| match e {
                super::EngineError::Graph { why, .. } => in_section(why),
                e => e,
            })?;
        section::check(&schedule, packing).map_err(|why| {
            in_section(super::one_line(&format!(
                "past a native section's limits: {why}"
            )))
        })?;
        let options = super::section_options(&g.bundle);
        Ok(Section {
            key: key(&g.bundle, packing.name, &options),
            kernels: packing.name,
            macs: g.macs,
            schedule,
        })
    }
}

/// A section made by [`Maker::section`].
#[cfg(feature = "tract")]
pub struct Section {
    schedule: crate::engine::schedule::ir::Lowered,
    kernels: &'static str,
    key: String,
    macs: f64,
}

#[cfg(feature = "tract")]
impl Section {
    /// Writes the section into `out`; returns the bytes written.
    pub fn write(&self, out: &mut impl std::io::Write) -> std::io::Result<u64> {
        section::write(&self.schedule, self.kernels, &self.key, self.macs, out)
    }
}
