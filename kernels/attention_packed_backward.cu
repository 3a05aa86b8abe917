// attention_packed_backward.cu — the backward of attention_packed.cu (causal GQA attention over
// packed whole sequences) in the FlashAttention-2 style: the probabilities are recomputed from Q,
// K and the forward's row log-sum-exp, never stored. Deterministic: every output element is
// written by exactly one block, after a reduction in a fixed order (no atomics at all).
//
//   P_ij = exp(q_i·k_j/√D - lse_i) (j ≤ i, same sequence),  dP_ij = dO_i·v_j,
//   delta_i = dO_i·O_i,  dS_ij = P_ij (dP_ij - delta_i),
//   dq_i = Σ_j dS_ij k_j / √D,  dk_j = Σ_{h in group} Σ_{i ≥ j} dS_ij q_i / √D,
//   dv_j = Σ_{h in group} Σ_{i ≥ j} P_ij dO_i.
// CPU reference: src/ops/cpu/attention.rs `attention_backward`.
//
// Three kernels, launched in this order by src/ops/cuda/attention_packed.rs:
//   1. attention_packed_bwd_delta_bf16: delta [T, num_heads] f32 = rowsum(dO ∘ O) per row and
//      head; one warp per (row, head), grid-stride; any even head_dim.
//   2. attention_packed_bwd_dkdv_d{64,128}_bf16: one block owns a 64-key tile of one KV head
//      (warp w: keys 16w..16w+15) and loops over the group's query heads and, for each, over the
//      sequence's query rows from the tile's first key to the end, BC rows at a time; dK and dV
//      accumulate in registers (f32) and are written once, bf16.
//   3. attention_packed_bwd_dq_d{64,128}_bf16: one block owns a 64-row query tile of one head
//      (warp w: rows 16w..16w+15) and loops over the keys 0 .. its last row, BC at a time; dQ
//      accumulates in registers (f32) and is written once, bf16.
// The split recomputes S and dP in both 2 and 3 (7 tile products where FA2's one-kernel backward
// has 5); the price of determinism without a dQ scratch of [key tiles x T x D] f32 or atomics.
//
// Layout (see attention_packed.cuh): q, out, dout, dq [T, num_heads * D] bf16; k, v, dk, dv
//   [T, num_kv_heads * D] bf16; lse (the forward's), delta [T, num_heads] f32. dq/dk/dv are bf16
//   because the CUDA backend's activations (and so the transformer's gradient tensors) are bf16;
//   every sum is f32 in registers and each element is rounded once. work: int4 64-row tiles
//   (first row of the sequence, position of the tile's first row, valid rows, sequence length):
//   query tiles for 3 (most keys first, as the forward's), key tiles for 2 (most queries first).
//
// Launch (block = PACKED_THREADS = 128, asserted):
//   delta: grid = min(ceil(T·num_heads / 8), 4096), block = 256, no smem.
//   dkdv:  grid = (num_kv_heads, key tiles), dynamic smem (below; `backward_smem_bytes` there).
//   dq:    grid = (num_heads, query tiles), the same dynamic smem.
// Shared memory (dynamic, one carve-up for both): the block's own tile (K and V, or Q and dO:
//   2 x 64 rows) and two buffers of the streamed tile (Q and dO, or K and V: 2 x 2 x BC rows), rows
//   of D + 8 bf16; dkdv adds two buffers of BC lse/delta values. BC = 32 at D = 128 (70,144 B), 64
//   at D = 64 (56,320 B): above 48 KB, so the launch opts in (the device layer does).
//   Registers hold dK and dV (2 x D/8 x 4 = 128 f32 at D = 128) or dQ (64), plus S and dP of
//   16 x BC (2 x BC/2 f32); the resident tile's A fragments come from shared memory each step.
// Per step (one barrier; the next step's tiles are in flight by cp.async meanwhile), per warp:
//   dkdv: S^T = K·Q^T, P^T = exp2(S^T·log2e/√D - lse·log2e) (mask key > query only on steps that
//         cross the diagonal; steps wholly above it are skipped), dP^T = V·dO^T,
//         dS^T = P^T ∘ (dP^T - delta), dV += P^T·dO, dK += dS^T·Q (P^T, dS^T to bf16 A fragments
//         in registers). Query rows past the sequence get lse = +inf (P = 0) and zero Q/dO rows.
//   dq:   S = Q·K^T, P, dP = dO·V^T, dS, dQ += dS·K; key tiles past the warp's last row skipped.
// Epilogues: ×1/√D for dK and dQ, bf16 staged through the warp's own rows of the resident tile,
//   16-byte row stores.
//
// Napkin math (causal; 1.5B target: 12 heads over 2 KV heads, D 128): the forward is
// F = 4·Σ_rows visible keys·D·heads (206 GFLOP per layer for one 8K sequence); the backward is
// counted as 2.5 F (5 products: dV, dP, dS·K, dS^T·Q and the S recompute), 0.52 TFLOP per layer at
// 8K and 4.6 TFLOP at 24K; this split executes 3.5 F (S and dP twice), so its useful-FLOP rate
// is at most 5/7 of what its tensor cores sustain. Compute-bound: per step a block streams
// 2·BC rows (16 KB at D 128) for 4·2·16·BC·D·4 warps = 2.1 MFLOP (dkdv), 128 FLOP/B of L2.
// Targets: A100 (312 TFLOP/s dense bf16) ≥ 60% counted (FA2's backward reaches ≈ 63% there with
// atomics for dQ); with the 7/5 recompute that needs ≈ 84% of peak executed, more than mma.sync
// kernels show: expect ≈ 45-55% counted. H100/H200: ≈ 990 TFLOP/s is wgmma's; mma.sync reaches
// ≈ 60-65% of it in a GEMM and FA2's backward about a third (as published), so ≈ 250-300
// TFLOP/s counted is this design's ceiling there (a wgmma/TMA kernel is the way to 60%). At
// 250 TFLOP/s one 24K sequence costs 18 ms per layer, 0.5 s for the 28 layers' attention backward.
// Registers (ptxas, sm_80 | sm_90a), no spills (the fatbin test checks): delta 27 | 27;
// dkdv 246 | 244 at D = 128, 232 | 212 at D = 64 (2 blocks = 8 warps per SM, register-bound);
// dq 164 | 163 at D = 128, 136 | 163 at D = 64 (3 blocks by registers; by shared memory 2 on
// A100's 164 KB, 3 on H100's 227 KB).
// Load balance: the dkdv grid is num_kv_heads x key tiles (2 x 128 = 256 blocks for one 8K
// sequence), each block's work proportional to the queries after its tile; sorted longest first
// that is about one wave on 132 SMs with the longest block ≈ 2x the mean: a lone 8K sequence
// leaves SMs idle at the end; packed micro-batches (several sequences, 16K+ tokens) fill them.
#include "attention_packed.cuh"

#define PACKED_DELTA_THREADS 256

namespace packed {

constexpr float LOG2E = 1.4426950408889634f;

// Rows of the streamed tile per step: 32 at D = 128 keeps S, dP and the dK/dV accumulators in
// registers without spills and the shared memory at 70 KB (2 blocks per SM on A100); 64 at D = 64.
#define PACKED_STREAM_ROWS(D) ((D) == 128 ? 32 : 64)

// delta[p] = Σ_d dout[p·D + d] · out[p·D + d] for p = row·num_heads + head (the [T, heads, D]
// layout of both): one warp per p, lane pairs of bf16 in order, then the butterfly.
__device__ __forceinline__ void delta_rows(const __nv_bfloat16* out, const __nv_bfloat16* dout, float* delta, long long pairs, int d) {
    const int lane = threadIdx.x % 32, warps = blockDim.x / 32;
    for (long long p = (long long)blockIdx.x * warps + threadIdx.x / 32; p < pairs; p += (long long)gridDim.x * warps) {
        const uint32_t* o = reinterpret_cast<const uint32_t*>(out + p * d);
        const uint32_t* g = reinterpret_cast<const uint32_t*>(dout + p * d);
        float acc = 0.0f;
        for (int i = lane; i < d / 2; i += 32) {
            const float2 a = unpack_bf16x2(o[i]), b = unpack_bf16x2(g[i]);
            acc = fmaf(a.x, b.x, acc);
            acc = fmaf(a.y, b.y, acc);
        }
        acc = warp_reduce_sum(acc);
        if (lane == 0) delta[p] = acc;
    }
}

// Q and dO rows of step `s` of a dkdv block (query head kvh·group + s / nq, rows from
// key0 + (s % nq)·BC) into buffer `buf`; returns this thread's share of the step's statistics
// (threads 0..BC-1: lse·log2e of row tid, +inf past the sequence; BC..2BC-1: delta, 0 past it).
template <int D, int BC>
__device__ __forceinline__ float dkdv_issue(Row<D>* s_q, Row<D>* s_do, const __nv_bfloat16* q, const __nv_bfloat16* dout,
                                            const float* lse, const float* delta, int s, int buf, int nq, int seq0, int key0,
                                            int len, int kvh, int group, int num_heads SCALERL_LOC) {
    const int h = kvh * group + s / nq, m0 = key0 + (s % nq) * BC, valid = min(BC, len - m0);
    const int qd = num_heads * D;
    load_rows<D, BC>(s_q + buf * BC, q, (size_t)seq0 + m0, valid, qd, h * D SCALERL_AT);
    load_rows<D, BC>(s_do + buf * BC, dout, (size_t)seq0 + m0, valid, qd, h * D SCALERL_AT);
    cp_async_commit();
    const int tid = threadIdx.x, r = tid % BC;
    if (tid >= 2 * BC) return 0.0f;
    const size_t at = ((size_t)seq0 + m0 + r) * num_heads + h;
    if (tid < BC) return r < valid ? lse[at] * LOG2E : INFINITY;
    return r < valid ? delta[at] : 0.0f;
}

template <int D>
__device__ __forceinline__ void dkdv(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, const __nv_bfloat16* dout,
                                     const float* lse, const float* delta, __nv_bfloat16* dk, __nv_bfloat16* dv, const int4* work,
                                     int num_heads, int num_kv_heads, float scale_log2, float scale) {
    constexpr int BN = PACKED_TILE, BC = PACKED_STREAM_ROWS(D);
    static_assert(2 * BC <= PACKED_THREADS, "one thread per statistic");
    EXTERN_SHARED(unsigned char, smem);
    Row<D>* s_k = reinterpret_cast<Row<D>*>(smem);
    Row<D>* s_v = s_k + BN;
    Row<D>* s_q = s_v + BN;       // [2][BC]
    Row<D>* s_do = s_q + 2 * BC;  // [2][BC]
    float* s_stat = reinterpret_cast<float*>(s_do + 2 * BC);  // [2][lse·log2e: BC | delta: BC]
    assert(blockDim.x == PACKED_THREADS);
    const int4 item = work[blockIdx.y];
    const int seq0 = item.x, key0 = item.y, nkeys = item.z, len = item.w;
    const int kvh = blockIdx.x, group = num_heads / num_kv_heads, kvd = num_kv_heads * D;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane >> 2, t = lane & 3;
    const int nq = (len - key0 + BC - 1) / BC, steps = group * nq;
    const int wkey = key0 + warp * 16;  // position of the warp's first key
    const bool active = warp * 16 < nkeys;  // warp-uniform

    load_rows<D, BN>(s_k, k, (size_t)seq0 + key0, nkeys, kvd, kvh * D);
    load_rows<D, BN>(s_v, v, (size_t)seq0 + key0, nkeys, kvd, kvh * D);
    cp_async_commit();
    float stat = dkdv_issue<D, BC>(s_q, s_do, q, dout, lse, delta, 0, 0, nq, seq0, key0, len, kvh, group, num_heads);
    if (tid < 2 * BC) s_stat[tid] = stat;

    float dka[D / 8][4], dva[D / 8][4];
#pragma unroll
    for (int j = 0; j < D / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) dka[j][e] = dva[j][e] = 0.0f;

    for (int s = 0; s < steps; ++s) {
        const int buf = s & 1;
        cp_async_wait<0>();
        __syncthreads();  // step s's rows and statistics visible; every warp is done with step s-1's buffer
        if (s + 1 < steps)
            stat = dkdv_issue<D, BC>(s_q, s_do, q, dout, lse, delta, s + 1, buf ^ 1, nq, seq0, key0, len, kvh, group, num_heads);
        const int m0 = key0 + (s % nq) * BC;
        // Skip a step whose queries all precede the warp's keys (P = 0 there).
        if (active && m0 + BC - 1 >= wkey) {
            const Row<D>* sq = s_q + buf * BC;
            const Row<D>* sdo = s_do + buf * BC;
            const float* st = s_stat + buf * 2 * BC;
            float p[BC / 8][4];  // S^T, then P^T: keys (rows) x queries (columns)
            mma_abt<D, BC>(p, s_k, warp * 16, sq);
            const bool diag = wkey + 15 > m0;  // some key of the warp after some query of the step
#pragma unroll
            for (int j = 0; j < BC / 8; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int col = 8 * j + 2 * t + (e & 1);
                    const float x = exp2f(fmaf(p[j][e], scale_log2, -st[col]));  // lse +inf past the sequence: 0
                    p[j][e] = (diag && wkey + g + 8 * (e >> 1) > m0 + col) ? 0.0f : x;
                }
            float ds[BC / 8][4];  // dP^T, then dS^T
            mma_abt<D, BC>(ds, s_v, warp * 16, sdo);
#pragma unroll
            for (int j = 0; j < BC / 8; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) ds[j][e] = p[j][e] * (ds[j][e] - st[BC + 8 * j + 2 * t + (e & 1)]);
            uint32_t af[BC / 16][4];
            to_a_frags<BC>(af, p);
            mma_ab<D, BC>(dva, af, sdo);
            to_a_frags<BC>(af, ds);
            mma_ab<D, BC>(dka, af, sq);
        }
        // The next step's statistics into the other buffer (free since this step's barrier).
        if (s + 1 < steps && tid < 2 * BC) s_stat[(buf ^ 1) * 2 * BC + tid] = stat;
    }

    // Epilogue: warp w alone reads rows 16w.. of s_k and s_v, and no load targets them any more.
    if (active) {
        store_rows<D>(dka, scale, s_k, warp * 16, dk, (size_t)seq0 + key0, nkeys, kvd, kvh * D);
        store_rows<D>(dva, 1.0f, s_v, warp * 16, dv, (size_t)seq0 + key0, nkeys, kvd, kvh * D);
    }
}

template <int D>
__device__ __forceinline__ void dq(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, const __nv_bfloat16* dout,
                                   const float* lse, const float* delta, __nv_bfloat16* dq, const int4* work, int num_heads,
                                   int num_kv_heads, float scale_log2, float scale) {
    constexpr int BM = PACKED_TILE, BC = PACKED_STREAM_ROWS(D);
    EXTERN_SHARED(unsigned char, smem);
    Row<D>* s_q = reinterpret_cast<Row<D>*>(smem);
    Row<D>* s_do = s_q + BM;
    Row<D>* s_k = s_do + BM;     // [2][BC]
    Row<D>* s_v = s_k + 2 * BC;  // [2][BC]
    assert(blockDim.x == PACKED_THREADS);
    const int4 item = work[blockIdx.y];
    const int seq0 = item.x, pos0 = item.y, rows = item.z;
    const int h = blockIdx.x, kvh = h / (num_heads / num_kv_heads);
    const int qd = num_heads * D, kvd = num_kv_heads * D;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane >> 2, t = lane & 3;
    const int kv_end = pos0 + rows, n_tiles = (kv_end + BC - 1) / BC;
    const int wrow = pos0 + warp * 16;  // position of the warp's first row
    const bool active = warp * 16 < rows;  // warp-uniform

    load_rows<D, BM>(s_q, q, (size_t)seq0 + pos0, rows, qd, h * D);
    load_rows<D, BM>(s_do, dout, (size_t)seq0 + pos0, rows, qd, h * D);
    load_rows<D, BC>(s_k, k, (size_t)seq0, min(BC, kv_end), kvd, kvh * D);
    load_rows<D, BC>(s_v, v, (size_t)seq0, min(BC, kv_end), kvd, kvh * D);
    cp_async_commit();
    // Rows g and g+8 of the warp's slab: lse·log2e (+inf past the sequence: P = 0) and delta.
    float l2[2], dl[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int row = warp * 16 + g + 8 * r;
        const size_t at = ((size_t)seq0 + pos0 + row) * num_heads + h;
        l2[r] = row < rows ? lse[at] * LOG2E : INFINITY;
        dl[r] = row < rows ? delta[at] : 0.0f;
    }
    float acc[D / 8][4];
#pragma unroll
    for (int j = 0; j < D / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

    for (int n = 0; n < n_tiles; ++n) {
        const int buf = n & 1, key0 = n * BC;
        cp_async_wait<0>();
        __syncthreads();  // tile n visible; every warp is done with tile n-1's buffer
        if (n + 1 < n_tiles) {
            const int valid = min(BC, kv_end - key0 - BC);
            load_rows<D, BC>(s_k + (buf ^ 1) * BC, k, (size_t)seq0 + key0 + BC, valid, kvd, kvh * D);
            load_rows<D, BC>(s_v + (buf ^ 1) * BC, v, (size_t)seq0 + key0 + BC, valid, kvd, kvh * D);
            cp_async_commit();
        }
        // Skip a key tile wholly after the warp's last row. Zero-filled keys past kv_end lie after
        // every valid row, so the causal mask (on whenever the tile crosses the warp's first row)
        // zeroes them.
        if (active && key0 <= wrow + 15) {
            const Row<D>* sk = s_k + buf * BC;
            float p[BC / 8][4];  // S, then P: rows x keys
            mma_abt<D, BC>(p, s_q, warp * 16, sk);
            const bool diag = key0 + BC - 1 > wrow;
#pragma unroll
            for (int j = 0; j < BC / 8; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const float x = exp2f(fmaf(p[j][e], scale_log2, -l2[e >> 1]));
                    p[j][e] = (diag && key0 + 8 * j + 2 * t + (e & 1) > wrow + g + 8 * (e >> 1)) ? 0.0f : x;
                }
            float ds[BC / 8][4];  // dP, then dS
            mma_abt<D, BC>(ds, s_do, warp * 16, s_v + buf * BC);
#pragma unroll
            for (int j = 0; j < BC / 8; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) ds[j][e] = p[j][e] * (ds[j][e] - dl[e >> 1]);
            uint32_t af[BC / 16][4];
            to_a_frags<BC>(af, ds);
            mma_ab<D, BC>(acc, af, sk);
        }
    }

    // Epilogue: warp w alone reads rows 16w.. of s_q, and no load targets it any more.
    if (active) store_rows<D>(acc, scale, s_q, warp * 16, dq, (size_t)seq0 + pos0, rows, qd, h * D);
}

}  // namespace packed

extern "C" __global__ void __launch_bounds__(PACKED_DELTA_THREADS)
    attention_packed_bwd_delta_bf16(const __nv_bfloat16* out, const __nv_bfloat16* dout, float* delta, long long pairs, int head_dim) {
    packed::delta_rows(out, dout, delta, pairs, head_dim);
}

#define PACKED_BWD_KERNELS(D)                                                                                               \
    extern "C" __global__ void __launch_bounds__(PACKED_THREADS) attention_packed_bwd_dkdv_d##D##_bf16(                     \
        const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, const __nv_bfloat16* dout, const float* lse, \
        const float* delta, __nv_bfloat16* dk, __nv_bfloat16* dv, const int4* work, int num_heads, int num_kv_heads,        \
        float scale_log2, float scale) {                                                                                    \
        packed::dkdv<D>(q, k, v, dout, lse, delta, dk, dv, work, num_heads, num_kv_heads, scale_log2, scale);               \
    }                                                                                                                       \
    extern "C" __global__ void __launch_bounds__(PACKED_THREADS) attention_packed_bwd_dq_d##D##_bf16(                       \
        const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, const __nv_bfloat16* dout, const float* lse, \
        const float* delta, __nv_bfloat16* dq, const int4* work, int num_heads, int num_kv_heads, float scale_log2,          \
        float scale) {                                                                                                      \
        packed::dq<D>(q, k, v, dout, lse, delta, dq, work, num_heads, num_kv_heads, scale_log2, scale);                     \
    }
PACKED_BWD_KERNELS(64)
PACKED_BWD_KERNELS(128)
SCALERL_EXPORT_KERNEL(attention_packed_bwd_delta_bf16)
SCALERL_EXPORT_KERNEL(attention_packed_bwd_dkdv_d64_bf16)
SCALERL_EXPORT_KERNEL(attention_packed_bwd_dq_d64_bf16)
SCALERL_EXPORT_KERNEL(attention_packed_bwd_dkdv_d128_bf16)
SCALERL_EXPORT_KERNEL(attention_packed_bwd_dq_d128_bf16)
