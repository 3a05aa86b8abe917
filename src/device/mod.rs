//! The device layer: memory, copies and kernel launch by name, the same API whether kernels run
//! on a GPU or in interpret mode. The CUDA backend of the model is written once on top of it,
//! so CI exercises the same launch code and buffer management that run on a GPU.
//!
//! Two devices: `Device::Interpret` (the kernels compiled by g++ and run on the CPU with CUDA
//! semantics, buffers in host memory, launches synchronous) and `Device::Cuda` (src/device/
//! cuda.rs: cudarc, the embedded fatbin, cuBLASLt, CUDA graphs; launches asynchronous on one
//! stream, `download`/`synchronize` wait for it). `Device::from_name` picks one by name
//! ("interpret", "cuda", "cuda:N").
//!
//! CUDA graphs, on both: `Device::capture` records what a closure issues — kernel launches (the
//! argument values baked in, pointers included), GEMMs, device copies and memsets — without
//! running it, and `Graph::replay` runs it all again with one call. Inside a capture,
//! allocation, host↔device copies, synchronisation and a nested capture are errors with the same
//! message on both devices; a graph's inputs change only by writing into the same buffers
//! before a replay. On a GPU it is a CUDA graph (`cuda.rs`); in interpret mode a recorded list
//! (`interpret_graph.rs`) with the same contract, so the CPU tests of the decode graphs
//! (src/ops/cuda/decode_graphs.rs, tests/decode_graphs.rs) run exactly what the GPU replays.
//! `Device::allocations` counts `alloc` calls, so tests can assert that steady-state decode
//! steps allocate nothing.

pub mod cuda;
pub mod fatbin;
mod host_gemm;
pub mod memory;
pub mod nccl;

pub use memory::MemStats;
pub mod interpret;
mod interpret_graph;

pub use interpret_graph::Interpreter;
use interpret_graph::{host_write, GemmKind, Op};

use anyhow::{bail, Result};
use std::alloc::Layout;
use std::ffi::c_void;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dim3 {
    pub x: u32,
    pub y: u32,
    pub z: u32,
}

impl Dim3 {
    pub fn x(x: u32) -> Self {
        Dim3 { x, y: 1, z: 1 }
    }
    pub fn xy(x: u32, y: u32) -> Self {
        Dim3 { x, y, z: 1 }
    }
}

/// The launch shape of one kernel call.
#[derive(Debug, Clone, Copy)]
pub struct LaunchConfig {
    pub grid: Dim3,
    pub block: Dim3,
    pub shared_bytes: usize,
}

/// Order in which interpret mode resumes the threads of a block between sync points. A fixed
/// order hides some missing-barrier races; random orders (several seeds) expose them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    Sequential,
    Reverse,
    Random(u64),
}

/// Device memory: a 256-byte aligned host allocation in interpret mode, a stream-ordered GPU
/// allocation on a GPU. A buffer is used only with the device that allocated it.
///
/// A buffer may carry the type of its elements (`Buffer::typed`): the ops layer tags every
/// tensor and parameter set it allocates, so a launcher handed an f32 gradient where it reads
/// bf16 weights refuses it by name instead of reading garbage. Raw buffers are untagged, and
/// launchers check only their sizes.
pub struct Buffer {
    repr: Repr,
    dtype: Option<DType>,
}

/// The element type of a tagged buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    Bf16,
    F32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::Bf16 => 2,
            DType::F32 => 4,
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::Bf16 => "bf16",
            DType::F32 => "f32",
        })
    }
}

enum Repr {
    Host(HostBuffer),
    Cuda(cuda::CudaBuffer),
}

/// `bytes` bytes at `ptr`, inside an allocation that the buffer (and its views) keep alive.
struct HostBuffer {
    alloc: Arc<HostAlloc>,
    ptr: *mut u8,
    bytes: usize,
}

/// One 256-byte aligned host allocation, freed when its last buffer or view goes.
struct HostAlloc {
    ptr: *mut u8,
    bytes: usize,
}

// The allocation is owned; kernels are launched synchronously from one thread at a time.
unsafe impl Send for HostBuffer {}
unsafe impl Sync for HostBuffer {}
unsafe impl Send for HostAlloc {}
unsafe impl Sync for HostAlloc {}

const ALIGN: usize = 256;

impl Buffer {
    pub fn len_bytes(&self) -> usize {
        match &self.repr {
            Repr::Host(h) => h.bytes,
            Repr::Cuda(c) => c.len_bytes(),
        }
    }

    /// The element type this buffer was tagged with (None: a raw buffer).
    pub fn dtype(&self) -> Option<DType> {
        self.dtype
    }

    /// This buffer, tagged as holding `dtype` elements (its views inherit the tag).
    pub fn typed(mut self, dtype: DType) -> Buffer {
        self.dtype = Some(dtype);
        self
    }

    /// Fails unless the buffer is untagged or tagged `dtype`, naming `what` (for `kernel`).
    pub fn check_dtype(&self, dtype: DType, kernel: &str, what: &str) -> Result<()> {
        match self.dtype {
            Some(d) if d != dtype => bail!("{kernel}: `{what}` holds {d} elements, the op takes {dtype}"),
            _ => Ok(()),
        }
    }

    /// The address kernels see for the buffer's first byte: an identity (a graph captured over
    /// a buffer is valid only for the buffer at that address).
    pub fn address(&self) -> u64 {
        match &self.repr {
            Repr::Host(h) => h.ptr as u64,
            Repr::Cuda(c) => c.device_ptr(),
        }
    }

    /// A view of the whole buffer: shares (and keeps alive) its allocation.
    fn whole(&self) -> Buffer {
        self.view(0, self.len_bytes()).expect("a view of the whole buffer is in bounds")
    }

    /// Whether this is GPU memory.
    pub fn is_gpu(&self) -> bool {
        matches!(self.repr, Repr::Cuda(_))
    }

    fn host(&self) -> Result<&HostBuffer> {
        match &self.repr {
            Repr::Host(h) => Ok(h),
            Repr::Cuda(_) => bail!("a GPU buffer was passed to the interpret-mode device"),
        }
    }

    /// The `bytes` bytes from `offset` of this buffer as a buffer of their own, sharing the
    /// allocation (which lives until its last view is dropped): one tensor of a flat parameter
    /// buffer, say. Kernels see a pointer `offset` bytes in.
    pub fn view(&self, offset: usize, bytes: usize) -> Result<Buffer> {
        if offset.checked_add(bytes).is_none_or(|end| end > self.len_bytes()) {
            bail!("a view of {bytes} bytes at {offset} of a {}-byte buffer", self.len_bytes());
        }
        Ok(Buffer {
            repr: match &self.repr {
                // SAFETY: offset + bytes is within the allocation (checked above).
                Repr::Host(h) => Repr::Host(HostBuffer { alloc: h.alloc.clone(), ptr: unsafe { h.ptr.add(offset) }, bytes }),
                Repr::Cuda(c) => Repr::Cuda(c.view(offset, bytes)),
            },
            dtype: self.dtype,
        })
    }
}

impl Drop for HostAlloc {
    fn drop(&mut self) {
        memory::INTERPRET.sub(self.bytes);
        if self.bytes > 0 {
            // SAFETY: allocated in `Device::alloc` with this exact layout.
            unsafe { std::alloc::dealloc(self.ptr, Layout::from_size_align(self.bytes, ALIGN).unwrap()) }
        }
    }
}

/// One kernel argument: a buffer (passed as a device pointer) or a scalar.
pub enum Arg<'a> {
    Buf(&'a Buffer),
    /// A pointer `offset` bytes into a buffer.
    BufAt(&'a Buffer, usize),
    I32(i32),
    U32(u32),
    F32(f32),
    U64(u64),
    I64(i64),
}

/// Where kernels run.
pub enum Device {
    /// Kernels on the CPU (`Device::interpret`, `Device::interpret_with`).
    Interpret(Interpreter),
    /// A GPU (src/device/cuda.rs). Create with `Device::cuda`.
    Cuda(Box<cuda::CudaDevice>),
}

/// A captured sequence of launches (`Device::capture`), replayed with one call.
pub struct Graph {
    exec: GraphExec,
}

enum GraphExec {
    Cuda(cuda::CudaGraphExec),
    /// The recorded ops and the schedule of the device that recorded them.
    Interpret { ops: Vec<Op>, schedule: Schedule },
}

impl Graph {
    /// Runs the captured work again, on the same buffers (asynchronous on a GPU, like a launch:
    /// a download or `Device::synchronize` waits for it; done on return in interpret mode).
    /// Change inputs with `Device::write` between replays.
    pub fn replay(&self) -> Result<()> {
        match &self.exec {
            GraphExec::Cuda(e) => e.replay(),
            GraphExec::Interpret { ops, schedule } => interpret_graph::replay(ops, *schedule),
        }
    }

    /// Operations recorded (interpret mode; None on a GPU, whose graph is opaque).
    pub fn recorded_ops(&self) -> Option<usize> {
        match &self.exec {
            GraphExec::Cuda(_) => None,
            GraphExec::Interpret { ops, .. } => Some(ops.len()),
        }
    }
}

impl Device {
    pub fn interpret() -> Self {
        Self::interpret_with(Schedule::Sequential)
    }

    /// Interpret mode resuming the threads of a block in `schedule`'s order.
    pub fn interpret_with(schedule: Schedule) -> Self {
        Device::Interpret(Interpreter::new(schedule))
    }

    /// GPU `ordinal`. Fails (without panicking) on a machine without an NVIDIA driver or GPU
    /// ("no GPU: …"), and when the binary was built without nvcc (no kernels embedded).
    pub fn cuda(ordinal: usize) -> Result<Self> {
        Ok(Device::Cuda(Box::new(cuda::CudaDevice::new(ordinal)?)))
    }

    /// A device by name, as in `SCALERL_DEVICE` / `--device`: "interpret", "cuda" (GPU 0) or
    /// "cuda:N".
    pub fn from_name(name: &str) -> Result<Self> {
        match name.trim() {
            "interpret" => Ok(Device::interpret()),
            "cuda" | "gpu" => Device::cuda(0),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Device::cuda(n),
                _ => bail!("unknown device `{name}`: expected interpret, cuda or cuda:N"),
            },
        }
    }

    pub fn name(&self) -> String {
        match self {
            Device::Interpret(_) => "interpret (CPU, CUDA semantics)".to_string(),
            Device::Cuda(c) => c.name().to_string(),
        }
    }

    /// Streaming multiprocessors to fill (grid sizing): the GPU's; interpret mode plans as for an
    /// H100 SXM's 132, so its launches have the grids the target GPU would get.
    pub fn sm_count(&self) -> usize {
        match self {
            Device::Interpret(_) => crate::ops::cuda::attention_decode::H100_SMS,
            Device::Cuda(c) => c.sm_count(),
        }
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }

    /// Uninitialised device memory of `bytes` bytes.
    pub fn alloc(&self, bytes: usize) -> Result<Buffer> {
        match self {
            Device::Interpret(i) => {
                i.not_capturing("allocating device memory")?;
                i.count_allocation();
                let ptr = if bytes == 0 {
                    std::ptr::NonNull::<u8>::dangling().as_ptr()
                } else {
                    let layout = Layout::from_size_align(bytes, ALIGN)?;
                    // SAFETY: non-zero size.
                    let ptr = unsafe { std::alloc::alloc(layout) };
                    if ptr.is_null() {
                        bail!("out of memory allocating {bytes} bytes");
                    }
                    ptr
                };
                memory::INTERPRET.add(bytes);
                let alloc = Arc::new(HostAlloc { ptr, bytes });
                Ok(Buffer { repr: Repr::Host(HostBuffer { alloc, ptr, bytes }), dtype: None })
            }
            Device::Cuda(c) => Ok(Buffer { repr: Repr::Cuda(c.alloc(bytes)?), dtype: None }),
        }
    }

    /// A new buffer holding `data`.
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T]) -> Result<Buffer> {
        let b = self.alloc(std::mem::size_of_val(data))?;
        self.write(&b, data)?;
        Ok(b)
    }

    /// Copies `data` to the start of `dst`. (GPU: returns once `data` is staged; the copy is
    /// ordered before every later launch.)
    pub fn write<T: bytemuck::Pod>(&self, dst: &Buffer, data: &[T]) -> Result<()> {
        match self {
            Device::Interpret(i) => {
                i.not_capturing("copying host data to the device")?;
                host_write(dst, data)
            }
            Device::Cuda(c) => c.write(cuda_buf(dst)?, bytemuck::cast_slice(data)),
        }
    }

    /// The whole buffer as a Vec<T> (GPU: waits for all queued work first).
    pub fn download<T: bytemuck::Pod>(&self, src: &Buffer) -> Result<Vec<T>> {
        let n = src.len_bytes() / std::mem::size_of::<T>();
        let mut out = vec![T::zeroed(); n];
        let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
        match self {
            Device::Interpret(i) => {
                i.not_capturing("copying device data to the host")?;
                let src = src.host()?;
                // SAFETY: dst has n·size_of::<T>() ≤ src.bytes bytes.
                unsafe { std::ptr::copy_nonoverlapping(src.ptr, dst.as_mut_ptr(), dst.len()) };
            }
            Device::Cuda(c) => c.read(cuda_buf(src)?, dst)?,
        }
        Ok(out)
    }

    /// Copies the first `bytes` bytes of `src` to `dst` on the device.
    pub fn copy(&self, src: &Buffer, dst: &Buffer, bytes: usize) -> Result<()> {
        match self {
            Device::Interpret(i) => {
                let (s, d) = (src.host()?, dst.host()?);
                if bytes > s.bytes || bytes > d.bytes {
                    bail!("copy of {bytes} bytes from a {}-byte into a {}-byte buffer", s.bytes, d.bytes);
                }
                i.issue(Op::Copy { src: src.whole(), dst: dst.whole(), bytes })
            }
            Device::Cuda(c) => c.copy(cuda_buf(src)?, cuda_buf(dst)?, bytes),
        }
    }

    /// Sets every byte of `dst` to zero (GPU: stream-ordered, like a launch).
    pub fn zero(&self, dst: &Buffer) -> Result<()> {
        match self {
            Device::Interpret(i) => {
                dst.host()?;
                i.issue(Op::Zero { dst: dst.whole() })
            }
            Device::Cuda(c) => c.memset(cuda_buf(dst)?, 0, dst.len_bytes()),
        }
    }

    /// Bytes this process holds on the device through `alloc`, and the peak since `reset_peak`
    /// (interpret mode: every interpret device's host allocations together).
    pub fn memory(&self) -> MemStats {
        match self {
            Device::Interpret(_) => memory::INTERPRET.stats(),
            Device::Cuda(c) => c.memory().stats(),
        }
    }

    pub fn reset_peak(&self) {
        match self {
            Device::Interpret(_) => memory::INTERPRET.reset_peak(),
            Device::Cuda(c) => c.memory().reset_peak(),
        }
    }

    /// Total memory of a GPU in bytes (None in interpret mode, whose memory is the host's).
    pub fn total_memory(&self) -> Result<Option<usize>> {
        match self {
            Device::Interpret(_) => Ok(None),
            Device::Cuda(c) => Ok(Some(c.mem_info()?.1)),
        }
    }

    /// Waits until all queued work is done (interpret mode: always done). On a GPU this is
    /// where an asynchronous kernel fault is reported.
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Interpret(i) => i.not_capturing("synchronising the device"),
            Device::Cuda(c) => c.synchronize(),
        }
    }

    /// Records the launches, GEMMs, device-to-device copies and memsets that `f` issues on this
    /// device into a graph instead of running them; `Graph::replay` runs them all with one call.
    /// Inside `f`: no allocation, uploads, downloads, synchronisation or nested capture (each is
    /// an error, and the capture is closed); the buffers used must outlive the graph (the
    /// pointers and every argument's value are baked in: change inputs by writing into the same
    /// buffers before a replay). On a GPU a CUDA graph (src/device/cuda.rs); in interpret mode
    /// the same contract over a recorded list (src/device/interpret_graph.rs).
    pub fn capture(&self, f: impl FnOnce(&Device) -> Result<()>) -> Result<Graph> {
        match self {
            Device::Interpret(i) => {
                let ops = i.capture(|| f(self))?;
                Ok(Graph { exec: GraphExec::Interpret { ops, schedule: i.schedule() } })
            }
            Device::Cuda(c) => Ok(Graph { exec: GraphExec::Cuda(c.capture(|| f(self))?) }),
        }
    }

    /// Calls of `alloc` on this device so far (tests check that steady-state decode steps
    /// allocate nothing).
    pub fn allocations(&self) -> usize {
        match self {
            Device::Interpret(i) => i.allocations(),
            Device::Cuda(c) => c.allocations(),
        }
    }

    /// `y[m, n] = x[m, k] · w[n, k]ᵀ` in bf16 with f32 accumulation: every linear layer.
    /// (GPU: cuBLASLt; interpret mode: `host_gemm`, f32 products of the bf16 values.)
    pub fn gemm_bf16_nt(&self, x: &Buffer, w: &Buffer, y: &Buffer, m: usize, n: usize, k: usize) -> Result<()> {
        gemm_operands("gemm_bf16_nt", [("x", x, m * k, DType::Bf16), ("w", w, n * k, DType::Bf16), ("y", y, m * n, DType::Bf16)], (m, n, k))?;
        match self {
            Device::Interpret(i) => i.issue(Op::Gemm { kind: GemmKind::Nt, a: x.whole(), b: w.whole(), c: y.whole(), m, n, k }),
            Device::Cuda(c) => c.gemm_bf16_nt(cuda_buf(x)?, cuda_buf(w)?, cuda_buf(y)?, m, n, k),
        }
    }

    /// `dx[m, k] = dy[m, n] · w[n, k]` in bf16 with f32 accumulation (overwrites dx): the input
    /// gradient of a linear layer, "NN" (neither row-major operand transposed).
    /// (GPU: cuBLASLt; interpret mode: `host_gemm`.)
    pub fn gemm_bf16_nn(&self, dy: &Buffer, w: &Buffer, dx: &Buffer, m: usize, n: usize, k: usize) -> Result<()> {
        gemm_operands("gemm_bf16_nn", [("dy", dy, m * n, DType::Bf16), ("w", w, n * k, DType::Bf16), ("dx", dx, m * k, DType::Bf16)], (m, n, k))?;
        match self {
            Device::Interpret(i) => i.issue(Op::Gemm { kind: GemmKind::Nn, a: dy.whole(), b: w.whole(), c: dx.whole(), m, n, k }),
            Device::Cuda(c) => c.gemm_bf16_nn(cuda_buf(dy)?, cuda_buf(w)?, cuda_buf(dx)?, m, n, k),
        }
    }

    /// `dw[n, k] += dy[m, n]ᵀ · x[m, k]`: bf16 operands, f32 accumulation into the f32 `dw` (the
    /// weight gradient, which adds up over micro-batches), "TN" (the token dimension m is the
    /// reduction). (GPU: cuBLASLt with β = 1 and an f32 C/D; interpret mode: `host_gemm`.)
    pub fn gemm_bf16_tn_acc_f32(&self, dy: &Buffer, x: &Buffer, dw: &Buffer, m: usize, n: usize, k: usize) -> Result<()> {
        gemm_operands("gemm_bf16_tn_acc_f32", [("dy", dy, m * n, DType::Bf16), ("x", x, m * k, DType::Bf16), ("dw", dw, n * k * 2, DType::F32)], (m, n, k))?;
        match self {
            Device::Interpret(i) => {
                i.issue(Op::Gemm { kind: GemmKind::TnAccF32, a: dy.whole(), b: x.whole(), c: dw.whole(), m, n, k })
            }
            Device::Cuda(c) => c.gemm_bf16_tn_acc_f32(cuda_buf(dy)?, cuda_buf(x)?, cuda_buf(dw)?, m, n, k),
        }
    }

    /// Launches kernel `name` (the `extern "C"` name in kernels/*.cu). Interpret mode runs it
    /// to completion; a GPU queues it on the stream.
    pub fn launch(&self, name: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        // Storage for each argument's value; the runtime gets pointers to these slots.
        let mut slots: Vec<u64> = Vec::with_capacity(args.len());
        let mut sizes = Vec::with_capacity(args.len());
        for a in args {
            let (bits, size) = match *a {
                Arg::Buf(b) => (self.pointer(name, b)?, 8),
                Arg::BufAt(b, off) => {
                    if off > b.len_bytes() {
                        bail!("kernel `{name}`: argument offset {off} is past the end of a {}-byte buffer", b.len_bytes());
                    }
                    (self.pointer(name, b)? + off as u64, 8)
                }
                Arg::I32(v) => (v as u32 as u64, 4),
                Arg::U32(v) => (v as u64, 4),
                Arg::F32(v) => (v.to_bits() as u64, 4),
                Arg::U64(v) => (v, 8),
                Arg::I64(v) => (v as u64, 8),
            };
            slots.push(bits);
            sizes.push(size);
        }
        let c = match self {
            Device::Cuda(c) => c,
            Device::Interpret(i) => {
            // Kernels run synchronously; a capture records the argument bytes (pointers baked in,
            // as on a GPU) and keeps the buffers alive with them.
            let keep = if i.capturing() {
                args.iter()
                    .filter_map(|a| match a {
                        Arg::Buf(b) | Arg::BufAt(b, _) => Some(b.whole()),
                        _ => None,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            return i.issue(Op::Launch { name: name.to_string(), cfg, slots, sizes, _keep: keep });
            }
        };
        // Little-endian: a 4-byte parameter reads the low half of its u64 slot.
        let ptrs: Vec<(*mut c_void, usize)> =
            slots.iter_mut().zip(&sizes).map(|(s, &n)| (s as *mut u64 as *mut c_void, n)).collect();
        // SAFETY: pointer arguments come from live `Buffer`s of this device (checked by
        // `pointer`); the kernel's bounds are its contract. The driver copies the parameter
        // values at launch (or into the graph while capturing), so `slots` may go away after.
        unsafe { c.launch(name, cfg, &ptrs) }
    }

    /// The address a kernel sees for buffer `b` on this device.
    fn pointer(&self, kernel: &str, b: &Buffer) -> Result<u64> {
        match (self, &b.repr) {
            (Device::Interpret(_), Repr::Host(h)) => Ok(h.ptr as u64),
            (Device::Cuda(c), Repr::Cuda(cb)) => c.ptr(cb),
            (Device::Interpret(_), Repr::Cuda(_)) => bail!("kernel `{kernel}`: a GPU buffer passed to interpret mode"),
            (Device::Cuda(_), Repr::Host(_)) => bail!("kernel `{kernel}`: a host (interpret-mode) buffer passed to a GPU launch"),
        }
    }
}

/// Size and type checks of GEMM operands: (name, buffer, 2-byte units it must hold, type).
fn gemm_operands<const N: usize>(op: &str, operands: [(&str, &Buffer, usize, DType); N], (m, n, k): (usize, usize, usize)) -> Result<()> {
    for (name, b, units, dtype) in operands {
        b.check_dtype(dtype, op, name)?;
        if b.len_bytes() < units * 2 {
            bail!("{op}: {name} holds {} bytes, [m {m}, n {n}, k {k}] needs {}", b.len_bytes(), units * 2);
        }
    }
    Ok(())
}

fn cuda_buf(b: &Buffer) -> Result<&cuda::CudaBuffer> {
    match &b.repr {
        Repr::Cuda(c) => Ok(c),
        Repr::Host(_) => bail!("a host (interpret-mode) buffer was passed to a GPU device"),
    }
}
