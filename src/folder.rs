//! `--input photos/ --output out/`: every image of a folder explained by one process, in
//! batches through the same worker, engine and renderer as a video (the model loads once).
//! Images of any sizes batch together: each is resized on the way in to the model's input
//! size (the resize the model would make; antialiased linear), and its map is drawn on the
//! original picture, at its own size.
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
}

/// The job's images, sorted, with the output folder made; a folder without one is a usage
/// error.
fn images_to_explain(job: &Job) -> Result<Vec<PathBuf>> {
    let files = images_in(job.dir)?;
    if files.is_empty() {
        return Err(crate::usage::usage(format!(
            "the folder {} holds no images (.png .jpg .jpeg .bmp .webp .tif .tiff)",
            job.dir.display()
        )));
    }
    if let Some(parent) = job.pattern.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating the output folder {}", parent.display()))?;
    }
    Ok(files)
}

pub fn run(job: Job, settings: engine::Settings, batch: usize) -> Result<()> {
    let start = Instant::now();
    let files = images_to_explain(&job)?;
    let (frames_tx, frames_rx) = crossbeam_channel::bounded(batch * 2);
    let (results_tx, results_rx) = crossbeam_channel::bounded(2);
    // The heatmap is drawn on the host, over the original picture.
    let settings = engine::Settings {
        blend: engine::BlendAt::Host,
        ..settings
    };
    let (info, worker) = worker::spawn(
        settings,
        vec![frames_rx],
        results_tx,
        Arc::new(Stats::default()),
    )?;
    let mut renderer = Renderer::new(job.look, &info, &[("folder", None)])?;
    let (originals_tx, originals) = crossbeam_channel::unbounded();
    let [h, w] = info.input_size;
    let reader = Reader {
        files: files.clone(),
        upright: job.upright,
        size: (w as u32, h as u32),
    }
    .spawn(frames_tx, originals_tx)?;
    let mut lines = job.metadata.map(LineFile::create).transpose()?;
    let (mut explained, mut batches) = (0, 0);
    for delivery in results_rx.iter() {
        if batches == 0 && !delivery.explained.is_empty() {
            // Once the model has explained something: a run that fails first says one line.
            eprintln!("{}", info.start_line());
        }
        batches += usize::from(!delivery.explained.is_empty());
        for mut e in delivery.explained {
            // The results come in the order read; an unreadable file sent nothing.
            e.frame = originals
                .recv()
                .ok()
                .filter(|o: &Frame| o.index == e.frame.index)
                .ok_or_else(|| anyhow!("image {} came back out of order", e.frame.index))?;
            let path = &files[e.frame.index as usize];
            if let Some(m) = &mut lines {
                m.line(&line_for(&e, path, &info)?)?;
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
    let done = Done {
        explained,
        batches,
        secs: start.elapsed().as_secs_f64(),
    };
    done.report(&info, job.pattern, files.len(), &unreadable)
}

/// What a folder run did, for its last line.
struct Done {
    explained: usize,
    batches: usize,
    secs: f64,
}

impl Done {
    /// The `done:` line; an error naming the images that could not be read, if any.
    fn report(
        &self,
        info: &engine::ModelInfo,
        pattern: &Path,
        total: usize,
        unreadable: &[PathBuf],
    ) -> Result<()> {
        let Done {
            explained,
            batches,
            secs,
        } = *self;
        eprintln!(
            "done: {explained} images in {batches} batch{}, {secs:.1} s ({:.1} images/s) on {} with {} → {}{}",
            if batches == 1 { "" } else { "es" },
            explained as f64 / secs.max(1e-9),
            info.device,
            info.name,
            pattern.display(),
            if unreadable.is_empty() {
                String::new()
            } else {
                format!(", {} skipped", unreadable.len())
            }
        );
        if unreadable.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = unreadable.iter().map(|p| p.display().to_string()).collect();
        anyhow::bail!(
            "{} of {} images could not be read: {}",
            unreadable.len(),
            total,
            names.join(", ")
        )
    }
}

/// What the reading thread is given: the files, whether to turn them upright, and the size
/// (width, height) every image is resized to for the model.
struct Reader {
    files: Vec<PathBuf>,
    upright: bool,
    size: (u32, u32),
}

impl Reader {
    /// Read each image on a thread of its own, so that decoding the next ones overlaps the
    /// model: the resized picture goes to the worker, the original to `originals` (to draw
    /// on). The thread returns the files it could not read (each reported in one line).
    fn spawn(
        self,
        frames: crossbeam_channel::Sender<Frame>,
        originals: crossbeam_channel::Sender<Frame>,
    ) -> Result<std::thread::JoinHandle<Vec<PathBuf>>> {
        std::thread::Builder::new()
            .name("gradcam-images".into())
            .spawn(move || {
                let mut unreadable = Vec::new();
                for (i, path) in self.files.iter().enumerate() {
                    let img = match still::read(path, self.upright) {
                        Ok((img, _)) => img,
                        Err(e) => {
                            eprintln!("skipped: {e:#}");
                            unreadable.push(path.clone());
                            continue;
                        }
                    };
                    let (w, h) = self.size;
                    let small = if img.dimensions() == (w, h) {
                        img.clone()
                    } else {
                        image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle)
                    };
                    let frame = |img: &image::RgbImage| {
                        Frame::from_rgb(i as u64, img.width(), img.height(), img.as_raw())
                    };
                    // The original first: the worker's result may come before the next send.
                    if originals.send(frame(&img)).is_err() || frames.send(frame(&small)).is_err() {
                        break; // the worker stopped; it says why
                    }
                }
                unreadable
            })
            .context("starting the image reader")
    }
}

/// The image's metadata line, naming its file.
fn line_for(e: &Explained, path: &Path, info: &ModelInfo) -> Result<String> {
    let loc = localize::locate(&e.cam, e.frame.width, e.frame.height);
    let line = metadata::line(e, "folder", &info.classes, info.method.name(), &loc);
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
