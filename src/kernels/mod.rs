//! Compute kernels of the native engine (issue: the native engine), apart
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
pub mod elementwise;
pub mod float_panels;
pub mod group_panels;
pub mod pool;
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

/// One set of kernels for this CPU.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// Which path, e.g. `x86_64-avx2` or `aarch64-neon`, for logs and `bench`.
    pub name: &'static str,
    gemm_i8: GemmI8,
    pack_i8: PackI8,
    pack_i8_cols: PackI8Cols,
    /// Values one packed panel of 16 rows of depth `k` takes.
    i8_panel_len: fn(k: usize) -> usize,
    gemm_f16w: GemmF16w,
    gemm_f32: GemmF32,
    /// Weights packed by `pack_f16` / `pack_f32` (linear layers,
    /// convolutions, and per frame the right side of attention's products);
    /// `gemm_f16w` / `gemm_f32` above take rows.
    pack_f16: PackF16,
    gemm_f16p: GemmF16w,
    pack_f32: PackF32,
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
        "scalar",
        scalar::gemm_i8,
        scalar::gemm_f16w,
        scalar::gemm_f32,
        scalar::fma_peak,
    );

    /// A path whose weights stay in the plain layout, a row per output
    /// channel (the scalar twins; NEON on aarch64 and armv7), with the
    /// plain element-wise kernels.
    const fn plain_rows(
        name: &'static str,
        gemm_i8: GemmI8,
        gemm_f16w: GemmF16w,
        gemm_f32: GemmF32,
        fma_peak: FmaPeak,
    ) -> Kernels {
        Kernels {
            name,
            gemm_i8,
            pack_i8: rows,
            pack_i8_cols: rows_of_cols,
            i8_panel_len: rows_panel_len,
            gemm_f16w,
            gemm_f32,
            pack_f16: rows,
            gemm_f16p: gemm_f16w,
            pack_f32: rows,
            pack_f32_into: rows_into,
            pack_f32_cols: rows_of_cols,
            gemm_f32p: gemm_f32,
            float_panels: false,
            fma_peak,
            level: elementwise::Level::Plain,
        }
    }

    /// This path with its int8 products on packed panels instead, under
    /// another name (the float products stay): the dot-product paths
    /// (VNNI, sdot, smmla) over their [`group_panels`] layout.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    const fn with_packed_i8(
        self,
        name: &'static str,
        gemm_i8: GemmI8,
        pack_i8: PackI8,
        pack_i8_cols: PackI8Cols,
        i8_panel_len: fn(k: usize) -> usize,
    ) -> Kernels {
        Kernels {
            name,
            gemm_i8,
            pack_i8,
            pack_i8_cols,
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
        v.extend(x86_64::avx2_only());
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
        assert!(w.len() >= n * k);
        (self.pack_i8)(w, n, k)
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
        assert!(w.len() >= n * k);
        (self.pack_f16)(w, n, k)
    }

    /// As [`Kernels::gemm_f16w`], `w` as [`Kernels::pack_f16`] made it.
    pub fn gemm_f16p(&self, x: &[f32], w: &[f16], m: usize, n: usize, k: usize, out: &mut [f32]) {
        check(x.len(), w.len(), out.len(), m, n, k);
        (self.gemm_f16p)(x, w, m, n, k, out)
    }

    /// `w` (`n × k`) in this path's layout for [`Kernels::gemm_f32p`].
    pub fn pack_f32(&self, w: &[f32], n: usize, k: usize) -> Vec<f32> {
        assert!(w.len() >= n * k);
        (self.pack_f32)(w, n, k)
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

/// Bytes of weights one block holds: the block stays in the L2 cache while
/// every row of `x` passes over it (without blocking, each pair of rows
/// streamed the whole matrix from memory).
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")),
    allow(dead_code)
)]
const WEIGHT_BLOCK_BYTES: usize = 96 << 10;

/// The loop every kernel shares: blocks of output channels whose weights
/// fit [`WEIGHT_BLOCK_BYTES`]; in each, tiles of two rows of `x` by four
/// output channels through `tile` (each weight load serves two rows, each
/// activation load four channels), an odd last row as a tile of that row
/// twice, the remaining channels one dot product at a time through `one`.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "arm")),
    allow(dead_code)
)]
pub(crate) fn drive<X, W, O: Copy>(
    x: &[X],
    w: &[W],
    m: usize,
    n: usize,
    k: usize,
    out: &mut [O],
    tile: impl Fn([&[X]; 2], [&[W]; 4]) -> [[O; 4]; 2],
    one: impl Fn(&[X], &[W]) -> O,
) {
    let row = |i: usize| &x[i * k..(i + 1) * k];
    let per_channel = (k * std::mem::size_of::<W>()).max(1);
    let block = (WEIGHT_BLOCK_BYTES / per_channel / 4 * 4).max(4);
    let mut j0 = 0;
    while j0 < n {
        let j1 = (j0 + block).min(n);
        let mut i = 0;
        while i < m {
            let pair = i + 1 < m;
            let xs = [row(i), row(if pair { i + 1 } else { i })];
            let mut j = j0;
            while j + 4 <= j1 {
                let ws = [0, 1, 2, 3].map(|r| &w[(j + r) * k..(j + r + 1) * k]);
                let t = tile(xs, ws);
                out[i * n + j..i * n + j + 4].copy_from_slice(&t[0]);
                if pair {
                    out[(i + 1) * n + j..(i + 1) * n + j + 4].copy_from_slice(&t[1]);
                }
                j += 4;
            }
            for j in j..j1 {
                let wr = &w[j * k..(j + 1) * k];
                out[i * n + j] = one(xs[0], wr);
                if pair {
                    out[(i + 1) * n + j] = one(xs[1], wr);
                }
            }
            i += 2;
        }
        j0 = j1;
    }
}

/// `len` holds the product of `factors` (which does not overflow): the
/// kernels' own bound checks, safe for any sizes a caller passes.
pub(crate) fn holds(len: usize, factors: &[usize]) -> bool {
    factors
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .is_some_and(|need| len >= need)
}

fn check(x: usize, w: usize, out: usize, m: usize, n: usize, k: usize) {
    assert!(
        holds(x, &[m, k]) && holds(w, &[n, k]) && holds(out, &[m, n]),
        "gemm {m}x{n}x{k}: x {x}, w {w}, out {out}"
    );
}

/// The plain layout: a row per output channel.
pub fn rows<T: Copy>(w: &[T], n: usize, k: usize) -> Vec<T> {
    w[..n * k].to_vec()
}

/// [`PackI8Cols`] / [`PackF32Cols`] for the plain layout: a transpose.
pub fn rows_of_cols<T: Copy>(
    src: &[T],
    ld: usize,
    first: usize,
    n: usize,
    k: usize,
    out: &mut [T],
) {
    if n == 0 {
        return;
    }
    for (t, line) in src.chunks(ld.max(1)).take(k).enumerate() {
        for (j, v) in line[first..first + n].iter().enumerate() {
            out[j * k + t] = *v;
        }
    }
}

/// The plain layout's 16 rows.
pub fn rows_panel_len(k: usize) -> usize {
    16 * k
}

/// [`rows`] into a buffer.
pub fn rows_into(w: &[f32], n: usize, k: usize, out: &mut [f32]) {
    out[..n * k].copy_from_slice(&w[..n * k]);
}

/// `v` rounded to the nearest integer, ties to even, as
/// `f32::round_ties_even`, which compiles to a slow library call on x86_64
/// without SSE4.1 (the baseline this crate is built for): adding and
/// subtracting 1.5 · 2²³ rounds in the FPU's default mode (to nearest,
/// ties to even) wherever |v| < 2²²; past that every f32 is handled by the
/// library call (and past 2²³ already integral).
#[inline(always)]
pub fn round_half_even(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    if v.abs() < 4_194_304.0 {
        (v + MAGIC) - MAGIC
    } else {
        v.round_ties_even()
    }
}

/// `clamp(round_half_even(v · r), -127, 127)` as i8: an activation's int8
/// value for the reciprocal scale `r` (NaN gives 0). Branch-free, so that
/// loops over it vectorise.
#[inline(always)]
pub fn quantize(v: f32, r: f32) -> i8 {
    const MAGIC: f32 = 12_582_912.0;
    // Clamping to integer bounds first rounds the same, and keeps |v| far
    // below 2^22, where the 1.5 · 2^23 trick of `round_half_even` holds.
    let c = (v * r).clamp(-127.0, 127.0);
    let c = if c.is_nan() { 0.0 } else { c };
    // The rounded integer sits in the low mantissa bits of `c + MAGIC`
    // (|c| ≤ 127): read it there, without a float-to-int conversion (a
    // saturating `as` does not vectorise).
    ((c + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32) as i8
}

/// Quantises one activation row to int8 as the bundles' graphs do
/// dynamically per token, once tract has decluttered them:
/// `s = max(max|x|, 1e-12) · (1/127)`,
/// `q = clamp(round_half_even(x · (1/s)), -127, 127)`. Returns `s`.
pub fn quantize_row(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let s = amax.max(1e-12) * (1.0 / 127.0);
    let r = 1.0 / s;
    for (o, v) in q.iter_mut().zip(x) {
        *o = quantize(*v, r);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Relative difference allowed between sums of the same chains added in
    /// another order (a few hundred values near 1e-4: far above f32's ε·n).
    const PEAK_SUM_TOLERANCE: f64 = 1e-4;

    /// Two float sums of the same exact products in different orders (with
    /// or without FMA) differ by at most this many `k·ε·Σ|x·w|` (Higham:
    /// each is within one of the exact sum).
    pub(super) const SUM_ORDER_BOUND: f32 = 2.0;

    /// The SIMD paths a SIMD-vs-twin test compares with the twins. A CPU
    /// without any (none of CI's) fails such a test: it would compare
    /// nothing there.
    pub(super) fn simd_paths() -> Vec<Kernels> {
        let v = Kernels::available();
        assert!(
            !v.is_empty(),
            "no SIMD kernel path on this CPU: this SIMD-vs-twin test has nothing to compare"
        );
        v
    }

    #[test]
    fn the_paths_under_test_are_named() {
        let names: Vec<&str> = Kernels::available().iter().map(|k| k.name).collect();
        eprintln!("SIMD kernel paths under test: {names:?}");
        // scripts/cross-test names the path each qemu CPU model must run
        // (a feature qemu failed to show would otherwise leave its path
        // untested here, and this test passing).
        if let (Ok(want), Err(_)) = (
            std::env::var("CLIP_EDGE_EXPECT_KERNELS"),
            std::env::var("CLIP_EDGE_KERNELS"),
        ) {
            assert_eq!(
                names.last().copied(),
                Some(want.as_str()),
                "CLIP_EDGE_EXPECT_KERNELS"
            );
        }
        #[cfg(target_arch = "aarch64")]
        {
            let mut want = vec!["aarch64-neon"];
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                want.push("aarch64-dotprod");
            }
            if std::arch::is_aarch64_feature_detected!("i8mm") {
                want.push("aarch64-i8mm");
            }
            assert_eq!(names, want);
        }
        #[cfg(all(target_arch = "arm", target_os = "linux"))]
        if arm::neon::has_neon() {
            assert_eq!(names, ["armv7-neon"]);
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            assert!(names.contains(&"x86_64-avx2"), "{names:?}");
        }
    }

    fn shapes() -> impl Strategy<Value = (usize, usize, usize)> {
        // Odd sizes and tails around the tiles (2 rows × 4 channels) and
        // the SIMD widths (8, 16 lanes).
        (1usize..20, 1usize..40, 0usize..150)
    }

    /// A product whose right side is columns `skip..skip + n` of a
    /// row-per-depth matrix (`k` rows of `ld = n + skip`), as a
    /// convolution's patches are: `w` holds the same values a row per
    /// column, as weights packed at load would be.
    struct ColumnsCase<T> {
        ld: usize,
        n: usize,
        skip: usize,
        split: usize,
        x: Vec<T>,
        src: Vec<T>,
        w: Vec<T>,
    }

    impl<T: Copy> ColumnsCase<T> {
        /// `value` turns each step of a seeded LCG into an element.
        #[allow(clippy::too_many_arguments)]
        fn new(
            m: usize,
            n: usize,
            k: usize,
            skip: usize,
            split: usize,
            seed: u64,
            value: impl Fn(u64) -> T,
        ) -> Self {
            let mut r = seed;
            let mut next = || {
                r = r
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                value(r)
            };
            let ld = n + skip;
            let x: Vec<T> = (0..m * k).map(|_| next()).collect();
            let src: Vec<T> = (0..k * ld).map(|_| next()).collect();
            let kk = k.max(1);
            let w = (0..n * k)
                .map(|i| src[(i % kk) * ld + skip + i / kk])
                .collect();
            ColumnsCase {
                ld,
                n,
                skip,
                split,
                x,
                src,
                w,
            }
        }

        /// The columns packed by `pack(src, first column, columns, out)`
        /// in panels of 16 of `panel` values (`fill` elsewhere): the first
        /// `split` panels apart from the rest, as blocks of pixels are.
        fn packed(
            &self,
            panel: usize,
            fill: T,
            pack: impl Fn(&[T], usize, usize, &mut [T]),
        ) -> Vec<T> {
            let panels = self.n.div_ceil(16);
            let mut packed = vec![fill; panels * panel];
            let cut = self.split.min(panels);
            let head = (cut * 16).min(self.n);
            let (lo, hi) = packed.split_at_mut(cut * panel);
            pack(&self.src, self.skip, head, lo);
            pack(&self.src, self.skip + head, self.n - head, hi);
            packed
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn simd_gemm_i8_is_exact((m, n, k) in shapes(), seed in any::<u64>()) {
            for simd in simd_paths() {
            let mut r = seed;
            let mut next = || { r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (r >> 33) as u8 as i8 };
            let x: Vec<i8> = (0..m * k).map(|_| next()).collect();
            let w: Vec<i8> = (0..n * k).map(|_| next()).collect();
            let (mut a, mut b) = (vec![0i32; m * n], vec![1i32; m * n]);
            Kernels::SCALAR.gemm_i8(&x, &w, m, n, k, &mut a);
            simd.gemm_i8(&x, &simd.pack_i8(&w, n, k), m, n, k, &mut b);
            prop_assert_eq!(a, b, "{} {}x{}x{}", simd.name, m, n, k);
            }
        }

        /// Columns of a row-per-depth matrix packed per frame (a
        /// convolution's patches), from any first column and in blocks of
        /// whole panels, give the same exact product as the rows packed at
        /// load; on every path, the scalar twins included.
        #[test]
        fn columns_packed_per_frame_multiply_exactly(
            (m, n, k) in shapes(),
            skip in 0usize..5,
            split in 0usize..3,
            seed in any::<u64>(),
        ) {
            let case = ColumnsCase::new(m, n, k, skip, split, seed, |r| (r >> 33) as u8 as i8);
            let mut want = vec![0i32; m * n];
            Kernels::SCALAR.gemm_i8(&case.x, &case.w, m, n, k, &mut want);
            for kern in Kernels::available().into_iter().chain([Kernels::SCALAR]) {
                let packed = case.packed(kern.i8_panel_len(k), 7, |src, first, cols, out| {
                    kern.pack_i8_cols(src, case.ld, first, cols, k, out)
                });
                let mut got = vec![1i32; m * n];
                kern.gemm_i8(&case.x, &packed, m, n, k, &mut got);
                prop_assert_eq!(&got, &want, "{} {}x{}x{}", kern.name, m, n, k);
            }
        }

        /// As above for f32 ([`Kernels::pack_f32_cols`], the float
        /// convolutions' patches): small integers, so every sum is exact in
        /// any order and the products must agree exactly.
        #[test]
        fn f32_columns_packed_per_frame_multiply_exactly(
            (m, n, k) in shapes(),
            skip in 0usize..5,
            split in 0usize..3,
            seed in any::<u64>(),
        ) {
            let case = ColumnsCase::new(m, n, k, skip, split, seed, |r| (r >> 59) as f32 - 16.0);
            let mut want = vec![0f32; m * n];
            Kernels::SCALAR.gemm_f32(&case.x, &case.w, m, n, k, &mut want);
            for kern in Kernels::available().into_iter().chain([Kernels::SCALAR]) {
                let packed = case.packed(packed_f32_len(16, k), 7.0, |src, first, cols, out| {
                    kern.pack_f32_cols(src, case.ld, first, cols, k, out)
                });
                let mut got = vec![1f32; m * n];
                kern.gemm_f32p(&case.x, &packed, m, n, k, &mut got);
                prop_assert_eq!(&got, &want, "{} {}x{}x{}", kern.name, m, n, k);
            }
        }

        #[test]
        fn simd_gemm_f16w_matches_scalar((m, n, k) in shapes(), x in prop::collection::vec(-4f32..4.0, 3000), w in prop::collection::vec(-2f32..2.0, 6000)) {
            for simd in simd_paths() {
            let x = &x[..m * k];
            let w: Vec<f16> = w[..n * k].iter().map(|v| f16::from_f32(*v)).collect();
            let (mut a, mut b) = (vec![0f32; m * n], vec![1f32; m * n]);
            Kernels::SCALAR.gemm_f16w(x, &w, m, n, k, &mut a);
            simd.gemm_f16w(x, &w, m, n, k, &mut b);
            let mut c = vec![2f32; m * n];
            simd.gemm_f16p(x, &simd.pack_f16(&w, n, k), m, n, k, &mut c);
            for (idx, ((p, q), r)) in a.iter().zip(&b).zip(&c).enumerate() {
                // The same exact products (f16 widens exactly), summed in
                // another order and with FMA: each sum is within
                // k·eps·Σ|x·w| of the exact one (Higham), so the two within
                // twice that.
                let (i, j) = (idx / n, idx % n);
                let abs: f32 = (0..k).map(|t| (x[i * k + t] * w[j * k + t].to_f32()).abs()).sum();
                let bound = SUM_ORDER_BOUND * k as f32 * f32::EPSILON * abs + f32::MIN_POSITIVE;
                prop_assert!((p - q).abs() <= bound, "{} [{}] {} vs {} ({}x{}x{})", simd.name, idx, p, q, m, n, k);
                prop_assert!((p - r).abs() <= bound, "{} packed [{}] {} vs {} ({}x{}x{})", simd.name, idx, p, r, m, n, k);
            }
            }
        }

        #[test]
        fn simd_gemm_f32_matches_scalar((m, n, k) in shapes(), x in prop::collection::vec(-4f32..4.0, 3000), w in prop::collection::vec(-2f32..2.0, 6000)) {
            for simd in simd_paths() {
            let (x, w) = (&x[..m * k], &w[..n * k]);
            let (mut a, mut b) = (vec![0f32; m * n], vec![1f32; m * n]);
            Kernels::SCALAR.gemm_f32(x, w, m, n, k, &mut a);
            simd.gemm_f32(x, w, m, n, k, &mut b);
            let mut c = vec![2f32; m * n];
            simd.gemm_f32p(x, &simd.pack_f32(w, n, k), m, n, k, &mut c);
            for (idx, ((p, q), r)) in a.iter().zip(&b).zip(&c).enumerate() {
                // As for f16 weights: the same products in another order.
                let (i, j) = (idx / n, idx % n);
                let abs: f32 = (0..k).map(|t| (x[i * k + t] * w[j * k + t]).abs()).sum();
                let bound = SUM_ORDER_BOUND * k as f32 * f32::EPSILON * abs + f32::MIN_POSITIVE;
                prop_assert!((p - q).abs() <= bound, "{} [{}] {} vs {} ({}x{}x{})", simd.name, idx, p, q, m, n, k);
                prop_assert!((p - r).abs() <= bound, "{} packed [{}] {} vs {} ({}x{}x{})", simd.name, idx, p, r, m, n, k);
            }
            }
        }

        #[test]
        fn round_half_even_is_the_library_call(v in prop_oneof![-300f32..300.0, any::<f32>(), (-2000i32..2000).prop_map(|i| i as f32 * 0.5), (-9_000_000i32..9_000_000).prop_map(|i| i as f32 + 0.5)]) {
            let (a, b) = (round_half_even(v), v.round_ties_even());
            prop_assert!(a == b || (a.is_nan() && b.is_nan()), "{} -> {} vs {}", v, a, b);
        }

        #[test]
        fn quantize_is_its_definition(v in prop_oneof![-200f32..200.0, any::<f32>()], r in 0.01f32..100.0) {
            let want = if v.is_nan() { 0 } else { (v * r).round_ties_even().clamp(-127.0, 127.0) as i8 };
            prop_assert_eq!(quantize(v, r), want, "{} * {}", v, r);
        }

        #[test]
        fn quantize_row_matches_its_definition(x in prop::collection::vec(-100f32..100.0, 0..50)) {
            let mut q = vec![0i8; x.len()];
            let s = quantize_row(&x, &mut q);
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            prop_assert_eq!(s, amax.max(1e-12) * (1.0 / 127.0));
            let r = 1.0 / s;
            for (v, qi) in x.iter().zip(&q) {
                // The definition, ties to even included.
                prop_assert_eq!(*qi, (v * r).round_ties_even().clamp(-127.0, 127.0) as i8, "{} * {}", v, r);
            }
        }
    }

    #[test]
    fn scalar_twins_compute_the_definition() {
        let x = [1i8, -2, 3, -128, 127];
        let w = [-128i8, -128, -128, -128, -128, 1, 2, 1, 1, 1];
        let mut out = [0i32; 2];
        Kernels::SCALAR.gemm_i8(&x, &w, 1, 2, 5, &mut out);
        // -128 · (1 - 2 + 3 - 128 + 127) = -128; 1 - 4 + 3 - 128 + 127 = -1.
        assert_eq!(out, [-128, -1]);
        let xf = [0.5f32, -1.0, 2.0];
        let wf: Vec<f16> = [2.0f32, 1.0, 0.25]
            .iter()
            .map(|v| f16::from_f32(*v))
            .collect();
        let mut of = [0f32; 1];
        Kernels::SCALAR.gemm_f16w(&xf, &wf, 1, 1, 3, &mut of);
        assert_eq!(of, [0.5]);
    }

    /// Each path's peak loop runs the twin's chains in every lane: the same
    /// fused multiply-adds, so each lane equals a twin chain and the sums
    /// differ only by the order they are added in.
    #[test]
    fn peak_loops_compute_the_twins_chains() {
        let steps = 1000;
        let (twin, twin_macs) = Kernels::SCALAR.fma_peak(steps);
        assert_eq!(twin_macs, steps * scalar::PEAK_CHAINS);
        // Each chain is b·(1 − aˢ)/(1 − a) after s steps.
        let (a, b) = (1.0f64 - 1e-6, 1e-7f64);
        let chain = b * (1.0 - a.powi(steps as i32)) / (1.0 - a);
        let want = chain * scalar::PEAK_CHAINS as f64;
        assert!(
            (twin as f64 - want).abs() <= PEAK_SUM_TOLERANCE * want,
            "{twin} vs {want}"
        );
        for kern in Kernels::available() {
            let (sum, macs) = kern.fma_peak(steps);
            let lanes = macs / twin_macs;
            assert!(
                lanes >= 4 && macs == lanes * twin_macs,
                "{}: {macs}",
                kern.name
            );
            let want = twin * lanes as f32;
            assert!(
                (sum - want).abs() <= PEAK_SUM_TOLERANCE as f32 * want,
                "{}: {sum} vs {want}",
                kern.name
            );
        }
    }

    #[test]
    fn extreme_int8_values_do_not_saturate() {
        // k = 1024 of (-128)·(-128): 16,777,216, far past i16; every pairwise
        // sum of products past i16 too (the trap of maddubs-style kernels).
        // n = 5: one full 2 x 4 tile (the SIMD code) and a tail channel.
        let k = 1024;
        let x = vec![-128i8; 2 * k];
        let w = vec![-128i8; 5 * k];
        for kern in std::iter::once(Kernels::SCALAR).chain(Kernels::available()) {
            let mut out = vec![0i32; 10];
            kern.gemm_i8(&x, &kern.pack_i8(&w, 5, k), 2, 5, k, &mut out);
            assert!(
                out.iter().all(|&v| v == 128 * 128 * k as i32),
                "{}: {out:?}",
                kern.name
            );
        }
    }
}

#[cfg(test)]
mod deep_shapes {
    use super::*;

    /// Float products far deeper and taller than the property tests'
    /// shapes (up to 1,000 depths, 131 rows; a convolution's patches run to
    /// thousands), with tails, agree with the twins within the
    /// summation-order bound on the packed layouts.
    #[test]
    fn deep_float_products_match_the_twins() {
        let paths = super::tests::simd_paths();
        for (m, n, k) in [
            (131usize, 37usize, 601usize),
            (1, 17, 257),
            (129, 33, 256),
            (3, 5, 1000),
        ] {
            let mut r = 99u64;
            let mut next = || {
                r = r
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((r >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            };
            let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| f16::from_f32(next()).to_f32()).collect();
            let wh: Vec<f16> = w.iter().map(|v| f16::from_f32(*v)).collect();
            let mut want = vec![0f32; m * n];
            Kernels::SCALAR.gemm_f32(&x, &w, m, n, k, &mut want);
            for kern in &paths {
                let mut a = vec![7f32; m * n];
                kern.gemm_f32p(&x, &kern.pack_f32(&w, n, k), m, n, k, &mut a);
                let mut b = vec![7f32; m * n];
                kern.gemm_f16p(&x, &kern.pack_f16(&wh, n, k), m, n, k, &mut b);
                for (idx, ((p, q), v)) in a.iter().zip(&b).zip(&want).enumerate() {
                    let (i, j) = (idx / n, idx % n);
                    let abs: f32 = (0..k).map(|t| (x[i * k + t] * w[j * k + t]).abs()).sum();
                    let bound = super::tests::SUM_ORDER_BOUND * k as f32 * f32::EPSILON * abs
                        + f32::MIN_POSITIVE;
                    assert!(
                        (p - v).abs() <= bound,
                        "{} f32 {m}x{n}x{k} [{idx}] {p} vs {v}",
                        kern.name
                    );
                    assert!(
                        (q - v).abs() <= bound,
                        "{} f16 {m}x{n}x{k} [{idx}] {q} vs {v}",
                        kern.name
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod conv_shapes {
    use super::*;

    /// Convolution-sized products on patches packed per frame (CLIP's RN
    /// stem, bottleneck and late layers: depths not a multiple of 4, tens of
    /// thousands of pixels) are exact on every SIMD path.
    #[test]
    fn patches_packed_per_frame_multiply_exactly_at_convolution_sizes() {
        let paths = super::tests::simd_paths();
        for (m, n, k) in [
            (32usize, 12544usize, 27usize),
            (32, 100, 27),
            (8, 16, 27),
            (64usize, 3136usize, 576usize),
            (64, 3136, 64),
            (256, 196, 2304),
            (2048, 49, 512),
            (64, 12544, 147),
        ] {
            let mut r = 12345u64;
            let mut next = || {
                r = r
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((r >> 33) as u8 as i8).clamp(-127, 127)
            };
            let x: Vec<i8> = (0..m * k).map(|_| next()).collect();
            let src: Vec<i8> = (0..k * n).map(|_| next()).collect();
            let w: Vec<i8> = (0..n * k).map(|i| src[(i % k) * n + i / k]).collect();
            let mut want = vec![0i32; m * n];
            Kernels::SCALAR.gemm_i8(&x, &w, m, n, k, &mut want);
            for kern in &paths {
                let panels = n.div_ceil(16);
                let mut packed = vec![0i8; panels * kern.i8_panel_len(k)];
                kern.pack_i8_cols(&src, n, 0, n, k, &mut packed);
                let mut got = vec![0i32; m * n];
                kern.gemm_i8(&x, &packed, m, n, k, &mut got);
                let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                assert_eq!(bad, 0, "{} {m}x{n}x{k}", kern.name);
            }
        }
    }
}
