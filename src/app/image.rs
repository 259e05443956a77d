//! A still image in, a still image out: the whole run for one picture.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};

use crate::config::{Config, Input, Orientation, Output};
use crate::engine;
use crate::frame::Frame;
use crate::outfile::OutFile;
use crate::render::{Look, Renderer};
use crate::stats::Stats;
use crate::worker;

pub(super) fn run_image(cfg: &Config, settings: engine::Settings) -> Result<()> {
    let stream = &cfg.streams[0];
    let (Input::Image(input), [Output::Image(path)]) = (&stream.input, stream.outputs.as_slice())
    else {
        unreachable!("config pairs an image with one image output")
    };
    let start = Instant::now();
    let (img, notes) = crate::still::read(input, cfg.run.orientation == Orientation::Auto)?;
    for note in notes {
        eprintln!("{}: {note}", input.display());
    }
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
    let (info, worker) = worker::spawn(settings, vec![frames_rx], results_tx, stats)?;
    let metadata: Vec<(&str, Option<&Path>)> =
        vec![(stream.name.as_str(), stream.metadata.as_deref())];
    let mut renderer = Renderer::new(Look::from(&cfg.run), &info, &metadata)?;
    frames_tx.send(frame).expect("the worker is waiting");
    drop(frames_tx);
    let explained = results_rx.recv();
    worker
        .join()
        .map_err(|_| anyhow!("the worker thread panicked"))??;
    let explained = explained
        .ok()
        .and_then(|d: worker::Delivery| d.explained.into_iter().next())
        .ok_or_else(|| anyhow!("the worker ended without a result"))?;
    eprintln!("{}", info.start_line());

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
    for m in renderer.into_metadata().into_iter().flatten() {
        m.commit()?;
    }
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

/// A class's name, `?` for an id the model does not name.
fn label(classes: &[String], id: i64) -> &str {
    classes.get(id as usize).map(String::as_str).unwrap_or("?")
}
