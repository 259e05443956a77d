//! A detector's frame drawn: each box's own map (inside its box, or over the whole frame), its
//! outline and its label (`face 0.93 #3`: class, probability, track). Where boxes overlap the
//! better box's map is on top; over the whole frame each pixel shows the most any box's map
//! reaches there. Pure functions on byte slices; no GStreamer or tch types.

use crate::frame::Detection;
use crate::overlay;
use crate::settings::named::BoxMaps;

/// Outline colours, one a track (the id picks), bright on any picture.
const PALETTE: [[u8; 3]; 8] = [
    [255, 255, 255],
    [0, 255, 0],
    [255, 0, 255],
    [0, 255, 255],
    [255, 255, 0],
    [255, 128, 0],
    [128, 128, 255],
    [255, 64, 64],
];

/// How a detector's frames are drawn.
pub struct Style<'a> {
    pub maps: BoxMaps,
    pub alpha: f32,
    pub threshold: f32,
    pub lut: &'a [[u8; 3]; 256],
    /// Draw each box's label.
    pub label: bool,
    pub heatmaps: bool,
}

/// A box in whole pixels, x1 and y1 exclusive, inside a `width` x `height` frame.
pub fn pixels_of(b: &[f32; 4], width: usize, height: usize) -> (usize, usize, usize, usize) {
    let px = |v: f32, max: usize| (v.max(0.0).round() as usize).min(max);
    (
        px(b[0], width),
        px(b[1], height),
        px(b[2], width),
        px(b[3], height),
    )
}

/// `face 0.93 #3`.
pub fn label(d: &Detection, class: &str) -> String {
    format!("{class} {:.2} #{}", d.score, d.track)
}

/// Draw `boxes` (best first) on an RGBx frame in place; `name` gives a class's name.
pub fn draw(
    pixels: &mut [u8],
    width: usize,
    height: usize,
    boxes: &[Detection],
    style: &Style,
    name: impl Fn(i64) -> String,
) {
    if boxes.is_empty() {
        return;
    }
    if style.heatmaps {
        let values = canvas(width, height, boxes, style.maps);
        overlay::blend_values(pixels, &values, style.alpha, style.threshold, style.lut);
    }
    let thick = crate::label::scale_for(height) * 2;
    // Worst first, so the best box's outline and label are on top.
    for d in boxes.iter().rev() {
        let r = pixels_of(&d.bbox, width, height);
        let color = PALETTE[(d.track as usize) % PALETTE.len()];
        overlay::rectangle(pixels, width, height, r, thick, color);
        if style.label {
            let text = [label(d, &name(d.class))];
            let (_, band_h) = crate::label::band_size(width, height, &text);
            // Above the box where there is room, else inside its top.
            let y = if r.1 >= band_h { r.1 - band_h } else { r.1 };
            crate::label::draw_at(pixels, width, height, (r.0, y), &text);
        }
    }
}

/// The map value at each pixel (negative where no box's map is drawn).
fn canvas(width: usize, height: usize, boxes: &[Detection], maps: BoxMaps) -> Vec<f32> {
    let mut values = vec![-1.0f32; width * height];
    match maps {
        BoxMaps::Full => {
            for d in boxes {
                for (v, m) in values
                    .iter_mut()
                    .zip(overlay::upsample(&d.cam, width, height))
                {
                    *v = v.max(m);
                }
            }
        }
        BoxMaps::Inside => {
            for d in boxes.iter().rev() {
                let r @ (x0, y0, x1, y1) = pixels_of(&d.bbox, width, height);
                if x0 >= x1 || y0 >= y1 {
                    continue;
                }
                let part = overlay::upsample_region(&d.cam, width, height, r);
                for (row, src) in (y0..y1).zip(part.chunks_exact(x1 - x0)) {
                    values[row * width + x0..row * width + x1].copy_from_slice(src);
                }
            }
        }
    }
    values
}

/// The share of a box's map (its sum over the frame, upsampled) that lies inside the box.
pub fn inside_share(d: &Detection, width: usize, height: usize) -> f32 {
    let all = overlay::upsample(&d.cam, width, height);
    let total: f32 = all.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    let (x0, y0, x1, y1) = pixels_of(&d.bbox, width, height);
    let inside: f32 = (y0..y1)
        .map(|y| all[y * width + x0..y * width + x1].iter().sum::<f32>())
        .sum();
    inside / total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::CamMap;

    fn det(bbox: [f32; 4], data: Vec<f32>, track: u64) -> Detection {
        Detection {
            track,
            class: 0,
            score: 0.9,
            bbox,
            level: 0,
            candidate: 0,
            cam: CamMap { h: 2, w: 2, data },
        }
    }

    fn style(lut: &[[u8; 3]; 256], maps: BoxMaps) -> Style<'_> {
        Style {
            maps,
            alpha: 0.5,
            threshold: 0.0,
            lut,
            label: false,
            heatmaps: true,
        }
    }

    #[test]
    fn inside_maps_stay_in_their_box_and_full_maps_cover_the_frame() {
        let lut = crate::colormap::Colormap::Jet.lut();
        let (w, h) = (40, 40);
        let d = det([10.0, 10.0, 20.0, 20.0], vec![1.0, 1.0, 1.0, 1.0], 0);
        let mut px = vec![100u8; w * h * 4];
        draw(
            &mut px,
            w,
            h,
            std::slice::from_ref(&d),
            &style(&lut, BoxMaps::Inside),
            |_| "face".into(),
        );
        let at = |px: &[u8], x: usize, y: usize| px[(y * w + x) * 4..][..3].to_vec();
        // Outside the box (and off its outline): untouched; inside: blended.
        assert_eq!(at(&px, 30, 30), vec![100, 100, 100]);
        assert_ne!(at(&px, 15, 15), vec![100, 100, 100]);
        let mut px = vec![100u8; w * h * 4];
        draw(&mut px, w, h, &[d], &style(&lut, BoxMaps::Full), |_| {
            "face".into()
        });
        assert_ne!(at(&px, 30, 30), vec![100, 100, 100]);
    }

    #[test]
    fn a_box_clipped_at_the_frame_edge_is_drawn_inside_it() {
        let lut = crate::colormap::Colormap::Jet.lut();
        let (w, h) = (200, 60);
        let b = [170.0, -5.0, 230.0, 40.0];
        let d = det(b, vec![1.0; 4], 1);
        let mut px = vec![100u8; w * h * 4];
        let mut s = style(&lut, BoxMaps::Inside);
        s.label = true;
        draw(&mut px, w, h, &[d], &s, |_| "face".into());
        assert_eq!(pixels_of(&b, w, h), (170, 0, 200, 40));
        let at = |x: usize, y: usize| px[(y * w + x) * 4..][..3].to_vec();
        // Inside the clipped box, below its label: blended; below the box and left of the
        // label: untouched.
        assert_ne!(at(185, 30), vec![100, 100, 100]);
        assert_eq!(at(185, 50), vec![100, 100, 100]);
        assert_eq!(at(20, 5), vec![100, 100, 100]);
        // The label has no room above the box: it sits inside the box's top rows, moved left
        // so that it ends at the frame's edge (its band darkens what it covers).
        let band = crate::label::band_size(w, h, &["face 0.90 #1".to_string()]);
        assert!(band.1 < 40 && band.0 > 30, "{band:?}");
        let left_of_box = 200 - band.0 + 1;
        assert!(left_of_box < 170);
        assert_ne!(at(left_of_box, 1), vec![100, 100, 100]);
        assert_eq!(at(left_of_box, band.1 + 2), vec![100, 100, 100]);
    }

    #[test]
    fn the_share_inside_the_box() {
        // A map lit in its left column only: on a 4x4 frame, the left half.
        let d = det([0.0, 0.0, 2.0, 4.0], vec![1.0, 0.0, 1.0, 0.0], 0);
        let share = inside_share(&d, 4, 4);
        let all = overlay::upsample(&d.cam, 4, 4);
        let left: f32 = (0..4).map(|y| all[y * 4] + all[y * 4 + 1]).sum();
        assert!((share - left / all.iter().sum::<f32>()).abs() < 1e-6);
        assert!(share > 0.5);
    }
}
