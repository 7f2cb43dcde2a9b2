//! tract's matrix-multiply kernels at f32, f16 and i8 on this CPU, against a
//! plain reference, and which kernel each one picked.
//!
//! The bundles run their encoders in f32 today (int8 and fp16 are simulated
//! in f32 ops), so this test is what exercises tract's narrow kernels: on
//! arm64 the SMLAL (no dot product), SDOT (`dotprod`) and native-fp16 paths,
//! selected by what the CPU reports. `scripts/cross-test` runs it under QEMU
//! with each CPU model; the kernel names show in its log.
//!
//! Inputs are small multiples of 1/4 so every product and partial sum is
//! exact in f16: any accumulation order and precision must give the exact
//! reference, so the check is equality.

mod common;

use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;
use tract_linalg::isa::{self, Isa};

/// Shapes (m, k, n), including tails that are not multiples of any kernel tile.
const SHAPES: [(usize, usize, usize); 6] = [
    (1, 1, 1),
    (1, 31, 1),
    (7, 33, 13),
    (16, 64, 9),
    (5, 100, 24),
    (33, 17, 40),
];

/// Deterministic values in [-1, 1] in steps of 1/4 (i8: in [-100, 100]).
fn values(len: usize, seed: u64) -> Vec<i32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % 201) as i32 - 100
        })
        .collect()
}

fn reference(a: &[i64], b: &[i64], m: usize, k: usize, n: usize) -> Vec<i64> {
    let mut c = vec![0i64; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
        }
    }
    c
}

/// Runs `a · b` (b a constant, as weights are) through an optimised tract
/// plan; returns the output and the matmul kernels the plan chose.
fn run(a: Tensor, b: Tensor, operating: DatumType) -> TractResult<(Tensor, Vec<String>)> {
    let mut model = TypedModel::default();
    let src = model.add_source("a", TypedFact::dt_shape(a.datum_type(), a.shape()))?;
    let w = model.add_const("b", b)?;
    let c = model.wire_node(
        "mm",
        EinSum::new("mk,kn->mn".parse()?, operating),
        &[src, w],
    )?;
    model.select_output_outlets(&c)?;
    let plan = model.into_optimized()?.into_runnable()?;
    let kernels = clip_edge::tract_graph::matmul_kernels(&plan);
    let out = plan.run(tvec!(a.into_tvalue()))?;
    Ok((out[0].clone().into_tensor(), kernels))
}

/// Logs the kernels and the ISA tract detected, and writes them to the
/// process's stderr directly (not through `eprintln!`, which the test harness
/// captures), so every test log shows the path that ran.
fn report(dt: &str, kernels: &[String]) {
    use std::io::Write;
    let line = format!(
        "tract kernel path {dt}: {} (ISA {:?})",
        kernels.join(" | "),
        isa::native()
    );
    log::info!("{line}");
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// One precision's check: operands are `values` mapped to integer `units`,
/// stored as `T` by `elem`, multiplied with `operating` accumulation; the
/// product must equal the exact reference times `out_scale`. Returns the
/// kernels of the last (largest) shape.
fn check<T: Datum + Copy>(
    name: &str,
    seed: u64,
    unit: fn(i32) -> i64,
    elem: fn(i64) -> T,
    operating: DatumType,
    out_scale: f64,
) -> Vec<String> {
    let mut kernels = vec![];
    for (i, &(m, k, n)) in SHAPES.iter().enumerate() {
        let ints = |len, s| values(len, s).into_iter().map(unit).collect::<Vec<_>>();
        let (ai, bi) = (
            ints(m * k, seed + i as u64),
            ints(k * n, seed + 100 + i as u64),
        );
        let tensor = |v: &[i64], shape: &[usize]| {
            Tensor::from_shape(shape, &v.iter().map(|&x| elem(x)).collect::<Vec<T>>()).unwrap()
        };
        let (c, picked) = run(tensor(&ai, &[m, k]), tensor(&bi, &[k, n]), operating).unwrap();
        let got = c.cast_to::<f64>().unwrap();
        let want = reference(&ai, &bi, m, k, n);
        for (g, w) in got.to_plain_array_view::<f64>().unwrap().iter().zip(&want) {
            assert_eq!(*g, *w as f64 * out_scale, "{name} {m}x{k}x{n}");
        }
        kernels = picked;
    }
    report(name, &kernels);
    kernels
}

/// Floats: multiples of 1/4 in [-1, 1]; the product is in units of 1/16.
fn quarter(x: i32) -> i64 {
    (x / 25) as i64
}

fn picked(kernels: &[String], pattern: &str) -> bool {
    kernels.iter().any(|k| k.contains(pattern))
}

#[test]
fn f32_matmul_is_exact_on_quarter_steps() {
    let kernels = check(
        "f32",
        0,
        quarter,
        |q| q as f32 / 4.0,
        f32::datum_type(),
        1.0 / 16.0,
    );
    if cfg!(target_arch = "arm") {
        // armv7: the NEON kernels iff the CPU has NEON, else the VFP fallback.
        let neon = isa::native().has(Isa::ArmNeon);
        assert_eq!(picked(&kernels, "neon"), neon, "{kernels:?}, NEON {neon}");
    }
}

#[test]
fn f16_matmul_is_exact_on_quarter_steps() {
    let kernels = check(
        "f16",
        7,
        quarter,
        |q| f16::from_f32(q as f32 / 4.0),
        f16::datum_type(),
        1.0 / 16.0,
    );
    // tract runs f16 natively only where the CPU has FEAT_FP16.
    common::assert_native_f16_iff_fp16(&kernels);
}

#[test]
fn i8_matmul_accumulates_exactly_in_i32() {
    let kernels = check("i8", 11, |x| x as i64, |x| x as i8, i32::datum_type(), 1.0);
    if cfg!(target_arch = "aarch64") && !isa::native().has(Isa::Aarch64DotProd) {
        // Without FEAT_DotProd the SDOT kernels must not be picked (SMLAL runs).
        assert!(!picked(&kernels, "dot"), "{kernels:?} without dotprod");
    }
}
