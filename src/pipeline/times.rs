//! A sample's times, from its segment: the running time (the pipeline clock's, shared by a
//! live feed's streams) and the stream time (where a player shows it). Used by the source, its
//! sound, the sinks and the RTSP server alike.

use gstreamer as gst;

/// A sample's time segment (None for a sample without one, or in another format).
fn segment(sample: &gst::Sample) -> Option<gst::FormattedSegment<gst::ClockTime>> {
    sample
        .segment()
        .and_then(|s| s.downcast_ref::<gst::ClockTime>().cloned())
}

/// A buffer's running time (the pipeline clock's time it is for: a live feed's streams share it).
pub fn running_time(sample: &gst::Sample, pts: gst::ClockTime) -> u64 {
    segment(sample)
        .and_then(|s| s.to_running_time(pts))
        .unwrap_or(pts)
        .nseconds()
}

/// A buffer's time in its stream (where a player shows it: an MP4's edit list applied, as
/// the same for its video and its sound), from its sample's segment.
pub fn stream_time(sample: &gst::Sample, pts: gst::ClockTime) -> u64 {
    segment(sample)
        .and_then(|s| s.to_stream_time(pts))
        .unwrap_or(pts)
        .nseconds()
}
