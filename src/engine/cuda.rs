//! The few CUDA runtime calls that libtorch's C API (and so tch) does not expose: an event
//! after one batch's copies, so the worker waits for that batch and not for the next one it
//! has already queued, and the device memory in use for `--stats`. They are looked up at run
//! time in the libcudart that libtorch_cuda loaded; where there is none (a CPU-only libtorch),
//! `runtime()` is None and the worker does without: it waits for each batch in turn.
//! Used only by the worker thread, on the device libtorch made current there.

use std::ffi::{c_void, CStr};
use std::sync::OnceLock;

type Event = *mut c_void;
type Create = unsafe extern "C" fn(*mut Event, u32) -> i32;
type Record = unsafe extern "C" fn(Event, *mut c_void) -> i32;
type OnEvent = unsafe extern "C" fn(Event) -> i32;
type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;

struct Runtime {
    create: Create,
    record: Record,
    query: OnEvent,
    synchronize: OnEvent,
    destroy: OnEvent,
    mem_get_info: MemGetInfo,
}

/// `cudaEventBlockingSync | cudaEventDisableTiming`: a wait sleeps instead of spinning a core
/// the codecs could use, and no timestamps are kept.
const EVENT_FLAGS: u32 = 0x01 | 0x02;
const CUDA_SUCCESS: i32 = 0;
const CUDA_ERROR_NOT_READY: i32 = 600;

fn symbol(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: dlsym on the global scope with a NUL-terminated name only reads.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

fn runtime() -> Option<&'static Runtime> {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let create = symbol(c"cudaEventCreateWithFlags")?;
            let record = symbol(c"cudaEventRecord")?;
            let query = symbol(c"cudaEventQuery")?;
            let synchronize = symbol(c"cudaEventSynchronize")?;
            let destroy = symbol(c"cudaEventDestroy")?;
            let mem_get_info = symbol(c"cudaMemGetInfo")?;
            // SAFETY: each symbol is the libcudart function of that name, whose C signature
            // is the one it is transmuted to (the CUDA runtime API, unchanged since CUDA 4).
            unsafe {
                Some(Runtime {
                    create: std::mem::transmute::<*mut c_void, Create>(create),
                    record: std::mem::transmute::<*mut c_void, Record>(record),
                    query: std::mem::transmute::<*mut c_void, OnEvent>(query),
                    synchronize: std::mem::transmute::<*mut c_void, OnEvent>(synchronize),
                    destroy: std::mem::transmute::<*mut c_void, OnEvent>(destroy),
                    mem_get_info: std::mem::transmute::<*mut c_void, MemGetInfo>(mem_get_info),
                })
            }
        })
        .as_ref()
}

/// Whether events can be used here (a CUDA-enabled libtorch is loaded).
pub fn available() -> bool {
    runtime().is_some()
}

/// A marker in the device's work queue (libtorch's default stream): done once everything
/// queued before it is done.
pub struct Marker {
    event: Event,
}

impl Marker {
    /// Mark the work queued so far. None when the runtime refuses (no device).
    pub fn record() -> Option<Marker> {
        let rt = runtime()?;
        let mut event: Event = std::ptr::null_mut();
        // SAFETY: `event` is written by the call; the null stream is libtorch's default stream.
        unsafe {
            if (rt.create)(&mut event, EVENT_FLAGS) != CUDA_SUCCESS {
                return None;
            }
            if (rt.record)(event, std::ptr::null_mut()) != CUDA_SUCCESS {
                (rt.destroy)(event);
                return None;
            }
        }
        Some(Marker { event })
    }

    /// Whether the marked work is done, without waiting.
    pub fn done(&self) -> bool {
        let Some(rt) = runtime() else { return true };
        // SAFETY: the event is live until drop.
        let r = unsafe { (rt.query)(self.event) };
        r != CUDA_ERROR_NOT_READY
    }

    /// Wait (sleeping, not spinning) until the marked work is done.
    pub fn wait(&self) -> Result<(), String> {
        let Some(rt) = runtime() else { return Ok(()) };
        // SAFETY: the event is live until drop.
        match unsafe { (rt.synchronize)(self.event) } {
            CUDA_SUCCESS => Ok(()),
            code => Err(format!(
                "the GPU failed while explaining (CUDA error {code})"
            )),
        }
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        if let Some(rt) = runtime() {
            // SAFETY: created by `record`, destroyed once.
            unsafe { (rt.destroy)(self.event) };
        }
    }
}

/// Bytes of device memory in use (all processes), or None without a device.
pub fn memory_in_use() -> Option<u64> {
    let rt = runtime()?;
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: both out-pointers are valid for the call.
    let r = unsafe { (rt.mem_get_info)(&mut free, &mut total) };
    (r == CUDA_SUCCESS && total > 0).then(|| (total - free) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_libtorch_loads_is_found_and_a_missing_device_gives_none() {
        // The project's libtorch is a CUDA build, so its libcudart is loaded even on a machine
        // without a GPU; the calls then fail cleanly instead of crashing.
        assert!(available(), "libcudart's event functions not found");
        if !tch::Cuda::is_available() {
            assert!(Marker::record().is_none());
            assert_eq!(memory_in_use(), None);
        }
    }
}
