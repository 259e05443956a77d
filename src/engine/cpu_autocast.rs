//! CPU autocast (bf16) around a closure, on the calling thread: libtorch's own autocast, which
//! tch exposes for CUDA only. Never changes any other thread's state.
//!
//! libtorch 2.11 exports these as C++ functions; their arguments are `bool` and `int8_t`-backed
//! enums (`c10::DeviceType`, `c10::ScalarType`), which the Itanium C++ ABI passes exactly as C
//! does, so they are declared here by their mangled names (the libtorch this links against is
//! pinned, see Cargo.toml; the test below checks the calls take effect).

#[allow(improper_ctypes)]
extern "C" {
    #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
    fn set_autocast_enabled(device: i8, enabled: bool);
    #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
    fn is_autocast_enabled(device: i8) -> bool;
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn set_autocast_dtype(device: i8, dtype: i8);
    #[link_name = "_ZN2at8autocast17increment_nestingEv"]
    fn increment_nesting() -> i32;
    #[link_name = "_ZN2at8autocast17decrement_nestingEv"]
    fn decrement_nesting() -> i32;
    #[link_name = "_ZN2at8autocast11clear_cacheEv"]
    fn clear_cache();
}

/// `c10::DeviceType::CPU`.
const CPU: i8 = 0;
/// `c10::ScalarType::BFloat16`.
const BFLOAT16: i8 = 15;

/// `f` with the CPU's autocast on in bf16 (convolutions and matrix products in bf16, the ops
/// autocast keeps in float in float), restored afterwards.
pub fn bf16<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: plain calls into libtorch's thread-local autocast state, with valid enum values.
    let before = unsafe {
        let before = is_autocast_enabled(CPU);
        set_autocast_dtype(CPU, BFLOAT16);
        set_autocast_enabled(CPU, true);
        increment_nesting();
        before
    };
    let out = f();
    // SAFETY: as above; the cache of cast weights goes when the outermost autocast ends.
    unsafe {
        if decrement_nesting() == 0 {
            clear_cache();
        }
        set_autocast_enabled(CPU, before);
    }
    out
}

/// Whether this CPU has bf16 arithmetic of its own (x86's AVX512-BF16 or AMX-BF16, Arm's
/// BF16): where bf16 is emulated it is no faster than float.
pub fn supported() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        info.lines()
            .filter(|l| l.starts_with("flags") || l.starts_with("Features"))
            .flat_map(|l| l.split_whitespace())
            .any(|f| matches!(f, "avx512_bf16" | "amx_bf16" | "bf16"))
    })
}

/// Whether the CPU's autocast is on, on this thread.
pub fn enabled() -> bool {
    // SAFETY: a read of libtorch's thread-local autocast state.
    unsafe { is_autocast_enabled(CPU) }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind, Tensor};

    #[test]
    fn a_matrix_product_runs_in_bf16_inside_and_float_outside() {
        let a = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        assert!(!super::enabled());
        let inside = super::bf16(|| {
            assert!(super::enabled());
            a.matmul(&a)
        });
        assert!(!super::enabled(), "restored");
        assert_eq!(inside.kind(), Kind::BFloat16);
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
        assert_eq!(inside.to_kind(Kind::Float).double_value(&[0, 0]), 4.0);
    }
}
