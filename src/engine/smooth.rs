//! Temporal smoothing of one stream, as tensor ops on the model's device (no copy back, no
//! wait for the device):
//! - the map: an exponential moving average `m_t = S · m_{t-1} + (1 - S) · cam_t`, restarted on
//!   a scene cut and when the explained class changes, so a map never carries over to a
//!   different picture or a different question;
//! - the class (top-1 targets only): chosen on a moving average of the probabilities (factor
//!   S^(1/3), restarted on cuts) and held until another class's average beats it by
//!   `HOLD_MARGIN`, so it flips less.
//!
//! A cut: the mean absolute difference of two 32x18 grey thumbnails above `CUT_THRESHOLD`
//! (of 255). Frames are taken in stream order, batch after batch.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

pub const CUT_THRESHOLD: f64 = 30.0;
/// Thumbnail [rows, columns].
const THUMB: [i64; 2] = [18, 32];
/// Another class takes over once its averaged probability is this many times the held one's.
pub const HOLD_MARGIN: f64 = 1.25;

pub struct Smoothing {
    s: f64,
    /// Grey weights of R, G, B: [1, 3, 1, 1] on the device (made once: a copy to the device in
    /// every batch would wait for the device).
    grey: Tensor,
    /// The last frame's thumbnail [18, 32].
    thumb: Option<Tensor>,
    /// The probabilities' moving average [K] and the class held (0-dim int64).
    probs: Option<(Tensor, Tensor)>,
    /// The last map shown [h, w] and its class (0-dim int64).
    map: Option<(Tensor, Tensor)>,
}

impl Smoothing {
    /// `s` in (0, 1), for a stream explained on `device`.
    pub fn new(s: f32, device: Device) -> Result<Smoothing> {
        Ok(Smoothing {
            s: f64::from(s),
            grey: Tensor::f_from_slice(&[0.299f32, 0.587, 0.114])?
                .f_view([1, 3, 1, 1])?
                .f_to_device(device)?,
            thumb: None,
            probs: None,
            map: None,
        })
    }

    /// Grey thumbnails of frames [B, 3, H, W] (float, 0..255) → [B, 18, 32].
    pub fn thumbnails(&self, rgb: &Tensor) -> Result<Tensor> {
        let grey = (rgb * &self.grey).f_sum_dim_intlist([1i64].as_slice(), true, Kind::Float)?;
        Ok(grey.f_adaptive_avg_pool2d(THUMB)?.f_squeeze_dim(1)?)
    }

    /// Which frames of this batch start afresh (a cut, or the stream's first frame): [B] bool.
    /// Remembers the last thumbnail for the next batch.
    pub fn cuts(&mut self, thumbs: &Tensor) -> Result<Tensor> {
        let b = thumbs.size()[0];
        let first = match &self.thumb {
            Some(t) => {
                let d = (thumbs.f_get(0)? - t).f_abs()?.f_mean(Kind::Float)?;
                d.f_gt(CUT_THRESHOLD)?.f_unsqueeze(0)?
            }
            None => Tensor::f_ones([1], (Kind::Bool, thumbs.device()))?,
        };
        let rest = (thumbs.f_narrow(0, 1, b - 1)? - thumbs.f_narrow(0, 0, b - 1)?)
            .f_abs()?
            .f_mean_dim([1i64, 2].as_slice(), false, Kind::Float)?
            .f_gt(CUT_THRESHOLD)?;
        self.thumb = Some(thumbs.f_get(b - 1)?);
        Ok(Tensor::f_cat(&[first, rest], 0)?)
    }

    /// The class to explain in each frame from its probabilities [B, K]: [B] int64.
    pub fn classes(&mut self, probs: &Tensor, fresh: &Tensor) -> Result<Tensor> {
        let s = self.s.cbrt();
        let mut chosen = Vec::with_capacity(probs.size()[0] as usize);
        for i in 0..probs.size()[0] {
            let p = probs.f_get(i)?; // [K]
            let fresh_i = fresh.f_get(i)?;
            let (avg, class) = match self.probs.take() {
                None => {
                    let best = p.f_argmax(0, false)?;
                    (p, best)
                }
                Some((avg, held)) => {
                    let avg = p.f_where_self(&fresh_i, &(avg * s + &p * (1.0 - s)))?;
                    let best = avg.f_argmax(0, false)?;
                    let keep = avg
                        .f_max()?
                        .f_le_tensor(&(avg.f_take(&held)? * HOLD_MARGIN))?
                        .f_logical_and(&fresh_i.f_logical_not()?)?;
                    let class = held.f_where_self(&keep, &best)?;
                    (avg, class)
                }
            };
            chosen.push(class.shallow_clone());
            self.probs = Some((avg, class));
        }
        Ok(Tensor::f_stack(&chosen, 0)?)
    }

    /// Smooth the maps [B, h, w] of `classes` [B] in stream order.
    pub fn maps(&mut self, maps: &Tensor, classes: &Tensor, fresh: &Tensor) -> Result<Tensor> {
        let mut out = Vec::with_capacity(maps.size()[0] as usize);
        for i in 0..maps.size()[0] {
            let (m, c) = (maps.f_get(i)?, classes.f_get(i)?);
            let smoothed = match self.map.take() {
                None => m,
                Some((last, last_class)) => {
                    let restart = fresh.f_get(i)?.f_logical_or(&c.f_ne_tensor(&last_class)?)?;
                    m.f_where_self(&restart, &(last * self.s + &m * (1.0 - self.s)))?
                }
            };
            out.push(smoothed.shallow_clone());
            self.map = Some((smoothed, c));
        }
        Ok(Tensor::f_stack(&out, 0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vec(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    /// Frames of one grey level each: [B, 3, 36, 64].
    fn frames(levels: &[f32]) -> Tensor {
        let v: Vec<Tensor> = levels
            .iter()
            .map(|&l| Tensor::full([3, 36, 64], f64::from(l), (Kind::Float, Device::Cpu)))
            .collect();
        Tensor::stack(&v, 0)
    }

    #[test]
    fn averages_within_a_shot_and_restarts_on_cuts_and_class_changes() -> Result<()> {
        let mut s = Smoothing::new(0.5, Device::Cpu)?;
        // Two batches: 100, 105 | 200 (a cut), 200 (another class).
        let maps = Tensor::from_slice(&[1f32, 0., 0., 1.]).view([2, 1, 2]);
        let fresh = s.cuts(&s.thumbnails(&frames(&[100., 105.]))?)?;
        assert_eq!(Vec::<bool>::try_from(&fresh)?, vec![true, false]);
        let classes = Tensor::from_slice(&[7i64, 7]);
        let out = s.maps(&maps, &classes, &fresh)?;
        assert_eq!(vec(&out), vec![1.0, 0.0, 0.5, 0.5]);
        let maps = Tensor::from_slice(&[0f32, 1., 1., 0.]).view([2, 1, 2]);
        let fresh = s.cuts(&s.thumbnails(&frames(&[200., 200.]))?)?;
        assert_eq!(Vec::<bool>::try_from(&fresh)?, vec![true, false]);
        let classes = Tensor::from_slice(&[7i64, 8]);
        let out = s.maps(&maps, &classes, &fresh)?;
        assert_eq!(vec(&out), vec![0.0, 1.0, 1.0, 0.0]);
        Ok(())
    }

    #[test]
    fn the_class_is_held_until_another_clearly_wins() -> Result<()> {
        let mut s = Smoothing::new(0.5, Device::Cpu)?;
        let no_cut = Tensor::from_slice(&[false, false, false, false, false]);
        // Class 1 leads; then frames favour class 0. Its average overtakes class 1's in the
        // fourth frame (0.516 against 0.484), by less than the margin, so 1 is held; in the
        // fifth it leads by more (0.606 against 0.394) and takes over.
        let probs =
            Tensor::from_slice(&[0.3f32, 0.7, 0.55, 0.45, 0.6, 0.4, 0.95, 0.05, 0.95, 0.05])
                .view([5, 2]);
        let got = Vec::<i64>::try_from(&s.classes(&probs, &no_cut)?)?;
        assert_eq!(got, vec![1, 1, 1, 1, 0]);
        // A cut restarts: the new frame's own top-1 wins at once.
        let cut = Tensor::from_slice(&[true]);
        let probs = Tensor::from_slice(&[0.1f32, 0.9]).view([1, 2]);
        assert_eq!(Vec::<i64>::try_from(&s.classes(&probs, &cut)?)?, vec![1]);
        Ok(())
    }
}
