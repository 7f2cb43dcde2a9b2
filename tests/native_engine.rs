//! The native engine against tract (the reference backend) on every
//! committed bundle: the same probabilities for fp32 and fp16 bundles, the
//! same embeddings up to int8 rounding for int8 bundles, and the ops in the
//! bundle's precision (int8 products really in integers, fp16 weights kept
//! in f16).

mod common;

use clip_edge::bundle::Trust;
use clip_edge::decode::decode_file;
use clip_edge::engine::{Engine, EngineKind};
use common::{root, COMMITTED_BUNDLES};

/// fp32 / fp16 bundles, native vs tract: every probability. Measured at most
/// 6.9e-7 (default-fp32) on an Intel Xeon (KVM, AVX-512 VNNI) on every path
/// it runs: native scalar, x86_64-avx2 and -avx512(-vnni), tract on AVX-512
/// and on AVX2.
const NATIVE_PROB_TOL: f32 = 7e-6;
/// int8 bundles, native (integer products) vs tract (the graph's simulated
/// int8 in f32): image-embedding cosine. Measured at least 0.9999967
/// (vit_tiny_int8, tract on AVX2; 0.9999974 on the other paths above).
const NATIVE_INT8_MIN_COSINE: f32 = 0.99997;
/// The same for the MobileCLIP fixture, whose embedding is the small part of
/// a random tower's output that differs between images (its head centres
/// them), which magnifies the rare rounding tie the two quantise apart.
/// Measured 0.99994874 (la_256x300.png, AMD EPYC, AVX-512).
const NATIVE_INT8_MIN_COSINE_CENTRED: f32 = 0.9995;

fn images() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(root().join("models/calibration"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    assert_eq!(v.len(), 9);
    v
}

fn load(b: &str, kind: EngineKind) -> Engine {
    Engine::load_on(&root().join(b), &Trust::default(), kind, 1).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (n(a) * n(b))
}

#[test]
fn native_matches_tract_on_every_committed_bundle() {
    for b in COMMITTED_BUNDLES {
        let mut native = load(b, EngineKind::Native);
        let mut tract = load(b, EngineKind::Tract);
        assert_eq!(
            (native.kind(), tract.kind()),
            (EngineKind::Native, EngineKind::Tract)
        );
        let int8 = native.bundle.manifest.precision.clone() == "int8";
        let labels = native.bundle.labels().len();
        let (mut worst_prob, mut worst_cos) = (0f32, 1f32);
        for p in images() {
            let img = decode_file(&p).unwrap();
            native.classify(&img.view(), labels).unwrap();
            tract.classify(&img.view(), labels).unwrap();
            let c = cosine(native.embedding(), tract.embedding());
            worst_cos = worst_cos.min(c);
            for (n, t) in native.scores.iter().zip(&tract.scores) {
                worst_prob = worst_prob.max((n - t).abs());
            }
            if int8 {
                let min = if b.contains("mobileclip") {
                    NATIVE_INT8_MIN_COSINE_CENTRED
                } else {
                    NATIVE_INT8_MIN_COSINE
                };
                assert!(c >= min, "{b} {}: cosine {c}", p.display());
            } else {
                for (i, (n, t)) in native.scores.iter().zip(&tract.scores).enumerate() {
                    assert!(
                        (n - t).abs() <= NATIVE_PROB_TOL,
                        "{b} {} label {i}: {n} vs {t}",
                        p.display()
                    );
                }
            }
        }
        eprintln!("{b}: max |dprob| {worst_prob:.2e}, min cosine {worst_cos:.7}");
    }
}

#[test]
fn products_run_in_the_bundles_precision() {
    for b in COMMITTED_BUNDLES {
        let e = load(b, EngineKind::Native);
        let s = e.native_summary().unwrap();
        let precision = e.bundle.manifest.precision.clone();
        let count = |p: &str| s.products.iter().filter(|(_, q)| *q == p).count();
        // The graph's node names are the layer names with `_` for `.` and
        // `/` (an ONNX export's), leading underscores aside.
        let products_of = |layer: &str| -> Vec<&'static str> {
            let prefix = layer.replace(['.', '/'], "_");
            let prefix = prefix.trim_start_matches('_');
            s.products
                .iter()
                .filter(|(n, _)| {
                    n.trim_start_matches('_')
                        .strip_prefix(prefix)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['_', '.']))
                })
                .map(|(_, p)| *p)
                .collect()
        };
        match precision.as_str() {
            // Every layer the manifest calls int8 runs in integers (in one
            // product or several: tract splits q/k/v).
            "int8" => {
                let mut int8_layers = 0;
                for l in e
                    .bundle
                    .manifest
                    .layers
                    .iter()
                    .filter(|l| l.precision == "int8")
                {
                    let p = products_of(&l.name);
                    assert!(
                        !p.is_empty() && p.iter().all(|p| *p == "int8"),
                        "{b} {}: {p:?}",
                        l.name
                    );
                    int8_layers += 1;
                }
                assert!(int8_layers > 0 && count("int8") >= int8_layers, "{b}");
            }
            // Nothing in f32 weights: fp16 stays f16 in memory.
            "fp16" => {
                assert!(count("f16") > 0, "{b}: {:?}", s.products);
                assert_eq!(count("f32"), 0, "{b}: {:?}", s.products);
                assert_eq!(count("f32-winograd"), 0, "{b}: {:?}", s.products);
            }
            // fp32 runs in f32, even where its weights are f16 values.
            "fp32" => {
                assert_eq!(count("int8"), 0, "{b}: {:?}", s.products);
                assert_eq!(count("f16"), 0, "{b}: {:?}", s.products);
                // The fp32 ResNet's 16 × 16, 64-channel 3 × 3 convolution
                // runs by Winograd's tiles (so the comparison with tract
                // above covers them).
                if b == "models/default-fp32" {
                    assert_eq!(count("f32-winograd"), 1, "{b}: {:?}", s.products);
                }
            }
            _ => assert_eq!(count("int8"), 0, "{b}: {:?}", s.products),
        }
        assert_eq!(s.kernels, expected_kernels());
        // scripts/cross-test names the path each qemu CPU model must run,
        // apart from what the features read here say.
        if let (Ok(want), Err(_)) = (
            std::env::var("CLIP_EDGE_EXPECT_KERNELS"),
            std::env::var("CLIP_EDGE_KERNELS"),
        ) {
            assert_eq!(s.kernels, want, "{b}: CLIP_EDGE_EXPECT_KERNELS");
        }
    }
}

#[test]
fn threads_split_rows_without_changing_a_bit() {
    let img = decode_file(&root().join("models/calibration/rgb_640x480.png")).unwrap();
    // Products split by rows, by output channels (a ViT's few tokens) and
    // attention split by heads, and float convolutions by pixel blocks
    // (f32 weight rows: default-fp32; f16 panels: rn_tiny_fp16), must all
    // give the one-thread bits.
    for b in [
        "models/default-int8",
        "models/default-fp32",
        "tests/fixtures/bundles/rn_tiny_fp16",
        "tests/fixtures/bundles/vit_tiny_fp32",
        "tests/fixtures/bundles/vit_tiny_int8",
    ] {
        let embeddings: Vec<Vec<u32>> = [1, 2, 3]
            .iter()
            .map(|&t| {
                let mut e =
                    Engine::load_on(&root().join(b), &Trust::default(), EngineKind::Native, t)
                        .unwrap();
                assert_eq!(e.native_summary().unwrap().threads, t);
                e.classify(&img.view(), 1).unwrap();
                e.embedding().iter().map(|v| v.to_bits()).collect()
            })
            .collect();
        assert!(embeddings.windows(2).all(|w| w[0] == w[1]), "{b}");
    }
}

/// The kernel path this CPU must run, from its features (read here, apart
/// from the selection code), unless `CLIP_EDGE_KERNELS` forces one.
fn expected_kernels() -> String {
    if let Ok(forced) = std::env::var("CLIP_EDGE_KERNELS") {
        return forced;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let f = |name: &str| match name {
            "avx2" => is_x86_feature_detected!("avx2"),
            "fma" => is_x86_feature_detected!("fma"),
            "f16c" => is_x86_feature_detected!("f16c"),
            "avx512f" => is_x86_feature_detected!("avx512f"),
            "avx512bw" => is_x86_feature_detected!("avx512bw"),
            "avx512vnni" => is_x86_feature_detected!("avx512vnni"),
            _ => false,
        };
        let all = |names: &[&str]| names.iter().all(|n| f(n));
        return if !all(&["avx2", "fma", "f16c"]) {
            if is_x86_feature_detected!("sse4.1") {
                "x86_64-sse41"
            } else {
                "scalar"
            }
        } else if all(&["avx512f", "avx512bw", "avx512vnni"]) {
            // AMX as Linux lists it: only where the kernel gives processes
            // the tile state.
            let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            let amx = flags
                .lines()
                .find(|l| l.starts_with("flags"))
                .is_some_and(|l| {
                    let has = |n: &str| l.split_whitespace().any(|w| w == n);
                    has("amx_tile") && has("amx_int8")
                });
            if amx {
                "x86_64-amx"
            } else {
                "x86_64-avx512-vnni"
            }
        } else if all(&["avx512f", "avx512bw"]) {
            "x86_64-avx512"
        } else if is_x86_feature_detected!("avxvnni") {
            "x86_64-avx-vnni"
        } else {
            "x86_64-avx2"
        }
        .into();
    }
    #[cfg(target_arch = "aarch64")]
    {
        return if std::arch::is_aarch64_feature_detected!("i8mm") {
            "aarch64-i8mm"
        } else if std::arch::is_aarch64_feature_detected!("dotprod") {
            "aarch64-dotprod"
        } else {
            "aarch64-neon"
        }
        .into();
    }
    #[cfg(target_arch = "arm")]
    {
        // NEON and VFPv4 (with its half-precision conversions), from
        // AT_HWCAP (Linux's arch/arm/include/uapi/asm/hwcap.h).
        let caps = std::fs::read("/proc/self/auxv").ok();
        let hwcap = caps.as_deref().and_then(|a| {
            a.chunks_exact(8)
                .map(|e| {
                    let w = |i: usize| u32::from_le_bytes(e[i..i + 4].try_into().unwrap());
                    (w(0), w(4))
                })
                .find(|(key, _)| *key == 16)
                .map(|(_, v)| v)
        });
        let need = (1 << 12) | (1 << 16);
        return if hwcap.is_some_and(|v| v & need == need) {
            "armv7-neon"
        } else {
            "scalar"
        }
        .into();
    }
    #[allow(unreachable_code)]
    "scalar".into()
}
