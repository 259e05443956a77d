//! The settings whose value is one of a few names (`--device auto|cpu|cuda`): each an enum,
//! declared once with `named!` together with the names it is given by. The one enum is parsed
//! at every edge: clap (through `FromStr`), the config file (serde), and the GStreamer element
//! (a GEnum property, `glib::Enum`, so `gst-inspect-1.0 gradcam` lists the values). Past the
//! edge the program holds the enum, never the text.

use gstreamer::glib;

/// A setting whose value is one of a few names; the one parser every front end shares.
pub trait Named: Sized + Copy + PartialEq + 'static {
    /// Each accepted name and its value (aliases after the value's own name).
    const NAMES: &'static [(&'static str, Self)];
    /// Every value, in declaration order.
    const VALUES: &'static [Self];
    /// The setting's name as a key (`device`, `on_overload`); the flag is `--` and kebab-case.
    const KEY: &'static str;
    /// What an unknown name's error suggests: `auto, cpu or cuda`.
    const USE: &'static str;

    /// `what` names the setting as its front end does: `--device` here, `device` for the file.
    /// Case, `-` and `_` do not matter (`Channels_Last`, `GradCAM++`).
    fn parse_named(what: &str, v: &str) -> Result<Self, String> {
        let plain = |s: &str| s.to_ascii_lowercase().replace(['-', '_'], "");
        Self::NAMES
            .iter()
            .find(|(n, _)| plain(n) == plain(v))
            .map(|(_, x)| *x)
            .ok_or_else(|| format!("unknown {what} `{v}`; use {}", Self::USE))
    }

    /// The value's own name (the first it is given by).
    fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, x)| *x == self)
            .map(|(n, _)| *n)
            .expect("every value is named")
    }

    /// The flag that sets it: `--on-overload`.
    fn flag() -> String {
        format!("--{}", Self::KEY.replace('_', "-"))
    }
}

/// A `Named` enum: its variants, the names each is given by (its own, then aliases), the key of
/// its setting, the GType name of its GEnum, and the fix its error suggests.
macro_rules! named {
    ($(#[$m:meta])* $name:ident, $key:literal, $gtype:literal, $use:literal {
        $($(#[$vm:meta])* $v:ident = $own:literal $(| $alias:literal)*,)*
    }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, glib::Enum)]
        #[enum_type(name = $gtype)]
        pub enum $name { $($(#[$vm])* #[enum_value(name = $own, nick = $own)] $v,)* }

        impl Named for $name {
            const NAMES: &'static [(&'static str, Self)] =
                &[$(($own, Self::$v), $(($alias, Self::$v),)*)*];
            const VALUES: &'static [Self] = &[$(Self::$v,)*];
            const KEY: &'static str = $key;
            const USE: &'static str = $use;
        }

        impl std::str::FromStr for $name {
            type Err = String;
            /// The command line's parser: `unknown --device `tpu`; use auto, cpu or cuda`.
            fn from_str(v: &str) -> Result<Self, String> {
                Self::parse_named(&Self::flag(), v)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            /// The config file's parser: `unknown device `tpu`; use auto, cpu or cuda`.
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = String::deserialize(d)?;
                Self::parse_named(Self::KEY, &v).map_err(serde::de::Error::custom)
            }
        }

        impl super::declare::Shown for $name {
            fn shown(&self) -> Option<String> {
                Some(self.name().to_owned())
            }
        }
    };
}

named!(DeviceChoice, "device", "GradcamDevice", "auto, cpu or cuda" {
    Auto = "auto", Cpu = "cpu", Cuda = "cuda" | "gpu",
});
named!(
    /// The model's arithmetic. fp16 runs the model under CUDA autocast (a GPU only), bf16 its
    /// features under CPU autocast (a CPU with bf16 instructions); the head, the gradient and
    /// the CAM stay float32 in both. Auto times bf16 against fp32 on a CPU that has bf16
    /// (`engine::tune`), and is fp32 elsewhere.
    Precision, "precision", "GradcamPrecision",
    "auto, fp32, fp16 (on a CUDA GPU) or bf16 (on a CPU with bf16)" {
        Auto = "auto",
        Fp32 = "fp32",
        Fp16 = "fp16",
        Bf16 = "bf16",
    }
);
named!(
    /// How a batch lies in memory on its way into the model: channels-last (NHWC, the layout
    /// the frames arrive in, and the fast one for oneDNN and tensor cores) or contiguous (NCHW);
    /// auto times both at start (`engine::tune`).
    Layout, "layout", "GradcamLayout", "auto, channels-last or contiguous" {
        /// The faster of the two for this model on this machine, measured at start.
        Auto = "auto",
        ChannelsLast = "channels-last" | "nhwc",
        Contiguous = "contiguous" | "nchw",
    }
);
named!(
    /// The H.264 encoder of file and RTSP outputs.
    Encoder, "encoder", "GradcamEncoder", "auto, x264 or nvenc" {
        /// NVENC where the GPU has it (GStreamer's nvh264enc is registered), else x264.
        Auto = "auto",
        X264 = "x264",
        Nvenc = "nvenc",
    }
);
named!(
    /// What explains a frame: `auto` lets the model's kind decide (Grad-CAM for a classifier,
    /// ODAM for a detector); see `cam::Method` for each.
    MethodChoice, "method", "GradcamMethod",
    "gradcam, gradcam++, xgradcam, layercam, hirescam, odam, eigencam or auto (the model's kind decides)" {
        Auto = "auto",
        GradCam = "gradcam",
        GradCamPlusPlus = "gradcam++" | "gradcampp" | "gradcamplusplus",
        XGradCam = "xgradcam",
        LayerCam = "layercam",
        HiResCam = "hirescam",
        Odam = "odam",
        EigenCam = "eigencam",
    }
);
named!(
    /// Heatmap colours (the tables are `colormap.rs`'s).
    Colormap, "colormap", "GradcamColormap", "jet, turbo, inferno or viridis" {
        Jet = "jet", Turbo = "turbo", Inferno = "inferno", Viridis = "viridis",
    }
);
named!(Progress, "progress", "GradcamProgress", "auto, bar, lines or none" {
    Auto = "auto", Bar = "bar", Lines = "lines", None = "none",
});
named!(
    /// How rtspsrc carries the feed: `auto` tries UDP and falls back to TCP when no packet comes
    /// (or when UDP keeps losing packets).
    RtspTransport, "rtsp_transport", "GradcamRtspTransport", "auto, tcp or udp" {
        Auto = "auto", Tcp = "tcp", Udp = "udp",
    }
);
named!(
    /// Whether a file input is paced at its own frame rate: `auto` when a person watches it.
    Realtime, "realtime", "GradcamRealtime", "auto, on or off" { Auto = "auto", On = "on", Off = "off", }
);
named!(
    /// Whether frames are turned upright as their file says they are shown (a video's rotation
    /// tag, a photo's EXIF orientation) before the model.
    Orientation, "orientation", "GradcamOrientation", "auto or none" { Auto = "auto", None = "none", }
);
named!(
    /// Whether interlaced input is deinterlaced (GStreamer's deinterlace; progressive frames
    /// pass untouched) before the model and in the output.
    Deinterlace, "deinterlace", "GradcamDeinterlace", "auto or off" { Auto = "auto", Off = "off", }
);
named!(
    /// What a live stream's decoder does while the stream drops most of its frames.
    WhenBehind, "when_behind", "GradcamWhenBehind", "key-frames or all" {
        KeyFrames = "key-frames", All = "all",
    }
);
named!(
    /// What becomes of a frame decoded from damaged data (an RTP packet lost before it, up to
    /// the next whole key frame).
    OnDamaged, "on_damaged", "GradcamOnDamaged", "mark, skip or explain" {
        /// Shown and recorded as decoded, with a "damaged" badge and no map.
        Mark = "mark",
        /// Left out of the outputs and the model.
        Skip = "skip",
        /// Explained as any frame, the badge kept.
        Explain = "explain",
    }
);
named!(
    /// Where a detector's box maps are drawn: inside each box, or over the whole frame.
    BoxMaps, "box_maps", "GradcamBoxMaps", "inside or full" { Inside = "inside", Full = "full", }
);
named!(
    /// What the appsink does when the model falls behind a live source.
    Overload, "on_overload", "GradcamOverload", "drop or block" {
        /// Drop the oldest waiting frame so the newest always gets through (live default).
        Drop = "drop",
        /// Wait for room: decoding slows to the model's pace (files, always).
        Block = "block",
    }
);

/// An enumerated setting's values by its key (`device`: auto, cpu, cuda), each by its own name
/// (aliases left out): the options reference lists them. None for any other key.
pub fn values_of(key: &str) -> Option<Vec<&'static str>> {
    fn own<T: Named>() -> (&'static str, Vec<&'static str>) {
        (T::KEY, T::VALUES.iter().map(|v| v.name()).collect())
    }
    [
        own::<DeviceChoice>(),
        own::<Precision>(),
        own::<Layout>(),
        own::<Encoder>(),
        own::<MethodChoice>(),
        own::<Colormap>(),
        own::<Progress>(),
        own::<RtspTransport>(),
        own::<Realtime>(),
        own::<Orientation>(),
        own::<Deinterlace>(),
        own::<WhenBehind>(),
        own::<OnDamaged>(),
        own::<BoxMaps>(),
        own::<Overload>(),
    ]
    .into_iter()
    .find(|(k, _)| *k == key)
    .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_enumerated_setting_lists_its_values_by_its_key() {
        assert_eq!(values_of("device"), Some(vec!["auto", "cpu", "cuda"]));
        assert_eq!(values_of("on_overload"), Some(vec!["drop", "block"]));
        assert_eq!(values_of("batch_size"), None);
    }

    #[test]
    fn names_parse_loosely_and_print_as_declared() {
        assert_eq!("GPU".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda));
        assert_eq!("Channels_Last".parse::<Layout>(), Ok(Layout::ChannelsLast));
        assert_eq!(
            "Grad-CAM++".parse::<MethodChoice>(),
            Ok(MethodChoice::GradCamPlusPlus)
        );
        assert_eq!(DeviceChoice::Cuda.to_string(), "cuda");
        assert_eq!(
            "x".parse::<WhenBehind>().unwrap_err(),
            "unknown --when-behind `x`; use key-frames or all"
        );
        assert_eq!(Overload::flag(), "--on-overload");
    }

    #[test]
    fn the_file_reads_and_writes_the_names() {
        #[derive(serde::Deserialize, serde::Serialize)]
        struct T {
            device: DeviceChoice,
        }
        let t: T = toml::from_str("device = \"cuda\"").expect("a name");
        assert_eq!(t.device, DeviceChoice::Cuda);
        assert_eq!(
            toml::to_string(&t).expect("text").trim(),
            "device = \"cuda\""
        );
        let e = toml::from_str::<T>("device = \"tpu\"")
            .err()
            .expect("refused");
        assert!(
            e.to_string()
                .contains("unknown device `tpu`; use auto, cpu or cuda"),
            "{e}"
        );
    }

    #[test]
    fn the_genum_lists_each_value_once_by_its_own_name() {
        use glib::prelude::*;
        let class = glib::EnumClass::with_type(Precision::static_type()).expect("an enum");
        let nicks: Vec<&str> = class.values().iter().map(|v| v.nick()).collect();
        assert_eq!(nicks, ["auto", "fp32", "fp16", "bf16"]);
        let nicks: Vec<&str> = glib::EnumClass::with_type(Layout::static_type())
            .expect("an enum")
            .values()
            .iter()
            .map(|v| v.nick())
            .collect();
        assert_eq!(nicks, ["auto", "channels-last", "contiguous"]);
    }
}
