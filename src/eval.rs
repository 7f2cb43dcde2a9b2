//! Zero-shot evaluation over an ImageNet-style folder: one sub-folder per
//! label, named as the label or with its spaces written as underscores
//! (`red circle` or `red_circle`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EvalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: folder {name:?} is not one of the labels")]
    UnknownFolder { path: PathBuf, name: String },
    #[error("{path}: no labelled images (expected one sub-folder per label)")]
    Empty { path: PathBuf },
    #[error("{path}: not a folder (expected one sub-folder per label)")]
    NoFolder { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EvalError + '_ {
    move |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sorted_entries(dir: &Path, want_dirs: bool) -> Result<Vec<PathBuf>, EvalError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let p = e.map_err(io(dir))?.path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if !hidden && (if want_dirs { p.is_dir() } else { p.is_file() }) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Index of the label a folder name stands for.
pub fn label_of_folder(name: &str, labels: &[String]) -> Option<usize> {
    labels
        .iter()
        .position(|l| l == name)
        .or_else(|| labels.iter().position(|l| l.replace(' ', "_") == name))
}

/// Every (image, label index) of an ImageNet-style folder, sorted by path.
pub fn list_labelled(dir: &Path, labels: &[String]) -> Result<Vec<(PathBuf, usize)>, EvalError> {
    if !dir.is_dir() {
        return Err(EvalError::NoFolder {
            path: dir.to_path_buf(),
        });
    }
    let mut out = Vec::new();
    for sub in sorted_entries(dir, true)? {
        let name = sub
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let idx = label_of_folder(&name, labels).ok_or_else(|| EvalError::UnknownFolder {
            path: sub.clone(),
            name,
        })?;
        out.extend(sorted_entries(&sub, false)?.into_iter().map(|p| (p, idx)));
    }
    if out.is_empty() {
        return Err(EvalError::Empty {
            path: dir.to_path_buf(),
        });
    }
    Ok(out)
}

/// Running counts of a zero-shot evaluation.
#[derive(Debug, Clone)]
pub struct Tally {
    labels: Vec<String>,
    n: usize,
    top1: usize,
    top5: usize,
    per_class: Vec<(usize, usize)>,
    confusion: BTreeMap<(usize, usize), usize>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassAccuracy {
    pub label: String,
    pub n: usize,
    pub top1: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Confusion {
    pub truth: String,
    pub predicted: String,
    pub count: usize,
}

/// What `clip-edge eval --json` prints.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub top1: f64,
    pub top5: f64,
    /// Classes with at least one image, in label order.
    pub per_class: Vec<ClassAccuracy>,
    /// The most frequent (truth, top-1 prediction) mistakes, most frequent first.
    pub confusions: Vec<Confusion>,
}

impl Tally {
    pub fn new(labels: &[String]) -> Self {
        Tally {
            labels: labels.to_vec(),
            n: 0,
            top1: 0,
            top5: 0,
            per_class: vec![(0, 0); labels.len()],
            confusion: BTreeMap::new(),
        }
    }

    /// One image: its true label and the labels ranked best first (at least one).
    pub fn add(&mut self, truth: usize, ranked: &[usize]) {
        self.n += 1;
        self.per_class[truth].1 += 1;
        if ranked.first() == Some(&truth) {
            self.top1 += 1;
            self.per_class[truth].0 += 1;
        } else if let Some(&p) = ranked.first() {
            *self.confusion.entry((truth, p)).or_default() += 1;
        }
        if ranked.iter().take(5).any(|&r| r == truth) {
            self.top5 += 1;
        }
    }

    pub fn summary(&self, max_confusions: usize) -> Summary {
        let frac = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let mut confusions: Vec<_> = self.confusion.iter().collect();
        // Most frequent first; ties in label order so the output is stable.
        confusions.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        Summary {
            n: self.n,
            top1: frac(self.top1, self.n),
            top5: frac(self.top5, self.n),
            per_class: self
                .per_class
                .iter()
                .enumerate()
                .filter(|(_, (_, n))| *n > 0)
                .map(|(i, &(c, n))| ClassAccuracy {
                    label: self.labels[i].clone(),
                    n,
                    top1: frac(c, n),
                })
                .collect(),
            confusions: confusions
                .into_iter()
                .take(max_confusions)
                .map(|(&(t, p), &count)| Confusion {
                    truth: self.labels[t].clone(),
                    predicted: self.labels[p].clone(),
                    count,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["red circle", "blue star", "cat"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn folders_match_labels_or_underscored_labels() {
        let l = labels();
        assert_eq!(label_of_folder("red circle", &l), Some(0));
        assert_eq!(label_of_folder("blue_star", &l), Some(1));
        assert_eq!(label_of_folder("cat", &l), Some(2));
        assert_eq!(label_of_folder("dog", &l), None);
    }

    #[test]
    fn tally_counts_top1_top5_and_confusions() {
        let mut t = Tally::new(&labels());
        t.add(0, &[0, 1, 2]);
        t.add(0, &[1, 0, 2]);
        t.add(1, &[0, 2, 1]);
        t.add(1, &[0, 1, 2]);
        let s = t.summary(10);
        assert_eq!(s.n, 4);
        assert_eq!(s.top1, 0.25);
        assert_eq!(s.top5, 1.0);
        assert_eq!(s.per_class.len(), 2);
        assert_eq!(s.per_class[0].top1, 0.5);
        assert_eq!(s.per_class[1].top1, 0.0);
        assert_eq!(
            s.confusions[0],
            Confusion {
                truth: "blue star".into(),
                predicted: "red circle".into(),
                count: 2
            }
        );
        assert_eq!(s.confusions.len(), 2);
        assert_eq!(t.summary(1).confusions.len(), 1);
    }

    #[test]
    fn unknown_folder_and_empty_tree_are_errors() {
        let dir = std::env::temp_dir().join(format!("clip-eval-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(matches!(
            list_labelled(&dir, &labels()),
            Err(EvalError::Empty { .. })
        ));
        std::fs::create_dir_all(dir.join("dog")).unwrap();
        let e = list_labelled(&dir, &labels()).unwrap_err();
        assert!(e.to_string().contains("\"dog\""), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
