//! `--input photos/ --output out/`: every image of a folder explained by one process, in
//! batches through the same worker, engine and renderer as a video (the model loads once).
//! One line per image (file, class, probability) and a summary; an unreadable file is one
//! line and is skipped, and the exit status says some failed. Each picture is written whole
//! or not at all.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};

use crate::engine::{self, ModelInfo};
use crate::frame::{Explained, Frame};
use crate::outfile::{LineFile, OutFile};
use crate::render::{Look, Renderer};
use crate::stats::Stats;
use crate::{localize, metadata, still, worker};

/// The images of `dir` (by the extensions `--input` takes for an image), sorted by name.
pub fn images_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && crate::config::is_image_path(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Where image `input` goes under `pattern` (`out/{name}.png`).
fn destination(pattern: &Path, input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    PathBuf::from(pattern.to_string_lossy().replace("{name}", &stem))
}

/// What the run is asked: the folder, the output pattern, the metadata file and how to draw.
pub struct Job<'a> {
    pub dir: &'a Path,
    pub pattern: &'a Path,
    pub metadata: Option<&'a Path>,
    pub upright: bool,
    pub look: Look,
    pub method: &'static str,
}

pub fn run(job: Job, settings: engine::Settings, batch: usize) -> Result<()> {
    let start = Instant::now();
    let files = images_in(job.dir)?;
    if files.is_empty() {
        return Err(crate::config::usage(format!(
            "the folder {} holds no images (.png .jpg .jpeg .bmp .webp .tif .tiff)",
            job.dir.display()
        )));
    }
    if let Some(parent) = job.pattern.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the output folder {}", parent.display()))?;
    }
    let (frames_tx, frames_rx) = crossbeam_channel::bounded(batch * 2);
    let (results_tx, results_rx) = crossbeam_channel::bounded(2);
    let (info, worker) = worker::spawn(
        settings,
        vec![frames_rx],
        results_tx,
        Arc::new(Stats::default()),
    )?;
    let mut renderer = Renderer::new(job.look, &info, &[("folder", None)])?;
    let reader = spawn_reader(files.clone(), job.upright, frames_tx)?;
    let mut lines = job.metadata.map(LineFile::create).transpose()?;
    let mut explained = 0;
    for delivery in results_rx.iter() {
        for e in delivery.explained {
            let path = &files[e.frame.index as usize];
            if let Some(m) = &mut lines {
                m.line(&line_for(&e, path, &info, job.method)?)?;
            }
            write(
                &mut renderer,
                e,
                path,
                &destination(job.pattern, path),
                &info,
            )?;
            explained += 1;
        }
    }
    let unreadable = reader
        .join()
        .map_err(|_| anyhow!("the image reader panicked"))?;
    worker
        .join()
        .map_err(|_| anyhow!("the worker thread panicked"))??;
    if let Some(m) = lines {
        m.commit()?;
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "done: {explained} images in {secs:.1} s ({:.1} images/s) on {} with {} → {}{}",
        explained as f64 / secs.max(1e-9),
        info.device,
        info.name,
        job.pattern.display(),
        if unreadable.is_empty() {
            String::new()
        } else {
            format!(", {} skipped", unreadable.len())
        }
    );
    if !unreadable.is_empty() {
        let names: Vec<String> = unreadable.iter().map(|p| p.display().to_string()).collect();
        anyhow::bail!(
            "{} of {} images could not be read: {}",
            unreadable.len(),
            files.len(),
            names.join(", ")
        );
    }
    Ok(())
}

/// Read each image on a thread of its own, so that decoding the next ones overlaps the model;
/// the thread returns the files it could not read (each reported in one line).
fn spawn_reader(
    files: Vec<PathBuf>,
    upright: bool,
    frames: crossbeam_channel::Sender<Frame>,
) -> Result<std::thread::JoinHandle<Vec<PathBuf>>> {
    std::thread::Builder::new()
        .name("gradcam-images".into())
        .spawn(move || {
            let mut unreadable = Vec::new();
            for (i, path) in files.iter().enumerate() {
                match still::read(path, upright) {
                    Ok((img, _)) => {
                        let frame =
                            Frame::from_rgb(i as u64, img.width(), img.height(), img.as_raw());
                        if frames.send(frame).is_err() {
                            break; // the worker stopped; it says why
                        }
                    }
                    Err(e) => {
                        eprintln!("skipped: {e:#}");
                        unreadable.push(path.clone());
                    }
                }
            }
            unreadable
        })
        .context("starting the image reader")
}

/// The image's metadata line, naming its file.
fn line_for(e: &Explained, path: &Path, info: &ModelInfo, method: &str) -> Result<String> {
    let loc = localize::locate(&e.cam, e.frame.width, e.frame.height);
    let line = metadata::line(e, "folder", &info.classes, method, &loc);
    let mut v: serde_json::Value = serde_json::from_str(&line)?;
    v["file"] = serde_json::Value::String(path.display().to_string());
    Ok(v.to_string())
}

/// Draw one explained image and write it to `dest` (whole or not at all); print its line.
fn write(
    renderer: &mut Renderer,
    e: Explained,
    path: &Path,
    dest: &Path,
    info: &ModelInfo,
) -> Result<()> {
    let target = e.target;
    let frame = renderer
        .render(vec![e])?
        .pop()
        .expect("one frame in, one out");
    let format = image::ImageFormat::from_path(dest).map_err(|_| {
        anyhow!(
            "output {}: unknown image format; use .png or .jpg",
            dest.display()
        )
    })?;
    let (out, file) = OutFile::create(dest)?;
    let rgb =
        image::RgbImage::from_raw(frame.width, frame.height, frame.to_rgb()).expect("sizes match");
    let mut w = std::io::BufWriter::new(file);
    rgb.write_to(&mut w, format)
        .with_context(|| format!("encoding {}", dest.display()))?;
    std::io::Write::flush(&mut w).with_context(|| format!("writing {}", dest.display()))?;
    drop(w);
    out.commit()?;
    let label = info
        .classes
        .get(target.class as usize)
        .map(String::as_str)
        .unwrap_or("?");
    println!(
        "{}: {} {} {:.4}",
        path.display(),
        target.class,
        label,
        target.prob
    );
    Ok(())
}
