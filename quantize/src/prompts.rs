//! Label and template files for the text-embedding table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The paper's default single template.
pub const DEFAULT_TEMPLATE: &str = "a photo of a {}.";

#[derive(Debug, Error)]
pub enum PromptError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {why}")]
    Line {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("{path}: no entries")]
    Empty { path: PathBuf },
}

fn read_lines(path: &Path) -> Result<Vec<String>, PromptError> {
    let text = std::fs::read_to_string(path).map_err(|source| PromptError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // A byte-order mark (Windows Notepad writes one) is not text of the
    // first line.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    Ok(text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect())
}

/// One label per line; blank lines and duplicates are errors naming the line.
pub fn read_labels(path: &Path) -> Result<Vec<String>, PromptError> {
    let lines = read_lines(path)?;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let line = i + 1;
        let label = l.trim();
        if label.is_empty() {
            // A single trailing newline is not a blank line.
            if i + 1 == lines.len() && l.is_empty() {
                continue;
            }
            return Err(PromptError::Line {
                path: path.to_path_buf(),
                line,
                why: "blank label".into(),
            });
        }
        if let Some(first) = seen.insert(label.to_string(), line) {
            return Err(PromptError::Line {
                path: path.to_path_buf(),
                line,
                why: format!("duplicate label {label:?} (first on line {first})"),
            });
        }
        out.push(label.to_string());
    }
    if out.is_empty() {
        return Err(PromptError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// One template per line, each containing `{}`.
pub fn read_templates(path: &Path) -> Result<Vec<String>, PromptError> {
    let lines = read_lines(path)?;
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.trim().is_empty() {
            if i + 1 == lines.len() {
                continue;
            }
            return Err(PromptError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                why: "blank template".into(),
            });
        }
        if !l.contains("{}") {
            return Err(PromptError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                why: format!("template {l:?} has no `{{}}`"),
            });
        }
        out.push(l.to_string());
    }
    if out.is_empty() {
        return Err(PromptError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// `template.format(label)` (the first `{}` only, as Python's would fail otherwise).
pub fn fill(template: &str, label: &str) -> String {
    template.replacen("{}", label, 1)
}
