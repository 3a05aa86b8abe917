//! The interpret-mode device: kernels compiled by g++ from the same .cu sources (build.rs) and
//! run by the runtime in kernels/interpret/ with CUDA semantics. Device memory is host memory
//! (256-byte aligned like cudaMalloc; under ASan every buffer has redzones), launches are
//! synchronous, and a kernel fault (partial barrier, shuffle from an exited lane, deadlock,
//! trap) comes back as an error naming the kernel and the source line.

use super::{Dim3, Schedule};
use anyhow::{bail, Result};
use std::ffi::{c_char, c_int, c_void, CStr, CString};

#[repr(C)]
#[derive(Clone, Copy)]
struct CDim3 {
    x: u32,
    y: u32,
    z: u32,
}

extern "C" {
    fn scalerl_interp_launch(
        name: *const c_char,
        grid: CDim3,
        block: CDim3,
        dynamic_smem: usize,
        args: *mut *mut c_void,
        schedule: c_int,
        seed: u64,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn scalerl_interp_kernel_count() -> c_int;
    fn scalerl_interp_kernel_name(i: c_int) -> *const c_char;
    fn scalerl_interp_kernel_params(name: *const c_char, sizes: *mut usize, max: c_int) -> c_int;
}

/// Names of every kernel compiled into this binary.
pub fn kernel_names() -> Vec<String> {
    // SAFETY: the registry is filled by static initialisers before main and never changes.
    unsafe {
        (0..scalerl_interp_kernel_count())
            .filter_map(|i| {
                let p = scalerl_interp_kernel_name(i);
                (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
            })
            .collect()
    }
}

/// Parameter sizes (bytes) of kernel `name`, or None if no such kernel is compiled in.
pub fn kernel_params(name: &str) -> Option<Vec<usize>> {
    let c = CString::new(name).ok()?;
    let mut sizes = [0usize; 64];
    // SAFETY: `sizes` has room for 64 entries and we pass that bound.
    let n = unsafe { scalerl_interp_kernel_params(c.as_ptr(), sizes.as_mut_ptr(), 64) };
    (n >= 0).then(|| sizes[..(n as usize).min(64)].to_vec())
}

/// Fails unless kernel `name` is compiled in and takes parameters of exactly `given` sizes (a
/// launch checks this when it is issued, so a capture refuses a bad launch as a GPU does).
pub fn check_signature(name: &str, given: &[usize]) -> Result<()> {
    let Some(sizes) = kernel_params(name) else {
        bail!("kernel `{name}` is not compiled into this binary (interpret mode)");
    };
    if sizes != given {
        bail!("kernel `{name}` takes parameters of sizes {sizes:?}, the launch passed {given:?}");
    }
    Ok(())
}

/// Launches `name` and waits for it. `args[i]` points at the value of parameter i; their sizes
/// are checked against the kernel's signature first.
///
/// # Safety
/// Pointer parameters must point at host allocations large enough for what the kernel touches
/// (that is the kernel's contract, as on a GPU; ASan builds catch violations).
pub unsafe fn launch(
    name: &str,
    grid: Dim3,
    block: Dim3,
    dynamic_smem: usize,
    args: &[(*mut c_void, usize)],
    schedule: Schedule,
) -> Result<()> {
    let given: Vec<usize> = args.iter().map(|a| a.1).collect();
    check_signature(name, &given)?;
    let cname = CString::new(name)?;
    let mut ptrs: Vec<*mut c_void> = args.iter().map(|a| a.0).collect();
    let (sched, seed) = match schedule {
        Schedule::Sequential => (0, 0),
        Schedule::Reverse => (1, 0),
        Schedule::Random(seed) => (2, seed),
    };
    let mut err = vec![0u8; 4096];
    let d = |d: Dim3| CDim3 { x: d.x, y: d.y, z: d.z };
    let rc = scalerl_interp_launch(
        cname.as_ptr(),
        d(grid),
        d(block),
        dynamic_smem,
        ptrs.as_mut_ptr(),
        sched,
        seed,
        err.as_mut_ptr() as *mut c_char,
        err.len(),
    );
    if rc != 0 {
        let msg = CStr::from_bytes_until_nul(&err).map(|c| c.to_string_lossy().into_owned()).unwrap_or_default();
        bail!("kernel `{name}` failed in interpret mode: {msg}");
    }
    Ok(())
}
