//! Grad-CAM (Selvaraju et al., arXiv 1610.02391): the weight of channel k is the spatial mean of
//! d(score of the target class, before softmax) / d(A_k); the map is ReLU(sum_k w_k A_k).
//! Gradients flow through the head only: the activations come in as a leaf tensor. The
//! backward pass here serves every gradient-based method (see `methods.rs`).

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

/// Maps and the scores they explain, for a whole batch.
#[derive(Debug)]
pub struct CamBatch {
    /// [B, h, w], each map min-max normalized to [0, 1].
    pub maps: Tensor,
    /// [B, K] pre-softmax scores.
    pub logits: Tensor,
    /// [B] the class each map explains (int64).
    pub targets: Tensor,
}

/// Which class each frame's map explains.
#[derive(Debug)]
pub enum Target {
    /// The class of this rank in each frame's prediction (0: the top-1).
    Rank(usize),
    /// This class in every frame.
    Class(i64),
    /// One class per frame, chosen by the caller: [B] int64 class ids, on any device.
    PerFrame(Tensor),
}

/// The logits, the target of each frame, and (when `with_grads`) the gradient of the target
/// scores w.r.t. the activations. One backward pass serves the whole batch: frames are
/// independent in the head, so the gradient of the summed target scores w.r.t. frame b's
/// activations is that of frame b's score.
pub(crate) fn targets_and_grads(
    acts: &Tensor,
    head: impl Fn(&Tensor) -> Result<Tensor>,
    target: Target,
    with_grads: bool,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let size = acts.size();
    let &[b, _c, _h, _w] = size.as_slice() else {
        bail!("activations must be [B, C, h, w], got {size:?}");
    };
    let a = acts.detach().set_requires_grad(with_grads); // a leaf: backward stops here
    let logits = if with_grads {
        head(&a)?
    } else {
        tch::no_grad(|| head(&a))?
    }; // [B, K]
    let k = match logits.size().as_slice() {
        &[lb, k] if lb == b => k,
        other => bail!("head must give [{b}, K] logits, got {other:?}"),
    };
    let targets = match target {
        Target::Class(c) if (0..k).contains(&c) => Tensor::full([b], c, (Kind::Int64, a.device())),
        Target::Class(c) => bail!(
            "class {c} is out of range: the model has {k} classes (0 to {})",
            k - 1
        ),
        Target::Rank(r) if (r as i64) < k => {
            let (_, idx) = logits.detach().topk(r as i64 + 1, 1, true, true);
            idx.select(1, r as i64) // [B]
        }
        Target::Rank(r) => {
            bail!("rank {} is out of range: the model has {k} classes", r + 1)
        }
        Target::PerFrame(v) if v.size() == [b] && v.kind() == Kind::Int64 => {
            v.f_to_device(a.device())?
        }
        Target::PerFrame(v) => bail!(
            "per-frame targets {:?} {:?} for {b} frames: need [{b}] int64 class ids",
            v.size(),
            v.kind()
        ),
    };
    let grads = if with_grads {
        let score = logits
            .gather(1, &targets.unsqueeze(1), false)
            .sum(Kind::Float); // scalar
        let mut g = Tensor::f_run_backward(&[&score], &[&a], false, false)?;
        Some(g.remove(0))
    } else {
        None
    };
    Ok((logits.detach(), targets, grads))
}

/// Per-map min-max normalization to [0, 1] with pytorch-grad-cam's epsilon: an all-zero map
/// stays zero instead of becoming NaN. [B, h, w] → [B, h, w].
pub fn normalize(cam: &Tensor) -> Tensor {
    let min = cam.amin([1i64, 2].as_slice(), true); // [B, 1, 1]
    let shifted = cam - min;
    let max = shifted.amax([1i64, 2].as_slice(), true); // [B, 1, 1]
    shifted / (max + 1e-7)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cam::methods::gradcam;

    fn vec(t: &Tensor) -> Result<Vec<f32>> {
        Ok(Vec::<f32>::try_from(t.flatten(0, -1))?)
    }

    /// Head = global average pooling, then a linear layer with weights `w` [K, C], no bias.
    fn pool_linear(w: Tensor) -> impl Fn(&Tensor) -> Result<Tensor> {
        move |a: &Tensor| {
            Ok(a.mean_dim([2i64, 3].as_slice(), false, Kind::Float)
                .matmul(&w.tr()))
        }
    }

    #[test]
    fn hand_checked_example() -> Result<()> {
        // One frame, 2 channels of 2x2:
        //   A0 = [[1, 0], [0, 1]]  A1 = [[0, 2], [2, 0]]
        // Head: mean-pool then W = [[1, -1], [0.5, 1]], so scores are
        //   s0 = 1 * 0.5 - 1 * 1 = -0.5,  s1 = 0.5 * 0.5 + 1 * 1 = 1.25 → top-1 is class 1.
        // d s1 / d A_k = W[1, k] / 4 everywhere, so the weights are (0.125, 0.25) and
        //   cam = relu(0.125 * A0 + 0.25 * A1) = [[0.125, 0.5], [0.5, 0.125]]
        // → normalized (x - 0.125) / 0.375 = [[0, 1], [1, 0]].
        let a = Tensor::from_slice(&[1f32, 0., 0., 1., 0., 2., 2., 0.]).view([1, 2, 2, 2]);
        let w = Tensor::from_slice(&[1f32, -1., 0.5, 1.]).view([2, 2]);
        let out = gradcam(&a, pool_linear(w.shallow_clone()), None)?;
        assert_eq!(Vec::<i64>::try_from(&out.targets)?, vec![1]);
        let m = vec(&out.maps)?;
        let want = [0f32, 1., 1., 0.];
        for (got, want) in m.iter().zip(want) {
            assert!((got - want).abs() < 1e-5, "{m:?}");
        }
        // Class 0: weights (0.25, -0.25), cam = relu(0.25 A0 - 0.25 A1) = [[0.25, 0], [0, 0.25]]
        // → [[1, 0], [0, 1]].
        let out = gradcam(&a, pool_linear(w), Some(0))?;
        let m = vec(&out.maps)?;
        for (got, want) in m.iter().zip([1f32, 0., 0., 1.]) {
            assert!((got - want).abs() < 1e-5, "{m:?}");
        }
        Ok(())
    }

    #[test]
    fn all_negative_evidence_gives_zero_not_nan() -> Result<()> {
        // Class 0 has weight -1 on the only channel: the weighted sum is ≤ 0 everywhere, ReLU zeroes it.
        let a = Tensor::from_slice(&[1f32, 2., 3., 4.]).view([1, 1, 2, 2]);
        let w = Tensor::from_slice(&[-1f32, 1.]).view([2, 1]);
        let out = gradcam(&a, pool_linear(w), Some(0))?;
        assert_eq!(vec(&out.maps)?, vec![0.0; 4]);
        Ok(())
    }

    #[test]
    fn out_of_range_class_is_an_error() {
        let a = Tensor::ones([1, 1, 2, 2], (Kind::Float, tch::Device::Cpu));
        let w = Tensor::ones([3, 1], (Kind::Float, tch::Device::Cpu));
        let e = gradcam(&a, pool_linear(w), Some(3)).expect_err("must fail");
        assert!(e.to_string().contains("out of range"), "{e}");
    }

    #[test]
    fn batch_equals_frames_one_by_one() -> Result<()> {
        tch::manual_seed(1);
        let a = Tensor::randn([5, 4, 3, 3], (Kind::Float, tch::Device::Cpu));
        let w = Tensor::randn([6, 4], (Kind::Float, tch::Device::Cpu));
        let head = |x: &Tensor| {
            // A non-linear head, to catch any cross-frame mixing in the backward pass.
            Ok(x.relu()
                .mean_dim([2i64, 3].as_slice(), false, Kind::Float)
                .matmul(&w.tr()))
        };
        let all = gradcam(&a, head, None)?;
        for i in 0..5 {
            let one = gradcam(&a.narrow(0, i, 1), head, None)?;
            let diff = (one.maps - all.maps.narrow(0, i, 1))
                .abs()
                .max()
                .double_value(&[]);
            assert!(diff < 1e-6, "frame {i} differs by {diff}");
            assert_eq!(one.targets.int64_value(&[0]), all.targets.int64_value(&[i]));
        }
        Ok(())
    }
}
