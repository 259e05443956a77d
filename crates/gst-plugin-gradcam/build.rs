//! The plugin links libtorch: an rpath to it (as the binary has, see the project's build.rs),
//! so GStreamer can load the plugin without LD_LIBRARY_PATH; libtorch_cuda kept as a needed
//! library so the element finds a GPU. No tcmalloc here: a library loaded into a running
//! process cannot change its allocator.

fn main() {
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
