//! Per-frame metadata as JSON lines. The field names are a stable interface: later versions
//! add fields, never rename or drop these.

use serde::Serialize;

use crate::frame::Explained;

#[derive(Serialize)]
struct CamJson<'a> {
    h: usize,
    w: usize,
    data: &'a [f32],
}

#[derive(Serialize)]
struct Line<'a> {
    frame: u64,
    pts_ns: Option<u64>,
    class: i64,
    label: &'a str,
    score: f32,
    cam: CamJson<'a>,
    method: &'a str,
}

/// One JSON object (no newline) for an explained frame.
pub fn line(e: &Explained, classes: &[String], method: &str) -> String {
    let label = classes
        .get(e.target.class as usize)
        .map(String::as_str)
        .unwrap_or("");
    let l = Line {
        frame: e.frame.index,
        pts_ns: e.frame.pts,
        class: e.target.class,
        label,
        score: e.target.prob,
        cam: CamJson {
            h: e.cam.h,
            w: e.cam.w,
            data: &e.cam.data,
        },
        method,
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
            cam: CamMap {
                h: 1,
                w: 2,
                data: vec![0.0, 1.0],
            },
            target: ClassScore {
                class: 1,
                prob: 0.5,
            },
            top: vec![],
        };
        let s = line(&e, &["a".into(), "b".into()], "gradcam");
        assert_eq!(
            s,
            r#"{"frame":3,"pts_ns":120000000,"class":1,"label":"b","score":0.5,"cam":{"h":1,"w":2,"data":[0.0,1.0]},"method":"gradcam"}"#
        );
        Ok(())
    }
}
