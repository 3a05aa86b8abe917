//! The device layer: memory, copies and kernel launch by name, the same API whether kernels run
//! on a GPU or in interpret mode. The CUDA backend of the model is written once on top of it,
//! so CI exercises the same launch code and buffer management that run on a GPU.
//!
//! Implemented so far: the interpreter. The GPU implementation (cudarc, the embedded fatbin,
//! cuBLASLt, CUDA graphs) plugs in behind the same `Device` type.

pub mod fatbin;
pub mod interpret;

use anyhow::{bail, Result};
use std::alloc::Layout;
use std::ffi::c_void;

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

/// Device memory. In interpret mode: a 256-byte aligned host allocation.
pub struct Buffer {
    ptr: *mut u8,
    bytes: usize,
}

// The buffer owns its allocation; kernels are launched synchronously from one thread at a time.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

const ALIGN: usize = 256;

impl Buffer {
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
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
    Interpret { schedule: Schedule },
}

impl Device {
    pub fn interpret() -> Self {
        Device::Interpret { schedule: Schedule::Sequential }
    }

    pub fn name(&self) -> String {
        match self {
            Device::Interpret { .. } => "interpret (CPU, CUDA semantics)".to_string(),
        }
    }

    /// Uninitialised device memory of `bytes` bytes.
    pub fn alloc(&self, bytes: usize) -> Result<Buffer> {
        if bytes == 0 {
            return Ok(Buffer { ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(), bytes: 0 });
        }
        let layout = Layout::from_size_align(bytes, ALIGN)?;
        // SAFETY: non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            bail!("out of memory allocating {bytes} bytes");
        }
        Ok(Buffer { ptr, bytes })
    }

    /// A new buffer holding `data`.
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T]) -> Result<Buffer> {
        let b = self.alloc(std::mem::size_of_val(data))?;
        self.write(&b, data)?;
        Ok(b)
    }

    /// Copies `data` to the start of `dst`.
    pub fn write<T: bytemuck::Pod>(&self, dst: &Buffer, data: &[T]) -> Result<()> {
        let src: &[u8] = bytemuck::cast_slice(data);
        if src.len() > dst.bytes {
            bail!("write of {} bytes into a buffer of {}", src.len(), dst.bytes);
        }
        // SAFETY: bounds checked above; the regions cannot overlap (dst is device memory).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.ptr, src.len()) };
        Ok(())
    }

    /// The whole buffer as a Vec<T>.
    pub fn download<T: bytemuck::Pod>(&self, src: &Buffer) -> Result<Vec<T>> {
        let n = src.bytes / std::mem::size_of::<T>();
        let mut out = vec![T::zeroed(); n];
        let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
        // SAFETY: dst has n·size_of::<T>() ≤ src.bytes bytes.
        unsafe { std::ptr::copy_nonoverlapping(src.ptr, dst.as_mut_ptr(), dst.len()) };
        Ok(out)
    }

    /// `y[m, n] = x[m, k] · w[n, k]ᵀ` in bf16 with f32 accumulation: every linear layer.
    /// (GPU: cuBLASLt; interpret mode: the CPU backend's matmul on the f32 values.)
    pub fn gemm_bf16_nt(&self, x: &Buffer, w: &Buffer, y: &Buffer, m: usize, n: usize, k: usize) -> Result<()> {
        for (name, b, elems) in [("x", x, m * k), ("w", w, n * k), ("y", y, m * n)] {
            if b.bytes < elems * 2 {
                bail!("gemm_bf16_nt: {name} holds {} bytes, [{m}, {n}, {k}] needs {}", b.bytes, elems * 2);
            }
        }
        match self {
            Device::Interpret { .. } => {
                let f = |b: &Buffer, n: usize| -> Vec<f32> {
                    // SAFETY: size checked above; bf16 has no invalid bit patterns.
                    let s = unsafe { std::slice::from_raw_parts(b.ptr as *const half::bf16, n) };
                    s.iter().map(|v| v.to_f32()).collect()
                };
                let mut out = vec![0f32; m * n];
                crate::backend::cpu::matmul::matmul_nt(&f(x, m * k), &f(w, n * k), &mut out, m, n, k);
                let y16: Vec<half::bf16> = out.iter().map(|&v| half::bf16::from_f32(v)).collect();
                self.write(y, &y16)
            }
        }
    }

    /// Launches kernel `name` (the `extern "C"` name in kernels/*.cu).
    pub fn launch(&self, name: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        // Storage for each argument's value; the runtime gets pointers to these slots.
        let mut slots: Vec<u64> = Vec::with_capacity(args.len());
        let mut sizes = Vec::with_capacity(args.len());
        for a in args {
            let (bits, size) = match *a {
                Arg::Buf(b) => (b.ptr as u64, 8),
                Arg::BufAt(b, off) => {
                    if off > b.bytes {
                        bail!("kernel `{name}`: argument offset {off} is past the end of a {}-byte buffer", b.bytes);
                    }
                    (b.ptr as u64 + off as u64, 8)
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
        // Little-endian: a 4-byte parameter reads the low half of its u64 slot.
        let ptrs: Vec<(*mut c_void, usize)> =
            slots.iter_mut().zip(&sizes).map(|(s, &n)| (s as *mut u64 as *mut c_void, n)).collect();
        match self {
            Device::Interpret { schedule } => {
                // SAFETY: pointer arguments come from live `Buffer`s; the kernel's bounds are
                // its contract, checked by ASan in CI.
                unsafe { interpret::launch(name, cfg.grid, cfg.block, cfg.shared_bytes, &ptrs, *schedule) }
            }
        }
    }
}
