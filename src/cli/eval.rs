//! `clip-edge eval`: zero-shot accuracy over a labelled folder.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;

use clip_edge::decode::DecodeMode;
use clip_edge::decode::{decode_file_as, Decode};
use clip_edge::engine::Engine;
use clip_edge::eval::{list_labelled, Tally};
use clip_edge::score::cosine;

use super::{set_threads, status, BundleArg, EngineArg};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    bundle: BundleArg,
    #[command(flatten)]
    run: EngineArg,
    /// One sub-folder per label, named as the label or with `_` for spaces.
    #[arg(long)]
    images: PathBuf,
    /// Threads the encoder runs on.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// How many of the most frequent confusion pairs to report.
    #[arg(long, default_value_t = 10)]
    confusions: usize,
    /// One JSON object: n, top1, top5, per_class, confusions, failed,
    /// decode (and with --decode fast, versus_exact).
    #[arg(long)]
    json: bool,
    /// Decode as `watch --decode` does; `fast` also runs the exact path on
    /// each image and reports the two side by side (top-1 of each, how
    /// often they agree, the cosine of their embeddings).
    #[arg(long, value_enum, default_value_t = DecodeMode::Exact)]
    decode: DecodeMode,
}

/// The fast path against the exact one, image by image.
struct Versus {
    exact: Tally,
    /// Images the fast path decoded smaller than the exact one.
    reduced: usize,
    agree: usize,
    n: usize,
    cosine_sum: f64,
    cosine_min: f64,
}

impl Versus {
    fn add(
        &mut self,
        truth: usize,
        exact_ranked: &[usize],
        fast_top: usize,
        (cosine, reduced): (f64, bool),
    ) {
        self.exact.add(truth, exact_ranked);
        self.reduced += usize::from(reduced);
        self.n += 1;
        self.agree += usize::from(exact_ranked.first() == Some(&fast_top));
        self.cosine_sum += cosine;
        // NaN-aware: a NaN cosine is the minimum.
        if cosine.is_nan() || cosine < self.cosine_min {
            self.cosine_min = cosine;
        }
    }
}

/// The image at `path` decoded `how`, classified: the top 5 labels, and
/// the decoded width.
fn ranked_by(
    engine: &mut Engine,
    path: &std::path::Path,
    how: Decode,
) -> Result<(Vec<usize>, u32)> {
    let img = decode_file_as(path, how)?;
    engine
        .classify(&img.view(), 5)
        .with_context(|| path.display().to_string())?;
    Ok((engine.top().iter().map(|(i, _)| *i).collect(), img.width))
}

pub fn run(a: &Args) -> Result<ExitCode> {
    let &Args {
        ref bundle,
        ref run,
        ref images,
        threads,
        confusions: max_confusions,
        json: json_out,
        decode,
    } = a;
    set_threads(threads)?;
    let mut engine = bundle.engine(run, threads)?;
    let labels = engine.bundle.labels().to_vec();
    let set = list_labelled(images, &labels)?;
    let mut tally = Tally::new(&labels);
    let fast = decode == DecodeMode::Fast;
    let mut versus = fast.then(|| Versus {
        exact: Tally::new(&labels),
        reduced: 0,
        agree: 0,
        n: 0,
        cosine_sum: 0.0,
        cosine_min: f64::INFINITY,
    });
    let reduced = Decode::fast_for(engine.resolution());
    let mut fast_embedding = Vec::new();
    let mut failed = Vec::new();
    let bar = clip_edge::progress::bar(!json_out, set.len() as u64, "images");
    for (path, truth) in &set {
        bar.inc(1);
        let ranked = if fast {
            ranked_by(&mut engine, path, reduced).and_then(|(fast_ranked, fast_width)| {
                fast_embedding.clear();
                fast_embedding.extend_from_slice(engine.embedding());
                let (exact_ranked, width) = ranked_by(&mut engine, path, Decode::Exact)?;
                Ok((fast_ranked, Some((exact_ranked, fast_width < width))))
            })
        } else {
            ranked_by(&mut engine, path, Decode::Exact).map(|(r, _)| (r, None))
        };
        match ranked {
            Ok((ranked, exact)) => {
                tally.add(*truth, &ranked);
                if let (Some(v), Some((exact, reduced))) = (versus.as_mut(), exact) {
                    let c = cosine(&fast_embedding, engine.embedding());
                    let fast_top = ranked.first().copied().unwrap_or(usize::MAX);
                    v.add(*truth, &exact, fast_top, (c, reduced));
                }
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                failed.push(path.display().to_string());
            }
        }
    }
    bar.finish_and_clear();
    let s = tally.summary(max_confusions);
    let versus = versus.map(|v| {
        let exact = v.exact.summary(0);
        // Null where no image was compared.
        let per_image = |x: f64| (v.n > 0).then(|| x / v.n as f64);
        json!({
            "reduced_images": v.reduced,
            "exact_top1": exact.top1,
            "exact_top5": exact.top5,
            "top1_agreement": per_image(v.agree as f64),
            "embedding_cosine": {
                "mean": per_image(v.cosine_sum),
                "min": (v.n > 0).then_some(v.cosine_min),
            },
        })
    });
    if json_out {
        let mut v = serde_json::to_value(&s)?;
        v["failed"] = json!(failed);
        v["decode"] = json!(if fast { "fast" } else { "exact" });
        if let Some(versus) = &versus {
            v["versus_exact"] = versus.clone();
        }
        out!("{v}");
    } else {
        out!(
            "{} images, {} labels: top-1 {:.2}%  top-5 {:.2}%",
            s.n,
            labels.len(),
            100.0 * s.top1,
            100.0 * s.top5
        );
        if let Some(v) = &versus {
            out!(
                "--decode fast against the exact path: {} images decoded reduced; top-1 {:.2}% (exact {:.2}%), the same top-1 on {:.2}% of images, embedding cosine mean {:.5}, min {:.5}",
                v["reduced_images"],
                100.0 * s.top1,
                100.0 * v["exact_top1"].as_f64().unwrap_or(f64::NAN),
                100.0 * v["top1_agreement"].as_f64().unwrap_or(f64::NAN),
                v["embedding_cosine"]["mean"].as_f64().unwrap_or(f64::NAN),
                v["embedding_cosine"]["min"].as_f64().unwrap_or(f64::NAN)
            );
        }
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
    Ok(status(!failed.is_empty()))
}
