//! The output half: explained frames go into an `appsrc` with their original timestamps and
//! are encoded to a file.
//!
//! ```text
//! {appsrc name=frames} - {videoconvert name=convert} - {capsfilter name=chroma} - {x264enc name=encode}
//!     - {mp4mux|matroskamux name=mux} - {filesink name=file}
//! ```
//! Every push blocks while the encoder is behind (appsrc `block=true`), which throttles the
//! pusher thread and not a GStreamer streaming thread.

use std::path::Path;

use anyhow::{Context, Result};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use crate::config::Container;
use crate::frame::Frame;

pub struct Sink {
    pub pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    caps: Option<(u32, u32, (i32, i32))>,
}

/// The encoder and muxer for a file of `container` kind, as a gst-launch fragment.
pub fn file_fragment(container: Container) -> &'static str {
    match container {
        Container::Mp4 => "x264enc name=encode speed-preset=ultrafast bframes=0 ! mp4mux name=mux",
        Container::Matroska => {
            "x264enc name=encode speed-preset=ultrafast bframes=0 ! matroskamux name=mux"
        }
    }
}

fn quote(path: &Path) -> String {
    let s = path.to_string_lossy();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Where the explained frames go.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// An encoded file at this (partial) path.
    File(&'a Path, Container),
    /// Nowhere (measuring).
    Null,
}

pub fn build(target: Target) -> Result<Sink> {
    let desc = match target {
        Target::File(path, container) => format!(
            "appsrc name=frames format=time block=true ! videoconvert name=convert ! \
             capsfilter name=chroma caps=video/x-raw,format=I420 ! {} ! filesink name=file location={}",
            file_fragment(container),
            quote(path)
        ),
        Target::Null => "appsrc name=frames format=time block=true ! fakesink name=null sync=false".into(),
    };
    let pipeline = gst::parse::launch(&desc)
        .with_context(|| format!("building the output pipeline `{desc}`; is gstreamer1.0-plugins-ugly installed? (make setup)"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("the output description is not a pipeline"))?;
    pipeline.set_property("name", "sink");
    let appsrc = pipeline
        .by_name("frames")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .context("the output pipeline has no appsrc")?;
    Ok(Sink {
        pipeline,
        appsrc,
        caps: None,
    })
}

impl Sink {
    /// Queue one frame for encoding; blocks while the encoder is behind.
    pub fn push(&mut self, frame: Frame) -> Result<()> {
        let key = (frame.width, frame.height, frame.rate);
        if self.caps != Some(key) {
            let caps = gst_video::VideoCapsBuilder::new()
                .format(gst_video::VideoFormat::Rgbx)
                .width(frame.width as i32)
                .height(frame.height as i32)
                .framerate(gst::Fraction::new(frame.rate.0, frame.rate.1))
                .build();
            self.appsrc.set_caps(Some(&caps));
            // x264 encodes 4:2:0 (the format every player takes) only at even sizes; an odd
            // size keeps its exact resolution in 4:4:4 instead of being scaled.
            let chroma = if frame.width.is_multiple_of(2) && frame.height.is_multiple_of(2) {
                gst_video::VideoFormat::I420
            } else {
                gst_video::VideoFormat::Y444
            };
            if let Some(filter) = self.pipeline.by_name("chroma") {
                filter.set_property(
                    "caps",
                    gst_video::VideoCapsBuilder::new().format(chroma).build(),
                );
            }
            // Room for a few frames: enough to keep the encoder busy, little memory.
            self.appsrc.set_max_bytes(frame.pixels.len() as u64 * 4);
            self.caps = Some(key);
        }
        let mut buffer = gst::Buffer::from_mut_slice(frame.pixels);
        {
            let b = buffer.get_mut().expect("a new buffer is writable");
            b.set_pts(frame.pts.map(gst::ClockTime::from_nseconds));
            b.set_duration(frame.duration.map(gst::ClockTime::from_nseconds));
            b.set_offset(frame.index);
        }
        self.appsrc
            .push_buffer(buffer)
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("the output pipeline refused a frame: {e:?}"))
    }

    /// No more frames: the encoder flushes and the muxer finalizes the file, then EOS reaches the bus.
    pub fn finish(&self) {
        let _ = self.appsrc.end_of_stream();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_builds() -> Result<()> {
        gst::init()?;
        let dir = tempfile::tempdir()?;
        for c in [Container::Mp4, Container::Matroska] {
            let sink = build(Target::File(&dir.path().join("x"), c))?;
            assert!(sink.pipeline.by_name("encode").is_some());
            assert!(sink.pipeline.by_name("mux").is_some());
        }
        assert!(build(Target::Null)?.pipeline.by_name("null").is_some());
        Ok(())
    }
}
