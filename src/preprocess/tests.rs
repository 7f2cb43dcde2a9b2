//! The preprocessor against its plain twin and the reference's rules.

use super::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The windowed resize equals the plain full resize + crop, for odd
    /// sizes, both pass orders, up- and downscaling.
    #[test]
    fn windowed_resize_matches_plain_twin(
        w in 1usize..90, h in 1usize..90, n in 1u32..40, ch in prop::sample::select(vec![1usize, 2, 3, 4]),
        filter in prop::sample::select(vec![Filter::Bicubic, Filter::Bilinear]), seed in any::<u64>()
    ) {
        let mut state = seed | 1;
        let data: Vec<u8> = (0..w * h * ch).map(|_| { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state as u8 }).collect();
        let want = plain::resize_crop(filter, &data, w, h, ch, n);
        for level in crate::kernels::elementwise::tests::levels() {
            if ch == 1 || ch == 3 {
                let mode = if ch == 1 { Mode::L } else { Mode::Rgb };
                let img = ImageView::new(w as u32, h as u32, mode, &data);
                let got = Preprocessor::with_level(level).with_resize(Resize { filter, fit: Fit::Crop }).resize_crop_u8(&img, n).unwrap().to_vec();
                prop_assert_eq!(&got, &want, "{:?}", level);
                // Squashed: the whole image resized to n × n.
                let squash = Resize { filter, fit: Fit::Squash };
                let got = Preprocessor::with_level(level).with_resize(squash).resize_crop_u8(&img, n).unwrap().to_vec();
                let full = plain::resize(filter, &data, w, h, ch, n as usize, n as usize);
                prop_assert_eq!(&got, &full, "squash {:?}", level);
            } else {
                // Two and four channels (LA, RGBA: premultiplied around
                // this resampler), the resampler alone.
                let (rw, rh) = resized_size(w as u32, h as u32, n);
                let crop = n.min(rw).min(rh);
                let (x0, y0) = (center_crop_offset(rw, crop), center_crop_offset(rh, crop));
                let mut p = Preprocessor::with_level(level).with_resize(Resize { filter, fit: Fit::Crop });
                p.resample(&data, w, h, ch, rw as usize, rh as usize, x0 as usize, y0 as usize, crop as usize, crop as usize, None);
                prop_assert_eq!(&p.out8, &want, "{:?}", level);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Rows split over a pool's threads give the bytes one thread
    /// gives, in both pass orders, every channel count.
    #[test]
    fn rows_over_threads_match_one_thread(
        w in 1usize..120, h in 1usize..120, n in 1u32..48, ch in prop::sample::select(vec![1usize, 2, 3, 4]),
        threads in 2usize..5, seed in any::<u64>()
    ) {
        let mut state = seed | 1;
        let data: Vec<u8> = (0..w * h * ch).map(|_| { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state as u8 }).collect();
        let mode = [Mode::L, Mode::La, Mode::Rgb, Mode::Rgba][ch - 1];
        let img = ImageView::new(w as u32, h as u32, mode, &data);
        let one = Preprocessor::new().resize_crop_u8(&img, n).unwrap().to_vec();
        let pool = Pool::new(threads);
        let mut p = Preprocessor::new();
        p.parallel_from = 0;
        let many = p.resize_crop_u8_on(&img, n, Some(&pool)).unwrap().to_vec();
        prop_assert_eq!(one, many);
    }
}

#[test]
fn preprocessor_reuses_its_buffers() {
    let data = vec![7u8; 120 * 90 * 3];
    let img = ImageView::new(120, 90, Mode::Rgb, &data);
    let mut p = Preprocessor::new();
    let mut out = vec![0f32; Preprocessor::output_len(32)];
    p.run(&img, 32, CLIP_MEAN, CLIP_STD, &mut out).unwrap();
    let caps = (
        p.tmp.capacity(),
        p.out8.capacity(),
        p.horiz.k.capacity(),
        p.vert.k.capacity(),
    );
    let rows = |p: &Preprocessor| {
        let s = p.scratch[0].lock().unwrap();
        (s.acc.as_ptr(), s.row.as_ptr(), s.acc.len(), s.row.len())
    };
    let ptrs = (p.tmp.as_ptr(), p.out8.as_ptr(), rows(&p));
    assert!(rows(&p).2 > 0 && rows(&p).3 > 0);
    for _ in 0..3 {
        p.run(&img, 32, CLIP_MEAN, CLIP_STD, &mut out).unwrap();
    }
    assert_eq!(
        caps,
        (
            p.tmp.capacity(),
            p.out8.capacity(),
            p.horiz.k.capacity(),
            p.vert.k.capacity()
        )
    );
    assert_eq!(ptrs, (p.tmp.as_ptr(), p.out8.as_ptr(), rows(&p)));
}

#[test]
fn extreme_aspect_ratios_are_refused_not_walked() {
    // 1-bit, 50 million by 1: a few KB as PNG, within the pixel limit.
    let data = vec![255u8; 50_000_000];
    let img = ImageView::new(50_000_000, 1, Mode::Bilevel, &data);
    let mut out = vec![0f32; Preprocessor::output_len(224)];
    let e = Preprocessor::new()
        .run(&img, 224, CLIP_MEAN, CLIP_STD, &mut out)
        .unwrap_err();
    assert!(matches!(e, PreprocessError::ExtremeAspect { .. }), "{e}");
}

#[test]
fn resized_size_matches_torchvision() {
    assert_eq!(resized_size(640, 480, 224), (298, 224));
    assert_eq!(resized_size(480, 640, 224), (224, 298));
    assert_eq!(resized_size(224, 224, 224), (224, 224));
    assert_eq!(resized_size(3, 1000, 224), (224, 74666));
}

#[test]
fn crop_offset_rounds_half_to_even() {
    // (225-224)/2 = 0.5 -> 0; (227-224)/2 = 1.5 -> 2; (229-224)/2=2.5 -> 2
    assert_eq!(center_crop_offset(225, 224), 0);
    assert_eq!(center_crop_offset(227, 224), 2);
    assert_eq!(center_crop_offset(229, 224), 2);
    assert_eq!(center_crop_offset(298, 224), 37);
}

#[test]
fn constant_image_stays_constant() {
    let data = vec![200u8; 37 * 53 * 3];
    let img = ImageView::new(37, 53, Mode::Rgb, &data);
    let mut p = Preprocessor::new();
    let out = p.resize_crop_u8(&img, 16).unwrap();
    assert!(out.iter().all(|&v| v == 200));
}

#[test]
fn bad_buffer_is_an_error() {
    let data = vec![0u8; 10];
    let img = ImageView::new(4, 4, Mode::Rgb, &data);
    let mut out = vec![0f32; Preprocessor::output_len(8)];
    let err = Preprocessor::new()
        .run(&img, 8, CLIP_MEAN, CLIP_STD, &mut out)
        .unwrap_err();
    assert!(matches!(err, PreprocessError::BadBuffer { .. }));
}
