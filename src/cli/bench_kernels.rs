//! `clip-edge bench-kernels`: the native kernels against tract's matrix
//! multiply on the same shapes, side by side in one run (one thread; in a
//! build without tract, against the scalar twins).
//! A measurement, not a test: the kernels' correctness is in
//! `kernels::tests`.

use std::process::ExitCode;
use std::time::Instant;

use half::f16;
use serde::Serialize;
use serde_json::json;
#[cfg(feature = "tract")]
use tract_core::internal::*;
#[cfg(feature = "tract")]
use tract_core::ops::einsum::EinSum;

use clip_edge::kernels::{quantize_row, Kernels};

use super::bench::cpu_features;

#[derive(clap::Args)]
pub struct Args {
    /// Runs of each kernel on each shape; the median is reported.
    #[arg(long, default_value_t = 10)]
    iterations: usize,
    /// One JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &Args) -> anyhow::Result<ExitCode> {
    let &Args {
        iterations,
        json: json_out,
    } = a;
    let kernels = Kernels::detect();
    let rows = measure(&VIT_B32_SHAPES, iterations, kernels)?;
    let peaks = peaks(iterations, kernels);
    let resize = resize_rows(iterations);
    if json_out {
        out!(
            "{}",
            json!({"kernels": kernels.name, "cpu_features": cpu_features(), "fma_peaks": peaks, "rows": rows, "resize": resize})
        );
        return Ok(ExitCode::SUCCESS);
    }
    for p in &peaks {
        out!(
            "{} f32 multiply-add peak: {:.1} GMAC/s",
            p.path,
            p.gmacs_per_s
        );
    }
    // A path's rows are named after it; the longest matching name wins
    // (`x86_64-avx512-vnni` over `x86_64-avx512`).
    let peak_of = |name: &str| {
        peaks
            .iter()
            .filter(|p| name.starts_with(&format!("{} ", p.path)))
            .max_by_key(|p| p.path.len())
            .map(|p| p.gmacs_per_s)
    };
    for r in &rows {
        out!("m {} k {} n {}:", r.m, r.k, r.n);
        // tract's f32 product; in a build without tract, the scalar twin's.
        let (base_name, base) =
            r.ms.iter()
                .find(|(name, _)| name == "tract f32" || name == "scalar f32")
                .unwrap_or(&r.ms[0]);
        let macs = (r.m * r.k * r.n) as f64;
        for (name, ms) in &r.ms {
            let rate = macs / ms / 1e6;
            // Float products only: the peak is f32 multiply-adds.
            let float = name.contains(" f32") || name.contains(" f16");
            let share = peak_of(name)
                .filter(|_| float)
                .map(|p| format!("  {:>5.1} % of the f32 peak", 100.0 * rate / p))
                .unwrap_or_default();
            out!(
                "  {name:<40} {ms:>9.3} ms  {:>6.2}x {base_name}  {rate:>7.1} GMAC/s{share}",
                base / ms
            );
        }
    }
    let (w, h) = RESIZE_FROM;
    out!("exact resize {w}x{h} RGB to {RESIZE_TO}x{RESIZE_TO} (crop), with normalising:");
    let plain = resize.first().map_or(f64::NAN, |r| r.ms);
    for r in &resize {
        out!(
            "  {:<40} {:>9.3} ms  {:>6.2}x plain",
            r.level,
            r.ms,
            plain / r.ms
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The resize `bench-kernels` times: a 1080p camera frame to CLIP's input.
const RESIZE_FROM: (u32, u32) = (1920, 1080);
const RESIZE_TO: u32 = 224;

/// One copy of the row kernels' exact resize of a frame, median ms.
#[derive(Debug, Serialize)]
pub struct ResizeRow {
    pub level: &'static str,
    pub ms: f64,
}

/// The preprocessing of a 1080p frame (one thread) with each copy of the
/// row kernels this CPU runs.
fn resize_rows(iterations: usize) -> Vec<ResizeRow> {
    use clip_edge::kernels::elementwise::Level;
    use clip_edge::preprocess::{ImageView, Mode, Preprocessor, CLIP_MEAN, CLIP_STD};
    let (w, h) = RESIZE_FROM;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let pixels: Vec<u8> = (0..w as usize * h as usize * 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    let img = ImageView::new(w, h, Mode::Rgb, &pixels);
    let mut out = vec![0f32; Preprocessor::output_len(RESIZE_TO)];
    Level::available()
        .into_iter()
        .map(|level| {
            let mut pre = Preprocessor::with_level(level);
            let ms = median_ms(iterations, || {
                pre.run(&img, RESIZE_TO, CLIP_MEAN, CLIP_STD, &mut out)
                    .expect("a valid frame and output")
            });
            ResizeRow {
                level: level.name(),
                ms,
            }
        })
        .collect()
}

/// ViT-B/32's linear layers at one image (50 tokens): attention projection,
/// MLP up, MLP down.
pub const VIT_B32_SHAPES: [(usize, usize, usize); 3] =
    [(50, 768, 768), (50, 768, 3072), (50, 3072, 768)];

/// One shape's median milliseconds per path.
#[derive(Debug, Serialize)]
pub struct Row {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// Path name → median ms.
    pub ms: Vec<(String, f64)>,
}

/// One kernel path's f32 multiply-add peak, measured.
#[derive(Debug, Serialize)]
pub struct Peak {
    pub path: String,
    /// Lanes × independent chains of `vfmadd`/`fmla` on registers alone.
    pub gmacs_per_s: f64,
}

/// Steps of one timed run of a peak loop (12 chains × 16 lanes: 192 M
/// multiply-adds on AVX-512, a few milliseconds).
const PEAK_STEPS: usize = 1_000_000;

/// Each SIMD path's f32 multiply-add peak on this core (one thread): the
/// measure that the f32 kernels' rates are a share of.
fn peaks(iterations: usize, kernels: Kernels) -> Vec<Peak> {
    let paths = if kernels.name == Kernels::SCALAR.name {
        vec![kernels]
    } else {
        Kernels::available()
    };
    paths
        .into_iter()
        .map(|kern| {
            let mut macs = 0;
            let ms = median_ms(iterations, || {
                let (sum, n) = kern.fma_peak(PEAK_STEPS);
                std::hint::black_box(sum);
                macs = n;
            });
            Peak {
                path: kern.name.to_string(),
                gmacs_per_s: macs as f64 / ms / 1e6,
            }
        })
        .collect()
}

fn median_ms(iterations: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..iterations.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

#[cfg(feature = "tract")]
fn tract_plan(
    m: usize,
    k: usize,
    b: Tensor,
    input: DatumType,
    acc: DatumType,
) -> TractResult<Arc<TypedSimplePlan>> {
    let mut model = TypedModel::default();
    let src = model.add_source("a", TypedFact::dt_shape(input, [m, k]))?;
    let w = model.add_const("b", b)?;
    let c = model.wire_node("mm", EinSum::new("mk,kn->mn".parse()?, acc), &[src, w])?;
    model.select_output_outlets(&c)?;
    model.into_optimized()?.into_runnable()
}

/// Times tract's f32 and i8 matmuls, the scalar twins and every SIMD path
/// of this CPU (none when `kernels` are the twins) on each shape.
fn measure(
    shapes: &[(usize, usize, usize)],
    iterations: usize,
    kernels: Kernels,
) -> anyhow::Result<Vec<Row>> {
    let simd = if kernels.name == Kernels::SCALAR.name {
        Vec::new()
    } else {
        Kernels::available()
    };
    let mut rows = Vec::new();
    for &(m, k, n) in shapes {
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
        let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
        let w16: Vec<f16> = w.iter().map(|v| f16::from_f32(*v)).collect();
        let w8: Vec<i8> = w.iter().map(|v| (v * 127.0).round() as i8).collect();
        let mut xq = vec![0i8; m * k];
        let mut acc = vec![0i32; m * n];
        let mut outf = vec![0f32; m * n];
        let mut ms = Vec::new();

        #[cfg(feature = "tract")]
        ms.extend(tract_rows((m, k, n), &x, &w, &w8, iterations)?);
        ms.push((
            "quantize_row alone".to_string(),
            median_ms(iterations, || {
                for (row, q) in x.chunks(k).zip(xq.chunks_mut(k)) {
                    quantize_row(row, q);
                }
            }),
        ));
        for kern in std::iter::once(Kernels::SCALAR).chain(simd.iter().copied()) {
            let w8 = kern.pack_i8(&w8, n, k);
            ms.push((
                format!("{} int8 (with quantize_row)", kern.name),
                median_ms(iterations, || {
                    for (row, q) in x.chunks(k).zip(xq.chunks_mut(k)) {
                        quantize_row(row, q);
                    }
                    kern.gemm_i8(&xq, &w8, m, n, k, &mut acc);
                }),
            ));
            ms.push((
                format!("{} int8 (product only)", kern.name),
                median_ms(iterations, || {
                    kern.gemm_i8(&xq, &w8, m, n, k, &mut acc);
                }),
            ));
            ms.push((
                format!("{} f16 weights", kern.name),
                median_ms(iterations, || {
                    kern.gemm_f16w(&x, &w16, m, n, k, &mut outf);
                }),
            ));
            ms.push((
                format!("{} f32", kern.name),
                median_ms(iterations, || {
                    kern.gemm_f32(&x, &w, m, n, k, &mut outf);
                }),
            ));
            let wp16 = kern.pack_f16(&w16, n, k);
            ms.push((
                format!("{} f16 weights, packed", kern.name),
                median_ms(iterations, || {
                    kern.gemm_f16p(&x, &wp16, m, n, k, &mut outf);
                }),
            ));
            let wp = kern.pack_f32(&w, n, k);
            ms.push((
                format!("{} f32, packed", kern.name),
                median_ms(iterations, || {
                    kern.gemm_f32p(&x, &wp, m, n, k, &mut outf);
                }),
            ));
        }
        rows.push(Row { m, k, n, ms });
    }
    Ok(rows)
}

/// tract's f32 and i8 products of `x` by `w` / `w8` (`n × k`), timed.
#[cfg(feature = "tract")]
fn tract_rows(
    (m, k, n): (usize, usize, usize),
    x: &[f32],
    w: &[f32],
    w8: &[i8],
    iterations: usize,
) -> TractResult<Vec<(String, f64)>> {
    let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
    let w8t: Vec<i8> = (0..k * n).map(|i| w8[(i % n) * k + i / n]).collect();
    let mut ms = Vec::new();
    let f32_plan = tract_plan(
        m,
        k,
        tensor1(&wt).into_shape(&[k, n])?,
        f32::datum_type(),
        f32::datum_type(),
    )?;
    let xt = tensor1(x).into_shape(&[m, k])?;
    ms.push((
        "tract f32".to_string(),
        median_ms(iterations, || {
            f32_plan
                .run(tvec!(xt.clone().into_tvalue()))
                .expect("tract f32");
        }),
    ));
    let i8_plan = tract_plan(
        m,
        k,
        tensor1(&w8t).into_shape(&[k, n])?,
        i8::datum_type(),
        i32::datum_type(),
    )?;
    let mut xq = vec![0i8; m * k];
    for (row, q) in x.chunks(k).zip(xq.chunks_mut(k)) {
        quantize_row(row, q);
    }
    let xqt = tensor1(&xq).into_shape(&[m, k])?;
    ms.push((
        "tract i8".to_string(),
        median_ms(iterations, || {
            i8_plan
                .run(tvec!(xqt.clone().into_tvalue()))
                .expect("tract i8");
        }),
    ));
    Ok(ms)
}
