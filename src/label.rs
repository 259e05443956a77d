//! The class label drawn on a frame: lines of text on a dark band in the top-left corner, in
//! an 8x8 bitmap font (font8x8) scaled with the frame, so it reads on any background and at
//! any size.

use font8x8::{UnicodeFonts, BASIC_FONTS};

/// Integer scale of the 8-pixel font for a frame this tall: 8 px per 240 rows, at least 1.
pub fn scale_for(height: usize) -> usize {
    (height / 240).max(1)
}

/// Draw `lines` onto an RGBx frame in place, in the top-left corner.
pub fn draw(pixels: &mut [u8], width: usize, height: usize, lines: &[String]) {
    draw_at(pixels, width, height, (0, 0), lines);
}

/// The band `lines` take, (width, height) in pixels, cut to a frame `width` wide.
pub fn band_size(width: usize, height: usize, lines: &[String]) -> (usize, usize) {
    let s = scale_for(height);
    let (glyph, pad) = (8 * s, 2 * s);
    let max_chars = width.saturating_sub(2 * pad) / glyph;
    let longest = lines
        .iter()
        .map(|l| l.chars().count().min(max_chars))
        .max()
        .unwrap_or(0);
    if longest == 0 {
        return (0, 0);
    }
    (
        (longest * glyph + 2 * pad).min(width),
        lines.len() * (glyph + pad) + pad,
    )
}

/// Draw `lines` onto an RGBx frame in place, the band's top-left corner at `(x, y)` (moved
/// left where the band would leave the frame), cut to the frame.
pub fn draw_at(
    pixels: &mut [u8],
    width: usize,
    height: usize,
    (x, y): (usize, usize),
    lines: &[String],
) {
    assert_eq!(pixels.len(), width * height * 4, "frame is not RGBx");
    let s = scale_for(height);
    let (glyph, pad) = (8 * s, 2 * s);
    let max_chars = width.saturating_sub(2 * pad) / glyph;
    let lines: Vec<Vec<char>> = lines
        .iter()
        .map(|l| l.chars().take(max_chars).collect())
        .filter(|l: &Vec<char>| !l.is_empty())
        .collect();
    if lines.is_empty() || y >= height {
        return;
    }
    let longest = lines.iter().map(Vec::len).max().unwrap_or(0);
    let band_w = (longest * glyph + 2 * pad).min(width);
    let x = x.min(width - band_w);
    let band_h = (lines.len() * (glyph + pad) + pad).min(height - y);
    // Darken the band to a third: white text on it reads over any picture.
    for row in y..y + band_h {
        for px in pixels[(row * width + x) * 4..][..band_w * 4].chunks_exact_mut(4) {
            for c in &mut px[..3] {
                *c = (*c as u16 * 85 / 256) as u8;
            }
        }
    }
    for (row, line) in lines.iter().enumerate() {
        let top = y + pad + row * (glyph + pad);
        for (col, &ch) in line.iter().enumerate() {
            let bits = BASIC_FONTS
                .get(ch)
                .or_else(|| BASIC_FONTS.get('?'))
                .unwrap_or([0; 8]);
            let left = x + pad + col * glyph;
            for (gy, bits) in bits.iter().enumerate() {
                for gx in 0..8 {
                    if bits >> gx & 1 == 0 {
                        continue;
                    }
                    for dy in 0..s {
                        let yy = top + gy * s + dy;
                        if yy >= height {
                            continue;
                        }
                        for dx in 0..s {
                            let xx = left + gx * s + dx;
                            if xx < width {
                                pixels[(yy * width + xx) * 4..][..3]
                                    .copy_from_slice(&[255, 255, 255]);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_white_on_a_darkened_band_and_scales() {
        let (w, h) = (64, 32);
        let mut px = vec![200u8; w * h * 4];
        draw(&mut px, w, h, &["I".into()]);
        let at = |x: usize, y: usize| &px[(y * w + x) * 4..][..3];
        // Inside the band some pixels are the white glyph, the rest darkened; outside untouched.
        let band: Vec<&[u8]> = (0..12)
            .flat_map(|y| (0..12).map(move |x| (x, y)))
            .map(|(x, y)| at(x, y))
            .collect();
        assert!(band.iter().any(|p| p == &[255, 255, 255]));
        assert!(band.iter().any(|p| p == &[66, 66, 66]));
        assert_eq!(at(40, 20), &[200, 200, 200]);
        assert_eq!(scale_for(720), 3);
        assert_eq!(scale_for(100), 1);
    }

    #[test]
    fn long_lines_are_cut_to_the_frame() {
        let (w, h) = (40, 20);
        let mut px = vec![100u8; w * h * 4];
        draw(&mut px, w, h, &["a very long label that cannot fit".into()]);
        // 40 px hold 4 glyphs of 8 between 2 px margins: the band spans the whole width.
        assert_eq!(band_size(w, h, &["a very long label".into()]), (36, 12));
        assert_ne!(&px[(5 * w + 35) * 4..][..3], &[100, 100, 100]);
        assert_eq!(&px[(5 * w + 37) * 4..][..3], &[100, 100, 100]);
        let before = px.clone();
        draw(&mut px, w, h, &[]);
        assert_eq!(px, before);
    }

    #[test]
    fn a_band_near_the_right_edge_moves_left_and_one_below_the_frame_is_not_drawn() {
        let (w, h) = (64, 32);
        let mut px = vec![200u8; w * h * 4];
        draw_at(&mut px, w, h, (60, 20), &["ab".into()]);
        // The band (2 glyphs + margins = 20 px) ends at the frame's right edge.
        assert_eq!(&px[(21 * w + 63) * 4..][..3], &[66, 66, 66]);
        assert_eq!(&px[(21 * w + 43) * 4..][..3], &[200, 200, 200]);
        let before = px.clone();
        draw_at(&mut px, w, h, (0, 40), &["ab".into()]);
        assert_eq!(px, before);
    }
}
