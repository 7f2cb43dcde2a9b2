//! `clip-edge bench`: the steady state's per-stage latency, throughput,
//! memory and allocations per frame, and what ran.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use serde_json::json;

use clip_edge::alloc_count;
#[cfg(feature = "cuda")]
use clip_edge::engine::Device;
use clip_edge::engine::EngineKind;
use clip_edge::preprocess::{ImageView, Mode};

use super::board::BoardProfile;

/// Most frames a `bench` run times (its per-frame latencies are kept).
const MAX_ITERATIONS: usize = 1_000_000;
use super::{set_threads, BundleArg, EngineArg};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    bundle: BundleArg,
    #[command(flatten)]
    run: EngineArg,
    /// Threads the encoder runs on.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Frames timed (after a warm-up), at most 1000000.
    #[arg(long, default_value_t = 20)]
    iterations: usize,
    /// A board profile (`clip-edge boards` lists them): adds achieved
    /// throughput as a percentage of its peak for the precision that runs.
    #[arg(long)]
    board: Option<String>,
    /// Read the profile from DIR/NAME.toml instead of the ones built in
    /// (`clip-edge boards` lists them).
    #[arg(long, value_name = "DIR")]
    boards_dir: Option<PathBuf>,
    /// Native engine: adds `profile_ms`, milliseconds per frame by op class (timed per op), and `profile_steps`, each step's name, class, multiply-adds, ms and GMAC/s.
    #[arg(long)]
    profile: bool,
    /// `--device cuda`: also images per second at this batch (one CUDA
    /// graph of that many images).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// One JSON object with every figure.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &Args) -> Result<ExitCode> {
    let &Args {
        ref bundle,
        ref run,
        threads,
        iterations,
        ref board,
        ref boards_dir,
        profile,
        batch,
        json: json_out,
    } = a;
    let board = match (board, boards_dir) {
        (Some(name), Some(dir)) => Some(BoardProfile::by_name(dir, name)?),
        (Some(name), None) => Some(BoardProfile::built_in(name)?),
        (None, _) => None,
    };
    set_threads(threads)?;
    if !(1..=MAX_ITERATIONS).contains(&iterations) {
        bail!("--iterations {iterations}: expected 1 to {MAX_ITERATIONS}");
    }
    let mut engine = bundle.engine(run, threads)?;
    // A deterministic 640x480 camera-like frame.
    #[cfg(feature = "tract")]
    log::info!(
        "cpu features: {:?}; tract kernels for {:?}",
        cpu_features(),
        tract_linalg::isa::native()
    );
    #[cfg(not(feature = "tract"))]
    log::info!("cpu features: {:?}", cpu_features());
    let (w, h) = (640u32, 480u32);
    let frame: Vec<u8> = (0..w * h * 3)
        .map(|i| ((i * 7 + i / 1920 * 13) % 251) as u8)
        .collect();
    let img = ImageView::new(w, h, Mode::Rgb, &frame);
    let k = 5.min(engine.bundle.labels().len());
    for _ in 0..3 {
        engine.classify(&img, k)?;
    }
    if profile && !engine.set_profiling(true) {
        bail!("--profile times the native engine's ops; `--engine tract` has no such timing");
    }
    let (mut pre, mut enc, mut sc, mut tot) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    pre.reserve(iterations);
    enc.reserve(iterations);
    sc.reserve(iterations);
    tot.reserve(iterations);
    let mut allocs = [0u64; 3];
    let mut bytes = 0u64;
    for _ in 0..iterations {
        let t0 = Instant::now();
        let a0 = alloc_count::snapshot();
        engine.preprocess(&img)?;
        let a1 = alloc_count::snapshot();
        let t1 = Instant::now();
        engine.encode()?;
        let a2 = alloc_count::snapshot();
        let t2 = Instant::now();
        engine.score(k);
        let a3 = alloc_count::snapshot();
        let t3 = Instant::now();
        allocs[0] += a1.0 - a0.0;
        allocs[1] += a2.0 - a1.0;
        allocs[2] += a3.0 - a2.0;
        bytes += a3.1 - a0.1;
        pre.push((t1 - t0).as_secs_f64() * 1e3);
        enc.push((t2 - t1).as_secs_f64() * 1e3);
        sc.push((t3 - t2).as_secs_f64() * 1e3);
        tot.push((t3 - t0).as_secs_f64() * 1e3);
    }
    let n = iterations as f64;
    let mean_total = tot.iter().sum::<f64>() / n;
    let mean_encode = enc.iter().sum::<f64>() / n;
    let m = &engine.bundle.manifest;
    // tract runs on one thread in a build without its thread pool (the
    // board build): report the threads that ran.
    let threads = if engine.kind() == EngineKind::Tract && !cfg!(feature = "tract-threads") {
        1
    } else {
        threads
    };
    let mut report = json!({
        "bundle": bundle.bundle,
        "architecture": m.model.architecture,
        "precision": m.precision,
        "resolution": m.preprocess.resolution,
        "labels": m.labels.len(),
        "threads": threads,
        "iterations": iterations,
        "latency_ms": {
            "preprocess": percentiles(&mut pre),
            "encode": percentiles(&mut enc),
            "score": percentiles(&mut sc),
            "total": percentiles(&mut tot),
        },
        "fps": 1e3 / mean_total,
        "peak_rss_kb": peak_rss_kb(),
        "allocations_per_frame": {
            "preprocess": allocs[0] as f64 / n,
            "encode": allocs[1] as f64 / n,
            "score": allocs[2] as f64 / n,
        },
        "bytes_allocated_per_frame": bytes as f64 / n,
        "encoder_macs": engine.macs,
        "encoder_gflops": 2.0 * engine.macs / (mean_encode * 1e-3) / 1e9,
        "cpu_features": cpu_features(),
        "engine": engine.kind(),
        "ops": engine.op_summary().into_iter().map(|(k, (n, info))| (k, json!({"count": n, "info": info}))).collect::<serde_json::Map<_, _>>(),
        "native": engine.native_summary(),
        "native_section": engine.section_use(),
        "arch": std::env::consts::ARCH,
    });
    if profile {
        let p = engine.profile();
        report["profile_ms"] = json!(p.by_class);
        report["profile_steps"] = json!(p.steps);
    }
    report["device"] = json!(engine.device());
    #[cfg(feature = "cuda")]
    if engine.device() == Device::Cuda {
        report["cuda"] =
            super::check_cuda::bench_cuda(&bundle.bundle, &bundle.trust()?, &engine, batch)?;
    }
    #[cfg(not(feature = "cuda"))]
    let _ = batch;
    if let Some(b) = &board {
        // The peak of the arithmetic that runs: the native engine keeps
        // int8 and f16 products as stored; tract runs every bundle in f32.
        let used = threads.min(b.cpu.cores) as f64;
        let precision = match engine.kind() {
            EngineKind::Native => engine.bundle.manifest.precision.to_string(),
            _ => "fp32".to_string(),
        };
        let per_core = match precision.as_str() {
            "int8" => b.peak_per_core.int8,
            "fp16" => b.peak_per_core.fp16,
            _ => b.peak_per_core.fp32,
        };
        let peak = per_core * used;
        let achieved = report["encoder_gflops"].as_f64().unwrap_or(0.0);
        let here = std::env::consts::ARCH;
        let mismatch = (b.arch() != here).then(|| {
            format!(
                "this machine is {here}, the profile is for {}: the percentage compares unlike machines",
                b.arch()
            )
        });
        report["board"] = json!({
            "name": b.name,
            "peak_gflops": peak,
            "percent_of_peak": 100.0 * achieved / peak,
            "peak_basis": format!("{precision} x {used} thread(s)"),
            "warning": mismatch,
        });
    }
    if json_out {
        out!("{report}");
    } else {
        print_report(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// The report for a person: what ran, latency per stage, throughput,
/// memory and allocations (`--json` has every field).
fn print_report(r: &serde_json::Value) {
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let kernels = r["native"]["kernels"]
        .as_str()
        .map(|k| format!(", kernels {k}"))
        .unwrap_or_default();
    out!(
        "{}: {} {}, {} px, {} labels; engine {} on {}{kernels}, {} thread(s)",
        s(&r["bundle"]),
        s(&r["architecture"]),
        s(&r["precision"]),
        r["resolution"],
        r["labels"],
        s(&r["engine"]),
        s(&r["device"]),
        r["threads"]
    );
    out!(
        "latency, ms over {} frames   min      p50      p90      p99      max",
        r["iterations"]
    );
    for stage in ["preprocess", "encode", "score", "total"] {
        let q = |k: &str| r["latency_ms"][stage][k].as_f64().unwrap_or(f64::NAN);
        out!(
            "  {stage:<26} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            q("min"),
            q("p50"),
            q("p90"),
            q("p99"),
            q("max")
        );
    }
    let a = &r["allocations_per_frame"];
    out!(
        "{:.1} frames/s; encoder {:.2} GMAC a frame, {:.1} GFLOP/s; peak RSS {} MB; allocations a frame: {} preprocess, {} encode, {} score",
        r["fps"].as_f64().unwrap_or(f64::NAN),
        r["encoder_macs"].as_f64().unwrap_or(f64::NAN) / 1e9,
        r["encoder_gflops"].as_f64().unwrap_or(f64::NAN),
        r["peak_rss_kb"].as_u64().map_or("?".into(), |kb| (kb / 1024).to_string()),
        a["preprocess"],
        a["encode"],
        a["score"]
    );
    if let Some(b) = r.get("board") {
        out!(
            "board {}: {:.0} % of its {:.1} GOP/s ({})",
            s(&b["name"]),
            b["percent_of_peak"].as_f64().unwrap_or(f64::NAN),
            b["peak_gflops"].as_f64().unwrap_or(f64::NAN),
            s(&b["peak_basis"])
        );
        if let Some(w) = b["warning"].as_str() {
            out!("warning: {w}");
        }
    }
    if let Some(p) = r.get("profile_ms").and_then(|p| p.as_object()) {
        out!("ms a frame by op class:");
        for (class, ms) in p {
            out!("  {class:<26} {:>8.3}", ms.as_f64().unwrap_or(f64::NAN));
        }
    }
    out!("(--json: every field, the ops and kernels included)");
}

fn percentiles(v: &mut [f64]) -> serde_json::Value {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    json!({"min": v[0], "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": v[v.len() - 1]})
}

fn peak_rss_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// What the CPU reports (std's runtime detection; none on 32-bit Arm, where
/// it is unstable: tract's ISA set, logged beside it, says whether NEON runs).
pub(super) fn cpu_features() -> Vec<&'static str> {
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(unused_mut)
    )]
    let mut f = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        for (name, on) in [
            ("sse4.1", is_x86_feature_detected!("sse4.1")),
            ("avx", is_x86_feature_detected!("avx")),
            ("avx2", is_x86_feature_detected!("avx2")),
            ("fma", is_x86_feature_detected!("fma")),
            ("f16c", is_x86_feature_detected!("f16c")),
            ("avx512f", is_x86_feature_detected!("avx512f")),
            ("avx512vnni", is_x86_feature_detected!("avx512vnni")),
        ] {
            if on {
                f.push(name);
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        for (name, on) in [
            ("neon", std::arch::is_aarch64_feature_detected!("neon")),
            ("fp16", std::arch::is_aarch64_feature_detected!("fp16")),
            (
                "dotprod",
                std::arch::is_aarch64_feature_detected!("dotprod"),
            ),
            ("i8mm", std::arch::is_aarch64_feature_detected!("i8mm")),
        ] {
            if on {
                f.push(name);
            }
        }
    }
    f
}
