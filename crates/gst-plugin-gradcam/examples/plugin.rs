//! The plugin once more, as a cdylib built by `cargo test`: cargo builds a package's examples
//! for its tests but its library as an rlib only, so without this the element's tests could
//! not run `gst-inspect-1.0` and `gst-launch-1.0` on the plugin without a `cargo build` first.
//! The same source as the library, linked the same way (the package's build script applies).

#[path = "../src/lib.rs"]
pub mod plugin;
