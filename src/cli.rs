//! Command-line flags as parsed by clap: raw values only, no validation and no defaults
//! merged here (that is `config.rs`'s job), so the config file can fill what is left out.
//! The settings' flags are declared once, in `settings.rs`; what is here is only the
//! command line's own: inputs, outputs, the config file and the credentials.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::settings::{self, Flags};

/// Explain what a vision model sees, frame by frame, with Grad-CAM.
///
/// Reads a video (any file or URI GStreamer can decode) or a still image, runs a TorchScript
/// classifier on every frame, and writes the frames with a Grad-CAM heatmap blended over them.
#[derive(Debug, Parser, Default)]
#[command(name = "gradcam-stream", version, about, long_about = None)]
pub struct Args {
    /// Input, repeatable (one stream each, explained in shared batches): a video file path or URI
    /// (file://, http(s)://), an RTSP feed (rtsp://[user:password@]host[:port]/path), a webcam
    /// (/dev/videoN or v4l2:///dev/videoN), a live test source (test://[pattern][?size=WxH&fps=N]),
    /// or an image (.png .jpg .jpeg .bmp .webp .tiff). Name a stream with a prefix:
    /// `cam1=rtsp://…` (streams are otherwise named 0, 1, …)
    #[arg(short, long, value_name = "[NAME=]PATH|URI")]
    pub input: Vec<String>,

    /// Output, repeatable: a video file (.mp4, .mkv), an RTSP server (rtsp://0.0.0.0:8554/gradcam;
    /// port 0 picks a free one), display (a window) or null (discard); an image for image input.
    /// With several inputs, `{stream}` in it is each stream's name: rec-{stream}.mp4,
    /// rtsp://0.0.0.0:8554/{stream}
    #[arg(short, long, value_name = "PATH|URL")]
    pub output: Vec<String>,

    /// Make the RTSP server demand these credentials (it offers Digest and Basic); the environment
    /// variable GRADCAM_RTSP_AUTH does the same without showing them in the process list
    #[arg(long, value_name = "USER:PASSWORD")]
    pub rtsp_auth: Option<String>,

    /// Make the web view (--web) demand these credentials (HTTP Basic) on everything it serves;
    /// the environment variable GRADCAM_WEB_AUTH does the same without showing them
    #[arg(long, value_name = "USER:PASSWORD")]
    pub web_auth: Option<String>,

    /// TOML config file; flags given on the command line override its values
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub settings: Flags,
}

impl Args {
    /// The command, with each setting's declared default appended to its help line.
    pub fn command_with_defaults() -> clap::Command {
        settings::shown_defaults()
            .into_iter()
            .fold(Args::command(), |cmd, (id, shown)| {
                cmd.mut_arg(id, |a| {
                    let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                    a.help(format!("{help} [default: {shown}]"))
                })
            })
    }

    /// Parse the process's arguments; a bad one exits with status 2 and one line.
    pub fn parse_with_defaults() -> Self {
        Self::command_with_defaults()
            .try_get_matches()
            .and_then(|m| Self::from_arg_matches(&m))
            .unwrap_or_else(|e| exit_with(e))
    }
}

/// `--help` and `--version` as clap prints them; any other error as one line: clap's message
/// and its tip, without the usage lines around them.
fn exit_with(e: clap::Error) -> ! {
    use clap::error::ErrorKind::{DisplayHelp, DisplayVersion};
    if matches!(e.kind(), DisplayHelp | DisplayVersion) || !e.use_stderr() {
        e.exit()
    }
    eprintln!("{}", one_line(&e.render().to_string()));
    std::process::exit(2)
}

/// A clap error's text as one line: its message and tip, without the usage lines.
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_flag_is_one_line_with_its_tip() {
        let e = Args::try_parse_from(["x", "--colour", "jet"]).unwrap_err();
        let line = one_line(&e.render().to_string());
        assert!(
            line.starts_with("error: unexpected argument '--colour' found; tip: "),
            "{line}"
        );
        assert!(line.contains("'--colormap'"), "{line}");
        assert!(!line.contains('\n'));
    }
}
