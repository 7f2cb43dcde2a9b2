//! The CPU engine against the schedule's rewrites.

use super::{pack, FloatWeights, Native};
use crate::bundle::Trust;
use crate::engine::schedule::fold::fold_copies;
use crate::engine::schedule::lower;
use crate::kernels::Kernels;

/// Folding changes no bit of the CPU engine's output (the products read
/// the same values through the composed tables), and folds the ViT's
/// head splits and merges.
#[test]
fn folded_copies_change_no_bit() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (b, min_folded) in [
        ("tests/fixtures/bundles/vit_tiny_int8", 4),
        ("tests/fixtures/bundles/vit_tiny_fp32", 4),
        ("tests/fixtures/bundles/rn_tiny_fp16", 0),
        ("models/default-int8", 0),
    ] {
        let o = crate::engine::open_encoder(&root.join(b), &Trust::default()).unwrap();
        let k = Kernels::detect();
        let lowered = || lower::lower(&o.model, FloatWeights::F16WhereExact).unwrap();
        let (mut plain, mut folded) = (lowered(), lowered());
        let count = fold_copies(&mut folded);
        pack::pack(&mut plain, &k.packing(), FloatWeights::F16WhereExact, false);
        pack::pack(
            &mut folded,
            &k.packing(),
            FloatWeights::F16WhereExact,
            false,
        );
        assert!(count >= min_folded, "{b}: {count} folded");
        assert_eq!(plain.steps.len() - folded.steps.len(), count, "{b}");
        let (mut a, mut f) = (
            Native::from_lowered(plain, k, 1).unwrap(),
            Native::from_lowered(folded, k, 1).unwrap(),
        );
        let mut x = 0x9e37_79b9u32;
        let input: Vec<f32> = (0..a.input_len())
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as f32 / u32::MAX as f32) * 4.0 - 2.0
            })
            .collect();
        let (mut ya, mut yf) = (vec![0f32; a.output_len()], vec![0f32; f.output_len()]);
        a.run(&input, &mut ya);
        f.run(&input, &mut yf);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&ya), bits(&yf), "{b}: {count} copies folded");
    }
}
