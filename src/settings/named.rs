//! The settings whose value is one of a few names (`--device auto|cpu|cuda`): each enum with
//! the names it is given by, declared once with `named!`, and the one parser the program and
//! the element share.

/// A setting whose value is one of a few names; the one parser the program and the element share.
pub trait Named: Sized + Copy + 'static {
    /// Each accepted name and its value (aliases included).
    const NAMES: &'static [(&'static str, Self)];
    /// What an unknown name's error suggests: `auto, cpu or cuda`.
    const USE: &'static str;

    /// `what` names the setting as its front end does: `--device` here, `device` for the element.
    fn parse_named(what: &str, v: &str) -> Result<Self, String> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == v)
            .map(|(_, x)| *x)
            .ok_or_else(|| format!("unknown {what} `{v}`; use {}", Self::USE))
    }
}

/// A `Named` enum: its variants, the names each is given by, and the fix its error suggests.
macro_rules! named {
    ($(#[$m:meta])* $name:ident, $use:literal { $($(#[$vm:meta])* $v:ident = $($n:literal)|+,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vm])* $v,)* }
        impl Named for $name {
            const NAMES: &'static [(&'static str, Self)] = &[$($(($n, Self::$v),)+)*];
            const USE: &'static str = $use;
        }
    };
}

named!(DeviceChoice, "auto, cpu or cuda" { Auto = "auto", Cpu = "cpu", Cuda = "cuda" | "gpu", });
named!(
    /// The model's arithmetic. fp16 runs the model under CUDA autocast (a GPU only), bf16 its
    /// features under CPU autocast (a CPU with bf16 instructions); the head, the gradient and
    /// the CAM stay float32 in both. Auto is bf16 on a CPU that has it, fp32 elsewhere.
    Precision, "auto, fp32, fp16 (on a CUDA GPU) or bf16 (on a CPU with bf16)" {
        Auto = "auto",
        Fp32 = "fp32",
        Fp16 = "fp16",
        Bf16 = "bf16",
    }
);
named!(
    /// How a batch lies in memory on its way into the model: channels-last (NHWC, the layout
    /// the frames arrive in, and the fast one for oneDNN and tensor cores) or contiguous (NCHW).
    Layout, "channels-last or contiguous" {
        ChannelsLast = "channels-last" | "nhwc",
        Contiguous = "contiguous" | "nchw",
    }
);
named!(
    /// The H.264 encoder of file and RTSP outputs.
    Encoder, "auto, x264 or nvenc" {
        /// NVENC where the GPU has it (GStreamer's nvh264enc is registered), else x264.
        Auto = "auto",
        X264 = "x264",
        Nvenc = "nvenc",
    }
);
named!(Progress, "auto, bar, lines or none" {
    Auto = "auto", Bar = "bar", Lines = "lines", None = "none",
});
named!(
    /// How rtspsrc carries the feed: `auto` tries UDP and falls back to TCP when no packet comes.
    RtspTransport, "auto, tcp or udp" { Auto = "auto", Tcp = "tcp", Udp = "udp", }
);
named!(
    /// Whether a file input is paced at its own frame rate: `auto` when a person watches it.
    Realtime, "auto, on or off" { Auto = "auto", On = "on", Off = "off", }
);
named!(
    /// Whether frames are turned upright as their file says they are shown (a video's rotation
    /// tag, a photo's EXIF orientation) before the model.
    Orientation, "auto or none" { Auto = "auto", None = "none", }
);
named!(
    /// Whether interlaced input is deinterlaced (GStreamer's deinterlace; progressive frames
    /// pass untouched) before the model and in the output.
    Deinterlace, "auto or off" { Auto = "auto", Off = "off", }
);
named!(
    /// What a live stream's decoder does while the stream drops most of its frames.
    WhenBehind, "key-frames or all" { KeyFrames = "key-frames", All = "all", }
);
named!(
    /// Where a detector's box maps are drawn: inside each box, or over the whole frame.
    BoxMaps, "inside or full" { Inside = "inside", Full = "full", }
);
