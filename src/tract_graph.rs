//! Loading and running an encoder graph serialised as tract NNEF.

use std::path::Path;

use tract_core::internal::*;

/// A runnable, optimised tract plan.
pub type Plan = Arc<TypedSimplePlan>;

/// tract's NNEF framework with this project's registry: tract-core ops
/// that `tract_nnef` itself does not serialise but exports decluttered by
/// tract contain (GELU by erf, as tract fuses it). A graph without them
/// is written exactly as before; an older runtime refuses one with them
/// (an unknown registry) rather than misreading it.
pub fn nnef() -> tract_nnef::framework::Nnef {
    let mut registry = tract_nnef::internal::Registry::new("clip_edge");
    registry.register_unit_element_wise("clip_edge_gelu_exact", &tract_core::ops::nn::GeluExact {});
    tract_nnef::nnef().with_registry(registry)
}

/// Reads a `.nnef.tgz` (or NNEF directory) written by `clip-quantize`.
pub fn load_nnef(path: &Path) -> TractResult<TypedModel> {
    nnef()
        .model_for_path(path)
        .with_context(|| format!("loading NNEF graph {}", path.display()))
}

/// Largest image encoder once decompressed (ViT-L/14@336px at fp32 is
/// about 1.2 GB).
pub const MAX_ENCODER_UNPACKED_BYTES: u64 = 3 << 30;
/// Size of an NNEF tensor file's header.
const NNEF_DAT_HEADER: usize = 128;

/// Reads a `.nnef.tgz` (or plain tar) held in memory: the bytes a bundle
/// verified. [`unpack_nnef`] then [`read_nnef_tar`].
/// (A copy of `bytes` is made: the engine hands its own over instead.)
pub fn read_nnef(bytes: &[u8]) -> TractResult<TypedModel> {
    read_nnef_tar(&unpack_nnef(bytes.to_vec())?)
}

/// A gzip'd archive decompressed once, into memory, to at most
/// [`MAX_ENCODER_UNPACKED_BYTES`] (the compressed bytes are freed as soon as
/// that is done); a plain tar is returned as it is. Nothing inflates the
/// archive twice: that was half of the start-up time.
pub fn unpack_nnef(bytes: Vec<u8>) -> TractResult<Vec<u8>> {
    let limit = unpacked_limit(bytes.len());
    unpack_bounded(bytes, limit)
}

/// How far an archive of `compressed` bytes may inflate:
/// [`MAX_ENCODER_UNPACKED_BYTES`], and no more than [`MAX_INFLATION`] times
/// its size plus 16 MiB (weights compress 1–3×; the graph's text and the tar
/// padding more, but they are small), and within what one allocation can
/// hold on a 32-bit board. A small bomb is refused after a bounded amount of
/// memory, not after 3 GB.
pub fn unpacked_limit(compressed: usize) -> u64 {
    (compressed as u64)
        .saturating_mul(MAX_INFLATION)
        .saturating_add(16 << 20)
        .min(MAX_ENCODER_UNPACKED_BYTES)
        .min(isize::MAX as u64 / 2)
}

/// See [`unpacked_limit`].
pub const MAX_INFLATION: u64 = 16;

fn unpack_bounded(bytes: Vec<u8>, limit: u64) -> TractResult<Vec<u8>> {
    use std::io::Read;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::with_capacity(unpacked_size_hint(&bytes, limit));
    flate2::read::GzDecoder::new(&bytes[..])
        .take(limit + 1)
        .read_to_end(&mut out)
        .context("reading NNEF archive: gzip")?;
    if out.len() as u64 > limit {
        bail!("NNEF archive decompresses past {limit} bytes");
    }
    Ok(out)
}

/// The gzip trailer's size (modulo 2³²) as a capacity, when it is plausible:
/// at most 16 times the compressed size (weights compress 1–3×) and within
/// the limit. Anything else (a bomb, a lie) gets no head start: the buffer
/// grows as the data really arrives.
fn unpacked_size_hint(gz: &[u8], limit: u64) -> usize {
    let Some(tail) = gz.len().checked_sub(4).map(|i| &gz[i..]) else {
        return 0;
    };
    let isize = u32::from_le_bytes(tail.try_into().expect("4 bytes")) as u64;
    if isize <= MAX_INFLATION * gz.len() as u64 && isize <= limit {
        isize as usize
    } else {
        0
    }
}

/// Parses an uncompressed NNEF tar. First a pass over its entries: every
/// `.dat` tensor's header must declare no more data than its tar entry holds
/// (tract allocates what the header declares before reading). Then tract
/// parses it; a panic inside tract's parser (not written for hostile input)
/// becomes an error.
pub fn read_nnef_tar(tar: &[u8]) -> TractResult<TypedModel> {
    check_nnef_tar(tar)?;
    let read = std::panic::AssertUnwindSafe(|| nnef().model_for_read(&mut &tar[..]));
    match std::panic::catch_unwind(read) {
        Ok(r) => r.context("reading NNEF graph"),
        Err(p) => {
            let why = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("unknown");
            bail!("reading NNEF graph: the parser failed ({why})")
        }
    }
}

fn check_nnef_tar(bytes: &[u8]) -> TractResult<()> {
    use std::io::Read;
    let mut tar = tar::Archive::new(bytes);
    for entry in tar.entries().context("reading NNEF archive")? {
        let mut entry = entry.context("reading NNEF archive")?;
        let size = entry.size();
        let path = entry
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if !path.ends_with(".dat") {
            continue;
        }
        let mut header = [0u8; NNEF_DAT_HEADER];
        entry
            .read_exact(&mut header)
            .with_context(|| format!("NNEF tensor {path}: truncated header"))?;
        let data = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as u64;
        let rank = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if rank > 8 || data + NNEF_DAT_HEADER as u64 > size {
            bail!(
                "NNEF tensor {path}: header declares {data} bytes of rank {rank}, the archive holds {}",
                size.saturating_sub(NNEF_DAT_HEADER as u64)
            );
        }
    }
    Ok(())
}

/// Optimises a graph and makes it runnable. Constant subgraphs (weights
/// stored as f16/i8 and dequantised in the graph) are folded first, whatever
/// their size, so every frame runs on f32 weights computed once at load.
pub fn into_plan(mut model: TypedModel) -> TractResult<Plan> {
    fold_constants(&mut model)?;
    model.into_optimized()?.into_runnable()
}

/// Replaces every node whose inputs are all constants by its value, without
/// tract's folding budget (which keeps large casts of constants in the graph).
pub fn fold_constants(model: &mut TypedModel) -> TractResult<()> {
    loop {
        let mut folded = false;
        for id in model.eval_order()? {
            let node = &model.nodes[id];
            if node.op_is::<tract_core::ops::konst::Const>() || node.inputs.is_empty() {
                continue;
            }
            let name = node.name.clone();
            let outputs = {
                let facts = model.node_input_facts(id)?;
                if !facts.iter().all(|f| f.konst.is_some()) {
                    continue;
                }
                let inputs = facts
                    .iter()
                    .map(|f| f.konst.clone().unwrap().into_tvalue())
                    .collect();
                match node.op.eval_out_of_plan(inputs) {
                    Ok(Some(outputs)) => outputs,
                    _ => continue,
                }
            };
            let mut patch = TypedModelPatch::default();
            for (ix, t) in outputs.into_iter().enumerate() {
                let name = format!("{name}.folded{ix}");
                let wire = patch.add_const(name, t.into_arc_tensor())?;
                patch.shunt_outside(model, OutletId::new(id, ix), wire)?;
            }
            patch.apply(model)?;
            folded = true;
            break;
        }
        if !folded {
            break;
        }
    }
    model.compact()
}

/// The matrix-multiply kernels an optimised plan runs (tract's `Mult:` op
/// info lines, e.g. `arm64simd_mmm_f32_8x8_gen`), sorted, without repeats.
pub fn matmul_kernels(plan: &Plan) -> Vec<String> {
    let mut k: Vec<String> = plan
        .model()
        .nodes
        .iter()
        .flat_map(|n| n.op.info().unwrap_or_default())
        .filter(|l| l.starts_with("Mult:"))
        .collect();
    k.sort();
    k.dedup();
    k
}

/// Runs a single-input, single-output plan, returning the f32 output values.
pub fn run_f32(plan: &Plan, input: Tensor) -> TractResult<Vec<f32>> {
    let out = plan.run(tvec!(input.into_tvalue()))?;
    let t = out[0].cast_to::<f32>()?;
    Ok(t.to_plain_array_view::<f32>()?.iter().copied().collect())
}

/// The graph the native engine lowers: as read. tract's declutter would
/// fold each layer's dequantised weights into f32 constants (four times an
/// int8 bundle's weights in memory, and most of the load time); the
/// lowering folds constants itself, a layer at a time, and keeps the
/// weights in the bundle's precision.
pub fn for_native(model: TypedModel) -> TractResult<TypedModel> {
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn gzip_is_inflated_once_within_the_limit() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(unpack_bounded(gzip(&data), 100_000).unwrap(), data);
        let e = unpack_bounded(gzip(&data), 99_999).unwrap_err().to_string();
        assert!(e.contains("decompresses past 99999 bytes"), "{e}");
    }

    #[test]
    fn a_gzip_bomb_is_refused_at_a_bound_set_by_its_size() {
        // 64 MiB of zeros: a few hundred KB compressed (fast level), so
        // refused past 16 times that plus 16 MiB, long before the 3 GB ceiling.
        let gz = gzip(&vec![0u8; 64 << 20]);
        let limit = unpacked_limit(gz.len());
        assert!(limit < 32 << 20, "{limit}");
        let e = unpack_nnef(gz).unwrap_err().to_string();
        assert!(
            e.contains(&format!("decompresses past {limit} bytes")),
            "{e}"
        );
        // A truncated archive is an error too, not a short graph.
        let whole = gzip(&[5u8; 4096]);
        assert!(unpack_nnef(whole[..whole.len() / 2].to_vec()).is_err());
    }

    #[test]
    fn plain_tar_passes_as_it_is() {
        let bytes = b"not gzip at all".to_vec();
        assert_eq!(unpack_bounded(bytes.clone(), 4).unwrap(), bytes);
    }

    #[test]
    fn size_hint_trusts_only_plausible_trailers() {
        // Bytes that barely compress, as weights do.
        let mut x = 1u32;
        let noise: Vec<u8> = (0..1000)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect();
        let mut gz = gzip(&noise);
        assert_eq!(unpacked_size_hint(&gz, 1 << 20), 1000);
        assert_eq!(unpacked_size_hint(&gz, 999), 0, "over the limit");
        // A trailer claiming 4 GB of a few dozen bytes is ignored.
        let n = gz.len();
        gz[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(unpacked_size_hint(&gz, u64::MAX), 0);
        assert_eq!(
            unpacked_size_hint(&[1, 2], 10),
            0,
            "too short for a trailer"
        );
    }
}
