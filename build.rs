//! Embed the path of the libtorch this binary links against as its rpath, so it runs without
//! LD_LIBRARY_PATH. torch-sys finds libtorch through LIBTORCH (set by the Makefile to the
//! project virtualenv's torch package); the same variable tells us where it is.

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let lib = std::path::Path::new(&libtorch).join("lib");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
