//! Key-frame shedding: while a live stream drops most of its frames, its decoder is given only
//! its key frames, until it keeps up again.

use std::sync::atomic::Ordering;
use std::sync::Mutex;

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::stats::Tally;

/// Whether a stream is behind, judged once a group of pictures: more than half of the frames
/// it decoded since the previous key frame were dropped.
#[derive(Debug, Default)]
pub(super) struct Behind {
    /// The stream's received and dropped counts at the previous key frame.
    at_key: Option<(u64, u64)>,
    shedding: bool,
}

impl Behind {
    /// At a key frame: whether the frames up to the next one are left undecoded.
    pub(super) fn at_key_frame(&mut self, received: u64, dropped: u64) -> bool {
        if let Some((r, d)) = self.at_key.replace((received, dropped)) {
            self.shedding = 2 * dropped.saturating_sub(d) > received.saturating_sub(r);
        }
        self.shedding
    }
}

/// While the stream drops most of its frames, its video decoder gets key frames only: the
/// frames between them would be decoded and converted just to be dropped, on the cores the
/// model needs. Decided at each key frame, so a group of pictures is decoded whole or not at
/// all, and every frame is decoded again once the key frames alone keep up. (The decoder's own
/// `skip-frame` cannot say "key frames only" in gst-libav 1.22, so the encoded frames are held
/// back at its sink pad instead.)
pub(super) fn key_frames_while_behind(decode: &gst::Element, tally: Tally) {
    let Some(bin) = decode.downcast_ref::<gst::Bin>() else {
        return;
    };
    bin.connect_deep_element_added(move |_, _, element| {
        let is_video_decoder = element.factory().is_some_and(|f| {
            let klass = f.klass();
            klass.contains("Decoder") && klass.contains("Video")
        });
        let Some(pad) = element.static_pad("sink").filter(|_| is_video_decoder) else {
            return;
        };
        let tally = tally.clone();
        let behind = Mutex::new(Behind::default());
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let Some(buffer) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            let Ok(mut behind) = behind.lock() else {
                return gst::PadProbeReturn::Ok;
            };
            let stats = &tally.stream;
            if !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                behind.at_key_frame(
                    stats.received.load(Ordering::Relaxed),
                    stats.dropped.load(Ordering::Relaxed),
                );
                gst::PadProbeReturn::Ok
            } else if behind.shedding {
                tally.undecoded();
                gst::PadProbeReturn::Drop
            } else {
                gst::PadProbeReturn::Ok
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_sheds_its_frames_between_key_frames_while_it_drops_most_of_them() {
        let mut b = Behind::default();
        // The first key frame has nothing to judge by.
        assert!(!b.at_key_frame(0, 0));
        // 25 frames decoded, 12 dropped: not most of them.
        assert!(!b.at_key_frame(25, 12));
        // 25 more, 13 of them dropped: the next group is left undecoded.
        assert!(b.at_key_frame(50, 25));
        // Only its key frame was decoded, and it was explained: every frame again.
        assert!(!b.at_key_frame(51, 25));
        // The key frame alone dropped too: still behind.
        assert!(b.at_key_frame(76, 45));
        assert!(b.at_key_frame(77, 46));
    }
}
