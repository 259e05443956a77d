//! The extension runs inside Python after `import torch`, which has loaded the torch wheel's
//! libtorch: the extension's libtorch libraries resolve to those (the same sonames). The rpath
//! `$ORIGIN/../torch/lib` (site-packages/gradcam_stream/ → site-packages/torch/lib) finds them
//! should anything load the extension first.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../torch/lib");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    // The torch whose libtorch this links, for the import's check: LIBTORCH (the wheel's
    // package folder, as the Makefile sets it), else the torch of the Python building the
    // package (`LIBTORCH_USE_PYTORCH=1 pip install --no-build-isolation ./crates/gradcam-py`).
    let torch = match std::env::var("LIBTORCH") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => python_torch(),
    };
    let text = std::fs::read_to_string(torch.join("version.py")).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; set LIBTORCH to the torch package folder",
            torch.join("version.py").display()
        )
    });
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim().trim_matches(['\'', '"']).to_owned())
        .expect("__version__ in torch/version.py");
    println!("cargo:rustc-env=GRADCAM_TORCH_VERSION={version}");
}

/// The torch package folder of the Python that builds the package (maturin sets PYO3_PYTHON).
fn python_torch() -> PathBuf {
    let python = std::env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let out = Command::new(&python)
        .args([
            "-c",
            "import os, torch; print(os.path.dirname(torch.__file__))",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("running {python}: {e}; set LIBTORCH to the torch package folder")
        });
    assert!(
        out.status.success(),
        "{python} cannot import torch ({}); set LIBTORCH to the torch package folder, or build \
         with --no-build-isolation in an environment that has torch==2.11.0",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
