//! The plugin links libtorch: an rpath to it (as the program has), so GStreamer can load the
//! plugin without LD_LIBRARY_PATH, and libtorch_cuda kept needed so the element finds a GPU
//! (see crates/link_libtorch.rs). No tcmalloc here: a library loaded into a running process
//! cannot change its allocator.

include!("../link_libtorch.rs");

fn main() {
    link_libtorch();
}
