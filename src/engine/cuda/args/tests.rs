//! The kernels' argument structs against the CUDA source's layouts (NVRTC).

use super::*;
use crate::kernels::cuda::{compile_source, SOURCE};
use std::mem::size_of;

/// `static_assert`s that each argument struct of kernels.cu has the
/// size of its Rust twin here. NVRTC has no `offsetof`, so the order of
/// two fields of one width is not checked (a missing or extra field, or
/// a 4-byte field among 8-byte ones, is): the field orders were checked
/// one by one by reading.
fn layout_asserts() -> String {
    let mut s = String::new();
    macro_rules! check {
        ($($t:ident),+) => {
            $(s += &format!(
                "static_assert(sizeof({}) == {}, \"{} size\");\n",
                stringify!($t), size_of::<$t>(), stringify!($t)
            );)+
        };
    }
    s += &format!(
        "static_assert(sizeof(Posts) == {}, \"Posts size\");\n",
        size_of::<PostsArgs>()
    );
    s += &format!(
        "static_assert(sizeof(Dims) == {}, \"Dims size\");\n",
        size_of::<DimsArgs>()
    );
    check!(
        BinaryArgs,
        UnaryArgs,
        ReduceArgs,
        AxisArgs,
        CopyArgs,
        GatherArgs,
        ScatterArgs,
        Im2colArgs,
        ConvOutArgs,
        PoolArgs
    );
    s
}

/// Every argument struct has the size the kernels read: NVRTC compiles
/// the kernels with the Rust sizes asserted (no GPU needed). Fails
/// without libnvrtc (`.ci/run` installs it from PyPI).
#[test]
fn argument_structs_have_the_kernels_sizes() {
    let src = format!("{SOURCE}\n{}", layout_asserts());
    if let Err(e) = compile_source(&src, "sm_87") {
        panic!("{e}");
    }
}

/// The kernels' division by multiply-high, emulated: exact against `/`
/// for every index below 2^31, small and large divisors.
#[test]
fn multiply_high_division_is_exact() {
    let div = |n: u32, d: u32| {
        let (magic, shift) = divisor(d);
        let t = ((n as u64 * magic as u64) >> 32) as u32;
        (t + n) >> shift
    };
    let ds = [
        1u32,
        2,
        3,
        7,
        12,
        50,
        64,
        768,
        3072,
        65_535,
        1 << 20,
        999_983,
        (1 << 31) - 1,
    ];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for d in ds {
        for n in [0u32, 1, d - 1, d, d + 1, (1 << 31) - 1] {
            assert_eq!(div(n, d), n / d, "{n} / {d}");
        }
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = (x as u32) & 0x7fff_ffff;
            assert_eq!(div(n, d), n / d, "{n} / {d}");
        }
    }
}

/// The check itself fails on a wrong layout (and this test without
/// libnvrtc, which then cannot compile).
#[test]
fn a_wrong_layout_fails_to_compile() {
    let src = format!("{SOURCE}\nstatic_assert(sizeof(BinaryArgs) == 3, \"x\");\n");
    match compile_source(&src, "sm_87") {
        Err(GpuError::Compile { .. }) => {}
        Ok(_) => panic!("a wrong layout compiled"),
        Err(e) => panic!("{e}"),
    }
}

/// Each launch runs the kernel of its kind (the indices into `KERNELS`
/// are written by hand).
#[test]
fn each_launch_runs_its_own_kernel() {
    let g = (1, 1, 1);
    let launches = [
        (Launch::Binary(Default::default(), g), "ce_binary"),
        (Launch::Unary(Default::default(), g), "ce_unary"),
        (Launch::Reduce(Default::default(), g), "ce_reduce"),
        (Launch::Softmax(Default::default(), g), "ce_softmax"),
        (Launch::Norm(Default::default(), g), "ce_norm"),
        (Launch::Copy(Default::default(), g), "ce_copy"),
        (Launch::Gather(Default::default(), g), "ce_gather"),
        (Launch::Scatter(Default::default(), g), "ce_scatter"),
        (Launch::Im2col(Default::default(), g), "ce_im2col"),
        (Launch::ConvOut(Default::default(), g), "ce_conv_out"),
        (Launch::Pool(Default::default(), g), "ce_pool"),
    ];
    assert_eq!(launches.len(), KERNELS.len());
    for (l, name) in &launches {
        assert_eq!(KERNELS[l.kernel().unwrap().0], *name);
        assert!(l.grid_fits());
    }
    assert!(!Launch::Copy(Default::default(), (1, 65_536, 1)).grid_fits());
}
