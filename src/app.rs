//! The run: wires the stages together for a video or a still image and reports the summary.
//! Stages meet only through channels of plain values (`Frame`, `Explained`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};

use crate::config::{Config, Input, Output};
use crate::engine::{self, ModelInfo};
use crate::frame::{Explained, Frame};
use crate::outfile::{LineFile, OutFile};
use crate::stats::{Reporter, Stage, Stats};
use crate::{label, localize, metadata, overlay, parallel, pipeline, worker};

pub fn run(cfg: Config) -> Result<()> {
    let settings = engine::Settings {
        model: cfg.model.clone(),
        device: cfg.device,
        precision: cfg.precision,
        batch_size: cfg.batch_size,
        max_wait: cfg.max_wait,
        class: cfg.class.clone(),
        method: cfg.method,
        top_k: cfg.top_k,
        show_rank: cfg.show_rank,
        smooth: cfg.smooth,
        threads: cfg.threads,
        colormap: cfg.colormap,
        alpha: cfg.alpha,
        threshold: cfg.threshold,
        blend: engine::BlendAt::Auto,
        pipelined: None,
    };
    match (&cfg.input, cfg.outputs.as_slice()) {
        (Input::Image(_), [Output::Image(_)]) => run_image(&cfg, settings),
        (Input::Image(_), _) => unreachable!("config pairs an image with one image output"),
        _ => run_video(&cfg, settings),
    }
}

/// What is drawn on each frame after the model: the heatmap (unless the engine blended it on
/// its device), the box and the label. Pure per frame, so frames are drawn in parallel.
struct Drawer {
    alpha: f32,
    threshold: f32,
    lut: [[u8; 3]; 256],
    classes: Vec<String>,
    method: &'static str,
    draw_box: bool,
    label: bool,
    /// Whether each frame's metadata line is wanted.
    lines: bool,
}

impl Drawer {
    /// The finished frame and, when wanted, its metadata line.
    fn draw(&self, e: Explained) -> (Frame, Option<String>) {
        let loc = localize::locate(&e.cam, e.frame.width, e.frame.height);
        let line = self
            .lines
            .then(|| metadata::line(&e, &self.classes, self.method, &loc));
        let lines = if self.label {
            self.label_lines(&e)
        } else {
            vec![]
        };
        let mut frame = e.frame;
        let (w, h) = (frame.width as usize, frame.height as usize);
        if !e.blended {
            overlay::blend(
                &mut frame.pixels,
                w,
                h,
                &e.cam,
                self.alpha,
                self.threshold,
                &self.lut,
            );
        }
        if let (true, Some(b)) = (self.draw_box, loc.bbox) {
            let b = (b.x0 as usize, b.y0 as usize, b.x1 as usize, b.y1 as usize);
            overlay::rectangle(
                &mut frame.pixels,
                w,
                h,
                b,
                label::scale_for(h) * 2,
                [255, 255, 255],
            );
        }
        if !lines.is_empty() {
            label::draw(&mut frame.pixels, w, h, &lines);
        }
        (frame, line)
    }

    /// `tabby 0.83`, or with --top-k one line a class, best first.
    fn label_lines(&self, e: &Explained) -> Vec<String> {
        let name = |c: i64| match self.classes.get(c as usize) {
            Some(n) => n.clone(),
            None => format!("class {c}"),
        };
        if e.ranked.is_empty() {
            return vec![format!("{} {:.2}", name(e.target.class), e.target.prob)];
        }
        e.ranked
            .iter()
            .enumerate()
            .map(|(r, (c, _))| {
                let mark = if c.class == e.target.class { '>' } else { ' ' };
                format!("{mark}{}. {} {:.2}", r + 1, name(c.class), c.prob)
            })
            .collect()
    }
}

/// The render stage: draws a batch's frames in parallel (in order), then writes their
/// metadata lines in stream order.
struct Renderer {
    drawer: Drawer,
    metadata: Option<LineFile>,
    threads: usize,
}

impl Renderer {
    fn new(cfg: &Config, info: &ModelInfo) -> Result<Renderer> {
        let metadata = cfg.metadata.as_deref().map(LineFile::create).transpose()?;
        Ok(Renderer {
            drawer: Drawer {
                alpha: cfg.alpha,
                threshold: cfg.threshold,
                lut: cfg.colormap.lut(),
                classes: info.classes.clone(),
                method: cfg.method.name(),
                draw_box: cfg.draw_box,
                label: cfg.label,
                lines: metadata.is_some(),
            },
            metadata,
            threads: parallel::cores(),
        })
    }

    fn render(&mut self, batch: Vec<Explained>) -> Result<Vec<Frame>> {
        let drawer = &self.drawer;
        let drawn = parallel::map_in_order(batch, self.threads, |e| drawer.draw(e));
        let mut frames = Vec::with_capacity(drawn.len());
        for (frame, line) in drawn {
            if let (Some(m), Some(line)) = (&mut self.metadata, line) {
                m.line(&line).context("writing metadata")?;
            }
            frames.push(frame);
        }
        Ok(frames)
    }

    fn commit(self) -> Result<()> {
        self.metadata.map(LineFile::commit).transpose().map(|_| ())
    }
}

fn label(classes: &[String], id: i64) -> &str {
    classes.get(id as usize).map(String::as_str).unwrap_or("?")
}

fn run_video(cfg: &Config, settings: engine::Settings) -> Result<()> {
    pipeline::init()?;
    let codec = pipeline::sink::resolve_encoder(cfg.encoder)?;
    // Files are written under a partial name and renamed once finalized; servers start now so
    // a port in use fails before the model loads.
    let mut files = Vec::new();
    let mut servers = Vec::new();
    for o in &cfg.outputs {
        match o {
            Output::Video { path, container } => files.push((OutFile::create(path)?.0, *container)),
            Output::Rtsp { host, port, path } => {
                let server = pipeline::rtsp::Server::start(host, *port, path)?;
                eprintln!("serving: {}", server.url);
                servers.push(server);
            }
            _ => {}
        }
    }
    let (mut f, mut r) = (files.iter(), servers.iter());
    let branches = cfg
        .outputs
        .iter()
        .map(|o| match o {
            Output::Video { .. } => {
                let (out, container) = f.next().expect("one file per file output");
                pipeline::sink::Branch::File(out.partial_path(), *container)
            }
            Output::Rtsp { .. } => {
                pipeline::sink::Branch::Rtsp(r.next().expect("one server each").feeds.clone())
            }
            Output::Display => pipeline::sink::Branch::Display,
            Output::Null | Output::Image(_) => pipeline::sink::Branch::Null,
        })
        .collect();
    let stats = Arc::new(Stats::default());
    let (frames_tx, frames_rx) = crossbeam_channel::bounded::<Frame>(cfg.queue_capacity);
    // Two batches in flight between the worker and the output, as between source and worker.
    let (explained_tx, explained_rx) = crossbeam_channel::bounded::<Vec<Explained>>(2);
    let (rendered_tx, rendered_rx) = crossbeam_channel::bounded::<Frame>(cfg.batch_size * 2);

    let oldest = frames_rx.clone();
    let (info, worker) = worker::spawn(settings, frames_rx, explained_tx, stats.clone())?;
    let mut renderer = Renderer::new(cfg, &info)?;
    let render_stats = stats.clone();
    let render_thread = std::thread::Builder::new()
        .name("gradcam-render".into())
        .spawn(move || -> Result<Renderer> {
            for batch in explained_rx.iter() {
                let busy = Instant::now();
                let frames = renderer.render(batch)?;
                render_stats.add_busy(Stage::Overlay, busy.elapsed());
                for frame in frames {
                    if rendered_tx.send(frame).is_err() {
                        return Ok(renderer); // the output stopped; it reports why
                    }
                }
            }
            Ok(renderer)
        })
        .context("starting the render thread")?;

    let mut reporter = Reporter::new(cfg.progress, cfg.stats_every);
    let piped = pipeline::run_video(
        pipeline::Run {
            input: &cfg.input,
            rtsp: cfg.rtsp,
            branches,
            codec,
            overload: cfg.overload,
            limits: pipeline::Limits {
                max_frames: cfg.max_frames,
                duration: cfg.duration,
            },
        },
        frames_tx,
        oldest,
        rendered_rx,
        stats.clone(),
        &mut reporter,
    );
    reporter.finish(&stats);
    drop(servers);
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
    let mut dests = Vec::new();
    for (out, _) in files {
        dests.push(out.dest().display().to_string());
        out.commit()?;
    }
    for o in &cfg.outputs {
        match o {
            Output::Rtsp { .. } => dests.push("rtsp".into()),
            Output::Display => dests.push("display".into()),
            Output::Null => dests.push("null".into()),
            _ => {}
        }
    }
    let dest = dests.join(", ");
    let secs = stats.elapsed().as_secs_f64();
    let dropped = stats.dropped.load(std::sync::atomic::Ordering::Relaxed);
    let mut dropped = if dropped > 0 {
        format!(", {dropped} dropped (model behind the source)")
    } else {
        String::new()
    };
    let reconnects = stats.reconnects.load(std::sync::atomic::Ordering::Relaxed);
    if reconnects > 0 {
        let s = if reconnects == 1 { "" } else { "s" };
        dropped.push_str(&format!(", {reconnects} reconnect{s}"));
    }
    eprintln!(
        "done: {written} frames in {secs:.1} s ({:.1} fps) on {} with {}, batch size {}{dropped} → {dest}",
        written as f64 / secs.max(1e-9),
        info.device,
        info.name,
        cfg.batch_size,
    );
    Ok(())
}

fn run_image(cfg: &Config, settings: engine::Settings) -> Result<()> {
    let (Input::Image(input), [Output::Image(path)]) = (&cfg.input, cfg.outputs.as_slice()) else {
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
    let stats = Arc::new(Stats::default());
    let (info, worker) = worker::spawn(settings, frames_rx, results_tx, stats)?;
    let mut renderer = Renderer::new(cfg, &info)?;
    frames_tx.send(frame).expect("the worker is waiting");
    drop(frames_tx);
    let explained = results_rx.recv();
    worker
        .join()
        .map_err(|_| anyhow!("the worker thread panicked"))??;
    let explained = explained
        .ok()
        .and_then(|mut batch| batch.pop())
        .ok_or_else(|| anyhow!("the worker ended without a result"))?;

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
    let frame = renderer
        .render(vec![explained])?
        .pop()
        .expect("one frame in, one out");
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
