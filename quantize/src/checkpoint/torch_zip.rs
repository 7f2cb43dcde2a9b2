//! PyTorch zip archives (`torch.save` and TorchScript): the root folder is
//! found by its `*/data.pkl`, tensors live in `*/data/<key>`.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::Path;

use candle_core::pickle::{Object, Stack};

use super::{openai_jit, CheckpointError, Format, Param, SourceDtype, StateDict};

/// Largest tensor read from an archive (the largest CLIP matrix, RN50x64's
/// text embedding or ViT-L/14's MLP, is far below).
const MAX_TENSOR_BYTES: u64 = 4 << 30;

pub fn is_tensor(obj: &Object) -> bool {
    match obj {
        Object::Reduce { callable, .. } => matches!(
            callable.as_ref(),
            Object::Class { module_name, class_name }
                if module_name == "torch._utils"
                    && (class_name == "_rebuild_tensor_v2" || class_name == "_rebuild_parameter")
        ),
        _ => false,
    }
}

struct Archive<'a> {
    path: &'a Path,
    zip: zip::ZipArchive<Cursor<&'a [u8]>>,
    root: String,
}

impl Archive<'_> {
    fn corrupt(&self, why: impl Into<String>) -> CheckpointError {
        CheckpointError::Corrupt {
            path: self.path.to_path_buf(),
            why: why.into(),
        }
    }

    fn read(&mut self, name: &str) -> Result<Vec<u8>, CheckpointError> {
        let path = self.path.to_path_buf();
        let mut f = self
            .zip
            .by_name(name)
            .map_err(|e| CheckpointError::Corrupt {
                path: path.clone(),
                why: format!("{name}: {e}"),
            })?;
        // The header's size is a hint only: never reserve more than the
        // archive itself could hold uncompressed at deflate's best ratio.
        let hint = f.size().min(f.compressed_size().saturating_mul(1032));
        let mut buf = Vec::with_capacity(hint.min(MAX_TENSOR_BYTES) as usize);
        f.read_to_end(&mut buf)
            .map_err(|e| CheckpointError::Corrupt {
                path,
                why: format!("{name}: {e}"),
            })?;
        Ok(buf)
    }
}

pub fn load_zip(path: &Path, bytes: &[u8]) -> Result<StateDict, CheckpointError> {
    let corrupt = |why: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        why,
    };
    let zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| corrupt(e.to_string()))?;
    let root = zip
        .file_names()
        .find_map(|n| {
            n.strip_suffix("data.pkl")
                .filter(|r| r.ends_with('/') || r.is_empty())
        })
        .map(|r| r.to_string())
        .ok_or_else(|| CheckpointError::NotACheckpoint {
            path: path.to_path_buf(),
            why: "zip archive without a `data.pkl`".into(),
        })?;
    let mut ar = Archive { path, zip, root };
    let pkl = ar.read(&format!("{}data.pkl", ar.root))?;
    let mut stack = Stack::empty();
    stack
        .read_loop(&mut Cursor::new(&pkl))
        .map_err(|e| corrupt(format!("data.pkl: {e}")))?;
    let obj = stack
        .finalize()
        .map_err(|e| corrupt(format!("data.pkl: {e}")))?;

    let mut entries: Vec<(String, &Object)> = Vec::new();
    let format = if openai_jit::is_module(&obj) {
        openai_jit::walk_module(&obj, "", &mut entries);
        Format::OpenAiJit
    } else if let Object::Dict(items) = &obj {
        for (k, v) in items {
            if let (Object::Unicode(name), true) = (k, is_tensor(v)) {
                entries.push((name.clone(), v));
            }
        }
        Format::TorchStateDict
    } else {
        return Err(CheckpointError::NotACheckpoint {
            path: path.to_path_buf(),
            why: "data.pkl holds neither a state dict nor a TorchScript module".into(),
        });
    };
    let mut tensors = BTreeMap::new();
    for (name, obj) in entries {
        let p = rebuild(&mut ar, &name, obj)?;
        tensors.insert(name, p);
    }
    Ok(StateDict {
        path: path.to_path_buf(),
        format,
        tensors,
    })
}

fn as_usize(o: &Object) -> Option<usize> {
    match o {
        Object::Int(i) if *i >= 0 => Some(*i as usize),
        Object::Long(i) if *i >= 0 => Some(*i as usize),
        _ => None,
    }
}

fn usize_tuple(o: &Object) -> Option<Vec<usize>> {
    match o {
        Object::Tuple(v) | Object::List(v) => v.iter().map(as_usize).collect(),
        _ => None,
    }
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, …)` → f32 tensor.
fn rebuild(ar: &mut Archive<'_>, name: &str, obj: &Object) -> Result<Param, CheckpointError> {
    let bad = |ar: &Archive<'_>, what: &str| ar.corrupt(format!("tensor `{name}`: {what}"));
    let Object::Reduce { callable, args } = obj else {
        return Err(bad(ar, "not a tensor"));
    };
    let Object::Tuple(args) = args.as_ref() else {
        return Err(bad(ar, "bad rebuild arguments"));
    };
    if let Object::Class { class_name, .. } = callable.as_ref() {
        if class_name == "_rebuild_parameter" {
            let inner = args.first().ok_or_else(|| bad(ar, "empty parameter"))?;
            return rebuild(ar, name, inner);
        }
    }
    if args.len() < 4 {
        return Err(bad(ar, "bad rebuild arguments"));
    }
    let Object::PersistentLoad(pid) = &args[0] else {
        return Err(bad(ar, "storage is not a persistent id"));
    };
    let Object::Tuple(pid) = pid.as_ref() else {
        return Err(bad(ar, "bad persistent id"));
    };
    // ('storage', StorageType, key, location, numel[, view metadata])
    if pid.len() != 5 && pid.len() != 6 {
        return Err(bad(ar, &format!("persistent id of {} elements", pid.len())));
    }
    let storage_type = match &pid[1] {
        Object::Class { class_name, .. } => class_name.clone(),
        other => format!("{other:?}"),
    };
    let key = match &pid[2] {
        Object::Unicode(k) => k.clone(),
        _ => return Err(bad(ar, "bad storage key")),
    };
    let dtype = match storage_type.as_str() {
        "HalfStorage" => SourceDtype::F16,
        "BFloat16Storage" => SourceDtype::BF16,
        "FloatStorage" => SourceDtype::F32,
        "DoubleStorage" => SourceDtype::F64,
        "LongStorage" => SourceDtype::I64,
        "IntStorage" => SourceDtype::I32,
        "ByteStorage" => SourceDtype::U8,
        other => {
            return Err(CheckpointError::Dtype {
                path: ar.path.to_path_buf(),
                key: name.to_string(),
                dtype: other.to_string(),
            })
        }
    };
    let offset = as_usize(&args[1]).ok_or_else(|| bad(ar, "bad storage offset"))?;
    let shape = usize_tuple(&args[2]).ok_or_else(|| bad(ar, "bad size"))?;
    let stride = usize_tuple(&args[3]).ok_or_else(|| bad(ar, "bad stride"))?;
    if stride.len() != shape.len() {
        return Err(bad(ar, "size and stride disagree"));
    }
    let raw = ar.read(&format!("{}data/{}", ar.root, key))?;
    let elem = match dtype {
        SourceDtype::F16 | SourceDtype::BF16 => 2,
        SourceDtype::F32 | SourceDtype::I32 => 4,
        SourceDtype::F64 | SourceDtype::I64 => 8,
        SourceDtype::U8 => 1,
    };
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(ar, &format!("size {shape:?} overflows")))?;
    if numel > raw.len() / elem {
        // A broadcast (zero stride) or overlapping view: more elements than
        // its storage holds. CLIP checkpoints never save one, and it could
        // claim any size.
        return Err(bad(
            ar,
            &format!(
                "size {shape:?} with stride {stride:?} is {numel} elements, its storage `{key}` holds {}",
                raw.len() / elem
            ),
        ));
    }
    // Highest element index touched, and the bytes up to it.
    let needed = shape
        .iter()
        .zip(&stride)
        .try_fold(offset, |a, (&d, &s)| {
            a.checked_add(d.saturating_sub(1).checked_mul(s)?)
        })
        .and_then(|last| last.checked_add(1)?.checked_mul(elem));
    let Some(needed) = needed else {
        return Err(bad(
            ar,
            &format!("offset {offset}, size {shape:?} and stride {stride:?} overflow"),
        ));
    };
    if numel > 0 && needed > raw.len() {
        return Err(bad(
            ar,
            &format!(
                "storage `{key}` holds {} bytes, the view needs {needed}",
                raw.len()
            ),
        ));
    }
    let read = |i: usize| -> f32 {
        let b = &raw[i * elem..(i + 1) * elem];
        match dtype {
            SourceDtype::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            SourceDtype::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            SourceDtype::F32 => f32::from_le_bytes(b.try_into().expect("4")),
            SourceDtype::F64 => f64::from_le_bytes(b.try_into().expect("8")) as f32,
            SourceDtype::I64 => i64::from_le_bytes(b.try_into().expect("8")) as f32,
            SourceDtype::I32 => i32::from_le_bytes(b.try_into().expect("4")) as f32,
            SourceDtype::U8 => b[0] as f32,
        }
    };
    let mut data = Vec::with_capacity(numel);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..numel {
        let pos = offset + idx.iter().zip(&stride).map(|(i, s)| i * s).sum::<usize>();
        data.push(read(pos));
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(Param { shape, data, dtype })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An archive holding one 4-float storage `archive/data/0`.
    fn archive_bytes() -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        {
            let mut z = zip::ZipWriter::new(&mut buf);
            let o = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            z.start_file("archive/data/0", o).unwrap();
            std::io::Write::write_all(&mut z, &[0u8; 16]).unwrap();
            z.finish().unwrap();
        }
        buf.into_inner()
    }

    fn tensor(size: &[i64], stride: &[i64]) -> Object {
        let ints = |v: &[i64]| Object::Tuple(v.iter().map(|&i| Object::Long(i)).collect());
        Object::Reduce {
            callable: Box::new(Object::Class {
                module_name: "torch._utils".into(),
                class_name: "_rebuild_tensor_v2".into(),
            }),
            args: Box::new(Object::Tuple(vec![
                Object::PersistentLoad(Box::new(Object::Tuple(vec![
                    Object::Unicode("storage".into()),
                    Object::Class {
                        module_name: "torch".into(),
                        class_name: "FloatStorage".into(),
                    },
                    Object::Unicode("0".into()),
                    Object::Unicode("cpu".into()),
                    Object::Long(4),
                ]))),
                Object::Long(0),
                ints(size),
                ints(stride),
            ])),
        }
    }

    fn rebuild_err(size: &[i64], stride: &[i64]) -> String {
        let bytes = archive_bytes();
        let mut ar = Archive {
            path: Path::new("x.pt"),
            zip: zip::ZipArchive::new(Cursor::new(&bytes[..])).unwrap(),
            root: "archive/".into(),
        };
        match rebuild(&mut ar, "w", &tensor(size, stride)) {
            Ok(p) => panic!("{size:?}/{stride:?} accepted: {:?}", p.shape),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn views_larger_than_their_storage_are_refused_before_allocating() {
        let ok = archive_bytes();
        let mut ar = Archive {
            path: Path::new("x.pt"),
            zip: zip::ZipArchive::new(Cursor::new(&ok[..])).unwrap(),
            root: "archive/".into(),
        };
        assert_eq!(
            rebuild(&mut ar, "w", &tensor(&[2, 2], &[2, 1]))
                .unwrap()
                .data
                .len(),
            4
        );
        // Zero stride: a broadcast view claiming 2^40 elements of 4.
        let e = rebuild_err(&[1 << 40], &[0]);
        assert!(e.contains("tensor `w`") && e.contains("holds 4"), "{e}");
        // Overlapping strides: a million by a million over 4 floats.
        let e = rebuild_err(&[1_000_000, 1_000_000], &[0, 0]);
        assert!(e.contains("holds 4"), "{e}");
        // A size whose product overflows.
        let e = rebuild_err(&[1 << 40, 1 << 40], &[1, 1]);
        assert!(e.contains("overflows"), "{e}");
        // Offset + strides past the storage.
        let e = rebuild_err(&[2], &[1 << 62]);
        assert!(
            e.contains("overflow") || e.contains("holds 16 bytes"),
            "{e}"
        );
    }
}
