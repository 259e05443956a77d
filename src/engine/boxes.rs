//! A detector's batch: the levels, the head's candidates, selection (`select.rs`: threshold,
//! class-aware NMS, the cap) on the host, then one backward pass per box rank, shared by the
//! batch's frames (rank r of every frame that has r + 1 boxes: frames are independent in the
//! head, so the gradient of the summed scores with respect to frame b's levels is that of frame
//! b's box alone), and each box's map from its own level (`cam::combine`: ODAM's gradient ×
//! activation by default). A frame without a box costs no backward pass. Tracks are given in
//! `finish`, stream by stream in frame order.

use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

use super::{pad_rows, to_float, Engine, Precision};
use crate::cam::{self, Method};
use crate::frame::{CamMap, ClassScore, Detection, Explained, Frame};
use crate::select::{self, Candidate, Rules};

/// The most candidates per frame that reach the NMS (the best by score), as torchvision's
/// detectors take the top 1000 before theirs.
pub const PRE_NMS: i64 = 1000;

/// What a detector keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxSettings {
    pub rules: Rules,
}

/// One frame's kept boxes, in input pixels, before their maps.
struct Kept {
    boxes: Vec<Candidate>,
}

impl Engine {
    /// Explain a detector's batch: every box of every frame with its own map.
    pub(super) fn explain_boxes(&mut self, frames: Vec<Frame>) -> Result<Vec<Explained>> {
        let settings = self.boxes.expect("a detector's engine");
        // A stream's --class keeps that class's boxes only.
        let classes: Vec<Option<i64>> = frames
            .iter()
            .map(|f| self.per_stream(f.stream).class)
            .collect();
        let b = frames.len() as i64;
        let dev = self.upload(&frames)?; // [b, H, W, 4] uint8
        let rgb = to_float(&dev, self.layout)?; // [b, 3, H, W]
        let x = self.model.preprocess(&rgb)?; // [b, 3, h, w]
        let x = pad_rows(&x, self.bucket(b))?;
        let [in_h, in_w] = self.model.info.input_size;
        let parts = self.levels(&x)?;
        let grads_wanted = self.method.uses_gradients();
        let leaves: Vec<Tensor> = parts
            .levels
            .iter()
            .map(|l| l.detach().set_requires_grad(grads_wanted))
            .collect();
        let cands = self.detector_head(&leaves, &parts.carry, grads_wanted)?;
        let kept = self.select(&cands, b, settings, &classes)?;
        self.staging.turn += 1;
        let maps = self.box_maps(&leaves, &cands.scores, &kept)?; // per frame: [n, h0·w0]
        let [h0, w0] = {
            let s = leaves[0].size();
            [s[2] as usize, s[3] as usize]
        };
        let mut out = Vec::with_capacity(frames.len());
        for ((frame, kept), maps) in frames.into_iter().zip(kept).zip(maps) {
            let (fw, fh) = (frame.width as f32, frame.height as f32);
            let (sx, sy) = (fw / in_w as f32, fh / in_h as f32);
            let boxes: Vec<Detection> = kept
                .boxes
                .iter()
                .zip(maps.chunks_exact(h0 * w0))
                .map(|(c, m)| Detection {
                    track: 0,
                    class: c.class,
                    score: c.score,
                    bbox: [
                        (c.bbox[0] * sx).clamp(0.0, fw),
                        (c.bbox[1] * sy).clamp(0.0, fh),
                        (c.bbox[2] * sx).clamp(0.0, fw),
                        (c.bbox[3] * sy).clamp(0.0, fh),
                    ],
                    level: c.level,
                    candidate: c.index,
                    cam: CamMap {
                        h: h0,
                        w: w0,
                        data: m.to_vec(),
                    },
                })
                .collect();
            out.push(frame_result(frame, boxes, h0, w0));
        }
        Ok(out)
    }

    /// One pass through the levels, the head and one backward, so a GPU plans this shape now.
    pub(super) fn warm_boxes(&self, x: &Tensor) -> Result<()> {
        let parts = self.levels(x)?;
        let leaves: Vec<Tensor> = parts
            .levels
            .iter()
            .map(|l| l.detach().set_requires_grad(true))
            .collect();
        let c = self.detector_head(&leaves, &parts.carry, true)?;
        let score = c.scores.f_sum(Kind::Float)?;
        let refs: Vec<&Tensor> = leaves.iter().collect();
        Tensor::f_run_backward(&[&score], &refs, false, false)?;
        Ok(())
    }

    /// Forward only (levels and head, no gradients), waiting for the scores: a detector's
    /// speed limit, for the benchmarks.
    pub(super) fn forward_boxes(&mut self, rgb: &Tensor, b: i64) -> Result<Vec<f32>> {
        let x = pad_rows(&self.model.preprocess(rgb)?, self.bucket(b))?;
        let parts = self.levels(&x)?;
        let c = self.detector_head(&parts.levels, &parts.carry, false)?;
        self.staging.turn += 1;
        Ok(Vec::<f32>::try_from(
            c.scores
                .f_narrow(0, 0, b)?
                .f_to_device(tch::Device::Cpu)?
                .f_flatten(0, -1)?,
        )?)
    }

    /// The levels to explain and the carried tensors, in float whatever the precision.
    fn levels(&self, x: &Tensor) -> Result<crate::model::Levels> {
        let run = || self.model.levels(x);
        let parts = tch::no_grad(|| match self.precision {
            Precision::Fp16 => tch::autocast(true, run),
            Precision::Bf16 => super::cpu_autocast::bf16(run),
            Precision::Fp32 | Precision::Auto => run(),
        })?;
        let float = |t: Tensor| t.f_to_kind(Kind::Float);
        Ok(crate::model::Levels {
            levels: parts
                .levels
                .into_iter()
                .map(float)
                .collect::<Result<_, _>>()?,
            carry: parts
                .carry
                .into_iter()
                .map(float)
                .collect::<Result<_, _>>()?,
        })
    }

    /// The head's candidates, with autograd on where the maps need gradients.
    fn detector_head(
        &self,
        levels: &[Tensor],
        carry: &[Tensor],
        grads: bool,
    ) -> Result<crate::model::Candidates> {
        let run = || self.model.candidates(levels, carry);
        let autocast = |f: &dyn Fn() -> Result<crate::model::Candidates>| match self.precision {
            Precision::Fp16 => tch::autocast(true, f),
            _ => f(),
        };
        let c = if grads {
            autocast(&run)?
        } else {
            tch::no_grad(|| autocast(&run))?
        };
        Ok(crate::model::Candidates {
            scores: c.scores.f_to_kind(Kind::Float)?,
            ..c
        })
    }

    /// Each of the first `b` frames' boxes: the best `PRE_NMS` candidates come to the host
    /// (one copy of a small table), then threshold, NMS and cap there.
    fn select(
        &self,
        c: &crate::model::Candidates,
        b: i64,
        settings: BoxSettings,
        only: &[Option<i64>],
    ) -> Result<Vec<Kept>> {
        let k = c.scores.size()[1];
        let k0 = PRE_NMS.min(k);
        let probs = self
            .model
            .info
            .score_activation
            .apply(&c.scores.detach().f_narrow(0, 0, b)?)?; // [b, K]
        let (top_p, top_i) = probs.f_topk(k0, 1, true, true)?; // [b, k0]
        let pick = |t: &Tensor| -> Result<Tensor> {
            Ok(t.detach()
                .f_narrow(0, 0, b)?
                .f_gather(1, &top_i, false)?
                .f_to_kind(Kind::Float)?)
        };
        let boxes = c
            .boxes
            .detach()
            .f_narrow(0, 0, b)?
            .f_gather(
                1,
                &top_i.f_unsqueeze(2)?.f_expand([b, k0, 4], false)?,
                false,
            )?
            .f_to_kind(Kind::Float)?; // [b, k0, 4]
        let classes = pick(&c.classes)?;
        let levels = match &c.levels {
            Some(l) => pick(l)?,
            None => classes.f_zeros_like()?,
        };
        let index = top_i.f_to_kind(Kind::Float)?; // candidate ids are exact in float below 2^24
        let table = Tensor::f_cat(
            &[
                top_p.f_unsqueeze(2)?,
                index.f_unsqueeze(2)?,
                classes.f_unsqueeze(2)?,
                levels.f_unsqueeze(2)?,
                boxes,
            ],
            2,
        )?
        .f_to_device(tch::Device::Cpu)?; // [b, k0, 8]
        let data = Vec::<f32>::try_from(table.f_flatten(0, -1)?)?;
        ensure!(
            data.len() == (b * k0 * 8) as usize,
            "candidate table of the wrong size"
        );
        Ok(data
            .chunks_exact((k0 * 8) as usize)
            .zip(only)
            .map(|(frame, only)| {
                let candidates: Vec<Candidate> = frame
                    .chunks_exact(8)
                    .map(|r| Candidate {
                        index: r[1] as usize,
                        bbox: [r[4], r[5], r[6], r[7]],
                        score: r[0],
                        class: r[2] as i64,
                        level: r[3] as usize,
                    })
                    .filter(|c| only.is_none_or(|k| k == c.class))
                    .collect();
                Kept {
                    boxes: select::select(&candidates, settings.rules),
                }
            })
            .collect())
    }

    /// Each frame's box maps, [n, h0·w0] row-major on the host, n its boxes: one backward pass
    /// per box rank (none without boxes), each box's map on its own level, upsampled to level
    /// 0's grid where it came from another, normalized to [0, 1] per box.
    fn box_maps(
        &mut self,
        levels: &[Tensor],
        scores: &Tensor,
        kept: &[Kept],
    ) -> Result<Vec<Vec<f32>>> {
        let ranks = kept.iter().map(|k| k.boxes.len()).max().unwrap_or(0);
        let s0 = levels[0].size();
        let (h0, w0) = (s0[2], s0[3]);
        let dev = levels[0].device();
        let mut per_rank: Vec<(Vec<usize>, Tensor)> = Vec::with_capacity(ranks);
        let eigen = (self.method == Method::EigenCam)
            .then(|| cam::combine(Method::EigenCam, &levels[0].detach(), None))
            .transpose()?; // [n, h0, w0]
        for r in 0..ranks {
            let frames: Vec<usize> = (0..kept.len())
                .filter(|&i| kept[i].boxes.len() > r)
                .collect();
            let rows = Tensor::f_from_slice(&frames.iter().map(|&i| i as i64).collect::<Vec<_>>())?
                .f_to(dev)?;
            let maps = match &eigen {
                Some(e) => e.f_index_select(0, &rows)?,
                None => {
                    let at: Vec<i64> = frames
                        .iter()
                        .map(|&i| kept[i].boxes[r].index as i64)
                        .collect();
                    let at = Tensor::f_from_slice(&at)?.f_to(dev)?.f_unsqueeze(1)?;
                    let score = scores
                        .f_index_select(0, &rows)?
                        .f_gather(1, &at, false)?
                        .f_sum(Kind::Float)?;
                    let refs: Vec<&Tensor> = levels.iter().collect();
                    let grads = Tensor::f_run_backward(&[&score], &refs, r + 1 < ranks, false)?;
                    self.backward_passes += 1;
                    let by_level = levels
                        .iter()
                        .zip(&grads)
                        .map(|(a, g)| {
                            let m = cam::combine(
                                self.method,
                                &a.detach().f_index_select(0, &rows)?,
                                Some(&g.f_index_select(0, &rows)?),
                            )?; // [n, h_l, w_l]
                            on_grid(&m, h0, w0)
                        })
                        .collect::<Result<Vec<_>>>()?;
                    let level: Vec<i64> = frames
                        .iter()
                        .map(|&i| kept[i].boxes[r].level as i64)
                        .collect();
                    on_own_level(by_level, &level)?
                }
            };
            per_rank.push((frames, cam::normalize(&maps.f_relu()?)));
        }
        to_frames(&per_rank, kept.len(), (h0 * w0) as usize)
    }

    /// Give `stream`'s boxes their track ids (and, smoothing, their tracks' maps).
    pub(super) fn track(&mut self, e: &mut Explained) {
        let stream = e.frame.stream;
        let smooth = self.per_stream(stream).smooth;
        let Some(boxes) = e.boxes.as_mut() else {
            return;
        };
        self.trackers
            .entry(stream)
            .or_insert_with(|| crate::track::Tracker::new(smooth))
            .update(boxes);
        if let Some(c) = combined(boxes) {
            e.cam = c;
        }
    }
}

/// `m` [n, h, w] on the [h0, w0] grid (bilinear, half-pixel centres) when it is not already.
fn on_grid(m: &Tensor, h0: i64, w0: i64) -> Result<Tensor> {
    let s = m.size();
    if s[1] == h0 && s[2] == w0 {
        return Ok(m.shallow_clone());
    }
    Ok(m.f_unsqueeze(1)?
        .f_upsample_bilinear2d([h0, w0], false, None, None)?
        .f_squeeze_dim(1)?)
}

/// The frame-wide map of a detector's frame: at each cell the most any box's map reaches
/// (None without boxes).
fn combined(boxes: &[Detection]) -> Option<CamMap> {
    let first = boxes.first()?;
    let mut data = first.cam.data.clone();
    for d in &boxes[1..] {
        for (m, v) in data.iter_mut().zip(&d.cam.data) {
            *m = m.max(*v);
        }
    }
    Some(CamMap {
        h: first.cam.h,
        w: first.cam.w,
        data,
    })
}

/// A detector's frame as the rest of the program takes it: its boxes, the best box as its
/// target, and (until tracking) the combined map.
fn frame_result(frame: Frame, boxes: Vec<Detection>, h: usize, w: usize) -> Explained {
    let target = boxes.first().map_or(
        ClassScore {
            class: -1,
            prob: 0.0,
        },
        |d| ClassScore {
            class: d.class,
            prob: d.score,
        },
    );
    let cam = combined(&boxes).unwrap_or(CamMap {
        h,
        w,
        data: vec![0.0; h * w],
    });
    Explained {
        frame,
        blended: false,
        cam,
        target,
        top: boxes
            .iter()
            .map(|d| ClassScore {
                class: d.class,
                prob: d.score,
            })
            .collect(),
        ranked: Vec::new(),
        boxes: Some(boxes),
        cam_tensor: None,
    }
}

/// Each box's map from the level it came from: `by_level` [n, h0, w0] a level, `level` [n].
fn on_own_level(by_level: Vec<Tensor>, level: &[i64]) -> Result<Tensor> {
    if by_level.len() == 1 {
        return Ok(by_level.into_iter().next().expect("one level"));
    }
    let s = by_level[0].size();
    let level = Tensor::f_from_slice(level)?.f_to(by_level[0].device())?; // [n]
    let stacked = Tensor::f_stack(&by_level, 1)?; // [n, L, h0, w0]
    let at = level
        .f_view([-1, 1, 1, 1])?
        .f_expand([s[0], 1, s[1], s[2]], false)?;
    Ok(stacked.f_gather(1, &at, false)?.f_squeeze_dim(1)?)
}

/// One copy to the host of every box's map (`per_rank`: the frames of a rank and their maps),
/// then each of `frames` frames' maps in rank order, `hw` values a map.
fn to_frames(per_rank: &[(Vec<usize>, Tensor)], frames: usize, hw: usize) -> Result<Vec<Vec<f32>>> {
    let mut out: Vec<Vec<f32>> = vec![Vec::new(); frames];
    if per_rank.is_empty() {
        return Ok(out);
    }
    let all: Vec<Tensor> = per_rank.iter().map(|(_, m)| m.shallow_clone()).collect();
    let data = Vec::<f32>::try_from(
        Tensor::f_cat(&all, 0)?
            .f_to_device(tch::Device::Cpu)?
            .f_flatten(0, -1)?,
    )?;
    let mut at = 0;
    for (frames, _) in per_rank {
        for &f in frames {
            out[f].extend_from_slice(&data[at..at + hw]);
            at += hw;
        }
    }
    Ok(out)
}
