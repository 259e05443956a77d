//! Damaged frames of an RTP feed: packets lost on the way are counted, and every frame decoded
//! from data with a gap is marked, from the loss to the next key frame that arrives whole.
//!
//! What is watched is what GStreamer hands the depayloader: the RTP packets the jitter buffer
//! lets through (a sequence-number gap is a loss; the jitter buffer's `GstRTPPacketLost` event
//! and its DISCONT flag say the same), then the access units the depayloader makes of them.
//! A unit made after a loss is damaged, and so is every unit after it until a key frame comes
//! with no loss before it: the frames between reference the lost data. The decoder keeps the
//! units' timestamps, so the appsink knows a damaged frame by its own (or by the decoder's
//! CORRUPTED flag, where the decoder sets one).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::stats::Tally;

/// The largest sequence-number gap taken as packets lost; a larger jump is a restart. Seen on
/// a looping test camera: jumps of 1121 and 7581 with no packet lost.
const MAX_DROPOUT: u16 = 1000;

/// How many damaged units' timestamps are kept for the appsink to find: more than a
/// decoder holds back, fewer than a second of frames it may never hand on.
const KEPT: usize = 64;

/// A feed's loss state, shared by the depayloader's two probes and the appsink.
#[derive(Debug, Default)]
pub struct Damage {
    /// The last RTP sequence number seen.
    last_seq: Option<u16>,
    /// A packet was lost since the last unit left the depayloader.
    lost: bool,
    /// Units are damaged until a whole key frame.
    damaged: bool,
    /// Timestamps of the damaged units not yet claimed by a decoded frame, oldest first.
    marked: VecDeque<u64>,
    /// The feed comes over UDP (rtspsrc made a udpsrc for it), not interleaved in TCP.
    pub over_udp: bool,
}

impl Damage {
    /// An RTP packet with sequence number `seq` (and the jitter buffer's DISCONT flag):
    /// the packets it says were lost.
    pub fn packet(&mut self, seq: u16, discont: bool) -> u64 {
        // A DISCONT on the very first packet is the stream's start, not a loss.
        let first = self.last_seq.is_none();
        let gap = match self.last_seq {
            // A packet older than the last (a late one the jitter buffer let through) says
            // nothing of a loss; the distance is modulo 2^16.
            Some(last) => match seq.wrapping_sub(last) {
                0 => return 0,
                d if d >= 0x8000 => return 0,
                // A jump this far is the sender starting over (a shared media joined late, a
                // restart), as RTP receivers take it (RFC 3550's MAX_DROPOUT): no loss.
                d if d > MAX_DROPOUT => {
                    self.last_seq = Some(seq);
                    return 0;
                }
                d => u64::from(d - 1),
            },
            None => 0,
        };
        self.last_seq = Some(seq);
        if gap > 0 || (discont && !first) {
            self.lost = true;
        }
        gap
    }

    /// The jitter buffer gave up on a packet (`GstRTPPacketLost`).
    pub fn lost_event(&mut self) {
        self.lost = true;
    }

    /// A unit leaves the depayloader: whether it is damaged (remembered by `pts`).
    pub fn unit(&mut self, pts: Option<u64>, key: bool) -> bool {
        if std::mem::take(&mut self.lost) {
            self.damaged = true;
        } else if key {
            self.damaged = false;
        }
        if self.damaged {
            if let Some(t) = pts {
                if self.marked.len() == KEPT {
                    self.marked.pop_front();
                }
                self.marked.push_back(t);
            }
        }
        self.damaged
    }

    /// Whether the decoded frame stamped `pts` came from a damaged unit (claimed once).
    pub fn frame(&mut self, pts: u64) -> bool {
        // Frames leave in the order their units came (cameras send no B-frames); a unit the
        // decoder dropped leaves a stale timestamp before this one: forget those.
        while self.marked.front().is_some_and(|&t| t < pts) {
            self.marked.pop_front();
        }
        if self.marked.front() == Some(&pts) {
            self.marked.pop_front();
            return true;
        }
        false
    }
}

pub type DamageLog = Arc<Mutex<Damage>>;

/// Watch the depayloader `decode` (a uridecodebin over rtspsrc) makes: its RTP packets and its
/// units, into `log`; lost packets counted on `tally`.
pub(super) fn watch(decode: &gst::Element, log: DamageLog, tally: Tally) {
    let Some(bin) = decode.downcast_ref::<gst::Bin>() else {
        return;
    };
    bin.connect_deep_element_added(move |_, _, element| {
        if element.factory().is_some_and(|f| f.name() == "udpsrc") {
            if let Ok(mut d) = log.lock() {
                d.over_udp = true;
            }
            return;
        }
        let is_depayloader = element
            .factory()
            .is_some_and(|f| f.klass().contains("Depayloader"));
        let (Some(sink), Some(src)) = (element.static_pad("sink"), element.static_pad("src"))
        else {
            return;
        };
        // The video's depayloader (a sound track has one of its own): what it makes is video.
        let makes_video = src
            .pad_template_caps()
            .iter()
            .any(|s| s.name().starts_with("video/"));
        if !is_depayloader || !makes_video {
            return;
        }
        let (log_in, tally) = (log.clone(), tally.clone());
        sink.add_probe(
            gst::PadProbeType::BUFFER
                | gst::PadProbeType::BUFFER_LIST
                | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                let Ok(mut d) = log_in.lock() else {
                    return gst::PadProbeReturn::Ok;
                };
                let mut packet = |b: &gst::BufferRef| {
                    if let Some(seq) = sequence_number(b) {
                        let lost = d.packet(seq, b.flags().contains(gst::BufferFlags::DISCONT));
                        tally.rtp_packet(lost);
                    }
                };
                match &info.data {
                    Some(gst::PadProbeData::Buffer(b)) => packet(b),
                    Some(gst::PadProbeData::BufferList(l)) => l.iter().for_each(packet),
                    Some(gst::PadProbeData::Event(e))
                        if e.type_() == gst::EventType::CustomDownstream
                            && e.structure()
                                .is_some_and(|s| s.name() == "GstRTPPacketLost") =>
                    {
                        d.lost_event()
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
        let log_out = log.clone();
        src.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
            move |_, info| {
                let Ok(mut d) = log_out.lock() else {
                    return gst::PadProbeReturn::Ok;
                };
                let mut unit = |b: &gst::BufferRef| {
                    let key = !b.flags().contains(gst::BufferFlags::DELTA_UNIT);
                    d.unit(b.pts().map(|t| t.nseconds()), key);
                };
                match &info.data {
                    Some(gst::PadProbeData::Buffer(b)) => unit(b),
                    Some(gst::PadProbeData::BufferList(l)) => l.iter().for_each(unit),
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
    });
}

/// An RTP packet's sequence number (bytes 2 and 3 of its header; version 2 only).
fn sequence_number(b: &gst::BufferRef) -> Option<u16> {
    let mut head = [0u8; 4];
    if b.copy_to_slice(0, &mut head).is_err() || head[0] >> 6 != 2 {
        return None;
    }
    Some(u16::from_be_bytes([head[2], head[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_damages_the_units_up_to_the_next_whole_key_frame() {
        let mut d = Damage::default();
        for s in 0..3 {
            assert_eq!(d.packet(s, s == 0), 0);
        }
        assert!(!d.unit(Some(0), true));
        assert!(!d.unit(Some(40), false));
        // Packets 3 and 4 lost: the unit made next is damaged, and the ones after it.
        assert_eq!(d.packet(5, true), 2);
        assert!(d.unit(Some(80), false));
        d.packet(6, false);
        assert!(d.unit(Some(120), false));
        // A key frame with a loss before it is no cure.
        d.packet(8, false);
        assert!(d.unit(Some(160), true));
        // A whole one is.
        d.packet(9, false);
        assert!(!d.unit(Some(200), true));
        assert!(!d.unit(Some(240), false));
        // The decoded frames find their marks (a dropped unit's mark is forgotten).
        assert!(!d.frame(40));
        assert!(d.frame(120));
        assert!(d.frame(160));
        assert!(!d.frame(200));
        assert!(!d.frame(80));
    }

    #[test]
    fn sequence_numbers_wrap_and_late_packets_are_no_loss() {
        let mut d = Damage::default();
        d.packet(65534, false);
        assert_eq!(d.packet(65535, false), 0);
        assert_eq!(d.packet(1, false), 1);
        // A late packet (older than the last): not a loss, and no new gap after it.
        assert_eq!(d.packet(0, false), 0);
        assert_eq!(d.packet(2, false), 0);
        // A jump past MAX_DROPOUT is a restart, not a loss; counting goes on from there.
        assert_eq!(d.packet(2 + 1 + MAX_DROPOUT, false), 0);
        assert_eq!(d.packet(5 + MAX_DROPOUT, false), 1);
        // The jitter buffer's own word for a loss.
        let mut d = Damage::default();
        d.packet(0, true);
        assert!(!d.unit(Some(0), true));
        d.lost_event();
        assert!(d.unit(Some(1), false));
    }
}
