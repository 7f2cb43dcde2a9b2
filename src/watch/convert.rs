//! Raw camera formats to RGB, into the caller's buffer: YUYV (4:2:2
//! packed) and NV12 (4:2:0, Y plane then interleaved UV), BT.601 limited
//! range as V4L2 webcams and the Raspberry Pi's ISP deliver them. Integer
//! arithmetic (the usual 8-bit fixed-point coefficients), no allocation.

/// One YCbCr sample to RGB (BT.601, limited range).
#[inline]
pub fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let c = 298 * (y as i32 - 16);
    let d = cb as i32 - 128;
    let e = cr as i32 - 128;
    let clip = |v: i32| ((v + 128) >> 8).clamp(0, 255) as u8;
    [
        clip(c + 409 * e),
        clip(c - 100 * d - 208 * e),
        clip(c + 516 * d),
    ]
}

/// Bytes of a `width x height` YUYV frame.
pub fn yuyv_len(width: usize, height: usize) -> usize {
    width.div_ceil(2) * 2 * height * 2
}

/// Bytes of a `width x height` NV12 frame.
pub fn nv12_len(width: usize, height: usize) -> usize {
    width * height + width.div_ceil(2) * 2 * height.div_ceil(2)
}

/// YUYV (Y0 U Y1 V per pixel pair, rows of `stride` bytes) to RGB.
/// Panics if the buffers are shorter than the frame (callers check sizes).
pub fn yuyv_to_rgb(src: &[u8], stride: usize, width: usize, height: usize, rgb: &mut [u8]) {
    assert!(
        stride >= width.div_ceil(2) * 4
            && src.len() >= stride * (height.max(1) - 1) + width.div_ceil(2) * 4
    );
    assert!(rgb.len() >= width * height * 3);
    for y in 0..height {
        let row = &src[y * stride..];
        let out = &mut rgb[y * width * 3..(y + 1) * width * 3];
        for x in 0..width {
            let pair = &row[(x / 2) * 4..(x / 2) * 4 + 4];
            let luma = pair[(x % 2) * 2];
            out[3 * x..3 * x + 3].copy_from_slice(&ycbcr_to_rgb(luma, pair[1], pair[3]));
        }
    }
}

/// NV12 (a Y plane of rows of `stride` bytes, then a UV plane at half
/// height with the same stride) to RGB.
pub fn nv12_to_rgb(src: &[u8], stride: usize, width: usize, height: usize, rgb: &mut [u8]) {
    let uv_rows = height.div_ceil(2);
    assert!(stride >= width.div_ceil(2) * 2 && src.len() >= stride * (height + uv_rows));
    assert!(rgb.len() >= width * height * 3);
    let (luma, chroma) = src.split_at(stride * height);
    for y in 0..height {
        let yrow = &luma[y * stride..];
        let uvrow = &chroma[(y / 2) * stride..];
        let out = &mut rgb[y * width * 3..(y + 1) * width * 3];
        for x in 0..width {
            let (u, v) = (uvrow[(x / 2) * 2], uvrow[(x / 2) * 2 + 1]);
            out[3 * x..3 * x + 3].copy_from_slice(&ycbcr_to_rgb(yrow[x], u, v));
        }
    }
}

/// RGB to YCbCr (BT.601, limited range): the inverse, for making test
/// captures from RGB frames.
pub fn rgb_to_ycbcr([r, g, b]: [u8; 3]) -> [u8; 3] {
    let (r, g, b) = (r as i32, g as i32, b as i32);
    let y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16;
    let u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128;
    let v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128;
    [
        y.clamp(0, 255) as u8,
        u.clamp(0, 255) as u8,
        v.clamp(0, 255) as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_and_greys() {
        assert_eq!(ycbcr_to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(ycbcr_to_rgb(235, 128, 128), [255, 255, 255]);
        assert_eq!(ycbcr_to_rgb(126, 128, 128), [128, 128, 128]);
        for c in [[255u8, 0, 0], [0, 255, 0], [0, 0, 255], [200, 120, 40]] {
            let back = {
                let [y, u, v] = rgb_to_ycbcr(c);
                ycbcr_to_rgb(y, u, v)
            };
            for k in 0..3 {
                assert!(
                    (back[k] as i32 - c[k] as i32).abs() <= 3,
                    "{c:?} -> {back:?}"
                );
            }
        }
    }

    #[test]
    fn layouts_pick_the_right_samples() {
        // 3x2 image (odd width): YUYV rows of 8 bytes, NV12 stride 4.
        let yuyv = [
            16, 128, 235, 128, 126, 128, 0, 128, //
            235, 128, 16, 128, 16, 128, 0, 128,
        ];
        let mut rgb = [0u8; 18];
        yuyv_to_rgb(&yuyv, 8, 3, 2, &mut rgb);
        assert_eq!(&rgb[..9], &[0, 0, 0, 255, 255, 255, 128, 128, 128]);
        assert_eq!(&rgb[9..], &[255, 255, 255, 0, 0, 0, 0, 0, 0]);
        let nv12 = [
            16, 235, 126, 0, //
            235, 16, 16, 0, //
            128, 128, 128, 128,
        ];
        let mut rgb2 = [0u8; 18];
        nv12_to_rgb(&nv12, 4, 3, 2, &mut rgb2);
        assert_eq!(rgb, rgb2);
        assert_eq!(yuyv_len(3, 2), 16);
        assert_eq!(nv12_len(3, 2), 6 + 4);
    }
}
