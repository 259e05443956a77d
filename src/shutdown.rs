//! Ctrl-C and SIGTERM. The first asks the run to stop cleanly: no new frames are accepted, the
//! frames in flight are explained and written, and the output is finalized. The second exits
//! at once, removing any partial output first.

use std::sync::atomic::{AtomicUsize, Ordering};

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

/// Install the handler (once per process; later calls do nothing).
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        if SIGNALS.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!(
                "stopping: finishing the frames in flight (press Ctrl-C again to quit at once)"
            );
        } else {
            crate::outfile::remove_partials();
            eprintln!("error: interrupted twice; quit without finishing the output");
            // `_exit`, not `exit`: running libtorch's and GStreamer's static destructors while
            // the worker and streaming threads still use them can crash the process on the way
            // out (seen as death by signal instead of status 130).
            // SAFETY: _exit only ends the process; it touches no Rust state.
            unsafe { libc::_exit(130) }
        }
    });
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}

/// Ask the run to stop cleanly, as a first Ctrl-C does, from inside the process (the Python
/// package, on KeyboardInterrupt; it leaves SIGINT to Python).
pub fn request() {
    SIGNALS.fetch_max(1, Ordering::SeqCst);
}

/// Forget a stop asked for, so the next run in this process starts afresh.
pub fn reset() {
    SIGNALS.store(0, Ordering::SeqCst);
}
