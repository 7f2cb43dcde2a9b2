//! AMX (Sapphire Rapids and later): int8 products on tiles, over the
//! weights exactly as [`Packing::AVX512_VNNI`](crate::kernels::Packing::AVX512_VNNI)
//! lays them out. A panel's group of four depths is 64 bytes (16 channels
//! × 4 depths), so 16 consecutive groups are the 16 rows of an AMX B tile
//! (64 depths × 16 channels, stride 64) with no repacking; an A tile is 16
//! rows of `x` by 64 depths read in place (stride `k`). `tdpbsud`
//! multiplies signed activations by the unsigned stored weights (`w + 128`)
//! into 16 × 16 i32 sums, exactly; the `128 · Σ_k x` bias comes off as
//! in the VNNI kernel. A micro-tile is up to 2 × 2 tiles (32 rows × 32
//! channels: four accumulator tiles, two of `x`, two of `w`). Rows past
//! the last whole 16 go through the VNNI kernel on the same panels while
//! they are in cache (the same sums, bit for bit); a depth tail past the
//! last whole 64 is copied into zero-padded tiles, and products of fewer
//! than 64 depths run on the VNNI kernel.
//!
//! The tile registers are per thread: each call configures them and
//! releases them before it returns. Linux gives a process the AMX state
//! only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`), made once by
//! [`has`]; without it this path is not offered.
//!
//! The instructions are separate `asm!` blocks (Rust's AMX intrinsics are
//! not stable, and `asm!` cannot name a tile register as an operand): the
//! configuration and the accumulators live in the tile registers from one
//! block to the next. That holds because no code but this module's uses
//! them (the compiler never allocates a tile register, and nothing here
//! calls out between `ldtilecfg` and `tilerelease` except to
//! [`avx512::panel_rows`], which uses none); every block's safety rests on
//! it.

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use crate::kernels::drive::holds;
use crate::kernels::group_panels;

use super::avx512;

/// Channels of one packed weight panel, the columns of an accumulator tile.
const PANEL: usize = group_panels::PANEL;
/// Rows of one tile.
const TILE_ROWS: usize = 16;
/// Bytes of one tile row: 64 depths of `x`, 16 depth groups of `w`.
const TILE_BYTES: usize = 64;
/// Rows whose sums (the unsigned weights' bias) are taken at once, on the
/// stack.
const SUM_ROWS: usize = 256;

/// Whether this CPU has AMX tiles with int8 products (and the AVX-512
/// VNNI the row sums and tail rows use), and this process may use them.
pub fn has() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        // SAFETY: CPUID leaf 7 exists on every x86_64 CPU this runs on
        // (AVX-512 VNNI is checked too); the instruction reads no memory.
        #[allow(unused_unsafe)]
        let leaf7 = unsafe { __cpuid_count(7, 0) };
        let tile = leaf7.edx >> 24 & 1 == 1;
        let int8 = leaf7.edx >> 25 & 1 == 1;
        tile && int8 && avx512::has_vnni() && permitted()
    })
}

/// Asks Linux for the AMX tile data state for this process (all its
/// threads); whether it was given.
#[cfg(target_os = "linux")]
fn permitted() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes which extended
    // states the kernel lets this process use; it reads no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    r == 0
}

#[cfg(not(target_os = "linux"))]
fn permitted() -> bool {
    false
}

/// The tile configuration (palette 1): tiles 0-3 accumulators (16 rows ×
/// 16 i32), 4-5 activations, 6-7 weights (16 rows × 64 bytes each).
#[repr(C, align(64))]
struct Config([u8; 64]);

impl Config {
    fn new() -> Config {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&(TILE_BYTES as u16).to_le_bytes());
            c[48 + t] = TILE_ROWS as u8;
        }
        Config(c)
    }
}

/// Only reached through [`super::detect`], which checked [`has`]. `w` is
/// [`Packing::AVX512_VNNI`](crate::kernels::Packing::AVX512_VNNI)'s int8
/// layout.
pub fn gemm_i8(x: &[i8], w: &[i8], m: usize, n: usize, k: usize, out: &mut [i32]) {
    let kg = k.div_ceil(4);
    assert!(
        has()
            && holds(w.len(), &[n.div_ceil(PANEL), kg, PANEL * 4])
            && holds(x.len(), &[m, k])
            && holds(out.len(), &[m, n])
    );
    // Below one whole tile of depth every step would go through the
    // zero-padded tail copies: the VNNI kernel is faster there (a
    // convolution's first layer, 27 depths).
    if m < TILE_ROWS || n == 0 || k < TILE_BYTES {
        avx512::gemm_i8(x, w, m, n, k, out);
    } else {
        // SAFETY: AMX and AVX-512 VNNI are present and this process may use
        // the tiles (`has`, asserted); `x` holds `m` rows of `k`, `w`
        // ⌈n/16⌉ panels of `kg` groups, `out` `m` rows of `n` (asserted).
        unsafe { rows(x, w, m, n, k, out) };
    }
}

/// Blocks of [`SUM_ROWS`] rows (their sums taken once), in each pairs of
/// panels outer (their weights stay in cache while the rows pass), pairs
/// of row tiles inner, the last rows (fewer than 16) by the VNNI kernel.
///
/// # Safety
/// AMX-TILE, AMX-INT8 and AVX-512 VNNI usable; the bounds [`gemm_i8`]
/// asserts, `m ≥ 16`, `n, k > 0`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn rows(x: &[i8], w: &[i8], m: usize, n: usize, k: usize, out: &mut [i32]) {
    let kg = k.div_ceil(4);
    let panel_bytes = kg * PANEL * 4;
    let config = Config::new();
    // SAFETY: a 64-byte configuration of palette 1 (valid rows and column
    // bytes for every tile used).
    unsafe { asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly)) };
    let mut tail = Tail::new();
    let mut sums = [0i32; SUM_ROWS];
    let whole = m / TILE_ROWS * TILE_ROWS;
    let mut r0 = 0;
    while r0 < whole {
        let r1 = (r0 + SUM_ROWS).min(whole);
        for (s, i) in sums.iter_mut().zip(r0..r1) {
            *s = 128 * avx512::row_sum(&x[i * k..(i + 1) * k]);
        }
        for (j, panels) in avx512::pairs(n) {
            let wp = &w[j / PANEL * panel_bytes..];
            // The first pass over a pair of panels fetches the next pair
            // ahead (the weights come from memory once a frame; the later
            // passes find this pair in cache).
            let ahead = if r0 == 0 && j + panels * PANEL < n {
                panels * panel_bytes
            } else {
                0
            };
            let mut i = r0;
            while i < r1 {
                let tiles = if r1 - i >= 2 * TILE_ROWS { 2 } else { 1 };
                let bias = &sums[i - r0..];
                let ahead = if i == r0 { ahead } else { 0 };
                // SAFETY: rows i..i + 16 · tiles ≤ m of `x`, panels
                // j / 16 .. + `panels` of `w`, the same rows and channels
                // j..min(j + 16 · panels, n) of `out`: all within the
                // bounds the caller asserts; the tiles are configured; it
                // only prefetches at `ahead`.
                unsafe {
                    match (tiles, panels) {
                        (2, 2) => tile::<2, 2>(x, wp, i, j, n, k, bias, &mut tail, out, ahead),
                        (2, _) => tile::<2, 1>(x, wp, i, j, n, k, bias, &mut tail, out, ahead),
                        (_, 2) => tile::<1, 2>(x, wp, i, j, n, k, bias, &mut tail, out, ahead),
                        _ => tile::<1, 1>(x, wp, i, j, n, k, bias, &mut tail, out, ahead),
                    }
                }
                i += tiles * TILE_ROWS;
            }
            if r1 == whole && whole < m {
                // SAFETY: VNNI is present; rows whole..m of `x` and `out`,
                // these panels of `w`: within the bounds the caller asserts.
                unsafe { avx512::panel_rows(x, wp, whole, m, panels, j, n, k, out) };
            }
        }
        r0 = r1;
    }
    // SAFETY: returns the tiles to their initial state (no operands).
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// The last, partial 64 depths of each tile, zero-padded: `x`'s (2 tiles)
/// and `w`'s (2 tiles). Depths past `k` hold a zero activation; groups past
/// the panel's hold bytes 0 (a weight of -128 in the `w + 128` storing),
/// met only by those zero activations, so they add nothing.
#[repr(C, align(64))]
struct Tail {
    x: [[u8; TILE_ROWS * TILE_BYTES]; 2],
    w: [[u8; TILE_ROWS * TILE_BYTES]; 2],
}

impl Tail {
    fn new() -> Tail {
        Tail {
            x: [[0; TILE_ROWS * TILE_BYTES]; 2],
            w: [[0; TILE_ROWS * TILE_BYTES]; 2],
        }
    }
}

/// One tile load: `TILE_ROWS` rows of 64 bytes at `p`, `stride` apart.
macro_rules! load {
    ($t:literal, $p:expr, $stride:expr) => {
        asm!(
            concat!("tileloadd tmm", $t, ", [{p} + {s} * 1]"),
            p = in(reg) $p,
            s = in(reg) $stride,
            options(nostack, readonly, preserves_flags)
        )
    };
}

/// `tmm$c += tmm$a (signed bytes) · tmm$b (unsigned bytes, 4 depths a
/// row)`.
macro_rules! dot {
    ($c:literal, $a:literal, $b:literal) => {
        asm!(
            concat!("tdpbsud tmm", $c, ", tmm", $a, ", tmm", $b),
            options(nostack, nomem, preserves_flags)
        )
    };
}

/// One 64-depth step of an `R × P` micro-tile: activation tiles from `a`
/// (row tile r at `a + r · a_next`, rows `a_stride` apart), weight tiles
/// from `b` (panel p at `b + p · b_next`, rows 64 bytes apart).
///
/// # Safety
/// Tiles configured; 16 rows of 64 bytes readable at each tile's address.
#[inline(always)]
unsafe fn step<const R: usize, const P: usize>(
    a: *const u8,
    a_stride: usize,
    a_next: usize,
    b: *const u8,
    b_next: usize,
) {
    // SAFETY: the caller's.
    unsafe {
        load!(4, a, a_stride);
        load!(6, b, TILE_BYTES);
        dot!(0, 4, 6);
        if P == 2 {
            load!(7, b.add(b_next), TILE_BYTES);
            dot!(1, 4, 7);
        }
        if R == 2 {
            load!(5, a.add(a_next), a_stride);
            dot!(2, 5, 6);
            if P == 2 {
                dot!(3, 5, 7);
            }
        }
    }
}

/// Rows `i..i + 16 · R` × channels `j..min(j + 16 · P, n)`: the sums of
/// every whole 64 depths in place, the tail's from [`Tail`], then each
/// accumulator tile through a 1 KiB buffer, less its rows' `bias`, into
/// `out`. With `ahead > 0`, each step also fetches the lines `ahead` bytes
/// past the weights it reads (the next panels) into the cache.
///
/// # Safety
/// Tiles configured; AVX-512 F; the bounds [`rows`] states.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize, const P: usize>(
    x: &[i8],
    wp: &[i8],
    i: usize,
    j: usize,
    n: usize,
    k: usize,
    bias: &[i32],
    tail: &mut Tail,
    out: &mut [i32],
    ahead: usize,
) {
    let kg = k.div_ceil(4);
    let panel_bytes = kg * PANEL * 4;
    let whole = k / TILE_BYTES;
    let chunk = TILE_ROWS * TILE_BYTES;
    let a0 = x.as_ptr().wrapping_add(i * k).cast::<u8>();
    let b0 = wp.as_ptr().cast::<u8>();
    // SAFETY: no operands.
    unsafe {
        asm!("tilezero tmm0", options(nostack, nomem, preserves_flags));
        asm!("tilezero tmm1", options(nostack, nomem, preserves_flags));
        asm!("tilezero tmm2", options(nostack, nomem, preserves_flags));
        asm!("tilezero tmm3", options(nostack, nomem, preserves_flags));
    }
    for c in 0..whole {
        if ahead > 0 {
            for p in 0..P {
                for line in 0..TILE_ROWS {
                    let at = p * panel_bytes + c * chunk + line * TILE_BYTES + ahead;
                    // A hint, never a read: the address need not be valid.
                    _mm_prefetch::<_MM_HINT_T0>(b0.wrapping_add(at).cast());
                }
            }
        }
        // SAFETY: rows i..i + 16R, depths 64c..64c + 64 ≤ k of `x`; groups
        // 16c..16c + 16 ≤ kg of panels 0..P of `wp`: within the bounds.
        unsafe {
            step::<R, P>(
                a0.add(c * TILE_BYTES),
                k,
                TILE_ROWS * k,
                b0.add(c * chunk),
                panel_bytes,
            )
        };
    }
    if whole * TILE_BYTES < k {
        let depths = k - whole * TILE_BYTES;
        let groups = kg - whole * TILE_ROWS;
        for r in 0..R {
            for row in 0..TILE_ROWS {
                let at = (i + r * TILE_ROWS + row) * k + whole * TILE_BYTES;
                let src = &x[at..at + depths];
                let dst = &mut tail.x[r][row * TILE_BYTES..row * TILE_BYTES + depths];
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = *s as u8;
                }
            }
        }
        for p in 0..P {
            let at = p * panel_bytes + whole * chunk;
            let src = &wp[at..at + groups * TILE_BYTES];
            for (d, s) in tail.w[p].iter_mut().zip(src) {
                *d = *s as u8;
            }
        }
        // SAFETY: the tail's tiles are 16 rows of 64 bytes each, one
        // after the other (`chunk` apart) in each array.
        unsafe {
            step::<R, P>(
                tail.x.as_ptr().cast::<u8>(),
                TILE_BYTES,
                chunk,
                tail.w.as_ptr().cast::<u8>(),
                chunk,
            )
        };
    }
    let mut sums = Sums([0; TILE_ROWS * PANEL]);
    for r in 0..R {
        for p in 0..P {
            // SAFETY: 16 rows of 64 bytes into `sums` (1 KiB).
            unsafe { store(r * 2 + p, &mut sums) };
            let j0 = j + p * PANEL;
            let mask = avx512::channel_mask(n, j0);
            for row in 0..TILE_ROWS {
                let ri = r * TILE_ROWS + row;
                // SAFETY: row `ri` of the buffer is 16 i32; row i + ri,
                // channels j0.. under `mask` lie within `out` (m × n).
                unsafe {
                    let v = _mm512_loadu_si512(sums.0.as_ptr().add(row * PANEL).cast());
                    let v = _mm512_sub_epi32(v, _mm512_set1_epi32(bias[ri]));
                    _mm512_mask_storeu_epi32(out.as_mut_ptr().add((i + ri) * n + j0), mask, v);
                }
            }
        }
    }
}

/// One accumulator tile's 16 × 16 sums.
#[repr(C, align(64))]
struct Sums([i32; TILE_ROWS * PANEL]);

/// Accumulator tile `t` (0-3) into `sums`.
///
/// # Safety
/// Tiles configured.
#[inline(always)]
unsafe fn store(t: usize, sums: &mut Sums) {
    let p = sums.0.as_mut_ptr();
    let s = TILE_BYTES;
    // SAFETY: 16 rows of 64 bytes, `s` apart, are the 1 KiB of `sums`.
    unsafe {
        match t {
            0 => {
                asm!("tilestored [{p} + {s} * 1], tmm0", p = in(reg) p, s = in(reg) s, options(nostack, preserves_flags))
            }
            1 => {
                asm!("tilestored [{p} + {s} * 1], tmm1", p = in(reg) p, s = in(reg) s, options(nostack, preserves_flags))
            }
            2 => {
                asm!("tilestored [{p} + {s} * 1], tmm2", p = in(reg) p, s = in(reg) s, options(nostack, preserves_flags))
            }
            _ => {
                asm!("tilestored [{p} + {s} * 1], tmm3", p = in(reg) p, s = in(reg) s, options(nostack, preserves_flags))
            }
        }
    }
}
