//! The heatmap blend as tensor ops, on the model's device: the map is upsampled bilinearly
//! (half-pixel centres, as `crate::overlay` does on the host), quantized to 256 levels,
//! looked up in the colormap and mixed with the frame in the same fixed-point arithmetic as
//! the host blend, so both give the same pixels. Float only: the frames arrive as float.
//!
//! Few passes over the frames (on a GPU each is a kernel over a batch of whole frames, the
//! costliest part of the blend): the mix `(rgb·(256 − a) + colour·a + 128) / 256`, the
//! threshold and the division are folded into two 256-row tables, a weight and an offset per
//! level (a level below the threshold weighs the frame 1 and adds 0), so the frame is read
//! once, by one multiply-add, and written once, as uint8. Every value in it is an integer
//! times a power of two below 2^24, so the float arithmetic is exact and the uint8 conversion
//! (truncation) is the floor.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use crate::colormap::Colormap;

/// What the blend needs, made once on the device.
pub struct Blend {
    /// [256, 6] float: for each map level, the frame's weight (3 columns, R G B) and the
    /// offset added (3 columns), both already divided by 256.
    table: Tensor,
}

/// The blend table's rows: level `l` mixes `rgb · weight + offset`, which is
/// `(rgb·(256 − a) + colour(l)·a + 128) / 256` at and above the threshold level and `rgb` below it.
fn table(lut: &[[u8; 3]; 256], alpha: i64, below: i64) -> Vec<f32> {
    let mut rows = Vec::with_capacity(256 * 6);
    for (level, colour) in lut.iter().enumerate() {
        let hot = level as i64 >= below;
        let weight = if hot { (256 - alpha) as f32 } else { 256.0 };
        rows.extend([weight / 256.0; 3]);
        rows.extend(colour.map(|c| {
            if hot {
                (f32::from(c) * alpha as f32 + 128.0) / 256.0
            } else {
                0.0
            }
        }));
    }
    rows
}

impl Blend {
    pub fn new(colormap: Colormap, alpha: f32, threshold: f32, device: Device) -> Result<Blend> {
        // Heatmap weight out of 256, as the host blend rounds it; map levels (of 255) below
        // which the frame is left alone.
        let alpha = (alpha.clamp(0.0, 1.0) * 256.0).round() as i64;
        let below = (threshold.clamp(0.0, 1.0) * 255.0).round() as i64;
        Ok(Blend {
            table: Tensor::f_from_slice(&table(&colormap.lut(), alpha, below))?
                .f_view([256, 6])?
                .f_to_device(device)?,
        })
    }

    /// `rgb` [B, H, W, 3] float 0..255 (any strides: a view of the model's input), `pad`
    /// [B, H, W, 1] uint8 (the frames' padding byte), `maps` [B, h, w] in [0, 1] → the blended
    /// frames, [B, H, W, 4] uint8 RGBx, contiguous.
    pub fn apply(&self, rgb: &Tensor, pad: &Tensor, maps: &Tensor) -> Result<Tensor> {
        let size = rgb.size();
        let &[b, h, w, 3] = size.as_slice() else {
            anyhow::bail!("frames must be [B, H, W, 3], got {size:?}");
        };
        let mut up = maps
            .f_unsqueeze(1)? // [B, 1, h', w']
            .f_upsample_bilinear2d([h, w], false, None, None)? // [B, 1, H, W]
            .f_view([b * h * w])?;
        // round(clamp(v) * 255): the level the host blend picks (truncation is the floor
        // of a value ≥ 0.5).
        let _ = up
            .f_clamp_(0.0, 1.0)?
            .f_mul_scalar_(255.0)?
            .f_add_scalar_(0.5)?;
        let level = up.f_to_kind(Kind::Int)?; // [B·H·W]
        let rows = self.table.f_index_select(0, &level)?.f_view([b, h, w, 6])?;
        let mixed = rows
            .f_narrow(3, 3, 3)?
            .f_addcmul(rgb, &rows.f_narrow(3, 0, 3)?)?; // [B, H, W, 3]
        let out = Tensor::f_empty([b, h, w, 4], (Kind::Uint8, rgb.device()))?;
        out.f_narrow(3, 0, 3)?.f_copy_(&mixed)?;
        out.f_narrow(3, 3, 1)?.f_copy_(pad)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::CamMap;

    /// `frames` [B, H, W, 4] uint8 blended as the engine does: RGB as float, the padding byte
    /// as it is.
    fn apply(blend: &Blend, frames: &Tensor, maps: &Tensor) -> Result<Tensor> {
        let rgb = frames.f_narrow(3, 0, 3)?.f_to_kind(Kind::Float)?;
        blend.apply(&rgb, &frames.f_narrow(3, 3, 1)?, maps)
    }

    fn host_blend(
        px: &[u8],
        w: usize,
        h: usize,
        cam: &CamMap,
        alpha: f32,
        threshold: f32,
    ) -> Vec<u8> {
        let mut px = px.to_vec();
        crate::overlay::blend(&mut px, w, h, cam, alpha, threshold, &Colormap::Turbo.lut());
        px
    }

    #[test]
    fn the_tables_give_the_integer_mix_exactly() {
        // The device's arithmetic (float multiply-add, then truncation to uint8) on every
        // frame value and level, against the host blend's integer formula.
        let lut = Colormap::Turbo.lut();
        for (alpha, below) in [(128, 0), (256, 0), (77, 128), (0, 0), (1, 255), (255, 1)] {
            let t = table(&lut, alpha, below);
            for (level, colour) in lut.iter().enumerate() {
                let row = &t[level * 6..level * 6 + 6];
                for c in 0..3 {
                    for v in 0..=255i64 {
                        let got = (v as f32).mul_add(row[c], row[3 + c]) as u8;
                        let alt = (row[3 + c] + v as f32 * row[c]) as u8;
                        let want = if level as i64 >= below {
                            (v * (256 - alpha) + i64::from(colour[c]) * alpha + 128) >> 8
                        } else {
                            v
                        };
                        assert_eq!(
                            (got as i64, alt as i64),
                            (want, want),
                            "a {alpha} below {below} level {level} v {v}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn matches_the_host_blend() -> Result<()> {
        // A 2x3 map onto a 13x7 frame of varied pixels, at several alphas and thresholds.
        let cam = CamMap {
            h: 2,
            w: 3,
            data: vec![0.0, 0.5, 1.0, 0.2, 0.9, 0.4],
        };
        let (w, h) = (13usize, 7usize);
        let px: Vec<u8> = (0..w * h * 4).map(|i| (i * 37 % 251) as u8).collect();
        for (alpha, threshold) in [(0.5, 0.0), (1.0, 0.0), (0.3, 0.5), (0.0, 0.0)] {
            let blend = Blend::new(Colormap::Turbo, alpha, threshold, Device::Cpu)?;
            let frames = Tensor::from_slice(&px).view([1, h as i64, w as i64, 4]);
            let maps = Tensor::from_slice(&cam.data).view([1, 2, 3]);
            let got = Vec::<u8>::try_from(apply(&blend, &frames, &maps)?.flatten(0, -1))?;
            let want = host_blend(&px, w, h, &cam, alpha, threshold);
            // Both upsample in float, in a different order of operations: where a value sits
            // on a level's rounding boundary the level can differ by one, moving that pixel
            // by a colormap step. Everything else is the same integer arithmetic.
            let differ: Vec<(u8, u8)> = got
                .iter()
                .zip(&want)
                .filter(|(a, b)| a != b)
                .map(|(&a, &b)| (a, b))
                .collect();
            assert!(
                differ.len() * 20 <= want.len() && differ.iter().all(|(a, b)| a.abs_diff(*b) <= 4),
                "alpha {alpha} threshold {threshold}: {differ:?}"
            );
            if alpha == 0.0 {
                assert_eq!(got, px, "alpha 0 leaves the frame alone");
            }
        }
        Ok(())
    }

    #[test]
    fn a_batch_blends_each_frame_with_its_own_map() -> Result<()> {
        let blend = Blend::new(Colormap::Jet, 0.5, 0.0, Device::Cpu)?;
        let frames = Tensor::full([2, 1, 2, 4], 100, (Kind::Uint8, Device::Cpu));
        let maps = Tensor::from_slice(&[0f32, 1., 1., 0.]).view([2, 1, 2]);
        let got = Vec::<u8>::try_from(apply(&blend, &frames, &maps)?.flatten(0, -1))?;
        // jet(0) = (0, 0, 128), jet(1) = (128, 0, 0); the padding byte stays 100.
        let cold = [50, 50, 114, 100];
        let hot = [114, 50, 50, 100];
        let want: Vec<u8> = [cold, hot, hot, cold].concat();
        assert_eq!(got, want);
        Ok(())
    }
}
