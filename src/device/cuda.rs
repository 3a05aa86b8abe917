//! The GPU implementation of the device layer, on cudarc 0.19 (driver API, dynamically loaded so
//! that the binary builds and starts on machines without CUDA):
//!
//! - one context (the device's primary context) and one stream of our own per `Device::cuda`.
//!   Not the legacy default stream: a CUDA graph cannot be captured from it. Every operation of
//!   a device goes to that one stream, so stream order is all the ordering there is; cudarc's
//!   per-buffer event tracking (meant for several streams) is switched off.
//! - the kernels: the fatbin that build.rs made with nvcc (SASS sm_80 + sm_90a, PTX compute_80),
//!   embedded in the binary and loaded with `cuModuleLoadData`; functions looked up by name on
//!   first launch and cached with their parameter sizes (`cuFuncGetParamInfo`), which every
//!   launch is checked against, as interpret mode does.
//! - memory: stream-ordered `cuMemAllocAsync`/`cuMemFreeAsync` through `CudaSlice<u8>` (the pool
//!   keeps freed memory for reuse: release threshold raised from 0 to unlimited); copies
//!   from and to pageable host memory (`write` returns once the host data is staged, `download`
//!   waits for the stream).
//! - GEMM: cuBLASLt, bf16 inputs, f32 accumulation (split-K partial sums in f32 too), one plan
//!   (descriptors + heuristic algorithm) cached per shape, layout and operand alignment: the
//!   forward's NT product (bf16 out), the backward's NN (input gradient, bf16 out) and TN
//!   (weight gradient, accumulated into f32 with β = 1).
//! - CUDA graphs: `capture` records the launches and GEMMs of a closure on the stream and
//!   instantiates them; `CudaGraphExec::replay` launches the whole graph again.
//!
//! Errors: a kernel fault (device assert, illegal address) is asynchronous. It shows at the next
//! synchronising call (download, synchronize) as a CUDA error, and it is sticky: the context is
//! unusable afterwards. `SCALERL_CUDA_SYNC=1` synchronises after every launch so that the error
//! names the kernel (slow; for tests and debugging).

use super::memory::MemCounter;
use super::{Dim3, LaunchConfig};
use anyhow::{anyhow, bail, Context as _, Result};
use cudarc::cublaslt::{result as lt, sys as ltsys};
use cudarc::driver::sys::{self, CUdeviceptr, CUresult};
use cudarc::driver::{result as dr, CudaContext, CudaFunction, CudaGraph, CudaModule, CudaSlice, CudaStream, DriverError};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Dynamic shared memory a block may use without opting in (cuFuncSetAttribute).
const DEFAULT_MAX_DYNAMIC_SMEM: usize = 48 * 1024;

/// Device memory on a GPU: a stream-ordered allocation of `bytes` bytes (None when 0 bytes).
pub struct CudaBuffer {
    /// Owns the allocation (shared by its views): freed, stream-ordered, when the last buffer
    /// or view of it is dropped.
    #[allow(dead_code)]
    slice: Option<Arc<Owned>>,
    ptr: CUdeviceptr,
    bytes: usize,
    /// The stream (of one `CudaDevice`) the buffer was allocated on: used only on that device.
    stream: sys::CUstream,
}

// SAFETY: the CudaSlice is Send + Sync; `stream` is only compared, never dereferenced.
unsafe impl Send for CudaBuffer {}
unsafe impl Sync for CudaBuffer {}

/// A device allocation and the counter it is charged to (given back when it is dropped).
struct Owned {
    #[allow(dead_code)]
    slice: CudaSlice<u8>,
    bytes: usize,
    counter: Arc<MemCounter>,
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.counter.sub(self.bytes);
    }
}

impl CudaBuffer {
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }
    pub fn device_ptr(&self) -> u64 {
        self.ptr
    }

    /// `bytes` bytes from `offset` of this buffer, sharing (and keeping alive) its allocation.
    pub(super) fn view(&self, offset: usize, bytes: usize) -> CudaBuffer {
        CudaBuffer { slice: self.slice.clone(), ptr: self.ptr + offset as u64, bytes, stream: self.stream }
    }
}

struct Kernel {
    func: CudaFunction,
    /// Parameter sizes in bytes, from cuFuncGetParamInfo (None if the driver lacks it).
    params: Option<Vec<usize>>,
    /// Dynamic shared memory the function has been opted into.
    max_dynamic_smem: usize,
}

/// cuBLASLt handle and workspace (created on the first GEMM: kernels alone need no cuBLAS).
struct Blas {
    handle: ltsys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    workspace_bytes: usize,
    /// Keyed by the product's shape and layout and the alignment of its operands in bytes.
    plans: HashMap<(GemmSpec, u32), GemmPlan>,
}

// SAFETY: the handle is used under the device's mutex only (cuBLASLt handles may be used from
// any thread, not concurrently).
unsafe impl Send for Blas {}

impl Drop for Blas {
    fn drop(&mut self) {
        self.plans.clear();
        // SAFETY: created by cublasLtCreate, destroyed once.
        unsafe {
            let _ = lt::destroy_handle(self.handle);
        }
    }
}

/// One cuBLASLt product in cuBLAS's column-major terms: D[M, N] = op(A)[M, K] · op(B)[K, N]
/// (+ C when accumulating), A and B bf16 with leading dimensions lda and ldb, C = D [M, N] with
/// leading dimension ldc, bf16 or f32 (`out_f32`). The row-major products of the model map onto
/// it as the `gemm_bf16_*` methods derive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct GemmSpec {
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    lda: usize,
    ldb: usize,
    ldc: usize,
    out_f32: bool,
}

/// The descriptors and algorithm of one GEMM shape.
struct GemmPlan {
    desc: ltsys::cublasLtMatmulDesc_t,
    a: ltsys::cublasLtMatrixLayout_t,
    b: ltsys::cublasLtMatrixLayout_t,
    c: ltsys::cublasLtMatrixLayout_t,
    algo: ltsys::cublasLtMatmulAlgo_t,
}

unsafe impl Send for GemmPlan {}

impl Drop for GemmPlan {
    fn drop(&mut self) {
        // SAFETY: each was created once by GemmPlan::new and is destroyed once.
        unsafe {
            let _ = lt::destroy_matrix_layout(self.a);
            let _ = lt::destroy_matrix_layout(self.b);
            let _ = lt::destroy_matrix_layout(self.c);
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

/// A GPU: context, stream, the embedded kernels, cuBLASLt.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    module: Arc<CudaModule>,
    kernels: Mutex<HashMap<String, Kernel>>,
    blas: Mutex<Option<Blas>>,
    capturing: AtomicBool,
    sync_each_launch: bool,
    name: String,
    cc: (i32, i32),
    /// Streaming multiprocessors (132 on an H100 SXM, 108 on an A100): launch grids are sized by it.
    sms: usize,
    /// Bytes allocated through `alloc` and not yet freed, and their peak.
    memory: Arc<MemCounter>,
    /// Calls of `alloc` (steady-state decode steps make none).
    allocations: AtomicUsize,
}

fn driver_err(e: DriverError) -> anyhow::Error {
    anyhow!("{e:?}")
}

fn lt_err(e: lt::CublasError) -> anyhow::Error {
    anyhow!("cuBLASLt: {:?}", e.0)
}

/// Whether the CUDA driver library can be loaded (false on machines without an NVIDIA driver).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda.
    unsafe { sys::is_culib_present() }
}

/// Number of CUDA devices, or an error saying why there is no GPU.
pub fn device_count() -> Result<usize> {
    if !driver_present() {
        bail!("no GPU: libcuda.so not found (no NVIDIA driver on this machine, or not on the loader path)");
    }
    let n = CudaContext::device_count().map_err(|e| {
        if e.0 == CUresult::CUDA_ERROR_NO_DEVICE {
            anyhow!("no GPU: the driver sees no CUDA device")
        } else {
            anyhow!("no GPU: cuInit/cuDeviceGetCount failed: {e:?}")
        }
    })?;
    Ok(n.max(0) as usize)
}

/// Does this driver export cuFuncGetParamInfo (CUDA 12.4+)? cudarc panics on a missing symbol.
fn has_param_info() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        // SAFETY: only looks the symbol up; libcuda is present (checked before any device).
        unsafe { sys::culib().get::<unsafe extern "C" fn()>("cuFuncGetParamInfo").is_ok() }
    })
}

fn param_sizes(f: &CudaFunction) -> Option<Vec<usize>> {
    if !has_param_info() {
        return None;
    }
    let mut sizes = Vec::new();
    for i in 0..1024 {
        let (mut offset, mut size) = (0usize, 0usize);
        // SAFETY: a loaded function and two out-parameters.
        let r = unsafe { sys::cuFuncGetParamInfo(f.cu_function(), i, &mut offset, &mut size) };
        match r {
            CUresult::CUDA_SUCCESS => sizes.push(size),
            // Past the last parameter.
            CUresult::CUDA_ERROR_INVALID_VALUE => return Some(sizes),
            _ => return None,
        }
    }
    None
}

impl CudaDevice {
    pub fn new(ordinal: usize) -> Result<Self> {
        let count = device_count()?;
        if count == 0 {
            bail!("no GPU: the driver sees no CUDA device");
        }
        if ordinal >= count {
            bail!("no GPU with ordinal {ordinal}: the driver sees {count} device(s)");
        }
        let image = super::fatbin::fatbin();
        if image.is_empty() {
            bail!(
                "this binary was built without nvcc: it holds no GPU kernels (set CUDA_HOME or NVCC when building; scripts/install-nvcc.sh installs nvcc 13.0)"
            );
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| anyhow!("cannot create a CUDA context on GPU {ordinal}: {e:?}"))?;
        // One stream carries everything; no cross-stream events (they also break graph capture:
        // a captured stream may not wait on an event recorded outside the capture).
        // SAFETY: set before any buffer exists; all work of this device goes to `stream`.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(driver_err).context("creating a CUDA stream")?;
        keep_pool_memory(&ctx);
        let cc = (
            ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).map_err(driver_err)?,
            ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR).map_err(driver_err)?,
        );
        let sms = ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).map_err(driver_err)?.max(1) as usize;
        let gpu = ctx.name().unwrap_or_else(|_| "unknown GPU".to_string());
        // cuModuleLoadData takes the fatbin image; it picks the SASS for this GPU or JITs the PTX.
        // (Ptx::from_binary only wraps the bytes: nothing of NVRTC is loaded.)
        let module = ctx.load_module(cudarc::nvrtc::Ptx::from_binary(image.to_vec())).map_err(|e| match e.0 {
            CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU | CUresult::CUDA_ERROR_INVALID_IMAGE => anyhow!(
                "the embedded fatbin has no code this GPU ({gpu}, sm_{}{}) can run: {e:?} (build.rs emits sm_80, sm_90a and compute_80 PTX)",
                cc.0,
                cc.1
            ),
            CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION => anyhow!(
                "the driver cannot JIT the embedded PTX (built by a newer nvcc than the driver supports: nvcc 13.0's code needs driver 580 or newer): {e:?}"
            ),
            _ => anyhow!("loading the embedded fatbin ({} bytes): {e:?}", image.len()),
        })?;
        let sync_each_launch = std::env::var("SCALERL_CUDA_SYNC").as_deref() == Ok("1");
        Ok(CudaDevice {
            name: format!("cuda:{ordinal} ({gpu}, sm_{}{})", cc.0, cc.1),
            ctx,
            stream,
            module,
            kernels: Mutex::new(HashMap::new()),
            blas: Mutex::new(None),
            capturing: AtomicBool::new(false),
            sync_each_launch,
            cc,
            sms,
            memory: Arc::new(MemCounter::new()),
            allocations: AtomicUsize::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn sm_count(&self) -> usize {
        self.sms
    }

    pub fn memory(&self) -> &MemCounter {
        &self.memory
    }

    pub fn compute_capability(&self) -> (i32, i32) {
        self.cc
    }

    /// Free and total device memory in bytes.
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        self.ctx.mem_get_info().map_err(driver_err)
    }

    pub(super) fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| anyhow!("CUDA context error (a previous operation failed): {e:?}"))
    }

    fn not_capturing(&self, what: &str) -> Result<()> {
        if self.capturing.load(Ordering::Acquire) {
            return Err(super::interpret_graph::refused_in_capture(what));
        }
        Ok(())
    }

    /// Calls of `alloc` so far.
    pub fn allocations(&self) -> usize {
        self.allocations.load(Ordering::Relaxed)
    }

    /// The stream all of this device's work goes to (NCCL enqueues its collectives on it).
    pub(super) fn cu_stream(&self) -> sys::CUstream {
        self.stream.cu_stream()
    }

    /// The stream itself (NCCL's bucket stream is forked from it and joined back).
    pub(super) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The device pointer of `b`, which must come from this device.
    pub fn ptr(&self, b: &CudaBuffer) -> Result<u64> {
        if b.bytes > 0 && b.stream != self.stream.cu_stream() {
            bail!("a buffer of another CUDA device (stream) was passed to {}", self.name);
        }
        Ok(b.ptr)
    }

    pub fn alloc(&self, bytes: usize) -> Result<CudaBuffer> {
        self.not_capturing("allocating device memory")?;
        self.allocations.fetch_add(1, Ordering::Relaxed);
        if bytes == 0 {
            return Ok(CudaBuffer { slice: None, ptr: 0, bytes: 0, stream: self.stream.cu_stream() });
        }
        self.bind()?;
        // SAFETY: uninitialised device memory, like cudaMalloc; the API says so.
        let slice = unsafe { self.stream.alloc::<u8>(bytes) }
            .map_err(|e| anyhow!("out of GPU memory allocating {bytes} bytes on {}: {e:?}", self.name))?;
        let ptr = {
            use cudarc::driver::DevicePtr;
            // With event tracking off the returned guard records nothing.
            let (p, _guard) = slice.device_ptr(&self.stream);
            p
        };
        self.memory.add(bytes);
        let owned = Owned { slice, bytes, counter: self.memory.clone() };
        Ok(CudaBuffer { slice: Some(Arc::new(owned)), ptr, bytes, stream: self.stream.cu_stream() })
    }

    pub fn write(&self, dst: &CudaBuffer, src: &[u8]) -> Result<()> {
        self.not_capturing("copying host data to the device")?;
        if src.len() > dst.bytes {
            bail!("write of {} bytes into a buffer of {}", src.len(), dst.bytes);
        }
        if src.is_empty() {
            return Ok(());
        }
        let p = self.ptr(dst)?;
        self.bind()?;
        // SAFETY: p has dst.bytes ≥ src.len() bytes. From pageable memory, cuMemcpyHtoDAsync
        // returns once `src` is staged, so the caller may drop or reuse it right away.
        unsafe { dr::memcpy_htod_async(p, src, self.stream.cu_stream()) }.map_err(driver_err).context("host→GPU copy")
    }

    pub fn read(&self, src: &CudaBuffer, dst: &mut [u8]) -> Result<()> {
        self.not_capturing("copying device data to the host")?;
        if dst.len() > src.bytes {
            bail!("read of {} bytes from a buffer of {}", dst.len(), src.bytes);
        }
        if dst.is_empty() {
            return self.synchronize();
        }
        let p = self.ptr(src)?;
        self.bind()?;
        // SAFETY: bounds checked; the stream is synchronised before `dst` is used.
        unsafe { dr::memcpy_dtoh_async(dst, p, self.stream.cu_stream()) }.map_err(driver_err).context("GPU→host copy")?;
        self.synchronize()
    }

    /// Device-to-device copy of `bytes` bytes (stream-ordered, asynchronous).
    pub fn copy(&self, src: &CudaBuffer, dst: &CudaBuffer, bytes: usize) -> Result<()> {
        if bytes > src.bytes || bytes > dst.bytes {
            bail!("copy of {bytes} bytes from a {}-byte into a {}-byte buffer", src.bytes, dst.bytes);
        }
        if bytes == 0 {
            return Ok(());
        }
        let (s, d) = (self.ptr(src)?, self.ptr(dst)?);
        self.bind()?;
        // SAFETY: both ranges checked above.
        unsafe { dr::memcpy_dtod_async(d, s, bytes, self.stream.cu_stream()) }.map_err(driver_err).context("GPU→GPU copy")
    }

    /// Sets `bytes` bytes of `dst` to `value` (stream-ordered).
    pub fn memset(&self, dst: &CudaBuffer, value: u8, bytes: usize) -> Result<()> {
        if bytes > dst.bytes {
            bail!("memset of {bytes} bytes on a buffer of {}", dst.bytes);
        }
        if bytes == 0 {
            return Ok(());
        }
        let p = self.ptr(dst)?;
        self.bind()?;
        // SAFETY: range checked.
        unsafe { dr::memset_d8_async(p, value, bytes, self.stream.cu_stream()) }.map_err(driver_err)
    }

    /// Waits for everything queued on the stream; reports asynchronous kernel faults.
    pub fn synchronize(&self) -> Result<()> {
        self.not_capturing("synchronising the device")?;
        self.bind()?;
        self.stream
            .synchronize()
            .map_err(|e| anyhow!("CUDA error while waiting for the stream (a kernel or copy before this point failed): {e:?}"))?;
        self.ctx.check_err().map_err(|e| anyhow!("CUDA error recorded by an earlier free or drop: {e:?}"))
    }

    /// Looks `name` up in the module (once) and returns its function and parameter sizes.
    fn kernel<R>(&self, name: &str, smem: usize, f: impl FnOnce(&Kernel) -> R) -> Result<R> {
        let mut map = self.kernels.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(name) {
            let func = self.module.load_function(name).map_err(|e| {
                if e.0 == CUresult::CUDA_ERROR_NOT_FOUND {
                    anyhow!("kernel `{name}` is not in the embedded fatbin (kernels/*.cu: extern \"C\" __global__ {name})")
                } else {
                    anyhow!("looking up kernel `{name}`: {e:?}")
                }
            })?;
            let params = param_sizes(&func);
            map.insert(name.to_string(), Kernel { func, params, max_dynamic_smem: DEFAULT_MAX_DYNAMIC_SMEM });
        }
        let k = map.get_mut(name).expect("inserted above");
        if smem > k.max_dynamic_smem {
            // More than 48 KB of dynamic shared memory needs an explicit opt-in per function.
            k.func
                .set_attribute(
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    i32::try_from(smem)?,
                )
                .map_err(|e| anyhow!("kernel `{name}`: {smem} bytes of dynamic shared memory: {e:?}"))?;
            k.max_dynamic_smem = smem;
        }
        Ok(f(k))
    }

    /// Parameter sizes of `name` as the driver reports them (None: the driver cannot tell).
    pub fn kernel_params(&self, name: &str) -> Result<Option<Vec<usize>>> {
        self.kernel(name, 0, |k| k.params.clone())
    }

    /// Launches `name` with `args[i]` = (pointer to the value, size in bytes) of parameter i.
    ///
    /// # Safety
    /// Pointer-valued parameters must be device pointers of live buffers of this device, large
    /// enough for what the kernel touches (the kernel's contract).
    pub unsafe fn launch(&self, name: &str, cfg: LaunchConfig, args: &[(*mut c_void, usize)]) -> Result<()> {
        let (func, params) = self.kernel(name, cfg.shared_bytes, |k| (k.func.clone(), k.params.clone()))?;
        if let Some(sizes) = params {
            if sizes.len() != args.len() || sizes.iter().zip(args).any(|(s, a)| *s != a.1) {
                let given: Vec<usize> = args.iter().map(|a| a.1).collect();
                bail!("kernel `{name}` takes parameters of sizes {sizes:?}, the launch passed {given:?}");
            }
        }
        check_dims(name, cfg)?;
        self.bind()?;
        let mut ptrs: Vec<*mut c_void> = args.iter().map(|a| a.0).collect();
        let d = |d: Dim3| (d.x, d.y, d.z);
        // SAFETY: the argument count and sizes match the kernel's signature (checked above when
        // the driver can tell); each pointer points at a live value of that size.
        dr::launch_kernel(
            func.cu_function(),
            d(cfg.grid),
            d(cfg.block),
            cfg.shared_bytes as u32,
            self.stream.cu_stream(),
            &mut ptrs,
        )
        .map_err(|e| anyhow!("launching kernel `{name}` (grid {:?}, block {:?}, {} B dynamic shared memory): {e:?}", cfg.grid, cfg.block, cfg.shared_bytes))?;
        if self.sync_each_launch && !self.capturing.load(Ordering::Acquire) {
            self.stream.synchronize().map_err(|e| anyhow!("kernel `{name}` failed on the GPU: {e:?}"))?;
        }
        Ok(())
    }

    /// `y[m, n] = x[m, k] · w[n, k]ᵀ`, bf16 in and out, f32 accumulation (cuBLASLt).
    ///
    /// Row-major data in a column-major library. A row-major [r, c] matrix with leading
    /// dimension c is, read column-major, its transpose [c, r] with ld = c. So x is xᵀ [k, m]
    /// (ld k), w is wᵀ [k, n] (ld k) and y is yᵀ [n, m] (ld n), and y = x·wᵀ ⇔ yᵀ = w·xᵀ:
    ///   D [n, m] = op(A) [n, k] · op(B) [k, m]  with  A = w's storage [k, n] ld k, transa = T
    ///                                                 B = x's storage [k, m] ld k, transb = N
    ///                                                 C = D = y's storage [n, m] ld n.
    /// (cuBLAS's M, N, K are our n, m, k. "TN" is the layout cuBLASLt covers best: FP8 needs it.)
    pub fn gemm_bf16_nt(&self, x: &CudaBuffer, w: &CudaBuffer, y: &CudaBuffer, m: usize, n: usize, k: usize) -> Result<()> {
        let (px, pw, py) = (self.ptr(x)?, self.ptr(w)?, self.ptr(y)?);
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            return self.memset(y, 0, m * n * 2); // an empty sum; bf16 +0 is all zero bits
        }
        let spec = GemmSpec { m: n, n: m, k, trans_a: true, trans_b: false, lda: k, ldb: k, ldc: n, out_f32: false };
        self.lt_matmul("gemm_bf16_nt", spec, pw, px, py, 0.0, (m, n, k))
    }

    /// `dx[m, k] = dy[m, n] · w[n, k]`, bf16 in and out, f32 accumulation (cuBLASLt).
    ///
    /// Read column-major (see `gemm_bf16_nt`), w's storage is wᵀ [k, n] (ld k), dy's is
    /// dyᵀ [n, m] (ld n) and dx's dxᵀ [k, m] (ld k); dx = dy·w ⇔ dxᵀ = wᵀ·dyᵀ:
    ///   D [k, m] = A [k, n] · B [n, m]  with  A = w's storage, transa = N;  B = dy's, transb = N.
    pub fn gemm_bf16_nn(&self, dy: &CudaBuffer, w: &CudaBuffer, dx: &CudaBuffer, m: usize, n: usize, k: usize) -> Result<()> {
        let (pdy, pw, pdx) = (self.ptr(dy)?, self.ptr(w)?, self.ptr(dx)?);
        if m == 0 || k == 0 {
            return Ok(());
        }
        if n == 0 {
            return self.memset(dx, 0, m * k * 2);
        }
        let spec = GemmSpec { m: k, n: m, k: n, trans_a: false, trans_b: false, lda: k, ldb: n, ldc: k, out_f32: false };
        self.lt_matmul("gemm_bf16_nn", spec, pw, pdy, pdx, 0.0, (m, n, k))
    }

    /// `dw[n, k] += dy[m, n]ᵀ · x[m, k]`: bf16 operands, f32 accumulation into the f32 `dw`
    /// (cuBLASLt with β = 1, C = D in f32).
    ///
    /// Column-major: dw's storage is dwᵀ [k, n] (ld k), x's is xᵀ [k, m] (ld k), dy's dyᵀ [n, m]
    /// (ld n); dw += dyᵀ·x ⇔ dwᵀ += xᵀ·dy:
    ///   D [k, n] = A [k, m] · op(B) [m, n] + C  with  A = x's storage, transa = N;
    ///                                               B = dy's storage [n, m], transb = T.
    pub fn gemm_bf16_tn_acc_f32(&self, dy: &CudaBuffer, x: &CudaBuffer, dw: &CudaBuffer, m: usize, n: usize, k: usize) -> Result<()> {
        let (pdy, px, pdw) = (self.ptr(dy)?, self.ptr(x)?, self.ptr(dw)?);
        if m == 0 || n == 0 || k == 0 {
            return Ok(()); // nothing to add
        }
        let spec = GemmSpec { m: k, n, k: m, trans_a: false, trans_b: true, lda: k, ldb: n, ldc: k, out_f32: true };
        self.lt_matmul("gemm_bf16_tn_acc_f32", spec, px, pdy, pdw, 1.0, (m, n, k))
    }

    /// D = A·B (+ β C, C = D) per `spec` on the stream, with a plan cached per spec and alignment.
    #[allow(clippy::too_many_arguments)]
    fn lt_matmul(&self, op: &str, spec: GemmSpec, pa: u64, pb: u64, pc: u64, beta: f32, (m, n, k): (usize, usize, usize)) -> Result<()> {
        // cuBLASLt's heuristic assumes 256-byte aligned operands unless told otherwise; whole
        // allocations are, but say what the pointers really are (a plan per alignment).
        let align = [pa, pb, pc].iter().map(|&p| 1u32 << p.trailing_zeros().min(8)).min().unwrap_or(256);
        if align < 2 || (spec.out_f32 && pc % 4 != 0) {
            bail!("{op}: an operand at an address not aligned to its element size");
        }
        let key = (spec, align);
        self.bind()?;
        let mut guard = self.blas.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            self.not_capturing("creating the cuBLASLt handle (first GEMM)")?;
            *guard = Some(self.new_blas()?);
        }
        let blas = guard.as_mut().expect("created above");
        if !blas.plans.contains_key(&key) {
            let plan = GemmPlan::new(blas.handle, blas.workspace_bytes, spec, align)
                .with_context(|| format!("cuBLASLt plan of {op} [m {m}, n {n}, k {k}], {align}-byte aligned operands"))?;
            blas.plans.insert(key, plan);
        }
        let plan = &blas.plans[&key];
        let ws = {
            use cudarc::driver::DevicePtr;
            let (p, _guard) = blas.workspace.device_ptr(&self.stream);
            p
        };
        let alpha = 1.0f32;
        // SAFETY: descriptors live in `plan`; sizes were checked by the caller (Device);
        // the workspace has workspace_bytes bytes.
        unsafe {
            lt::matmul(
                blas.handle,
                plan.desc,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                pa as *const c_void,
                plan.a,
                pb as *const c_void,
                plan.b,
                pc as *const c_void,
                plan.c,
                pc as *mut c_void,
                plan.c,
                &plan.algo,
                ws as *mut c_void,
                blas.workspace_bytes,
                self.stream.cu_stream() as ltsys::cudaStream_t,
            )
        }
        .map_err(lt_err)
        .with_context(|| format!("cuBLASLt {op} [m {m}, n {n}, k {k}]"))?;
        if self.sync_each_launch && !self.capturing.load(Ordering::Acquire) {
            self.stream.synchronize().map_err(|e| anyhow!("cuBLASLt {op} [{m}, {n}, {k}] failed on the GPU: {e:?}"))?;
        }
        Ok(())
    }

    fn new_blas(&self) -> Result<Blas> {
        // SAFETY: only tries to dlopen libcublasLt (cudarc panics later if it is missing).
        if !unsafe { ltsys::is_culib_present() } {
            bail!(
                "libcublasLt.so not found: the GEMMs need cuBLASLt on the loader path (LD_LIBRARY_PATH; it ships with the CUDA toolkit and with PyTorch's nvidia-cublas wheel)"
            );
        }
        let handle = lt::create_handle().map_err(lt_err).context("cublasLtCreate")?;
        // NVIDIA's recommended workspace: 32 MiB on Hopper, 4 MiB before.
        let workspace_bytes = if self.cc.0 >= 9 { 32 << 20 } else { 4 << 20 };
        // SAFETY: scratch memory for cuBLASLt, never read by us.
        let workspace = match unsafe { self.stream.alloc::<u8>(workspace_bytes) } {
            Ok(w) => w,
            Err(e) => {
                // SAFETY: created just above.
                unsafe {
                    let _ = lt::destroy_handle(handle);
                }
                bail!("allocating the cuBLASLt workspace: {e:?}");
            }
        };
        Ok(Blas { handle, workspace, workspace_bytes, plans: HashMap::new() })
    }

    /// Captures everything `f` queues on this device's stream (launches, GEMMs, device-to-device
    /// copies) into a CUDA graph, without running it. Allocation, host copies and
    /// synchronisation inside `f` are errors; buffers used inside must outlive the graph.
    pub fn capture(&self, f: impl FnOnce() -> Result<()>) -> Result<CudaGraphExec> {
        self.not_capturing("a nested capture")?;
        // Outstanding work must not leak into the graph's first replay timing or ordering.
        self.synchronize()?;
        self.bind()?;
        self.stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| anyhow!("cuStreamBeginCapture: {e:?}"))?;
        self.capturing.store(true, Ordering::Release);
        let body = f();
        self.capturing.store(false, Ordering::Release);
        // End the capture whatever happened, or the stream stays unusable.
        let graph = self.stream.end_capture(sys::CUgraphInstantiate_flags(0));
        body.context("inside the graph capture")?;
        let graph = graph
            .map_err(|e| anyhow!("ending the graph capture / instantiating the graph: {e:?}"))?
            .ok_or_else(|| anyhow!("the graph capture recorded nothing"))?;
        Ok(CudaGraphExec { graph })
    }
}

/// Lets the device's default memory pool (cuMemAllocAsync) keep freed memory instead of
/// returning it to the driver at every synchronisation (its default release threshold is 0),
/// so the per-forward activation buffers are recycled cheaply. Best effort.
fn keep_pool_memory(ctx: &CudaContext) {
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: out-parameter for the device's default pool; the attribute value is a u64.
    unsafe {
        if sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) == CUresult::CUDA_SUCCESS && !pool.is_null() {
            let mut threshold = u64::MAX;
            let _ = sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut threshold as *mut u64 as *mut c_void,
            );
        }
    }
}

fn check_dims(name: &str, cfg: LaunchConfig) -> Result<()> {
    let (g, b) = (cfg.grid, cfg.block);
    let threads = b.x as u64 * b.y as u64 * b.z as u64;
    if g.x == 0 || g.y == 0 || g.z == 0 || threads == 0 {
        bail!("kernel `{name}`: empty launch (grid {g:?}, block {b:?})");
    }
    if threads > 1024 {
        bail!("kernel `{name}`: {threads} threads per block (block {b:?}) exceeds 1024");
    }
    if g.y > 65535 || g.z > 65535 || g.x > i32::MAX as u32 {
        bail!("kernel `{name}`: grid {g:?} exceeds the limits (x < 2^31, y and z ≤ 65535)");
    }
    Ok(())
}

impl GemmPlan {
    fn new(handle: ltsys::cublasLtHandle_t, workspace_bytes: usize, spec: GemmSpec, align: u32) -> Result<Self> {
        use ltsys::cublasLtMatmulDescAttributes_t as D;
        let bf16 = ltsys::cudaDataType_t::CUDA_R_16BF;
        let out = if spec.out_f32 { ltsys::cudaDataType_t::CUDA_R_32F } else { bf16 };
        let GemmSpec { m, n, k, trans_a, trans_b, lda, ldb, ldc, .. } = spec;
        // The stored matrices (before op): A is [M, K] or, transposed, [K, M]; B [K, N] or [N, K].
        let (a_rows, a_cols) = if trans_a { (k, m) } else { (m, k) };
        let (b_rows, b_cols) = if trans_b { (n, k) } else { (k, n) };
        let a = lt::create_matrix_layout(bf16, a_rows as u64, a_cols as u64, lda as i64).map_err(lt_err)?;
        let b = lt::create_matrix_layout(bf16, b_rows as u64, b_cols as u64, ldb as i64).map_err(lt_err)?;
        let c = lt::create_matrix_layout(out, m as u64, n as u64, ldc as i64).map_err(lt_err)?;
        let desc = lt::create_matmul_desc(ltsys::cublasComputeType_t::CUBLAS_COMPUTE_32F, ltsys::cudaDataType_t::CUDA_R_32F)
            .map_err(lt_err)?;
        // From here on Drop cleans up whatever fails below.
        let mut plan = GemmPlan { desc, a, b, c, algo: unsafe { std::mem::zeroed() } };
        let op = |t: bool| if t { 1i32 } else { 0i32 }; // CUBLAS_OP_T, CUBLAS_OP_N
        let (op_a, op_b) = (op(trans_a), op(trans_b));
        // SAFETY: live descriptors; attribute buffers of the documented types (int32).
        unsafe {
            lt::set_matmul_desc_attribute(desc, D::CUBLASLT_MATMUL_DESC_TRANSA, &op_a as *const i32 as *const c_void, 4)
                .map_err(lt_err)?;
            lt::set_matmul_desc_attribute(desc, D::CUBLASLT_MATMUL_DESC_TRANSB, &op_b as *const i32 as *const c_void, 4)
                .map_err(lt_err)?;
        }
        let pref = lt::create_matmul_pref().map_err(lt_err)?;
        // SAFETY: live descriptors; the workspace attribute is a u64 (size_t), the alignments u32.
        let heuristic = unsafe {
            use ltsys::cublasLtMatmulPreferenceAttributes_t as P;
            let ws = workspace_bytes as u64;
            let set_align = |attr| lt::set_matmul_pref_attribute(pref, attr, &align as *const u32 as *const c_void, 4);
            // Split-K only with partial sums kept in f32 (the compute type): the INPLACE and
            // OUTPUT_TYPE schemes add the partial sums up in bf16, losing precision.
            let reduction = ltsys::cublasLtReductionScheme_t::CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE as u32;
            let r = lt::set_matmul_pref_attribute(pref, P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws as *const u64 as *const c_void, 8)
                .and_then(|_| {
                    lt::set_matmul_pref_attribute(pref, P::CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &reduction as *const u32 as *const c_void, 4)
                })
                .and_then(|_| set_align(P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES))
                .and_then(|_| set_align(P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES))
                .and_then(|_| set_align(P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES))
                .and_then(|_| set_align(P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES))
                .and_then(|_| lt::get_matmul_algo_heuristic(handle, desc, a, b, c, c, pref));
            let _ = lt::destroy_matmul_pref(pref);
            r
        };
        let heuristic = heuristic.map_err(|e| {
            if e.0 == ltsys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED {
                anyhow!("cuBLASLt offers no algorithm for this bf16 product")
            } else {
                lt_err(e)
            }
        })?;
        plan.algo = heuristic.algo;
        Ok(plan)
    }
}

/// An instantiated CUDA graph (see `CudaDevice::capture`).
pub struct CudaGraphExec {
    graph: CudaGraph,
}

impl CudaGraphExec {
    /// Launches the graph on the stream it was captured from (asynchronous, like a launch).
    pub fn replay(&self) -> Result<()> {
        self.graph.launch().map_err(|e| anyhow!("cuGraphLaunch: {e:?}"))
    }
}
