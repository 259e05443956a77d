//! Which of a detector's candidates become boxes: the score threshold, class-aware non-maximum
//! suppression and the cap on boxes per frame. Pure data in, indices out; no tch types, so the
//! same code serves every device and is tested against torchvision's `batched_nms` exactly.
//!
//! The NMS is torchvision's: candidates in descending score order; a candidate is suppressed
//! when its IoU with a kept candidate of the same class is above the threshold (strictly), the
//! IoU computed in f32 as `inter / (area_a + area_b - inter)` with areas `(x2 - x1)(y2 - y1)`.

/// One candidate of one frame: its place among the head's K candidates, box in input pixels
/// (x1, y1, x2, y2), probability (after the score's activation), class and level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub index: usize,
    pub bbox: [f32; 4],
    pub score: f32,
    pub class: i64,
    pub level: usize,
}

/// What selection keeps: above `threshold`, after NMS at `iou`, at most `cap` boxes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    pub threshold: f32,
    pub iou: f32,
    pub cap: usize,
}

fn area(b: &[f32; 4]) -> f32 {
    (b[2] - b[0]) * (b[3] - b[1])
}

/// Intersection over union, in torchvision's arithmetic (f32, empty boxes give 0 area).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    inter / (area(a) + area(b) - inter)
}

/// Indices into `boxes` that torchvision's `batched_nms(boxes, scores, classes, iou)` keeps, in
/// its order (descending score; equal scores in index order).
pub fn batched_nms(
    boxes: &[[f32; 4]],
    scores: &[f32],
    classes: &[i64],
    iou_max: f32,
) -> Vec<usize> {
    assert!(boxes.len() == scores.len() && scores.len() == classes.len());
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    // total_cmp: a NaN score sorts first and is kept, as torch's sort puts NaN at the top.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut kept: Vec<usize> = Vec::new();
    for &i in &order {
        let suppressed = kept
            .iter()
            .any(|&k| classes[k] == classes[i] && iou(&boxes[k], &boxes[i]) > iou_max);
        if !suppressed {
            kept.push(i);
        }
    }
    kept
}

/// The boxes a frame shows: candidates above the threshold, NMS per class, the best `cap`.
pub fn select(candidates: &[Candidate], rules: Rules) -> Vec<Candidate> {
    let above: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.score > rules.threshold)
        .collect();
    let boxes: Vec<[f32; 4]> = above.iter().map(|c| c.bbox).collect();
    let scores: Vec<f32> = above.iter().map(|c| c.score).collect();
    let classes: Vec<i64> = above.iter().map(|c| c.class).collect();
    batched_nms(&boxes, &scores, &classes, rules.iou)
        .into_iter()
        .take(rules.cap)
        .map(|i| *above[i])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(index: usize, bbox: [f32; 4], score: f32, class: i64) -> Candidate {
        Candidate {
            index,
            bbox,
            score,
            class,
            level: 0,
        }
    }

    #[test]
    fn iou_by_hand() {
        let a = [0.0, 0.0, 2.0, 2.0];
        assert_eq!(iou(&a, &a), 1.0);
        // Overlap 1x2 = 2, union 4 + 4 - 2 = 6.
        assert_eq!(iou(&a, &[1.0, 0.0, 3.0, 2.0]), 2.0 / 6.0);
        assert_eq!(iou(&a, &[5.0, 5.0, 6.0, 6.0]), 0.0);
    }

    #[test]
    fn overlapping_boxes_of_one_class_keep_the_best_and_other_classes_stay() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 1.0, 11.0, 11.0], // IoU 81/119 = 0.68 with the first
            [1.0, 1.0, 11.0, 11.0], // the same box, another class
            [20.0, 20.0, 30.0, 30.0],
        ];
        let scores = [0.8, 0.9, 0.5, 0.3];
        let classes = [0, 0, 1, 0];
        assert_eq!(batched_nms(&boxes, &scores, &classes, 0.5), vec![1, 2, 3]);
        // At 0.7 the two boxes of class 0 both stay.
        assert_eq!(
            batched_nms(&boxes, &scores, &classes, 0.7),
            vec![1, 0, 2, 3]
        );
    }

    #[test]
    fn iou_equal_to_the_threshold_is_not_suppressed() {
        // Two boxes whose IoU is exactly the threshold (2 / 6) both stay.
        let boxes = [[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0]];
        let third = iou(&boxes[0], &boxes[1]);
        assert_eq!(batched_nms(&boxes, &[0.9, 0.8], &[0, 0], third), vec![0, 1]);
        assert_eq!(
            batched_nms(&boxes, &[0.9, 0.8], &[0, 0], third - 1e-6),
            vec![0]
        );
    }

    #[test]
    fn select_thresholds_then_caps_in_score_order() {
        let c = [
            cand(0, [0.0, 0.0, 1.0, 1.0], 0.1, 0),
            cand(1, [10.0, 0.0, 11.0, 1.0], 0.6, 0),
            cand(2, [20.0, 0.0, 21.0, 1.0], 0.9, 0),
            cand(3, [30.0, 0.0, 31.0, 1.0], 0.7, 0),
        ];
        let rules = Rules {
            threshold: 0.5,
            iou: 0.5,
            cap: 2,
        };
        let kept: Vec<usize> = select(&c, rules).iter().map(|c| c.index).collect();
        assert_eq!(kept, vec![2, 3]);
        let none = Rules {
            threshold: 0.95,
            ..rules
        };
        assert!(select(&c, none).is_empty());
    }
}
