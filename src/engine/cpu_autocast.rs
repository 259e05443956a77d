//! CPU autocast (bf16) around a closure, on the calling thread: libtorch's own autocast, which
//! tch exposes for CUDA only. Never changes any other thread's state.
//!
//! libtorch exports these as C++ functions; their arguments are `bool` and `int8_t`-backed
//! enums (`c10::DeviceType`, `c10::ScalarType`), which the Itanium C++ ABI passes exactly as C
//! does. They are looked up by their mangled names at run time, as `cuda.rs` looks up CUDA's
//! (a libtorch that renames one leaves bf16 unavailable, with one line, instead of breaking the
//! link of every binary); the test below checks the calls take effect.

use std::ffi::{c_void, CStr};
use std::sync::OnceLock;

struct Api {
    set_enabled: unsafe extern "C" fn(i8, bool),
    is_enabled: unsafe extern "C" fn(i8) -> bool,
    set_dtype: unsafe extern "C" fn(i8, i8),
    get_dtype: unsafe extern "C" fn(i8) -> i8,
    increment_nesting: unsafe extern "C" fn() -> i32,
    decrement_nesting: unsafe extern "C" fn() -> i32,
    clear_cache: unsafe extern "C" fn(),
}

/// A libtorch symbol: in the process's global scope (the program links libtorch), else in
/// libtorch_cpu as already loaded (a plugin's libraries are loaded privately by its host).
fn symbol(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym/dlopen with NUL-terminated names; RTLD_NOLOAD never loads anything.
    unsafe {
        let p = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
        if !p.is_null() {
            return Some(p);
        }
        let lib = libc::dlopen(
            c"libtorch_cpu.so".as_ptr(),
            libc::RTLD_LAZY | libc::RTLD_NOLOAD,
        );
        if lib.is_null() {
            return None;
        }
        let p = libc::dlsym(lib, name.as_ptr());
        (!p.is_null()).then_some(p)
    }
}

fn api() -> Option<&'static Api> {
    static API: OnceLock<Option<Api>> = OnceLock::new();
    API.get_or_init(|| {
        // SAFETY: each symbol is the libtorch function of that signature (see the module doc).
        unsafe {
            Some(Api {
                set_enabled: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(i8, bool)>(
                    symbol(c"_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb")?,
                ),
                is_enabled: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(i8) -> bool>(
                    symbol(c"_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE")?,
                ),
                set_dtype: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(i8, i8)>(
                    symbol(c"_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE")?,
                ),
                get_dtype: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(i8) -> i8>(
                    symbol(c"_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE")?,
                ),
                increment_nesting: std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> i32>(
                    symbol(c"_ZN2at8autocast17increment_nestingEv")?,
                ),
                decrement_nesting: std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> i32>(
                    symbol(c"_ZN2at8autocast17decrement_nestingEv")?,
                ),
                clear_cache: std::mem::transmute::<*mut c_void, unsafe extern "C" fn()>(symbol(
                    c"_ZN2at8autocast11clear_cacheEv",
                )?),
            })
        }
    })
    .as_ref()
}

/// Whether this libtorch has the CPU autocast calls bf16 needs.
pub fn available() -> bool {
    api().is_some()
}

/// `c10::DeviceType::CPU`.
const CPU: i8 = 0;
/// `c10::ScalarType::BFloat16`.
const BFLOAT16: i8 = 15;

/// The autocast state before `bf16` changed it, put back when dropped: also when the closure
/// panics (a tch error is a panic, which the worker turns into its line and goes on).
struct Restore {
    api: &'static Api,
    enabled: bool,
    dtype: i8,
}

impl Drop for Restore {
    fn drop(&mut self) {
        // SAFETY: plain calls into libtorch's thread-local autocast state; the cache of cast
        // weights goes when the outermost autocast ends.
        unsafe {
            if (self.api.decrement_nesting)() == 0 {
                (self.api.clear_cache)();
            }
            (self.api.set_dtype)(CPU, self.dtype);
            (self.api.set_enabled)(CPU, self.enabled);
        }
    }
}

/// `f` with the CPU's autocast on in bf16 (convolutions and matrix products in bf16, the ops
/// autocast keeps in float in float), its state and dtype restored afterwards, even on a
/// panic. Where this libtorch has no CPU autocast (`available()` is false; precision
/// resolution never picks bf16 then), `f` runs as is.
pub fn bf16<T>(f: impl FnOnce() -> T) -> T {
    let Some(api) = api() else {
        return f();
    };
    // SAFETY: plain calls into libtorch's thread-local autocast state, with valid enum values.
    let _restore = unsafe {
        let restore = Restore {
            api,
            enabled: (api.is_enabled)(CPU),
            dtype: (api.get_dtype)(CPU),
        };
        (api.set_dtype)(CPU, BFLOAT16);
        (api.set_enabled)(CPU, true);
        (api.increment_nesting)();
        restore
    };
    f()
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
    api().is_some_and(|api| unsafe { (api.is_enabled)(CPU) })
}

/// The CPU autocast's dtype on this thread (`c10::ScalarType`), where there is the call.
pub fn dtype() -> Option<i8> {
    // SAFETY: a read of libtorch's thread-local autocast state.
    api().map(|api| unsafe { (api.get_dtype)(CPU) })
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

    #[test]
    fn a_panic_inside_restores_the_state_and_the_dtype() {
        assert!(super::available(), "this libtorch has CPU autocast");
        // libtorch's CPU default is bf16 already: start from fp16 (`c10::ScalarType::Half`) so
        // that putting the dtype back shows.
        let api = super::api().unwrap();
        let default = super::dtype();
        const HALF: i8 = 5;
        // SAFETY: as in `bf16`.
        unsafe { (api.set_dtype)(super::CPU, HALF) };
        let dtype = super::dtype();
        assert_eq!(dtype, Some(HALF));
        let r = std::panic::catch_unwind(|| {
            super::bf16(|| {
                assert!(super::enabled());
                assert_eq!(super::dtype(), Some(super::BFLOAT16));
                panic!("a tch error");
            })
        });
        assert!(r.is_err());
        assert!(!super::enabled(), "autocast left on after a panic");
        assert_eq!(super::dtype(), dtype, "the dtype is put back");
        // SAFETY: as in `bf16`.
        unsafe { (api.set_dtype)(super::CPU, default.unwrap()) };
    }
}
