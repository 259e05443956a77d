//! Where a map points, in frame pixels: its peak (the centre of the map's highest cell), and
//! the Grad-CAM paper's localization box (the map thresholded at 15% of its maximum, the
//! bounding box of the largest 4-connected region), found on the map upsampled (bilinear,
//! half-pixel centres, as the overlay draws it) to a grid of at most 256 cells a side, then
//! scaled to the frame. The peak is taken on the map itself: upsampling replicates the edge
//! cells, so the upsampled maximum of an edge cell would sit on the frame's border.

use crate::frame::CamMap;
use crate::overlay::upsample;

/// The paper's threshold, as a fraction of the map's maximum.
pub const BOX_THRESHOLD: f32 = 0.15;
const GRID: usize = 256;

/// A box in frame pixels; `x1`, `y1` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Box {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    /// The centre of the map's highest cell, in frame pixels.
    pub peak: (u32, u32),
    /// None when the map is flat (nothing stands out).
    pub bbox: Option<Box>,
}

/// The centre of the map's highest cell, in frame pixels.
pub fn locate_peak(cam: &CamMap, width: u32, height: u32) -> (u32, u32) {
    let at = (0..cam.data.len()).fold(0, |a, i| if cam.data[i] > cam.data[a] { i } else { a });
    let centre = |cell: usize, cells: usize, limit: u32| {
        (((2 * cell + 1) as u64 * limit as u64 / (2 * cells) as u64) as u32).min(limit - 1)
    };
    (
        centre(at % cam.w, cam.w, width),
        centre(at / cam.w, cam.h, height),
    )
}

pub fn locate(cam: &CamMap, width: u32, height: u32) -> Located {
    let scale = (width.max(height) as usize).div_ceil(GRID).max(1);
    let (gw, gh) = (
        (width as usize).div_ceil(scale),
        (height as usize).div_ceil(scale),
    );
    let grid = upsample(cam, gw, gh);
    let (best, min) = grid
        .iter()
        .fold((f32::MIN, f32::MAX), |(hi, lo), &v| (hi.max(v), lo.min(v)));
    let peak = locate_peak(cam, width, height);
    let to_frame = |g: usize, limit: u32| ((g * scale) as u32).min(limit);
    if best - min <= 1e-6 {
        return Located { peak, bbox: None };
    }
    let mask: Vec<bool> = grid.iter().map(|&v| v >= BOX_THRESHOLD * best).collect();
    let (x0, y0, x1, y1) = largest_region(&mask, gw, gh);
    Located {
        peak,
        bbox: Some(Box {
            x0: to_frame(x0, width),
            y0: to_frame(y0, height),
            x1: to_frame(x1, width),
            y1: to_frame(y1, height),
        }),
    }
}

/// Bounding box (x0, y0, x1 exclusive, y1 exclusive) of the largest 4-connected set region.
fn largest_region(mask: &[bool], w: usize, h: usize) -> (usize, usize, usize, usize) {
    let mut seen = vec![false; mask.len()];
    let mut best = (0usize, (0, 0, 0, 0));
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut n, mut bb) = (0usize, (usize::MAX, usize::MAX, 0, 0));
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            n += 1;
            bb = (bb.0.min(x), bb.1.min(y), bb.2.max(x + 1), bb.3.max(y + 1));
            let mut visit = |j: usize| {
                if mask[j] && !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < w {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - w);
            }
            if y + 1 < h {
                visit(i + w);
            }
        }
        if n > best.0 {
            best = (n, bb);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(h: usize, w: usize, data: Vec<f32>) -> CamMap {
        CamMap { h, w, data }
    }

    #[test]
    fn the_largest_region_wins_and_the_peak_is_found() {
        // A 4x8 map: a big blob on the left (3x3), a small higher spike on the right.
        #[rustfmt::skip]
        let data = vec![
            0.9, 0.9, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0,
            0.9, 0.9, 0.9, 0.0, 0.0, 0.0, 1.0, 0.0,
            0.9, 0.9, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        ];
        // One frame pixel per map cell: no interpolation between cells.
        let l = locate(&map(4, 8, data), 8, 4);
        assert_eq!(l.peak, (6, 1));
        assert_eq!(
            l.bbox,
            Some(Box {
                x0: 0,
                y0: 0,
                x1: 3,
                y1: 3
            })
        );
    }

    #[test]
    fn boxes_scale_to_large_frames_and_flat_maps_have_none() {
        let mut data = vec![0.0; 16];
        data[5] = 1.0; // row 1, column 1 of a 4x4 map
        let l = locate(&map(4, 4, data), 1024, 512);
        let b = l.bbox.unwrap();
        assert!(b.x0 < 384 && b.x1 > 384 && b.x1 <= 1024, "{b:?}");
        assert!(b.y0 < 192 && b.y1 > 192 && b.y1 <= 512, "{b:?}");
        assert!((l.peak.0 as i32 - 384).abs() <= 8, "{:?}", l.peak);
        assert!((l.peak.1 as i32 - 192).abs() <= 8, "{:?}", l.peak);
        assert_eq!(locate(&map(2, 2, vec![0.0; 4]), 64, 64).bbox, None);
    }
}
