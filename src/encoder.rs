//! Loading and running an encoder graph serialised as tract NNEF.

use std::path::Path;

use tract_core::internal::*;

/// A runnable, optimised tract plan.
pub type Plan = Arc<TypedSimplePlan>;

/// Reads a `.nnef.tgz` (or NNEF directory) written by `clip-quantize`.
pub fn load_nnef(path: &Path) -> TractResult<TypedModel> {
    tract_nnef::nnef()
        .model_for_path(path)
        .with_context(|| format!("loading NNEF graph {}", path.display()))
}

/// Optimises a graph and makes it runnable.
pub fn into_plan(model: TypedModel) -> TractResult<Plan> {
    model.into_optimized()?.into_runnable()
}

/// Runs a single-input, single-output plan, returning the f32 output values.
pub fn run_f32(plan: &Plan, input: Tensor) -> TractResult<Vec<f32>> {
    let out = plan.run(tvec!(input.into_tvalue()))?;
    let t = out[0].cast_to::<f32>()?;
    Ok(t.to_plain_array_view::<f32>()?.iter().copied().collect())
}
