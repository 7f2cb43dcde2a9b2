//! `clip-edge classify`: the top labels of each image.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use serde_json::json;

use clip_edge::decode::decode_file;

use super::{ms, set_threads, status, BundleArg, EngineArg};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    bundle: BundleArg,
    #[command(flatten)]
    run: EngineArg,
    /// How many of the best labels to print per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Threads the encoder runs on.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// One JSON object per image and line.
    #[arg(long)]
    json: bool,
    /// Image files (JPEG, PNG, BMP, GIF, WebP, TIFF).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn run(a: &Args) -> Result<ExitCode> {
    let &Args {
        ref bundle,
        ref run,
        top_k,
        threads,
        json,
        ref images,
    } = a;
    set_threads(threads)?;
    if top_k == 0 {
        bail!("--top-k must be at least 1");
    }
    let mut engine = bundle.engine(run, threads)?;
    let mut failed = 0;
    // A bad image: one line on stderr for a person and, with --json, its
    // own object on stdout, so that a reader gets one line per image.
    let mut fail = |path: &std::path::Path, line: String, why: String| {
        eprintln!("error: {line}");
        if json {
            out!("{}", json!({"image": path.to_string_lossy(), "error": why}));
        }
        failed += 1;
    };
    for path in images {
        let t0 = Instant::now();
        let img = match decode_file(path) {
            Ok(i) => i,
            Err(e) => {
                fail(path, e.to_string(), e.to_string());
                continue;
            }
        };
        let decode = ms(t0);
        let t = match engine.classify(&img.view(), top_k) {
            Ok(t) => t,
            Err(e) => {
                fail(path, format!("{}: {e}", path.display()), e.to_string());
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
                json!({"image": path.to_string_lossy(), "top": top,
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
    Ok(status(failed > 0))
}
