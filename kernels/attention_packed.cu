// attention_packed.cu — the training forward of attention: causal GQA attention within each of
// several whole sequences packed one after the other (no padding, no KV cache), in the
// FlashAttention-2 style on tensor cores (mma.sync m16n8k16 bf16, ldmatrix, cp.async), always
// writing the row log-sum-exp the backward (attention_packed_backward.cu) recomputes P from.
//
//   for row i of a sequence starting at row s0 (position p = i - s0) and query head h
//   (KV head h / (num_heads / num_kv_heads)):
//     s_j = q_i·k_j / √D for rows j = s0 ..= i,  lse_i = ln Σ_j exp(s_j),  out_i = Σ_j exp(s_j - lse_i) v_j
//   (f32 scores, online softmax and accumulators; P is rounded to bf16 for the P·V product.)
//
// CPU reference: src/ops/cpu/attention.rs `attention_forward`.
// Layout (see attention_packed.cuh): q, out [T, num_heads * D] bf16; k, v [T, num_kv_heads * D]
//   bf16 (the rows of the QKV projections, after RoPE and the v bias); lse [T, num_heads] f32;
//   work [items] int4, one per 64-row query tile: (first row of the sequence, position of the
//   tile's first row, valid rows 1..64, sequence length), the tiles with the most visible keys
//   first (src/ops/cuda/attention_packed.rs), so the long ones do not form the grid's tail.
// D = 64 or 128: attention_packed_d64_bf16 / attention_packed_d128_bf16.
//
// Launch: grid = (num_heads, items), block = PACKED_THREADS = 128 (asserted), no dynamic smem.
// Heads are the fast grid dimension, so the blocks of one tile start together (longest first
// holds across heads) and the group's heads read the same K/V tiles from L2 close in time.
// One block = one 64-row query tile of one head: warp w owns rows 16w..16w+15 (one m16 slab).
// Keys are walked in 64-row tiles from the sequence's first row to the tile's last visible key;
// rows past it are never loaded. This is attention_prefill.cu's kernel with the paged cache
// replaced by the packed K/V rows (a tile of keys is 64 consecutive rows, no block table):
//   Shared memory (static): s_k, s_v, 64 rows x (D + 8) bf16 each: 34,816 B at D = 128, 18,432 B
//   at D = 64. Q goes through s_v once (ldmatrix'd into D/16 A fragments, 32 registers at
//   D = 128) before V tile 0 overwrites it.
//   Pipeline: K tile n+1 in flight during softmax and P·V of tile n, V tile n during Q·K^T of
//   tile n; one buffer each, two barriers per tile. Per key tile, per warp: S[16x64] = Q·K^T,
//   the causal mask only on tiles that reach past the warp's first row, row max/sum over the
//   quad (shfl_xor 1, 2), O rescaled, P converted in registers into the A fragments of P·V,
//   O[16xD] += P·V (V fragments by ldmatrix.x4.trans).
//   Epilogue: O / l to bf16 staged through s_k (free by then), 16-byte row stores, and lse.
// Robustness: keys past the tile's last visible key and Q rows past the sequence are zero-filled
//   (nothing is read), so rows of the next sequence never enter an mma; masked scores are -inf
//   before exp2, so their p is exactly 0. Key 0 of the sequence is visible to every row, so the
//   running max is finite from tile 0 on (no -inf - -inf). Warps whose 16 rows are all past the
//   sequence skip the math but still load and reach every barrier.
//
// Napkin math (per call, causal): FLOPs = 4 · Σ_rows (visible keys) · D · num_heads (Q·K^T and
// P·V, 2 each; `PackedPlan::flops`). One 8K sequence on the 1.5B target (12 heads, D 128):
// Σ = 8192·8193/2 = 33.6M -> 206 GFLOP per layer; 24K: 1.86 TFLOP per layer. Compute-bound: per
// 64x64 tile step a block moves 32 KB of K/V (L2 -> smem) for 2.1 MFLOP = 64 FLOP/B; HBM sees
// each KV head's K/V (6 MB at 24K) about once while L2 (40-50 MB) serves the group's 6 heads.
// Peaks: A100 312 TFLOP/s dense bf16 (FA2's forward, the same scheme, reaches ≈ 70% of it);
// H100/H200 ≈ 990 TFLOP/s with wgmma, which mma.sync cannot reach (≈ 60-65% of it at best for a
// GEMM; FA2 measures ≈ 335-350 TFLOP/s forward on H100, ≈ 35%). At 350 TFLOP/s a 24K sequence
// costs 5.3 ms per layer, 150 ms per forward of 28 layers.
// Registers (ptxas, sm_80 | sm_90a): 222 | 224 at D = 128 (2 blocks = 8 warps per SM, as the
// prefill kernel's 186), 131 | 128 at D = 64; no spills (the fatbin test checks).
#include "attention_packed.cuh"

namespace packed {

template <int D>
__device__ __forceinline__ void forward(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, __nv_bfloat16* out,
                                        float* lse, const int4* work, int num_heads, int num_kv_heads, float scale_log2) {
    constexpr int BM = PACKED_TILE, BN = PACKED_TILE, KSTEPS = D / 16;
    SHARED(__nv_bfloat16, s_k, [BN][D + PACKED_PAD]);
    SHARED(__nv_bfloat16, s_v, [BN][D + PACKED_PAD]);  // holds the Q tile until V tile 0
    assert(blockDim.x == PACKED_THREADS);
    const int4 item = work[blockIdx.y];
    const int seq0 = item.x, pos0 = item.y, rows = item.z;
    const int h = blockIdx.x, kvh = h / (num_heads / num_kv_heads);
    const int qd = num_heads * D, kvd = num_kv_heads * D;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane >> 2, t = lane & 3;
    const int lr = lane % 8, li = lane / 8;
    const int kv_end = pos0 + rows;  // keys 0 .. kv_end-1 of the sequence are visible to the tile's last row
    const int n_tiles = (kv_end + BN - 1) / BN;
    const bool active = warp * 16 < rows;  // warp-uniform

    // Q tile -> s_v, K tile 0 -> s_k: two commit groups.
    load_rows<D, BM>(s_v, q, (size_t)seq0 + pos0, rows, qd, h * D);
    cp_async_commit();
    load_rows<D, BN>(s_k, k, (size_t)seq0, min(BN, kv_end), kvd, kvh * D);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();  // every thread's share of the Q tile has landed
    uint32_t qf[KSTEPS][4];
#pragma unroll
    for (int kk = 0; kk < KSTEPS; ++kk) ldmatrix_x4(qf[kk], &s_v[warp * 16 + lr + 8 * (li & 1)][kk * 16 + 8 * (li >> 1)]);

    float o[D / 8][4];
#pragma unroll
    for (int j = 0; j < D / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    // Rows g and g+8 of the warp's slab: running max (log2 domain, scaled) and the thread's
    // partial row sum (its 2 columns of each n8 tile; the quad is summed at the end).
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    const int row_pos = pos0 + warp * 16 + g;  // position of row g; row g+8 is at +8

    for (int n = 0; n < n_tiles; ++n) {
        const int key0 = n * BN;
        cp_async_wait<0>();
        __syncthreads();  // K tile n visible to all; every warp is done reading s_v (Q or V tile n-1)
        load_rows<D, BN>(s_v, v, (size_t)seq0 + key0, min(BN, kv_end - key0), kvd, kvh * D);
        cp_async_commit();

        float s[BN / 8][4];  // S[16 x 64]: C fragments of 8 n8 tiles of keys
        if (active) {
#pragma unroll
            for (int j = 0; j < BN / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < KSTEPS; ++kk) {
#pragma unroll
                for (int jp = 0; jp < BN / 16; ++jp) {
                    uint32_t b[4];
                    ldmatrix_x4(b, &s_k[jp * 16 + lr + 8 * (li >> 1)][kk * 16 + 8 * (li & 1)]);
                    const uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
                    mma_m16n8k16_bf16(s[2 * jp], qf[kk], b0, s[2 * jp]);
                    mma_m16n8k16_bf16(s[2 * jp + 1], qf[kk], b1, s[2 * jp + 1]);
                }
            }
            // Causal mask, only where the tile reaches past the warp's first row (this also masks
            // the zero-filled keys past kv_end: they lie after every valid row).
            if (key0 + BN - 1 > pos0 + warp * 16) {
#pragma unroll
                for (int j = 0; j < BN / 8; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e)
                        if (key0 + 8 * j + 2 * t + (e & 1) > row_pos + 8 * (e >> 1)) s[j][e] = -INFINITY;
            }
            float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int j = 0; j < BN / 8; ++j) {
                mx[0] = fmaxf(mx[0], fmaxf(s[j][0], s[j][1]));
                mx[1] = fmaxf(mx[1], fmaxf(s[j][2], s[j][3]));
            }
            float alpha[2];
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
                mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
                const float m_new = fmaxf(m[r], mx[r] * scale_log2);  // finite: key 0 is in tile 0
                alpha[r] = exp2f(m[r] - m_new);                       // 0 on tile 0
                m[r] = m_new;
                l[r] *= alpha[r];
            }
#pragma unroll
            for (int j = 0; j < BN / 8; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    s[j][e] = exp2f(fmaf(s[j][e], scale_log2, -m[e >> 1]));  // masked: exp2(-inf) = 0
                    l[e >> 1] += s[j][e];
                }
#pragma unroll
            for (int j = 0; j < D / 8; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) o[j][e] *= alpha[e >> 1];
        }

        cp_async_wait<0>();
        __syncthreads();  // V tile n visible to all; every warp is done reading s_k
        if (n + 1 < n_tiles) {
            load_rows<D, BN>(s_k, k, (size_t)seq0 + key0 + BN, min(BN, kv_end - key0 - BN), kvd, kvh * D);
            cp_async_commit();
        }
        if (active) {
            uint32_t pf[BN / 16][4];
            to_a_frags<BN>(pf, s);
            mma_ab<D, BN>(o, pf, s_v);
        }
    }

    // Epilogue: no warp reads s_k after the last tile's second barrier (and no K load follows
    // it), so each warp stages its own 16 rows there and only needs __syncwarp.
    if (active) {
        float inv[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
            l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
            inv[r] = 1.0f / l[r];
            const int row = warp * 16 + g + 8 * r;
            // ln Σ exp(s/√D) = (m + log2 l) · ln 2, m being max(s)·log2(e)/√D
            if (t == 0 && row < rows) lse[((size_t)seq0 + pos0 + row) * num_heads + h] = (m[r] + log2f(l[r])) * 0.69314718f;
#pragma unroll
            for (int j = 0; j < D / 8; ++j) {
                o[j][2 * r] *= inv[r];
                o[j][2 * r + 1] *= inv[r];
            }
        }
        store_rows<D>(o, 1.0f, reinterpret_cast<Row<D>*>(s_k), warp * 16, out, (size_t)seq0 + pos0, rows, qd, h * D);
    }
}

}  // namespace packed

#define PACKED_FWD_KERNEL(name, D)                                                                                   \
    extern "C" __global__ void __launch_bounds__(PACKED_THREADS)                                                     \
        name(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, __nv_bfloat16* out, float* lse, \
             const int4* work, int num_heads, int num_kv_heads, float scale_log2) {                                  \
        packed::forward<D>(q, k, v, out, lse, work, num_heads, num_kv_heads, scale_log2);                           \
    }
PACKED_FWD_KERNEL(attention_packed_d64_bf16, 64)
PACKED_FWD_KERNEL(attention_packed_d128_bf16, 128)
SCALERL_EXPORT_KERNEL(attention_packed_d64_bf16)
SCALERL_EXPORT_KERNEL(attention_packed_d128_bf16)
