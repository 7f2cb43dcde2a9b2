//! `clip-quantize build` from an ONNX export folder (Immich's layout) against
//! the PyTorch model it was exported from: `tests/reference/onnx_export.py`
//! wrote the folder (`tests/fixtures/onnx/vit_tiny`) and the reference
//! embeddings (committed; no Python at test time).

mod common;

use common::{root, scratch};
use std::path::{Path, PathBuf};

use clip_edge::bundle::Scoring;
use clip_edge::bundle::{TableData, Trust};
use clip_edge::decode::decode_file;
use clip_edge::engine::{Engine, EngineKind};
use clip_quantize::bundle::{build, BuildOptions, Requested, ScoringChoice};
use clip_quantize::graph::Precision;

/// fp32 bundle vs PyTorch fp32: an image embedding's largest difference
/// (both normalised). Measured 3.6e-7 (native engine), 3.0e-7 (tract); AMD
/// EPYC, AVX-512.
const FP32_MAX_ABS: f32 = 2e-6;
/// fp16 bundle (matrices stored as f16) vs PyTorch fp32. Measured 2.7e-4.
const FP16_MAX_ABS: f32 = 2e-3;
/// int8 bundle (products' weights per channel, activations per row) vs
/// PyTorch fp32: least cosine of an image embedding. Measured 0.99968.
const INT8_MIN_COSINE: f32 = 0.997;
/// The int8 bundle on the native engine vs tract's simulated int8 (which
/// rounds a tie at the quantisation step the other way now and then).
/// Measured 0.9999999.
const NATIVE_TRACT_INT8_MIN_COSINE: f32 = 0.999999;
/// The fp32 text table vs PyTorch's normalised text embeddings. Measured
/// 1.8e-7.
const TABLE_MAX_ABS: f32 = 1e-6;

struct Reference {
    images: Vec<PathBuf>,
    prompts: Vec<String>,
    image_embeddings: Vec<Vec<f32>>,
    text_embeddings: Vec<Vec<f32>>,
}

fn reference() -> Reference {
    reference_of("onnx_vit_tiny")
}

/// A generator's reference, `tests/fixtures/reference/{name}.json`.
fn reference_of(name: &str) -> Reference {
    let p = root().join(format!("tests/fixtures/reference/{name}.json"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let rows = |k: &str| -> Vec<Vec<f32>> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect()
    };
    let strings = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    Reference {
        images: strings("images").iter().map(|s| root().join(s)).collect(),
        prompts: strings("prompts"),
        image_embeddings: rows("image_embeddings"),
        text_embeddings: rows("text_embeddings"),
    }
}

/// The largest |a - b| over both vectors normalised; NaN counts as
/// infinitely far.
fn max_abs_normalised(a: &[f32], b: &[f32]) -> f32 {
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let (na, nb) = (n(a), n(b));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x / na - y / nb).abs())
        .fold(
            0f32,
            |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
        )
}

/// The largest difference of an image embedding from PyTorch's over the
/// reference images (both normalised).
fn embedding_max_abs(engine: &mut Engine, r: &Reference) -> f32 {
    let mut worst = 0f32;
    for (p, want) in r.images.iter().zip(&r.image_embeddings) {
        let img = decode_file(p).unwrap();
        engine.classify(&img.view(), 1).unwrap();
        worst = worst.max(max_abs_normalised(engine.embedding(), want));
    }
    worst
}

/// The largest difference of an fp32 bundle's table row from PyTorch's
/// text embedding (both normalised).
fn table_max_abs(out: &Path, r: &Reference) -> f32 {
    let engine = Engine::load(out).unwrap();
    let TableData::F32(t) = &engine.bundle.table else {
        panic!("an fp32 bundle's table is f32");
    };
    let e = r.text_embeddings[0].len();
    t.chunks(e)
        .zip(&r.text_embeddings)
        .map(|(a, b)| max_abs_normalised(a, b))
        .fold(0f32, f32::max)
}

fn options(export: PathBuf, precision: Requested, labels: PathBuf, out: PathBuf) -> BuildOptions {
    common::build_options(export, precision, labels, out)
}

fn build_from_export(precision: Precision, dir: &Path, labels: &[String]) -> PathBuf {
    build_scored(precision, dir, labels, ScoringChoice::default())
}

fn build_scored(
    precision: Precision,
    dir: &Path,
    labels: &[String],
    scoring: ScoringChoice,
) -> PathBuf {
    build_fixture("vit_tiny", precision, dir, labels, scoring)
}

/// A bundle from `tests/fixtures/onnx/{fixture}`, one template `{}`.
fn build_fixture(
    fixture: &str,
    precision: Precision,
    dir: &Path,
    labels: &[String],
    scoring: ScoringChoice,
) -> PathBuf {
    let labels_file = dir.join("labels.txt");
    std::fs::write(&labels_file, labels.join("\n") + "\n").unwrap();
    let templates = dir.join("templates.txt");
    std::fs::write(&templates, "{}\n").unwrap();
    let out = dir.join("bundle");
    build(&BuildOptions {
        templates: Some(templates),
        scoring,
        ..options(
            root().join("tests/fixtures/onnx").join(fixture),
            Requested::Fixed(precision),
            labels_file,
            out.clone(),
        )
    })
    .unwrap();
    out
}

#[test]
fn an_onnx_export_builds_a_bundle_that_embeds_as_pytorch_does() {
    let r = reference();
    for (precision, tol) in [
        (Precision::Fp32, FP32_MAX_ABS),
        (Precision::Fp16, FP16_MAX_ABS),
    ] {
        let d = scratch(&precision.to_string());
        let out = build_from_export(precision, &d, &r.prompts);
        for kind in [EngineKind::Native, EngineKind::Tract] {
            let mut engine = Engine::load_on(&out, &Trust::default(), kind, 1).unwrap();
            assert_eq!(engine.kind(), kind);
            let worst = embedding_max_abs(&mut engine, &r);
            eprintln!("{precision} {kind:?}: image embeddings within {worst:.2e} of PyTorch");
            assert!(worst <= tol, "{precision} {kind:?}: {worst} > {tol}");
        }
        if precision == Precision::Fp32 {
            let worst = table_max_abs(&out, &r);
            eprintln!("text table within {worst:.2e} of PyTorch");
            assert!(worst <= TABLE_MAX_ABS, "{worst} > {TABLE_MAX_ABS}");
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}

/// The same export named file by file builds the same bundle (config.json
/// aside); an image graph alone is refused, naming what it needs.
#[test]
fn export_files_named_one_by_one_build_as_the_folder_does() {
    let r = reference();
    let d = scratch("files");
    let folder = build_from_export(Precision::Fp32, &d, &r.prompts);
    let src = root().join("tests/fixtures/onnx/vit_tiny");
    let out = d.join("from-files");
    build(&BuildOptions {
        text_checkpoint: Some(src.join("textual/model.onnx")),
        preprocess: Some(src.join("visual/preprocess_cfg.json")),
        templates: Some(d.join("templates.txt")),
        ..options(
            src.join("visual/model.onnx"),
            Requested::Fixed(Precision::Fp32),
            d.join("labels.txt"),
            out.clone(),
        )
    })
    .unwrap();
    for f in ["image_encoder.nnef.tgz", "text_table.safetensors"] {
        assert_eq!(
            std::fs::read(folder.join(f)).unwrap(),
            std::fs::read(out.join(f)).unwrap(),
            "{f}"
        );
    }
    let err = build(&options(
        src.join("visual/model.onnx"),
        Requested::Fixed(Precision::Fp32),
        d.join("labels.txt"),
        d.join("bad"),
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("--text-checkpoint") && err.contains("--preprocess"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// The prompts tokenised as the exporter's PyTorch model was fed them.
#[test]
fn the_export_prompts_tokenise_as_pytorch_did() {
    let p = root().join("tests/fixtures/reference/onnx_vit_tiny.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let tok = clip_quantize::tokenizer::Tokenizer::new().unwrap();
    for (prompt, want) in v["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(v["tokens"].as_array().unwrap())
    {
        let got = tok.tokenize(prompt.as_str().unwrap(), 77, false).unwrap();
        let want: Vec<u32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(got, want, "{prompt}");
    }
}

/// Over the reference images: the least cosine between the native
/// engine's and tract's embeddings, and between the native engine's and
/// The smaller of a running worst cosine and a new one, NaN once either is
/// (`f32::min` would skip a NaN, and NaN embeddings would pass).
fn nan_min(worst: f32, c: f32) -> f32 {
    if worst.is_nan() || c.is_nan() {
        f32::NAN
    } else {
        worst.min(c)
    }
}

/// PyTorch's fp32.
fn int8_cosines(native: &mut Engine, tract: &mut Engine, r: &Reference) -> (f32, f32) {
    let (mut pair, mut to_pytorch) = (1f32, 1f32);
    for (p, want) in r.images.iter().zip(&r.image_embeddings) {
        let img = decode_file(p).unwrap();
        native.classify(&img.view(), 1).unwrap();
        tract.classify(&img.view(), 1).unwrap();
        pair = nan_min(pair, cosine(native.embedding(), tract.embedding()));
        to_pytorch = nan_min(to_pytorch, cosine(native.embedding(), want));
    }
    (pair, to_pytorch)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (n(a) * n(b))
}

#[test]
fn an_int8_bundle_from_an_export_runs_its_products_and_convolution_in_int8() {
    let r = reference();
    let d = scratch("int8");
    let out = build_from_export(Precision::Int8, &d, &r.prompts);
    let mut native = Engine::load_on(&out, &Trust::default(), EngineKind::Native, 1).unwrap();
    let mut tract = Engine::load_on(&out, &Trust::default(), EngineKind::Tract, 1).unwrap();
    let layers = &native.bundle.manifest.layers;
    assert!(
        layers.len() == 10 && layers.iter().all(|l| l.precision == "int8"),
        "{layers:?}"
    );
    let ops = native.native_summary().unwrap().ops;
    let products = native.native_summary().unwrap().products;
    assert!(
        ops.get("linear/int8").copied().unwrap_or(0) >= 8,
        "{ops:?} {products:?}"
    );
    let (worst_pair, worst) = int8_cosines(&mut native, &mut tract, &r);
    eprintln!("int8: cosine to PyTorch fp32 at least {worst:.6}, native to tract {worst_pair:.7}");
    assert!(worst >= INT8_MIN_COSINE, "{worst} < {INT8_MIN_COSINE}");
    assert!(worst_pair >= NATIVE_TRACT_INT8_MIN_COSINE, "{worst_pair}");
    let _ = std::fs::remove_dir_all(&d);
}

/// Each label's own probability with sigmoid scoring, against
/// `sigmoid(scale · cos + bias)` from PyTorch's embeddings. Measured 6.0e-8.
const SIGMOID_MAX_ABS: f32 = 5e-7;

/// The error of an fp32 build from the fixture with `scoring`, which must
/// fail.
fn refused(d: &Path, scoring: ScoringChoice) -> String {
    build(&BuildOptions {
        scoring,
        ..options(
            root().join("tests/fixtures/onnx/vit_tiny"),
            Requested::Fixed(Precision::Fp32),
            d.join("labels.txt"),
            d.join("bad"),
        )
    })
    .unwrap_err()
    .to_string()
}

#[test]
fn sigmoid_scoring_gives_each_label_its_own_probability() {
    let r = reference();
    let d = scratch("sigmoid");
    let (scale, bias) = (10.0f32, -4.0f32);
    let scoring = ScoringChoice {
        scoring: Scoring::Sigmoid,
        logit_scale: Some(scale),
        logit_bias: Some(bias),
    };
    let out = build_scored(Precision::Fp32, &d, &r.prompts, scoring);
    let manifest = std::fs::read_to_string(out.join("manifest.toml")).unwrap();
    assert!(
        manifest.contains("scoring = \"sigmoid\"") && manifest.contains("logit_bias = -4"),
        "{manifest}"
    );
    let mut engine = Engine::load(&out).unwrap();
    let labels = r.prompts.len();
    let mut worst = 0f32;
    for (p, img_emb) in r.images.iter().zip(&r.image_embeddings) {
        let img = decode_file(p).unwrap();
        engine.classify(&img.view(), labels).unwrap();
        let mut got = vec![0f32; labels];
        for &(i, prob) in engine.top() {
            got[i] = prob;
        }
        for (g, t) in got.iter().zip(&r.text_embeddings) {
            let cos: f32 = img_emb.iter().zip(t).map(|(a, b)| a * b).sum();
            let want = 1.0 / (1.0 + (-(scale * cos + bias)).exp());
            let d = (g - want).abs();
            worst = if d.is_nan() {
                f32::INFINITY
            } else {
                worst.max(d)
            };
        }
        let sum: f32 = got.iter().sum();
        assert!(
            (sum - 1.0).abs() > 1e-3,
            "sigmoid probabilities summing to {sum}"
        );
    }
    eprintln!("sigmoid scores within {worst:.2e} of PyTorch's");
    assert!(worst <= SIGMOID_MAX_ABS, "{worst}");
    // A bias with softmax is refused, naming the flag.
    let err = refused(
        &d,
        ScoringChoice {
            logit_bias: Some(1.0),
            ..Default::default()
        },
    );
    assert!(err.contains("--logit-bias 1 with softmax"), "{err}");
    // Sigmoid without a bias is refused too, before any work.
    let err = refused(
        &d,
        ScoringChoice {
            scoring: Scoring::Sigmoid,
            ..Default::default()
        },
    );
    assert!(
        err.contains("--scoring sigmoid needs --logit-bias"),
        "{err}"
    );
    // A sigmoid manifest is format 2; the same manifest claiming format 1
    // is refused (a version-1 reader would score it with softmax).
    assert!(manifest.contains("format_version = 2"), "{manifest}");
    let old = manifest.replace("format_version = 2", "format_version = 1");
    std::fs::write(out.join("manifest.toml"), old).unwrap();
    let e = Engine::load(&out).err().unwrap().to_string();
    assert!(e.contains("needs format 2"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

/// The ViT fixture's export copied into `d/export` (to be edited).
fn copy_vit_export(d: &Path) -> PathBuf {
    let src = root().join("tests/fixtures/onnx/vit_tiny");
    let copy = d.join("export");
    for f in [
        "config.json",
        "visual/model.onnx",
        "visual/preprocess_cfg.json",
        "textual/model.onnx",
    ] {
        std::fs::create_dir_all(copy.join(f).parent().unwrap()).unwrap();
        std::fs::copy(src.join(f), copy.join(f)).unwrap();
    }
    copy
}

#[test]
fn an_export_folder_that_asks_for_what_is_not_done_says_which_key() {
    let d = scratch("bad");
    let copy = copy_vit_export(&d);
    let cfg = copy.join("visual/preprocess_cfg.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let labels = d.join("labels.txt");
    std::fs::write(&labels, "cat\n").unwrap();
    // Each unsupported or mistyped value: one line naming the file, the key
    // and the value; nothing written.
    for (from, to, key, value) in [
        ("\"shortest\"", "\"longest\"", "resize_mode", "\"longest\""),
        ("\"bicubic\"", "3", "interpolation", "3"),
        ("\"size\": [", "\"size\": [\"big\", ", "size", "[\"big\""),
        ("\"mean\": [", "\"mean\": [1, ", "mean", "[1,"),
    ] {
        std::fs::write(&cfg, text.replacen(from, to, 1)).unwrap();
        let err = build(&options(
            copy.clone(),
            Requested::Fixed(Precision::Fp32),
            labels.clone(),
            d.join("out"),
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("preprocess_cfg.json") && err.contains(key) && err.contains(value),
            "{key}: {err}"
        );
        assert!(!err.contains('\n'), "{err}");
        assert!(!d.join("out").exists(), "nothing is written");
    }
    std::fs::write(&cfg, text).unwrap();
    // A null in config.json (TOML has none) is left out, not an error.
    let conf = copy.join("config.json");
    let c = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, c.replacen("{", "{\"quick_gelu\": null, ", 1)).unwrap();
    build(&options(
        copy,
        Requested::Fixed(Precision::Fp32),
        labels,
        d.join("out"),
    ))
    .unwrap();
    let _ = std::fs::remove_dir_all(&d);
}

/// MobileCLIP2's architecture, tiny (`onnx_export_mobileclip.py`): a
/// FastViT image tower (depthwise and large-kernel convolutions, 1 × 1
/// convolutions, GELU by erf, squeeze-and-excitation, an attention stage)
/// with a bilinear resize, mean 0 and std 1. fp32 native vs PyTorch fp32:
/// measured 5.7e-6 (AMD EPYC, AVX-512; ONNX Runtime on the same file:
/// 4.6e-6). The fixture's embedding is the small part of a random tower's
/// output that differs between images, which magnifies rounding.
const MOBILECLIP_FP32_MAX_ABS: f32 = 3e-5;
/// fp16 (weights of 1,024 values or more stored as f16). Measured 4.2e-3.
const MOBILECLIP_FP16_MAX_ABS: f32 = 1e-2;
/// int8 on the native engine vs tract's simulation of the same graph.
/// Measured 0.9999998.
const MOBILECLIP_NATIVE_TRACT_INT8_MIN_COSINE: f32 = 0.99999;

#[test]
fn a_mobileclip_export_runs_on_the_native_engine_as_pytorch_does() {
    let r = reference_of("onnx_mobileclip_tiny");
    for (precision, tol) in [
        (Precision::Fp32, MOBILECLIP_FP32_MAX_ABS),
        (Precision::Fp16, MOBILECLIP_FP16_MAX_ABS),
    ] {
        let d = scratch(&format!("mobileclip-{precision}"));
        let out = build_fixture(
            "mobileclip_tiny",
            precision,
            &d,
            &r.prompts,
            ScoringChoice::default(),
        );
        let manifest = std::fs::read_to_string(out.join("manifest.toml")).unwrap();
        assert!(
            manifest.contains("resize = \"pillow-bilinear\"")
                && manifest.contains("format_version = 3"),
            "{manifest}"
        );
        if precision == Precision::Fp32 {
            // Claiming format 2 (whose readers resize bicubic), or a resize
            // this runtime lacks: refused, naming what is wrong.
            let copy = d.join("copy");
            std::fs::create_dir_all(&copy).unwrap();
            for f in std::fs::read_dir(&out).unwrap() {
                let f = f.unwrap().path();
                std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
            }
            for (from, to, says) in [
                ("format_version = 3", "format_version = 2", "needs format 3"),
                (
                    "\"pillow-bilinear\"",
                    "\"pillow-lanczos\"",
                    "pillow-bilinear-squash",
                ),
            ] {
                std::fs::write(copy.join("manifest.toml"), manifest.replace(from, to)).unwrap();
                let e = Engine::load(&copy).err().unwrap().to_string();
                assert!(e.contains(says) && !e.contains('\n'), "{e}");
            }
        }
        for kind in [EngineKind::Native, EngineKind::Tract] {
            let mut engine = Engine::load_on(&out, &Trust::default(), kind, 1).unwrap();
            assert_eq!(engine.kind(), kind);
            if kind == EngineKind::Native {
                let ops = engine.native_summary().unwrap().ops;
                assert!(ops.get("depthwise").copied().unwrap_or(0) >= 10, "{ops:?}");
            }
            let worst = embedding_max_abs(&mut engine, &r);
            eprintln!("mobileclip {precision} {kind:?}: within {worst:.2e} of PyTorch");
            assert!(worst <= tol, "{precision} {kind:?}: {worst} > {tol}");
        }
        let _ = std::fs::remove_dir_all(&d);
    }
    // int8: the 1 × 1 convolutions' weights per channel, one scale per
    // image; the native engine runs them in int8, as tract simulates them.
    // (The fixture's embedding is the small part of a random tower's output
    // that differs between images: quantisation is reported against
    // PyTorch, not held to a bound, here.)
    let d = scratch("mobileclip-int8");
    let out = build_fixture(
        "mobileclip_tiny",
        Precision::Int8,
        &d,
        &r.prompts,
        ScoringChoice::default(),
    );
    let mut native = Engine::load_on(&out, &Trust::default(), EngineKind::Native, 1).unwrap();
    let mut tract = Engine::load_on(&out, &Trust::default(), EngineKind::Tract, 1).unwrap();
    let ops = native.native_summary().unwrap().ops;
    assert!(ops.get("conv/int8").copied().unwrap_or(0) >= 8, "{ops:?}");
    let (pair, to_pytorch) = int8_cosines(&mut native, &mut tract, &r);
    eprintln!("mobileclip int8: native to tract {pair:.7}, to PyTorch fp32 {to_pytorch:.4}");
    assert!(pair >= MOBILECLIP_NATIVE_TRACT_INT8_MIN_COSINE, "{pair}");
    let _ = std::fs::remove_dir_all(&d);
}

/// A `tokenizer.json` (a SentencePiece-style Unigram, as SigLIP's) runs as
/// open_clip's `HFTokenizer` runs it, token for token, for each cleaning
/// and a context that truncates, one that pads: the reference is
/// `tests/reference/hf_tokenizer.py`'s, from Python's `tokenizers`.
#[test]
fn a_tokenizer_json_tokenises_as_open_clip_does() {
    use clip_quantize::hf_tokenizer::{Clean, HfTokenizer};
    let p = root().join("tests/fixtures/reference/hf_tokenizer.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let texts: Vec<&str> = v["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let file = root().join("tests/fixtures/hf_tokenizer/tokenizer.json");
    let mut checked = 0;
    for case in v["cases"].as_array().unwrap() {
        let clean = Clean::from_name(case["clean"].as_str().unwrap()).unwrap();
        let context = case["context_length"].as_u64().unwrap() as usize;
        let tok = HfTokenizer::from_file(&file, clean, Some("<pad>"), context).unwrap();
        for (text, want) in texts.iter().zip(case["ids"].as_array().unwrap()) {
            let want: Vec<u32> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(
                tok.tokenize(text).unwrap(),
                want,
                "{clean:?} {context}: {text:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 1500, "{checked}");
    // A file that is not a tokenizer, and a pad token it lacks: one line
    // naming the file.
    let d = scratch("bad-tokenizer");
    let bad = d.join("tokenizer.json");
    std::fs::write(&bad, "{\"model\": 3}").unwrap();
    let e = HfTokenizer::from_file(&bad, Clean::Whitespace, None, 16)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("tokenizer.json") && !e.contains('\n'), "{e}");
    let e = HfTokenizer::from_file(&file, Clean::Whitespace, Some("[PAD]"), 16)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("[PAD]"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

/// An export whose `tokenizer_config.json` names another tokenizer class
/// builds with the `tokenizer.json` beside it, cleaned as its config says,
/// and is refused without one (naming the file and the key).
#[test]
fn an_export_with_its_own_tokenizer_builds_with_it() {
    let d = scratch("own-tokenizer");
    let x = copy_vit_export(&d);
    let hf = root().join("tests/fixtures/hf_tokenizer");
    std::fs::copy(
        hf.join("tokenizer_config.json"),
        x.join("textual/tokenizer_config.json"),
    )
    .unwrap();
    let labels = d.join("labels.txt");
    std::fs::write(&labels, "a cat\na dog\n").unwrap();
    let opts = |out: &str| {
        options(
            x.clone(),
            Requested::Fixed(Precision::Fp32),
            labels.clone(),
            d.join(out),
        )
    };
    let e = build(&opts("refused")).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer_config.json")
            && e.contains("tokenizer_class")
            && e.contains("tokenizer.json"),
        "{e}"
    );
    assert!(!d.join("refused").exists());
    std::fs::copy(hf.join("tokenizer.json"), x.join("textual/tokenizer.json")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(x.join("config.json")).unwrap()).unwrap();
    config["text_cfg"]["tokenizer_kwargs"] = serde_json::json!({"clean": "shout"});
    std::fs::write(x.join("config.json"), config.to_string()).unwrap();
    let e = build(&opts("refused")).unwrap_err().to_string();
    assert!(
        e.contains("text_cfg.tokenizer_kwargs.clean") && e.contains("shout"),
        "{e}"
    );
    config["text_cfg"]["tokenizer_kwargs"] =
        serde_json::json!({"clean": "canonicalize", "strip_sep_token": true});
    std::fs::write(x.join("config.json"), config.to_string()).unwrap();
    let e = build(&opts("refused")).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer_kwargs") && e.contains("strip_sep_token"),
        "{e}"
    );
    config["text_cfg"]["tokenizer_kwargs"] = serde_json::json!({"clean": "canonicalize"});
    std::fs::write(x.join("config.json"), config.to_string()).unwrap();
    build(&opts("built")).unwrap();
    let engine = Engine::load(&d.join("built")).unwrap();
    assert_eq!(engine.bundle.manifest.labels, ["a cat", "a dog"]);
    let _ = std::fs::remove_dir_all(&d);
}

/// SigLIP's architecture, tiny (`onnx_export_siglip.py`): a ViT without a
/// class token pooled by a MAP attention head (a learned query attending
/// over the patches), GELU by erf, the whole image resized to the input
/// (`squash`), its own `tokenizer.json`, each label scored by its own
/// sigmoid. fp32 vs PyTorch: measured 2.5e-7 (native), 2.7e-7 (tract).
const SIGLIP_FP32_MAX_ABS: f32 = 2e-6;
/// The text table vs PyTorch's text embeddings. Measured 2.1e-7.
const SIGLIP_TABLE_MAX_ABS: f32 = 1e-6;
/// The int8 bundle on the native engine vs tract's simulation. Measured
/// The SigLIP fixture's sigmoid scores against the formula on PyTorch's
/// embeddings. Measured 1.5e-10 (with the fixture's bias every
/// probability is small).
const SIGLIP_SCORES_MAX_ABS: f32 = 1.5e-9;

/// 1.0000000 (to seven places).
const SIGLIP_NATIVE_TRACT_INT8_MIN_COSINE: f32 = 0.99999;
/// The int8 bundle vs PyTorch fp32. Measured 0.99977.
const SIGLIP_INT8_MIN_COSINE: f32 = 0.997;

#[test]
fn a_siglip_export_embeds_and_scores_as_pytorch_does() {
    let r = reference_of("onnx_siglip_tiny");
    let p = root().join("tests/fixtures/reference/onnx_siglip_tiny.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    let (scale, bias) = (
        v["logit_scale"].as_f64().unwrap() as f32,
        v["logit_bias"].as_f64().unwrap() as f32,
    );
    let d = scratch("siglip");
    let scoring = ScoringChoice {
        scoring: Scoring::Sigmoid,
        logit_scale: Some(scale),
        logit_bias: Some(bias),
    };
    let out = build_fixture("siglip_tiny", Precision::Fp32, &d, &r.prompts, scoring);
    let manifest = std::fs::read_to_string(out.join("manifest.toml")).unwrap();
    assert!(
        manifest.contains("resize = \"pillow-bicubic-squash\""),
        "{manifest}"
    );
    for kind in [EngineKind::Native, EngineKind::Tract] {
        let mut engine = Engine::load_on(&out, &Trust::default(), kind, 1).unwrap();
        assert_eq!(engine.kind(), kind);
        let labels = r.prompts.len();
        let (mut worst, mut worst_score) = (0f32, 0f32);
        for (p, want) in r.images.iter().zip(&r.image_embeddings) {
            let img = decode_file(p).unwrap();
            engine.classify(&img.view(), labels).unwrap();
            worst = worst.max(max_abs_normalised(engine.embedding(), want));
            for &(i, prob) in engine.top() {
                let cos: f32 = want
                    .iter()
                    .zip(&r.text_embeddings[i])
                    .map(|(a, b)| a * b)
                    .sum();
                let expect = 1.0 / (1.0 + (-(scale * cos + bias)).exp());
                let d = (prob - expect).abs();
                worst_score = if d.is_nan() || worst_score.is_nan() {
                    f32::NAN
                } else {
                    worst_score.max(d)
                };
            }
        }
        eprintln!("siglip {kind:?}: within {worst:.2e} of PyTorch, scores {worst_score:.2e}");
        assert!(worst <= SIGLIP_FP32_MAX_ABS, "{kind:?}: {worst}");
        assert!(
            worst_score <= SIGLIP_SCORES_MAX_ABS,
            "{kind:?}: {worst_score}"
        );
    }
    let worst = table_max_abs(&out, &r);
    eprintln!("siglip text table within {worst:.2e} of PyTorch");
    assert!(worst <= SIGLIP_TABLE_MAX_ABS, "{worst}");
    // int8: the native engine runs the products the rewrite made int8 (the
    // MAP head's, the patch embedding) in int8, as tract simulates them.
    // (tract's declutter leaves the blocks' products with transposed
    // outputs or q, k and v split, which the rewrite leaves f32.)
    let d8 = scratch("siglip-int8");
    let out = build_fixture("siglip_tiny", Precision::Int8, &d8, &r.prompts, scoring);
    let mut native = Engine::load_on(&out, &Trust::default(), EngineKind::Native, 1).unwrap();
    let mut tract = Engine::load_on(&out, &Trust::default(), EngineKind::Tract, 1).unwrap();
    let ops = native.native_summary().unwrap().ops;
    let layers = &native.bundle.manifest.layers;
    let int8 = layers.iter().filter(|l| l.precision == "int8").count();
    let ran =
        ops.get("linear/int8").copied().unwrap_or(0) + ops.get("conv/int8").copied().unwrap_or(0);
    assert!(int8 >= 4 && ran >= int8, "{layers:?} {ops:?}");
    let (pair, to_pytorch) = int8_cosines(&mut native, &mut tract, &r);
    eprintln!("siglip int8: native to tract {pair:.7}, to PyTorch fp32 {to_pytorch:.5}");
    assert!(pair >= SIGLIP_NATIVE_TRACT_INT8_MIN_COSINE, "{pair}");
    assert!(to_pytorch >= SIGLIP_INT8_MIN_COSINE, "{to_pytorch}");
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::remove_dir_all(&d8);
}

/// `--precision auto` from an export: the whole graph in int8 where its
/// embeddings keep the cosine target, fp32 where no precision can (a
/// target above 1); the manifest says `auto` and its layers what was
/// chosen.
#[test]
fn auto_precision_from_an_export_picks_the_smallest_that_meets_the_target() {
    let d = scratch("auto");
    let copy = copy_vit_export(&d);
    let labels = d.join("labels.txt");
    std::fs::write(&labels, "cat\ndog\n").unwrap();
    for (target, want) in [(0.0, "int8"), (2.0, "fp32")] {
        let out = d.join(format!("out-{want}"));
        let mut o = options(copy.clone(), Requested::Auto, labels.clone(), out.clone());
        o.cosine_target = target;
        build(&o).unwrap();
        let m: toml::Table = std::fs::read_to_string(out.join("manifest.toml"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(m["precision"].as_str(), Some("auto"));
        let layers = m["layers"].as_array().unwrap();
        assert!(
            layers.iter().all(|l| l["precision"].as_str() == Some(want)),
            "target {target}: {layers:?}"
        );
        // The runtime classifies with it.
        let b = clip_edge::bundle::Bundle::open(&out).unwrap();
        assert_eq!(b.labels().len(), 2);
    }
}
