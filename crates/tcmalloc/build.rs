//! tcmalloc as the process allocator of the programs that name this crate (`use
//! gradcam_tcmalloc as _;`). libtorch frees and reallocates tens of megabytes of activations
//! per batch; glibc returns them to the kernel each time (mmap/munmap), and the page faults
//! that follow cost a third of the throughput on 2 cores. tcmalloc keeps them.
//!
//! It is a crate of its own so that only a program that names it links it: the library does
//! not, so the GStreamer plugin (a library loaded into a running process, which cannot change
//! its allocator) does not get it.

fn main() {
    // Listed before libc among the needed libraries, so malloc/free resolve to it process-wide.
    println!("cargo:rustc-link-lib=dylib=tcmalloc_minimal");
}
