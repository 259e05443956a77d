//! Still images on the real model: real photos from scikit-image are classified as what they
//! show, and the heatmap's peak sits on the object.

mod common;

use anyhow::Result;
use common::*;
use std::path::Path;

fn explain_photo(input: &Path, out: &Path, meta: &Path) -> Result<(String, serde_json::Value)> {
    let o = explain(
        input.to_str().unwrap(),
        out.to_str().unwrap(),
        model().to_str().unwrap(),
        &["--metadata", meta.to_str().unwrap()],
    )?;
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = metadata(meta)?;
    assert_eq!(lines.len(), 1);
    Ok((
        String::from_utf8_lossy(&o.stdout).into_owned(),
        lines[0].clone(),
    ))
}

#[test]
fn chelsea_is_a_cat_and_the_map_is_on_her() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let input = photo("chelsea", dir.path())?;
    let out = dir.path().join("chelsea_cam.png");
    let (stdout, meta) = explain_photo(&input, &out, &dir.path().join("m.jsonl"))?;
    let class = meta["class"].as_i64().unwrap();
    assert!(
        class == 285 || class == 281,
        "chelsea classified as {class}"
    );
    assert!(stdout.contains("1.  285  Egyptian cat"), "{stdout}");
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.trim_start().starts_with(char::is_numeric))
            .count(),
        5
    );
    // The photo (451x300) is mostly cat; her face fills the middle. The peak cell of the 7x7
    // map must fall in the central 5x5 cells, not on the border.
    let data: Vec<f64> = meta["cam"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let peak = data
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0;
    let (py, px) = (peak / 7, peak % 7);
    assert!(
        (1..=5).contains(&py) && (1..=5).contains(&px),
        "peak at {py},{px}"
    );
    let img = image::open(&out)?.to_rgb8();
    assert_eq!(img.dimensions(), (451, 300));
    Ok(())
}

#[test]
fn coffee_is_espresso() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let input = photo("coffee", dir.path())?;
    let out = dir.path().join("coffee_cam.jpg");
    let (stdout, meta) = explain_photo(&input, &out, &dir.path().join("m.jsonl"))?;
    assert_eq!(meta["class"], 967, "{stdout}");
    assert_eq!(meta["label"], "espresso");
    assert!(meta["score"].as_f64().unwrap() > 0.5);
    assert_eq!(image::open(&out)?.to_rgb8().dimensions(), (600, 400));
    Ok(())
}
