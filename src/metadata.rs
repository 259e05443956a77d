//! Per-frame metadata as JSON lines. The field names are a stable interface: later versions
//! add fields, never rename or drop these.

use serde::Serialize;

use crate::frame::{CamMap, Explained};
use crate::localize::Located;

#[derive(Serialize)]
struct CamJson<'a> {
    h: usize,
    w: usize,
    data: &'a [f32],
}

impl<'a> CamJson<'a> {
    fn of(c: &'a CamMap) -> Self {
        CamJson {
            h: c.h,
            w: c.w,
            data: &c.data,
        }
    }
}

#[derive(Serialize)]
struct TopJson<'a> {
    id: i64,
    label: &'a str,
    probability: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    cam: Option<CamJson<'a>>,
}

#[derive(Serialize)]
struct PeakJson {
    x: u32,
    y: u32,
}

#[derive(Serialize)]
struct BoxJson {
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
}

/// A detector's box: its track, class, probability, box and where its own map points.
#[derive(Serialize)]
struct DetectionJson<'a> {
    id: u64,
    class: i64,
    label: &'a str,
    score: f32,
    #[serde(rename = "box")]
    bbox: [f32; 4],
    peak: PeakJson,
    inside: f32,
    level: usize,
    candidate: usize,
    cam: CamJson<'a>,
}

#[derive(Serialize)]
struct Line<'a> {
    /// The stream's name (`0` for a single input unless it is named).
    stream: &'a str,
    frame: u64,
    pts_ns: Option<u64>,
    class: i64,
    label: &'a str,
    score: f32,
    cam: CamJson<'a>,
    method: &'a str,
    topk: Vec<TopJson<'a>>,
    peak: PeakJson,
    #[serde(rename = "box")]
    bbox: Option<BoxJson>,
    /// A detector's boxes, best first (absent for a classifier).
    #[serde(skip_serializing_if = "Option::is_none")]
    boxes: Option<Vec<DetectionJson<'a>>>,
    /// Decoded from damaged data and explained anyway (`--on-damaged explain`; absent else).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    damaged: bool,
}

/// A frame decoded from damaged data and not explained (`--on-damaged mark`).
#[derive(Serialize)]
struct DamagedLine<'a> {
    stream: &'a str,
    frame: u64,
    pts_ns: Option<u64>,
    damaged: bool,
}

/// One JSON object (no newline) for a frame decoded from damaged data and not explained: it
/// says so, with no class and no map.
pub fn damaged_line(frame: &crate::frame::Frame, stream: &str) -> String {
    let l = DamagedLine {
        stream,
        frame: frame.index,
        pts_ns: frame.pts,
        damaged: true,
    };
    serde_json::to_string(&l).expect("metadata serializes")
}

/// One JSON object (no newline) for an explained frame.
/// `loc` is where the shown map points (see `localize`). The schema is docs/metadata.schema.json.
pub fn line(
    e: &Explained,
    stream: &str,
    classes: &[String],
    method: &str,
    loc: &Located,
) -> String {
    let name = |c: i64| classes.get(c as usize).map(String::as_str).unwrap_or("");
    let label = name(e.target.class);
    let topk = if e.ranked.is_empty() {
        e.top
            .iter()
            .map(|t| TopJson {
                id: t.class,
                label: name(t.class),
                probability: t.prob,
                cam: None,
            })
            .collect()
    } else {
        e.ranked
            .iter()
            .map(|(t, cam)| TopJson {
                id: t.class,
                label: name(t.class),
                probability: t.prob,
                cam: Some(CamJson::of(cam)),
            })
            .collect()
    };
    let l = Line {
        stream,
        frame: e.frame.index,
        pts_ns: e.frame.pts,
        class: e.target.class,
        label,
        score: e.target.prob,
        cam: CamJson::of(&e.cam),
        method,
        topk,
        peak: PeakJson {
            x: loc.peak.0,
            y: loc.peak.1,
        },
        bbox: loc.bbox.map(|b| BoxJson {
            x0: b.x0,
            y0: b.y0,
            x1: b.x1,
            y1: b.y1,
        }),
        boxes: e.boxes.as_ref().map(|boxes| {
            let (w, h) = (e.frame.width, e.frame.height);
            boxes
                .iter()
                .map(|d| {
                    let peak = crate::localize::locate_peak(&d.cam, w, h);
                    DetectionJson {
                        id: d.track,
                        class: d.class,
                        label: name(d.class),
                        score: d.score,
                        bbox: d.bbox.map(|v| (v * 10.0).round() / 10.0),
                        peak: PeakJson {
                            x: peak.0,
                            y: peak.1,
                        },
                        inside: crate::detections::inside_share(d, w as usize, h as usize),
                        level: d.level,
                        candidate: d.candidate,
                        cam: CamJson::of(&d.cam),
                    }
                })
                .collect()
        }),
        damaged: e.frame.damaged.is_some(),
    };
    serde_json::to_string(&l).expect("metadata serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{CamMap, ClassScore, Frame};

    #[test]
    fn fields_are_stable() -> anyhow::Result<()> {
        let mut frame = Frame::from_rgb(3, 1, 1, &[0, 0, 0]);
        frame.pts = Some(120_000_000);
        let e = Explained {
            frame,
            blended: false,
            cam: CamMap {
                h: 1,
                w: 2,
                data: vec![0.0, 1.0],
            },
            target: ClassScore {
                class: 1,
                prob: 0.5,
            },
            top: vec![ClassScore {
                class: 1,
                prob: 0.5,
            }],
            ranked: vec![],
            boxes: None,
            cam_tensor: None,
        };
        let loc = crate::localize::Located {
            peak: (0, 0),
            bbox: Some(crate::localize::Box {
                x0: 0,
                y0: 0,
                x1: 1,
                y1: 1,
            }),
        };
        let s = line(&e, "cam1", &["a".into(), "b".into()], "gradcam", &loc);
        assert_eq!(
            s,
            r#"{"stream":"cam1","frame":3,"pts_ns":120000000,"class":1,"label":"b","score":0.5,"cam":{"h":1,"w":2,"data":[0.0,1.0]},"method":"gradcam","topk":[{"id":1,"label":"b","probability":0.5}],"peak":{"x":0,"y":0},"box":{"x0":0,"y0":0,"x1":1,"y1":1}}"#
        );
        Ok(())
    }
}
