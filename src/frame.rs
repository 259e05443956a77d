//! The values that cross thread boundaries: decoded frames in, explained frames out.
//! Plain data only: no GStreamer and no tch types, so any stage can hold them.

use std::time::Instant;

/// One decoded video frame (or a still image), packed RGBx: 4 bytes a pixel, `width * 4` a row.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The stream it comes from (its place among the inputs, from 0).
    pub stream: usize,
    /// Position in the input stream, from 0.
    pub index: u64,
    /// Presentation timestamp in nanoseconds, as the decoder gave it.
    pub pts: Option<u64>,
    /// Duration in nanoseconds.
    pub duration: Option<u64>,
    pub width: u32,
    pub height: u32,
    /// Frame rate as a fraction (numerator, denominator); (0, 1) when unknown or variable.
    pub rate: (i32, i32),
    pub pixels: Vec<u8>,
    /// When the frame left the decoder (the appsink): latency is measured from here.
    pub arrived: Instant,
    /// A live frame not taken into a batch by then is dropped, never explained
    /// (`--max-latency-ms`); None: it waits as long as it takes.
    pub expires: Option<Instant>,
    /// Decoded from damaged data (RTP packets lost before it, up to the next whole key frame),
    /// and what becomes of it (`--on-damaged`: never `Skip`, those are left out at the source).
    pub damaged: Option<crate::settings::named::OnDamaged>,
}

impl Frame {
    pub const CHANNELS: usize = 4;

    /// A frame from tightly packed RGB bytes (what the `image` crate gives).
    pub fn from_rgb(index: u64, width: u32, height: u32, rgb: &[u8]) -> Frame {
        assert_eq!(rgb.len(), width as usize * height as usize * 3);
        let mut pixels = Vec::with_capacity(width as usize * height as usize * 4);
        for px in rgb.chunks_exact(3) {
            pixels.extend_from_slice(&[px[0], px[1], px[2], 255]);
        }
        Frame {
            stream: 0,
            index,
            pts: None,
            duration: None,
            width,
            height,
            rate: (0, 1),
            pixels,
            arrived: Instant::now(),
            expires: None,
            damaged: None,
        }
    }

    /// Tightly packed RGB bytes, dropping the padding byte.
    pub fn to_rgb(&self) -> Vec<u8> {
        let mut rgb = Vec::with_capacity(self.width as usize * self.height as usize * 3);
        for px in self.pixels.chunks_exact(4) {
            rgb.extend_from_slice(&px[..3]);
        }
        rgb
    }
}

/// A Grad-CAM map at feature resolution, min-max normalized to [0, 1], row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct CamMap {
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

/// One class of a frame's prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassScore {
    pub class: i64,
    /// Softmax probability.
    pub prob: f32,
}

/// The shown map as the engine's own tensor, [h, w] float32 on the model's device: a view of
/// its batch's result table (no copy), made only where a caller takes results as tensors (the
/// Python package). It keeps that table alive while it lives.
pub struct CamTensor(pub tch::Tensor);

impl Clone for CamTensor {
    fn clone(&self) -> CamTensor {
        CamTensor(self.0.shallow_clone())
    }
}

impl std::fmt::Debug for CamTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CamTensor({:?} on {:?})", self.0.size(), self.0.device())
    }
}

/// A frame with its explanation, from the worker to the output stage.
#[derive(Debug, Clone)]
pub struct Explained {
    /// The frame; with `blended`, the heatmap is already on it (blended on the model's device).
    /// Without it, the render stage blends it, unless its stream draws nothing (`--output
    /// null`): then it stays as it was decoded.
    pub frame: Frame,
    pub blended: bool,
    pub cam: CamMap,
    /// The class the map explains.
    pub target: ClassScore,
    /// The most likely classes, best first (at least 5, or the --top-k asked for).
    pub top: Vec<ClassScore>,
    /// With --top-k K > 1: each of the K most likely classes with its own map, best first.
    pub ranked: Vec<(ClassScore, CamMap)>,
    /// A detector's boxes, best first, each with its own map (None: a classifier's frame).
    /// `cam` is then the most any box's map reaches at each cell, and `target` the best box.
    pub boxes: Option<Vec<Detection>>,
    /// `cam` as the engine's tensor, where the engine keeps them (`Settings::keep_maps`).
    pub cam_tensor: Option<CamTensor>,
}

/// One box a detector found, explained.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// Its track: the same id on the same object from frame to frame (0 before tracking).
    pub track: u64,
    pub class: i64,
    /// Its probability (the score after the model's activation).
    pub score: f32,
    /// x1, y1, x2, y2 in frame pixels, inside the frame.
    pub bbox: [f32; 4],
    /// The pyramid level it came from (0 for a one-level detector).
    pub level: usize,
    /// Its place among the head's candidates (the score its map explains).
    pub candidate: usize,
    /// Its own map over the whole frame, at the explained level's resolution, in [0, 1].
    pub cam: CamMap,
}

/// One encoded H.264 access unit (Annex-B, parameter sets on key frames), as a live encoder
/// hands it to the outputs that share it (the RTSP server's medias, the web view).
pub struct Encoded<'a> {
    pub data: &'a [u8],
    /// The frame's timestamp (a live input's capture time since the stream began).
    pub pts: u64,
    pub duration: Option<u64>,
    pub key: bool,
    pub width: u32,
    pub height: u32,
}

/// Something fed by a stream's live encoder. Called on a GStreamer streaming thread: it must
/// never block (a slow consumer skips or drops, it does not hold the encoder back).
pub trait EncodedTap: Send + Sync {
    fn push(&self, frame: &Encoded);
    /// Whether a consumer joined since the last call and needs a key frame now.
    fn take_keyframe_request(&self) -> bool;
    /// The stream has ended: consumers see its end.
    fn finish(&self) {}
    /// Whether it carries the stream's sound too (given to `push_sound`).
    fn wants_sound(&self) -> bool {
        false
    }
    /// One buffer of the stream's sound, timestamped as the frames are.
    fn push_sound(&self, _sound: &gstreamer::Sample) {}
}
