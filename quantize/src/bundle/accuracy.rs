//! What `build` measures of a quantised image graph against fp32 on the
//! calibration images: embedding cosines, top-1 agreement against the text
//! table, and `--precision auto`'s plan from them.

use super::*;

/// Image files of a directory, sorted; an empty directory is an error.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let p = e.map_err(io(dir))?.path();
        // Hidden files (.DS_Store, editors' and sync tools' files) are not
        // images, as eval sets skip them.
        let hidden = p
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."));
        if p.is_file() && !hidden {
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

/// The most calibration images a build holds preprocessed in memory (each
/// is 3·n²·4 bytes: 0.6 MB at 224 pixels, so about 600 MB at this count);
/// an eval set is read again on each pass and may be any size.
pub const MAX_CALIBRATION_IMAGES: usize = 1000;

/// How a build reads its images: the model's input side, normalisation
/// (mean, std) and resize.
#[derive(Clone, Copy)]
pub(super) struct ImageFormat {
    pub n: usize,
    pub norm: ([f32; 3], [f32; 3]),
    pub resize: Resize,
}

impl ImageFormat {
    /// One file decoded and preprocessed into `buf` (`pre` and `buf` reused).
    fn prepare(
        &self,
        pre: &mut Preprocessor,
        buf: &mut [f32],
        p: &Path,
    ) -> Result<Tensor, BuildError> {
        let img = decode_file(p)?;
        pre.run(&img.view(), self.n as u32, self.norm.0, self.norm.1, buf)
            .map_err(|e| BuildError::Input {
                path: p.to_path_buf(),
                why: e.to_string(),
            })?;
        Ok(Tensor::from_shape(&[1, 3, self.n, self.n], buf)?)
    }

    fn preprocessor(&self) -> (Preprocessor, Vec<f32>) {
        (
            Preprocessor::new().with_resize(self.resize),
            vec![0f32; Preprocessor::output_len(self.n as u32)],
        )
    }
}

/// Preprocessed inputs, decoded and checked before any heavy work, held in
/// memory (the calibration images: at most [`MAX_CALIBRATION_IMAGES`]).
pub(super) fn load_inputs(
    dir: &Path,
    files: &[PathBuf],
    format: ImageFormat,
) -> Result<Vec<Tensor>, BuildError> {
    if files.len() > MAX_CALIBRATION_IMAGES {
        return Err(BuildError::Input {
            path: dir.to_path_buf(),
            why: format!(
                "{} calibration images, at most {MAX_CALIBRATION_IMAGES} \
                 (they are held in memory): give a sample",
                files.len()
            ),
        });
    }
    let (mut pre, mut buf) = format.preprocessor();
    files
        .iter()
        .map(|p| format.prepare(&mut pre, &mut buf, p))
        .collect()
}

/// Image files read again on each pass (an eval set of any size: one
/// image in memory at a time).
pub(super) struct ImageFiles {
    pub files: Vec<PathBuf>,
    format: ImageFormat,
    progress: bool,
}

impl ImageFiles {
    /// Checks that every file decodes and preprocesses (a bad file fails
    /// the build before any heavy work), holding none of them.
    pub fn checked(
        files: Vec<PathBuf>,
        format: ImageFormat,
        progress: bool,
    ) -> Result<Self, BuildError> {
        let (mut pre, mut buf) = format.preprocessor();
        let pb = clip_edge::progress::bar(progress, files.len() as u64, "checking eval images");
        for p in &files {
            format.prepare(&mut pre, &mut buf, p)?;
            pb.inc(1);
        }
        pb.finish_and_clear();
        Ok(ImageFiles {
            files,
            format,
            progress,
        })
    }

    fn each(&self, mut f: impl FnMut(Tensor) -> Result<(), BuildError>) -> Result<(), BuildError> {
        let (mut pre, mut buf) = self.format.preprocessor();
        let pb = clip_edge::progress::bar(self.progress, self.files.len() as u64, "eval images");
        for p in &self.files {
            f(self.format.prepare(&mut pre, &mut buf, p)?)?;
            pb.inc(1);
        }
        pb.finish_and_clear();
        Ok(())
    }
}

/// The images a graph runs on: held, or read from their files.
#[derive(Clone, Copy)]
pub(super) enum Images<'a> {
    Held(&'a [Tensor]),
    Files(&'a ImageFiles),
}

/// Runs an image graph on every input; returns the embeddings (and, with
/// taps, the max |x| of every layer input).
pub(super) fn run_images(
    model: TypedModel,
    inputs: Images<'_>,
    taps: bool,
) -> Result<(Vec<Vec<f32>>, Vec<f32>), BuildError> {
    let plan = tract_graph::into_plan(model)?;
    let mut embs = Vec::new();
    let mut absmax: Vec<f32> = Vec::new();
    let mut run_one = |t: Tensor| -> Result<(), BuildError> {
        let out = plan.run(tvec!(t.into_tvalue()))?;
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
        Ok(())
    };
    match inputs {
        Images::Held(ts) => ts.iter().try_for_each(|t| run_one(t.clone()))?,
        Images::Files(f) => f.each(&mut run_one)?,
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
        let (embs, _) = run_images(model, Images::Held(inputs), false)?;
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
