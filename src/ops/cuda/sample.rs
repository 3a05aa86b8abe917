//! Launcher of kernels/sample.cu: one token and its log-prob per row of f32 logits, drawn on the
//! device bit for bit as the CPU reference (src/ops/cpu/sample.rs) draws it. Only the draw
//! parameters (32 bytes a row) go up and the results (8 bytes a row) come down.
use super::launch::{need, need_t};
use crate::device::{Arg, Buffer, DType, Device, Dim3, LaunchConfig};
use crate::ops::cpu::sample::{self as reference, min_weight, uniform_bits, MAX_VOCAB};
use crate::ops::{Draw, Sampled};
use anyhow::{anyhow, bail, ensure, Context, Result};

/// u32 words of one row's parameters (the layout of kernels/sample.cu's header).
pub const PARAM_WORDS: usize = 8;

/// Threads per row: 1024 for a real vocabulary; fewer for a small one (16 logits a thread or
/// more), where extra threads would only idle at the barriers (and slow interpret mode).
pub fn threads_for(vocab: usize) -> u32 {
    (vocab.div_ceil(16).div_ceil(32) * 32).clamp(32, 1024) as u32
}

/// One row's kernel parameters. The derived integers (the min-p cut, the 53-bit uniform) come
/// from the reference's own helpers, so both backends start from the same bits.
pub fn draw_params(d: &Draw, vocab: usize) -> Result<[u32; PARAM_WORDS]> {
    d.validate()?;
    let greedy = d.is_greedy();
    let t = if greedy { 1.0f32 } else { d.temperature };
    // k ≥ V keeps everything, as k = 0 does (the reference treats both as off).
    let k = if d.top_k >= vocab { 0 } else { d.top_k as u32 };
    let c = min_weight(d.min_p);
    let u = if greedy { 0 } else { uniform_bits(d.uniform) };
    Ok([greedy as u32, t.to_bits(), d.top_p.to_bits(), k, c as u32, (c >> 32) as u32, u as u32, (u >> 32) as u32])
}

/// The launch: `params` [rows × PARAM_WORDS] u32, `logits` [rows × vocab] f32 or bf16 (by the
/// buffer's type tag: `sample_f32` / `sample_bf16`); writes `tokens` [rows] i32 and `logprobs`
/// [rows] f32 (negative tokens are row errors, see `decode`).
pub fn sample_launch(
    dev: &Device,
    logits: &Buffer,
    params: &Buffer,
    tokens: &Buffer,
    logprobs: &Buffer,
    rows: usize,
    vocab: usize,
) -> Result<()> {
    let (k, dtype) = match logits.dtype() {
        Some(DType::F32) => ("sample_f32", DType::F32),
        Some(DType::Bf16) => ("sample_bf16", DType::Bf16),
        None => bail!("sample: the `logits` buffer has no element type; tag it f32 or bf16 (Buffer::typed)"),
    };
    ensure!(vocab > 0 && vocab < MAX_VOCAB, "{k}: a vocabulary of {vocab}: the sampler takes 1 to {}", MAX_VOCAB - 1);
    ensure!(rows > 0 && rows <= i32::MAX as usize, "{k}: {rows} rows is not a valid grid");
    need_t(logits, rows * vocab, dtype, k, "logits")?;
    need(params, rows * PARAM_WORDS * 4, k, "params")?;
    need(tokens, rows * 4, k, "tokens")?;
    need_t(logprobs, rows, DType::F32, k, "logprobs")?;
    let cfg = LaunchConfig { grid: Dim3::x(rows as u32), block: Dim3::x(threads_for(vocab)), shared_bytes: 0 };
    dev.launch(
        k,
        cfg,
        &[Arg::Buf(logits), Arg::Buf(params), Arg::Buf(tokens), Arg::Buf(logprobs), Arg::I32(vocab as i32)],
    )
}

/// Draws one token from each row of `logits` ([draws.len() × vocab] f32 or bf16 on the device).
/// `labels[i]` names row i in an error (the caller's row numbering).
pub fn sample(dev: &Device, logits: &Buffer, vocab: usize, draws: &[Draw], labels: &[usize]) -> Result<Vec<Sampled>> {
    let rows = draws.len();
    ensure!(labels.len() == rows, "{} labels for {rows} rows", labels.len());
    if rows == 0 {
        return Ok(Vec::new());
    }
    let mut params = Vec::with_capacity(rows * PARAM_WORDS);
    for (d, &label) in draws.iter().zip(labels) {
        params.extend(draw_params(d, vocab).with_context(|| format!("sampling row {label} of the batch"))?);
    }
    let params = dev.upload(&params)?;
    let tokens = dev.alloc(rows * 4)?;
    let logprobs = dev.alloc(rows * 4)?.typed(DType::F32);
    sample_launch(dev, logits, &params, &tokens, &logprobs, rows, vocab)?;
    let t: Vec<i32> = dev.download(&tokens)?;
    let lp: Vec<f32> = dev.download(&logprobs)?;
    (0..rows).map(|i| decode(t[i], lp[i], &draws[i], vocab).with_context(|| format!("sampling row {} of the batch", labels[i]))).collect()
}

/// A row's result, or its error in the reference's words: token −1 = every logit −∞;
/// −2 − col = column col is NaN/+∞ once scaled, its raw logit in the log-prob slot.
pub fn decode(token: i32, logprob: f32, d: &Draw, vocab: usize) -> Result<Sampled> {
    match token {
        t if t >= 0 && (t as usize) < vocab => Ok(Sampled { token: t as u32, logprob }),
        -1 => Err(anyhow!(reference::ALL_MASKED)),
        t if t <= -2 && ((-2 - t) as usize) < vocab => {
            let t_used = if d.is_greedy() { 1.0 } else { d.temperature };
            Err(reference::bad_logit((-2 - t) as usize, logprob, t_used))
        }
        t => Err(anyhow!("the sampler kernel returned token {t} for a vocabulary of {vocab} (a kernel bug)")),
    }
}
