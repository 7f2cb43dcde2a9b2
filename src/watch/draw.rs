//! Marks on pictures: an event's box and label, drawn on snapshots and on
//! the status page's frame.

use super::regions::Rect;

/// Draws `r` on an RGB image as a 3-pixel yellow outline (clipped).
pub fn draw_box(rgb: &mut [u8], width: u32, height: u32, r: Rect) {
    const COLOR: [u8; 3] = [255, 220, 0];
    const THICK: u32 = 3;
    let (w, h) = (width as usize, height as usize);
    let x1 = (r.x + r.w).min(width) as usize;
    let y1 = (r.y + r.h).min(height) as usize;
    let (x0, y0) = ((r.x as usize).min(w), (r.y as usize).min(h));
    let mut put = |x: usize, y: usize| {
        let i = 3 * (y * w + x);
        rgb[i..i + 3].copy_from_slice(&COLOR);
    };
    for y in y0..y1 {
        for x in x0..x1 {
            let edge = x < x0 + THICK as usize
                || x + THICK as usize >= x1
                || y < y0 + THICK as usize
                || y + THICK as usize >= y1;
            if edge {
                put(x, y);
            }
        }
    }
}

/// Scale of [`draw_label`]'s 8x8 glyphs.
const LABEL_SCALE: usize = 2;

/// Writes `text` (ASCII; anything else as `?`) in yellow on a dark band
/// just above `r` (inside its top when there is no room above; moved left
/// to stay in the frame), clipped to the `width x height` RGB image.
pub fn draw_label(rgb: &mut [u8], width: u32, height: u32, r: Rect, text: &str) {
    const INK: [u8; 3] = [255, 220, 0];
    const PAPER: [u8; 3] = [20, 20, 20];
    let (w, h) = (width as usize, height as usize);
    let glyph = 8 * LABEL_SCALE;
    let band = glyph + 2;
    let y0 = if r.y as usize >= band {
        r.y as usize - band
    } else {
        r.y as usize
    };
    let chars = text.chars().count();
    // Moved left so that the text stays in the frame.
    let x0 = (r.x as usize).min(w.saturating_sub(chars * glyph + 2));
    for y in y0..(y0 + band).min(h) {
        for x in x0..(x0 + chars * glyph + 2).min(w) {
            let i = 3 * (y * w + x);
            rgb[i..i + 3].copy_from_slice(&PAPER);
        }
    }
    for (k, c) in text.chars().enumerate() {
        let rows = font8x8::legacy::BASIC_LEGACY[if c.is_ascii() {
            c as usize
        } else {
            b'?' as usize
        }];
        for (gy, bits) in rows.iter().enumerate() {
            for gx in 0..8 {
                if bits >> gx & 1 == 0 {
                    continue;
                }
                for sy in 0..LABEL_SCALE {
                    for sx in 0..LABEL_SCALE {
                        let x = x0 + 1 + k * glyph + gx * LABEL_SCALE + sx;
                        let y = y0 + 1 + gy * LABEL_SCALE + sy;
                        if x < w && y < h {
                            let i = 3 * (y * w + x);
                            rgb[i..i + 3].copy_from_slice(&INK);
                        }
                    }
                }
            }
        }
    }
}
