//! The depthwise convolution's executor: output channels split over the
//! pool's threads; each channel's input zero-padded into the thread's part
//! of the scratch (unless the kernel reads it unpadded), its plane written
//! by the kernel, then its fused epilogue while it is still in cache.

use super::scratch::{PostFn, ScratchSize};
use crate::engine::schedule::linear::Depthwise;
use crate::kernels::depthwise::{self, Padded};
use crate::kernels::elementwise::Level;
use crate::kernels::pool::{Pool, Split, MIN_PARALLEL_MACS};

impl Depthwise {
    /// The zero-padded input plane the kernel reads, per output channel
    /// (`None`: past `usize`; a section with such a geometry is refused).
    pub fn padded(&self) -> Option<Padded> {
        Padded::of([self.oh, self.ow], self.kernel, self.stride, self.dilation)
    }

    /// A padded input plane per output channel (each thread reuses the
    /// first of its share: the split hands out scratch by channels).
    pub fn scratch(&self) -> ScratchSize {
        ScratchSize {
            pa: self.padded().map_or(0, |p| p.len().saturating_mul(self.o)),
            ..ScratchSize::default()
        }
    }

    /// Runs the convolution of `x` (`c × h × w`) into `out` (`o × oh ×
    /// ow`), padding each channel into `pad` ([`Depthwise::scratch`])
    /// unless the kernels read it unpadded
    /// ([`depthwise::reads_unpadded`]: the scratch is then unused);
    /// `post(first, plane)` applies the fused epilogue to each output
    /// plane, starting at value `first`.
    pub fn run(
        &self,
        lv: Level,
        pool: &Pool,
        x: &[f32],
        out: &mut [f32],
        pad: &mut [f32],
        post: &PostFn<'_>,
    ) {
        let plane = self.oh * self.ow;
        let Some(p) = self.padded().filter(|_| plane > 0) else {
            return;
        };
        let taps = self.kernel[0] * self.kernel[1];
        let per_input = (self.o / self.c.max(1)).max(1);
        let hw = self.h * self.w;
        let plen = p.len();
        // Where the kernels read the channel straight (masking the
        // padding), nothing is padded.
        let unpadded = depthwise::reads_unpadded(lv, self.kernel, self.stride, self.dilation);
        pool.rows3(
            self.macs(),
            MIN_PARALLEL_MACS,
            self.o,
            1,
            Split::new(&mut pad[..self.o * plen], plen),
            Split::new(&mut out[..self.o * plane], plane),
            Split::<()>::empty(),
            &|c0, pads, block, _| {
                // One padded plane per thread, reused (it stays in cache),
                // padded again only for another input channel; each
                // plane's epilogue while it is still in cache.
                let Some(xp) = pads.get_mut(..plen) else {
                    return; // no output channels
                };
                let mut padded = None;
                for (i, y) in block.chunks_exact_mut(plane).enumerate() {
                    let j = c0 + i;
                    let ic = j / per_input;
                    let (input, k) = (
                        &x[ic * hw..(ic + 1) * hw],
                        &self.weights[j * taps..(j + 1) * taps],
                    );
                    if unpadded {
                        depthwise::plane_unpadded(
                            lv,
                            input,
                            [self.h, self.w],
                            self.pad,
                            k,
                            self.kernel,
                            self.stride,
                            self.bias[j],
                            self.ow,
                            y,
                        );
                    } else {
                        if padded != Some(ic) {
                            depthwise::pad_plane(input, self.w, self.pad, p, xp);
                            padded = Some(ic);
                        }
                        depthwise::plane(
                            lv,
                            xp,
                            p.phases,
                            p.cols,
                            k,
                            self.kernel,
                            self.stride,
                            self.dilation,
                            self.bias[j],
                            self.ow,
                            y,
                        );
                    }
                    post(j * plane, y);
                }
            },
        );
    }
}
