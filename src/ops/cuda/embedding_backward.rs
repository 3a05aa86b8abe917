//! Launcher of kernels/embedding_backward.cu (CPU reference: src/ops/cpu/embedding.rs
//! `embedding_backward`): the scatter-add of the rows' gradients into their tokens' embedding
//! rows, deterministic through a host-side grouping of the rows by token.
use super::launch::{need, need_t};
use crate::device::{Arg, Buffer, DType, Device, Dim3, LaunchConfig};
use anyhow::{bail, ensure, Result};

/// The batch's rows grouped by token — a stable sort, so each group's rows stay in increasing
/// order — uploaded once per batch (three small int32 buffers, 4·(2·rows + distinct + 1) bytes).
pub struct EmbedGradPlan {
    pub rows: usize,
    /// Distinct tokens (segments).
    pub segments: usize,
    seg_rows: Buffer,
    seg_start: Buffer,
    seg_token: Buffer,
}

impl EmbedGradPlan {
    /// The plan of a batch whose row r holds token `tokens[r]` (each < `vocab`).
    pub fn new(dev: &Device, tokens: &[u32], vocab: usize) -> Result<Self> {
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= vocab) {
            bail!("embedding backward: token id {t} is outside the vocabulary (size {vocab})");
        }
        ensure!(tokens.len() <= i32::MAX as usize, "embedding backward: {} rows", tokens.len());
        let mut order: Vec<u32> = (0..tokens.len() as u32).collect();
        order.sort_by_key(|&r| tokens[r as usize]); // stable: rows of one token stay in order
        let (mut seg_start, mut seg_token) = (Vec::new(), Vec::new());
        for (i, &r) in order.iter().enumerate() {
            let t = tokens[r as usize] as i32;
            if seg_token.last() != Some(&t) {
                seg_start.push(i as i32);
                seg_token.push(t);
            }
        }
        seg_start.push(order.len() as i32);
        let seg_rows: Vec<i32> = order.iter().map(|&r| r as i32).collect();
        Ok(EmbedGradPlan {
            rows: tokens.len(),
            segments: seg_token.len(),
            // (a 0-element upload is a 0-byte buffer: fine, nothing launches then)
            seg_rows: dev.upload(&seg_rows)?,
            seg_start: dev.upload(&seg_start)?,
            seg_token: dev.upload(&seg_token)?,
        })
    }
}

/// `d_table[token of row r] += dx[r]` for every row of the plan: dx `[rows, hidden]` bf16,
/// d_table `[vocab, hidden]` f32 (accumulated).
pub fn embedding_backward(dev: &Device, plan: &EmbedGradPlan, dx: &Buffer, d_table: &Buffer, hidden: usize, vocab: usize) -> Result<()> {
    let k = "embedding_backward_bf16";
    need_t(dx, plan.rows * hidden, DType::Bf16, k, "dx")?;
    need_t(d_table, vocab * hidden, DType::F32, k, "d_table")?;
    if plan.segments == 0 || hidden == 0 {
        return Ok(());
    }
    need(&plan.seg_rows, plan.rows * 4, k, "seg_rows")?;
    ensure!(hidden <= i32::MAX as usize, "{k}: hidden {hidden}");
    let cfg = LaunchConfig { grid: Dim3::xy(plan.segments as u32, hidden.div_ceil(256) as u32), block: Dim3::x(128), shared_bytes: 0 };
    let args = [Arg::Buf(dx), Arg::Buf(&plan.seg_rows), Arg::Buf(&plan.seg_start), Arg::Buf(&plan.seg_token), Arg::Buf(d_table), Arg::I32(hidden as i32)];
    dev.launch(k, cfg, &args)
}
