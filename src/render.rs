//! The render stage: draws what the model found on each frame (the heatmap unless the engine
//! blended it on its device, the box, the label), a batch's frames in parallel, and writes
//! each frame's metadata line to its stream's file in stream order. Pure per frame; no
//! GStreamer and no tch types.

use std::path::Path;

use anyhow::{Context, Result};

use crate::engine::ModelInfo;
use crate::frame::{CamMap, ClassScore, Explained, Frame};
use crate::localize::Located;
use crate::outfile::LineFile;
use crate::{label, localize, metadata, overlay, parallel};

/// How frames are drawn: the settings of the run, the same for every stream.
pub struct Look {
    pub alpha: f32,
    pub threshold: f32,
    pub lut: [[u8; 3]; 256],
    /// A detector's: where each box's map is drawn.
    pub box_maps: crate::settings::named::BoxMaps,
    pub draw_box: bool,
    pub label: bool,
}

impl From<&crate::settings::Run> for Look {
    /// The run's drawing settings, for every front end.
    fn from(r: &crate::settings::Run) -> Look {
        Look {
            alpha: r.alpha,
            threshold: r.threshold,
            lut: r.colormap.lut(),
            box_maps: r.box_maps,
            draw_box: r.draw_box,
            label: r.label,
        }
    }
}

/// A finished frame with what was drawn on it: for a front end that passes results on beside
/// the pixels (the GStreamer element's metadata).
pub struct Drawn {
    pub frame: Frame,
    pub cam: CamMap,
    /// The class the map explains.
    pub target: ClassScore,
    /// The most likely classes, best first.
    pub top: Vec<ClassScore>,
    pub located: Located,
    /// A detector's boxes (empty for a classifier).
    pub boxes: Vec<crate::frame::Detection>,
    /// `cam` as the engine's tensor, where it keeps them.
    pub cam_tensor: Option<crate::frame::CamTensor>,
}

struct Drawer {
    look: Look,
    /// The method the maps were made with, for the metadata.
    method: &'static str,
    detector: bool,
    classes: Vec<String>,
    /// Each stream's name (metadata), and whether it wants metadata lines.
    names: Vec<String>,
    lines: Vec<bool>,
    /// Each stream's frames are drawn on unless this says false (results only: `--output
    /// null`); a stream past its end is drawn on.
    draws: Vec<bool>,
}

impl Drawer {
    /// The finished frame and, when its stream wants it, its metadata line.
    fn draw(&self, e: Explained) -> (Drawn, Option<String>) {
        let look = &self.look;
        let loc = localize::locate(&e.cam, e.frame.width, e.frame.height);
        let s = e.frame.stream;
        let line = self.lines.get(s).copied().unwrap_or(false).then(|| {
            let name = self.names.get(s).map(String::as_str).unwrap_or("");
            metadata::line(&e, name, &self.classes, self.method, &loc)
        });
        let draws = self.draws.get(s).copied().unwrap_or(true);
        if e.boxes.is_some() {
            return (self.draw_boxes(e, loc, draws), line);
        }
        let lines = if look.label && draws {
            self.label_lines(&e)
        } else {
            vec![]
        };
        let mut frame = e.frame;
        let (w, h) = (frame.width as usize, frame.height as usize);
        if !e.blended && draws {
            overlay::blend(
                &mut frame.pixels,
                w,
                h,
                &e.cam,
                look.alpha,
                look.threshold,
                &look.lut,
            );
        }
        if let (true, Some(b)) = (look.draw_box && draws, loc.bbox) {
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
        if draws {
            damaged_badge(&mut frame);
        }
        let top = if e.ranked.is_empty() {
            e.top
        } else {
            e.ranked.into_iter().map(|(c, _)| c).collect()
        };
        let drawn = Drawn {
            frame,
            cam: e.cam,
            target: e.target,
            top,
            located: loc,
            boxes: Vec::new(),
            cam_tensor: e.cam_tensor,
        };
        (drawn, line)
    }

    /// A detector's frame: each box with its own map, outline and label.
    fn draw_boxes(&self, e: Explained, located: Located, draws: bool) -> Drawn {
        let mut frame = e.frame;
        let boxes = e.boxes.unwrap_or_default();
        if draws {
            let look = &self.look;
            let style = crate::detections::Style {
                maps: look.box_maps,
                alpha: look.alpha,
                threshold: look.threshold,
                lut: &look.lut,
                label: look.label,
                heatmaps: !e.blended,
            };
            let (w, h) = (frame.width as usize, frame.height as usize);
            crate::detections::draw(&mut frame.pixels, w, h, &boxes, &style, |c| {
                self.class_name(c)
            });
            damaged_badge(&mut frame);
        }
        Drawn {
            frame,
            cam: e.cam,
            target: e.target,
            top: e.top,
            located,
            boxes,
            cam_tensor: e.cam_tensor,
        }
    }

    /// A frame decoded from damaged data, not explained: its badge where its stream is drawn
    /// on, and its metadata line (no class, no map) where the stream wants lines.
    fn damaged(&self, mut frame: Frame) -> (Frame, Option<String>) {
        let s = frame.stream;
        if self.draws.get(s).copied().unwrap_or(true) {
            damaged_badge(&mut frame);
        }
        let line = self.lines.get(s).copied().unwrap_or(false).then(|| {
            let name = self.names.get(s).map(String::as_str).unwrap_or("");
            metadata::damaged_line(&frame, name)
        });
        (frame, line)
    }

    /// The name of class `id` in the model's list ("class N" past its end).
    fn class_name(&self, id: i64) -> String {
        match self.classes.get(id as usize) {
            Some(n) => n.clone(),
            None => format!("class {id}"),
        }
    }

    /// `tabby 0.83`, or with --top-k one line a class, best first.
    fn label_lines(&self, e: &Explained) -> Vec<String> {
        let name = |c: i64| self.class_name(c);
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

/// A frame decoded from damaged data says so: "damaged" in the top-right corner.
fn damaged_badge(frame: &mut Frame) {
    if frame.damaged.is_some() {
        let (w, h) = (frame.width as usize, frame.height as usize);
        label::draw_at(&mut frame.pixels, w, h, (w, 0), &["damaged".to_owned()]);
    }
}

/// Draws batches (which may mix streams) and keeps each stream's metadata file.
pub struct Renderer {
    drawer: Drawer,
    metadata: Vec<Option<LineFile>>,
    threads: usize,
}

impl Renderer {
    /// `streams`: each stream's name and metadata file, if any.
    pub fn new(
        look: Look,
        info: &ModelInfo,
        streams: &[(&str, Option<&Path>)],
    ) -> Result<Renderer> {
        let metadata = streams
            .iter()
            .map(|(_, m)| m.map(LineFile::create).transpose())
            .collect::<Result<Vec<_>>>()?;
        Ok(Renderer {
            drawer: Drawer {
                look,
                method: info.method.name(),
                detector: info.detector,
                classes: info.classes.clone(),
                names: streams.iter().map(|(n, _)| n.to_string()).collect(),
                lines: metadata.iter().map(Option::is_some).collect(),
                draws: Vec::new(),
            },
            metadata,
            threads: parallel::cores(),
        })
    }

    /// Which streams' frames are drawn on (by stream id; false: results only, the frames left
    /// as decoded). Every stream is, unless told.
    pub fn drawing(mut self, draws: Vec<bool>) -> Renderer {
        self.drawer.draws = draws;
        self
    }

    /// The finished frames, in the batch's order.
    pub fn render(&mut self, batch: Vec<Explained>) -> Result<Vec<Frame>> {
        Ok(self
            .render_drawn(batch)?
            .into_iter()
            .map(|d| d.frame)
            .collect())
    }

    /// The finished frames with what was drawn on each, in the batch's order.
    pub fn render_drawn(&mut self, batch: Vec<Explained>) -> Result<Vec<Drawn>> {
        Ok(self
            .render_all(batch, Vec::new())?
            .into_iter()
            .filter_map(Result::ok)
            .collect())
    }

    /// The finished frames of `batch` and the `damaged` frames passed on unexplained
    /// (`--on-damaged mark`: shown as decoded with their badge, each metadata line saying so),
    /// each in its place among its stream's frames; their metadata lines written in that order.
    pub fn render_all(
        &mut self,
        batch: Vec<Explained>,
        damaged: Vec<Frame>,
    ) -> Result<Vec<Result<Drawn, Frame>>> {
        let drawer = &self.drawer;
        let drawn = parallel::map_in_order(batch, self.threads, |e| drawer.draw(e));
        let mut out: Vec<(Result<Drawn, Frame>, Option<String>)> =
            drawn.into_iter().map(|(d, line)| (Ok(d), line)).collect();
        if !damaged.is_empty() {
            out.extend(damaged.into_iter().map(|f| {
                let (f, line) = self.drawer.damaged(f);
                (Err(f), line)
            }));
            out.sort_by_key(|(o, _)| match o {
                Ok(d) => (d.frame.stream, d.frame.index),
                Err(f) => (f.stream, f.index),
            });
        }
        let mut frames = Vec::with_capacity(out.len());
        for (o, line) in out {
            let s = match &o {
                Ok(d) => d.frame.stream,
                Err(f) => f.stream,
            };
            if let (Some(Some(m)), Some(line)) = (self.metadata.get_mut(s), line) {
                m.line(&line).context("writing metadata")?;
            }
            frames.push(o);
        }
        Ok(frames)
    }

    /// The name of class `id` in the model's list ("class N" past its end).
    pub fn class_name(&self, id: i64) -> String {
        self.drawer.class_name(id)
    }

    /// Whether the model is a detector (its frames carry boxes).
    pub fn is_detector(&self) -> bool {
        self.drawer.detector
    }

    /// Where each stream's metadata lines are being written, while the run goes on.
    pub fn metadata_paths(&self) -> Vec<Option<std::path::PathBuf>> {
        self.metadata
            .iter()
            .map(|m| m.as_ref().map(|f| f.path().to_owned()))
            .collect()
    }

    /// Each stream's metadata file (taken: the caller commits or drops each).
    pub fn into_metadata(self) -> Vec<Option<LineFile>> {
        self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_that_keeps_results_only_is_not_drawn_on() -> Result<()> {
        let info = ModelInfo {
            name: "m".into(),
            device: "cpu".into(),
            classes: vec!["cat".into()],
            method: crate::cam::Method::GradCam,
            detector: false,
            input_size: [4, 4],
            feature_shape: [1, 2, 2],
            precision: crate::settings::named::Precision::Fp32,
            layout: crate::settings::named::Layout::ChannelsLast,
            runs_in: "fp32 channels-last".into(),
        };
        let look = Look {
            alpha: 0.5,
            threshold: 0.0,
            lut: crate::colormap::Colormap::Jet.lut(),
            box_maps: crate::settings::named::BoxMaps::Inside,
            draw_box: true,
            label: true,
        };
        let mut r = Renderer::new(look, &info, &[])?.drawing(vec![false, true]);
        let explained = |stream: usize| {
            let mut frame = Frame::from_rgb(0, 64, 48, &[90u8; 64 * 48 * 3]);
            frame.stream = stream;
            let cam = CamMap {
                h: 2,
                w: 2,
                data: vec![1.0, 0.0, 0.0, 0.0],
            };
            let target = ClassScore {
                class: 0,
                prob: 0.9,
            };
            Explained {
                frame,
                blended: false,
                cam,
                target,
                top: vec![target],
                ranked: vec![],
                boxes: None,
                cam_tensor: None,
            }
        };
        let before = explained(0).frame.pixels;
        // Stream 0 keeps its results only; stream 1 is shown, as is a stream past the list.
        let out = r.render(vec![explained(0), explained(1), explained(2)])?;
        assert_eq!(out[0].pixels, before);
        assert_ne!(out[1].pixels, before);
        assert_eq!(out[1].pixels, out[2].pixels);
        Ok(())
    }
}
