//! Link-time settings for the binary, tests and benchmarks:
//! - an rpath to the libtorch it links against, so it runs without LD_LIBRARY_PATH. torch-sys
//!   finds libtorch through LIBTORCH (the Makefile points it at the virtualenv's torch package);
//!   the same variable tells us where it is.
//! - tcmalloc as the process allocator. libtorch frees and reallocates tens of megabytes of
//!   activations per batch; glibc returns them to the kernel each time (mmap/munmap), and the
//!   page faults that follow cost a third of the throughput on 2 cores. tcmalloc keeps them.
//! - libtorch_cuda kept as a needed library, so `--device cuda` finds the GPU.

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    // Listed before libc among the needed libraries, so malloc/free resolve to it process-wide.
    println!("cargo:rustc-link-lib=dylib=tcmalloc_minimal");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let lib = std::path::Path::new(&libtorch).join("lib");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        // Nothing references libtorch_cuda directly, so the linker would drop it and CUDA
        // would be invisible at run time; keep it needed when this libtorch has it.
        if lib.join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-search=native={}", lib.display());
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
