//! Link-time settings for the binary, tests and benchmarks: an rpath to the libtorch they link
//! against, and libtorch_cuda kept needed so `--device cuda` finds the GPU (see
//! crates/link_libtorch.rs, which the plugin's build script shares).
//!
//! tcmalloc, the programs' allocator, comes from the crate `gradcam-tcmalloc`, which the
//! binary and the benchmarks name (the library does not, so the GStreamer plugin gets none).

include!("crates/link_libtorch.rs");

fn main() {
    link_libtorch();
}
