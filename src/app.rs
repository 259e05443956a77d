//! The run: wires the stages together for a video or a still image and reports the summary.
//! Stages meet only through channels of plain values (`Frame`, `Explained`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};

use crate::config::{Config, Input, Output};
use crate::frame::{Explained, Frame};
use crate::outfile::{LineFile, OutFile};
use crate::stats::{Reporter, Stats};
use crate::worker::{self, ModelInfo};
use crate::{metadata, overlay, pipeline};

pub fn run(cfg: Config) -> Result<()> {
    let settings = worker::Settings {
        model: cfg.model.clone(),
        device: cfg.device,
        batch_size: cfg.batch_size,
        max_wait: cfg.max_wait,
        class: cfg.class,
        threads: cfg.threads,
    };
    match (&cfg.input, &cfg.output) {
        (Input::Image(_), Output::Image(_)) => run_image(&cfg, settings),
        (Input::Image(_), _) | (_, Output::Image(_)) => {
            unreachable!("config pairs image with image and video with video")
        }
        _ => run_video(&cfg, settings),
    }
}

/// Blends the map over the frame and writes the metadata line: the work after the model.
struct Renderer {
    alpha: f32,
    lut: [[u8; 3]; 256],
    classes: Vec<String>,
    metadata: Option<LineFile>,
}

impl Renderer {
    fn new(cfg: &Config, info: &ModelInfo) -> Result<Renderer> {
        let metadata = cfg.metadata.as_deref().map(LineFile::create).transpose()?;
        Ok(Renderer {
            alpha: cfg.alpha,
            lut: overlay::jet_lut(),
            classes: info.classes.clone(),
            metadata,
        })
    }

    fn render(&mut self, e: Explained) -> Result<Frame> {
        if let Some(m) = &mut self.metadata {
            m.line(&metadata::line(&e, &self.classes))
                .context("writing metadata")?;
        }
        let mut frame = e.frame;
        let (w, h) = (frame.width as usize, frame.height as usize);
        overlay::blend(&mut frame.pixels, w, h, &e.cam, self.alpha, &self.lut);
        Ok(frame)
    }

    fn commit(self) -> Result<()> {
        self.metadata.map(LineFile::commit).transpose().map(|_| ())
    }
}

fn label(classes: &[String], id: i64) -> &str {
    classes.get(id as usize).map(String::as_str).unwrap_or("?")
}

fn run_video(cfg: &Config, settings: worker::Settings) -> Result<()> {
    let out = match &cfg.output {
        Output::Video { path, .. } => Some(OutFile::create(path)?.0),
        _ => None,
    };
    let target = match (&cfg.output, &out) {
        (Output::Video { container, .. }, Some(out)) => {
            pipeline::sink::Target::File(out.partial_path(), *container)
        }
        _ => pipeline::sink::Target::Null,
    };
    let stats = Arc::new(Stats::default());
    let (frames_tx, frames_rx) = crossbeam_channel::bounded::<Frame>(cfg.queue_capacity);
    let (explained_tx, explained_rx) = crossbeam_channel::bounded::<Explained>(cfg.batch_size * 2);
    let (rendered_tx, rendered_rx) = crossbeam_channel::bounded::<Frame>(cfg.batch_size * 2);

    let oldest = frames_rx.clone();
    let (info, worker) = worker::spawn(settings, frames_rx, explained_tx)?;
    let mut renderer = Renderer::new(cfg, &info)?;
    let render_thread = std::thread::Builder::new()
        .name("gradcam-render".into())
        .spawn(move || -> Result<Renderer> {
            for e in explained_rx.iter() {
                if rendered_tx.send(renderer.render(e)?).is_err() {
                    break; // the output stopped; it reports why
                }
            }
            Ok(renderer)
        })
        .context("starting the render thread")?;

    pipeline::init()?;
    let mut reporter = Reporter::new(cfg.progress);
    let piped = pipeline::run_video(
        &cfg.input,
        target,
        cfg.overload,
        pipeline::Limits {
            max_frames: cfg.max_frames,
            duration: cfg.duration,
        },
        frames_tx,
        oldest,
        rendered_rx,
        stats.clone(),
        &mut reporter,
    );
    reporter.finish();
    let worked = worker
        .join()
        .map_err(|_| anyhow!("the worker thread panicked"))?;
    let rendered = render_thread
        .join()
        .map_err(|_| anyhow!("the render thread panicked"))?;
    // The first failure in stream order explains the rest.
    piped?;
    worked?;
    let renderer = rendered?;
    let written = stats.written.load(std::sync::atomic::Ordering::Relaxed);
    if written == 0 {
        anyhow::bail!("the input gave no video frames; nothing was written");
    }
    renderer.commit()?;
    let dest = match out {
        Some(out) => {
            let dest = out.dest().display().to_string();
            out.commit()?;
            dest
        }
        None => "null".into(),
    };
    let secs = stats.elapsed().as_secs_f64();
    let dropped = stats.dropped.load(std::sync::atomic::Ordering::Relaxed);
    let dropped = if dropped > 0 {
        format!(", {dropped} dropped (model behind the source)")
    } else {
        String::new()
    };
    eprintln!(
        "done: {written} frames in {secs:.1} s ({:.1} fps) on {} with {}, batch size {}{dropped} → {dest}",
        written as f64 / secs.max(1e-9),
        info.device,
        info.name,
        cfg.batch_size,
    );
    Ok(())
}

fn run_image(cfg: &Config, settings: worker::Settings) -> Result<()> {
    let (Input::Image(input), Output::Image(path)) = (&cfg.input, &cfg.output) else {
        unreachable!()
    };
    let start = Instant::now();
    let img = image::open(input)
        .map_err(|e| {
            anyhow!(
                "cannot read image {}: {e}; give a PNG, JPEG, BMP, WebP or TIFF file",
                input.display()
            )
        })?
        .to_rgb8();
    let format = image::ImageFormat::from_path(path).map_err(|_| {
        anyhow!(
            "output {}: unknown image format; use .png or .jpg",
            path.display()
        )
    })?;
    let (out, file) = OutFile::create(path)?;
    let frame = Frame::from_rgb(0, img.width(), img.height(), img.as_raw());

    let (frames_tx, frames_rx) = crossbeam_channel::bounded(1);
    let (results_tx, results_rx) = crossbeam_channel::bounded(1);
    let (info, worker) = worker::spawn(settings, frames_rx, results_tx)?;
    let mut renderer = Renderer::new(cfg, &info)?;
    frames_tx.send(frame).expect("the worker is waiting");
    drop(frames_tx);
    let explained = results_rx.recv();
    worker
        .join()
        .map_err(|_| anyhow!("the worker thread panicked"))??;
    let explained = explained.map_err(|_| anyhow!("the worker ended without a result"))?;

    println!("top classes for {}:", input.display());
    for (rank, c) in explained.top.iter().enumerate() {
        println!(
            "  {}. {:>4}  {:<30} {:.4}",
            rank + 1,
            c.class,
            label(&info.classes, c.class),
            c.prob
        );
    }
    let target = explained.target;
    let frame = renderer.render(explained)?;
    let rgb =
        image::RgbImage::from_raw(frame.width, frame.height, frame.to_rgb()).expect("sizes match");
    let mut w = std::io::BufWriter::new(file);
    rgb.write_to(&mut w, format)
        .with_context(|| format!("encoding {}", path.display()))?;
    std::io::Write::flush(&mut w).with_context(|| format!("writing {}", path.display()))?;
    drop(w);
    renderer.commit()?;
    out.commit()?;
    eprintln!(
        "done: explained class {} ({}) in {:.2} s on {} → {}",
        target.class,
        label(&info.classes, target.class),
        start.elapsed().as_secs_f64(),
        info.device,
        path.display()
    );
    Ok(())
}
