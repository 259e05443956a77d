//! The extension runs inside Python after `import torch`, which has loaded the torch wheel's
//! libtorch: the extension's libtorch libraries resolve to those (the same sonames). The rpath
//! `$ORIGIN/../torch/lib` (site-packages/gradcam_stream/ → site-packages/torch/lib) finds them
//! should anything load the extension first.

fn main() {
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../torch/lib");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    // The torch whose libtorch this links (LIBTORCH: the wheel's package folder), for the
    // import's check.
    let torch = std::env::var("LIBTORCH").expect("LIBTORCH: the torch wheel's package folder");
    let text = std::fs::read_to_string(std::path::Path::new(&torch).join("version.py"))
        .expect("torch/version.py beside LIBTORCH's lib");
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim().trim_matches(['\'', '"']).to_owned())
        .expect("__version__ in torch/version.py");
    println!("cargo:rustc-env=GRADCAM_TORCH_VERSION={version}");
}
