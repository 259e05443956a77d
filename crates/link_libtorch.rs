// Shared by the build scripts of the program (build.rs) and of the GStreamer plugin
// (crates/gst-plugin-gradcam/build.rs), through `include!`: how what they build links libtorch.

/// An rpath to the libtorch it links against, so it runs (or loads) without
/// LD_LIBRARY_PATH: torch-sys finds libtorch through LIBTORCH (the Makefile points it at the
/// virtualenv's torch package), and the same variable tells us where it is. And libtorch_cuda
/// kept as a needed library: nothing references it directly, so the linker would drop it and
/// CUDA would be invisible at run time.
fn link_libtorch() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let lib = std::path::Path::new(&libtorch).join("lib");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        if lib.join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-search=native={}", lib.display());
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
