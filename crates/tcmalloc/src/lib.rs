//! Nothing to call: naming this crate (`use gradcam_tcmalloc as _;`) links tcmalloc into the
//! program (see build.rs).
