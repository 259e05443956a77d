//! Track ids for a detector's boxes, one stream at a time, in frame order: a box takes the id of
//! the track of its class it overlaps most (IoU at least `MIN_IOU`, greedy, best pairs first);
//! a track missing for up to `MAX_MISSED` frames keeps its id for when its box comes back; a box
//! matching no track starts one. With smoothing, each track's map is the moving average of its
//! boxes' maps (S x the track's previous map + (1 - S) x the box's own), started afresh by a
//! new track. Pure data; no tch types.

use crate::frame::Detection;

/// Least IoU between a box and its track's last box.
pub const MIN_IOU: f32 = 0.3;
/// Frames a track may miss its box and keep its id.
pub const MAX_MISSED: u32 = 10;

struct Track {
    id: u64,
    class: i64,
    bbox: [f32; 4],
    missed: u32,
    /// The smoothed map (level resolution), when smoothing.
    map: Option<Vec<f32>>,
}

/// The tracks of one stream.
pub struct Tracker {
    tracks: Vec<Track>,
    next: u64,
    smooth: f32,
}

impl Tracker {
    /// `smooth`: S in [0, 1), 0 is off (see the module's doc).
    pub fn new(smooth: f32) -> Tracker {
        Tracker {
            tracks: Vec::new(),
            next: 1,
            smooth,
        }
    }

    /// Give each of a frame's boxes its track id (and, smoothing, its track's map).
    pub fn update(&mut self, boxes: &mut [Detection]) {
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (b, d) in boxes.iter().enumerate() {
            for (t, tr) in self.tracks.iter().enumerate() {
                if tr.class == d.class {
                    let iou = crate::select::iou(&tr.bbox, &d.bbox);
                    if iou >= MIN_IOU {
                        pairs.push((iou, b, t));
                    }
                }
            }
        }
        // Best overlaps first; ties in box, then track order.
        pairs.sort_by(|x, y| y.0.total_cmp(&x.0).then((x.1, x.2).cmp(&(y.1, y.2))));
        let mut track_of = vec![None; boxes.len()];
        let mut taken = vec![false; self.tracks.len()];
        for (_, b, t) in pairs {
            if track_of[b].is_none() && !taken[t] {
                track_of[b] = Some(t);
                taken[t] = true;
            }
        }
        for (t, tr) in self.tracks.iter_mut().enumerate() {
            if !taken[t] {
                tr.missed += 1;
            }
        }
        for (b, d) in boxes.iter_mut().enumerate() {
            let t = match track_of[b] {
                Some(t) => t,
                None => {
                    self.tracks.push(Track {
                        id: self.next,
                        class: d.class,
                        bbox: d.bbox,
                        missed: 0,
                        map: None,
                    });
                    self.next += 1;
                    self.tracks.len() - 1
                }
            };
            let tr = &mut self.tracks[t];
            tr.bbox = d.bbox;
            tr.missed = 0;
            d.track = tr.id;
            if self.smooth > 0.0 {
                let s = self.smooth;
                match &mut tr.map {
                    Some(m) if m.len() == d.cam.data.len() => {
                        for (m, v) in m.iter_mut().zip(&d.cam.data) {
                            *m = s * *m + (1.0 - s) * v;
                        }
                        d.cam.data.copy_from_slice(m);
                    }
                    _ => tr.map = Some(d.cam.data.clone()),
                }
            }
        }
        self.tracks.retain(|t| t.missed <= MAX_MISSED);
    }

    /// Tracks alive now (seen within the last `MAX_MISSED` frames).
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::CamMap;

    fn det(class: i64, x: f32, v: f32) -> Detection {
        Detection {
            track: 0,
            class,
            score: 0.9,
            bbox: [x, 0.0, x + 10.0, 10.0],
            level: 0,
            candidate: 0,
            cam: CamMap {
                h: 1,
                w: 2,
                data: vec![v, 0.0],
            },
        }
    }

    #[test]
    fn boxes_keep_their_ids_as_they_move() {
        let mut t = Tracker::new(0.0);
        let mut f = vec![det(0, 0.0, 1.0), det(0, 50.0, 1.0)];
        t.update(&mut f);
        assert_eq!((f[0].track, f[1].track), (1, 2));
        // Both moved 2 px, listed in the other order.
        let mut f = vec![det(0, 52.0, 1.0), det(0, 2.0, 1.0)];
        t.update(&mut f);
        assert_eq!((f[0].track, f[1].track), (2, 1));
    }

    #[test]
    fn a_box_of_another_class_or_far_away_starts_a_track() {
        let mut t = Tracker::new(0.0);
        t.update(&mut [det(0, 0.0, 1.0)]);
        let mut f = vec![det(1, 0.0, 1.0), det(0, 30.0, 1.0)];
        t.update(&mut f);
        assert_eq!((f[0].track, f[1].track), (2, 3));
    }

    #[test]
    fn a_box_missing_for_a_few_frames_keeps_its_id_then_loses_it() {
        let mut t = Tracker::new(0.0);
        t.update(&mut [det(0, 0.0, 1.0)]);
        for _ in 0..MAX_MISSED {
            t.update(&mut []);
        }
        let mut f = vec![det(0, 1.0, 1.0)];
        t.update(&mut f);
        assert_eq!(f[0].track, 1);
        for _ in 0..=MAX_MISSED {
            t.update(&mut []);
        }
        assert!(t.is_empty());
        let mut f = vec![det(0, 1.0, 1.0)];
        t.update(&mut f);
        assert_eq!(f[0].track, 2);
    }

    #[test]
    fn smoothing_follows_the_track() {
        let mut t = Tracker::new(0.5);
        let mut f = vec![det(0, 0.0, 1.0)];
        t.update(&mut f);
        assert_eq!(f[0].cam.data, vec![1.0, 0.0]);
        let mut f = vec![det(0, 1.0, 0.0), det(0, 80.0, 0.0)];
        t.update(&mut f);
        // The moved box is averaged with its track; the new one starts afresh.
        assert_eq!(f[0].cam.data, vec![0.5, 0.0]);
        assert_eq!(f[1].cam.data, vec![0.0, 0.0]);
    }
}
