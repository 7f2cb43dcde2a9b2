//! `clip-edge check-cuda`: the GPU encoder against the CPU native engine
//! (`scripts/gpu-check` runs it on every bundle it is given), and the GPU
//! part of `bench --device cuda`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use clip_edge::bundle::Trust;

use super::BundleArg;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    bundle: BundleArg,
    /// Random inputs compared one at a time.
    #[arg(long, default_value_t = 8)]
    frames: usize,
    /// Images per run of the batched encoder compared too.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// One JSON object with every figure.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &Args) -> Result<ExitCode> {
    check(
        &a.bundle.bundle,
        &a.bundle.trust()?,
        a.frames,
        a.batch,
        a.json,
    )
}

#[cfg(not(feature = "cuda"))]
fn check(
    _dir: &Path,
    _trust: &Trust,
    _frames: usize,
    _batch: usize,
    _json: bool,
) -> Result<ExitCode> {
    anyhow::bail!("check-cuda: this clip-edge was built without CUDA (cargo build --features cuda)")
}

#[cfg(feature = "cuda")]
pub use with_cuda::bench_cuda;
#[cfg(feature = "cuda")]
use with_cuda::check;

#[cfg(feature = "cuda")]
mod with_cuda {
    use super::*;

    /// fp32 and fp16 bundles: the GPU runs the weight products in f16 with
    /// f32 accumulation (attention in f32 for fp32 bundles), the CPU in f32
    /// (or f16 weights widened): image embeddings must agree to this cosine.
    /// Measured on an H200: 0.9999999 (the committed fp32 and fp16 bundles),
    /// 0.99999995 (a random-weight ViT-B/32 fp16).
    pub const FLOAT_COSINE_MIN: f64 = 0.999999;

    /// int8 bundles: the same int8 products and f32 attention on both; the
    /// cosine must be at least this, and the top-1 label identical on every
    /// frame but ties ([`INT8_TIE_MARGIN`]). Measured on an H200: 0.99994
    /// (a random-weight ViT-B/32 int8), 0.9999999 (the committed int8
    /// bundles).
    pub const INT8_COSINE_MIN: f64 = 0.9994;

    /// int8 bundles: a frame whose top-1 differs passes only if the CPU's score
    /// of its own top-1 exceeds its score of the GPU's by less than this (a tie
    /// in cosine units: int8 activations round to other neighbours when the
    /// f32 sums before them differ in their last bits, and a random-weight
    /// model scores its labels within about 1e-3 of each other).
    pub const INT8_TIE_MARGIN: f32 = 1e-3;

    /// An image run in a batch against the same image run alone on the GPU.
    pub const BATCH_COSINE_MIN: f64 = 0.9999;

    /// A step's output whose relative L2 distance to the CPU's is past this is
    /// named as the first that differs, when parity fails.
    pub const STEP_REL_ERR_MAX: f64 = 0.02;

    use anyhow::{bail, Context};
    use clip_edge::engine::native::{FloatWeights, Native};
    use clip_edge::engine::{cuda_encoder, open_encoder, Engine};
    use clip_edge::kernels::Kernels;
    use clip_edge::score::{self, cosine};
    use serde_json::{json, Value};

    fn rel_err(a: &[f32], b: &[f32]) -> f64 {
        let (mut d, mut n) = (0f64, 0f64);
        for (x, y) in a.iter().zip(b) {
            d += (*x as f64 - *y as f64).powi(2);
            n += (*y as f64).powi(2);
        }
        if !d.is_finite() {
            return f64::INFINITY;
        }
        (d / n.max(1e-30)).sqrt()
    }

    /// Seeded inputs with a preprocessed image's spread (about N(0, 1)).
    fn random_inputs(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        };
        (0..len)
            .map(|_| (next() + next() + next() + next() - 2.0) * 1.7)
            .collect()
    }

    /// The best label and the cosine scores.
    fn top1(table: &[f32], dim: usize, emb: &[f32], scores: &mut [f32]) -> usize {
        score::logits(table, dim, emb, 1.0, scores);
        scores
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, v)| if *v > b.1 { (i, *v) } else { b },
            )
            .0
    }

    pub fn check(
        dir: &Path,
        trust: &Trust,
        frames: usize,
        batch: usize,
        json_out: bool,
    ) -> Result<ExitCode> {
        if frames == 0 || batch == 0 {
            bail!("--frames and --batch must be at least 1");
        }
        let ctx = || format!("loading bundle {}", dir.display());
        let opened = open_encoder(dir, trust).with_context(ctx)?;
        let m = opened.bundle.manifest.clone();
        let int8 = m.precision == "int8";
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(16);
        let float = if m.precision == "fp32" {
            FloatWeights::F32
        } else {
            FloatWeights::F16WhereExact
        };
        let mut cpu = Native::new(&opened.model, Kernels::detect(), threads, float)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(ctx)?;
        let mut gpu = cuda_encoder(&opened, 1).with_context(ctx)?;
        let mut gpu_b = cuda_encoder(&opened, batch).with_context(ctx)?;
        let (il, dim) = (gpu.input_len(), gpu.output_len());
        let table = score::widen(&opened.bundle.table);
        let mut scores = vec![0f32; m.labels.len()];
        let inputs: Vec<Vec<f32>> = (0..frames)
            .map(|f| random_inputs(il, 1 + f as u64))
            .collect();
        let (mut cos_min, mut cos_sum, mut agree) = (f64::INFINITY, 0f64, 0usize);
        // Where the top-1 differs: the CPU's score of its label minus its
        // score of the GPU's (how near a tie it was).
        let mut margins: Vec<f32> = Vec::new();
        let mut singles = Vec::with_capacity(frames);
        for x in &inputs {
            let (mut c, mut g) = (vec![0f32; dim], vec![0f32; dim]);
            cpu.run(x, &mut c);
            gpu.run(x, &mut g)?;
            let cs = cosine(&g, &c);
            cos_min = cos_min.min(cs);
            cos_sum += cs;
            let tg = top1(&table, dim, &g, &mut scores);
            let tc = top1(&table, dim, &c, &mut scores);
            if tc == tg {
                agree += 1;
            } else {
                margins.push(scores[tc] - scores[tg]);
            }
            singles.push(g);
        }
        // The batched encoder on the same frames, cycled to fill the batch.
        let mut bin = vec![0f32; batch * il];
        for (i, chunk) in bin.chunks_mut(il).enumerate() {
            chunk.copy_from_slice(&inputs[i % frames]);
        }
        let mut bout = vec![0f32; batch * dim];
        gpu_b.run(&bin, &mut bout)?;
        let batch_cos_min = bout
            .chunks(dim)
            .enumerate()
            .map(|(i, o)| cosine(o, &singles[i % frames]))
            // NaN once seen stays: `f64::min` would skip it.
            .fold(f64::INFINITY, |m, c| {
                if m.is_nan() || c.is_nan() {
                    f64::NAN
                } else {
                    m.min(c)
                }
            });
        let ties_only = margins.iter().all(|m| *m < INT8_TIE_MARGIN);
        // A NaN cosine (NaN embeddings) fails: `f64::min` would skip it.
        let nan = !(cos_sum.is_finite() && batch_cos_min.is_finite());
        let pass = if int8 {
            ties_only && cos_min >= INT8_COSINE_MIN
        } else {
            cos_min >= FLOAT_COSINE_MIN
        } && batch_cos_min >= BATCH_COSINE_MIN
            && !nan;
        let first_divergent = if pass {
            Value::Null
        } else {
            first_divergent_step(&opened.model, &mut gpu, &inputs[0])?
        };
        let iters = 50;
        let ms1 = gpu.time_frames(iters)? as f64 / iters as f64;
        let msb = gpu_b.time_frames(iters)? as f64 / iters as f64;
        let s = gpu.summary().clone();
        let (prof1, profb) = (gpu.profile(5)?, gpu_b.profile(3)?);
        let report = json!({
            "bundle": dir,
            "architecture": m.model.architecture,
            "precision": m.precision,
            "gpu": s.gpu,
            "sm_count": s.sm_count,
            "compute_capability": s.compute_capability,
            "frames": frames,
            "cosine_min": cos_min,
            "cosine_mean": cos_sum / frames as f64,
            "top1_agreement": agree as f64 / frames as f64,
            "top1_mismatch_margins": margins,
            "batch": batch,
            "batch_cosine_min": batch_cos_min,
            "pass": pass,
            "first_divergent_step": first_divergent,
            "gpu_ms_batch1": ms1,
            "gpu_images_per_s_batch": batch as f64 / (msb * 1e-3),
            "ops": s.ops,
            "profile_ms_batch1": prof1,
            "profile_ms_batch": profb,
            "launches_per_frame": s.launches_per_frame,
        });
        if json_out {
            println!("{report}");
        } else {
            println!(
                "{} {} on {}: cosine min {:.6} mean {:.6}, top-1 {}/{}, batch {} cosine min {:.6}: {}",
                m.model.architecture,
                m.precision,
                s.gpu,
                cos_min,
                cos_sum / frames as f64,
                agree,
                frames,
                batch,
                batch_cos_min,
                if pass { "PASS" } else { "FAIL" }
            );
            println!(
                "  GPU {ms1:.3} ms per image at batch 1; {:.0} images/s at batch {batch}",
                batch as f64 / (msb * 1e-3)
            );
            if !pass {
                println!("  first divergent step: {first_divergent}");
            }
        }
        Ok(if pass {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    /// Runs the CPU engine on the same lowering (plain kernels) and the GPU
    /// step by step: the first step whose output differs.
    fn first_divergent_step(
        model: &tract_core::internal::TypedModel,
        gpu: &mut clip_edge::engine::cuda::CudaEncoder,
        x: &[f32],
    ) -> Result<Value> {
        let mut cpu = Native::new(model, Kernels::SCALAR, 1, FloatWeights::F32)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // By node name: the GPU schedule folds copies into products.
        let names: Vec<String> = cpu.step_names().iter().map(|n| n.to_string()).collect();
        // (A node lowered to several steps keeps its last output.)
        let mut steps: std::collections::HashMap<String, Vec<f32>> = Default::default();
        let mut out = vec![0f32; gpu.output_len()];
        cpu.run_traced(x, &mut out, &mut |i, o| {
            steps.insert(names[i].clone(), o.to_vec());
        });
        let mut found = Value::Null;
        gpu.run_traced(x, &mut |i, name, g| {
            if found.is_null() {
                if let Some(c) = steps.get(name) {
                    let e = rel_err(g, c);
                    if e.is_nan() || e > STEP_REL_ERR_MAX || g.len() != c.len() {
                        found = json!({"step": i, "name": name, "rel_err": e, "len": g.len(),
                            "gpu_head": &g[..g.len().min(6)], "cpu_head": &c[..c.len().min(6)]});
                    }
                }
            }
        })?;
        Ok(found)
    }

    /// `bench --device cuda`'s GPU figures: the GPU, and GPU time per frame
    /// (CUDA graph replays, timed with events) at batch 1 and at `batch`.
    pub fn bench_cuda(dir: &Path, trust: &Trust, engine: &Engine, batch: usize) -> Result<Value> {
        if batch == 0 {
            bail!("--batch must be at least 1");
        }
        let opened = open_encoder(dir, trust)?;
        let iters = 100;
        let mut one = cuda_encoder(&opened, 1)?;
        one.time_frames(10)?;
        let ms1 = one.time_frames(iters)? as f64 / iters as f64;
        drop(one);
        let mut many = cuda_encoder(&opened, batch)?;
        many.time_frames(5)?;
        let msb = many.time_frames(iters / 4)? as f64 / (iters / 4) as f64;
        let s = engine.cuda_summary();
        Ok(json!({
            "summary": s,
            "gpu_ms_batch1": ms1,
            "images_per_s_batch1": 1e3 / ms1,
            "batch": batch,
            "gpu_ms_batch": msb,
            "images_per_s_batch": batch as f64 * 1e3 / msb,
        }))
    }
}
