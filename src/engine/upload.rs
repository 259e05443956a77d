//! A batch on its way into the model: gathered in pinned host buffers, copied to the device,
//! made float in the layout asked for, padded to the batch sizes the device is planned for.

use anyhow::Result;
use tch::{Device, Kind, Tensor};

use crate::settings::named::Layout as Memory;

/// Pinned host buffers the frames are gathered in before their copy to a GPU, two of each
/// shape: one batch's copy can be in flight while the next batch is gathered in the other.
#[derive(Default)]
pub(super) struct Staging {
    buffers: Vec<(Vec<i64>, [Tensor; 2])>,
    /// Which of each pair the current batch uses.
    pub(super) turn: usize,
}

impl Staging {
    /// The current batch's buffer of `size` (uint8), pinned for `device`.
    pub(super) fn take(&mut self, size: &[i64], device: Device) -> Result<Tensor> {
        let at = match self.buffers.iter().position(|(s, _)| s.as_slice() == size) {
            Some(i) => i,
            None => {
                let make = || -> Result<Tensor> {
                    // `_pin_memory`: `pin_memory` itself warns that its device argument is
                    // deprecated, and tch always passes one.
                    Ok(Tensor::f_empty(size, (Kind::Uint8, Device::Cpu))?
                        .f_internal_pin_memory(device)?)
                };
                self.buffers.push((size.to_vec(), [make()?, make()?]));
                self.buffers.len() - 1
            }
        };
        Ok(self.buffers[at].1[self.turn % 2].shallow_clone())
    }
}

/// Batch sizes to run a GPU at for batches of up to `max`: powers of two, and `max` itself.
pub(super) fn buckets_for(max: usize) -> Vec<i64> {
    let max = max.max(1) as i64;
    let mut v: Vec<i64> = std::iter::successors(Some(1i64), |n| Some(n * 2))
        .take_while(|&n| n < max)
        .collect();
    v.push(max);
    v
}

/// Frames [B, H, W, 4] uint8 → [B, 3, H, W] float (0..255): the conversion to float in one
/// pass, into `layout`. Contiguous (NCHW) changes the layout in the same pass; channels-last
/// keeps the frames' own (NHWC memory, viewed as [B, 3, H, W]).
pub(super) fn to_float(frames: &Tensor, layout: Memory) -> Result<Tensor> {
    let rgb = frames.f_narrow(3, 0, 3)?.f_permute([0, 3, 1, 2])?; // [B, 3, H, W], a view
    let [b, c, h, w] = <[i64; 4]>::try_from(rgb.size()).expect("4 dimensions");
    let mut out = in_layout([b, c, h, w], layout, |s| {
        Tensor::f_empty(s, (Kind::Float, frames.device()))
    })?;
    out.f_copy_(&rgb)?;
    Ok(out)
}

/// A new [n, c, h, w] tensor lying in `layout`: `make` allocates it in memory order (NCHW, or
/// NHWC then viewed as NCHW).
pub(super) fn in_layout(
    [n, c, h, w]: [i64; 4],
    layout: Memory,
    make: impl FnOnce([i64; 4]) -> Result<Tensor, tch::TchError>,
) -> Result<Tensor> {
    Ok(match layout {
        Memory::Contiguous => make([n, c, h, w])?,
        // Auto is decided before any batch is made (`tune`): channels-last until then.
        Memory::ChannelsLast | Memory::Auto => make([n, h, w, c])?.f_permute([0, 3, 1, 2])?,
    })
}

/// Copy each source frame's bytes into its destination; a batch of large frames is spread
/// over the cores (a 720p batch of 32 is over 100 MB).
pub(super) fn copy_frames<'a>(pairs: impl Iterator<Item = (&'a mut [u8], &'a [u8])>) {
    let pairs: Vec<_> = pairs.collect();
    let bytes: usize = pairs.iter().map(|(d, _)| d.len()).sum();
    let threads = crate::parallel::cores().min(bytes / (4 << 20));
    crate::parallel::map_in_order(pairs, threads, |(d, s)| d.copy_from_slice(s));
}

/// `t` [b, …] with zero rows appended up to `n`.
pub(super) fn pad_rows(t: &Tensor, n: i64) -> Result<Tensor> {
    let mut size = t.size();
    let b = size[0];
    if n <= b {
        return Ok(t.shallow_clone());
    }
    size[0] = n - b;
    let zeros = |s: [i64; 4]| Tensor::f_zeros(s, (t.kind(), t.device()));
    let zeros = match <[i64; 4]>::try_from(size.clone()) {
        // Zeros in the batch's layout, so a channels-last batch stays so once padded.
        Ok(s) if crate::model::is_channels_last(t) => in_layout(s, Memory::ChannelsLast, zeros)?,
        _ => Tensor::f_zeros(size.as_slice(), (t.kind(), t.device()))?,
    };
    Ok(Tensor::f_cat(&[t.shallow_clone(), zeros], 0)?)
}
