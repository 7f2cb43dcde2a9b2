//! CLIP-family models exported to ONNX in Immich's layout: one folder with
//! `config.json` (the model config, open_clip's keys), `visual/model.onnx`
//! (image `[1,3,R,R]` f32 → embedding `[1,E]`), `visual/preprocess_cfg.json`
//! (size, mode, mean, std, interpolation, resize mode) and
//! `textual/model.onnx` (tokens `[1,C]` → embedding `[1,E]`). Read with
//! `tract-onnx`; the image graph becomes a bundle's graph, the text graph
//! runs on the host for the table.

use std::path::{Path, PathBuf};

use crate::hf_tokenizer::Clean;
use clip_edge::preprocess::{Filter, Fit, Resize};
use thiserror::Error;
use tract_core::internal::*;
use tract_onnx::prelude::{Framework, InferenceFact, InferenceModelExt};

/// The image graph, inside an export folder.
pub const VISUAL: &str = "visual/model.onnx";
/// The text graph, inside an export folder.
pub const TEXTUAL: &str = "textual/model.onnx";
/// The image preprocessing, inside an export folder.
pub const PREPROCESS: &str = "visual/preprocess_cfg.json";
/// The model config (optional), inside an export folder.
pub const CONFIG: &str = "config.json";
/// The tokenizer's config (optional), inside an export folder.
pub const TOKENIZER_CONFIG: &str = "textual/tokenizer_config.json";
/// A Hugging Face tokenizer (with a `tokenizer_class` other than CLIP's),
/// inside an export folder.
pub const TOKENIZER_JSON: &str = "textual/tokenizer.json";

/// How the export's prompts are tokenised.
#[derive(Debug, Clone, PartialEq)]
pub enum TextTokenizer {
    /// CLIP's BPE ([`crate::tokenizer`]).
    Clip,
    /// A `tokenizer.json` ([`crate::hf_tokenizer`]), the text cleaned as
    /// `text_cfg.tokenizer_kwargs.clean` says, padded with `pad_token`.
    Hf {
        path: PathBuf,
        clean: Clean,
        pad_token: Option<String>,
    },
}

/// Largest JSON config read (they are a few hundred bytes).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Largest side of the image input (as the runtime's preprocessing).
const MAX_RESOLUTION: u32 = clip_edge::preprocess::MAX_RESOLUTION;

/// Longest token context accepted.
const MAX_CONTEXT: usize = crate::tokenizer::MAX_CONTEXT_LENGTH;

#[derive(Debug, Error)]
pub enum OnnxError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("{path}: {key} {value}: {why}")]
    Config {
        path: PathBuf,
        key: &'static str,
        value: String,
        why: String,
    },
    #[error("{path}: {why}")]
    Graph { path: PathBuf, why: String },
}

/// Longest value quoted in an error (a config may hold anything).
const MAX_QUOTED_CHARS: usize = 80;

/// `v` as JSON, cut to [`MAX_QUOTED_CHARS`].
fn quoted(v: &serde_json::Value) -> String {
    let t = v.to_string();
    if t.chars().count() > MAX_QUOTED_CHARS {
        t.chars()
            .take(MAX_QUOTED_CHARS)
            .chain("…".chars())
            .collect()
    } else {
        t
    }
}

/// A side (1 to [`MAX_RESOLUTION`]): `n`, or a square `[n, n]`.
fn side(v: &serde_json::Value) -> Option<u32> {
    let n = match v {
        serde_json::Value::Array(a) if a.len() == 2 && a[0] == a[1] => a[0].as_u64()?,
        v => v.as_u64()?,
    };
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_RESOLUTION).contains(n))
}

/// Three finite numbers.
fn three(v: &serde_json::Value) -> Option<[f32; 3]> {
    let a = v.as_array().filter(|a| a.len() == 3)?;
    let mut out = [0f32; 3];
    for (o, x) in out.iter_mut().zip(a) {
        *o = x.as_f64().filter(|x| x.is_finite())? as f32;
    }
    Some(out)
}

/// A config with its JSON nulls left out (TOML has none).
fn without_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        serde_json::Value::Array(a) => serde_json::Value::Array(
            a.into_iter()
                .filter(|v| !v.is_null())
                .map(without_nulls)
                .collect(),
        ),
        v => v,
    }
}

/// An export folder, its configs read and checked.
#[derive(Debug, Clone)]
pub struct Export {
    /// The folder, or the image graph's file (what the bundle names as
    /// its source).
    pub source: PathBuf,
    pub visual: PathBuf,
    pub textual: PathBuf,
    /// `config.json`, when there is one.
    pub config_path: Option<PathBuf>,
    /// The input's side: the image is resized and centre-cropped to it.
    pub resolution: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// The resize's filter (`interpolation`) and fit (`resize_mode`).
    pub resize: Resize,
    /// Tokens per prompt (`text_cfg.context_length`, else 77).
    pub context_length: usize,
    pub tokenizer: TextTokenizer,
    /// The model config as written (`config.json`), or empty.
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// Whether `path` is an export folder (it holds [`VISUAL`]).
pub fn is_export(path: &Path) -> bool {
    path.is_dir() && path.join(VISUAL).is_file()
}

fn read_json(path: &Path) -> Result<serde_json::Value, OnnxError> {
    let file = |why: String| OnnxError::File {
        path: path.to_path_buf(),
        why,
    };
    let f = std::fs::File::open(path).map_err(|e| file(e.to_string()))?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(f, MAX_CONFIG_BYTES + 1), &mut text)
        .map_err(|e| file(e.to_string()))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(file(format!(
            "more than a config's {MAX_CONFIG_BYTES} bytes"
        )));
    }
    serde_json::from_str(&text).map_err(|e| file(format!("not JSON: {e}")))
}

impl Export {
    /// Reads `dir`'s configs: the preprocessing is one the runtime does
    /// exactly (RGB, bicubic or bilinear, the shortest side then a centre
    /// crop or the whole image squashed, a square input); the tokenizer
    /// CLIP's BPE, or the folder's `tokenizer.json` when its config names
    /// another class.
    pub fn open(dir: &Path) -> Result<Export, OnnxError> {
        for f in [VISUAL, TEXTUAL, PREPROCESS] {
            if !dir.join(f).is_file() {
                return Err(OnnxError::File {
                    path: dir.join(f),
                    why: "missing (an ONNX export folder holds visual/model.onnx, \
                          visual/preprocess_cfg.json and textual/model.onnx)"
                        .into(),
                });
            }
        }
        let optional = |f: &str| Some(dir.join(f)).filter(|p| p.is_file());
        Self::read(
            dir,
            [dir.join(VISUAL), dir.join(TEXTUAL), dir.join(PREPROCESS)],
            optional(CONFIG),
            [optional(TOKENIZER_CONFIG), optional(TOKENIZER_JSON)],
        )
    }

    /// As [`Export::open`] for files named one by one: the image graph,
    /// the text graph and the preprocessing config (as open_clip writes
    /// `preprocess_cfg.json`). A `tokenizer_config.json` and a
    /// `tokenizer.json` beside the text graph and a `config.json` two
    /// folders above the image graph (where Immich's layout keeps them) are
    /// read when they are there.
    pub fn files(visual: &Path, textual: &Path, preprocess: &Path) -> Result<Export, OnnxError> {
        for f in [visual, textual, preprocess] {
            if !f.is_file() {
                return Err(OnnxError::File {
                    path: f.to_path_buf(),
                    why: if f.exists() { "not a file" } else { "missing" }.into(),
                });
            }
        }
        let beside =
            |p: &Path, name: &str| p.parent().map(|d| d.join(name)).filter(|c| c.is_file());
        let config = visual.parent().and_then(|d| beside(d, CONFIG));
        // Immich names both graphs model.onnx: the source is then the folder.
        let source = match (visual.file_name(), visual.parent().and_then(Path::parent)) {
            (Some(n), Some(dir)) if n == "model.onnx" && dir.file_name().is_some() => dir,
            _ => visual,
        };
        Self::read(
            source,
            [visual.into(), textual.into(), preprocess.into()],
            config,
            [
                beside(textual, "tokenizer_config.json"),
                beside(textual, "tokenizer.json"),
            ],
        )
    }

    fn read(
        source: &Path,
        [visual, textual, pre_path]: [PathBuf; 3],
        config_path: Option<PathBuf>,
        [tokenizer_config, tokenizer_json]: [Option<PathBuf>; 2],
    ) -> Result<Export, OnnxError> {
        let pre = read_json(&pre_path)?;
        let bad = |key: &'static str, value: String, why: &str| OnnxError::Config {
            path: pre_path.clone(),
            key,
            value,
            why: why.into(),
        };
        let field = |key: &'static str| pre.get(key).unwrap_or(&serde_json::Value::Null);
        let resolution = side(field("size")).ok_or_else(|| {
            bad(
                "size",
                quoted(field("size")),
                &format!("expected a side of 1 to {MAX_RESOLUTION}, or a square [n, n]"),
            )
        })?;
        // Which of `names` the key names (absent: open_clip's default, the
        // first).
        let pick = |key: &'static str, names: &[&str], why: &str| {
            let v = field(key);
            if v.is_null() {
                return Ok(0);
            }
            v.as_str()
                .and_then(|s| names.iter().position(|n| *n == s))
                .ok_or_else(|| bad(key, quoted(v), why))
        };
        pick("mode", &["RGB"], "RGB is supported")?;
        let filter = [Filter::Bicubic, Filter::Bilinear][pick(
            "interpolation",
            &["bicubic", "bilinear"],
            "bicubic or bilinear (Pillow's, exactly) is supported",
        )?];
        let fit = [Fit::Crop, Fit::Squash][pick(
            "resize_mode",
            &["shortest", "squash"],
            "shortest (the shorter side resized, then a centre crop) or squash (the whole \
             image resized to the input) is supported",
        )?];
        let mean = three(field("mean")).ok_or_else(|| {
            bad(
                "mean",
                quoted(field("mean")),
                "expected three finite numbers",
            )
        })?;
        let std = three(field("std"))
            .filter(|s| !s.contains(&0.0))
            .ok_or_else(|| {
                bad(
                    "std",
                    quoted(field("std")),
                    "expected three finite numbers, none 0",
                )
            })?;
        let config = match &config_path {
            Some(p) => match without_nulls(read_json(p)?) {
                serde_json::Value::Object(m) => m,
                _ => {
                    return Err(OnnxError::File {
                        path: p.clone(),
                        why: "not a JSON object".into(),
                    })
                }
            },
            None => serde_json::Map::new(),
        };
        let config_file = || config_path.clone().unwrap_or_default();
        let context_length = match config.get("text_cfg").and_then(|t| t.get("context_length")) {
            None => 77,
            Some(v) => match v.as_u64() {
                Some(n) if (2..=MAX_CONTEXT as u64).contains(&n) => n as usize,
                _ => {
                    return Err(OnnxError::Config {
                        path: config_file(),
                        key: "text_cfg.context_length",
                        value: quoted(v),
                        why: format!("expected 2 to {MAX_CONTEXT}"),
                    })
                }
            },
        };
        if let Some(v) = config.get("vision_cfg").and_then(|t| t.get("image_size")) {
            if side(v) != Some(resolution) {
                return Err(OnnxError::Config {
                    path: config_file(),
                    key: "vision_cfg.image_size",
                    value: quoted(v),
                    why: format!("{PREPROCESS} says {resolution}"),
                });
            }
        }
        // CLIP's BPE unless the tokenizer's config names another class,
        // which then needs its tokenizer.json.
        let mut tokenizer = TextTokenizer::Clip;
        if let Some(tok) = tokenizer_config {
            let cfg = read_json(&tok)?;
            let class = cfg
                .get("tokenizer_class")
                .and_then(|v| v.as_str())
                .map(str::to_string);
            if let Some(c) = class.filter(|c| !c.starts_with("CLIPTokenizer")) {
                let Some(path) = tokenizer_json else {
                    return Err(OnnxError::Config {
                        path: tok,
                        key: "tokenizer_class",
                        value: quoted(&serde_json::Value::String(c)),
                        why: "a tokenizer other than CLIP's needs its tokenizer.json beside \
                              tokenizer_config.json"
                            .into(),
                    });
                };
                // `"<pad>"`, or `{"content": "<pad>", ...}`.
                let pad = cfg.get("pad_token");
                let pad_token = pad
                    .and_then(|v| v.as_str().or_else(|| v.get("content")?.as_str()))
                    .map(str::to_string);
                if pad.is_some_and(|v| !v.is_null()) && pad_token.is_none() {
                    return Err(OnnxError::Config {
                        path: tok,
                        key: "pad_token",
                        value: quoted(pad.unwrap()),
                        why: "expected a token, or an object with its content".into(),
                    });
                }
                let kwargs = config
                    .get("text_cfg")
                    .and_then(|t| t.get("tokenizer_kwargs"));
                // Anything but `clean` changes the tokens in ways not done
                // here (`strip_sep_token`, `tokenizer_mode`, `language`).
                if let Some(k) = kwargs
                    .and_then(|k| k.as_object())
                    .and_then(|m| m.keys().find(|k| k.as_str() != "clean"))
                {
                    return Err(OnnxError::Config {
                        path: config_file(),
                        key: "text_cfg.tokenizer_kwargs",
                        value: quoted(&serde_json::Value::String(k.clone())),
                        why: "only `clean` is supported".into(),
                    });
                }
                let clean =
                    match kwargs.and_then(|k| k.get("clean")) {
                        None => Clean::default(),
                        Some(v) => v.as_str().and_then(Clean::from_name).ok_or_else(|| {
                            OnnxError::Config {
                                path: config_file(),
                                key: "text_cfg.tokenizer_kwargs.clean",
                                value: quoted(v),
                                why: "expected whitespace, lower or canonicalize".into(),
                            }
                        })?,
                    };
                tokenizer = TextTokenizer::Hf {
                    path,
                    clean,
                    pad_token,
                };
            }
        }
        Ok(Export {
            source: source.to_path_buf(),
            visual,
            textual,
            config_path,
            resolution,
            mean,
            std,
            resize: Resize { filter, fit },
            context_length,
            tokenizer,
            config,
        })
    }

    fn graph_err(&self, path: &Path) -> impl Fn(TractError) -> OnnxError + '_ {
        let path = path.to_path_buf();
        move |e| OnnxError::Graph {
            path: path.clone(),
            why: format!("{e:#}")
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .take(400)
                .collect(),
        }
    }

    /// The image graph for one `[1,3,R,R]` image, decluttered; its output
    /// is checked to be one `[1,E]` embedding. Returns it and `E`.
    pub fn image_graph(&self) -> Result<(TypedModel, usize), OnnxError> {
        let err = self.graph_err(&self.visual);
        let r = self.resolution as usize;
        let model = tract_onnx::onnx()
            .model_for_path(self.visual.clone())
            .map_err(&err)?;
        if model.inputs.len() != 1 || model.outputs.len() != 1 {
            return Err(OnnxError::Graph {
                path: self.visual.clone(),
                why: format!(
                    "{} inputs and {} outputs; one image in, one embedding out expected",
                    model.inputs.len(),
                    model.outputs.len()
                ),
            });
        }
        let model = model
            .with_input_fact(0, InferenceFact::from(f32::fact([1, 3, r, r])))
            .and_then(|m| m.into_typed())
            .and_then(|m| m.into_decluttered())
            .map_err(&err)?;
        let out = model
            .output_fact(0)
            .ok()
            .and_then(|f| f.shape.as_concrete().map(|s| (f.datum_type, s.to_vec())));
        match out {
            Some((DatumType::F32, s)) if s.len() == 2 && s[0] == 1 && s[1] > 0 => Ok((model, s[1])),
            o => Err(OnnxError::Graph {
                path: self.visual.clone(),
                why: format!("output {o:?}; one f32 embedding [1, E] expected"),
            }),
        }
    }

    /// Runs the text graph on each prompt's tokens (`context_length` each,
    /// as CLIP's tokenizer pads them); returns the embeddings, `E` each.
    pub fn text_embeddings(
        &self,
        tokens: &[Vec<u32>],
        e: usize,
        mut done: impl FnMut(usize),
    ) -> Result<Vec<Vec<f32>>, OnnxError> {
        let err = self.graph_err(&self.textual);
        let c = self.context_length;
        let model = tract_onnx::onnx()
            .model_for_path(self.textual.clone())
            .map_err(&err)?;
        if model.inputs.len() != 1 || model.outputs.len() != 1 {
            return Err(OnnxError::Graph {
                path: self.textual.clone(),
                why: format!(
                    "{} inputs and {} outputs; one row of tokens in, one embedding out expected",
                    model.inputs.len(),
                    model.outputs.len()
                ),
            });
        }
        // The exporter's integer type (Immich's: i32; others: i64).
        let dt = model
            .input_fact(0)
            .ok()
            .and_then(Fact::datum_type)
            .unwrap_or(DatumType::I32);
        if !matches!(dt, DatumType::I32 | DatumType::I64) {
            return Err(OnnxError::Graph {
                path: self.textual.clone(),
                why: format!("input of {dt:?}; integer tokens expected"),
            });
        }
        let plan = model
            .with_input_fact(0, InferenceFact::dt_shape(dt, [1, c]))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(&err)?;
        let mut out = Vec::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            let ids: Vec<i64> = t.iter().map(|&v| v as i64).collect();
            let input = Tensor::from_shape(&[1, c], &ids)
                .and_then(|t| t.cast_to_dt(dt).map(|t| t.into_owned()))
                .map_err(&err)?;
            let y = plan.run(tvec!(input.into_tvalue())).map_err(&err)?;
            let y = y[0].cast_to::<f32>().map_err(&err)?;
            let v: Vec<f32> = y
                .to_plain_array_view::<f32>()
                .map_err(&err)?
                .iter()
                .copied()
                .collect();
            if v.len() != e {
                return Err(OnnxError::Graph {
                    path: self.textual.clone(),
                    why: format!(
                        "{} values out, not one {e}-value embedding (the image graph's)",
                        v.len()
                    ),
                });
            }
            out.push(v);
            done(i + 1);
        }
        Ok(out)
    }
}
