//! The CAM methods, each as published and as PyPI grad-cam (pytorch-grad-cam) computes it,
//! from the target layer's activations A [B, C, h, w] and, for all but EigenCAM, the gradient
//! G = d(target score) / dA of one backward pass through the head. Every map is ReLU'd and
//! min-max normalized per frame.
//!
//! | method    | map before ReLU                                                          |
//! |-----------|--------------------------------------------------------------------------|
//! | gradcam   | Σ_k mean_ij(G_k) A_k                                                      |
//! | gradcam++ | Σ_k (Σ_ij relu(G_k) α_k) A_k, α = G² / (2G² + Σ_ij A_k · G³ + 1e-6), 0 where G = 0 |
//! | xgradcam  | Σ_k (Σ_ij G_k A_k / (Σ_ij A_k + 1e-7)) A_k                                |
//! | layercam  | Σ_k relu(G_k) ⊙ A_k                                                       |
//! | hirescam  | Σ_k G_k ⊙ A_k                                                             |
//! | odam      | Σ_k G_k ⊙ A_k: ODAM's (Zhao & Chan, ICLR 2023) for a detector's box, as hirescam |
//! | eigencam  | the projection of the centred activations on their first principal component |
//!
//! A principal component's sign is arbitrary, and LAPACK builds pick it differently (numpy's and
//! libtorch's disagree on the same matrix, and a GPU's solver on its own): EigenCAM here turns
//! each frame's projection so that its largest value in magnitude is positive (scikit-learn's
//! `svd_flip` convention), the same on every device.

use anyhow::Result;
use tch::{Kind, Tensor};

use super::gradcam::{normalize, targets_and_grads, CamBatch, Target};
use crate::settings::named::MethodChoice;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    GradCam,
    GradCamPlusPlus,
    XGradCam,
    LayerCam,
    HiResCam,
    /// Gradient × activation, not pooled: the detectors' default (one map per box); on a
    /// classifier the same map as HiResCAM.
    Odam,
    EigenCam,
}

impl Method {
    pub const ALL: [Method; 7] = [
        Method::GradCam,
        Method::GradCamPlusPlus,
        Method::XGradCam,
        Method::LayerCam,
        Method::HiResCam,
        Method::Odam,
        Method::EigenCam,
    ];

    /// The name used by `--method`, the config file and the metadata.
    pub fn name(self) -> &'static str {
        match self {
            Method::GradCam => "gradcam",
            Method::GradCamPlusPlus => "gradcam++",
            Method::XGradCam => "xgradcam",
            Method::LayerCam => "layercam",
            Method::HiResCam => "hirescam",
            Method::Odam => "odam",
            Method::EigenCam => "eigencam",
        }
    }

    /// The method `--method` names; None for `auto` (the model's kind decides).
    pub fn chosen(choice: MethodChoice) -> Option<Method> {
        Some(match choice {
            MethodChoice::Auto => return None,
            MethodChoice::GradCam => Method::GradCam,
            MethodChoice::GradCamPlusPlus => Method::GradCamPlusPlus,
            MethodChoice::XGradCam => Method::XGradCam,
            MethodChoice::LayerCam => Method::LayerCam,
            MethodChoice::HiResCam => Method::HiResCam,
            MethodChoice::Odam => Method::Odam,
            MethodChoice::EigenCam => Method::EigenCam,
        })
    }

    /// EigenCAM needs no backward pass.
    pub fn uses_gradients(self) -> bool {
        self != Method::EigenCam
    }
}

const SPATIAL: [i64; 2] = [2, 3];

fn spatial_sum(t: &Tensor) -> Tensor {
    t.sum_dim_intlist(SPATIAL.as_slice(), true, Kind::Float)
}

fn channel_sum(t: &Tensor) -> Tensor {
    t.sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
}

/// `method`'s maps for a batch: `acts` [B, C, h, w] from the target layer (computed without
/// autograd), `head` from activations to logits, `target` the class to explain.
pub fn compute(
    method: Method,
    acts: &Tensor,
    head: impl Fn(&Tensor) -> Result<Tensor>,
    target: Target,
) -> Result<CamBatch> {
    let (logits, targets, grads) = targets_and_grads(acts, head, target, method.uses_gradients())?;
    let cam = combine(method, &acts.detach(), grads.as_ref())?;
    Ok(CamBatch {
        maps: normalize(&cam.relu()),
        logits,
        targets,
    })
}

/// `method`'s map before its ReLU and normalization, from activations `a` [B, C, h, w] and
/// (all but EigenCAM) the gradient `g` of the explained scores with respect to them: [B, h, w].
pub fn combine(method: Method, a: &Tensor, g: Option<&Tensor>) -> Result<Tensor> {
    Ok(match (method, g) {
        (Method::EigenCam, _) => first_component(a),
        (Method::GradCam, Some(g)) => {
            channel_sum(&(g.mean_dim(SPATIAL.as_slice(), true, Kind::Float) * a))
        }
        (Method::GradCamPlusPlus, Some(g)) => {
            let g2 = g.square();
            let g3 = &g2 * g;
            let alpha = &g2 / (&g2 * 2.0 + spatial_sum(a) * g3 + 1e-6);
            let alpha = alpha.where_self(&g.ne(0.0), &alpha.zeros_like());
            channel_sum(&(spatial_sum(&(g.relu() * alpha)) * a))
        }
        (Method::XGradCam, Some(g)) => {
            let w = spatial_sum(&(g * a / (spatial_sum(a) + 1e-7)));
            channel_sum(&(w * a))
        }
        (Method::LayerCam, Some(g)) => channel_sum(&(g.relu() * a)),
        (Method::HiResCam | Method::Odam, Some(g)) => channel_sum(&(g * a)),
        (m, None) => anyhow::bail!("{} needs gradients", m.name()),
    })
}

/// EigenCAM: each frame's activations as hw points in C dimensions, centred, projected on their
/// first right singular vector, signed so that the projection's largest magnitude is positive.
/// [B, C, h, w] → [B, h, w].
fn first_component(a: &Tensor) -> Tensor {
    let size = a.size();
    let (b, c, h, w) = (size[0], size[1], size[2], size[3]);
    let a = a.nan_to_num(0.0, None::<f64>, None::<f64>);
    let x = a.reshape([b, c, h * w]).transpose(1, 2); // [B, hw, C]
    let x = &x - x.mean_dim([1i64].as_slice(), true, Kind::Float);
    let (_u, _s, v) = x.svd(true, true); // v [B, C, min(hw, C)]
    let v0 = v.select(2, 0).unsqueeze(-1); // [B, C, 1]
    let p = x.matmul(&v0).reshape([b, h * w]); // [B, hw]
    let sign = p.gather(1, &p.abs().argmax(1, true), false).sign(); // [B, 1]
    (p * sign).reshape([b, h, w])
}

/// Grad-CAM for a batch.
///
/// `acts` are the target layer's activations [B, C, h, w], computed without autograd; `head`
/// maps activations to logits [B, K]. `class` fixes the target, else each frame's top-1 is used.
pub fn gradcam(
    acts: &Tensor,
    head: impl Fn(&Tensor) -> Result<Tensor>,
    class: Option<i64>,
) -> Result<CamBatch> {
    let target = class.map_or(Target::Rank(0), Target::Class);
    compute(Method::GradCam, acts, head, target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vec(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    fn close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-4, "{got:?} != {want:?}");
        }
    }

    #[test]
    fn every_method_is_a_choice_by_its_own_name() {
        use crate::settings::named::Named;
        for m in Method::ALL {
            let choice: MethodChoice = m.name().parse().expect("a choice");
            assert_eq!(Method::chosen(choice), Some(m));
        }
        assert_eq!(MethodChoice::VALUES.len(), Method::ALL.len() + 1);
        assert_eq!(Method::chosen(MethodChoice::Auto), None);
    }

    /// One frame, 1 channel, 2x2, A = [[1, 2], [3, 4]]; the head is s = Σ_ij W_ij A_ij with
    /// W = [[1, -1], [0, 2]] (class 0) so G = W exactly.
    fn one_channel() -> (Tensor, impl Fn(&Tensor) -> Result<Tensor>) {
        let a = Tensor::from_slice(&[1f32, 2., 3., 4.]).view([1, 1, 2, 2]);
        let w = Tensor::from_slice(&[1f32, -1., 0., 2.]).view([1, 1, 2, 2]);
        let head = move |x: &Tensor| {
            Ok((x * &w)
                .sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Float)
                .unsqueeze(1))
        };
        (a, head)
    }

    #[test]
    fn hand_checked_elementwise_methods() -> Result<()> {
        let (a, head) = one_channel();
        // HiResCAM: G ⊙ A = [[1, -2], [0, 8]] → relu [[1, 0], [0, 8]] → /8.
        let m = compute(Method::HiResCam, &a, &head, Target::Rank(0))?;
        close(&vec(&m.maps), &[0.125, 0., 0., 1.]);
        // LayerCAM: relu(G) ⊙ A = [[1, 0], [0, 8]]: the same here.
        let m = compute(Method::LayerCam, &a, &head, Target::Rank(0))?;
        close(&vec(&m.maps), &[0.125, 0., 0., 1.]);
        // Grad-CAM: mean(G) = 0.5, 0.5 A = [[.5, 1], [1.5, 2]] → (x - .5) / 1.5.
        let m = compute(Method::GradCam, &a, &head, Target::Rank(0))?;
        close(&vec(&m.maps), &[0., 1. / 3., 2. / 3., 1.]);
        // XGradCAM: w = Σ G A / Σ A = 7 / 10 > 0: the same shape as A.
        let m = compute(Method::XGradCam, &a, &head, Target::Rank(0))?;
        close(&vec(&m.maps), &[0., 1. / 3., 2. / 3., 1.]);
        Ok(())
    }

    #[test]
    fn hand_checked_gradcam_plus_plus() -> Result<()> {
        let (a, head) = one_channel();
        // ΣA = 10. α_ij = G²/(2G² + 10 G³ + 1e-6): G=1 → 1/12, G=-1 → 1/(2-10) (relu(G)=0
        // drops it), G=0 → 0, G=2 → 4/(8+80) = 1/22. w = 1·(1/12) + 2·(1/22) > 0, so the map
        // is A's shape again.
        let m = compute(Method::GradCamPlusPlus, &a, &head, Target::Rank(0))?;
        close(&vec(&m.maps), &[0., 1. / 3., 2. / 3., 1.]);
        Ok(())
    }

    #[test]
    fn eigencam_follows_the_dominant_pattern() -> Result<()> {
        // Two channels carrying the same spatial pattern, scaled: the first component is that
        // pattern, centred [-2.25, -1.25, -0.25, 3.75], turned so that its largest magnitude is
        // positive, whichever sign the SVD gave; ReLU keeps the positive side.
        let p = [0f32, 1., 2., 6.];
        let mut data = Vec::new();
        data.extend(p.iter().map(|v| v * 2.0));
        data.extend(p.iter().map(|v| v * 1.0));
        let a = Tensor::from_slice(&data).view([1, 2, 2, 2]);
        let head = |x: &Tensor| Ok(x.mean_dim([2i64, 3].as_slice(), false, Kind::Float));
        let m = compute(Method::EigenCam, &a, head, Target::Rank(0))?;
        close(&vec(&m.maps), &[0., 0., 0., 1.]);
        // Negated activations have the same principal axis: the same map, whatever the SVD's sign.
        let m = compute(Method::EigenCam, &(-a), head, Target::Rank(0))?;
        close(&vec(&m.maps), &[0., 0., 0., 1.]);
        Ok(())
    }

    #[test]
    fn every_method_batches_like_frames_one_by_one() -> Result<()> {
        tch::manual_seed(2);
        let a = Tensor::randn([4, 5, 3, 3], (Kind::Float, tch::Device::Cpu)).relu();
        let w = Tensor::randn([6, 5], (Kind::Float, tch::Device::Cpu));
        let head = |x: &Tensor| {
            Ok(x.relu()
                .mean_dim([2i64, 3].as_slice(), false, Kind::Float)
                .matmul(&w.tr()))
        };
        for m in Method::ALL {
            let all = compute(m, &a, head, Target::Rank(1))?;
            for i in 0..4 {
                let one = compute(m, &a.narrow(0, i, 1), head, Target::Rank(1))?;
                let diff = (one.maps - all.maps.narrow(0, i, 1))
                    .abs()
                    .max()
                    .double_value(&[]);
                assert!(diff < 1e-5, "{}: frame {i} differs by {diff}", m.name());
            }
        }
        Ok(())
    }
}
