//! CUDA graphs in interpret mode, with the GPU's contract (`Device::capture`), so that a test on
//! the CPU exercises exactly what a GPU graph does: while a capture is open, each kernel launch
//! (its name, grid, block, dynamic shared memory and a by-value copy of its argument bytes —
//! pointers are baked in, as on a GPU), GEMM, device-to-device copy and memset is appended to a
//! list instead of being run; allocation, host↔device copies, synchronisation and a nested
//! capture are refused with the GPU path's messages; `Graph::replay` runs the list in order.
//! So a step that forgets to write its inputs in place before a replay, or allocates inside its
//! capture, fails here as it would on a GPU.
//!
//! One difference, on the safe side: each recorded op holds views of the buffers it touches, so
//! their memory outlives the graph (on a GPU a graph whose buffers were freed reads freed memory;
//! the rule "buffers used inside must outlive the graph" is the caller's either way).
//!
//! Capture is per device, not per thread: work another thread issues on the same interpret device
//! while it captures is recorded too (a GPU capture in thread-local mode would refuse it). The
//! engine captures and runs from one thread.

use super::{host_gemm, interpret, Buffer, LaunchConfig, Schedule};
use anyhow::{bail, Context, Result};
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The interpret-mode device's state: how it schedules threads, the open capture if any, and a
/// count of its allocations (tests assert that steady-state decode allocates nothing).
pub struct Interpreter {
    schedule: Schedule,
    recording: Mutex<Option<Vec<Op>>>,
    allocations: AtomicUsize,
}

/// The product a recorded GEMM computes (see `Device::gemm_bf16_nt`, `_nn`, `_tn_acc_f32`).
#[derive(Debug, Clone, Copy)]
pub(super) enum GemmKind {
    /// `c[m, n] = a[m, k] · b[n, k]ᵀ`, bf16 out.
    Nt,
    /// `c[m, k] = a[m, n] · b[n, k]`, bf16 out.
    Nn,
    /// `c[n, k] += a[m, n]ᵀ · b[m, k]`, f32 accumulator.
    TnAccF32,
}

/// One unit of device work: what a capture records and a replay (or an eager call) runs.
pub(super) enum Op {
    Launch { name: String, cfg: LaunchConfig, slots: Vec<u64>, sizes: Vec<usize>, _keep: Vec<Buffer> },
    Gemm { kind: GemmKind, a: Buffer, b: Buffer, c: Buffer, m: usize, n: usize, k: usize },
    Copy { src: Buffer, dst: Buffer, bytes: usize },
    Zero { dst: Buffer },
}

/// The message of an operation a capture cannot hold: the same words on both devices.
pub(super) fn refused_in_capture(what: &str) -> anyhow::Error {
    anyhow::anyhow!("{what} is not allowed while a CUDA graph is being captured (allocate and upload before Device::capture)")
}

impl Interpreter {
    pub fn new(schedule: Schedule) -> Self {
        Interpreter { schedule, recording: Mutex::new(None), allocations: AtomicUsize::new(0) }
    }

    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// `Device::alloc` calls on this device so far.
    pub fn allocations(&self) -> usize {
        self.allocations.load(Ordering::Relaxed)
    }

    pub(super) fn count_allocation(&self) {
        self.allocations.fetch_add(1, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<Op>>> {
        self.recording.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn capturing(&self) -> bool {
        self.lock().is_some()
    }

    pub(super) fn not_capturing(&self, what: &str) -> Result<()> {
        if self.capturing() {
            return Err(refused_in_capture(what));
        }
        Ok(())
    }

    /// Records `op` if a capture is open, else runs it now.
    pub(super) fn issue(&self, op: Op) -> Result<()> {
        if let Op::Launch { name, sizes, .. } = &op {
            interpret::check_signature(name, sizes)?;
        }
        {
            let mut rec = self.lock();
            if let Some(list) = rec.as_mut() {
                list.push(op);
                return Ok(());
            }
        }
        run(&op, self.schedule)
    }

    /// Runs `f` with recording on and returns what it issued. Like the GPU path, the capture is
    /// closed whatever `f` returns, so the device stays usable after a refused operation.
    pub(super) fn capture(&self, f: impl FnOnce() -> Result<()>) -> Result<Vec<Op>> {
        {
            let mut rec = self.lock();
            if rec.is_some() {
                return Err(refused_in_capture("a nested capture"));
            }
            *rec = Some(Vec::new());
        }
        let body = f();
        let ops = self.lock().take().unwrap_or_default();
        body.context("inside the graph capture")?;
        if ops.is_empty() {
            bail!("the graph capture recorded nothing");
        }
        Ok(ops)
    }
}

/// Runs the ops of a graph in order (interpret mode is synchronous: done on return).
pub(super) fn replay(ops: &[Op], schedule: Schedule) -> Result<()> {
    for (i, op) in ops.iter().enumerate() {
        run(op, schedule).with_context(|| format!("graph replay, op {i} of {}", ops.len()))?;
    }
    Ok(())
}

fn run(op: &Op, schedule: Schedule) -> Result<()> {
    match op {
        Op::Launch { name, cfg, slots, sizes, .. } => {
            // The argument values are the recorded bytes; the runtime reads them through pointers.
            let mut slots = slots.clone();
            let ptrs: Vec<(*mut c_void, usize)> =
                slots.iter_mut().zip(sizes).map(|(s, &n)| (s as *mut u64 as *mut c_void, n)).collect();
            // SAFETY: pointer arguments are those of live buffers, kept alive by the op (eager
            // launches: by the caller); the kernel's bounds are its contract, checked by ASan in CI.
            unsafe { interpret::launch(name, cfg.grid, cfg.block, cfg.shared_bytes, &ptrs, schedule) }
        }
        &Op::Gemm { kind, ref a, ref b, ref c, m, n, k } => match kind {
            GemmKind::Nt => {
                let out = host_gemm::matmul_nt(&host_bf16(a, m * k)?, &host_bf16(b, n * k)?, m, n, k);
                host_write(c, &to_bf16(&out))
            }
            GemmKind::Nn => {
                let out = host_gemm::matmul_nn(&host_bf16(a, m * n)?, &host_bf16(b, n * k)?, m, n, k);
                host_write(c, &to_bf16(&out))
            }
            GemmKind::TnAccF32 => {
                let mut acc = host_f32(c, n * k)?;
                host_gemm::matmul_tn_acc(&host_bf16(a, m * n)?, &host_bf16(b, m * k)?, &mut acc, m, n, k);
                host_write(c, &acc)
            }
        },
        Op::Copy { src, dst, bytes } => {
            let (s, d) = (src.host()?, dst.host()?);
            if *bytes > s.bytes || *bytes > d.bytes {
                bail!("copy of {bytes} bytes from a {}-byte into a {}-byte buffer", s.bytes, d.bytes);
            }
            // SAFETY: bounds checked; `copy` allows overlap (the same buffer twice).
            unsafe { std::ptr::copy(s.ptr, d.ptr, *bytes) };
            Ok(())
        }
        Op::Zero { dst } => {
            let d = dst.host()?;
            // SAFETY: the buffer owns (a view of) `d.bytes` bytes at `d.ptr`.
            unsafe { std::ptr::write_bytes(d.ptr, 0, d.bytes) };
            Ok(())
        }
    }
}

fn to_bf16(v: &[f32]) -> Vec<half::bf16> {
    v.iter().map(|&x| half::bf16::from_f32(x)).collect()
}

/// Copies `data` to the start of an interpret-mode buffer.
pub(super) fn host_write<T: bytemuck::Pod>(dst: &Buffer, data: &[T]) -> Result<()> {
    let src: &[u8] = bytemuck::cast_slice(data);
    let dst = dst.host()?;
    if src.len() > dst.bytes {
        bail!("write of {} bytes into a buffer of {}", src.len(), dst.bytes);
    }
    // SAFETY: bounds checked above; the regions cannot overlap (dst is device memory).
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.ptr, src.len()) };
    Ok(())
}

/// The first `n` bf16 values of an interpret-mode buffer, widened to f32 (exact).
fn host_bf16(b: &Buffer, n: usize) -> Result<Vec<f32>> {
    let h = b.host()?;
    if n == 0 {
        return Ok(Vec::new()); // (a 0-byte buffer's pointer is not 2-aligned)
    }
    if h.bytes < n * 2 || !(h.ptr as usize).is_multiple_of(2) {
        bail!("a bf16 operand of {n} elements in a {}-byte buffer at {:p}", h.bytes, h.ptr);
    }
    // SAFETY: size and alignment checked above; bf16 has no invalid bit patterns.
    let s = unsafe { std::slice::from_raw_parts(h.ptr as *const half::bf16, n) };
    Ok(s.iter().map(|v| v.to_f32()).collect())
}

/// The first `n` f32 values of an interpret-mode buffer (copied: the pointer may be unaligned).
fn host_f32(b: &Buffer, n: usize) -> Result<Vec<f32>> {
    let h = b.host()?;
    if h.bytes < n * 4 {
        bail!("an f32 operand of {n} elements in a {}-byte buffer", h.bytes);
    }
    let mut out = vec![0f32; n];
    // SAFETY: h.ptr has n·4 bytes (checked); the destination is a fresh, aligned Vec.
    unsafe { std::ptr::copy_nonoverlapping(h.ptr, out.as_mut_ptr() as *mut u8, n * 4) };
    Ok(out)
}
