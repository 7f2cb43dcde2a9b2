//! Writes graphs as `.nnef.tgz` (tract NNEF with the `tract_core` extension);
//! the runtime reads them back with [`clip_edge::tract_graph::load_nnef`].

use std::io::Write;
use std::path::Path;

use tract_core::internal::*;

/// Serialises `model` to a gzipped NNEF tar at `path`, atomically (temporary
/// file, then rename).
pub fn write_nnef_tgz(model: &TypedModel, path: &Path) -> TractResult<()> {
    let tmp = path.with_extension("tmp-write");
    let res = (|| -> TractResult<()> {
        let f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        let gz = clip_edge::tract_graph::nnef().write_to_tar_with_config(model, gz, false, true)?;
        let mut f = gz.finish()?;
        f.flush()?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}
