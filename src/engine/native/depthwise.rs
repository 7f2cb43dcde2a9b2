//! The depthwise convolution's executor: output channels split over the
//! pool's threads, each channel's plane written by the kernel, then the
//! block's fused epilogue while it is still in cache.

use super::exec::split_rows;
use super::scratch::PostFn;
use crate::engine::schedule::linear::Depthwise;
use crate::kernels::depthwise;
use crate::kernels::elementwise::Level;
use crate::kernels::pool::Pool;

impl Depthwise {
    /// Runs the convolution of `x` (`c × h × w`) into `out` (`o × oh ×
    /// ow`); `post(first, block)` applies the fused epilogue to a block of
    /// whole planes starting at value `first`.
    pub fn run(&self, lv: Level, pool: &Pool, x: &[f32], out: &mut [f32], post: &PostFn<'_>) {
        let plane = self.oh * self.ow;
        let taps = self.kernel[0] * self.kernel[1];
        let per_input = (self.o / self.c.max(1)).max(1);
        let hw = self.h * self.w;
        if plane == 0 {
            return;
        }
        split_rows(pool, out, plane, &|c0, block| {
            for (i, y) in block.chunks_exact_mut(plane).enumerate() {
                let j = c0 + i;
                if j >= self.o {
                    break;
                }
                let ic = j / per_input;
                depthwise::plane(
                    lv,
                    &x[ic * hw..(ic + 1) * hw],
                    self.w,
                    &self.weights[j * taps..(j + 1) * taps],
                    self.kernel,
                    self.stride,
                    self.dilation,
                    self.pad,
                    self.bias[j],
                    self.ow,
                    y,
                );
            }
            post(c0 * plane, block);
        });
    }
}
