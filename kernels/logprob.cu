// logprob.cu — the fused lm_head log-prob and entropy, forward and backward, on tensor cores
// (mma.sync m16n8k16 bf16 -> f32, ldmatrix, cp.async: the sm_80 path, also what runs on sm_90
// here), one vocabulary chunk at a time: the [rows x vocab] logits are never materialised
// (a 24K sequence's would be 7.5 GB in bf16).
//
//   for row r with hidden state x_r, target y_r, temperature T: z_v = (x_r · W_v) / T
//     lse = ln Σ_v e^{z_v},  logp = z_y − lse,  μ = Σ_v p_v z_v,  entropy = lse − μ
//   backward, with upstream gradients g = ∂L/∂logp and e = ∂L/∂entropy per row:
//     D_v = ∂L/∂(x·W_v) = (g ([v = y] − p_v) + e p_v (μ − z_v)) / T
//     d_x = Σ_v D_v W_v,   d_W_v += Σ_r D_{r,v} x_r
// CPU reference: src/ops/cpu/logprob.rs (logprobs_forward, logprobs_backward).
//
// Layout: x [T, H] bf16 (the scored rows, gathered; H % 8 == 0), W (lm_head) [V, H] bf16,
//   targets [T] int32; every per-row value f32 [T]. The vocabulary is cut into chunks of
//   `cmax` columns (a multiple of LP_BN; the last chunk may be shorter).
//   Forward: partials [n_chunks, T] float4 (m, s, sd, 0) in log2 units — per row and chunk, with
//   u_v = z_v · log2 e: m = max u, s = Σ 2^{u−m}, sd = Σ 2^{u−m} (u − m) (sd relative to the max,
//   so the entropy is not a difference of two large numbers) — and target_u [T] (u of the
//   target, written by the one thread that owns its column). The combine kernel merges the
//   chunks in order 0, 1, … : lse = (m + log2 s) ln 2, entropy = (log2 s − sd/s) ln 2,
//   μ = (m + sd/s) ln 2, logp = (u_y − m − log2 s) ln 2.
//   Backward, per chunk c (the launcher runs the chunks in order): dz [T, cmax] bf16 (D of the
//   chunk, zero past the vocabulary; the only [T x chunk] buffer), then
//   d_lm_head[chunk] += dzᵀ · x (f32 [V, H], accumulated) and dx (+)= dz · W[chunk]
//   (f32 [T, H], written by chunk 0, accumulated by the others). Deterministic: every output
//   element is computed by one thread, reducing in a fixed order (the k loop, then the chunks
//   in launch order); no atomics. D is rounded to bf16 for the two gradient GEMMs (as a cuBLAS
//   backward would), the logits and statistics stay f32.
//
// Kernels (block = LP_THREADS = 256 threads, asserted; dynamic smem = the pipeline, below):
//   logprob_fwd_partials_bf16  grid (ceil(T/128), n_chunks): a 128-row tile against every
//                              128-column vocabulary tile of its chunk, statistics in registers
//   logprob_combine            grid ceil(T/256), block 256: the chunks of a row, in order
//   logprob_dlogits_bf16       grid (ceil(T/128), cmax/128): one 128x128 tile of dz
//   logprob_dweight_bf16       grid (ceil(width/128), ceil(H/128)): d_lm_head tile, k = rows
//   logprob_dhidden_bf16       grid (ceil(T/128), ceil(H/128)): dx tile, k = the chunk's columns
//   logprob_scatter_rows_bf16  grid T, block 256: dx rows (f32) -> bf16 rows of d_hidden
// The four GEMM kernels share one mainloop: a 128x128 output tile, k tiles of 32, a 3-stage
// cp.async pipeline (one barrier per k tile), 8 warps as 4 (M) x 2 (N), each warp 32x64 =
// 2 m16 x 8 n8 mma tiles (64 f32 accumulators a thread). Operands are either K-contiguous in
// global memory (x and W in the logits: smem [128][32+8], ldmatrix) or M/N-contiguous (dz as
// dzᵀ, x and W as the B of the gradients: smem [32][128+8], ldmatrix.trans). Rows are padded
// by 8 bf16 (16 B): row strides 80 B and 272 B put the 8 rows an ldmatrix reads in 8 different
// 16-byte bank groups. Out-of-range rows and k columns are zero-filled by cp.async (src-size 0:
// nothing is read). Dynamic smem: 3 x (A + B tile) = 61,440 B (logits), 52,224 B (dweight),
// 56,832 B (dhidden); the forward adds 4 KB static for the cross-warp merge.
//   Forward epilogue per 128x128 tile: each thread owns 4 rows x 16 columns; per row it takes
//   the tile max of its 16 values, rescales its running (s, sd) once, and adds 16 exp2 terms
//   (online softmax per thread, no shuffles per tile). At the end of the chunk the 4 threads of
//   a quad merge (shfl_xor 1, 2) and the two warps of a row slab merge through smem, in a
//   fixed order.
//
// Napkin math (R1-Distill-Qwen-1.5B: H = 1536, V = 151936; T = 16K rows):
//   forward 2·T·V·H = 7.65 TFLOP; the W chunk (8192 x 1536 x 2 B = 25 MB) stays in L2 while all
//   row tiles of the grid's wave sweep it, x (50 MB) is re-read once per chunk (19 x 50 MB) —
//   ~1.5 GB of HBM traffic (0.5 ms at 3 TB/s) against ≥ 8 ms of tensor work: compute-bound.
//   The epilogue adds per logit 1 exp2 (MUFU) + ~8 FP32 ops: 2.5 G logits ≈ 0.7 ms of MUFU on
//   an H100, mostly hidden behind the other warps' mma: ≈ +5%.
//   backward 6·T·V·H = 23 TFLOP (logits recomputed: the price of never storing them; 4·T·V·H
//   of it are the two gradient GEMMs) + dz written once and read twice (3 x T·V·2 B = 15 GB,
//   streamed by compute-bound GEMMs) + dx f32 read-modify-write per chunk (3.8 GB).
//   Against the lm_head GEMMs alone (cuBLASLt: 2·T·V·H forward, 4·T·V·H backward): the forward
//   is ≈ 1.05 x (our mma.sync GEMM time / cuBLAS time), the backward ≥ 1.5 x that ratio (the
//   recompute), forward + backward ≥ 8/6 = 1.33 x it. mma.sync is the A100's tensor-core path
//   (ours ≈ 70-80% of cuBLAS there: forward ≈ 1.3-1.5x its GEMM); on H100/H200 cuBLAS uses wgmma
//   (≈ 800 TFLOP/s measured here) and mma.sync tops out near half of that, so there the 1.3x
//   target needs a wgmma mainloop (the epilogues carry over). benches/logprob.rs measures it.
// Registers (ptxas, nvcc 13.0, sm_80 / sm_90a), capped at 128 by __launch_bounds__(256, 2) for
// two blocks of 8 warps per SM (131 KB of smem for two forward blocks: fits A100's 164 KB):
// fwd_partials 128 / 128, dlogits 125 / 124, dweight 120 / 124, dhidden 121 / 122, combine 31,
// scatter 24; no spills, no stack frame (uncapped, the forward took 139).
#include "common.cuh"

#define LP_THREADS 256
#define LP_BM 128
#define LP_BN 128
#define LP_BK 32
#define LP_STAGES 3
#define LP_PAD 8

namespace lp {

constexpr int BM = LP_BM, BN = LP_BN, BK = LP_BK, STAGES = LP_STAGES, PAD = LP_PAD, THREADS = LP_THREADS;
constexpr float LOG2E = 1.4426950408889634f, LN2 = 0.69314718055994531f;
constexpr float NEG_BIG = -3.0e38f;  // finite stand-in for -inf where 0 * -inf must be 0
typedef __nv_bfloat16 bf16;

// One tile of R rows x C bf16 of a row-major global matrix (row stride ld) into smem
// [R][C + PAD]: rows r0.., columns c0..; rows at or past nr and 8-column chunks at or past nc
// (a multiple of 8) are zero-filled without reading.
template <int R, int C>
__device__ __forceinline__ void load_tile(bf16* s, const bf16* g, int ld, int r0, int nr, int c0, int nc SCALERL_LOC) {
    constexpr int CH = C / 8;
    static_assert((R * CH) % THREADS == 0, "tile chunks must split evenly over the block");
#pragma unroll
    for (int i = 0; i < R * CH / THREADS; ++i) {
        const int idx = threadIdx.x + i * THREADS;
        const int r = idx / CH, c = (idx % CH) * 8;
        const bool valid = r0 + r < nr && c0 + c < nc;
        const bf16* src = valid ? g + (size_t)(r0 + r) * ld + c0 + c : g;
        cp_async_16_zfill(s + r * (C + PAD) + c, src, valid SCALERL_AT);
    }
}

// The block GEMM C[128 x 128] = Σ_k A[m, k] B[k, n]. A_K: A is K-contiguous in global memory
// ([M][K], smem [BM][BK+PAD]) rather than M-contiguous ([K][M], smem [BK][BM+PAD]); B_K: B is
// K-contiguous ([N][K], smem [BN][BK+PAD]) rather than N-contiguous ([K][N], smem [BK][BN+PAD]).
template <bool A_K, bool B_K>
struct Gemm {
    static constexpr int A_ELEMS = A_K ? BM * (BK + PAD) : BK * (BM + PAD);
    static constexpr int B_ELEMS = B_K ? BN * (BK + PAD) : BK * (BN + PAD);
    static constexpr int STAGE = A_ELEMS + B_ELEMS;
    static constexpr int SMEM_BYTES = STAGES * STAGE * 2;

    // acc += the two k16 steps of one stage, for warp (wm, wn): rows wm*32.., columns wn*64..
    static __device__ __forceinline__ void mma_stage(float (&acc)[2][8][4], const bf16* sa, const bf16* sb, int wm, int wn,
                                                     int lane SCALERL_LOC) {
        const int lr = lane % 8, li = lane / 8;  // ldmatrix: lane l gives row l % 8 of matrix l / 8
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
            // A fragments: matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15) of each m16 tile
            uint32_t a[2][4];
#pragma unroll
            for (int mi = 0; mi < 2; ++mi) {
                const int m = wm * 32 + mi * 16;
                if (A_K)
                    ldmatrix_x4(a[mi], sa + (m + lr + 8 * (li & 1)) * (BK + PAD) + kk * 16 + 8 * (li >> 1) SCALERL_AT);
                else
                    ldmatrix_x4_trans(a[mi], sa + (kk * 16 + lr + 8 * (li >> 1)) * (BM + PAD) + m + 8 * (li & 1) SCALERL_AT);
            }
#pragma unroll
            for (int jp = 0; jp < 4; ++jp) {
                // B fragments of n8 tiles 2jp, 2jp+1: (n 0-7 | 8-15) x (k 0-7 | 8-15)
                const int n = wn * 64 + jp * 16;
                uint32_t b[4];
                if (B_K)
                    ldmatrix_x4(b, sb + (n + lr + 8 * (li >> 1)) * (BK + PAD) + kk * 16 + 8 * (li & 1) SCALERL_AT);
                else
                    ldmatrix_x4_trans(b, sb + (kk * 16 + lr + 8 * (li & 1)) * (BN + PAD) + n + 8 * (li >> 1) SCALERL_AT);
                const uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
#pragma unroll
                for (int mi = 0; mi < 2; ++mi) {
                    mma_m16n8k16_bf16(acc[mi][2 * jp], a[mi], b0, acc[mi][2 * jp] SCALERL_AT);
                    mma_m16n8k16_bf16(acc[mi][2 * jp + 1], a[mi], b1, acc[mi][2 * jp + 1] SCALERL_AT);
                }
            }
        }
    }

    // `tiles` output tiles of `ktiles` k tiles each, as one stream of k tiles through the
    // pipeline (the next output tile's first k tiles load during the current one's last).
    // load(i, a, b): issue the cp.async of stream item i into stage buffers a, b (every thread);
    // epilogue(tile): after the last k tile of `tile`, with its accumulators in acc.
    template <class Load, class Epilogue>
    static __device__ __forceinline__ void run(int tiles, int ktiles, bf16* smem, float (&acc)[2][8][4], Load load,
                                               Epilogue epilogue) {
        const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, wm = warp % 4, wn = warp / 4;
        const int total = tiles * ktiles;
        auto stage_a = [&](int i) { return smem + (i % STAGES) * STAGE; };
        auto stage_b = [&](int i) { return smem + (i % STAGES) * STAGE + A_ELEMS; };
#pragma unroll
        for (int s = 0; s < STAGES - 1; ++s) {
            if (s < total) load(s, stage_a(s), stage_b(s));
            cp_async_commit();
        }
        for (int i = 0; i < total; ++i) {
            cp_async_wait<STAGES - 2>();
            // k tile i has landed for every thread, and every warp is done with the stage that
            // the prefetch below overwrites (item i - 1's)
            __syncthreads();
            if (i + STAGES - 1 < total) load(i + STAGES - 1, stage_a(i + STAGES - 1), stage_b(i + STAGES - 1));
            cp_async_commit();
            const int kt = i % ktiles;
            if (kt == 0) {
#pragma unroll
                for (int mi = 0; mi < 2; ++mi)
#pragma unroll
                    for (int j = 0; j < 8; ++j) acc[mi][j][0] = acc[mi][j][1] = acc[mi][j][2] = acc[mi][j][3] = 0.0f;
            }
            mma_stage(acc, stage_a(i), stage_b(i), wm, wn, lane);
            if (kt == ktiles - 1) epilogue(i / ktiles);
        }
        cp_async_wait<0>();
    }
};

// Online-softmax state of one row in log2 units: max m, s = Σ 2^{u−m}, sd = Σ 2^{u−m} (u − m).
struct Stats {
    float m, s, sd;
};

// The state of the union of two disjoint sets of columns. Empty states (m = -inf, s = 0) are
// skipped, so no -inf - -inf or 0 * inf appears.
__device__ __forceinline__ Stats merge(Stats a, Stats b) {
    const float m = fmaxf(a.m, b.m);
    Stats r{m, 0.0f, 0.0f};
    if (a.s > 0.0f) {
        const float d = a.m - m, f = exp2f(d);
        r.s += f * a.s;
        r.sd += f * fmaf(d, a.s, a.sd);
    }
    if (b.s > 0.0f) {
        const float d = b.m - m, f = exp2f(d);
        r.s += f * b.s;
        r.sd += f * fmaf(d, b.s, b.sd);
    }
    return r;
}

// Adds this thread's 16 values u of one row in one tile (-inf where the column is past the
// vocabulary) to its running state: one rescale for the tile, then one exp2 per value.
__device__ __forceinline__ void add_tile(Stats& st, const float (&u)[16]) {
    float tmax = -INFINITY;
#pragma unroll
    for (int i = 0; i < 16; ++i) tmax = fmaxf(tmax, u[i]);
    if (tmax == -INFINITY) return;  // no column of this thread is in the vocabulary
    if (tmax > st.m) {
        if (st.s > 0.0f) {
            const float d = st.m - tmax, f = exp2f(d);
            st.sd = f * fmaf(d, st.s, st.sd);
            st.s *= f;
        }
        st.m = tmax;
    }
#pragma unroll
    for (int i = 0; i < 16; ++i) {
        const float d = u[i] - st.m, p = exp2f(d);  // past the vocabulary: d = -inf, p = 0
        st.s += p;
        st.sd = fmaf(p, fmaxf(d, NEG_BIG), st.sd);
    }
}

}  // namespace lp

// Forward, per (128-row tile, vocabulary chunk): partials[chunk][row] and target_u[row] for the
// rows whose target falls in the chunk. scale_log2 = log2(e) / temperature.
extern "C" __global__ void __launch_bounds__(LP_THREADS, 2)
    logprob_fwd_partials_bf16(const __nv_bfloat16* x, const __nv_bfloat16* w, const int* targets, int T, int H, int V, int cmax,
                              float scale_log2, float4* partials, float* target_u) {
    using namespace lp;
    typedef Gemm<true, true> G;
    EXTERN_SHARED(bf16, smem);
    SHARED(float4, s_merge, [2][BM]);  // (m, s, sd) of each row from the two warps of its slab
    assert(blockDim.x == THREADS);
    const int m0 = blockIdx.x * BM, chunk = blockIdx.y, c0 = chunk * cmax;
    const int c_end = min(V, c0 + cmax), tiles = (c_end - c0 + BN - 1) / BN, ktiles = (H + BK - 1) / BK;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, wm = warp % 4, wn = warp / 4, g = lane >> 2, t = lane & 3;

    // Rows g, g+8 of the warp's two m16 tiles: state, and the target's column relative to the
    // thread's first column of a tile (set per tile below).
    Stats st[4];
    int y[4];
    float uy[4];
    unsigned own = 0;  // bit i: this thread saw row i's target
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        st[i] = Stats{-INFINITY, 0.0f, 0.0f};
        const int r = m0 + wm * 32 + (i >> 1) * 16 + g + 8 * (i & 1);
        y[i] = r < T ? targets[r] : -1;
        assert(y[i] < V);  // the host checks; an unowned target would leave target_u unwritten
        uy[i] = 0.0f;
    }
    float acc[2][8][4];
    auto load = [&](int item, bf16* sa, bf16* sb) {
        const int n0 = c0 + (item / ktiles) * BN, k0 = (item % ktiles) * BK;
        load_tile<BM, BK>(sa, x, H, m0, T, k0, H);
        load_tile<BN, BK>(sb, w, H, n0, c_end, k0, H);
    };
    auto epilogue = [&](int tile) {
        const int col0 = c0 + tile * BN + wn * 64 + 2 * t;  // column of (j = 0, pair element 0)
        const int left = c_end - col0;                       // (j, q) is in the vocabulary iff 8j + q < left
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int mi = i >> 1, hi = i & 1;
            float u[16];
#pragma unroll
            for (int j = 0; j < 8; ++j)
#pragma unroll
                for (int q = 0; q < 2; ++q) u[2 * j + q] = 8 * j + q < left ? acc[mi][j][2 * hi + q] * scale_log2 : -INFINITY;
            add_tile(st[i], u);
            const int dy = y[i] - col0;
            if (dy >= 0 && dy < 64 && (dy & 6) == 0) {
#pragma unroll
                for (int j = 0; j < 8; ++j)
#pragma unroll
                    for (int q = 0; q < 2; ++q)
                        if (8 * j + q == dy) uy[i] = u[2 * j + q];
                own |= 1u << i;
            }
        }
    };
    G::run(tiles, ktiles, smem, acc, load, epilogue);

    // Merge the quad's 4 column sets of each row, then the two warps of the slab, in that order.
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int o = 1; o <= 2; o <<= 1) {
            const Stats other{__shfl_xor_sync(0xffffffffu, st[i].m, o), __shfl_xor_sync(0xffffffffu, st[i].s, o),
                              __shfl_xor_sync(0xffffffffu, st[i].sd, o)};
            st[i] = merge(st[i], other);
        }
        const int row = wm * 32 + (i >> 1) * 16 + g + 8 * (i & 1);
        if (t == 0) s_merge[wn][row] = make_float4(st[i].m, st[i].s, st[i].sd, 0.0f);
        if ((own >> i) & 1u) target_u[m0 + row] = uy[i];  // one owner in the grid (y in this chunk)
    }
    __syncthreads();
    if (threadIdx.x < BM && m0 + threadIdx.x < T) {
        const float4 a = s_merge[0][threadIdx.x], b = s_merge[1][threadIdx.x];
        const Stats r = merge(Stats{a.x, a.y, a.z}, Stats{b.x, b.y, b.z});
        partials[(size_t)chunk * T + m0 + threadIdx.x] = make_float4(r.m, r.s, r.sd, 0.0f);
    }
}

// Per row: the chunks' partial states merged in chunk order, and the row's results.
extern "C" __global__ void logprob_combine(const float4* partials, const float* target_u, int T, int n_chunks, float* logp,
                                           float* entropy, float* lse, float* mean_z) {
    using namespace lp;
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= T) return;
    Stats st{-INFINITY, 0.0f, 0.0f};
    for (int c = 0; c < n_chunks; ++c) {
        const float4 p = partials[(size_t)c * T + r];
        st = merge(st, Stats{p.x, p.y, p.z});
    }
    const float log2s = log2f(st.s), q = st.sd / st.s;
    lse[r] = (st.m + log2s) * LN2;
    logp[r] = ((target_u[r] - st.m) - log2s) * LN2;
    entropy[r] = (log2s - q) * LN2;
    mean_z[r] = (st.m + q) * LN2;
}

// Backward, step 1 of a chunk: dz[r][c] = D of row r, column c0 + c (bf16; 0 past V).
// lse, mean_z from the forward; d_entropy may be NULL (no entropy term).
extern "C" __global__ void __launch_bounds__(LP_THREADS, 2)
    logprob_dlogits_bf16(const __nv_bfloat16* x, const __nv_bfloat16* w, const int* targets, int T, int H, int V, int c0, int cmax,
                         float inv_temp, const float* lse, const float* mean_z, const float* d_logp, const float* d_entropy,
                         __nv_bfloat16* dz) {
    using namespace lp;
    typedef Gemm<true, true> G;
    EXTERN_SHARED(bf16, smem);
    assert(blockDim.x == THREADS);
    const int m0 = blockIdx.x * BM, n0 = c0 + blockIdx.y * BN, ktiles = (H + BK - 1) / BK;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, wm = warp % 4, wn = warp / 4, g = lane >> 2, t = lane & 3;
    const float scale_log2 = inv_temp * LOG2E;
    float acc[2][8][4];
    auto load = [&](int item, bf16* sa, bf16* sb) {
        const int k0 = item * BK;
        load_tile<BM, BK>(sa, x, H, m0, T, k0, H);
        load_tile<BN, BK>(sb, w, H, n0, V, k0, H);
    };
    auto epilogue = [&](int) {
        const int col0 = n0 + wn * 64 + 2 * t;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int mi = i >> 1, hi = i & 1, r = m0 + wm * 32 + mi * 16 + g + 8 * hi;
            if (r >= T) continue;
            const float lse2 = lse[r] * LOG2E, mu = mean_z[r], gl = d_logp[r], ge = d_entropy ? d_entropy[r] : 0.0f;
            const int y = targets[r];
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                float dv[2];
#pragma unroll
                for (int q = 0; q < 2; ++q) {
                    const int col = col0 + 8 * j + q;
                    const float a = acc[mi][j][2 * hi + q], z = a * inv_temp;
                    const float p = exp2f(fmaf(a, scale_log2, -lse2));
                    const float d = inv_temp * (gl * ((col == y ? 1.0f : 0.0f) - p) + ge * p * (mu - z));
                    dv[q] = col < V ? d : 0.0f;
                }
                *reinterpret_cast<uint32_t*>(dz + (size_t)r * cmax + (col0 - c0) + 8 * j) = pack_bf16x2(dv[0], dv[1]);
            }
        }
    };
    G::run(1, ktiles, smem, acc, load, epilogue);
}

// Backward, step 2 of a chunk: dw[v][h] += Σ_r dz[r][v] x[r][h] for the chunk's `width` rows of
// the lm_head gradient (dw points at the chunk's first row; f32 [width, H]).
extern "C" __global__ void __launch_bounds__(LP_THREADS, 2)
    logprob_dweight_bf16(const __nv_bfloat16* dz, const __nv_bfloat16* x, int T, int H, int cmax, int width, float* dw) {
    using namespace lp;
    typedef Gemm<false, false> G;
    EXTERN_SHARED(bf16, smem);
    assert(blockDim.x == THREADS);
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN, ktiles = (T + BK - 1) / BK;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, wm = warp % 4, wn = warp / 4, g = lane >> 2, t = lane & 3;
    float acc[2][8][4];
    auto load = [&](int item, bf16* sa, bf16* sb) {
        const int k0 = item * BK;
        load_tile<BK, BM>(sa, dz, cmax, k0, T, m0, cmax);  // dzᵀ: k = rows, m = vocabulary
        load_tile<BK, BN>(sb, x, H, k0, T, n0, H);
    };
    auto epilogue = [&](int) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int mi = i >> 1, hi = i & 1, r = m0 + wm * 32 + mi * 16 + g + 8 * hi;
            if (r >= width) continue;
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const int col = n0 + wn * 64 + 8 * j + 2 * t;  // even, and H % 8 == 0: col + 1 < H too
                if (col < H) {
                    float2* o = reinterpret_cast<float2*>(dw + (size_t)r * H + col);
                    const float2 old = *o;
                    *o = make_float2(old.x + acc[mi][j][2 * hi], old.y + acc[mi][j][2 * hi + 1]);
                }
            }
        }
    };
    G::run(1, ktiles, smem, acc, load, epilogue);
}

// Backward, step 3 of a chunk: dx[r][h] (+)= Σ_c dz[r][c] w[c][h] over the chunk's `width`
// lm_head rows (w points at the chunk's first row); `accumulate` = 0 overwrites (chunk 0).
extern "C" __global__ void __launch_bounds__(LP_THREADS, 2)
    logprob_dhidden_bf16(const __nv_bfloat16* dz, const __nv_bfloat16* w, int T, int H, int cmax, int width, float* dx,
                         int accumulate) {
    using namespace lp;
    typedef Gemm<true, false> G;
    EXTERN_SHARED(bf16, smem);
    assert(blockDim.x == THREADS);
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN, ktiles = (width + BK - 1) / BK;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, wm = warp % 4, wn = warp / 4, g = lane >> 2, t = lane & 3;
    float acc[2][8][4];
    auto load = [&](int item, bf16* sa, bf16* sb) {
        const int k0 = item * BK;
        load_tile<BM, BK>(sa, dz, cmax, m0, T, k0, cmax);  // columns past width are zeros in dz
        load_tile<BK, BN>(sb, w, H, k0, width, n0, H);
    };
    auto epilogue = [&](int) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int mi = i >> 1, hi = i & 1, r = m0 + wm * 32 + mi * 16 + g + 8 * hi;
            if (r >= T) continue;
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                const int col = n0 + wn * 64 + 8 * j + 2 * t;
                if (col < H) {
                    float2* o = reinterpret_cast<float2*>(dx + (size_t)r * H + col);
                    float2 v = make_float2(acc[mi][j][2 * hi], acc[mi][j][2 * hi + 1]);
                    if (accumulate) {
                        const float2 old = *o;
                        v = make_float2(old.x + v.x, old.y + v.y);
                    }
                    *o = v;
                }
            }
        }
    };
    G::run(1, ktiles, smem, acc, load, epilogue);
}

// d_hidden[rows[r]] = bf16(dx[r]) for r < T (the other rows of d_hidden are the caller's);
// rows: distinct, each in [0, total_rows) (the host checks, the kernel asserts).
extern "C" __global__ void logprob_scatter_rows_bf16(const float* dx, const int* rows, int T, int H, int total_rows,
                                                     __nv_bfloat16* d_hidden) {
    const int r = blockIdx.x;
    if (r >= T) return;
    assert(rows[r] >= 0 && rows[r] < total_rows);
    const size_t dst = (size_t)rows[r] * H;
    for (int h = 2 * threadIdx.x; h < H; h += 2 * blockDim.x) {
        const float2 v = *reinterpret_cast<const float2*>(dx + (size_t)r * H + h);
        *reinterpret_cast<uint32_t*>(d_hidden + dst + h) = pack_bf16x2(v.x, v.y);
    }
}

SCALERL_EXPORT_KERNEL(logprob_fwd_partials_bf16)
SCALERL_EXPORT_KERNEL(logprob_combine)
SCALERL_EXPORT_KERNEL(logprob_dlogits_bf16)
SCALERL_EXPORT_KERNEL(logprob_dweight_bf16)
SCALERL_EXPORT_KERNEL(logprob_dhidden_bf16)
SCALERL_EXPORT_KERNEL(logprob_scatter_rows_bf16)
