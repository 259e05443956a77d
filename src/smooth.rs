//! Temporal smoothing of the maps of one stream: an exponential moving average of the
//! normalized maps, `m_t = S · m_{t-1} + (1 - S) · cam_t`, reset on a scene cut (the frame
//! changes a lot from the one before) and when the explained class changes, so a map never
//! carries over to a different picture or a different question.

use crate::frame::{CamMap, Frame};

/// A cut: the mean absolute difference of two 32x18 grey thumbnails above this (of 255).
pub const CUT_THRESHOLD: f32 = 30.0;
const THUMB: (usize, usize) = (32, 18);

pub struct Smoother {
    s: f32,
    last: Option<(i64, CamMap, Vec<f32>)>,
    /// Resets so far (cuts and class changes), for tests and stats.
    pub resets: u64,
}

impl Smoother {
    /// `s` in [0, 1): 0 turns smoothing off.
    pub fn new(s: f32) -> Smoother {
        Smoother {
            s,
            last: None,
            resets: 0,
        }
    }

    /// Smooth `cam`, the map of `class` on `frame`, in place.
    pub fn apply(&mut self, frame: &Frame, class: i64, cam: &mut CamMap) {
        if self.s <= 0.0 {
            return;
        }
        let thumb = thumbnail(frame);
        if let Some((last_class, last, last_thumb)) = &self.last {
            let same_shape = last.h == cam.h && last.w == cam.w;
            let cut = is_cut(last_thumb, &thumb);
            if *last_class == class && same_shape && !cut {
                for (c, p) in cam.data.iter_mut().zip(&last.data) {
                    *c = self.s * p + (1.0 - self.s) * *c;
                }
            } else {
                self.resets += 1;
            }
        }
        self.last = Some((class, cam.clone(), thumb));
    }
}

/// Whether two thumbnails are from different shots.
pub fn is_cut(a: &[f32], b: &[f32]) -> bool {
    mean_abs_diff(a, b) > CUT_THRESHOLD
}

/// A grey thumbnail (box average over each cell) of an RGBx frame.
pub fn thumbnail(frame: &Frame) -> Vec<f32> {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let (tw, th) = THUMB;
    let mut sum = vec![0f32; tw * th];
    let mut n = vec![0u32; tw * th];
    // Every other pixel in each direction is plenty for a cut detector.
    for y in (0..h).step_by(2) {
        let ty = y * th / h;
        for x in (0..w).step_by(2) {
            let p = &frame.pixels[(y * w + x) * 4..][..3];
            let i = ty * tw + x * tw / w;
            sum[i] += 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
            n[i] += 1;
        }
    }
    sum.iter()
        .zip(&n)
        .map(|(s, &n)| s / n.max(1) as f32)
        .collect()
}

fn mean_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len().max(1) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(v: u8) -> Frame {
        Frame::from_rgb(0, 64, 36, &vec![v; 64 * 36 * 3])
    }

    fn cam(v: f32) -> CamMap {
        CamMap {
            h: 1,
            w: 2,
            data: vec![v, 1.0 - v],
        }
    }

    #[test]
    fn averages_within_a_shot_and_resets_on_cuts_and_class_changes() {
        let mut s = Smoother::new(0.5);
        let mut c = cam(1.0);
        s.apply(&frame(100), 7, &mut c);
        assert_eq!(c.data, vec![1.0, 0.0]);
        let mut c = cam(0.0);
        s.apply(&frame(105), 7, &mut c);
        assert_eq!(c.data, vec![0.5, 0.5]); // averaged with the last map
        let mut c = cam(0.0);
        s.apply(&frame(200), 7, &mut c); // a cut: the picture changed
        assert_eq!(c.data, vec![0.0, 1.0]);
        let mut c = cam(1.0);
        s.apply(&frame(200), 8, &mut c); // another class
        assert_eq!(c.data, vec![1.0, 0.0]);
        assert_eq!(s.resets, 2);
        let mut off = Smoother::new(0.0);
        let mut c = cam(0.3);
        off.apply(&frame(1), 1, &mut c);
        off.apply(&frame(1), 1, &mut c);
        assert_eq!(c.data, cam(0.3).data);
    }
}
