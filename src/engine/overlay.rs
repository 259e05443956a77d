//! The heatmap blend as tensor ops, on the model's device: the map is upsampled bilinearly
//! (half-pixel centres, as `crate::overlay` does on the host), quantized to 256 levels,
//! looked up in the colormap and mixed with the frame in the same fixed-point arithmetic as
//! the host blend, so both give the same pixels. Float only: the frames arrive as float.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use crate::colormap::Colormap;

/// What the blend needs, made once on the device.
pub struct Blend {
    /// [256, 3] float: the colormap's table.
    lut: Tensor,
    /// Heatmap weight out of 256, as the host blend rounds it.
    alpha: i64,
    /// Map levels (of 255) below which the frame is left alone.
    below: i64,
}

impl Blend {
    pub fn new(colormap: Colormap, alpha: f32, threshold: f32, device: Device) -> Result<Blend> {
        let table: Vec<f32> = colormap
            .lut()
            .iter()
            .flat_map(|c| c.map(f32::from))
            .collect();
        Ok(Blend {
            lut: Tensor::f_from_slice(&table)?
                .f_view([256, 3])?
                .f_to_device(device)?,
            alpha: (alpha.clamp(0.0, 1.0) * 256.0).round() as i64,
            below: (threshold.clamp(0.0, 1.0) * 255.0).round() as i64,
        })
    }

    /// `frames` [B, H, W, 4] float 0..255 (RGBx), `maps` [B, h, w] in [0, 1] → the blended
    /// frames, [B, H, W, 4] uint8 (the padding byte kept).
    pub fn apply(&self, frames: &Tensor, maps: &Tensor) -> Result<Tensor> {
        let size = frames.size();
        let &[b, h, w, 4] = size.as_slice() else {
            anyhow::bail!("frames must be [B, H, W, 4], got {size:?}");
        };
        let up = maps
            .f_unsqueeze(1)? // [B, 1, h', w']
            .f_upsample_bilinear2d([h, w], false, None, None)? // [B, 1, H, W]
            .f_view([b, h, w])?;
        // round(clamp(v) * 255): the level the host blend picks.
        let level = (up.f_clamp(0.0, 1.0)? * 255.0 + 0.5)
            .f_floor()?
            .f_to_kind(Kind::Int64)?; // [B, H, W]
        let color = self
            .lut
            .f_index_select(0, &level.f_flatten(0, -1)?)?
            .f_view([b, h, w, 3])?;
        let rgb = frames.f_narrow(3, 0, 3)?; // [B, H, W, 3]
        let mixed = ((&rgb * (256 - self.alpha) as f64 + color * self.alpha as f64 + 128.0)
            / 256.0)
            .f_floor()?;
        let hot = level.f_ge(self.below)?.f_unsqueeze(-1)?; // [B, H, W, 1]
        let rgb = mixed.f_where_self(&hot, &rgb)?;
        Ok(Tensor::f_cat(&[rgb, frames.f_narrow(3, 3, 1)?], 3)?.f_to_kind(Kind::Uint8)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::CamMap;

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
            let frames = Tensor::from_slice(&px)
                .view([1, h as i64, w as i64, 4])
                .to_kind(Kind::Float);
            let maps = Tensor::from_slice(&cam.data).view([1, 2, 3]);
            let got = Vec::<u8>::try_from(blend.apply(&frames, &maps)?.flatten(0, -1))?;
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
        let frames = Tensor::full([2, 1, 2, 4], 100.0, (Kind::Float, Device::Cpu));
        let maps = Tensor::from_slice(&[0f32, 1., 1., 0.]).view([2, 1, 2]);
        let got = Vec::<u8>::try_from(blend.apply(&frames, &maps)?.flatten(0, -1))?;
        // jet(0) = (0, 0, 128), jet(1) = (128, 0, 0); the padding byte stays 100.
        let cold = [50, 50, 114, 100];
        let hot = [114, 50, 50, 100];
        let want: Vec<u8> = [cold, hot, hot, cold].concat();
        assert_eq!(got, want);
        Ok(())
    }
}
