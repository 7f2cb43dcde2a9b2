//! `clip-edge eval`: zero-shot accuracy over a labelled folder.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;

use clip_edge::decode::decode_file;
use clip_edge::eval::{list_labelled, Tally};

use super::{set_threads, status, BundleArg};

#[derive(clap::Args)]
pub struct Args {
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
}

pub fn run(a: &Args) -> Result<ExitCode> {
    let &Args {
        ref bundle,
        ref images,
        threads,
        confusions: max_confusions,
        json: json_out,
    } = a;
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
    Ok(status(!failed.is_empty()))
}
