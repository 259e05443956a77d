//! Link-time settings for the binary, tests and benchmarks:
//! - an rpath to the libtorch it links against, so it runs without LD_LIBRARY_PATH. torch-sys
//!   finds libtorch through LIBTORCH (the Makefile points it at the virtualenv's torch package);
//!   the same variable tells us where it is.
//! - libtorch_cuda kept as a needed library, so `--device cuda` finds the GPU.
//!
//! tcmalloc, the programs' allocator, comes from the crate `gradcam-tcmalloc`, which the
//! binary and the benchmarks name (the library does not, so the GStreamer plugin gets none).

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
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
