//! `clip-quantize`: the host-side commands (inspect, tokenize, preprocess,
//! build, sections, keygen, synth, embed).

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ndarray::{Array2, Array4};

#[macro_use]
extern crate clip_edge;

use clip_edge::bundle::Scoring;
use clip_edge::decode::decode_file;
use clip_edge::preprocess::{Preprocessor, CLIP_MEAN, CLIP_STD};
use clip_edge::tract_graph;
use clip_quantize::bundle::{BuildOptions, Requested, ScoringChoice, AUTO_COSINE_TARGET};
use clip_quantize::checkpoint;
use clip_quantize::config::ClipConfig;
use clip_quantize::graph;
use clip_quantize::graph::ActivationQuant;
use clip_quantize::tokenizer::Tokenizer;
use tract_core::prelude::*;

#[derive(Parser)]
#[command(
    name = "clip-quantize",
    version,
    about = "Translate CLIP checkpoints for clip-edge (host side)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print a checkpoint's (or an ONNX export folder's) format,
    /// architecture and hyperparameters.
    Inspect {
        /// A checkpoint file (.pt, state dict, safetensors) or an ONNX
        /// export folder (Immich's layout).
        checkpoint: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Tokenize texts exactly as `clip.tokenize`; prints a JSON array of rows.
    Tokenize {
        /// Tokens per row (the text encoder's context; CLIP's is 77).
        #[arg(long, default_value_t = 77)]
        context_length: usize,
        /// Cut a text that does not fit (its last token the end token), as
        /// `clip.tokenize(..., truncate=True)`; without it such a text is an
        /// error naming it.
        #[arg(long)]
        truncate: bool,
        /// The texts, one row each.
        #[arg(required = true)]
        text: Vec<String>,
    },
    /// Reference preprocessing (`_transform(n)`) of one image into a float32 .npy [1,3,N,N].
    Preprocess {
        /// The model's input side N (1 to 4096).
        #[arg(long)]
        resolution: u32,
        /// The image file.
        image: PathBuf,
        /// The .npy file to write (whole or not at all).
        #[arg(long)]
        out: PathBuf,
    },
    /// Build a bundle: the image encoder at a precision plus the text-embedding table.
    Build {
        /// A checkpoint (.pt, state dict, safetensors), an ONNX export
        /// folder (Immich's layout), or an image graph .onnx.
        #[arg(long)]
        checkpoint: PathBuf,
        /// With an image graph .onnx: the text graph .onnx.
        #[arg(long)]
        text_checkpoint: Option<PathBuf>,
        /// With an image graph .onnx: open_clip's preprocess_cfg.json.
        #[arg(long)]
        preprocess: Option<PathBuf>,
        /// fp32, fp16, int8 or auto (mixed precision to a cosine target).
        #[arg(long, default_value = "int8")]
        precision: Requested,
        /// One class label per line.
        #[arg(long)]
        labels: PathBuf,
        /// One template per line, each with `{}`; default "a photo of a {}.".
        #[arg(long)]
        templates: Option<PathBuf>,
        /// Calibration images (default: the set bundled in models/calibration).
        #[arg(long)]
        calibration: Option<PathBuf>,
        /// ImageNet-style folder (one sub-folder per label) for zero-shot accuracy.
        #[arg(long)]
        eval: Option<PathBuf>,
        /// int8 activations: dynamic per token (default) or static per tensor from calibration.
        #[arg(long, default_value = "dynamic")]
        activations: String,
        /// Mean image-embedding cosine that `auto` must reach.
        #[arg(long, default_value_t = AUTO_COSINE_TARGET)]
        cosine_target: f64,
        /// How labels are scored: softmax over the labels (CLIP) or a
        /// sigmoid per label (SigLIP: each label's own probability).
        #[arg(long, default_value = "softmax", value_parser = ["softmax", "sigmoid"])]
        scoring: String,
        /// The logits' scale (default: the checkpoint's; 100 for an ONNX export).
        #[arg(long, allow_negative_numbers = true)]
        logit_scale: Option<f32>,
        /// Added to each logit before the sigmoid (required with `--scoring sigmoid`).
        #[arg(long, allow_negative_numbers = true)]
        logit_bias: Option<f32>,
        /// The bundle folder to write: new, empty, or an earlier bundle
        /// (replaced whole once the new one is complete); a folder holding
        /// anything else is refused.
        #[arg(long)]
        out: PathBuf,
        /// Sign the manifest with this secret key (from `keygen`): writes manifest.sig.
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add native sections to a bundle: its image encoder lowered and its
    /// weights packed here for the kernel paths of the machines it goes
    /// to, so that they read the schedule in place at start, and so that a
    /// clip-edge built without tract runs the bundle at all.
    Sections {
        /// The bundle folder (its manifest gains the sections' list).
        bundle: PathBuf,
        /// Kernel paths, comma-separated (e.g. aarch64-neon,aarch64-dotprod), or `all`.
        #[arg(long, default_value = "all")]
        kernels: String,
        /// Sign the new manifest with this secret key (required when the bundle is signed).
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
        /// Print the manifest's list of sections as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A new ed25519 key pair for signing bundles: KEY (secret, mode 0600) and KEY.pub.
    Keygen {
        /// Where the secret key goes (KEY.pub beside it); neither may exist.
        #[arg(long, value_name = "KEY")]
        out: PathBuf,
    },
    /// Write the synthetic world's labelled images (one folder per class),
    /// or with --clip the scripted camera clip `clip-edge watch` is tested on.
    Synth {
        /// Write the default scripted clip (frames NNNNN.jpg and truth.json)
        /// instead of the labelled set; --seed overrides the clip's seed.
        #[arg(long)]
        clip: bool,
        /// With --clip: the frame size, WxH (default 320x240; 640x480 for
        /// measuring the loop at a camera's usual size).
        #[arg(long, value_name = "WxH", requires = "clip")]
        size: Option<String>,
        /// With --clip: a wide scene instead (`yard`: 960x540, small shapes
        /// that stop still, several in view at once).
        #[arg(long, value_name = "NAME", requires = "clip", conflicts_with = "size")]
        scene: Option<String>,
        /// The random seed (0: the default set's or clip's own).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Images per class (without --clip).
        #[arg(long, default_value_t = 10)]
        per_class: usize,
        /// Largest image side in pixels (48..=512).
        #[arg(long, default_value_t = clip_quantize::synth::MAX_SIDE)]
        max_side: u32,
        /// Fraction of images stored as JPEG (quality 55-95); the rest are PNG.
        #[arg(long, default_value_t = 0.5)]
        jpeg_fraction: f32,
        /// The folder to write: new, empty, or an earlier output of synth
        /// (replaced whole); a folder holding anything else is refused.
        #[arg(long)]
        out: PathBuf,
    },
    /// Image and text embeddings (unnormalised, as encode_image / encode_text) from the fp32 tract graphs.
    Embed {
        /// The checkpoint (.pt, state dict, safetensors).
        #[arg(long)]
        checkpoint: PathBuf,
        /// Image files (repeatable), preprocessed as the reference does.
        #[arg(long)]
        image: Vec<PathBuf>,
        /// Texts (repeatable).
        #[arg(long)]
        text: Vec<String>,
        /// Where image_embeddings.npy and text_embeddings.npy go.
        #[arg(long)]
        out_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    use clip_edge::error_line;
    let json = error_line::wants_json();
    let cli = match error_line::parse::<Cli>(json) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error_line::say(&error_line::one_line(e.as_ref()), json);
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Inspect { checkpoint, json } => inspect(&checkpoint, json),
        Cmd::Tokenize {
            context_length,
            truncate,
            text,
        } => {
            let tok = Tokenizer::new()?;
            let rows = text
                .iter()
                .map(|t| tok.tokenize(t, context_length, truncate))
                .collect::<Result<Vec<_>, _>>()?;
            out!("{}", serde_json::to_string(&rows)?);
            Ok(())
        }
        Cmd::Preprocess {
            resolution,
            image,
            out,
        } => {
            let t = preprocess(&image, resolution)?;
            write_npy(&out, &t)
        }
        Cmd::Build {
            checkpoint,
            text_checkpoint,
            preprocess,
            precision,
            labels,
            templates,
            calibration,
            eval,
            activations,
            cosine_target,
            scoring,
            logit_scale,
            logit_bias,
            out,
            sign,
            json,
        } => {
            let activation = match activations.as_str() {
                "dynamic" => ActivationQuant::DynamicPerToken,
                "static" => ActivationQuant::StaticPerTensor,
                other => bail!("--activations {other:?}: expected dynamic or static"),
            };
            if !(cosine_target > 0.0 && cosine_target <= 1.0) {
                bail!("--cosine-target {cosine_target}: expected more than 0 and at most 1");
            }
            let calibration = match calibration {
                Some(c) => c,
                None => default_calibration().ok_or_else(|| {
                    anyhow::anyhow!("no --calibration DIR given, and no default set here (models/calibration of the source tree): give a folder of a few images like those the model will see")
                })?,
            };
            let opts = BuildOptions {
                checkpoint,
                text_checkpoint,
                preprocess,
                precision,
                labels,
                templates,
                calibration,
                eval,
                activation,
                cosine_target,
                scoring: ScoringChoice {
                    scoring: if scoring == "sigmoid" {
                        Scoring::Sigmoid
                    } else {
                        Scoring::Softmax
                    },
                    logit_scale,
                    logit_bias,
                },
                out: out.clone(),
                // Progress goes to stderr, --json to stdout.
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                sign,
            };
            let report = clip_quantize::bundle::build(&opts)?;
            if json {
                out!("{}", serde_json::to_string(&report)?);
            } else {
                print_report(&report, &out);
            }
            Ok(())
        }
        Cmd::Sections {
            bundle,
            kernels,
            sign,
            json,
        } => {
            let kernels = clip_quantize::sections::parse_kernels(&kernels)?;
            let key = sign
                .map(|k| clip_edge::signature::read_signing_key(&k))
                .transpose()?;
            let list = clip_quantize::sections::add(&bundle, &kernels, key.as_ref(), |n| {
                if !json {
                    eprintln!("{}: {:.1} MB", n.file, n.bytes as f64 / 1e6);
                }
            })?;
            if json {
                out!("{}", serde_json::to_string(&list)?);
            } else {
                out!(
                    "{}: native sections for {}",
                    bundle.display(),
                    list.iter()
                        .map(|n| n.kernels.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Ok(())
        }
        Cmd::Synth {
            clip: true,
            seed,
            out,
            size,
            scene,
            ..
        } => {
            if let Some(scene) = scene {
                if scene != "yard" {
                    bail!("--scene {scene:?}: expected yard");
                }
                let mut spec = clip_quantize::synth_clip::yard_scene();
                if seed != 0 {
                    spec.seed = seed;
                }
                let n = clip_quantize::synth_clip::write_scene(&out, &spec)?;
                eprintln!("wrote a scene of {n} frames under {}", out.display());
                return Ok(());
            }
            let mut spec = clip_quantize::synth_clip::default_clip();
            if seed != 0 {
                spec.seed = seed;
            }
            if let Some(size) = size {
                let (w, h) = size
                    .split_once('x')
                    .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
                    .with_context(|| format!("--size {size:?}: expected WxH, e.g. 640x480"))?;
                spec.width = w;
                spec.height = h;
            }
            let n = clip_quantize::synth_clip::write_clip(&out, &spec)?;
            eprintln!("wrote a clip of {n} frames under {}", out.display());
            Ok(())
        }
        Cmd::Synth {
            clip: false,
            seed,
            per_class,
            max_side,
            jpeg_fraction,
            out,
            ..
        } => {
            let opts = clip_quantize::synth::SynthOptions {
                seed,
                per_class,
                max_side,
                jpeg_fraction,
            };
            let pb = clip_edge::progress::bar(
                true,
                (per_class * clip_quantize::synth::CLASS_COUNT) as u64,
                "images",
            );
            let n = clip_quantize::synth::write_set(&out, &opts, &|| pb.inc(1))?;
            pb.finish_and_clear();
            eprintln!("wrote {n} images under {}", out.display());
            Ok(())
        }
        Cmd::Embed {
            checkpoint,
            image,
            text,
            out_dir,
        } => embed(&checkpoint, &image, &text, &out_dir),
        Cmd::Keygen { out } => keygen(&out),
    }
}

/// `models/calibration` of the source tree this binary was built from, or
/// under the current directory; `None` where neither is.
fn default_calibration() -> Option<PathBuf> {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/calibration");
    [built, PathBuf::from("models/calibration")]
        .into_iter()
        .find(|p| p.is_dir())
}

fn print_report(r: &clip_quantize::bundle::Report, out: &Path) {
    let s = &r.summary;
    out!(
        "bundle {} ({} bytes, {:.1} s)",
        out.display(),
        r.bundle_bytes,
        r.seconds
    );
    out!("{:<28} {:>10}", "precision", r.precision);
    out!("{:<28} {:>10}", "images", s.images);
    out!("{:<28} {:>10.6}", "cosine vs fp32, mean", s.cosine_mean);
    out!("{:<28} {:>10.6}", "cosine vs fp32, p1", s.cosine_p1);
    out!("{:<28} {:>10.6}", "cosine vs fp32, min", s.cosine_min);
    out!(
        "{:<28} {:>9.1}%",
        "top-1 agreement with fp32",
        100.0 * s.top1_agreement
    );
    if let (Some(q), Some(f)) = (s.zero_shot_top1, s.zero_shot_top1_fp32) {
        out!("{:<28} {:>9.1}%", "zero-shot top-1", 100.0 * q);
        out!("{:<28} {:>9.1}%", "zero-shot top-1 (fp32)", 100.0 * f);
    }
}

/// An ONNX export folder: its preprocessing, the image graph's input and
/// embedding size, the text context.
fn inspect_onnx(path: &Path, json: bool) -> Result<()> {
    let x = clip_quantize::onnx::Export::open(path)?;
    let (model, e) = x.image_graph()?;
    let tokenizer = match &x.tokenizer {
        clip_quantize::onnx::TextTokenizer::Clip => "CLIP's BPE".to_string(),
        clip_quantize::onnx::TextTokenizer::Hf { path, clean, .. } => {
            format!("{} (clean: {clean:?})", path.display())
        }
    };
    let value = serde_json::json!({
        "path": path,
        "format": "Onnx",
        "family": "onnx",
        "image_resolution": x.resolution,
        "embed_dim": e,
        "context_length": x.context_length,
        "mean": x.mean,
        "std": x.std,
        "resize": x.resize.name(),
        "tokenizer": tokenizer,
        "image_graph_nodes": model.nodes.len(),
        "config": x.config,
    });
    if json {
        out!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        out!(
            "{}: ONNX export (visual + textual), image {r}x{r} -> {e} values, {} graph nodes",
            path.display(),
            model.nodes.len(),
            r = x.resolution,
        );
        out!(
            "  preprocess: mean {:?} std {:?}, {}",
            x.mean,
            x.std,
            x.resize.name()
        );
        out!("  text: context {}, {tokenizer}", x.context_length);
    }
    Ok(())
}

fn inspect(path: &Path, json: bool) -> Result<()> {
    if clip_quantize::onnx::is_export(path) {
        return inspect_onnx(path, json);
    }
    let sd = checkpoint::load(path)?;
    let cfg = ClipConfig::infer(&sd)?;
    let params: usize = sd.tensors.values().map(|p| p.numel()).sum();
    let value = serde_json::json!({
        "path": path,
        "format": sd.format,
        "architecture": cfg.name,
        "family": if cfg.is_vit() { "vit" } else { "resnet" },
        "config": cfg,
        "parameters": params,
        "tensors": sd.tensors.len(),
    });
    if json {
        out!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        out!(
            "{}: {:?}, {} ({} parameters in {} tensors)",
            path.display(),
            sd.format,
            cfg.name,
            params,
            sd.tensors.len()
        );
        out!(
            "  image resolution {}  embed dim {}",
            cfg.image_resolution,
            cfg.embed_dim
        );
        out!("  vision {:?}", cfg.vision);
        out!(
            "  text: context {} vocab {} width {} heads {} layers {}",
            cfg.context_length,
            cfg.vocab_size,
            cfg.transformer_width,
            cfg.transformer_heads,
            cfg.transformer_layers
        );
    }
    Ok(())
}

fn preprocess(path: &Path, n: u32) -> Result<Array4<f32>> {
    let max = clip_edge::preprocess::MAX_RESOLUTION;
    if n == 0 || n > max {
        bail!("--resolution {n}: expected 1 to {max}");
    }
    let img = decode_file(path)?;
    let mut out = vec![0f32; Preprocessor::output_len(n)];
    Preprocessor::new()
        .run(&img.view(), n, CLIP_MEAN, CLIP_STD, &mut out)
        .with_context(|| format!("preprocessing {}", path.display()))?;
    Ok(Array4::from_shape_vec((1, 3, n as usize, n as usize), out)?)
}

/// Writes `out` (the secret seed, readable by its owner only) and
/// `out.pub`; refuses to overwrite an existing key.
fn keygen(out: &Path) -> Result<()> {
    use clip_edge::signature::{key_file, SigningKey};
    if out.extension().is_some_and(|e| e == "pub") {
        bail!(
            "{}: the secret key's name may not end in .pub (that is the public key's: KEY and KEY.pub)",
            out.display()
        );
    }
    let mut public = out.as_os_str().to_owned();
    public.push(".pub");
    let public = PathBuf::from(public);
    for p in [out, public.as_path()] {
        if p.exists() {
            bail!("{}: exists; refusing to overwrite a key", p.display());
        }
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    clip_quantize::atomic::create_files::<anyhow::Error>(&[out, &public], |i, tmp| {
        if i == 0 {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(key_file(&seed).as_bytes())
                .with_context(|| format!("writing {}", tmp.display()))
        } else {
            std::fs::write(tmp, key_file(&key.verifying_key().to_bytes()))
                .with_context(|| format!("writing {}", tmp.display()))
        }
    })?;
    eprintln!(
        "wrote {} (secret: keep it off the boards) and {} (give it to clip-edge --require-signature)",
        out.display(),
        public.display()
    );
    Ok(())
}

/// Writes an .npy whole or not at all.
fn write_npy<A: ndarray_npy::WritableElement, D: ndarray::Dimension>(
    path: &Path,
    a: &ndarray::Array<A, D>,
) -> Result<()> {
    clip_quantize::atomic::write_files::<anyhow::Error>(&[path], |_, tmp| {
        ndarray_npy::write_npy(tmp, a).with_context(|| format!("writing {}", path.display()))
    })
}

fn embed(ckpt: &Path, images: &[PathBuf], texts: &[String], out_dir: &Path) -> Result<()> {
    if images.is_empty() && texts.is_empty() {
        bail!("nothing to embed: give --image and/or --text");
    }
    let sd = checkpoint::load(ckpt)?;
    let cfg = ClipConfig::infer(&sd)?;
    let n = cfg.image_resolution;
    // Check every input before any output is written.
    let inputs = images
        .iter()
        .map(|p| preprocess(p, n as u32))
        .collect::<Result<Vec<_>>>()?;
    let tok = Tokenizer::new()?;
    let tokens = texts
        .iter()
        .map(|t| tok.tokenize(t, cfg.context_length, false))
        .collect::<Result<Vec<_>, _>>()?;
    let mut img_emb = Array2::<f32>::zeros((images.len(), cfg.embed_dim));
    if !images.is_empty() {
        let plan = tract_graph::into_plan(graph::image_encoder(&sd, &cfg, 1)?)?;
        for (i, t) in inputs.into_iter().enumerate() {
            let t = Tensor::from_shape(t.shape(), t.as_slice().context("contiguous")?)?;
            let out = tract_graph::run_f32(&plan, t)?;
            img_emb
                .row_mut(i)
                .assign(&ndarray::ArrayView1::from(&out[..]));
        }
    }
    let mut txt_emb = Array2::<f32>::zeros((texts.len(), cfg.embed_dim));
    if !texts.is_empty() {
        let plan = tract_graph::into_plan(graph::text_encoder(&sd, &cfg, 1)?)?;
        for (i, ids) in tokens.iter().enumerate() {
            let ids: Vec<i64> = ids.iter().map(|&v| v as i64).collect();
            let t = tensor1(&ids).into_shape(&[1, cfg.context_length])?;
            let out = tract_graph::run_f32(&plan, t)?;
            txt_emb
                .row_mut(i)
                .assign(&ndarray::ArrayView1::from(&out[..]));
        }
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    // Both files or neither.
    let (img, txt) = (
        out_dir.join("image_embeddings.npy"),
        out_dir.join("text_embeddings.npy"),
    );
    clip_quantize::atomic::write_files::<anyhow::Error>(&[&img, &txt], |i, tmp| {
        let r = if i == 0 {
            ndarray_npy::write_npy(tmp, &img_emb)
        } else {
            ndarray_npy::write_npy(tmp, &txt_emb)
        };
        r.with_context(|| format!("writing {}", tmp.display()))
    })
}
