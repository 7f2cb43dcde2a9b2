//! The `clip-edge` command line: the command tree, the arguments every
//! bundle command shares, and one module per command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use clip_edge::bundle::{Bundle, Trust};
use clip_edge::engine::{Device, Engine, EngineKind};
use clip_edge::section_cache::SectionCache;
use clip_edge::signature::read_public_key;
use clip_edge::watch::config::WatchArgs;

mod bench;
mod bench_kernels;
mod board;
mod check_cuda;
mod classify;
mod eval;
mod info;
mod preprocess;
mod sources;
mod watch;

pub use watch::{ConfigError, EX_CONFIG};

#[derive(Parser)]
#[command(
    name = "clip-edge",
    version,
    about = "CLIP zero-shot classification on edge boards"
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Top-k labels of each image, scored as the bundle says: softmax over all labels of
    /// logit_scale * cos(image, label), or each label's own sigmoid(logit_scale * cos + logit_bias).
    Classify(classify::Args),
    /// Zero-shot accuracy over an ImageNet-style folder (one sub-folder per label).
    Eval(eval::Args),
    /// Per-frame latency, throughput, memory and allocations of the steady state.
    Bench(bench::Args),
    /// The GPU encoder against the CPU native engine on random inputs:
    /// embedding cosine, top-1 agreement, batch consistency, GPU timings
    /// (`scripts/gpu-check`). Exit 1 when parity fails.
    CheckCuda(check_cuda::Args),
    /// The native kernels against tract's matrix multiply on ViT-B/32's
    /// linear-layer shapes, one thread: median ms per path; the core's
    /// multiply-add peaks (`fma_peaks`) and the exact resize of a 1080p
    /// frame per copy of its row kernels (`resize`).
    BenchKernels(bench_kernels::Args),
    /// What the manifest says, and whether every checksum matches.
    Info(info::Args),
    /// The board profiles built in (`bench --board NAME`): name, CPU,
    /// cores and peaks per core.
    Boards(board::Args),
    /// The V4L2 cameras on this machine: formats, sizes, and a `v4l2:`
    /// spec for `watch --source`.
    Sources(sources::Args),
    /// The camera loop: classify each frame of a source, raise events for
    /// watched labels (JSON lines, GPIO, MQTT).
    Watch(Box<WatchArgs>),
    /// Decode and preprocess images; prints per-image channel means as JSON lines.
    Preprocess(preprocess::Args),
}

/// Runs the command line's command.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Classify(a) => classify::run(&a),
        Cmd::Eval(a) => eval::run(&a),
        Cmd::Bench(a) => bench::run(&a),
        Cmd::CheckCuda(a) => check_cuda::run(&a),
        Cmd::BenchKernels(a) => bench_kernels::run(&a),
        Cmd::Info(a) => info::run(&a),
        Cmd::Boards(a) => board::run(&a),
        Cmd::Sources(a) => sources::run(&a),
        Cmd::Watch(a) => watch::run(*a),
        Cmd::Preprocess(a) => preprocess::run(&a),
    }
}

/// The bundle to load, and what it must prove.
#[derive(clap::Args)]
struct BundleArg {
    /// The bundle directory (clip-quantize build --out).
    #[arg(long)]
    bundle: PathBuf,
    /// Refuse the bundle unless its manifest.sig is this public key's
    /// signature of its manifest (a KEY.pub from clip-quantize keygen).
    #[arg(long, value_name = "PUBKEY")]
    require_signature: Option<PathBuf>,
}

/// What runs the bundle's image encoder (the commands that run it).
#[derive(clap::Args)]
struct EngineArg {
    /// Which backend runs the image encoder: native (ours; no allocation
    /// per frame) or tract (the reference).
    #[arg(long, value_enum, default_value_t = EngineKind::Native)]
    engine: EngineKind,
    /// Where the encoder runs: cpu, or cuda (the first CUDA GPU, in a build
    /// with `--features cuda`).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
}

impl BundleArg {
    fn trust(&self) -> Result<Trust> {
        Ok(Trust {
            require_signature: match &self.require_signature {
                Some(p) => Some(read_public_key(p)?),
                None => None,
            },
        })
    }

    fn context(&self) -> String {
        format!("loading bundle {}", self.bundle.display())
    }

    /// `e` with the bundle named once: as the error's own start, or else
    /// as its context.
    fn named<E>(&self, e: E) -> anyhow::Error
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        if e.to_string()
            .starts_with(&self.bundle.display().to_string())
        {
            anyhow::Error::new(e)
        } else {
            anyhow::Error::new(e).context(self.context())
        }
    }

    fn engine(&self, run: &EngineArg, threads: usize) -> Result<Engine> {
        Engine::load_cached(
            &self.bundle,
            &self.trust()?,
            run.engine,
            threads,
            run.device,
            SectionCache::from_env().as_ref(),
        )
        .map_err(|e| self.named(e))
    }

    fn open(&self) -> Result<Bundle> {
        Bundle::open_with(&self.bundle, &self.trust()?).map_err(|e| self.named(e))
    }
}

/// `--threads`: at least 1 and at most four per CPU of this machine (more
/// cannot make an encoder faster, and a huge count fails to spawn inside
/// the thread pool).
fn set_threads(n: usize) -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(16, |n| n.get());
    let max = 4 * cpus;
    if n == 0 || n > max {
        bail!("--threads {n}: expected 1 to {max} (4 x the {cpus} CPUs of this machine)");
    }
    // The native engine makes its own pool at load; tract's is process-wide.
    #[cfg(feature = "tract-threads")]
    if n > 1 {
        use tract_linalg::multithread::{set_default_executor, Executor};
        set_default_executor(Executor::multithread(n));
    }
    #[cfg(all(feature = "tract", not(feature = "tract-threads")))]
    if n > 1 {
        log::info!("this build runs `--engine tract` on one thread (no tract-threads feature)");
    }
    log::info!("{n} thread(s)");
    Ok(())
}

/// Milliseconds since `since`.
fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// An exit status: failure when any input failed.
fn status(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
