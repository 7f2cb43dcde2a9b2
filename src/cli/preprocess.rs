//! `clip-edge preprocess`: the reference preprocessing's channel means.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde_json::json;

use clip_edge::decode::decode_file;
use clip_edge::preprocess::{Preprocessor, CLIP_MEAN, CLIP_STD, MAX_RESOLUTION};

use super::status;

#[derive(clap::Args)]
pub struct Args {
    /// The square input side to preprocess to, 1 to 4096.
    #[arg(long, default_value_t = 224)]
    resolution: u32,
    /// Image files (JPEG, PNG, GIF, BMP, WebP, TIFF).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn run(a: &Args) -> Result<ExitCode> {
    let &Args {
        resolution,
        ref images,
    } = a;
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
    Ok(status(failed))
}
