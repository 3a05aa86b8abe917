//! NCCL on the device layer (cudarc's `nccl` feature, dlopened at run time like the rest of
//! CUDA: the binary builds and runs without it): a communicator for one rank of a group, and the
//! collectives the data-parallel step needs on f32 device buffers — sum-all-reduce and
//! broadcast, in place, enqueued on the device's one stream — plus the asynchronous error check
//! and the abort that keep a dead or failing peer from hanging this rank.
//!
//! The 128-byte unique id that names a group is made by rank 0 (`unique_id`) and handed to the
//! others by `crate::dist::rendezvous`; NCCL has no rendezvous of its own.

use super::{Buffer, Device, Repr};
use anyhow::{bail, Result};
use cudarc::nccl::{result as nr, sys as ns};
use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Bytes of an NCCL unique id.
pub const UNIQUE_ID_BYTES: usize = 128;

/// Whether libnccl can be loaded. cudarc looks for `libnccl.so` (and `.so.1`, `.so.12`, `.so.13`),
/// not `libnccl.so.2`, the name NCCL's own packages use; a link named `libnccl.so` beside it
/// (on `LD_LIBRARY_PATH`) serves.
pub fn nccl_present() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { ns::is_culib_present() }
}

fn need_nccl() -> Result<()> {
    if !nccl_present() {
        bail!(
            "libnccl not found: multi-GPU training needs NCCL (it ships in the PyPI wheel nvidia-nccl-cu13 and with PyTorch); put a link named libnccl.so to its libnccl.so.2 on LD_LIBRARY_PATH"
        );
    }
    Ok(())
}

fn describe(r: ns::ncclResult_t) -> String {
    // SAFETY: NCCL returns a static string for every result code.
    let s = unsafe { ns::ncclGetErrorString(r) };
    if s.is_null() {
        format!("{r:?}")
    } else {
        format!("{r:?}: {}", unsafe { CStr::from_ptr(s) }.to_string_lossy())
    }
}

/// A new unique id (rank 0 makes it; every rank of the group passes the same to `NcclComm::new`).
pub fn unique_id() -> Result<Vec<u8>> {
    need_nccl()?;
    let id = nr::get_uniqueid().map_err(|e| anyhow::anyhow!("ncclGetUniqueId: {}", describe(e.0)))?;
    Ok(id.internal.iter().map(|&c| c as u8).collect())
}

/// A stream of its own for the gradient buckets' all-reduces, so that they run beside the
/// backward on the device's stream. `after` orders a bucket after the work that produced it
/// (an event on the device's stream); `join` makes the device's later work wait for every
/// bucket. Only the training step uses it, never inside a CUDA graph capture.
pub struct CommStream {
    stream: Arc<cudarc::driver::CudaStream>,
}

impl CommStream {
    pub fn new(dev: &Device) -> Result<CommStream> {
        let Device::Cuda(c) = dev else { bail!("a communication stream needs a GPU device") };
        c.bind()?;
        let stream = c.stream().fork().map_err(|e| anyhow::anyhow!("creating NCCL's stream: {e:?}"))?;
        Ok(CommStream { stream })
    }

    /// Work queued on this stream from now on waits for everything queued on `dev` so far.
    pub fn after(&self, dev: &Device) -> Result<()> {
        let Device::Cuda(c) = dev else { bail!("a communication stream needs a GPU device") };
        self.stream.join(c.stream()).map_err(|e| anyhow::anyhow!("ordering NCCL's stream after the device's: {e:?}"))
    }

    /// Work queued on `dev` from now on waits for everything queued on this stream so far.
    pub fn join(&self, dev: &Device) -> Result<()> {
        let Device::Cuda(c) = dev else { bail!("a communication stream needs a GPU device") };
        c.stream().join(&self.stream).map_err(|e| anyhow::anyhow!("ordering the device's stream after NCCL's: {e:?}"))
    }

    /// Waits on the host for this stream's work (a collective's fault surfaces here).
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| anyhow::anyhow!("waiting for NCCL's stream: {e:?}"))
    }
}

/// One rank's NCCL communicator, bound to a GPU device's stream.
pub struct NcclComm {
    comm: ns::ncclComm_t,
    rank: usize,
    world: usize,
    aborted: Arc<AtomicBool>,
}

/// A handle that aborts a communicator from another thread (a watchdog), while a collective of
/// the owning thread may be blocked on it.
#[derive(Clone)]
pub struct Aborter {
    comm: usize,
    aborted: Arc<AtomicBool>,
}

impl Aborter {
    /// An error NCCL hit in the background (a peer gone, a network failure), if any; None once
    /// aborted or destroyed.
    pub fn async_error(&self) -> Option<String> {
        if self.aborted.load(Ordering::Acquire) {
            return None;
        }
        let mut r = ns::ncclResult_t::ncclSuccess;
        // SAFETY: live (not aborted or destroyed, checked above); NCCL allows this call from
        // another thread while a collective is in flight.
        unsafe { ns::ncclCommGetAsyncError(self.comm as ns::ncclComm_t, &mut r) };
        match r {
            ns::ncclResult_t::ncclSuccess | ns::ncclResult_t::ncclInProgress => None,
            e => Some(describe(e)),
        }
    }

    /// Aborts the communicator once: its collectives in flight return, later ones fail.
    pub fn abort(&self) {
        if !self.aborted.swap(true, Ordering::AcqRel) {
            // SAFETY: the communicator is live until NcclComm drops, which skips the destroy once
            // aborted; ncclCommAbort may be called while other calls on it are blocked.
            let _ = unsafe { nr::comm_abort(self.comm as ns::ncclComm_t) };
        }
    }
}

// SAFETY: the communicator is used from one thread at a time (`&mut self` for collectives);
// `check` and `abort` are the calls NCCL allows from another thread.
unsafe impl Send for NcclComm {}

impl NcclComm {
    /// Joins the group named by `id` as `rank` of `world`, on `dev` (which must be a GPU; each
    /// rank a different one). Blocks until every rank has joined.
    pub fn new(dev: &Device, id: &[u8], rank: usize, world: usize) -> Result<NcclComm> {
        let Device::Cuda(c) = dev else {
            bail!("NCCL needs a GPU device (this rank has {})", dev.name());
        };
        need_nccl()?;
        if id.len() != UNIQUE_ID_BYTES {
            bail!("an NCCL unique id has {UNIQUE_ID_BYTES} bytes, got {}", id.len());
        }
        c.bind()?;
        let mut uid = ns::ncclUniqueId { internal: [0; UNIQUE_ID_BYTES] };
        for (d, s) in uid.internal.iter_mut().zip(id) {
            *d = *s as _;
        }
        let mut comm = std::mem::MaybeUninit::uninit();
        // SAFETY: an out-pointer and the id every rank shares.
        unsafe { nr::comm_init_rank(comm.as_mut_ptr(), world as i32, uid, rank as i32) }
            .map_err(|e| anyhow::anyhow!("ncclCommInitRank (rank {rank} of {world} on {}): {}", c.name(), describe(e.0)))?;
        // SAFETY: initialised by the successful call above.
        let comm = unsafe { comm.assume_init() };
        Ok(NcclComm { comm, rank, world, aborted: Arc::new(AtomicBool::new(false)) })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world
    }

    /// The stream, pointer and element count of `buf` (of `elem` bytes per element) on `dev`.
    fn target(dev: &Device, buf: &Buffer, elem: usize) -> Result<(ns::cudaStream_t, *mut std::ffi::c_void, usize)> {
        let (Device::Cuda(c), Repr::Cuda(b)) = (dev, &buf.repr) else {
            bail!("NCCL collectives take GPU buffers on a GPU device");
        };
        if b.len_bytes() % elem != 0 {
            bail!("NCCL collective: a buffer of {} bytes is not whole {elem}-byte values", b.len_bytes());
        }
        c.bind()?;
        Ok((c.cu_stream() as ns::cudaStream_t, c.ptr(b)? as *mut std::ffi::c_void, b.len_bytes() / elem))
    }

    fn all_reduce(&mut self, dev: &Device, buf: &Buffer, dtype: ns::ncclDataType_t, elem: usize) -> Result<()> {
        let (stream, p, n) = Self::target(dev, buf, elem)?;
        // SAFETY: a live device buffer of n elements on this communicator's device; in place is
        // allowed.
        unsafe { nr::all_reduce(p, p, n, dtype, ns::ncclRedOp_t::ncclSum, self.comm, stream) }
            .map_err(|e| anyhow::anyhow!("ncclAllReduce of {n} values on rank {}: {}", self.rank, describe(e.0)))?;
        Ok(())
    }

    /// `buf` ← Σ over ranks of `buf` (f32, on `dev`), enqueued on `on` (see `CommStream`).
    pub fn all_reduce_sum_f32_on(&mut self, on: &CommStream, dev: &Device, buf: &Buffer) -> Result<()> {
        buf.check_dtype(super::DType::F32, "NCCL all-reduce", "buffer")?;
        let (_, p, n) = Self::target(dev, buf, 4)?;
        // SAFETY: a live device buffer of n f32; `on` waits for the work that wrote it.
        unsafe { nr::all_reduce(p, p, n, ns::ncclDataType_t::ncclFloat32, ns::ncclRedOp_t::ncclSum, self.comm, on.stream.cu_stream() as ns::cudaStream_t) }
            .map_err(|e| anyhow::anyhow!("ncclAllReduce of {n} f32 (a bucket) on rank {}: {}", self.rank, describe(e.0)))?;
        Ok(())
    }

    /// `buf` ← Σ over ranks of `buf` (f32), enqueued on the device's stream.
    pub fn all_reduce_sum_f32(&mut self, dev: &Device, buf: &Buffer) -> Result<()> {
        buf.check_dtype(super::DType::F32, "NCCL all-reduce", "buffer")?;
        self.all_reduce(dev, buf, ns::ncclDataType_t::ncclFloat32, 4)
    }

    /// `buf` ← Σ over ranks of `buf`, a raw buffer of f64 (metrics, token counts).
    pub fn all_reduce_sum_f64(&mut self, dev: &Device, buf: &Buffer) -> Result<()> {
        if buf.dtype().is_some() {
            bail!("NCCL f64 all-reduce: the buffer is tagged {:?}; f64 buffers are raw", buf.dtype());
        }
        self.all_reduce(dev, buf, ns::ncclDataType_t::ncclFloat64, 8)
    }

    /// `buf` ← rank `root`'s `buf` (f32), enqueued on the device's stream.
    pub fn broadcast_f32(&mut self, dev: &Device, buf: &Buffer, root: usize) -> Result<()> {
        buf.check_dtype(super::DType::F32, "NCCL broadcast", "buffer")?;
        let (stream, p, n) = Self::target(dev, buf, 4)?;
        // SAFETY: as above.
        unsafe { nr::broadcast(p, p, n, ns::ncclDataType_t::ncclFloat32, root as i32, self.comm, stream) }
            .map_err(|e| anyhow::anyhow!("ncclBroadcast of {n} f32 from rank {root} on rank {}: {}", self.rank, describe(e.0)))?;
        Ok(())
    }

    /// A handle for aborting this communicator from another thread.
    pub fn aborter(&self) -> Aborter {
        Aborter { comm: self.comm as usize, aborted: self.aborted.clone() }
    }

    /// An error NCCL hit in the background (a peer gone, a network failure), if any.
    pub fn check(&self) -> Result<()> {
        let mut r = ns::ncclResult_t::ncclSuccess;
        // SAFETY: a live communicator and an out-parameter.
        unsafe { ns::ncclCommGetAsyncError(self.comm, &mut r) };
        match r {
            ns::ncclResult_t::ncclSuccess | ns::ncclResult_t::ncclInProgress => Ok(()),
            e => bail!("NCCL on rank {}: {}", self.rank, describe(e)),
        }
    }

    /// Stops the communicator: collectives in flight return, the stream can be synchronised.
    pub fn abort(&mut self) {
        self.aborter().abort();
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        if !self.aborted.swap(true, Ordering::AcqRel) {
            // SAFETY: a live communicator, destroyed once (errors at exit change nothing).
            let _ = unsafe { nr::comm_destroy(self.comm) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a GPU (CI), joining a group is a clear error, never a panic, whether or not
    /// libnccl is installed.
    #[test]
    fn without_a_gpu_nccl_says_why() {
        let e = NcclComm::new(&Device::interpret(), &[0; UNIQUE_ID_BYTES], 0, 1).err().expect("interpret device");
        assert!(format!("{e:#}").contains("NCCL needs a GPU device"), "{e:#}");
        if !nccl_present() {
            let e = unique_id().unwrap_err();
            assert!(format!("{e:#}").contains("libnccl not found"), "{e:#}");
        }
    }
}
