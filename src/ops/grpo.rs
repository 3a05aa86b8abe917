//! The GRPO per-token objective's interface: its settings (`GrpoConfig`, `LossAgg`), inputs
//! (`GrpoTokens`) and outputs (`GrpoOutput`), shared by the CPU reference
//! (`cpu::grpo::grpo_loss`, verl's formulas) and the device kernel (kernels/grpo_loss.cu) behind
//! `Ops::grpo_loss`. The trainer re-exports them (`train::grpo`).
use anyhow::{ensure, Result};

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
    /// The weight w_t of one token of a sequence with `len` valid tokens, in a batch of
    /// `seqs` sequences holding `total` valid tokens. A sequence with no valid token counts in
    /// the number of sequences and adds nothing. (kernels/grpo_loss.cu computes the same
    /// expressions in f64.)
    pub fn weight(&self, len: usize, seqs: usize, total: usize) -> f64 {
        let b = seqs.max(1) as f64;
        match *self {
            LossAgg::TokenMean => 1.0 / total.max(1) as f64,
            LossAgg::SeqMeanTokenMean => 1.0 / (b * len.max(1) as f64),
            LossAgg::SeqMeanTokenSum => 1.0 / b,
            LossAgg::SeqMeanTokenSumNorm { constant } => 1.0 / (b * constant as f64),
        }
    }

    /// The weight w_t of every token, sequence by sequence (`seq_lens` valid tokens each).
    pub fn token_weights(&self, seq_lens: &[usize]) -> Vec<f64> {
        let n: usize = seq_lens.iter().sum();
        let mut w = Vec::with_capacity(n);
        for &l in seq_lens {
            w.extend(std::iter::repeat_n(self.weight(l, seq_lens.len(), n), l));
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
    /// Dual clip (verl's `clip_ratio_c`, 3.0 when on): for a negative advantage the per-token
    /// loss is capped at −A·c. `None` (DeepScaleR's run) turns it off.
    pub dual_clip: Option<f32>,
    /// Entropy bonus coefficient (subtracted).
    pub entropy_coef: f32,
    /// low_var_kl coefficient against the reference policy; `None` turns the KL term off.
    pub kl_coef: Option<f32>,
    pub agg: LossAgg,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        GrpoConfig { clip_low: 0.2, clip_high: 0.2, dual_clip: None, entropy_coef: 0.001, kl_coef: Some(0.001), agg: LossAgg::TokenMean }
    }
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

impl GrpoTokens<'_> {
    /// Valid tokens of the batch.
    pub fn len(&self) -> usize {
        self.seq_lens.iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every array has one entry per valid token (and ref_logp is there when the KL term is on);
    /// the error names the array at fault.
    pub fn check(&self, cfg: &GrpoConfig) -> Result<()> {
        let n = self.len();
        for (name, len) in [("logp", self.logp.len()), ("entropy", self.entropy.len()), ("old_logp", self.old_logp.len()), ("advantages", self.advantages.len())] {
            ensure!(len == n, "grpo_loss: {name} has {len} entries, the sequences have {n} valid tokens");
        }
        if cfg.kl_coef.is_some() {
            ensure!(self.ref_logp.map(|r| r.len()) == Some(n), "grpo_loss: the KL term needs ref_logp for every token ({n})");
        }
        Ok(())
    }
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
    /// Token mean of [the dual clip's cap taken] (verl's pg_clipfrac_lower; 0 when off).
    pub clip_frac_lower: f64,
    /// Token mean of logp_old − logp (verl's ppo_kl).
    pub approx_kl: f64,
    /// Token mean of the entropy.
    pub entropy_mean: f64,
    pub d_logp: Vec<f32>,
    pub d_entropy: Vec<f32>,
}
