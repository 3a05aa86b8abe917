//! Launcher of the GRPO per-token objective (kernels/grpo_loss.cu; CPU reference
//! src/ops/cpu/grpo.rs `grpo_loss`): per token ∂L/∂logp and ∂L/∂entropy on the device (what the
//! log-prob backward takes), and the loss parts and metrics from per-block f64 partial sums that
//! the host adds in block order (deterministic: a fixed token → thread → block assignment and
//! fixed reduction trees).
use super::launch::{need, need_t};
use crate::device::{Arg, Buffer, DType, Device, Dim3, LaunchConfig};
use crate::ops::grpo::{GrpoConfig, GrpoOutput, GrpoTokens, LossAgg};
use anyhow::{ensure, Result};

/// Threads per block (GRPO_THREADS) and tokens per thread (GRPO_ITEMS).
pub const GRPO_THREADS: u32 = 256;
const ITEMS: usize = 4;
/// f64 sums per block (GRPO_SUMS): Σ w·pg, Σ w·entropy, Σ w·kl, Σ clipped, Σ (old − logp),
/// Σ entropy, Σ dual-clipped, (unused).
pub const GRPO_SUMS: usize = 8;
const F32: usize = 4;

/// Blocks of a call over `n` tokens (each block's sums are one row of the partials).
pub fn grpo_blocks(n: usize) -> usize {
    n.div_ceil(GRPO_THREADS as usize * ITEMS)
}

/// The device buffers of one call: per-token f32 inputs `[n]` (ref_logp only with the KL term),
/// the sequences' token offsets int32 `[num_seqs + 1]` (0, n_0, n_0 + n_1, …, n), the per-token
/// gradients f32 `[n]` (overwritten) and the partial sums f64 `[grpo_blocks(n), GRPO_SUMS]`.
pub struct GrpoBuffers<'a> {
    pub logp: &'a Buffer,
    pub entropy: &'a Buffer,
    pub old_logp: &'a Buffer,
    pub ref_logp: Option<&'a Buffer>,
    pub advantages: &'a Buffer,
    pub seq_offsets: &'a Buffer,
    pub d_logp: &'a Buffer,
    pub d_entropy: &'a Buffer,
    pub partials: &'a Buffer,
}

/// Runs the kernel over `n` tokens of `num_seqs` sequences. The KL term is on when
/// `cfg.kl_coef` is set, and then `b.ref_logp` must be given.
pub fn grpo_token_loss(dev: &Device, cfg: &GrpoConfig, num_seqs: usize, n: usize, b: &GrpoBuffers) -> Result<()> {
    let k = "grpo_token_loss";
    ensure!(n <= i32::MAX as usize && num_seqs < i32::MAX as usize, "{k}: {n} tokens in {num_seqs} sequences exceed int32");
    for (buf, what) in [(b.logp, "logp"), (b.entropy, "entropy"), (b.old_logp, "old_logp"), (b.advantages, "advantages"), (b.d_logp, "d_logp"), (b.d_entropy, "d_entropy")] {
        need_t(buf, n, DType::F32, k, what)?;
    }
    let ref_logp = match (cfg.kl_coef, b.ref_logp) {
        (Some(_), Some(r)) => {
            need_t(r, n, DType::F32, k, "ref_logp")?;
            Some(r)
        }
        (Some(_), None) => anyhow::bail!("{k}: the KL term needs ref_logp"),
        (None, _) => None,
    };
    need(b.seq_offsets, (num_seqs + 1) * 4, k, "seq_offsets")?;
    need(b.partials, grpo_blocks(n) * GRPO_SUMS * 8, k, "partials")?;
    ensure!(num_seqs > 0 || n == 0, "{k}: {n} tokens in no sequence");
    if n == 0 {
        return Ok(());
    }
    let (agg, constant) = match cfg.agg {
        LossAgg::TokenMean => (0, 0.0),
        LossAgg::SeqMeanTokenMean => (1, 0.0),
        LossAgg::SeqMeanTokenSum => (2, 0.0),
        LossAgg::SeqMeanTokenSumNorm { constant } => (3, constant),
    };
    let cfg_l = LaunchConfig { grid: Dim3::x(grpo_blocks(n) as u32), block: Dim3::x(GRPO_THREADS), shared_bytes: 0 };
    dev.launch(
        k,
        cfg_l,
        &[
            Arg::Buf(b.logp),
            Arg::Buf(b.entropy),
            Arg::Buf(b.old_logp),
            ref_logp.map_or(Arg::U64(0), Arg::Buf),
            Arg::Buf(b.advantages),
            Arg::Buf(b.seq_offsets),
            Arg::I32(num_seqs as i32),
            Arg::I32(n as i32),
            Arg::I32(agg),
            Arg::F32(constant),
            // as the CPU reference computes them
            Arg::F32(1.0 - cfg.clip_low),
            Arg::F32(1.0 + cfg.clip_high),
            Arg::I32(cfg.dual_clip.is_some() as i32),
            Arg::F32(cfg.dual_clip.unwrap_or(0.0)),
            Arg::F32(cfg.kl_coef.unwrap_or(0.0)),
            Arg::F32(cfg.entropy_coef),
            Arg::Buf(b.d_logp),
            Arg::Buf(b.d_entropy),
            Arg::Buf(b.partials),
        ],
    )
}

/// The loss parts and metrics from the kernel's partial sums (`[blocks, GRPO_SUMS]`, added in
/// block order) over `n` tokens; `d_logp` and `d_entropy` are left empty.
pub fn grpo_finish(cfg: &GrpoConfig, partials: &[f64], n: usize) -> GrpoOutput {
    let mut s = [0f64; GRPO_SUMS];
    for block in partials.chunks_exact(GRPO_SUMS) {
        for (a, b) in s.iter_mut().zip(block) {
            *a += b;
        }
    }
    let nf = n.max(1) as f64;
    let mut out = GrpoOutput {
        loss: 0.0,
        pg_loss: s[0],
        entropy_loss: s[1],
        kl_loss: s[2],
        clip_frac: s[3] / nf,
        clip_frac_lower: s[6] / nf,
        approx_kl: s[4] / nf,
        entropy_mean: s[5] / nf,
        d_logp: Vec::new(),
        d_entropy: Vec::new(),
    };
    out.loss = out.pg_loss - cfg.entropy_coef as f64 * out.entropy_loss + cfg.kl_coef.map_or(0.0, |c| c as f64 * out.kl_loss);
    out
}

/// `Ops::grpo_loss` on the device: the host arrays uploaded, the kernel, the gradients and sums
/// downloaded.
pub fn ops_grpo_loss(dev: &Device, cfg: &GrpoConfig, x: &GrpoTokens) -> Result<GrpoOutput> {
    x.check(cfg)?;
    let n = x.len();
    let mut offsets = Vec::with_capacity(x.seq_lens.len() + 1);
    let mut acc = 0usize;
    offsets.push(0i32);
    for &l in x.seq_lens {
        acc += l;
        offsets.push(i32::try_from(acc)?);
    }
    let up = |v: &[f32]| -> Result<Buffer> { if v.is_empty() { dev.alloc(0) } else { dev.upload(v) } };
    let (logp, entropy, old, adv) = (up(x.logp)?, up(x.entropy)?, up(x.old_logp)?, up(x.advantages)?);
    let reference = match (cfg.kl_coef, x.ref_logp) {
        (Some(_), Some(r)) => Some(up(r)?),
        _ => None,
    };
    let (d_logp, d_entropy) = (dev.alloc(n * F32)?, dev.alloc(n * F32)?);
    let partials = dev.alloc(grpo_blocks(n) * GRPO_SUMS * 8)?;
    let offsets = dev.upload(&offsets)?;
    let b = GrpoBuffers {
        logp: &logp,
        entropy: &entropy,
        old_logp: &old,
        ref_logp: reference.as_ref(),
        advantages: &adv,
        seq_offsets: &offsets,
        d_logp: &d_logp,
        d_entropy: &d_entropy,
        partials: &partials,
    };
    grpo_token_loss(dev, cfg, x.seq_lens.len(), n, &b)?;
    let sums: Vec<f64> = if n == 0 { Vec::new() } else { dev.download(&partials)? };
    let mut out = grpo_finish(cfg, &sums, n);
    if n > 0 {
        out.d_logp = dev.download(&d_logp)?;
        out.d_entropy = dev.download(&d_entropy)?;
        out.d_logp.truncate(n);
        out.d_entropy.truncate(n);
    }
    Ok(out)
}
