//! The memory plan of a run on one GPU: every device allocation of each stage, before any work,
//! from the model's `config.json` alone (no weights, no tokenizer). `scalerl plan` prints it;
//! `scalerl train` on a CUDA device checks it first and refuses a stage that does not fit.
//!
//! Colocated, like verl's hybrid engine: the rollout and the update take turns on one device.
//! - always resident: the bf16 weights (what the forward and the rollout read), the f32 master
//!   copy and the two f32 AdamW moments (14 bytes a parameter in all), and the reference model
//!   in bf16 when the KL term is on (2 more) unless `loss.reference = "host"`;
//! - rollout: the KV cache gets what is left, after the forward's workspace at the step's token
//!   budget (`rollout.max_kv_tokens` caps it below that; the plan reports the sequences it
//!   admits at the stage's prompt + response budget);
//! - log-probs (the KV cache is released first): the old and reference log-prob passes, one
//!   micro-batch at a time with nothing saved for a backward, and the reference's bf16 weights
//!   when they come from the host for this pass;
//! - update: the f32 gradients, and the activations of one
//!   micro-batch of `optim.micro_batch_tokens` tokens with per-layer recomputation (each
//!   layer's input kept, one layer's intermediates and their gradients live at a time), the
//!   fused log-prob's vocabulary chunk, and cuBLASLt's workspace.
//!
//! The figures are the buffers `Transformer::forward_packed`/`backward` and the engine allocate
//! (element counts × bytes); the CUDA context and the allocator's slack are a fixed reserve.

use super::config::{RefPlacement, RunConfig, Stage};
use crate::model::ModelConfig;
use crate::ops::cpu::logprob::DEFAULT_VOCAB_CHUNK;
use crate::params::ParamTable;
use std::fmt::Write;

const GIB: f64 = (1u64 << 30) as f64;
/// The CUDA context, cuBLAS handles and the stream-ordered pool's slack.
const RESERVE: u64 = 1 << 30;
/// cuBLASLt's workspace on sm_90 (src/device/cuda.rs).
const BLAS_WORKSPACE: u64 = 32 << 20;
const BF16: u64 = 2;
const F32: u64 = 4;

/// One allocation of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Alloc {
    pub what: String,
    pub bytes: u64,
}

/// One stage's plan.
#[derive(Debug, Clone, PartialEq)]
pub struct StagePlan {
    pub stage: usize,
    pub max_response_len: usize,
    pub n: usize,
    /// The longest sequence: `data.max_prompt_len` + the stage's response budget.
    pub seq_tokens: u64,
    /// Resident through the whole step.
    pub resident: Vec<Alloc>,
    /// Only during the rollout (besides the KV cache).
    pub rollout: Vec<Alloc>,
    /// Only during the old/reference log-prob passes.
    pub logprobs: Vec<Alloc>,
    /// Only during the update.
    pub update: Vec<Alloc>,
    /// Bytes the KV cache gets (what the rollout leaves, capped by `rollout.max_kv_tokens`).
    pub kv_bytes: u64,
    pub kv_tokens: u64,
    /// Tokens the device leaves room for (above `kv_tokens` when `max_kv_tokens` caps it).
    pub kv_room_tokens: u64,
    /// Sequences of the stage's longest prompt + response that run at once in it.
    pub seqs_at_once: u64,
    /// Peak bytes of each phase.
    pub rollout_peak: u64,
    pub logprobs_peak: u64,
    pub update_peak: u64,
    /// `Some(bytes missing)` when a phase does not fit (the KV cache must hold one sequence).
    pub shortfall: Option<(String, u64)>,
}

fn total(a: &[Alloc]) -> u64 {
    a.iter().map(|x| x.bytes).sum()
}

fn alloc(what: impl Into<String>, bytes: u64) -> Alloc {
    Alloc { what: what.into(), bytes }
}

/// KV bytes per token: K and V of every layer, bf16.
pub fn kv_bytes_per_token(c: &ModelConfig) -> u64 {
    2 * c.num_layers as u64 * c.kv_dim() as u64 * BF16
}

/// The plan of every stage of `cfg` for model `c` on a device of `gpu_bytes`.
pub fn plan(c: &ModelConfig, cfg: &RunConfig, gpu_bytes: u64) -> Vec<StagePlan> {
    let params = ParamTable::new(c).total() as u64;
    let (h, qd, kvd, inter, nh, v, l) =
        (c.hidden_size as u64, c.q_dim() as u64, c.kv_dim() as u64, c.intermediate_size as u64, c.num_heads as u64, c.vocab_size as u64, c.num_layers as u64);
    let prompt = cfg.data.max_prompt_len as u64;
    cfg.stages()
        .iter()
        .enumerate()
        .map(|(i, st): (usize, &Stage)| {
            let seq = prompt + st.max_response_len as u64;
            let mut resident = vec![
                alloc("weights (bf16)", params * BF16),
                alloc("master weights (f32)", params * F32),
                alloc("AdamW moments m, v (f32)", 2 * params * F32),
                alloc("CUDA context and allocator slack", RESERVE),
            ];
            let reference = alloc("reference model (bf16)", params * BF16);
            let host_reference = cfg.loss.reference == RefPlacement::Host;
            if cfg.loss.use_kl && !host_reference {
                resident.push(reference.clone());
            }
            // Rollout: one step's forward at the step's token budget (GenerateOptions'
            // max_step_tokens, 8192): the residual, norm, q/k/v/attn, gate/up/act, proj (bf16),
            // plus the f32 logits of the rows it samples (at most one per sequence).
            let step_tokens = 8192u64;
            let fwd = step_tokens * (4 * h + 2 * qd + 2 * kvd + 3 * inter) * BF16;
            let rollout = vec![
                alloc(format!("forward activations at {step_tokens} tokens a step"), fwd),
                alloc("logits of the sampled rows (f32, 512 rows)", 512 * v * F32),
                alloc("cuBLASLt workspace", BLAS_WORKSPACE),
            ];
            // Update: per micro-batch of `t` tokens (with no token budget, one pass holds at least
            // the longest sequence: the plan assumes that, the smallest a pass can be).
            let t = match cfg.optim.micro_batch_tokens {
                0 => seq,
                budget => (budget as u64).max(seq),
            };
            let layer_inputs = (l + 1) * t * h * BF16;
            // One layer recomputed: n1, q, k, v, attn, lse (f32), x_mid, n2, gate, up, act.
            let layer_acts = t * (3 * h + 2 * qd + 2 * kvd + 3 * inter) * BF16 + t * nh * F32;
            // Its backward's temporaries: d_act, d_gate, d_up, d_n2, tmp, d_attn, dq, dk, dv, d_n1, dx.
            let layer_grads = t * (3 * inter + 4 * h + 2 * qd + 2 * kvd) * BF16;
            let chunk = DEFAULT_VOCAB_CHUNK as u64;
            let head = 2 * t * h * BF16 + 2 * t * chunk * F32;
            // Log-probs: Save::Nothing keeps no layer inputs; the residual, the branch output
            // and the final hidden, one layer's activations, the log-prob chunk.
            let mut logprobs = vec![
                alloc(format!("residual, branch and hidden of {t} tokens (bf16)"), 3 * t * h * BF16),
                alloc("one layer's activations", layer_acts),
                alloc(format!("log-prob chunk of {chunk} columns (f32)"), t * chunk * F32),
                alloc("cuBLASLt workspace", BLAS_WORKSPACE),
            ];
            if cfg.loss.use_kl && host_reference {
                logprobs.insert(0, alloc("reference model (bf16), uploaded from the host for its pass", reference.bytes));
            }
            let update = vec![
                alloc("gradients (f32)", params * F32),
                alloc(format!("layer inputs, {} layers × {t} tokens (bf16)", l + 1), layer_inputs),
                alloc("one layer's recomputed activations", layer_acts),
                alloc("one layer's backward temporaries", layer_grads),
                alloc(format!("hidden and d_hidden, log-prob chunk of {chunk} columns (f32)"), head),
                alloc("cuBLASLt workspace", BLAS_WORKSPACE),
            ];
            let (res, roll, lp, upd) = (total(&resident), total(&rollout), total(&logprobs), total(&update));
            let room = gpu_bytes.saturating_sub(res + roll);
            let kv_cap = cfg.rollout.kv_budget().map_or(u64::MAX, |t| t as u64 * kv_bytes_per_token(c));
            let kv_bytes = room.min(kv_cap);
            let kv_tokens = kv_bytes / kv_bytes_per_token(c);
            let seqs_at_once = kv_tokens / seq;
            let (rollout_peak, logprobs_peak, update_peak) = (res + roll + kv_bytes, res + lp, res + upd);
            let one_seq = seq * kv_bytes_per_token(c);
            let shortfall = if update_peak > gpu_bytes {
                Some(("the update".to_string(), update_peak - gpu_bytes))
            } else if logprobs_peak > gpu_bytes {
                Some(("the log-prob passes".to_string(), logprobs_peak - gpu_bytes))
            } else if res + roll + one_seq > gpu_bytes {
                Some((format!("the rollout (one {seq}-token sequence of KV cache)"), res + roll + one_seq - gpu_bytes))
            } else {
                None
            };
            StagePlan {
                stage: i,
                max_response_len: st.max_response_len,
                n: st.n,
                seq_tokens: seq,
                resident,
                rollout,
                logprobs,
                update,
                kv_bytes,
                kv_tokens,
                kv_room_tokens: room / kv_bytes_per_token(c),
                seqs_at_once,
                rollout_peak,
                logprobs_peak,
                update_peak,
                shortfall,
            }
        })
        .collect()
}

fn gib(b: u64) -> String {
    format!("{:8.2} GiB", b as f64 / GIB)
}

/// The plan as a table, one block per stage.
pub fn format(c: &ModelConfig, plans: &[StagePlan], gpu_bytes: u64) -> String {
    let mut s = String::new();
    let params = ParamTable::new(c).total();
    let _ = writeln!(
        s,
        "memory plan: {params} parameters ({:.2} B), {} layers, KV {} KiB per token, on a {:.0} GiB device",
        params as f64 / 1e9,
        c.num_layers,
        kv_bytes_per_token(c) / 1024,
        gpu_bytes as f64 / GIB
    );
    for p in plans {
        let _ = writeln!(s, "\nstage {}: responses up to {} tokens, n = {}", p.stage, p.max_response_len, p.n);
        for (phase, list) in [("resident", &p.resident), ("rollout", &p.rollout), ("log-probs", &p.logprobs), ("update", &p.update)] {
            for a in list.iter() {
                let _ = writeln!(s, "  {phase:<9} {} {}", gib(a.bytes), a.what);
            }
        }
        let cap = if p.kv_room_tokens > p.kv_tokens { format!(" (rollout.max_kv_tokens; the device has room for {})", p.kv_room_tokens) } else { String::new() };
        let _ = writeln!(s, "  rollout   {} KV cache: {} tokens{cap}, {} sequences of {} tokens at once", gib(p.kv_bytes), p.kv_tokens, p.seqs_at_once, p.seq_tokens);
        let _ = writeln!(s, "  peak: rollout {}, log-probs {}, update {}", gib(p.rollout_peak), gib(p.logprobs_peak), gib(p.update_peak));
        match &p.shortfall {
            None => {
                let _ = writeln!(s, "  fits");
            }
            Some((what, b)) => {
                let _ = writeln!(s, "  DOES NOT FIT: {what} needs {} more", gib(*b).trim());
            }
        }
    }
    s
}

/// Fails, naming the first stage that does not fit and by how much, with the whole plan.
pub fn check(c: &ModelConfig, cfg: &RunConfig, gpu_bytes: u64) -> anyhow::Result<Vec<StagePlan>> {
    let plans = plan(c, cfg, gpu_bytes);
    if let Some(p) = plans.iter().find(|p| p.shortfall.is_some()) {
        let (what, b) = p.shortfall.as_ref().unwrap();
        anyhow::bail!(
            "stage {} (responses up to {} tokens) does not fit on a {:.0} GiB device: {what} needs {:.2} GiB more\n{}",
            p.stage,
            p.max_response_len,
            gpu_bytes as f64 / GIB,
            *b as f64 / GIB,
            format(c, &plans, gpu_bytes)
        );
    }
    Ok(plans)
}
