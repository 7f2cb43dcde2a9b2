//! The reference backend: tract's optimised plan of the bundle's graph
//! (`--engine tract`), constants folded at load, every product in f32.

use tract_core::internal::*;

use super::{Encoder, EncoderSummary, EngineError, EngineKind};
use crate::tract_graph::{self, Plan};

/// tract's plan for one `[1, 3, r, r]` image to one `[1, dim]` embedding.
pub struct TractEncoder {
    plan: Plan,
    resolution: usize,
    dim: usize,
}

impl TractEncoder {
    /// Folds `model`'s constants and plans it; logs tract's kernels.
    pub fn new(mut model: TypedModel, resolution: usize, dim: usize) -> TractResult<Self> {
        tract_graph::fold_constants(&mut model)?;
        let plan = tract_graph::into_plan(model)?;
        log::info!(
            "image encoder on tract, kernels: {}",
            tract_graph::matmul_kernels(&plan).join(" | ")
        );
        Ok(TractEncoder {
            plan,
            resolution,
            dim,
        })
    }
}

impl Encoder for TractEncoder {
    fn input_len(&self) -> usize {
        3 * self.resolution * self.resolution
    }

    fn output_len(&self) -> usize {
        self.dim
    }

    fn kind(&self) -> EngineKind {
        EngineKind::Tract
    }

    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), EngineError> {
        let r = self.resolution;
        let input = Tensor::from_shape(&[1, 3, r, r], input)
            .map_err(|e| EngineError::Run(format!("{e:#}")))?;
        let out = self
            .plan
            .run(tvec!(input.into_tvalue()))
            .map_err(|e| EngineError::Run(format!("{e:#}")))?;
        let view = out[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| EngineError::Run(format!("{e:#}")))?;
        for (d, s) in output.iter_mut().zip(view.iter()) {
            *d = *s;
        }
        Ok(())
    }

    /// The plan's operators: name → (count, first description), which
    /// shows the kernels tract selected (e.g. its matmul kernel names).
    fn summary(&self) -> EncoderSummary {
        let mut m = std::collections::BTreeMap::new();
        for node in &self.plan.model().nodes {
            let e = m
                .entry(node.op.name().to_string())
                .or_insert((0, String::new()));
            e.0 += 1;
            if e.1.is_empty() {
                e.1 = node.op.info().unwrap_or_default().join("; ");
            }
        }
        EncoderSummary::Tract(m)
    }
}
