//! What every launcher shares. A launcher (one file per kernels/*.cu) checks buffer sizes on the
//! host (a kernel trusts its pointers), picks the launch shape its kernel file documents, and
//! launches by name through the device layer. `CudaOps` and the parity tests both go through them.
use crate::device::{Arg, Buffer, DType, Dim3, LaunchConfig};
use anyhow::{bail, ensure, Result};

/// Threads per block of the row kernels (rmsnorm, embedding gather) and element-wise kernels.
pub(crate) const ROW_THREADS: u32 = 256;
/// Grid cap of the grid-stride element-wise kernels.
const MAX_GRID: usize = 4096;

pub(crate) fn need(b: &Buffer, bytes: usize, kernel: &str, what: &str) -> Result<()> {
    if b.len_bytes() < bytes {
        bail!("{kernel}: `{what}` holds {} bytes, the launch needs {bytes}", b.len_bytes());
    }
    Ok(())
}

/// `need` for `elems` elements of `dtype`; a buffer tagged with another type is refused by name.
pub(crate) fn need_t(b: &Buffer, elems: usize, dtype: DType, kernel: &str, what: &str) -> Result<()> {
    b.check_dtype(dtype, kernel, what)?;
    need(b, elems * dtype.size(), kernel, what)
}

pub(crate) fn grid_1d(rows: usize, kernel: &str) -> Result<Dim3> {
    ensure!(rows > 0 && rows <= i32::MAX as usize, "{kernel}: {rows} rows is not a valid grid");
    Ok(Dim3::x(rows as u32))
}

/// An optional buffer argument: a null pointer when absent.
pub(crate) fn opt(b: Option<&Buffer>) -> Arg<'_> {
    b.map_or(Arg::U64(0), Arg::Buf)
}

pub(crate) fn elementwise(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(ROW_THREADS as usize).clamp(1, MAX_GRID);
    LaunchConfig { grid: Dim3::x(blocks as u32), block: Dim3::x(ROW_THREADS), shared_bytes: 0 }
}

/// The grid-stride launch of a kernel that moves `per_thread` elements per step (16-byte vectors).
pub(crate) fn elementwise_vec(n: usize, per_thread: usize) -> LaunchConfig {
    elementwise(n.div_ceil(per_thread))
}

pub(crate) const BF16: usize = 2;

