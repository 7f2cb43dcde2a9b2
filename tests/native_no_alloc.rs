//! The native engine's steady state allocates nothing: classify (the
//! `classify`, `eval` and `watch` loops) and the bench loop's stages, on
//! fp32, fp16 and int8 bundles, ViT and ResNet. One test in its own
//! process, so that no other test allocates while it counts.

mod common;

use clip_edge::alloc_count::{snapshot, Counting};
use clip_edge::decode::decode_file;
use clip_edge::engine::Engine;
use common::root;

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn native_frames_allocate_nothing() {
    let img = decode_file(&root().join("models/calibration/rgb_640x480.png")).unwrap();
    // One thread (every job run inline) and two (the pool's split) on every
    // bundle; under an emulator (`CLIP_TEST_RUNNER`: the ARM and SSE4.1
    // stages), where each load's lowering costs more than the frames, one
    // thread on the default int8 bundle only.
    let emulated = std::env::var_os("CLIP_TEST_RUNNER").is_some();
    for (b, both) in [
        ("models/default-int8", true),
        ("models/default-fp32", !emulated),
        ("tests/fixtures/bundles/vit_tiny_fp32", !emulated),
        ("tests/fixtures/bundles/vit_tiny_int8", !emulated),
        ("tests/fixtures/bundles/rn_tiny_fp16", !emulated),
    ] {
        for threads in if both { &[1, 2][..] } else { &[2] } {
            let threads = *threads;
            let mut e = Engine::load_on(
                &root().join(b),
                &Default::default(),
                clip_edge::engine::EngineKind::Native,
                threads,
            )
            .unwrap();
            let view = img.view();
            let k = 5.min(e.bundle.labels().len());
            e.classify(&view, k).unwrap();
            // The counter is the process's: another thread's allocation
            // (libtest's "running for over 60 seconds" under qemu) may land
            // in a window, so a second window is taken; an engine that
            // allocates per frame does so in both.
            let mut counted = (0, 0);
            for _window in 0..2 {
                let before = snapshot();
                for _ in 0..5 {
                    e.classify(&view, k).unwrap();
                    e.preprocess(&view).unwrap();
                    e.encode().unwrap();
                    e.score(k);
                }
                let after = snapshot();
                counted = (after.0 - before.0, after.1 - before.1);
                if counted == (0, 0) {
                    break;
                }
            }
            assert_eq!(
                counted,
                (0, 0),
                "{b}, {threads} thread(s): allocations and bytes over 5 frames"
            );
            assert_eq!(e.top().len(), k);
        }
    }
    // The counter sees allocations in this process: tract's executor makes
    // thousands per frame.
    let mut t = Engine::load_on(
        &root().join("models/default-int8"),
        &Default::default(),
        clip_edge::engine::EngineKind::Tract,
        1,
    )
    .unwrap();
    t.classify(&img.view(), 5).unwrap();
    let before = snapshot();
    t.classify(&img.view(), 5).unwrap();
    assert!(snapshot().0 - before.0 > 100);
}
