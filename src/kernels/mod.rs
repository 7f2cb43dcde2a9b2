//! Compute kernels of the native engine, apart
//! from any graph: linear-layer products over row-major matrices.
//!
//! - [`Kernels::gemm_i8`]: int8 activations × int8 weights, exact i32
//!   accumulation (no i16 saturation anywhere).
//! - [`Kernels::gemm_f16w`]: f32 activations × f16 weights, widened in
//!   registers, f32 accumulation (the bundle's fp16 weights never become an
//!   f32 copy in memory).
//! - [`Kernels::gemm_f32`]: f32 × f32 → f32 over rows (the reference
//!   layout; the engine runs its packed twin [`Kernels::gemm_f32p`] for
//!   fp32 weights and the attention products of two activations).
//! - [`quantize_row`]: an activation row to int8, exactly as the bundles'
//!   graphs quantise dynamically per token.
//! - Packing per frame, into scratch: [`Kernels::pack_f32_into`] (the right
//!   side of a product of two activations), [`Kernels::pack_i8_cols`] and
//!   [`Kernels::pack_f32_cols`] (a convolution's patches, stored a row per
//!   depth, as the right side of its product).
//! - [`elementwise`]: the row kernels around the products (maps, binary ops,
//!   softmax, norms, quantisation, epilogues), compiled per SIMD level.
//! - [`pool`]: the compute threads and how a job is split among them.
//!
//! Every SIMD path has its plain twin in [`scalar`] and a property test
//! against it on random shapes, values and tails. The path is chosen once,
//! at run time, from the CPU's features (never `target-cpu=native`), and
//! logged; `CLIP_EDGE_KERNELS=scalar` forces the twins.
//!
//! Layout: `x` is `m × k` (one row per token), `w` is `n × k` (one row per
//! output channel, as stored in a bundle), `out` is `m × n`.

use half::f16;

#[cfg(feature = "cuda")]
pub mod cuda;
pub mod depthwise;
pub mod elementwise;
pub mod float_panels;
pub mod group_columns;
pub mod group_panels;
pub mod packing;
pub mod pool;
pub mod resample;
pub mod scalar;

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(all(target_arch = "arm", target_os = "linux"))]
pub mod arm;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;

/// `steps` rounds of the peak loop: a value that depends on every step,
/// and the multiply-adds done.
pub type FmaPeak = fn(steps: usize) -> (f32, usize);

/// `out[i][j] = Σ_k x[i][k] · w[j][k]`, i8 × i8 → i32.
pub type GemmI8 = fn(x: &[i8], w: &[i8], m: usize, n: usize, k: usize, out: &mut [i32]);
/// `out[i][j] = Σ_k x[i][k] · w[j][k]`, f32 × f16 → f32.
pub type GemmF16w = fn(x: &[f32], w: &[f16], m: usize, n: usize, k: usize, out: &mut [f32]);

/// `out[i][j] = Σ_k x[i][k] · w[j][k]`, f32 × f32 → f32.
pub type GemmF32 = fn(x: &[f32], w: &[f32], m: usize, n: usize, k: usize, out: &mut [f32]);

/// Packs `n × k` int8 weights (row per output channel) into a kernel
/// path's own layout, once at load.
pub type PackI8 = fn(w: &[i8], n: usize, k: usize) -> Vec<i8>;

/// Packs `n × k` float weights into a kernel path's own layout, at load.
pub type PackF32 = fn(w: &[f32], n: usize, k: usize) -> Vec<f32>;
pub type PackF16 = fn(w: &[f16], n: usize, k: usize) -> Vec<f16>;
/// As [`PackF32`], into a buffer of at least [`packed_f32_len`] values
/// (per frame, for a product of two activations: no allocation).
pub type PackF32Into = fn(w: &[f32], n: usize, k: usize, out: &mut [f32]);

/// Packs, as [`PackI8`] lays out an `n × k` matrix, the matrix whose row
/// `j` is column `first + j` of `src` (`k` rows of `ld` values): a
/// convolution's patches, stored a row per depth, become the product's
/// right side (per frame, into `out`: no allocation).
pub type PackI8Cols = fn(src: &[i8], ld: usize, first: usize, n: usize, k: usize, out: &mut [i8]);

/// As [`PackI8Cols`], of the int8 matrix `quantize(v, r)` of f32 columns
/// (the activations of a 1 × 1 convolution), quantised on the way.
pub type QuantizePackI8Cols =
    fn(x: &[f32], ld: usize, first: usize, n: usize, k: usize, r: f32, out: &mut [i8]);

/// As [`PackI8Cols`], for f32 (and [`Kernels::pack_f32`]'s layout).
pub type PackF32Cols =
    fn(src: &[f32], ld: usize, first: usize, n: usize, k: usize, out: &mut [f32]);

/// Values a packed `n × k` int8 matrix may take in any kernel path's layout
/// (panels of up to 16 channels by groups of up to 8 depths, padded).
pub fn packed_i8_len(n: usize, k: usize) -> usize {
    n.div_ceil(16) * 16 * k.div_ceil(8) * 8
}

/// Values a packed `n × k` f32 matrix may take in any kernel path's layout
/// (panels of up to 16 channels, zero-padded).
pub fn packed_f32_len(n: usize, k: usize) -> usize {
    n.div_ceil(16) * 16 * k
}

/// Values an `n × k` matrix takes in a layout that packs a 1 × 1 matrix
/// into `one` values: plain rows (`one == 1`), or panels of 16 rows by
/// groups of `one / 16` depths, padded (every layout of this module).
fn layout_len(one: usize, n: usize, k: usize) -> Option<usize> {
    if one == 1 {
        return n.checked_mul(k);
    }
    let group = one / 16;
    n.div_ceil(16)
        .checked_mul(16)?
        .checked_mul(k.div_ceil(group))?
        .checked_mul(group)
}

/// One set of kernels for this CPU.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// Which path, e.g. `x86_64-avx2` or `aarch64-neon`, for logs and
    /// `bench`: the kernels that run. Mostly the name of its weight layout
    /// too, but not always (`x86_64-amx` runs `x86_64-avx512-vnni`'s):
    /// native sections and packed weights go by [`Kernels::packing`]'s name.
    pub name: &'static str,
    /// How the weights are packed at load (int8, f16, f32).
    weights: Packing,
    gemm_i8: GemmI8,
    pack_i8_cols: PackI8Cols,
    /// `pack_i8_cols` of columns quantised on the way, in one pass, where
    /// this path has it (else [`Kernels::quantize_pack_i8_cols`] quantises
    /// into a buffer, then packs).
    quantize_pack_i8_cols: Option<QuantizePackI8Cols>,
    /// Values one packed panel of 16 rows of depth `k` takes.
    i8_panel_len: fn(k: usize) -> usize,
    gemm_f16w: GemmF16w,
    gemm_f32: GemmF32,
    /// Weights packed by `weights` (linear layers, convolutions) and, per
    /// frame, the right side of attention's products; `gemm_f16w` /
    /// `gemm_f32` above take rows.
    gemm_f16p: GemmF16w,
    pack_f32_into: PackF32Into,
    pack_f32_cols: PackF32Cols,
    gemm_f32p: GemmF32,
    /// Whether `pack_f32` and `pack_f32_cols` lay out [`float_panels`]
    /// (else plain rows).
    float_panels: bool,
    /// The core's f32 multiply-add peak loop on this path's registers.
    fma_peak: FmaPeak,
    /// Which compiled copy of the element-wise row kernels runs.
    pub level: elementwise::Level,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Kernels {
    /// The plain twins.
    pub const SCALAR: Kernels = Kernels::plain_rows(
        Packing::SCALAR,
        scalar::gemm_i8,
        scalar::gemm_f16w,
        scalar::gemm_f32,
        scalar::fma_peak,
    );

    /// A path whose weights stay in the plain layout, a row per output
    /// channel (the scalar twins; NEON on aarch64 and armv7), with the
    /// plain element-wise kernels.
    const fn plain_rows(
        weights: Packing,
        gemm_i8: GemmI8,
        gemm_f16w: GemmF16w,
        gemm_f32: GemmF32,
        fma_peak: FmaPeak,
    ) -> Kernels {
        Kernels {
            name: weights.name,
            weights,
            gemm_i8,
            pack_i8_cols: rows_of_cols,
            quantize_pack_i8_cols: None,
            i8_panel_len: rows_panel_len,
            gemm_f16w,
            gemm_f32,
            gemm_f16p: gemm_f16w,
            pack_f32_into: rows_into,
            pack_f32_cols: rows_of_cols,
            gemm_f32p: gemm_f32,
            float_panels: false,
            fma_peak,
            level: elementwise::Level::Plain,
        }
    }

    /// This path with its int8 products on packed panels instead, under
    /// the name of `weights` (which packs them; the float products stay):
    /// the dot-product paths (VNNI, sdot, smmla) over their
    /// [`group_panels`] layout.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    const fn with_packed_i8(
        self,
        weights: Packing,
        gemm_i8: GemmI8,
        pack_i8_cols: PackI8Cols,
        quantize_pack_i8_cols: Option<QuantizePackI8Cols>,
        i8_panel_len: fn(k: usize) -> usize,
    ) -> Kernels {
        Kernels {
            name: weights.name,
            weights,
            gemm_i8,
            pack_i8_cols,
            quantize_pack_i8_cols,
            i8_panel_len,
            ..self
        }
    }

    /// The best kernels this CPU runs, by run-time feature detection;
    /// `CLIP_EDGE_KERNELS=scalar` forces the plain twins, and a path's
    /// name (e.g. `x86_64-avx2`) that path where this CPU has it.
    pub fn detect() -> Kernels {
        let forced = std::env::var("CLIP_EDGE_KERNELS").ok();
        let k = match forced.as_deref() {
            Some("scalar") => Self::SCALAR,
            Some(name) => match Self::available().into_iter().find(|k| k.name == name) {
                Some(k) => k,
                None => {
                    log::warn!("CLIP_EDGE_KERNELS={name}: not a kernel path of this CPU");
                    Self::simd().unwrap_or(Self::SCALAR)
                }
            },
            None => Self::simd().unwrap_or(Self::SCALAR),
        };
        log::info!("compute kernels: {}", k.name);
        k
    }

    /// Every SIMD path this CPU runs, the best last (tests compare each
    /// with the scalar twins).
    pub fn available() -> Vec<Kernels> {
        let mut v: Vec<Kernels> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        v.extend(x86_64::sse41_only());
        #[cfg(target_arch = "x86_64")]
        v.extend(x86_64::avx2_only());
        #[cfg(target_arch = "x86_64")]
        v.extend(x86_64::avx_vnni_only());
        #[cfg(target_arch = "x86_64")]
        v.extend(x86_64::avx512_only());
        #[cfg(target_arch = "x86_64")]
        v.extend(x86_64::vnni_only());
        #[cfg(target_arch = "aarch64")]
        v.extend(aarch64::paths());
        if let Some(best) = Self::simd() {
            if v.iter().all(|k| k.name != best.name) {
                v.push(best);
            }
        }
        v
    }

    /// The SIMD kernels for this CPU, if it has the features they need.
    pub fn simd() -> Option<Kernels> {
        #[cfg(target_arch = "x86_64")]
        if let Some(k) = x86_64::detect() {
            return Some(k);
        }
        #[cfg(target_arch = "aarch64")]
        if let Some(k) = aarch64::detect() {
            return Some(k);
        }
        #[cfg(all(target_arch = "arm", target_os = "linux"))]
        if let Some(k) = arm::detect() {
            return Some(k);
        }
        None
    }

    /// `steps` rounds of this path's f32 multiply-add peak loop (registers
    /// only, independent chains): a value that depends on every step, and
    /// the multiply-adds done. `bench-kernels` times it as the core's peak.
    pub fn fma_peak(&self, steps: usize) -> (f32, usize) {
        (self.fma_peak)(steps)
    }

    /// `w` (`n × k`) in this path's layout for [`Kernels::gemm_i8`].
    pub fn pack_i8(&self, w: &[i8], n: usize, k: usize) -> Vec<i8> {
        self.weights.pack_i8(w, n, k)
    }

    /// Columns `first..first + n` of `src` (`k` rows of `ld` values) as the
    /// rows of an `n × k` matrix packed for [`Kernels::gemm_i8`], into `out`
    /// (at least [`Kernels::i8_panel_len`] · ⌈n/16⌉ values). A block of
    /// whole 16-row panels packs on its own: threads pack their shares.
    pub fn pack_i8_cols(
        &self,
        src: &[i8],
        ld: usize,
        first: usize,
        n: usize,
        k: usize,
        out: &mut [i8],
    ) {
        assert!(
            n == 0
                || (first + n <= ld
                    && (k == 0 || src.len() >= (k - 1) * ld + first + n)
                    && out.len() >= n.div_ceil(16) * self.i8_panel_len(k))
        );
        (self.pack_i8_cols)(src, ld, first, n, k, out)
    }

    /// [`Kernels::pack_i8_cols`] of the int8 matrix `quantize(v, r)` of
    /// columns `first..first + n` of `x` (`k` rows of `ld`), as
    /// [`elementwise::quantize_into`] quantises: in one pass where the
    /// path has it, else quantised into `tmp` first (which must hold
    /// `k × n` values on every path, used or not).
    #[allow(clippy::too_many_arguments)]
    pub fn quantize_pack_i8_cols(
        &self,
        x: &[f32],
        ld: usize,
        first: usize,
        n: usize,
        k: usize,
        r: f32,
        tmp: &mut [i8],
        out: &mut [i8],
    ) {
        assert!(
            tmp.len() >= k * n
                && (n == 0
                    || (first + n <= ld
                        && (k == 0 || x.len() >= (k - 1) * ld + first + n)
                        && out.len() >= n.div_ceil(16) * self.i8_panel_len(k)))
        );
        match self.quantize_pack_i8_cols {
            Some(f) => f(x, ld, first, n, k, r, out),
            None => {
                let tmp = &mut tmp[..k * n];
                for (t, q) in tmp.chunks_exact_mut(n.max(1)).enumerate() {
                    elementwise::quantize_into(
                        self.level,
                        &x[t * ld + first..t * ld + first + n],
                        r,
                        q,
                    );
                }
                self.pack_i8_cols(tmp, n, 0, n, k, out)
            }
        }
    }

    /// As [`Kernels::pack_i8_cols`], f32 in [`Kernels::pack_f32`]'s layout
    /// (panels of [`packed_f32_len`]`(16, k)` values).
    pub fn pack_f32_cols(
        &self,
        src: &[f32],
        ld: usize,
        first: usize,
        n: usize,
        k: usize,
        out: &mut [f32],
    ) {
        assert!(
            n == 0
                || (first + n <= ld
                    && (k == 0 || src.len() >= (k - 1) * ld + first + n)
                    && out.len() >= packed_f32_len(n, k))
        );
        (self.pack_f32_cols)(src, ld, first, n, k, out)
    }

    /// Whether [`Kernels::pack_f32_cols`] (and `pack_f32`) lay out
    /// [`float_panels`]: a caller may then build that layout itself.
    pub fn packs_f32_in_float_panels(&self) -> bool {
        self.float_panels
    }

    /// Values one packed int8 panel (16 rows of depth `k`) takes.
    pub fn i8_panel_len(&self, k: usize) -> usize {
        (self.i8_panel_len)(k)
    }

    /// `out = x · wᵀ` in int8 with i32 accumulation; `w` as
    /// [`Kernels::pack_i8`] made it.
    ///
    /// # Panics
    /// When a slice is shorter than its shape says (a caller's bug: the
    /// engine sizes every buffer at load).
    pub fn gemm_i8(&self, x: &[i8], w: &[i8], m: usize, n: usize, k: usize, out: &mut [i32]) {
        check(x.len(), w.len(), out.len(), m, n, k);
        (self.gemm_i8)(x, w, m, n, k, out)
    }

    /// `out = x · wᵀ` with f16 weights and f32 accumulation.
    ///
    /// # Panics
    /// As [`Kernels::gemm_i8`].
    pub fn gemm_f16w(&self, x: &[f32], w: &[f16], m: usize, n: usize, k: usize, out: &mut [f32]) {
        check(x.len(), w.len(), out.len(), m, n, k);
        (self.gemm_f16w)(x, w, m, n, k, out)
    }

    /// `out = x · wᵀ` in f32.
    ///
    /// # Panics
    /// As [`Kernels::gemm_i8`].
    pub fn gemm_f32(&self, x: &[f32], w: &[f32], m: usize, n: usize, k: usize, out: &mut [f32]) {
        check(x.len(), w.len(), out.len(), m, n, k);
        (self.gemm_f32)(x, w, m, n, k, out)
    }

    /// `w` (`n × k`) in this path's layout for [`Kernels::gemm_f16p`].
    pub fn pack_f16(&self, w: &[f16], n: usize, k: usize) -> Vec<f16> {
        self.weights.pack_f16(w, n, k)
    }

    /// As [`Kernels::gemm_f16w`], `w` as [`Kernels::pack_f16`] made it.
    pub fn gemm_f16p(&self, x: &[f32], w: &[f16], m: usize, n: usize, k: usize, out: &mut [f32]) {
        check(x.len(), w.len(), out.len(), m, n, k);
        (self.gemm_f16p)(x, w, m, n, k, out)
    }

    /// How this path lays out the weights it is given at load (what a
    /// host packs a native section for this path with).
    pub fn packing(&self) -> Packing {
        self.weights
    }

    /// `w` (`n × k`) in this path's layout for [`Kernels::gemm_f32p`].
    pub fn pack_f32(&self, w: &[f32], n: usize, k: usize) -> Vec<f32> {
        self.weights.pack_f32(w, n, k)
    }

    /// As [`Kernels::pack_f32`], into `out` (at least [`packed_f32_len`]).
    pub fn pack_f32_into(&self, w: &[f32], n: usize, k: usize, out: &mut [f32]) {
        assert!(w.len() >= n * k && out.len() >= packed_f32_len(n, k));
        (self.pack_f32_into)(w, n, k, out)
    }

    /// As [`Kernels::gemm_f32`], `w` as [`Kernels::pack_f32`] made it.
    pub fn gemm_f32p(&self, x: &[f32], w: &[f32], m: usize, n: usize, k: usize, out: &mut [f32]) {
        check(x.len(), w.len(), out.len(), m, n, k);
        (self.gemm_f32p)(x, w, m, n, k, out)
    }
}

#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")),
    allow(dead_code)
)]
pub(crate) mod drive;
mod layout;
mod quantize;
#[cfg(test)]
mod tests;

pub(crate) use drive::{check, drive};
pub use layout::{rows, rows_into, rows_of_cols, rows_panel_len};
pub use packing::Packing;
pub use quantize::{quantize, quantize_row, round_half_even};
