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
//!
//! After a loss the camera is asked for a key frame at once: an upstream force-key-unit event,
//! which rtspsrc's RTP session turns into an RTCP PLI (RFC 4585) sent early, at most every
//! [`REQUEST_GAP`], and again every [`REPEAT`] while the frames stay damaged (the request or
//! its key frame may be lost too). The gap is looked for where the video's packets enter the
//! jitter buffer, a jitter-buffer latency (200 ms by default) before the depayloader sees it,
//! so the camera hears of it that much sooner; a gap there that the jitter buffer mends (a
//! packet merely late) costs one key frame, never a damaged mark. The session sends a PLI only for a
//! payload the SDP lists with `a=rtcp-fb:PT nack pli`, which few cameras write, so
//! [`request_key_frames`] adds that line where it is missing: a camera that does not
//! understand a PLI ignores it (RFC 3550 receivers skip unknown RTCP packets), and recovers
//! at its next key frame.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::stats::Tally;

/// The largest sequence-number gap taken as packets lost; a larger jump is a restart. Seen on
/// a looping test camera: jumps of 1121 and 7581 with no packet lost.
const MAX_DROPOUT: u16 = 1000;

/// The shortest time between two key-frame requests after new losses.
pub const REQUEST_GAP: Duration = Duration::from_millis(250);
/// How often the request is repeated while units stay damaged.
pub const REPEAT: Duration = Duration::from_secs(1);

/// The longest time between two of the camera session's regular RTCP reports.
const RTCP_INTERVAL: Duration = Duration::from_secs(1);

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
    /// A packet was lost since the camera was last asked for a key frame.
    unasked: bool,
    /// When the camera was last asked for a key frame.
    asked: Option<Instant>,
    /// The video's SSRC and payload type, from the packets the depayloader gets.
    video: Option<(u32, u8)>,
    /// The last sequence number of the video that entered the jitter buffer; once one has,
    /// gaps are asked about from there and not again at the depayloader.
    arrived_seq: Option<u16>,
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
            self.unasked |= self.arrived_seq.is_none();
        }
        gap
    }

    /// A video packet with sequence number `seq` entered the jitter buffer: a gap before it is
    /// asked about at once (counting and marking wait for what the jitter buffer hands on).
    pub fn arrived(&mut self, seq: u16) {
        if let Some(last) = self.arrived_seq {
            let d = seq.wrapping_sub(last);
            if d >= 0x8000 {
                return;
            }
            if d > 1 && d <= MAX_DROPOUT {
                self.unasked = true;
            }
        }
        self.arrived_seq = Some(seq);
    }

    /// The jitter buffer gave up on a packet (`GstRTPPacketLost`).
    pub fn lost_event(&mut self) {
        self.lost = true;
        self.unasked |= self.arrived_seq.is_none();
    }

    /// Whether to ask the camera for a key frame `now`: after a loss not yet asked about, at
    /// most every [`REQUEST_GAP`]; again every [`REPEAT`] while units stay damaged.
    pub fn ask_now(&mut self, now: Instant) -> bool {
        let since = self.asked.map(|t| now.saturating_duration_since(t));
        let due = (self.unasked && since.is_none_or(|s| s >= REQUEST_GAP))
            || (self.damaged && since.is_some_and(|s| s >= REPEAT));
        if due {
            self.asked = Some(now);
            self.unasked = false;
        }
        due
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
        if element.factory().is_some_and(|f| f.name() == "rtpsession") {
            // Regular reports at least every second (RFC 3550's 5 s minimum, reduced as its
            // section 6.2 allows): the session sends a PLI early only once a regular report has
            // gone out, and again a report interval after its last early one.
            element.set_property("rtcp-min-interval", RTCP_INTERVAL.as_nanos() as u64);
            return;
        }
        if element
            .factory()
            .is_some_and(|f| f.name() == "rtpjitterbuffer")
        {
            if let Some(sink) = element.static_pad("sink") {
                watch_arrivals(&sink, log.clone(), tally.clone());
            }
            return;
        }
        watch_depayloader(element, log.clone(), tally.clone());
    });
}

/// The video's depayloader (a sound track has one of its own: what it makes is not video):
/// the packets it takes in and the units it makes, each of which may call for a key frame.
fn watch_depayloader(element: &gst::Element, log: DamageLog, tally: Tally) {
    let is_depayloader = element
        .factory()
        .is_some_and(|f| f.klass().contains("Depayloader"));
    let (Some(sink), Some(src)) = (element.static_pad("sink"), element.static_pad("src")) else {
        return;
    };
    let makes_video = src
        .pad_template_caps()
        .iter()
        .any(|s| s.name().starts_with("video/"));
    if !is_depayloader || !makes_video {
        return;
    }
    let (log_in, tally_in) = (log.clone(), tally.clone());
    sink.add_probe(
        gst::PadProbeType::BUFFER
            | gst::PadProbeType::BUFFER_LIST
            | gst::PadProbeType::EVENT_DOWNSTREAM,
        move |pad, info| {
            let ask = {
                let Ok(mut d) = log_in.lock() else {
                    return gst::PadProbeReturn::Ok;
                };
                let packet = |b: &gst::BufferRef| {
                    if let Some(h) = header(b) {
                        let discont = b.flags().contains(gst::BufferFlags::DISCONT);
                        tally_in.rtp_packet(d.packet(h.seq, discont));
                        d.video = Some((h.ssrc, h.pt));
                    }
                };
                each_buffer(info, packet);
                if let Some(gst::PadProbeData::Event(e)) = &info.data {
                    if e.type_() == gst::EventType::CustomDownstream
                        && e.structure()
                            .is_some_and(|s| s.name() == "GstRTPPacketLost")
                    {
                        d.lost_event()
                    }
                }
                d.ask_now(Instant::now())
            };
            if ask {
                ask_for_key_frame(pad, &tally_in);
            }
            gst::PadProbeReturn::Ok
        },
    );
    let (log_out, sink_pad, tally) = (log.clone(), sink.downgrade(), tally.clone());
    src.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |_, info| {
            let ask = {
                let Ok(mut d) = log_out.lock() else {
                    return gst::PadProbeReturn::Ok;
                };
                let unit = |b: &gst::BufferRef| {
                    let key = !b.flags().contains(gst::BufferFlags::DELTA_UNIT);
                    d.unit(b.pts().map(|t| t.nseconds()), key);
                };
                each_buffer(info, unit);
                d.ask_now(Instant::now())
            };
            if let (true, Some(pad)) = (ask, sink_pad.upgrade()) {
                ask_for_key_frame(&pad, &tally);
            }
            gst::PadProbeReturn::Ok
        },
    );
}

/// The video's packets as they enter a jitter buffer (`sink`, one a stream of the feed): a
/// gap asks the camera for a key frame at once, the SSRC and payload type written into the
/// request (upstream of the jitter buffer nothing adds the payload type).
fn watch_arrivals(sink: &gst::Pad, log: DamageLog, tally: Tally) {
    sink.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |pad, info| {
            let ask = {
                let Ok(mut d) = log.lock() else {
                    return gst::PadProbeReturn::Ok;
                };
                let Some((ssrc, pt)) = d.video else {
                    return gst::PadProbeReturn::Ok;
                };
                let packet = |b: &gst::BufferRef| {
                    if let Some(h) = header(b).filter(|h| h.ssrc == ssrc && h.pt == pt) {
                        d.arrived(h.seq);
                    }
                };
                each_buffer(info, packet);
                d.ask_now(Instant::now()).then_some((ssrc, pt))
            };
            if let Some((ssrc, pt)) = ask {
                let request = gst::Structure::builder("GstForceKeyUnit")
                    .field("all-headers", true)
                    .field("ssrc", ssrc)
                    .field("payload", u32::from(pt))
                    .build();
                pad.push_event(gst::event::CustomUpstream::new(request));
                tally.key_frame_request();
            }
            gst::PadProbeReturn::Ok
        },
    );
}

/// `f` on each buffer a probe sees: the one buffer, or each of a list's.
fn each_buffer(info: &gst::PadProbeInfo, f: impl FnMut(&gst::BufferRef)) {
    match &info.data {
        Some(gst::PadProbeData::Buffer(b)) => std::iter::once(&**b).for_each(f),
        Some(gst::PadProbeData::BufferList(l)) => l.iter().for_each(f),
        _ => {}
    }
}

/// Ask the camera for a key frame: an upstream force-key-unit event from the depayloader's
/// `sink` pad. rtspsrc's demuxers add the payload type and SSRC on the way, and its session
/// sends the PLI.
fn ask_for_key_frame(sink: &gst::Pad, tally: &Tally) {
    let event = gstreamer_video::UpstreamForceKeyUnitEvent::builder()
        .all_headers(true)
        .build();
    sink.push_event(event);
    tally.key_frame_request();
}

/// Let `rtspsrc`'s RTP session send PLIs for the camera's video: `a=rtcp-fb:PT nack pli`
/// added to each video format of the SDP that lacks one, before rtspsrc sets its streams up
/// from it (its `on-sdp` signal hands the SDP for that).
pub(super) fn request_key_frames(rtspsrc: &gst::Element) {
    use gstreamer::glib;
    use gstreamer::glib::translate::ToGlibPtr;
    use gstreamer_rtsp_server::gst_sdp;
    if rtspsrc.find_property("protocols").is_none() {
        return;
    }
    rtspsrc.connect("on-sdp", false, |args| {
        let value = args.get(1)?;
        // SAFETY: on-sdp hands rtspsrc's own SDP (a boxed GstSDPMessage, alive for the
        // call) for the handler to read and change before the streams are made from it;
        // SDPMessageRef is a transparent wrapper of that struct.
        let sdp = unsafe {
            let ptr = glib::gobject_ffi::g_value_get_boxed(value.to_glib_none().0)
                as *mut gst_sdp::ffi::GstSDPMessage;
            (ptr as *mut gst_sdp::SDPMessageRef).as_mut()?
        };
        add_pli_feedback(sdp);
        None
    });
}

/// `a=rtcp-fb:PT nack pli` for each video format of `sdp` that has none (nor a `*` one).
pub fn add_pli_feedback(sdp: &mut gstreamer_rtsp_server::gst_sdp::SDPMessageRef) {
    for media in sdp.medias_mut() {
        if media.media() != Some("video") {
            continue;
        }
        let has = |media: &gstreamer_rtsp_server::gst_sdp::SDPMediaRef, pt: &str| {
            media.attributes().any(|a| {
                a.key() == "rtcp-fb"
                    && a.value().is_some_and(|v| {
                        let mut words = v.split_whitespace();
                        matches!(words.next(), Some(p) if p == pt || p == "*")
                            && words.next() == Some("nack")
                            && words.next() == Some("pli")
                    })
            })
        };
        let formats: Vec<String> = media.formats().map(str::to_owned).collect();
        for pt in formats {
            if !has(media, &pt) {
                media.add_attribute("rtcp-fb", Some(&format!("{pt} nack pli")));
            }
        }
    }
}

/// What an RTP packet's header says (version 2 only).
struct Header {
    pt: u8,
    seq: u16,
    ssrc: u32,
}

fn header(b: &gst::BufferRef) -> Option<Header> {
    let mut head = [0u8; 12];
    if b.copy_to_slice(0, &mut head).is_err() || head[0] >> 6 != 2 {
        return None;
    }
    Some(Header {
        pt: head[1] & 0x7f,
        seq: u16::from_be_bytes([head[2], head[3]]),
        ssrc: u32::from_be_bytes([head[8], head[9], head[10], head[11]]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_frame_is_asked_for_once_a_loss_and_again_while_damage_lasts() {
        let t0 = Instant::now();
        let mut d = Damage::default();
        d.packet(0, true);
        assert!(!d.ask_now(t0), "no loss, no request");
        // A gap where packets enter the jitter buffer is asked about at once…
        d.arrived(0);
        d.arrived(3);
        assert!(d.ask_now(t0));
        assert!(!d.ask_now(t0), "once");
        // …and not again when the depayloader sees the same gap.
        assert_eq!(d.packet(3, true), 2);
        assert!(d.unit(Some(0), false));
        assert!(!d.ask_now(t0 + Duration::from_millis(300)));
        // A new loss within REQUEST_GAP waits for it.
        d.arrived(6);
        assert!(!d.ask_now(t0 + Duration::from_millis(100)));
        assert!(d.ask_now(t0 + REQUEST_GAP));
        // Still damaged a REPEAT later: asked again.
        assert!(d.ask_now(t0 + REQUEST_GAP + REPEAT));
        // The jitter buffer mended that gap (4 and 5 came late); a whole key frame ends it.
        for s in 4..=7 {
            assert_eq!(d.packet(s, false), 0);
        }
        assert!(!d.unit(Some(40), true));
        assert!(!d.ask_now(t0 + REQUEST_GAP + REPEAT * 3));
    }

    #[test]
    fn the_sdp_offers_pli_feedback_for_each_video_format() {
        use gstreamer_rtsp_server::gst_sdp;
        gst::init().unwrap();
        let text = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\n\
            m=video 0 RTP/AVP 96 97\r\na=rtpmap:96 H264/90000\r\na=rtcp-fb:97 nack pli\r\n\
            m=audio 0 RTP/AVP 0\r\n";
        let mut sdp = gst_sdp::SDPMessage::parse_buffer(text.as_bytes()).unwrap();
        add_pli_feedback(&mut sdp);
        let fb = |i: u32| -> Vec<String> {
            let m = sdp.media(i).unwrap();
            m.attributes()
                .filter(|a| a.key() == "rtcp-fb")
                .filter_map(|a| a.value().map(str::to_owned))
                .collect()
        };
        assert_eq!(fb(0), ["97 nack pli", "96 nack pli"]);
        assert!(fb(1).is_empty(), "sound is left alone");
    }

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
