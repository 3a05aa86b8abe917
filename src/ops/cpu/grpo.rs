//! The GRPO objective per token as DeepScaleR ran it (verl's `compute_policy_loss`,
//! `kl_penalty("low_var_kl")`, `agg_loss`) and its variants: the value plus its gradient with
//! respect to the per-token log-probs and entropies (which `logprob` then carries to the model).
//! The CPU reference of kernels/grpo_loss.cu; the trainer uses it through `train::grpo`.
//!
//! Per valid response token t of sequence s (valid = up to and including the first EOS):
//!   A_t   = A_s,   ρ_t = exp(logp_t − logp_old_t)
//!   pg_t  = max(−A ρ, −A · clip(ρ, 1 − ε_low, 1 + ε_high))
//!   dual clip (optional, verl's clip_ratio_c = c): if A < 0, pg_t = min(pg_t, −A · c)
//!   kl_t  = clamp(e^k − k − 1, −10, 10)  with k = logp_ref_t − logp_t      (low_var_kl)
//!   L     = agg(pg) − c_ent · agg(entropy) + c_kl · agg(kl)
//! where agg is a weighted sum Σ_t w_t x_t (token-mean: w = 1/N over the whole batch).
//! Gradients (ties split as torch does, which sums to the same):
//!   ∂pg_t/∂logp_t = −A ρ  unless the clipped branch is strictly larger, or the dual clip's cap
//!                   strictly smaller (then 0; on a tie with the cap, torch would give half),
//!   ∂kl_t/∂logp_t = 1 − e^k  inside the clamp (else 0).
use crate::ops::grpo::{GrpoConfig, GrpoOutput, GrpoTokens};

/// The GRPO/PPO clipped objective with entropy bonus and low-variance KL. Panics if the arrays
/// do not match `seq_lens` (`GrpoTokens::check` says which).
pub fn grpo_loss(cfg: &GrpoConfig, x: &GrpoTokens) -> GrpoOutput {
    if let Err(e) = x.check(cfg) {
        panic!("{e}");
    }
    let n = x.len();
    let w = cfg.agg.token_weights(x.seq_lens);
    let (lo, hi) = (1.0 - cfg.clip_low, 1.0 + cfg.clip_high);
    let mut out = GrpoOutput {
        loss: 0.0,
        pg_loss: 0.0,
        entropy_loss: 0.0,
        kl_loss: 0.0,
        clip_frac: 0.0,
        clip_frac_lower: 0.0,
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
        let mut pg = if clipped { pg2 } else { pg1 };
        let mut d = if clipped { 0.0 } else { -a as f64 * ratio as f64 };
        if let Some(c) = cfg.dual_clip {
            let pg3 = -a * c;
            if a < 0.0 && pg > pg3 {
                pg = pg3;
                d = 0.0;
                out.clip_frac_lower += 1.0;
            }
        }
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
    out.clip_frac_lower /= nf;
    out.approx_kl /= nf;
    out.entropy_mean /= nf;
    out.loss = out.pg_loss - cfg.entropy_coef as f64 * out.entropy_loss + cfg.kl_coef.map_or(0.0, |c| c as f64 * out.kl_loss);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::grpo::LossAgg;

    /// The dual clip by hand: for A < 0 and a ratio past c the loss is −A·c with no gradient;
    /// below the cap, or for A > 0, nothing changes.
    #[test]
    fn dual_clip_caps_negative_advantages() {
        let lens = [4usize];
        // ratios e^2 ≈ 7.39 (A < 0: capped at 3), e^0.5 ≈ 1.65 (A < 0: below the cap),
        // e^2 (A > 0: the cap does not apply), e^-1 (A < 0: the low clip)
        let logp = [-1.0f32, -1.0, -1.0, -1.0];
        let old = [-3.0f32, -1.5, -3.0, 0.0];
        let adv = [-0.5f32, -0.5, 0.5, -0.5];
        let ent = [1.0f32; 4];
        let x = GrpoTokens { seq_lens: &lens, logp: &logp, entropy: &ent, old_logp: &old, ref_logp: None, advantages: &adv };
        let base = GrpoConfig { entropy_coef: 0.0, kl_coef: None, agg: LossAgg::SeqMeanTokenSum, ..Default::default() };
        let off = grpo_loss(&base, &x);
        let on = grpo_loss(&GrpoConfig { dual_clip: Some(3.0), ..base }, &x);
        let r0 = 2f32.exp();
        // token 0: −A ρ = 0.5 · 7.39 = 3.69 > −A c = 1.5: capped, no gradient
        assert!((off.d_logp[0] - 0.5 * r0).abs() < 1e-6, "{:?}", off.d_logp);
        assert_eq!(on.d_logp[0], 0.0);
        assert_eq!(on.clip_frac_lower, 0.25);
        assert_eq!(off.clip_frac_lower, 0.0);
        // tokens 1-3 unchanged
        assert_eq!(&on.d_logp[1..], &off.d_logp[1..]);
        let pg_off = 0.5 * r0 as f64;
        assert!(((off.pg_loss - on.pg_loss) - (pg_off - 1.5)).abs() < 1e-6, "{} {}", off.pg_loss, on.pg_loss);
    }
}
