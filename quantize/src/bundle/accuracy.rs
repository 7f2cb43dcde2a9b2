//! What `build` measures of a quantised image graph against fp32 on the
//! calibration images: embedding cosines, top-1 agreement against the text
//! table, and `--precision auto`'s plan from them.

use super::*;

/// Image files of a directory, sorted; an empty directory is an error.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let p = e.map_err(io(dir))?.path();
        if p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(BuildError::Input {
            path: dir.to_path_buf(),
            why: "no images".into(),
        });
    }
    Ok(files)
}

/// ImageNet-style folder: one sub-folder per label (named as the label, or
/// with `_` for its spaces). Returns (image, label index).
pub fn list_eval(dir: &Path, labels: &[String]) -> Result<Vec<(PathBuf, usize)>, BuildError> {
    Ok(clip_edge::eval::list_labelled(dir, labels)?)
}

/// Preprocessed inputs, decoded and checked before any heavy work.
/// `mean`/`std`: the model's normalisation; `resize`: its resize.
pub(super) fn load_inputs(
    files: &[PathBuf],
    n: usize,
    (mean, std): ([f32; 3], [f32; 3]),
    resize: Resize,
) -> Result<Vec<Tensor>, BuildError> {
    let mut pre = Preprocessor::new().with_resize(resize);
    files
        .iter()
        .map(|p| {
            let img = decode_file(p)?;
            let mut buf = vec![0f32; Preprocessor::output_len(n as u32)];
            pre.run(&img.view(), n as u32, mean, std, &mut buf)
                .map_err(|e| BuildError::Input {
                    path: p.clone(),
                    why: e.to_string(),
                })?;
            Ok(Tensor::from_shape(&[1, 3, n, n], &buf)?)
        })
        .collect()
}

/// Runs an image graph on every input; returns the embeddings (and, with
/// taps, the max |x| of every layer input).
pub(super) fn run_images(
    model: TypedModel,
    inputs: &[Tensor],
    taps: bool,
) -> Result<(Vec<Vec<f32>>, Vec<f32>), BuildError> {
    let plan = tract_graph::into_plan(model)?;
    let mut embs = Vec::new();
    let mut absmax: Vec<f32> = Vec::new();
    for t in inputs {
        let out = plan.run(tvec!(t.clone().into_tvalue()))?;
        let e = out[0]
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect();
        embs.push(e);
        if taps {
            absmax.resize(out.len() - 1, 0.0);
            for (m, o) in absmax.iter_mut().zip(out.iter().skip(1)) {
                let v = o
                    .to_plain_array_view::<f32>()?
                    .iter()
                    .fold(0f32, |a, x| a.max(x.abs()));
                *m = m.max(v);
            }
        }
    }
    Ok((embs, absmax))
}

pub(super) use clip_edge::score::cosine;

pub(super) fn argmax_label(e: &[f32], table: &[f32], dim: usize) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, row) in table.chunks(dim).enumerate() {
        let s: f32 = row.iter().zip(e).map(|(a, b)| a * b).sum();
        if s > best.1 {
            best = (i, s);
        }
    }
    best.0
}

pub(super) fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

pub(super) fn summary(
    fp32: &[Vec<f32>],
    q: &[Vec<f32>],
    table: &[f32],
    dim: usize,
) -> (ReportSummary, Vec<f64>) {
    let cos: Vec<f64> = fp32.iter().zip(q).map(|(a, b)| cosine(a, b)).collect();
    let mut sorted = cos.clone();
    sorted.sort_by(f64::total_cmp);
    let p1 = sorted[((sorted.len() as f64 - 1.0) * 0.01).floor() as usize];
    let agree = fp32
        .iter()
        .zip(q)
        .filter(|(a, b)| argmax_label(a, table, dim) == argmax_label(b, table, dim))
        .count();
    (
        ReportSummary {
            images: cos.len(),
            cosine_mean: mean(&cos),
            cosine_p1: p1,
            cosine_min: sorted[0],
            top1_agreement: agree as f64 / cos.len() as f64,
            zero_shot_top1: None,
            zero_shot_top1_fp32: None,
        },
        cos,
    )
}

/// Mixed precision: every layer's sensitivity (mean cosine to fp32 with only
/// that layer in int8), then the fewest most-sensitive layers kept in fp16
/// that meet the target (binary search over how many).
pub(super) fn auto_plan(
    sd: &StateDict,
    cfg: &ClipConfig,
    base: &QuantPlan,
    inputs: &[Tensor],
    reference: &[Vec<f32>],
    target: f64,
    show: bool,
) -> Result<(QuantPlan, Vec<(String, f64)>), BuildError> {
    let eval = |plan: QuantPlan| -> Result<f64, BuildError> {
        let (model, _) = graph::image_encoder_with(sd, cfg, 1, plan, false)?;
        let (embs, _) = run_images(model, inputs, false)?;
        Ok(mean(
            &reference
                .iter()
                .zip(&embs)
                .map(|(a, b)| cosine(a, b))
                .collect::<Vec<_>>(),
        ))
    };
    let (_, layers) =
        graph::image_encoder_with(sd, cfg, 1, QuantPlan::uniform(Precision::Fp16), false)?;
    let pb = clip_edge::progress::bar(show, layers.len() as u64, "layer sensitivity");
    let mut sens = Vec::new();
    for l in &layers {
        let mut plan = base.clone();
        plan.layers = Precision::Fp16;
        plan.overrides = BTreeMap::from([(l.name.clone(), Precision::Int8)]);
        sens.push((l.name.clone(), eval(plan)?));
        pb.inc(1);
    }
    pb.finish_and_clear();
    sens.sort_by(|a, b| a.1.total_cmp(&b.1));
    let with_kept = |k: usize| {
        let mut plan = base.clone();
        plan.layers = Precision::Int8;
        plan.overrides = sens[..k]
            .iter()
            .map(|(n, _)| (n.clone(), Precision::Fp16))
            .collect();
        plan
    };
    // Smallest k whose plan meets the target (k = all layers is fp16 everywhere).
    let (mut lo, mut hi) = (0usize, sens.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if eval(with_kept(mid))? >= target {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok((with_kept(lo), sens))
}
