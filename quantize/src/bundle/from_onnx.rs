//! `build --checkpoint DIR` where DIR is an ONNX export folder
//! ([`crate::onnx`]), or `--checkpoint visual.onnx --text-checkpoint
//! textual.onnx --preprocess preprocess_cfg.json`: the image graph as the bundle's graph (fp32, its
//! matrices stored as f16, or its products in int8:
//! [`crate::graph::rewrite`]), the text table from the text graph, the
//! preprocessing from the export's config.

use super::*;
use crate::graph::rewrite;
use crate::hf_tokenizer::HfTokenizer;
use crate::onnx::{Export, TextTokenizer};

/// The logit scale of a bundle built from an export, which holds none:
/// CLIP's trained value (`exp(4.6052)`, clamped there in training).
const EXPORT_LOGIT_SCALE: f32 = 100.0;

pub(super) fn build(
    opts: &BuildOptions,
    x: Export,
    start: Instant,
    signing_key: Option<&signature::SigningKey>,
) -> Result<Report, BuildError> {
    let may_be_int8 = matches!(
        opts.precision,
        Requested::Fixed(Precision::Int8) | Requested::Auto
    );
    if may_be_int8 && opts.activation != ActivationQuant::DynamicPerToken {
        return Err(BuildError::Input {
            path: opts.checkpoint.clone(),
            why: "--activations static: an int8 bundle from an ONNX export quantises \
                  activations per row (dynamic)"
                .into(),
        });
    }
    // The image graph before the images: a graph that is not one fails
    // first.
    let (fp32_model, e) = x.image_graph()?;
    let n = x.resolution as usize;
    let Inputs {
        labels,
        templates,
        calib_files,
        calib,
        eval_set,
        eval_inputs,
    } = Inputs::read(opts, n, (x.mean, x.std), x.resize)?;

    let table = text_table(&x, &labels, &templates, e, opts.progress)
        .map_err(|e| e.in_labels(&opts.labels))?;
    let (precision, (model, int8_layers)) = match opts.precision {
        Requested::Fixed(p) => (p, at_precision(&fp32_model, p)?),
        Requested::Auto => auto_precision(&fp32_model, &calib, opts.cosine_target)?,
    };
    // Against fp32 on the eval set when given, else on the calibration images.
    let (inputs, files) = match (&eval_set, &eval_inputs) {
        (Some(set), Some(inputs)) => (
            Images::Files(inputs),
            set.iter().map(|(p, _)| p.clone()).collect(),
        ),
        _ => (Images::Held(&calib), calib_files.clone()),
    };
    let (f, _) = run_images(fp32_model, inputs, false)?;
    // An fp32 bundle's graph is the fp32 graph: run once.
    let q = match precision {
        Precision::Fp32 => f.clone(),
        _ => run_images(model.clone(), inputs, false)?.0,
    };
    let (mut summary, cos) = summary(&f, &q, &table, e);
    if let Some(set) = &eval_set {
        summary.zero_shot_top1 = Some(top1(&q, set, &table, e));
        summary.zero_shot_top1_fp32 = Some(top1(&f, set, &table, e));
    }
    let contents = Contents {
        model,
        table,
        table_dtype: if opts.precision == Requested::Fixed(Precision::Fp32) {
            "f32"
        } else {
            "f16"
        },
        labels,
        templates,
        summary,
        per_image: per_image(&files, &cos),
        sensitivity: Vec::new(),
        logit_scale: EXPORT_LOGIT_SCALE,
        source_path: x.source.clone(),
        source: Source {
            checkpoint: file_name(&x.source),
            format: "Onnx".into(),
            sha256: sha256_of(&x.visual)?,
        },
        model_info: ModelInfo {
            architecture: file_name(&x.source),
            family: "onnx".into(),
            embed_dim: e,
            image_resolution: n,
            hyperparameters: toml::Table::try_from(&x.config).map_err(|err| BuildError::Input {
                path: x.config_path.clone().unwrap_or_else(|| x.source.clone()),
                why: err.to_string(),
            })?,
        },
        preprocess: PreprocessInfo {
            resolution: x.resolution,
            mean: x.mean,
            std: x.std,
            resize: x.resize.name(),
        },
        layers: if int8_layers.is_empty() {
            vec![LayerPrecision {
                name: "image_encoder".into(),
                kind: "graph".into(),
                precision: precision.to_string(),
            }]
        } else {
            int8_layers
                .into_iter()
                .map(|(name, kind)| LayerPrecision {
                    name,
                    kind: kind.into(),
                    precision: Precision::Int8.to_string(),
                })
                .collect()
        },
    };
    write_bundle(opts, start, signing_key, contents)
}

/// The table from the export's text graph: each prompt tokenised (CLIP's
/// BPE, or the export's `tokenizer.json`), embedded, normalised; templates
/// averaged per label.
fn text_table(
    x: &Export,
    labels: &[String],
    templates: &[String],
    e: usize,
    show: bool,
) -> Result<Vec<f32>, BuildError> {
    let (prompts, ids) = match &x.tokenizer {
        TextTokenizer::Clip => prompt_tokens(labels, templates, x.context_length)?,
        TextTokenizer::Hf {
            path,
            clean,
            pad_token,
        } => {
            let tok = HfTokenizer::from_file(path, *clean, pad_token.as_deref(), x.context_length)?;
            prompts_tokenized(labels, templates, |p| tok.tokenize(p))?
        }
    };
    let pb = clip_edge::progress::bar(
        show && prompts.len() > 64,
        prompts.len() as u64,
        "text encoder",
    );
    let embs = x.text_embeddings(&ids, e, |_| pb.inc(1))?;
    pb.finish_and_clear();
    let mut flat = Vec::with_capacity(embs.len() * e);
    for mut v in embs {
        l2_normalize(&mut v);
        flat.extend(v);
    }
    Ok(average_templates(&flat, labels.len(), templates.len(), e))
}

/// A graph at some precision and its int8 layers (name, kind).
type Rewritten = (TypedModel, Vec<(String, &'static str)>);

/// The export's fp32 graph at `precision`, with its int8 layers (name,
/// kind; none unless int8).
fn at_precision(fp32: &TypedModel, precision: Precision) -> Result<Rewritten, BuildError> {
    Ok(match precision {
        Precision::Fp32 => (fp32.clone(), Vec::new()),
        Precision::Fp16 => (rewrite::f16_weights(fp32.clone())?, Vec::new()),
        Precision::Int8 => rewrite::int8_products(fp32.clone())?,
    })
}

/// `--precision auto` for an export: the whole graph in int8, else its
/// matrices in f16, whichever comes first with a mean embedding cosine to
/// fp32's of at least `target` on the calibration images; else fp32. (An
/// export's graph has no per-layer plan to search, as a checkpoint's has.)
fn auto_precision(
    fp32: &TypedModel,
    calib: &[Tensor],
    target: f64,
) -> Result<(Precision, Rewritten), BuildError> {
    let (reference, _) = run_images(fp32.clone(), Images::Held(calib), false)?;
    for p in [Precision::Int8, Precision::Fp16] {
        let rewritten = at_precision(fp32, p)?;
        let (embs, _) = run_images(rewritten.0.clone(), Images::Held(calib), false)?;
        let c = accuracy::mean(
            &reference
                .iter()
                .zip(&embs)
                .map(|(a, b)| accuracy::cosine(a, b))
                .collect::<Vec<_>>(),
        );
        log::info!("--precision auto: {p} gives a mean cosine of {c:.6} to fp32 (target {target})");
        if c >= target {
            return Ok((p, rewritten));
        }
    }
    Ok((Precision::Fp32, at_precision(fp32, Precision::Fp32)?))
}
