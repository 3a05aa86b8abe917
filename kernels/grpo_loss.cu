// grpo_loss.cu — the GRPO per-token objective (verl's compute_policy_loss with clip-higher and
// the dual clip, low_var_kl clamped to ±10, the entropy bonus, the four loss aggregations):
// per token its gradients ∂L/∂logp and ∂L/∂entropy (what the lm_head log-prob backward,
// logprob.cu, takes), per block the partial sums of the loss parts and metrics.
//
//   token t of sequence s (n_s valid tokens; B sequences, N tokens in all):
//     ρ = exp(logp − old),  pg = max(−A ρ, −A clip(ρ, lo, hi)),  clipped = [second branch > first]
//     dual clip c (optional): A < 0 and pg > −A c → pg = −A c, lower = 1, no gradient
//     kl = clamp(e^k − k − 1, −10, 10) with k = ref − logp (optional)
//     w = 1/N (token-mean) | 1/(B max(n_s, 1)) | 1/B | 1/(B · constant)   (f64)
//     d_logp = w (−A ρ [not clipped] + c_kl (1 − e^k) [|raw| ≤ 10]),  d_entropy = −w c_ent
//   partial sums (f64) per block: Σ w pg, Σ w entropy, Σ w kl, Σ clipped, Σ (old − logp),
//   Σ entropy, Σ lower. The host adds the blocks in order and divides the counts by N.
// CPU reference: src/ops/cpu/grpo.rs `grpo_loss` (the same f32 and f64 expressions in the same
//   order; nvcc's multiply-add contraction is kept off the f64 gradient by __dmul_rn).
// Layout: logp, entropy, old_logp, ref_logp (NULL when the KL term is off), advantages [N] f32;
//   seq_offsets [B + 1] int32 (token t belongs to the s with offsets[s] <= t < offsets[s + 1],
//   found by binary search; empty sequences allowed); d_logp, d_entropy [N] f32;
//   partials [gridDim.x][GRPO_SUMS] f64.
// Launch: grid ceil(N / (GRPO_THREADS · GRPO_ITEMS)), block GRPO_THREADS = 256 (asserted):
//   block b owns tokens b·1024 .. b·1024 + 1023, thread i tokens i, i + 256, i + 512, i + 768;
//   the block's sums are reduced by a fixed shuffle tree, then warp by warp in order.
//   Deterministic: nothing depends on thread timing.
// Napkin math: ~40 B read and 8 B written per token, ~30 flops and 2 expf: at 64K tokens
//   (one 8K-stage mini-batch's worth) 3 MB, a few µs — noise beside the lm_head GEMMs.
// Registers (ptxas, nvcc 13.0): 47 (sm_80) / 63 (sm_90a), 512 B static smem, no spills.
#include "common.cuh"

#define GRPO_THREADS 256
#define GRPO_ITEMS 4
#define GRPO_SUMS 8

// LossAgg of src/ops/grpo.rs
#define GRPO_AGG_TOKEN_MEAN 0
#define GRPO_AGG_SEQ_MEAN_TOKEN_MEAN 1
#define GRPO_AGG_SEQ_MEAN_TOKEN_SUM 2
#define GRPO_AGG_SEQ_MEAN_TOKEN_SUM_NORM 3

#ifdef SCALERL_INTERPRET
#define GRPO_DMUL(a, b) ((a) * (b))
#else
#define GRPO_DMUL(a, b) __dmul_rn(a, b)
#endif

namespace grpo {

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// The sequence of token t: the largest s with offsets[s] <= t.
__device__ __forceinline__ int seq_of(const int* offsets, int num_seqs, int t) {
    int lo = 0, hi = num_seqs - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (offsets[mid] <= t)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

}  // namespace grpo

extern "C" __global__ void __launch_bounds__(GRPO_THREADS)
    grpo_token_loss(const float* logp, const float* entropy, const float* old_logp, const float* ref_logp, const float* adv,
                    const int* seq_offsets, int num_seqs, int n, int agg, float agg_constant, float clip_lo, float clip_hi,
                    int has_dual_clip, float dual_clip, float kl_coef, float entropy_coef, float* d_logp, float* d_entropy,
                    double* partials) {
    SHARED(double, s_sums, [GRPO_THREADS / 32][GRPO_SUMS]);
    assert(blockDim.x == GRPO_THREADS);
    double sums[GRPO_SUMS] = {0, 0, 0, 0, 0, 0, 0, 0};
    const double b = (double)max(num_seqs, 1);
#pragma unroll
    for (int it = 0; it < GRPO_ITEMS; ++it) {
        const int t = blockIdx.x * (GRPO_THREADS * GRPO_ITEMS) + it * GRPO_THREADS + threadIdx.x;
        if (t >= n) break;
        const int s = grpo::seq_of(seq_offsets, num_seqs, t);
        const int len = seq_offsets[s + 1] - seq_offsets[s];
        double w;
        switch (agg) {
            case GRPO_AGG_TOKEN_MEAN: w = 1.0 / (double)max(n, 1); break;
            case GRPO_AGG_SEQ_MEAN_TOKEN_MEAN: w = 1.0 / (b * (double)max(len, 1)); break;
            case GRPO_AGG_SEQ_MEAN_TOKEN_SUM: w = 1.0 / b; break;
            default: w = 1.0 / (b * (double)agg_constant); break;
        }
        const float lp = logp[t], a = adv[t], old = old_logp[t], ent = entropy[t];
        const float ratio = expf(lp - old);
        const float pg1 = -a * ratio;
        const float pg2 = -a * (ratio < clip_lo ? clip_lo : (ratio > clip_hi ? clip_hi : ratio));
        const bool clipped = pg2 > pg1;
        float pg = clipped ? pg2 : pg1;
        double d = clipped ? 0.0 : GRPO_DMUL((double)(-a), (double)ratio);
        if (has_dual_clip) {
            const float pg3 = -a * dual_clip;
            if (a < 0.0f && pg > pg3) {
                pg = pg3;
                d = 0.0;
                sums[6] += 1.0;
            }
        }
        sums[0] += GRPO_DMUL(w, (double)pg);
        sums[1] += GRPO_DMUL(w, (double)ent);
        sums[3] += clipped ? 1.0 : 0.0;
        sums[4] += (double)(old - lp);
        sums[5] += (double)ent;
        if (ref_logp != nullptr) {
            const float k = ref_logp[t] - lp;
            const float ek = expf(k);
            const float raw = ek - k - 1.0f;
            sums[2] += GRPO_DMUL(w, (double)(raw < -10.0f ? -10.0f : (raw > 10.0f ? 10.0f : raw)));
            if (raw >= -10.0f && raw <= 10.0f) d += GRPO_DMUL((double)kl_coef, 1.0 - (double)ek);
        }
        d_logp[t] = (float)GRPO_DMUL(w, d);
        d_entropy[t] = (float)GRPO_DMUL(-w, (double)entropy_coef);
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
    for (int k = 0; k < GRPO_SUMS; ++k) {
        const double v = grpo::warp_sum(sums[k]);
        if (lane == 0) s_sums[warp][k] = v;
    }
    __syncthreads();
    if (threadIdx.x < GRPO_SUMS) {
        double v = 0.0;
        for (int i = 0; i < GRPO_THREADS / 32; ++i) v += s_sums[i][threadIdx.x];
        partials[(size_t)blockIdx.x * GRPO_SUMS + threadIdx.x] = v;
    }
}

SCALERL_EXPORT_KERNEL(grpo_token_loss)
