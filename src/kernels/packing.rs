//! How each kernel path lays out the weights it is given at load, apart
//! from the kernels that read them: plain code that runs on any machine, so
//! that a host can pack a native section for a board's path
//! ([`Packing::named`]) as the board itself does (each path's
//! [`super::Kernels`] packs its weights with these).

use half::f16;

use super::{float_panels, group_panels, rows, PackF16, PackF32, PackI8};

/// One kernel path's weight layouts.
#[derive(Clone, Copy)]
pub struct Packing {
    /// The kernel path's name ([`super::Kernels::name`]).
    pub name: &'static str,
    pub(super) pack_i8: PackI8,
    pub(super) pack_f16: PackF16,
    pub(super) pack_f32: PackF32,
}

impl std::fmt::Debug for Packing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

fn vnni_i8(w: &[i8], n: usize, k: usize) -> Vec<i8> {
    group_panels::pack::<4>(w, n, k, i8::MIN)
}

/// Signed groups of 4 depths: AVX2's `vpmaddwd` (widened) and `sdot`.
fn signed4_i8(w: &[i8], n: usize, k: usize) -> Vec<i8> {
    group_panels::pack::<4>(w, n, k, 0)
}

fn smmla_i8(w: &[i8], n: usize, k: usize) -> Vec<i8> {
    group_panels::pack::<8>(w, n, k, 0)
}

/// Weights in rows everywhere.
const fn plain(name: &'static str) -> Packing {
    Packing {
        name,
        pack_i8: rows,
        pack_f16: rows,
        pack_f32: rows,
    }
}

/// Float weights in [`float_panels`], int8 as `pack_i8` lays it out.
const fn float_panels(name: &'static str, pack_i8: PackI8) -> Packing {
    Packing {
        name,
        pack_i8,
        pack_f16: float_panels::pack::<f16>,
        pack_f32: float_panels::pack::<f32>,
    }
}

impl Packing {
    pub const SCALAR: Packing = plain("scalar");
    /// int8 and f32 weights in rows, f16 in [`float_panels`] (each widened
    /// once for several rows).
    pub const SSE41: Packing = Packing {
        name: "x86_64-sse41",
        pack_i8: rows,
        pack_f16: float_panels::pack::<f16>,
        pack_f32: rows,
    };
    /// int8 in [`group_panels`] of 4 depths, signed (widened to i16 for
    /// `vpmaddwd`); the AVX-512 path without VNNI runs AVX2's int8 kernels.
    pub const AVX2: Packing = float_panels("x86_64-avx2", signed4_i8);
    pub const AVX512: Packing = float_panels("x86_64-avx512", signed4_i8);
    /// int8 in [`group_panels`] of 4 depths, made unsigned for `vpdpbusd`
    /// (`w + 128`, the bit pattern `w ^ 0x80`; padding holds 128, a zero
    /// weight).
    pub const AVX512_VNNI: Packing = float_panels("x86_64-avx512-vnni", vnni_i8);
    /// The AVX-512 VNNI path's layouts, for AVX-VNNI's 256-bit `vpdpbusd`
    /// (a path of its own: CPUs with AVX-VNNI but no AVX-512 read no
    /// AVX-512 section).
    pub const AVX_VNNI: Packing = float_panels("x86_64-avx-vnni", vnni_i8);
    pub const AARCH64_NEON: Packing = plain("aarch64-neon");
    /// int8 in [`group_panels`] of 4 depths, signed (`sdot`).
    pub const AARCH64_DOTPROD: Packing = Packing {
        name: "aarch64-dotprod",
        pack_i8: signed4_i8,
        ..plain("")
    };
    /// int8 in [`group_panels`] of 8 depths, signed (`smmla`).
    pub const AARCH64_I8MM: Packing = Packing {
        name: "aarch64-i8mm",
        pack_i8: smmla_i8,
        ..plain("")
    };
    pub const ARMV7_NEON: Packing = plain("armv7-neon");

    /// Every kernel path of every architecture.
    pub const ALL: [Packing; 10] = [
        Self::SCALAR,
        Self::SSE41,
        Self::AVX2,
        Self::AVX_VNNI,
        Self::AVX512,
        Self::AVX512_VNNI,
        Self::AARCH64_NEON,
        Self::AARCH64_DOTPROD,
        Self::AARCH64_I8MM,
        Self::ARMV7_NEON,
    ];

    /// The path called `name`, on any machine.
    pub fn named(name: &str) -> Option<Packing> {
        Self::ALL.into_iter().find(|p| p.name == name)
    }

    /// Whether a 32-bit machine may run this path (armv7's, and the
    /// scalar twins, which armv7 without NEON runs).
    pub fn may_run_on_32_bit(&self) -> bool {
        self.name.starts_with("armv7") || self.name == Self::SCALAR.name
    }

    /// Every path's name, for errors and `--help`.
    pub fn names() -> String {
        Self::ALL.map(|p| p.name).join(", ")
    }

    /// `w` (`n × k`) in this path's layout for its int8 products.
    pub fn pack_i8(&self, w: &[i8], n: usize, k: usize) -> Vec<i8> {
        assert!(w.len() >= n * k);
        (self.pack_i8)(w, n, k)
    }

    /// `w` (`n × k`) in this path's layout for its f16-weight products.
    pub fn pack_f16(&self, w: &[f16], n: usize, k: usize) -> Vec<f16> {
        assert!(w.len() >= n * k);
        (self.pack_f16)(w, n, k)
    }

    /// `w` (`n × k`) in this path's layout for its packed f32 products.
    pub fn pack_f32(&self, w: &[f32], n: usize, k: usize) -> Vec<f32> {
        assert!(w.len() >= n * k);
        (self.pack_f32)(w, n, k)
    }

    /// Values [`Packing::pack_i8`] makes of an `n × k` matrix (to check
    /// packed weights read back from elsewhere before any kernel reads
    /// them); `None` past `usize`.
    pub fn packed_i8_len_of(&self, n: usize, k: usize) -> Option<usize> {
        super::layout_len(self.pack_i8(&[0], 1, 1).len(), n, k)
    }

    /// As [`Packing::packed_i8_len_of`], for [`Packing::pack_f16`].
    pub fn packed_f16_len_of(&self, n: usize, k: usize) -> Option<usize> {
        super::layout_len(self.pack_f16(&[f16::ZERO], 1, 1).len(), n, k)
    }

    /// As [`Packing::packed_i8_len_of`], for [`Packing::pack_f32`].
    pub fn packed_f32_len_of(&self, n: usize, k: usize) -> Option<usize> {
        super::layout_len(self.pack_f32(&[0.0], 1, 1).len(), n, k)
    }
}
