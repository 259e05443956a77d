//! Heatmap rendering: bilinear upsampling of a CAM onto a frame, the JET colormap and alpha
//! blending. Pure functions on byte slices; no GStreamer or tch types, no allocation per pixel.

use crate::frame::CamMap;

/// JET as in MATLAB and OpenCV's COLORMAP_JET: dark blue → cyan → yellow → dark red.
pub fn jet(v: f32) -> [u8; 3] {
    let v = v.clamp(0.0, 1.0);
    let ch = |offset: f32| ((1.5 - (4.0 * v - offset).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    [ch(3.0), ch(2.0), ch(1.0)]
}

/// Source sample positions for bilinear resizing `src` cells onto `dst` pixels with
/// half-pixel centres (align_corners = false, as torch and OpenCV): (lower index, weight of upper).
fn axis_taps(src: usize, dst: usize) -> Vec<(usize, f32)> {
    let scale = src as f32 / dst as f32;
    (0..dst)
        .map(|d| {
            let s = ((d as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (s.floor() as usize).min(src - 1);
            let frac = if i0 + 1 < src { s - i0 as f32 } else { 0.0 };
            (i0, frac)
        })
        .collect()
}

/// Upsample `cam` bilinearly to `width` x `height`, returning values in [0, 1] row-major.
pub fn upsample(cam: &CamMap, width: usize, height: usize) -> Vec<f32> {
    assert_eq!(
        cam.data.len(),
        cam.h * cam.w,
        "cam data does not match its shape"
    );
    let xs = axis_taps(cam.w, width);
    let ys = axis_taps(cam.h, height);
    let mut out = Vec::with_capacity(width * height);
    let mut row = vec![0f32; cam.w];
    for &(y0, fy) in &ys {
        let y1 = (y0 + 1).min(cam.h - 1);
        let (r0, r1) = (
            &cam.data[y0 * cam.w..][..cam.w],
            &cam.data[y1 * cam.w..][..cam.w],
        );
        for (r, (a, b)) in row.iter_mut().zip(r0.iter().zip(r1)) {
            *r = a + (b - a) * fy;
        }
        for &(x0, fx) in &xs {
            let x1 = (x0 + 1).min(cam.w - 1);
            out.push(row[x0] + (row[x1] - row[x0]) * fx);
        }
    }
    out
}

/// Blend the JET heatmap of `cam` over an RGBx frame in place: `(1 - alpha) * frame + alpha * jet`.
pub fn blend(
    pixels: &mut [u8],
    width: usize,
    height: usize,
    cam: &CamMap,
    alpha: f32,
    threshold: f32,
    lut: &[[u8; 3]; 256],
) {
    assert_eq!(
        pixels.len(),
        width * height * 4,
        "frame is not RGBx {width}x{height}"
    );
    assert_eq!(
        cam.data.len(),
        cam.h * cam.w,
        "cam data does not match its shape"
    );
    // Fixed point: weights out of 256 keep the inner loop in integers.
    let a = (alpha.clamp(0.0, 1.0) * 256.0).round() as u32;
    // Map values below the threshold leave the frame as it is.
    let below = (threshold.clamp(0.0, 1.0) * 255.0).round() as u8;
    let keep = 256 - a;
    // Interpolate every map row across the frame width once; each frame row is then a
    // vertical mix of two of these, a loop the compiler vectorizes.
    let xs = axis_taps(cam.w, width);
    let wide: Vec<f32> = cam
        .data
        .chunks_exact(cam.w)
        .flat_map(|r| {
            xs.iter().map(move |&(x0, fx)| {
                let x1 = (x0 + 1).min(cam.w - 1);
                r[x0] + (r[x1] - r[x0]) * fx
            })
        })
        .collect(); // [h, width]
    let mut idx = vec![0u8; width];
    for (y, &(y0, fy)) in axis_taps(cam.h, height).iter().enumerate() {
        let y1 = (y0 + 1).min(cam.h - 1);
        let (r0, r1) = (&wide[y0 * width..][..width], &wide[y1 * width..][..width]);
        for ((i, p), q) in idx.iter_mut().zip(r0).zip(r1) {
            *i = ((p + (q - p) * fy).clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
        }
        let line = &mut pixels[y * width * 4..][..width * 4];
        for (px, &i) in line.chunks_exact_mut(4).zip(&idx) {
            if i < below {
                continue;
            }
            let c = &lut[i as usize];
            for k in 0..3 {
                px[k] = ((px[k] as u32 * keep + c[k] as u32 * a + 128) >> 8) as u8;
            }
        }
    }
}

/// `cam` upsampled (as `upsample` does, onto a `width` x `height` frame) over the frame's
/// rectangle x0..x1, y0..y1 only: row-major, (x1 - x0) · (y1 - y0) values.
pub fn upsample_region(
    cam: &CamMap,
    width: usize,
    height: usize,
    (x0, y0, x1, y1): (usize, usize, usize, usize),
) -> Vec<f32> {
    let xs = &axis_taps(cam.w, width)[x0..x1];
    let ys = &axis_taps(cam.h, height)[y0..y1];
    let mut out = Vec::with_capacity(xs.len() * ys.len());
    for &(r0, fy) in ys {
        let r1 = (r0 + 1).min(cam.h - 1);
        let (a, b) = (
            &cam.data[r0 * cam.w..][..cam.w],
            &cam.data[r1 * cam.w..][..cam.w],
        );
        // Vertical first, then across, as `upsample` does: the same values to the bit.
        let at = |c: usize| a[c] + (b[c] - a[c]) * fy;
        for &(c0, fx) in xs {
            let c1 = (c0 + 1).min(cam.w - 1);
            let (l, r) = (at(c0), at(c1));
            out.push(l + (r - l) * fx);
        }
    }
    out
}

/// Blend the colormap of per-pixel map values (`values`, one per pixel, row-major; a negative
/// value leaves its pixel as it is) over an RGBx frame in place, as `blend` does.
pub fn blend_values(
    pixels: &mut [u8],
    values: &[f32],
    alpha: f32,
    threshold: f32,
    lut: &[[u8; 3]; 256],
) {
    assert_eq!(pixels.len(), values.len() * 4, "one value a pixel");
    let a = (alpha.clamp(0.0, 1.0) * 256.0).round() as u32;
    let below = (threshold.clamp(0.0, 1.0) * 255.0).round() as u8;
    let keep = 256 - a;
    for (px, &v) in pixels.chunks_exact_mut(4).zip(values) {
        if v < 0.0 {
            continue;
        }
        let i = (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
        if i < below {
            continue;
        }
        let c = &lut[i as usize];
        for k in 0..3 {
            px[k] = ((px[k] as u32 * keep + c[k] as u32 * a + 128) >> 8) as u8;
        }
    }
}

/// Draw the outline of a box (x1, y1 exclusive) on an RGBx frame, `thickness` pixels wide.
pub fn rectangle(
    pixels: &mut [u8],
    width: usize,
    height: usize,
    (x0, y0, x1, y1): (usize, usize, usize, usize),
    thickness: usize,
    color: [u8; 3],
) {
    let (x1, y1) = (x1.min(width), y1.min(height));
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    let t = thickness.max(1);
    for y in y0..y1 {
        for x in x0..x1 {
            let edge = x < x0 + t || x + t >= x1 || y < y0 + t || y + t >= y1;
            if edge {
                pixels[(y * width + x) * 4..][..3].copy_from_slice(&color);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_endpoints_and_middle() {
        assert_eq!(jet(0.0), [0, 0, 128]);
        assert_eq!(jet(0.5), [128, 255, 128]);
        assert_eq!(jet(1.0), [128, 0, 0]);
        assert_eq!(jet(0.25), [0, 128, 255]);
        assert_eq!(jet(0.75), [255, 128, 0]);
        assert_eq!(jet(-3.0), jet(0.0));
    }

    #[test]
    fn upsample_matches_half_pixel_bilinear() {
        // 1x2 map [0, 1] onto 4 columns: source x = (d + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25
        // → clamped 0, 0.25, 0.75, 1 (the edges replicate).
        let cam = CamMap {
            h: 1,
            w: 2,
            data: vec![0.0, 1.0],
        };
        assert_eq!(upsample(&cam, 4, 1), vec![0.0, 0.25, 0.75, 1.0]);
        // 2x2 → 2x2 is the identity.
        let cam = CamMap {
            h: 2,
            w: 2,
            data: vec![0.1, 0.2, 0.3, 0.4],
        };
        assert_eq!(upsample(&cam, 2, 2), cam.data);
        // Rows interpolate the same way as columns.
        let cam = CamMap {
            h: 2,
            w: 1,
            data: vec![0.0, 1.0],
        };
        assert_eq!(upsample(&cam, 1, 4), vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn blend_mixes_frame_and_colormap() {
        let lut = crate::colormap::Colormap::Jet.lut();
        let cam = CamMap {
            h: 1,
            w: 2,
            data: vec![0.0, 1.0],
        };
        // Two pixels: grey 100 under a cold (0) and a hot (1) map.
        let mut px = vec![100, 100, 100, 255, 100, 100, 100, 255];
        blend(&mut px, 2, 1, &cam, 0.5, 0.0, &lut);
        // 0.5 * 100 + 0.5 * jet: jet(0) = (0, 0, 128), jet(1) = (128, 0, 0).
        assert_eq!(px, vec![50, 50, 114, 255, 114, 50, 50, 255]);
        // alpha 0 leaves the frame alone, alpha 1 shows only the map.
        let mut px = vec![7, 8, 9, 0];
        let one = CamMap {
            h: 1,
            w: 1,
            data: vec![1.0],
        };
        blend(&mut px, 1, 1, &one, 0.0, 0.0, &lut);
        assert_eq!(px, vec![7, 8, 9, 0]);
        blend(&mut px, 1, 1, &one, 1.0, 0.0, &lut);
        assert_eq!(px, vec![128, 0, 0, 0]);
    }

    #[test]
    fn a_region_is_the_same_part_of_the_whole_upsampled_map() {
        let cam = CamMap {
            h: 2,
            w: 3,
            data: vec![0.0, 0.5, 1.0, 1.0, 0.25, 0.0],
        };
        let (w, h) = (9, 6);
        let whole = upsample(&cam, w, h);
        let part = upsample_region(&cam, w, h, (2, 1, 7, 5));
        let want: Vec<f32> = (1..5)
            .flat_map(|y| (2..7).map(move |x| (x, y)))
            .map(|(x, y)| whole[y * w + x])
            .collect();
        assert_eq!(part, want);
    }

    #[test]
    fn value_blend_skips_negative_values_and_matches_the_map_blend() {
        let lut = crate::colormap::Colormap::Jet.lut();
        let cam = CamMap {
            h: 1,
            w: 2,
            data: vec![0.2, 0.9],
        };
        let (w, h) = (4, 2);
        let mut by_map = vec![90u8; w * h * 4];
        blend(&mut by_map, w, h, &cam, 0.5, 0.0, &lut);
        let mut by_values = vec![90u8; w * h * 4];
        blend_values(&mut by_values, &upsample(&cam, w, h), 0.5, 0.0, &lut);
        assert_eq!(by_map, by_values);
        let mut skipped = vec![90u8; 4];
        blend_values(&mut skipped, &[-1.0], 0.5, 0.0, &lut);
        assert_eq!(skipped, vec![90u8; 4]);
    }

    #[test]
    fn blend_agrees_with_upsample() {
        let lut = crate::colormap::Colormap::Jet.lut();
        let cam = CamMap {
            h: 2,
            w: 3,
            data: vec![0.0, 0.5, 1.0, 0.2, 0.9, 0.4],
        };
        let (w, h) = (13, 7);
        let mut px = vec![0u8; w * h * 4];
        blend(&mut px, w, h, &cam, 1.0, 0.0, &lut);
        let up = upsample(&cam, w, h);
        for (p, v) in px.chunks_exact(4).zip(up) {
            assert_eq!(&p[..3], &lut[(v * 255.0 + 0.5) as usize][..]);
        }
    }
}
