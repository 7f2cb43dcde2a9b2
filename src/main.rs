//! `clip-edge`: the board binary. The classify / bench / info commands arrive
//! with the runtime issue; today it preprocesses images as the reference does.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use clip_edge::decode::decode_file;
use clip_edge::preprocess::{Preprocessor, CLIP_MEAN, CLIP_STD};

#[derive(Parser)]
#[command(name = "clip-edge", version, about = "CLIP on edge boards")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Decode and preprocess images; prints per-image channel means as JSON lines.
    Preprocess {
        #[arg(long, default_value_t = 224)]
        resolution: u32,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Preprocess { resolution, images } => {
            anyhow::ensure!(resolution > 0, "--resolution must be positive");
            let mut pre = Preprocessor::new();
            let mut buf = vec![0f32; Preprocessor::output_len(resolution)];
            let plane = (resolution * resolution) as usize;
            let mut failed = false;
            for path in &images {
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
                        println!(
                            "{}",
                            serde_json::json!({"image": path, "channel_means": means})
                        );
                    }
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        failed = true;
                    }
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
