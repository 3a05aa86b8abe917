//! The GRPO objective as DeepScaleR ran it (verl's `compute_grpo_outcome_advantage`,
//! `compute_policy_loss`, `kl_penalty("low_var_kl")`, `agg_loss`), its variants, and plain SFT
//! cross-entropy — each as a value plus its gradient with respect to the per-token log-probs
//! and entropies (which `logprob` then carries to the model).
//!
//! Per valid response token t of sequence s (valid = up to and including the first EOS):
//!   A_t   = A_s,   ρ_t = exp(logp_t − logp_old_t)
//!   pg_t  = max(−A ρ, −A · clip(ρ, 1 − ε_low, 1 + ε_high))
//!   kl_t  = clamp(e^k − k − 1, −10, 10)  with k = logp_ref_t − logp_t      (low_var_kl)
//!   L     = agg(pg) − c_ent · agg(entropy) + c_kl · agg(kl)
//! where agg is a weighted sum Σ_t w_t x_t (token-mean: w = 1/N over the whole batch).
//! Gradients (ties split as torch does, which sums to the same):
//!   ∂pg_t/∂logp_t = −A ρ  unless the clipped branch is strictly larger (then 0),
//!   ∂kl_t/∂logp_t = 1 − e^k  inside the clamp (else 0).

/// How per-token losses become one number (verl's `loss_agg_mode`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LossAgg {
    /// Σ_t x_t / N over every valid token of the batch (verl "token-mean"; DeepScaleR, DAPO).
    TokenMean,
    /// Mean over sequences of each sequence's token mean ("seq-mean-token-mean", original GRPO).
    SeqMeanTokenMean,
    /// Mean over sequences of each sequence's token sum ("seq-mean-token-sum").
    SeqMeanTokenSum,
    /// Dr. GRPO: mean over sequences of token sum / a constant (e.g. the max response length),
    /// as verl's "seq-mean-token-sum-norm" with `loss_scale_factor`.
    SeqMeanTokenSumNorm { constant: f32 },
}

impl LossAgg {
    /// The weight w_t of every token, sequence by sequence (`seq_lens` valid tokens each).
    /// A sequence with no valid token counts in the number of sequences and adds nothing.
    pub fn token_weights(&self, seq_lens: &[usize]) -> Vec<f64> {
        let n: usize = seq_lens.iter().sum();
        let b = seq_lens.len().max(1) as f64;
        let mut w = Vec::with_capacity(n);
        for &l in seq_lens {
            let wt = match *self {
                LossAgg::TokenMean => 1.0 / n.max(1) as f64,
                LossAgg::SeqMeanTokenMean => 1.0 / (b * l.max(1) as f64),
                LossAgg::SeqMeanTokenSum => 1.0 / b,
                LossAgg::SeqMeanTokenSumNorm { constant } => 1.0 / (b * constant as f64),
            };
            w.extend(std::iter::repeat_n(wt, l));
        }
        w
    }
}

/// GRPO loss settings. `Default` is DeepScaleR's run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrpoConfig {
    /// ε_low: ρ is clipped below at 1 − ε_low.
    pub clip_low: f32,
    /// ε_high: ρ is clipped above at 1 + ε_high (DAPO clip-higher: 0.28).
    pub clip_high: f32,
    /// Entropy bonus coefficient (subtracted).
    pub entropy_coef: f32,
    /// low_var_kl coefficient against the reference policy; `None` turns the KL term off.
    pub kl_coef: Option<f32>,
    pub agg: LossAgg,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        GrpoConfig { clip_low: 0.2, clip_high: 0.2, entropy_coef: 0.001, kl_coef: Some(0.001), agg: LossAgg::TokenMean }
    }
}

/// Group-normalised outcome advantages, one per sequence: (r − mean_g) / (std_g + eps) with the
/// unbiased std (a group of one: mean 0, std 1); `norm_by_std = false` gives r − mean_g
/// (Dr. GRPO). `groups[i]` is the prompt id of sequence i. Broadcast the result to each of the
/// sequence's valid response tokens.
pub fn grpo_advantages(rewards: &[f32], groups: &[usize], norm_by_std: bool, eps: f32) -> Vec<f32> {
    assert_eq!(rewards.len(), groups.len());
    let mut stats = std::collections::HashMap::<usize, (f64, f64)>::new();
    for &g in groups {
        if stats.contains_key(&g) {
            continue;
        }
        let rs: Vec<f64> = rewards.iter().zip(groups).filter(|(_, &gg)| gg == g).map(|(&r, _)| r as f64).collect();
        let n = rs.len() as f64;
        let st = if rs.len() == 1 {
            (0.0, 1.0)
        } else {
            let mean = rs.iter().sum::<f64>() / n;
            let var = rs.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0);
            (mean, var.sqrt())
        };
        stats.insert(g, st);
    }
    rewards
        .iter()
        .zip(groups)
        .map(|(&r, g)| {
            let (mean, std) = stats[g];
            if norm_by_std {
                ((r as f64 - mean) / (std + eps as f64)) as f32
            } else {
                (r as f64 - mean) as f32
            }
        })
        .collect()
}

/// How many response tokens count: up to and including the first EOS, else all of them.
pub fn valid_response_len(response: &[u32], eos_ids: &[u32]) -> usize {
    response.iter().position(|t| eos_ids.contains(t)).map_or(response.len(), |i| i + 1)
}

/// The per-token inputs of the loss, concatenated over sequences (valid tokens only).
pub struct GrpoTokens<'a> {
    /// Valid response tokens per sequence (they partition the arrays below).
    pub seq_lens: &'a [usize],
    pub logp: &'a [f32],
    pub entropy: &'a [f32],
    pub old_logp: &'a [f32],
    /// Reference-policy log-probs (needed when the KL term is on).
    pub ref_logp: Option<&'a [f32]>,
    /// Per-token advantages (the sequence's advantage broadcast).
    pub advantages: &'a [f32],
}

/// The loss, its parts, metrics, and ∂loss/∂logp, ∂loss/∂entropy per token.
#[derive(Debug, Clone)]
pub struct GrpoOutput {
    /// pg − c_ent·entropy + c_kl·kl (the value whose gradient is returned).
    pub loss: f64,
    /// agg(pg_t).
    pub pg_loss: f64,
    /// agg(entropy_t).
    pub entropy_loss: f64,
    /// agg(kl_t) (0 when off).
    pub kl_loss: f64,
    /// Token mean of [clipped branch strictly larger] (verl's pg_clipfrac).
    pub clip_frac: f64,
    /// Token mean of logp_old − logp (verl's ppo_kl).
    pub approx_kl: f64,
    /// Token mean of the entropy.
    pub entropy_mean: f64,
    pub d_logp: Vec<f32>,
    pub d_entropy: Vec<f32>,
}

/// The GRPO/PPO clipped objective with entropy bonus and low-variance KL.
pub fn grpo_loss(cfg: &GrpoConfig, x: &GrpoTokens) -> GrpoOutput {
    let n: usize = x.seq_lens.iter().sum();
    for (name, len) in [("logp", x.logp.len()), ("entropy", x.entropy.len()), ("old_logp", x.old_logp.len()), ("advantages", x.advantages.len())] {
        assert_eq!(len, n, "grpo_loss: {name} has {len} entries, the sequences have {n} valid tokens");
    }
    if cfg.kl_coef.is_some() {
        assert_eq!(x.ref_logp.map(|r| r.len()), Some(n), "grpo_loss: the KL term needs ref_logp for every token");
    }
    let w = cfg.agg.token_weights(x.seq_lens);
    let (lo, hi) = (1.0 - cfg.clip_low, 1.0 + cfg.clip_high);
    let mut out = GrpoOutput {
        loss: 0.0,
        pg_loss: 0.0,
        entropy_loss: 0.0,
        kl_loss: 0.0,
        clip_frac: 0.0,
        approx_kl: 0.0,
        entropy_mean: 0.0,
        d_logp: vec![0.0; n],
        d_entropy: vec![0.0; n],
    };
    for t in 0..n {
        let (lp, a) = (x.logp[t], x.advantages[t]);
        let ratio = (lp - x.old_logp[t]).exp();
        let pg1 = -a * ratio;
        let pg2 = -a * ratio.clamp(lo, hi);
        let clipped = pg2 > pg1;
        let pg = if clipped { pg2 } else { pg1 };
        let mut d = if clipped { 0.0 } else { -a as f64 * ratio as f64 };
        out.pg_loss += w[t] * pg as f64;
        out.clip_frac += clipped as u8 as f64;
        out.approx_kl += (x.old_logp[t] - lp) as f64;
        out.entropy_mean += x.entropy[t] as f64;
        out.entropy_loss += w[t] * x.entropy[t] as f64;
        if let (Some(c), Some(r)) = (cfg.kl_coef, x.ref_logp) {
            let k = r[t] - lp;
            let ek = k.exp();
            let raw = ek - k - 1.0;
            out.kl_loss += w[t] * raw.clamp(-10.0, 10.0) as f64;
            if (-10.0..=10.0).contains(&raw) {
                d += c as f64 * (1.0 - ek as f64);
            }
        }
        out.d_logp[t] = (w[t] * d) as f32;
        out.d_entropy[t] = (-w[t] * cfg.entropy_coef as f64) as f32;
    }
    let nf = n.max(1) as f64;
    out.clip_frac /= nf;
    out.approx_kl /= nf;
    out.entropy_mean /= nf;
    out.loss = out.pg_loss - cfg.entropy_coef as f64 * out.entropy_loss + cfg.kl_coef.map_or(0.0, |c| c as f64 * out.kl_loss);
    out
}

/// Supervised cross-entropy on the target tokens (warm starts): L = agg(−logp_t); returns
/// (L, ∂L/∂logp).
pub fn sft_loss(logp: &[f32], seq_lens: &[usize], agg: LossAgg) -> (f64, Vec<f32>) {
    let w = agg.token_weights(seq_lens);
    assert_eq!(w.len(), logp.len(), "sft_loss: logp does not match seq_lens");
    let loss = w.iter().zip(logp).map(|(w, &l)| -w * l as f64).sum();
    (loss, w.iter().map(|w| -w as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advantages_per_group_with_singletons() {
        let a = grpo_advantages(&[1.0, 0.0, 0.0, 0.7], &[0, 0, 0, 5], true, 1e-6);
        // Group 0: mean 1/3, unbiased std sqrt(1/3); group 5 alone: mean 0, std 1.
        let s = (1.0f64 / 3.0).sqrt();
        assert!((a[0] as f64 - (2.0 / 3.0) / (s + 1e-6)).abs() < 1e-6);
        assert!((a[1] as f64 + (1.0 / 3.0) / (s + 1e-6)).abs() < 1e-6);
        assert!((a[3] as f64 - 0.7 / (1.0 + 1e-6)).abs() < 1e-6);
        // All-equal group: zero advantage, no NaN.
        assert_eq!(grpo_advantages(&[1.0, 1.0], &[0, 0], true, 1e-6), [0.0, 0.0]);
    }

    #[test]
    fn response_mask_ends_at_first_eos() {
        assert_eq!(valid_response_len(&[5, 6, 2, 7, 2], &[2]), 3);
        assert_eq!(valid_response_len(&[5, 6], &[2]), 2);
        assert_eq!(valid_response_len(&[9, 5], &[2, 9]), 1);
    }
}
