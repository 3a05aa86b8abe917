// sample.cu — draws one token per row of f32 or bf16 logits (greedy, temperature, min-p, top-k,
// top-p) and returns its id and log-prob: bit for bit what the CPU reference computes
// (src/ops/cpu/sample.rs `sample_row`, whose module doc defines the draw on integers; the steps
// below are its steps 1-5, its constants are spelled the same, and every float operation is one
// explicitly rounded IEEE operation, so nvcc cannot contract or reorder it).
//
// Layout: logits [rows, V] row-major, f32 (sample_f32) or bf16 (sample_bf16: the lm_head GEMM's
//   output as it is, widened exactly on load), V < 2^20 (so a row's Σq < 2^64);
//   params [rows, 8] u32, written by the launcher (src/ops/cuda/sample.rs) with the reference's
//   own helpers: 0 greedy (0/1), 1 temperature (f32 bits; 1.0 when greedy), 2 top_p (f32 bits),
//   3 top_k (0 = off; the host turns k >= V into 0), 4-5 c = the min-p cut in fixed point (u64,
//   lo/hi), 6-7 U = the draw's uniform as 53 bits (u64, lo/hi), from the engine's counter-based
//   generator keyed on (request seed, position): nothing here depends on the batch.
//   Out: token [rows] i32, logprob [rows] f32. A row that cannot be sampled gets token -1 when
//   every logit is -inf, or -2 - col for its first column whose scaled logit is NaN or +inf, with
//   that column's raw logit in logprob, so the host can name both.
// Launch: grid = rows, block = a multiple of 32 up to 1024 (1024 at V = 151,936; the launcher
//   takes fewer for small V). One block per row; no dynamic shared memory (16.4 KB static).
// Registers (ptxas, nvcc 13.0, sm_80 / sm_90a): 60 / 64 under __launch_bounds__(1024, 1), no
//   spills. The explicit min-blocks 1 matters: with __launch_bounds__(1024) alone ptxas for
//   sm_90a aims at two blocks an SM, caps at 32 registers and spills. One 1024-thread block an
//   SM is what a batch ≤ 132 rows can use anyway.
// Passes over the row, each a coalesced read recomputing s and q (608 KB of s per row does not
//   fit in shared memory): 1. max m and the first bad column; 2. Σq (the log-prob's normaliser),
//   the count of q > 0 and the first index of m (greedy stops here); 3. top-k only, and only when
//   more than k tokens have q > 0: three radix passes (11/11/10 bits of the key, 2048 count bins)
//   for the k-th largest key; 4. top-p only: the kept mass, then three radix passes over mass
//   bins for σ_p; 5. the draw: each warp's kept mass over its contiguous slice of the row, then
//   the warp holding the draw point walks its slice 32 tokens at a time.
// Napkin roofline. Bytes: the least traffic is one read of the row, V · 4 = 608 KB in f32, 304 KB
//   in bf16 (what CudaOps passes); at batch 128 that is 77.8 / 38.9 MB, 23 / 12 µs at an H100's
//   3.35 TB/s. Plain temperature sampling (the training configs) reads each row 3 times (passes
//   1, 2, 5), top-k adds up to 3 and top-p 4; re-reads mostly hit L2 (50 MB: all 128 bf16 rows).
//   Arithmetic: the bit-exact definition costs ~35-40 lane operations a logit a pass (IEEE
//   divide, the exp polynomial, the key, u64 sums; ~15 for a logit more than 31 below the max
//   once scaled, whose exp is skipped), against an H100's ~9 per byte balance point: a pass is
//   ALU-bound, not memory-bound. With one block a row, a row is one SM's work; in the worst case
//   (every logit near the max, as in the bench's N(0, 3²) rows) 151,936 × (~12 + 2 × ~40) /
//   (128 lanes × 1.75 GHz) ≈ 60-80 µs for plain sampling (~250 µs with every cut), at any batch
//   up to the SM count (132); at batch 128 the bytes bound is 3.5x (f32) to 7x (bf16) below
//   that, at batch 1 far more.
//   Predicted: ~0.1 ms a decode step at batch 1 to 128, against the host path it replaces
//   (78 MB of f32 logits over PCIe, then ~5.7 ms a row on one core, measured on a loaded 2-core
//   box by benches/sample.rs: 0.7 s at batch 128). What would close the gap to the bytes bound:
//   several blocks a row (batch 1 uses one SM of 132) with a second-level reduction, and
//   skipping the exp for tokens far below the max.
#include "common.cuh"

typedef unsigned long long u64;

namespace sample_detail {

constexpr int kWeightBits = 44;
constexpr int kRadixBins = 2048;  // 11 bits: the key in three passes of 11, 11 and 10 bits
// The reference's constants, as the shortest decimals of their f32 values.
constexpr float kLog2e = 1.442695f;      // 0x3fb8aa3b
constexpr float kLn2Hi = 0.69314575f;    // 0x3f317200
constexpr float kLn2Lo = 1.4286068e-6f;  // 0x35bfbe8e
constexpr double kLn2 = 0.6931471805599453;  // f64 ln 2, as Rust's std::f64::consts::LN_2

// ⌊exp(d) · 2^44⌋ for d ≤ 0: the reference's `fixed_weight`, operation for operation.
__device__ __forceinline__ u64 fixed_weight(float d) {
    if (!(d >= -31.0f)) return 0ull;
    const float n = rintf(__fmul_rn(d, kLog2e));  // ties to even, as round_ties_even
    float r = fmaf(-n, kLn2Hi, d);
    r = fmaf(-n, kLn2Lo, r);
    float p = 0.0001984127f;
    p = fmaf(p, r, 0.0013888889f);
    p = fmaf(p, r, 0.008333334f);
    p = fmaf(p, r, 0.041666668f);
    p = fmaf(p, r, 0.16666667f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    const float scale = __int_as_float(((int)n + kWeightBits + 127) << 23);
    return (u64)__fmul_rn(p, scale);
}

// The order of f32 values as u32, -0 as +0 (the reference's `sort_key`).
__device__ __forceinline__ unsigned sort_key(float s) {
    const unsigned b = s == 0.0f ? 0u : __float_as_uint(s);
    return (b >> 31) ? ~b : (b | 0x80000000u);
}

// ⌊U · mass / 2^53⌋ from the 128-bit product (the reference's `draw_point`).
__device__ __forceinline__ u64 draw_point(u64 u53, u64 mass) {
    const u64 hi = __umul64hi(u53, mass), lo = u53 * mass;
    return (hi << 11) | (lo >> 53);
}

// Sums and minima over the block (blockDim.x a multiple of 32), result in every thread.
// Integer sums are exact, so the order of the tree does not matter. `scratch` holds 32 values;
// the leading barrier protects it from the previous call's readers.
__device__ __forceinline__ u64 block_sum_u64(u64 v, u64* scratch SCALERL_LOC) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, 32 SCALERL_AT);
    __syncthreads(SCALERL_AT1);
    if (lane == 0) scratch[warp] = v;
    __syncthreads(SCALERL_AT1);
    v = lane < nwarps ? scratch[lane] : 0ull;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, 32 SCALERL_AT);
    return v;
}
__device__ __forceinline__ unsigned block_min_u32(unsigned v, u64* scratch SCALERL_LOC) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, o, 32 SCALERL_AT));
    __syncthreads(SCALERL_AT1);
    if (lane == 0) scratch[warp] = v;
    __syncthreads(SCALERL_AT1);
    v = lane < nwarps ? (unsigned)scratch[lane] : 0xffffffffu;
    for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, o, 32 SCALERL_AT));
    return v;
}

// A logit as f32 (bf16 widens exactly, so the reference on the widened row is the definition).
__device__ __forceinline__ float load(const float* x, int i) { return x[i]; }
__device__ __forceinline__ float load(const __nv_bfloat16* x, int i) { return __bfloat162float(x[i]); }

// One token of the row under the draw: its scaled logit, key and fixed-point weight.
struct Tok {
    float s;
    unsigned key;
    u64 q;
};
template <class T>
__device__ __forceinline__ Tok tok(const T* x, int i, float t, float m) {
    const float s = __fdiv_rn(load(x, i), t);
    return Tok{s, sort_key(s), fixed_weight(__fsub_rn(s, m))};
}

// The largest key σ with W(σ) = Σ_{key_i ≥ σ} w_i ≥ target (compared in f64, as the reference
// does), where weight(tok) is w_i (0 = not counted). Radix select, high digit first: each pass
// histograms the weights of the tokens whose higher digits equal the prefix chosen so far, and
// warp 0 finds the digit where the running weight (from the top) first reaches the target.
// A target the row's total weight reaches is the caller's guarantee.
template <class T, class Weight>
__device__ unsigned radix_threshold(const T* x, int vocab, float t, float m, double target, Weight weight,
                                    u64* bins, u64* sel SCALERL_LOC) {
    unsigned prefix = 0;
    u64 above = 0;  // the weight of the keys above the current prefix
    for (int level = 0; level < 3; ++level) {
        const int shift = level == 0 ? 21 : level == 1 ? 10 : 0;
        const int nbins = level == 2 ? 1024 : 2048;
        const unsigned fixed = level == 0 ? 0u : ~((1u << (shift + (level == 2 ? 10 : 11))) - 1u);
        for (int j = threadIdx.x; j < nbins; j += blockDim.x) bins[j] = 0;
        __syncthreads(SCALERL_AT1);
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            const Tok k = tok(x, i, t, m);
            const u64 w = weight(k);
            if (w != 0 && (k.key & fixed) == (prefix & fixed)) atomicAdd(&bins[(k.key >> shift) & (nbins - 1)], w);
        }
        __syncthreads(SCALERL_AT1);
        if (threadIdx.x < 32) {
            // Lane l holds digits [l·per, (l+1)·per); suffix sums over lanes, from the top.
            const int lane = threadIdx.x, per = nbins / 32;
            u64 mine = 0;
            for (int j = 0; j < per; ++j) mine += bins[lane * per + j];
            u64 suffix = mine;
            for (int o = 1; o < 32; o <<= 1) {
                const u64 v = __shfl_down_sync(0xffffffffu, suffix, o, 32 SCALERL_AT);
                if (lane + o < 32) suffix += v;
            }
            const unsigned reach = __ballot_sync(0xffffffffu, (double)(above + suffix) >= target SCALERL_AT);
            // The highest lane that reaches the target holds the digit; within it, the highest digit.
            const int holder = reach ? 31 - __clz((int)reach) : 0;
            if (lane == holder) {
                u64 run = above + suffix - mine;
                int digit = lane * per;
                for (int j = per - 1; j >= 0; --j) {
                    const u64 b = bins[lane * per + j];
                    if ((double)(run + b) >= target) {
                        digit = lane * per + j;
                        break;
                    }
                    run += b;
                }
                sel[0] = digit;
                sel[1] = run;
            }
        }
        __syncthreads(SCALERL_AT1);
        prefix |= (unsigned)sel[0] << shift;
        above = sel[1];
        __syncthreads(SCALERL_AT1);  // sel and bins are rewritten by the next pass
    }
    return prefix;
}

// The kernel body for one row (blockIdx.x) of f32 or bf16 logits.
template <class T>
__device__ void sample_row(const T* logits, const unsigned* params, int* token_out, float* logprob_out, int vocab) {
    SHARED(u64, scratch, [32]);
    SHARED(u64, bins, [kRadixBins]);
    SHARED(u64, sel, [2]);
    const int row = blockIdx.x, lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    const T* x = logits + (size_t)row * vocab;
    const unsigned* pr = params + (size_t)row * 8;
    const bool greedy = pr[0] != 0;
    const float t = __uint_as_float(pr[1]);
    const float top_p = __uint_as_float(pr[2]);
    const unsigned top_k = pr[3];
    const u64 c = (u64)pr[4] | ((u64)pr[5] << 32);
    const u64 u53 = (u64)pr[6] | ((u64)pr[7] << 32);

    // 1. m = max s, and the first column whose s is NaN or +inf.
    float mx = -INFINITY;
    unsigned bad = 0xffffffffu;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float s = __fdiv_rn(load(x, i), t);
        if (s != s || s == INFINITY) bad = min(bad, (unsigned)i);
        mx = fmaxf(mx, s);
    }
    bad = block_min_u32(bad, scratch);
    const float m = block_reduce_max(mx);
    if (bad != 0xffffffffu || m == -INFINITY) {  // uniform over the block: all leave together
        if (threadIdx.x == 0) {
            token_out[row] = bad != 0xffffffffu ? -2 - (int)bad : -1;
            logprob_out[row] = bad != 0xffffffffu ? load(x, (int)bad) : 0.0f;
        }
        return;
    }

    // 2. Q = Σq over the row, how many q > 0, and the first index of the max.
    u64 total = 0, positive = 0;
    unsigned first_max = 0xffffffffu;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        const Tok k = tok(x, i, t, m);
        total += k.q;
        positive += k.q != 0;
        if (k.s == m) first_max = min(first_max, (unsigned)i);
    }
    total = block_sum_u64(total, scratch);
    positive = block_sum_u64(positive, scratch);
    first_max = block_min_u32(first_max, scratch);
    // (s − m) − ln(Q / 2^44) in f64, each operation rounded on its own as the host's.
    const double log_norm = __dsub_rn(log((double)total), __dmul_rn((double)kWeightBits, kLn2));
    if (greedy) {
        if (threadIdx.x == 0) {
            token_out[row] = (int)first_max;
            logprob_out[row] = (float)__dsub_rn(__dsub_rn((double)__fdiv_rn(load(x, (int)first_max), t), (double)m), log_norm);
        }
        return;
    }

    // 3. top-k: σ_k = the k-th largest key, repeats counted. When no more than k tokens have a
    // weight, every weighted token is in the top k and σ_k = 0 keeps the same weighted set.
    unsigned sigma = 0;
    if (top_k != 0 && positive > top_k) {
        sigma = radix_threshold(x, vocab, t, m, (double)top_k, [](const Tok&) { return 1ull; }, bins, sel);
    }
    // 4. top-p over what min-p and top-k kept: σ_p = the largest key whose mass from the top
    // reaches top_p of the kept mass.
    if (top_p < 1.0f) {
        const unsigned sk = sigma;
        auto kept = [sk, c](const Tok& k) { return k.key >= sk && k.q >= c ? k.q : 0ull; };
        u64 mass = 0;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) mass += kept(tok(x, i, t, m));
        mass = block_sum_u64(mass, scratch);
        const double target = __dmul_rn((double)top_p, (double)mass);
        sigma = max(sigma, radix_threshold(x, vocab, t, m, target, kept, bins, sel));
    }

    // 5. The draw: r = ⌊U · Q_K / 2^53⌋; the token is the first index, in vocabulary order,
    // whose running kept mass exceeds r. Warp w sums its contiguous slice of the row.
    const int chunk = (vocab + nwarps - 1) / nwarps;
    const int lo = min(vocab, warp * chunk), hi = min(vocab, lo + chunk);
    u64 mine = 0;
    for (int i = lo + lane; i < hi; i += 32) {
        const Tok k = tok(x, i, t, m);
        if (k.key >= sigma && k.q >= c) mine += k.q;
    }
    for (int o = 16; o > 0; o >>= 1) mine += __shfl_xor_sync(0xffffffffu, mine, o, 32);
    __syncthreads();
    if (lane == 0) scratch[warp] = mine;
    __syncthreads();
    // Every warp reads the slice masses: their inclusive scan, the total and the draw point.
    u64 incl = lane < nwarps ? scratch[lane] : 0ull;
    for (int o = 1; o < 32; o <<= 1) {
        const u64 v = __shfl_up_sync(0xffffffffu, incl, o, 32);
        if (lane >= o) incl += v;
    }
    const u64 kept_mass = __shfl_sync(0xffffffffu, incl, 31, 32);
    const u64 r = draw_point(u53, kept_mass);
    const unsigned past = __ballot_sync(0xffffffffu, incl > r);
    const int holder = __ffs((int)past) - 1;  // kept_mass > r, so some slice holds the draw
    if (warp != holder) return;               // no barrier follows
    u64 run = __shfl_sync(0xffffffffu, incl, holder, 32) - scratch[holder];
    for (int base = lo; base < hi; base += 32) {
        const int i = base + lane;
        u64 w = 0;
        if (i < hi) {
            const Tok k = tok(x, i, t, m);
            if (k.key >= sigma && k.q >= c) w = k.q;
        }
        u64 cum = w;
        for (int o = 1; o < 32; o <<= 1) {
            const u64 v = __shfl_up_sync(0xffffffffu, cum, o, 32);
            if (lane >= o) cum += v;
        }
        const unsigned hit = __ballot_sync(0xffffffffu, run + cum > r);
        if (hit) {
            if (lane == __ffs((int)hit) - 1) {
                token_out[row] = i;
                logprob_out[row] = (float)__dsub_rn(__dsub_rn((double)__fdiv_rn(load(x, i), t), (double)m), log_norm);
            }
            return;
        }
        run += __shfl_sync(0xffffffffu, cum, 31, 32);
    }
}

}  // namespace sample_detail

extern "C" __global__ void __launch_bounds__(1024, 1) sample_f32(const float* logits, const unsigned* params,
                                                                  int* token_out, float* logprob_out, int vocab) {
    sample_detail::sample_row(logits, params, token_out, logprob_out, vocab);
}
// The lm_head GEMM's own bf16 output: half the bytes a pass, and no widening kernel before it.
extern "C" __global__ void __launch_bounds__(1024, 1) sample_bf16(const __nv_bfloat16* logits, const unsigned* params,
                                                                   int* token_out, float* logprob_out, int vocab) {
    sample_detail::sample_row(logits, params, token_out, logprob_out, vocab);
}
SCALERL_EXPORT_KERNEL(sample_f32)
SCALERL_EXPORT_KERNEL(sample_bf16)
