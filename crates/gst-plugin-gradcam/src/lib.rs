//! GStreamer plugin `gradcam`: the element of the same name explains each frame of raw video
//! with the gradcam-stream engine (the same worker, model, CAM and overlay as the program),
//! batching frames inside the element, and attaches the result to each buffer as a
//! `GstVideoRegionOfInterestMeta`.
//!
//! ```sh
//! GST_PLUGIN_PATH=target/release gst-inspect-1.0 gradcam
//! ```

use gstreamer as gst;

mod gradcam;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), gst::glib::BoolError> {
    keep_freed_memory();
    gradcam::register(plugin)
}

/// libtorch frees and reallocates tens of megabytes of activations per batch. glibc's malloc
/// serves blocks that large with mmap and returns them with munmap, so every batch pays page
/// faults on fresh memory: the element ran at 0.4x the program, which links tcmalloc (a plugin
/// cannot change the allocator of the process that loads it). So glibc is told to serve every
/// block from one heap (no mmap, one arena) and to keep up to 512 MiB of freed heap for reuse:
/// on bigbuckbunny.mp4 that took 0.6-0.9 million page faults down to 0.18 million (the
/// program's count) and the element to the program's pace. It is process-wide (when memory
/// goes back to the kernel, and that threads share one arena): a library inside someone else's
/// process does that only when asked, so it is done where the host sets
/// `GRADCAM_GLIBC_MALLOC=keep`, and glibc is left as it is otherwise.
fn keep_freed_memory() {
    if !std::env::var("GRADCAM_GLIBC_MALLOC").is_ok_and(|v| v == "keep") {
        return;
    }
    // Blocks of up to 32 MiB (glibc's largest threshold) from the heap; larger ones too, as
    // no block is mmapped; the heap shrinks only past 512 MiB free at its top.
    // SAFETY: mallopt only sets allocator parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        // One arena: a thread's own arena grows in 64 MiB heaps, and glibc unmaps a heap as
        // soon as it is empty, whatever the trim threshold (at 720p, one per batch).
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

gst::plugin_define!(
    gradcam,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    env!("CARGO_PKG_VERSION"),
    // GStreamer's spelling of the crate's Apache-2.0.
    "Apache 2.0",
    "gst-plugin-gradcam",
    "gradcam-stream",
    "the gradcam-stream repository"
);
