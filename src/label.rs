//! The class label drawn on a frame: lines of text on a dark band in the top-left corner, in
//! an 8x8 bitmap font (font8x8) scaled with the frame, so it reads on any background and at
//! any size.

use font8x8::{UnicodeFonts, BASIC_FONTS};

/// Integer scale of the 8-pixel font for a frame this tall: 8 px per 240 rows, at least 1.
pub fn scale_for(height: usize) -> usize {
    (height / 240).max(1)
}

/// Draw `lines` onto an RGBx frame in place.
pub fn draw(pixels: &mut [u8], width: usize, height: usize, lines: &[String]) {
    assert_eq!(pixels.len(), width * height * 4, "frame is not RGBx");
    let s = scale_for(height);
    let (glyph, pad) = (8 * s, 2 * s);
    let max_chars = width.saturating_sub(2 * pad) / glyph;
    let lines: Vec<Vec<char>> = lines
        .iter()
        .map(|l| l.chars().take(max_chars).collect())
        .filter(|l: &Vec<char>| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return;
    }
    let longest = lines.iter().map(Vec::len).max().unwrap_or(0);
    let band_w = (longest * glyph + 2 * pad).min(width);
    let band_h = (lines.len() * (glyph + pad) + pad).min(height);
    // Darken the band to a third: white text on it reads over any picture.
    for y in 0..band_h {
        for px in pixels[y * width * 4..][..band_w * 4].chunks_exact_mut(4) {
            for c in &mut px[..3] {
                *c = (*c as u16 * 85 / 256) as u8;
            }
        }
    }
    for (row, line) in lines.iter().enumerate() {
        let top = pad + row * (glyph + pad);
        for (col, &ch) in line.iter().enumerate() {
            let bits = BASIC_FONTS
                .get(ch)
                .or_else(|| BASIC_FONTS.get('?'))
                .unwrap_or([0; 8]);
            let left = pad + col * glyph;
            for (gy, bits) in bits.iter().enumerate() {
                for gx in 0..8 {
                    if bits >> gx & 1 == 0 {
                        continue;
                    }
                    for dy in 0..s {
                        let y = top + gy * s + dy;
                        if y >= height {
                            continue;
                        }
                        for dx in 0..s {
                            let x = left + gx * s + dx;
                            if x < width {
                                pixels[(y * width + x) * 4..][..3]
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
        let mut px = vec![0u8; w * h * 4];
        draw(&mut px, w, h, &["a very long label that cannot fit".into()]);
        draw(&mut px, w, h, &[]);
    }
}
