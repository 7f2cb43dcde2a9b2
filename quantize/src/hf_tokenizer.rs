//! Tokenizers from a Hugging Face `tokenizer.json` (the `tokenizers` crate:
//! BPE, WordPiece, or SentencePiece's Unigram as SigLIP's), run as
//! open_clip's `HFTokenizer` runs them: the text cleaned (`clean`), then
//! encoded with the tokenizer's own special tokens, truncated to the
//! context length and padded to it with the pad token
//! (`padding="max_length", truncation=True`).

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::tokenizer::{py_isspace, Tokenizer as Clip, TokenizerError};

/// Largest `tokenizer.json` read (SigLIP2's Gemma vocabulary is ~34 MB).
const MAX_TOKENIZER_BYTES: u64 = 256 << 20;

#[derive(Debug, Error)]
pub enum HfTokenizerError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("tokenizing {text:?}: {why}")]
    Encode { text: String, why: String },
    #[error(transparent)]
    Clip(#[from] TokenizerError),
}

/// open_clip's text cleaning before a Hugging Face tokenizer
/// (`text_cfg.tokenizer_kwargs.clean`): each starts with `basic_clean`
/// (ftfy's repairs, HTML entities unescaped twice, stripped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clean {
    /// Runs of whitespace as one space (open_clip's default).
    #[default]
    Whitespace,
    /// `Whitespace`, lower-cased.
    Lower,
    /// big_vision's: `_` as a space, ASCII punctuation removed, lower-cased,
    /// whitespace collapsed (SigLIP's).
    Canonicalize,
}

impl Clean {
    /// open_clip's names (`get_clean_fn`).
    pub fn from_name(name: &str) -> Option<Clean> {
        Some(match name {
            "whitespace" => Clean::Whitespace,
            "lower" => Clean::Lower,
            "canonicalize" => Clean::Canonicalize,
            _ => return None,
        })
    }
}

/// Python's `" ".join(text.split())`.
fn collapse(text: &str) -> String {
    text.split(py_isspace)
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

pub struct HfTokenizer {
    /// With truncation and padding to the context length set.
    inner: tokenizers::Tokenizer,
    clean: Clean,
    /// For `basic_clean` (ftfy's repairs, HTML entities).
    clip: Clip,
}

impl HfTokenizer {
    /// Reads `path` (a `tokenizer.json`) for texts of `context_length`
    /// tokens; the pad token is `pad_token` when given (as
    /// `tokenizer_config.json` names it), else the file's padding's (none:
    /// refused, as Hugging Face refuses to pad without one). A text longer
    /// than the context is cut, as open_clip cuts it.
    pub fn from_file(
        path: &Path,
        clean: Clean,
        pad_token: Option<&str>,
        context_length: usize,
    ) -> Result<HfTokenizer, HfTokenizerError> {
        if context_length < 2 {
            return Err(TokenizerError::BadContext(context_length).into());
        }
        let file = |why: String| HfTokenizerError::File {
            path: path.to_path_buf(),
            why,
        };
        let len = std::fs::metadata(path)
            .map_err(|e| file(e.to_string()))?
            .len();
        if len > MAX_TOKENIZER_BYTES {
            return Err(file(format!(
                "{len} bytes, more than a tokenizer's {MAX_TOKENIZER_BYTES}"
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| file(e.to_string()))?;
        let mut inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| file(format!("not a tokenizer.json: {e}")))?;
        let (pad_id, pad_token) = match pad_token {
            Some(t) => (
                inner
                    .token_to_id(t)
                    .ok_or_else(|| file(format!("pad token {t:?} is not in the vocabulary")))?,
                t.to_string(),
            ),
            None => inner
                .get_padding()
                .map(|p| (p.pad_id, p.pad_token.clone()))
                .ok_or_else(|| {
                    file(
                        "no pad token (tokenizer_config.json's pad_token, or the file's padding)"
                            .into(),
                    )
                })?,
        };
        inner
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: context_length,
                ..Default::default()
            }))
            .map_err(|e| file(e.to_string()))?;
        inner.with_padding(Some(tokenizers::PaddingParams {
            strategy: tokenizers::PaddingStrategy::Fixed(context_length),
            pad_id,
            pad_token,
            ..Default::default()
        }));
        Ok(HfTokenizer {
            inner,
            clean,
            clip: Clip::new()?,
        })
    }

    /// The text as open_clip cleans it before encoding.
    pub fn clean(&self, text: &str) -> String {
        let basic = self.clip.basic_clean(text);
        match self.clean {
            Clean::Whitespace => collapse(&basic),
            Clean::Lower => collapse(&basic).to_lowercase(),
            Clean::Canonicalize => {
                let t: String = basic
                    .replace('_', " ")
                    .chars()
                    .filter(|c| !c.is_ascii_punctuation())
                    .collect();
                collapse(&t.to_lowercase())
            }
        }
    }

    /// The context length's ids: the cleaned text encoded with the
    /// tokenizer's special tokens, truncated (the special tokens kept) and
    /// padded.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, HfTokenizerError> {
        let enc =
            self.inner
                .encode(self.clean(text), true)
                .map_err(|e| HfTokenizerError::Encode {
                    text: text.chars().take(80).collect(),
                    why: e.to_string(),
                })?;
        Ok(enc.get_ids().to_vec())
    }
}
