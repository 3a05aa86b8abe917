//! The GRPO objective as DeepScaleR ran it (verl's `compute_grpo_outcome_advantage`,
//! `compute_policy_loss`, `kl_penalty("low_var_kl")`, `agg_loss`), its variants, and plain SFT
//! cross-entropy — each as a value plus its gradient with respect to the per-token log-probs
//! and entropies (which `logprob` then carries to the model).
//!
//! The per-token objective itself (clip, dual clip, low-variance KL, entropy bonus, the
//! aggregations) lives in the ops layer, where the device kernel that computes it is checked
//! against it: `ops::grpo` (settings, inputs, outputs) and `ops::cpu::grpo::grpo_loss` (the
//! math), re-exported here. What stays here is what happens around it: advantages, the response
//! mask, SFT.
pub use crate::ops::cpu::grpo::grpo_loss;
pub use crate::ops::grpo::{GrpoConfig, GrpoOutput, GrpoTokens, LossAgg};

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
