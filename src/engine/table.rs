//! A batch's results as one table, one row a frame, copied back in one piece: its columns,
//! and a frame's results read from its row.

use anyhow::Result;
use tch::Tensor;

use crate::frame::{CamMap, CamTensor, ClassScore, Explained, Frame};

/// The columns of a batch's result table: the shown map (h·w), its class and probability,
/// the top k probabilities, their class ids, then for --top-k each ranked class and map.
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) k: usize,
    pub(super) ranked: usize,
}

impl Layout {
    pub(super) fn width(&self) -> usize {
        let hw = self.h * self.w;
        hw + 2 + 2 * self.k + self.ranked * (1 + hw)
    }

    /// A frame's results from its row of the table (see `Engine::results_table`); `on_device`:
    /// that row of the table as the engine holds it, whose map is kept as a tensor.
    pub(super) fn explained(
        &self,
        row: &[f32],
        frame: Frame,
        blended: bool,
        on_device: Option<Tensor>,
    ) -> Result<Explained> {
        let hw = self.h * self.w;
        let map = |at: &[f32]| CamMap {
            h: self.h,
            w: self.w,
            data: at[..hw].to_vec(),
        };
        let top_p = &row[hw + 2..hw + 2 + self.k];
        let top_i = &row[hw + 2 + self.k..hw + 2 + 2 * self.k];
        let top: Vec<ClassScore> = top_i
            .iter()
            .zip(top_p)
            .map(|(&c, &p)| ClassScore {
                class: c as i64,
                prob: p,
            })
            .collect();
        let ranked = (0..self.ranked)
            .map(|r| {
                let at = &row[hw + 2 + 2 * self.k + r * (1 + hw)..];
                let class = at[0] as i64;
                let prob = top
                    .iter()
                    .find(|t| t.class == class)
                    .map_or(0.0, |t| t.prob);
                (ClassScore { class, prob }, map(&at[1..]))
            })
            .collect();
        let cam_tensor = match on_device {
            Some(row) => Some(CamTensor(
                row.f_narrow(0, 0, hw as i64)?
                    .f_view([self.h as i64, self.w as i64])?,
            )),
            None => None,
        };
        Ok(Explained {
            blended,
            cam: map(row),
            target: ClassScore {
                class: row[hw] as i64,
                prob: row[hw + 1],
            },
            top,
            ranked,
            boxes: None,
            frame,
            cam_tensor,
        })
    }
}
