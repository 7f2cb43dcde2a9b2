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

use tract_core::internal::*;
use tract_core::ops::einsum::EinSum;

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
    let kernels = plan
        .model()
        .nodes
        .iter()
        .flat_map(|n| n.op.info().unwrap_or_default())
        .filter(|l| l.starts_with("Mult:"))
        .collect();
    let out = plan.run(tvec!(a.into_tvalue()))?;
    Ok((out[0].clone().into_tensor(), kernels))
}

/// Logs the kernels and writes them to the process's stderr directly (not
/// through `eprintln!`, which the test harness captures), so every test log
/// shows the path that ran.
fn report(dt: &str, kernels: &[String]) {
    use std::io::Write;
    let line = format!("tract kernel path {dt}: {}", kernels.join(" | "));
    log::info!("{line}");
    let _ = writeln!(std::io::stderr(), "{line}");
}

#[test]
fn f32_matmul_is_exact_on_quarter_steps() {
    for (i, &(m, k, n)) in SHAPES.iter().enumerate() {
        let (ai, bi) = (values(m * k, i as u64), values(k * n, 100 + i as u64));
        let q = |v: &[i32]| v.iter().map(|&x| (x / 25) as f32 / 4.0).collect::<Vec<_>>();
        let (af, bf) = (q(&ai), q(&bi));
        let a = Tensor::from_shape(&[m, k], &af).unwrap();
        let b = Tensor::from_shape(&[k, n], &bf).unwrap();
        let (c, kernels) = run(a, b, f32::datum_type()).unwrap();
        let want = reference(
            &ai.iter().map(|&x| (x / 25) as i64).collect::<Vec<_>>(),
            &bi.iter().map(|&x| (x / 25) as i64).collect::<Vec<_>>(),
            m,
            k,
            n,
        );
        let got: Vec<f32> = c
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(*g, *w as f32 / 16.0, "f32 {m}x{k}x{n}");
        }
        if i == SHAPES.len() - 1 {
            report("f32", &kernels);
        }
    }
}

#[test]
fn f16_matmul_is_exact_on_quarter_steps() {
    for (i, &(m, k, n)) in SHAPES.iter().enumerate() {
        let (ai, bi) = (values(m * k, 7 + i as u64), values(k * n, 200 + i as u64));
        let q = |v: &[i32]| {
            v.iter()
                .map(|&x| f16::from_f32((x / 25) as f32 / 4.0))
                .collect::<Vec<_>>()
        };
        let a = Tensor::from_shape(&[m, k], &q(&ai)).unwrap();
        let b = Tensor::from_shape(&[k, n], &q(&bi)).unwrap();
        let (c, kernels) = run(a, b, f16::datum_type()).unwrap();
        let want = reference(
            &ai.iter().map(|&x| (x / 25) as i64).collect::<Vec<_>>(),
            &bi.iter().map(|&x| (x / 25) as i64).collect::<Vec<_>>(),
            m,
            k,
            n,
        );
        let got: Vec<f16> = c
            .to_plain_array_view::<f16>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.to_f32(), *w as f32 / 16.0, "f16 {m}x{k}x{n}");
        }
        if i == SHAPES.len() - 1 {
            report("f16", &kernels);
            if cfg!(target_arch = "aarch64") {
                // tract runs f16 natively only where the CPU has FEAT_FP16.
                let native = kernels.iter().any(|k| k.contains("f16"));
                assert_eq!(
                    native,
                    tract_linalg::has_fp16(),
                    "f16 kernel {kernels:?} vs has_fp16 {}",
                    tract_linalg::has_fp16()
                );
            }
        }
    }
}

#[test]
fn i8_matmul_accumulates_exactly_in_i32() {
    for (i, &(m, k, n)) in SHAPES.iter().enumerate() {
        let (ai, bi) = (values(m * k, 11 + i as u64), values(k * n, 300 + i as u64));
        let a8: Vec<i8> = ai.iter().map(|&x| x as i8).collect();
        let b8: Vec<i8> = bi.iter().map(|&x| x as i8).collect();
        let a = Tensor::from_shape(&[m, k], &a8).unwrap();
        let b = Tensor::from_shape(&[k, n], &b8).unwrap();
        let (c, kernels) = run(a, b, i32::datum_type()).unwrap();
        let want = reference(
            &ai.iter().map(|&x| x as i64).collect::<Vec<_>>(),
            &bi.iter().map(|&x| x as i64).collect::<Vec<_>>(),
            m,
            k,
            n,
        );
        let got: Vec<i32> = c
            .to_plain_array_view::<i32>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(*g as i64, *w, "i8 {m}x{k}x{n}");
        }
        if i == SHAPES.len() - 1 {
            report("i8", &kernels);
        }
    }
}
