//! OpenAI's released `.pt` files are TorchScript archives: the pickled object
//! tree is a module (`__torch__.model.CLIP`) whose attributes are submodules
//! and tensors. Walking it gives the state-dict names (`visual.conv1.weight`).

use candle_core::pickle::Object;

/// Buffers that only the JIT archives carry; the reference `build_model` drops them.
pub const JIT_ONLY_BUFFERS: [&str; 3] = ["input_resolution", "context_length", "vocab_size"];

/// Is this object a pickled TorchScript module (`__torch__.…`)?
pub fn is_module(obj: &Object) -> bool {
    match obj {
        Object::Build { callable, .. } => is_torch_class(callable),
        _ => false,
    }
}

fn is_torch_class(obj: &Object) -> bool {
    match obj {
        Object::Reduce { callable, .. } => is_torch_class(callable),
        Object::Class { module_name, .. } => module_name.starts_with("__torch__"),
        _ => false,
    }
}

/// Collects `(name, tensor object)` pairs of a module tree, depth first.
pub fn walk_module<'a>(obj: &'a Object, prefix: &str, out: &mut Vec<(String, &'a Object)>) {
    let Object::Build { args, .. } = obj else {
        return;
    };
    let Object::Dict(items) = args.as_ref() else {
        return;
    };
    for (k, v) in items {
        let Object::Unicode(name) = k else { continue };
        let full = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if is_module(v) {
            walk_module(v, &full, out);
        } else if super::torch_zip::is_tensor(v) {
            if prefix.is_empty() && JIT_ONLY_BUFFERS.contains(&name.as_str()) {
                continue;
            }
            out.push((full, v));
        }
    }
}
