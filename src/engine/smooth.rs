//! Temporal smoothing of one stream, as tensor ops on the model's device (no copy back, no
//! wait for the device):
//! - the map: an exponential moving average that follows motion,
//!   `m_t = w ⊙ moved(m_{t-1}) + (1 - w) ⊙ cam_t`. Before it averages, the last map is moved
//!   to where the picture moved, measured on grey thumbnails laid on the map's grid (8x8
//!   pixels a cell): first the global shift (the camera), by phase correlation; then each
//!   cell's own shift beyond it (a moving object), the best-matching block within `REACH`
//!   pixels, spread to the neighbouring cells that the map's blob covers too. The weight `w`
//!   is `S` where the moved picture matches (within `STILL` grey levels) and falls to 0 where
//!   it does not (`STILL + CHANGE`: something appeared). A still scene gets no shift and
//!   `w = S`: the plain moving average. The average restarts on a scene cut and when the
//!   explained class changes, so a map never carries over to a different picture or a
//!   different question;
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
/// Motion thumbnails have this many pixels a side per map cell.
const PER_CELL: i64 = 8;
/// After the motion is taken out, a cell whose picture still differs by up to `STILL` grey
/// levels (mean, of 255: noise, texture) keeps the full weight `S` of the last map; one that
/// differs by `STILL + CHANGE` keeps none of it (something appeared or changed shape).
pub const STILL: f64 = 12.0;
pub const CHANGE: f64 = 48.0;
/// How far a cell's own motion is looked for, in motion-thumbnail pixels a frame (an eighth
/// of a cell each), beyond the global shift.
const REACH: i64 = 2;
/// Matching cost added per pixel of a cell's own motion (grey levels).
const MOTION_COST: f64 = 0.5;

/// A batch's thumbnails: for cuts [B, 18, 32], and for motion [B, h·8, w·8] (the map's grid).
pub struct Thumbs {
    cut: Tensor,
    motion: Tensor,
}

impl Thumbs {
    /// Frames `start..start + len`.
    pub fn narrow(&self, start: i64, len: i64) -> Result<Thumbs> {
        Ok(Thumbs {
            cut: self.cut.f_narrow(0, start, len)?,
            motion: self.motion.f_narrow(0, start, len)?,
        })
    }
}

/// How a run's frames moved: per frame, the sampling grid that moves the last map by the
/// global shift [n, h, w, 2], and each cell's weight for the last map [n, h, w].
struct Motion {
    grids: Tensor,
    weights: Tensor,
}

pub struct Smoothing {
    s: f64,
    /// Grey weights of R, G, B: [1, 3, 1, 1] on the device (made once: a copy to the device in
    /// every batch would wait for the device).
    grey: Tensor,
    /// The map's grid [h, w].
    grid: [i64; 2],
    /// A 2-D Hann window over the motion thumbnail [h·8, w·8] (phase correlation).
    window: Tensor,
    /// Each candidate shift's cost of motion [1, candidates, 1, 1] (see `motion_of`), made
    /// once on the device.
    penalty: Tensor,
    /// The last frame's thumbnails: for cuts [18, 32], for motion [h·8, w·8].
    thumb: Option<(Tensor, Tensor)>,
    /// The motion of the frames `cuts` saw last, for `maps` of the same frames.
    motion: Option<Motion>,
    /// The probabilities' moving average [K] and the class held (0-dim int64).
    probs: Option<(Tensor, Tensor)>,
    /// The last map shown [h, w] and its class (0-dim int64).
    map: Option<(Tensor, Tensor)>,
}

/// [rows, cols, 2]: the normalized (x, y) of each pixel's centre.
fn identity(rows: i64, cols: i64, dev: tch::Device) -> Result<Tensor> {
    let axis = |k: i64| -> Result<Tensor> {
        Ok((Tensor::f_arange(k, (Kind::Float, dev))? * 2.0 + 1.0) / k as f64 - 1.0)
    };
    let y = axis(rows)?
        .f_view([rows, 1])?
        .f_expand([rows, cols], false)?;
    let x = axis(cols)?
        .f_view([1, cols])?
        .f_expand([rows, cols], false)?;
    Ok(Tensor::f_stack(&[x, y], 2)?)
}

/// The sampling grid [n, rows, cols, 2] that moves content by (dy, dx) [n, rows, cols]
/// pixels of that grid: output(x) = input(x - d).
fn grid_of(dy: &Tensor, dx: &Tensor, rows: i64, cols: i64) -> Result<Tensor> {
    let shift = Tensor::f_stack(&[dx * (2.0 / cols as f64), dy * (2.0 / rows as f64)], 3)?;
    Ok(identity(rows, cols, dy.device())?.f_unsqueeze(0)? - shift)
}

impl Smoothing {
    /// `s` in (0, 1), for a stream explained on `device` whose maps are `grid` [h, w].
    pub fn new(s: f32, grid: [i64; 2], device: Device) -> Result<Smoothing> {
        let [h, w] = grid.map(|n| n * PER_CELL);
        let opts = (Kind::Float, device);
        let window = Tensor::f_hann_window(h, opts)?
            .f_unsqueeze(1)?
            .f_mul(&Tensor::f_hann_window(w, opts)?.f_unsqueeze(0)?)?;
        let side = 2 * REACH + 1;
        let penalty: Vec<f32> = (0..side * side)
            .map(|k| {
                ((REACH - k / side).abs() + (REACH - k % side).abs()) as f32 * MOTION_COST as f32
            })
            .collect();
        Ok(Smoothing {
            penalty: Tensor::f_from_slice(&penalty)?
                .f_view([1, side * side, 1, 1])?
                .f_to_device(device)?,
            s: f64::from(s),
            grey: Tensor::f_from_slice(&[0.299f32, 0.587, 0.114])?
                .f_view([1, 3, 1, 1])?
                .f_to_device(device)?,
            grid,
            window,
            thumb: None,
            motion: None,
            probs: None,
            map: None,
        })
    }

    /// Grey thumbnails of frames [B, 3, H, W] (float, 0..255). Averaging and the grey mix are
    /// both linear, so the frames are pooled first and made grey small: the whole frames are
    /// only read, once a thumbnail, never written out as grey.
    pub fn thumbnails(&self, rgb: &Tensor) -> Result<Thumbs> {
        let [h, w] = self.grid.map(|n| n * PER_CELL);
        let grey = |size: [i64; 2]| -> Result<Tensor> {
            let small = rgb.f_adaptive_avg_pool2d(size)?; // [B, 3, rows, cols]
            Ok((small * &self.grey).f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?)
        };
        Ok(Thumbs {
            cut: grey(THUMB)?,
            motion: grey([h, w])?,
        })
    }

    /// Which frames of this batch start afresh (a cut, or the stream's first frame): [B] bool.
    /// Measures how they moved too (for `maps` of the same frames), and remembers the last
    /// thumbnails for the next batch.
    pub fn cuts(&mut self, thumbs: &Thumbs) -> Result<Tensor> {
        let b = thumbs.cut.size()[0];
        let first_ever = self.thumb.is_none();
        // Each frame's predecessor: the last batch's last frame (none: the frame itself).
        let (last_cut, last_motion) = match self.thumb.take() {
            Some((c, m)) => (c.f_unsqueeze(0)?, m.f_unsqueeze(0)?),
            None => (
                thumbs.cut.f_narrow(0, 0, 1)?,
                thumbs.motion.f_narrow(0, 0, 1)?,
            ),
        };
        let before = |all: &Tensor, last: Tensor| -> Result<Tensor> {
            Ok(Tensor::f_cat(&[last, all.f_narrow(0, 0, b - 1)?], 0)?)
        };
        let mut cut = (&thumbs.cut - before(&thumbs.cut, last_cut)?)
            .f_abs()?
            .f_mean_dim([1i64, 2].as_slice(), false, Kind::Float)?
            .f_gt(CUT_THRESHOLD)?;
        if first_ever {
            // The stream's first frame starts afresh.
            let one = Tensor::f_ones([1], (Kind::Bool, cut.device()))?;
            cut = Tensor::f_cat(&[one, cut.f_narrow(0, 1, b - 1)?], 0)?;
        }
        self.motion = Some(self.motion_of(&before(&thumbs.motion, last_motion)?, &thumbs.motion)?);
        self.thumb = Some((thumbs.cut.f_get(b - 1)?, thumbs.motion.f_get(b - 1)?));
        Ok(cut)
    }

    /// How each frame moved from the one before: `prev`, `cur` [n, H, W] motion thumbnails.
    fn motion_of(&self, prev: &Tensor, cur: &Tensor) -> Result<Motion> {
        let n = cur.size()[0];
        let [hc, wc] = self.grid;
        let (h, w) = (hc * PER_CELL, wc * PER_CELL);
        // 1. The global shift (the camera), and `prev` moved by it: output(x) = input(x - g),
        //    border padding.
        let (gy, gx) = self.global_shift(prev, cur)?; // [n, 1, 1], thumbnail px
        let full = |v: &Tensor, rows: i64, cols: i64| v.f_expand([n, rows, cols], false);
        let aligned = prev
            .f_unsqueeze(1)?
            .f_grid_sampler_2d(
                &grid_of(&full(&gy, h, w)?, &full(&gx, h, w)?, h, w)?,
                0,
                1,
                false,
            )?
            .f_squeeze_dim(1)?;
        // 2. Each cell's own motion beyond that (a moving object).
        let (best_cost, ly, lx) = self.cell_shift(&aligned, cur)?;
        // Each cell's motion: the global shift and its own, in thumbnail pixels. A map's
        // blob reaches past the cells of its object, so each cell takes the strongest motion
        // of each sign among itself and its neighbours (a pan moves every cell alike).
        let spread = |t: Tensor| -> Result<Tensor> {
            let t = t.f_unsqueeze(1)?;
            let pool = |t: &Tensor| t.f_max_pool2d([3, 3], [1, 1], [1, 1], [1, 1], false);
            Ok((pool(&t)?.f_relu()? - pool(&-&t)?.f_relu()?).f_squeeze_dim(1)?)
        };
        let dy = spread(full(&gy, hc, wc)? + ly)? / PER_CELL as f64; // [n, hc, wc], cells
        let dx = spread(full(&gx, hc, wc)? + lx)? / PER_CELL as f64;
        let grids = grid_of(&dy, &dx, hc, wc)?; // [n, hc, wc, 2]
                                                // 3. What still changed after both: less of the last map there.
        let weights = (((best_cost - STILL) / -CHANGE) + 1.0).f_clamp(0.0, 1.0)? * self.s;
        Ok(Motion { grids, weights })
    }

    /// The shift (dy, dx) [n, 1, 1] in thumbnail pixels that carries `prev`'s content to where
    /// `cur` has it, by phase correlation: the peak of the normalized cross-power spectrum's
    /// inverse sits at minus that shift.
    fn global_shift(&self, prev: &Tensor, cur: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = cur.size()[0];
        let (h, w) = (self.grid[0] * PER_CELL, self.grid[1] * PER_CELL);
        let spectrum = |t: &Tensor| -> Result<Tensor> {
            let t = (t - t.f_mean_dim([1i64, 2].as_slice(), true, Kind::Float)?) * &self.window;
            Ok(t.f_fft_rfft2(None::<&[i64]>, [1i64, 2].as_slice(), "backward")?)
        };
        let cross = spectrum(prev)? * spectrum(cur)?.f_conj()?;
        let cross = &cross / (cross.f_abs()? + 1e-9);
        let corr = cross.f_fft_irfft2(Some([h, w].as_slice()), [1i64, 2].as_slice(), "backward")?;
        let at = corr.f_reshape([n, h * w])?.f_argmax(1, false)?; // [n]
        let wrap = |v: Tensor, size: i64| -> Result<Tensor> {
            // 0..size → the shift, -size/2..size/2, negated.
            let v = v.f_to_kind(Kind::Float)?;
            let v = v.f_where_self(&v.f_le(size as f64 / 2.0)?, &(&v - size as f64))?;
            Ok(-v)
        };
        let gy = wrap(at.f_div_scalar_mode(w, "floor")?, h)?.f_view([n, 1, 1])?;
        let gx = wrap(at.f_remainder(w)?, w)?.f_view([n, 1, 1])?;
        Ok((gy, gx))
    }

    /// Each cell's shift of up to `REACH` thumbnail pixels whose 8x8 block of `aligned` matches
    /// `cur` best (mean absolute difference, less the picture's brightness change, plus a small
    /// cost per pixel of motion so a flat cell stays put): (its cost, dy, dx), each [n, hc, wc].
    fn cell_shift(&self, aligned: &Tensor, cur: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let n = cur.size()[0];
        let [hc, wc] = self.grid;
        let (h, w) = (hc * PER_CELL, wc * PER_CELL);
        let side = 2 * REACH + 1;
        let level = |t: &Tensor| -> Result<Tensor> {
            Ok(t - t.f_mean_dim([1i64, 2].as_slice(), true, Kind::Float)?)
        };
        let padded = level(aligned)?
            .f_unsqueeze(1)?
            .f_replication_pad2d([REACH, REACH, REACH, REACH])?
            .f_squeeze_dim(1)?; // [n, H + 2R, W + 2R]
                                // Every candidate at once, as views: [n, side, side, H, W]; candidate (i, j) is
                                // `aligned` moved by (dy, dx) = (R - i, R - j).
        let candidates = padded.f_unfold(1, h, 1)?.f_unfold(2, w, 1)?;
        let diff = (level(cur)?.f_view([n, 1, 1, h, w])? - candidates)
            .f_abs()?
            .f_reshape([n * side * side, 1, h, w])?;
        let per_cell = diff
            .f_avg_pool2d(
                [PER_CELL, PER_CELL],
                [PER_CELL, PER_CELL],
                [0, 0],
                false,
                true,
                None,
            )?
            .f_reshape([n, side * side, hc, wc])?;
        let (best_cost, best) = (per_cell + &self.penalty).f_min_dim(1, false)?; // [n, hc, wc]
        let best = best.f_to_kind(Kind::Float)?;
        let ly = -(best.f_div_scalar_mode(side, "floor")? - REACH as f64);
        let lx = -(best.f_remainder(side)? - REACH as f64);
        Ok((best_cost, ly, lx))
    }

    /// The class to explain in each frame from its probabilities [B, K]: [B] int64.
    /// The averages are one linear recursion, so the whole batch's come from one product
    /// (`averages`); only the hold, which depends on the class held before, goes frame by
    /// frame, at four small launches a frame on a GPU.
    pub fn classes(&mut self, probs: &Tensor, fresh: &Tensor) -> Result<Tensor> {
        let n = probs.size()[0];
        let (last, held) = match self.probs.take() {
            Some((avg, held)) => (Some(avg), Some(held)),
            None => (None, None),
        };
        // A frame starts afresh on a cut, and as the stream's first.
        let start = match &last {
            Some(_) => fresh.shallow_clone(),
            None => {
                let one = Tensor::f_ones([1], (Kind::Bool, probs.device()))?;
                Tensor::f_cat(&[one, fresh.f_narrow(0, 1, n - 1)?], 0)?
            }
        };
        let avg = self.averages(probs, &start, last.as_ref())?; // [n, K]
        let best = avg.f_argmax(1, false)?; // [n]
        let top = avg.f_amax([1i64].as_slice(), false)?; // [n]
        let go_on = start.f_logical_not()?; // [n]
        let mut held = match held {
            Some(h) => h,
            None => best.f_get(0)?,
        };
        let mut chosen = Vec::with_capacity(n as usize);
        for i in 0..n {
            // Held while no other class's average beats the held one's by the margin.
            let keep = (avg.f_get(i)?.f_take(&held)? * HOLD_MARGIN)
                .f_ge_tensor(&top.f_get(i)?)?
                .f_logical_and(&go_on.f_get(i)?)?;
            held = held.f_where_self(&keep, &best.f_get(i)?)?;
            chosen.push(held.shallow_clone());
        }
        self.probs = Some((avg.f_get(n - 1)?, held));
        Ok(Tensor::f_stack(&chosen, 0)?)
    }

    /// The probabilities' moving averages [n, K] (factor S^(1/3)) of `probs` [n, K], restarted
    /// where `start` [n] is set and otherwise going on from `last` [K]:
    /// avg_i = Σ_j A_ij p_j + c_i last, with A_ij = a_j S'^(i-j) for j ≤ i in i's run
    /// (a_j = 1 where the run starts, 1 - S' after) and c_i = S'^(i+1) until the first restart.
    fn averages(&self, probs: &Tensor, start: &Tensor, last: Option<&Tensor>) -> Result<Tensor> {
        let n = probs.size()[0];
        let s = self.s.cbrt();
        let dev = probs.device();
        let i = Tensor::f_arange(n, (Kind::Float, dev))?;
        let run = start.f_to_kind(Kind::Int64)?.f_cumsum(0, Kind::Int64)?; // [n]: 0 goes on
        let same_run = run.f_view([n, 1])?.f_eq_tensor(&run.f_view([1, n])?)?; // [n, n]
        let age = i.f_view([n, 1])? - i.f_view([1, n])?; // i - j
        let a = start
            .f_to_kind(Kind::Float)?
            .f_mul_scalar(s)?
            .f_add_scalar(1.0 - s)?; // 1 at a start, 1 - S' after
        let weights = (age.f_clamp_min(0.0)? * s.ln())
            .f_exp()?
            .f_mul(&a.f_view([1, n])?)?
            .f_mul(
                &same_run
                    .f_logical_and(&age.f_ge(0.0)?)?
                    .f_to_kind(Kind::Float)?,
            )?;
        let avg = weights.f_matmul(probs)?; // [n, K]
        Ok(match last {
            Some(last) => {
                let c = ((&i + 1.0) * s.ln())
                    .f_exp()?
                    .f_mul(&run.f_eq(0)?.f_to_kind(Kind::Float)?)?; // [n]
                avg + c.f_view([n, 1])? * last.f_view([1, -1])?
            }
            None => avg,
        })
    }

    /// Smooth the maps [B, h, w] of `classes` [B] in stream order (the frames `cuts` saw last).
    /// All but the recursion itself runs on the whole batch at once, so each frame costs the
    /// device two small launches: moving the last map, and mixing it in.
    pub fn maps(&mut self, maps: &Tensor, classes: &Tensor, fresh: &Tensor) -> Result<Tensor> {
        let n = maps.size()[0];
        let [h, w] = self.grid;
        let motion = self.motion.take();
        let (last, last_class) = match self.map.take() {
            Some((m, c)) => (Some(m), c.f_unsqueeze(0)?),
            None => (None, classes.f_narrow(0, 0, 1)?),
        };
        // A frame starts afresh on a cut, when its class differs from its predecessor's, and
        // as the stream's first.
        let before = Tensor::f_cat(&[last_class, classes.f_narrow(0, 0, n - 1)?], 0)?;
        let mut restart = fresh.f_logical_or(&classes.f_ne_tensor(&before)?)?; // [n]
        if last.is_none() {
            let one = Tensor::f_ones([1], (Kind::Bool, maps.device()))?;
            restart = Tensor::f_cat(&[one, restart.f_narrow(0, 1, n - 1)?], 0)?;
        }
        let keep = restart
            .f_logical_not()?
            .f_to_kind(Kind::Float)?
            .f_view([n, 1, 1])?;
        let weights = match &motion {
            Some(mo) => &mo.weights * &keep,
            None => keep * self.s,
        }; // [n, h, w]: how much of the (moved) last map each cell keeps
        let own = maps * (-&weights + 1.0);
        let mut last = match last {
            Some(m) => m,
            None => Tensor::f_zeros([h, w], (Kind::Float, maps.device()))?,
        };
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let moved = match &motion {
                Some(mo) => last
                    .f_view([1, 1, h, w])?
                    .f_grid_sampler_2d(&mo.grids.f_narrow(0, i, 1)?, 0, 1, false)?
                    .f_view([h, w])?,
                None => last,
            };
            last = own.f_get(i)?.f_addcmul(&weights.f_get(i)?, &moved)?;
            out.push(last.shallow_clone());
        }
        self.map = Some((last, classes.f_get(n - 1)?));
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
        let mut s = Smoothing::new(0.5, [1, 2], Device::Cpu)?;
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
        let mut s = Smoothing::new(0.5, [1, 2], Device::Cpu)?;
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

    #[test]
    fn the_batched_averages_are_the_recursion_frame_by_frame() -> Result<()> {
        // Random probabilities over 4 classes in batches of 7, 1 and 5 frames, with cuts: the
        // classes chosen a batch at a time are those of the recursion run frame by frame.
        tch::manual_seed(4);
        let s = 0.6f64;
        let mut smooth = Smoothing::new(s as f32, [1, 2], Device::Cpu)?;
        let (f, k) = (13, 4);
        let probs =
            (Tensor::rand([f, k], (Kind::Float, Device::Cpu)) * 3.0).softmax(1, Kind::Float);
        let cut = [
            false, false, true, false, false, false, false, false, true, false, false, true, false,
        ];
        let mut got = Vec::new();
        let mut at = 0;
        for n in [7, 1, 5] {
            let fresh = Tensor::from_slice(&cut[at..at + n]);
            let p = probs.narrow(0, at as i64, n as i64);
            got.extend(Vec::<i64>::try_from(&smooth.classes(&p, &fresh)?)?);
            at += n;
        }
        let s3 = s.cbrt() as f32;
        let rows: Vec<Vec<f32>> = (0..f)
            .map(|i| Vec::<f32>::try_from(probs.get(i)).unwrap())
            .collect();
        let (mut avg, mut held): (Vec<f32>, usize) = (vec![], 0);
        let mut want = Vec::new();
        for (i, p) in rows.iter().enumerate() {
            let argmax = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
            if i == 0 || cut[i] {
                avg = p.clone();
                held = argmax(&avg);
            } else {
                avg = avg
                    .iter()
                    .zip(p)
                    .map(|(a, p)| a * s3 + p * (1.0 - s3))
                    .collect();
                let top = avg.iter().cloned().fold(f32::MIN, f32::max);
                if top > avg[held] * HOLD_MARGIN as f32 {
                    held = argmax(&avg);
                }
            }
            want.push(held as i64);
        }
        assert_eq!(got, want);
        let last = smooth
            .probs
            .as_ref()
            .map(|(a, _)| Vec::<f32>::try_from(a).unwrap())
            .unwrap();
        assert!(
            last.iter().zip(&avg).all(|(a, b)| (a - b).abs() < 1e-5),
            "{last:?} {avg:?}"
        );
        Ok(())
    }

    /// A textured 56x56 thumbnail (the motion thumbnail of a 7x7 map): smooth random blobs.
    fn texture(seed: i64) -> Tensor {
        tch::manual_seed(seed);
        let noise = Tensor::rand([1, 1, 14, 14], (Kind::Float, Device::Cpu)) * 255.0;
        noise
            .upsample_bilinear2d([56, 56], false, None, None)
            .view([56, 56])
    }

    /// Each cell's shift (dy, dx) in cells from a motion's sampling grid, and its weight.
    fn shifts(m: &Motion) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let grid = m.grids.get(0); // [7, 7, 2]: (x, y) sampled, normalized
        let axis = (Tensor::arange(7, (Kind::Float, Device::Cpu)) * 2.0 + 1.0) / 7.0 - 1.0;
        let dx = (axis.view([1, 7]) - grid.select(2, 0)) * 3.5; // normalized → cells
        let dy = (axis.view([7, 1]) - grid.select(2, 1)) * 3.5;
        (vec(&dy), vec(&dx), vec(&m.weights.get(0)))
    }

    #[test]
    fn a_still_picture_keeps_the_plain_average() -> Result<()> {
        let s = Smoothing::new(0.5, [7, 7], Device::Cpu)?;
        let a = texture(1).unsqueeze(0);
        let (dy, dx, w) = shifts(&s.motion_of(&a, &(&a + 3.0))?); // a little brighter
        assert!(
            dy.iter().chain(&dx).all(|d| d.abs() < 1e-5),
            "{dy:?} {dx:?}"
        );
        assert!(w.iter().all(|&w| (w - 0.5).abs() < 1e-6), "{w:?}");
        Ok(())
    }

    #[test]
    fn a_camera_pan_moves_the_whole_map() -> Result<()> {
        let s = Smoothing::new(0.5, [7, 7], Device::Cpu)?;
        let a = texture(2);
        // The picture moves 4 thumbnail pixels right (half a cell) and 8 up (a cell).
        let b = a.roll([-8, 4], [0, 1]);
        let (dy, dx, w) = shifts(&s.motion_of(&a.unsqueeze(0), &b.unsqueeze(0))?);
        // Cells away from the edges, where the picture rolled in from the other side.
        for y in 1..5 {
            for x in 2..7 {
                let i = y * 7 + x;
                assert!(
                    (dx[i] - 0.5).abs() < 1e-4 && (dy[i] + 1.0).abs() < 1e-4,
                    "cell {y},{x}: {} {}",
                    dy[i],
                    dx[i]
                );
                assert!((w[i] - 0.5).abs() < 1e-6, "cell {y},{x}: weight {}", w[i]);
            }
        }
        Ok(())
    }

    #[test]
    fn a_moving_object_moves_its_part_of_the_map() -> Result<()> {
        let s = Smoothing::new(0.5, [7, 7], Device::Cpu)?;
        let background = texture(3);
        let object = texture(4).narrow(0, 0, 16).narrow(1, 0, 16) * 0.5 + 128.0;
        let at = |x: i64| {
            let f = background.copy();
            f.narrow(0, 24, 16).narrow(1, x, 16).copy_(&object);
            f
        };
        // The object (cells 3-4 down, 2-4 across) moves 2 pixels right on a still background.
        let (_, dx, _) = shifts(&s.motion_of(&at(20).unsqueeze(0), &at(22).unsqueeze(0))?);
        assert!((dx[3 * 7 + 3] - 0.25).abs() < 1e-4, "{dx:?}");
        assert!(dx[6 * 7 + 6].abs() < 1e-4 && dx[0].abs() < 1e-4, "{dx:?}");
        Ok(())
    }
}
