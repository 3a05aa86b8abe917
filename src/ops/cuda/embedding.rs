//! Launcher of kernels/embedding.cu (CPU reference: src/ops/cpu/embedding.rs).
use super::launch::{grid_1d, need, BF16, ROW_THREADS};
use crate::device::{Arg, Buffer, Device, Dim3, LaunchConfig};
use anyhow::Result;

/// `out[r] = table[ids[r]]`; `ids` int32 `[rows]`, `table` `[table_rows, hidden]` bf16.
pub fn embedding_gather(
    dev: &Device,
    ids: &Buffer,
    table: &Buffer,
    out: &Buffer,
    rows: usize,
    hidden: usize,
    table_rows: usize,
) -> Result<()> {
    let k = "embedding_gather_bf16";
    need(ids, rows * 4, k, "ids")?;
    need(table, table_rows * hidden * BF16, k, "table")?;
    need(out, rows * hidden * BF16, k, "out")?;
    let cfg = LaunchConfig { grid: grid_1d(rows, k)?, block: Dim3::x(ROW_THREADS), shared_bytes: 0 };
    dev.launch(
        k,
        cfg,
        &[Arg::Buf(ids), Arg::Buf(table), Arg::Buf(out), Arg::I32(hidden as i32), Arg::I32(table_rows as i32)],
    )
}
