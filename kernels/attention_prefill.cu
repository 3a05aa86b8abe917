// attention_prefill.cu — FlashAttention-2-style causal GQA attention for chunks of new tokens
// (prefill and chunked prefill) over the paged KV cache, on tensor cores (mma.sync m16n8k16 bf16,
// ldmatrix, cp.async: the sm_80 path, also what runs on sm_90 here).
//
//   for sequence s with chunk (start, len), query row at position p in start .. start+len and
//   query head h (KV head h / (num_heads / num_kv_heads)):
//     s_j = q·k_j * scale for j = 0..=p,   out = Σ_j softmax(s)_j v_j,   lse = ln Σ_j exp(s_j)
//   (f32 scores, online softmax and accumulators; P is rounded to bf16 for the P·V product.)
//   The chunk's own K/V are already in the cache (kv_cache_write.cu); causality is j <= p.
//   lse is the natural log-sum-exp of the scaled scores, kept for the backward pass; inference
//   passes NULL and skips it.
//
// CPU reference: src/ops/cpu/attention.rs `paged_attention` (out); the tests compute lse.
// Layout: q, out [tokens, num_heads * D] bf16 (rows of a chunk consecutive, chunks in the order
//   of the block tables); lse [tokens, num_heads] f32 or NULL; k_cache, v_cache [num_blocks, block_size,
//   num_kv_heads, D] bf16, the paged layout kv_cache_write and the CPU cache use: one token's K
//   row of one head is D*2 = 128 or 256 contiguous bytes, so a K/V tile row is 8 or 16 aligned
//   16-byte cp.async chunks whatever the block size (kept as is: kv_cache_write, the CPU cache
//   and the decode kernels share it);
//   block_tables [num_seqs, max_blocks] int32; work [items] int4, built on the host
//   (src/ops/cuda/attention_prefill.rs): (token of the tile's first row, its position,
//   valid rows 1..64, sequence), the tiles with the most keys first so the long ones do not
//   form the tail of the grid.
// D = 64 or 128: prefill_attention_d64_bf16 / prefill_attention_d128_bf16.
//
// Launch: grid = (items, num_heads), block = PREFILL_THREADS = 128 (asserted), no dynamic smem.
// One block = one 64-row query tile of one head: warp w owns rows 16w..16w+15 (one m16 slab),
// so a head's GQA group re-reads the same K/V tiles from L2 (prefill is compute-bound; packing
// the group into M would save L2 traffic, not FLOPs). Keys are walked in tiles of 64 from 0 to
// the tile's last visible key; tiles past it are never loaded.
//   Shared memory (static): s_k and s_v, 64 rows x (D + 8) bf16 each, and the cache slots of
//   two key tiles (512 B): 35,328 B at D = 128, 18,944 B at D = 64. The slots of tile n+1 are
//   looked up (block table, one division) by 64 threads, one key each, while tile n is in use.
//   K/V rows are padded by 8 bf16 (16 B) so the 8 rows an ldmatrix reads fall in 8 different
//   16-byte bank groups (row stride 272 or 144 B = 16 mod 128): no bank conflicts for ldmatrix,
//   ldmatrix.trans, or the fragment stores of the epilogue.
//   Q goes through s_v once: ldmatrix'd into registers (D/16 A fragments, 32 registers at
//   D = 128) before V tile 0 overwrites it.
//   Pipeline (FA2's): K tile n+1 is in flight during softmax and P·V of tile n, V tile n during
//   Q·K^T of tile n; one buffer each, two barriers per tile. Per key tile, per warp:
//   S[16x64] = Q·K^T (D/16 x 8 mma, K fragments by ldmatrix.x4), causal mask only on tiles that
//   reach past the warp's first row, row max/sum over the quad (shfl_xor 1, 2), O rescaled,
//   P converted in registers into the A fragments of P·V (the C layout of two n8 tiles is the
//   A layout of one k16 step), O[16xD] += P·V (4 x D/8 mma, V fragments by ldmatrix.x4.trans).
//   Epilogue: O / l to bf16 staged through s_k (free by then), 16-byte row stores, lse.
// Robustness: keys past the tile's last visible key and Q rows past the chunk are zero-filled
//   (cp.async src-size 0: nothing is read), so garbage or NaN in the cache beyond a sequence
//   never enters an mma; masked scores are -inf before exp2, so their p is exactly 0 and every
//   V row they meet is real data or zero (0 * NaN never happens). Row max is finite from tile 0
//   on (key 0 is visible to every row), so no -inf - -inf. Warps whose 16 rows are all past the
//   chunk (short chunks, decode rows) skip the math but still load and reach every barrier.
//
// Napkin math (per call, causal): FLOPs = 4 · Σ_rows (visible keys) · D · num_heads (Q·K^T and
// P·V, 2 each). A 16K prefill from 0 on the 1.5B target (12 heads, D 128): Σ = 16K·(16K+1)/2 =
// 134M rows·keys -> 825 GFLOP per layer, 23 TFLOP over 28 layers. Compute-bound: per 64x64 tile
// step a block moves 32 KB of K/V (L2 -> smem) for 2.1 MFLOP = 64 FLOP/B, and HBM sees each KV
// head's K/V (8 MB at 16K) about once while L2 (50 MB) holds it for the group's 6 heads.
// Peaks: H100/H200 dense bf16 ≈ 990 TFLOP/s with wgmma; mma.sync cannot reach that (FA2, the
// same scheme, measures ≈ 335-350 TFLOP/s forward on H100, ≈ 35%; on A100 ≈ 70% of 312).
// At 350 TFLOP/s the 16K prefill costs 2.4 ms per layer, 66 ms per forward. The plain
// paged_attention_bf16 (one query row per block, CUDA cores) re-reads every visible K/V row per
// query row and head: ≈ 800 GB of L2 traffic per layer at 16K, tens of times slower.
// Registers (ptxas, sm_80 / sm_90a): 186 / 182 at D = 128 (2 blocks = 8 warps per SM; capping
// at 168 for 3 blocks spills), 126 / 132 at D = 64; no spills.
#include "common.cuh"

#define PREFILL_THREADS 128  // 4 warps
#define PREFILL_BLOCK_M 64   // query rows per block, 16 per warp
#define PREFILL_BLOCK_N 64   // keys per K/V tile
#define PREFILL_PAD 8        // bf16 per smem row of padding (16 bytes)

namespace prefill {

// Cache slot of key `key` through the block table, or -1 at or past kv_end (whose table entries
// may not exist: the table covers the chunk, nothing more).
__device__ __forceinline__ int slot_of(const int* table, int key, int kv_end, int block_size) {
    if (key >= kv_end) return -1;
    const int block = table[key / block_size];
    assert(block >= 0);
    return block * block_size + key % block_size;
}

// One 64-key tile of K or V rows for one KV head into smem in 16-byte chunks, by the tile's
// slots; rows of slot -1 are zero-filled without reading the cache.
template <int D>
__device__ __forceinline__ void load_kv_tile(__nv_bfloat16 (&dst)[PREFILL_BLOCK_N][D + PREFILL_PAD],
                                             const __nv_bfloat16* cache, const int (&slots)[PREFILL_BLOCK_N],
                                             int kv_dim, int kvh SCALERL_LOC) {
    constexpr int CHUNKS = D / 8, STEP = PREFILL_THREADS / CHUNKS;
    const int c = threadIdx.x % CHUNKS;
#pragma unroll
    for (int i = 0; i < PREFILL_BLOCK_N / STEP; ++i) {
        const int r = threadIdx.x / CHUNKS + i * STEP, slot = slots[r];
        const __nv_bfloat16* src = slot < 0 ? cache : cache + (size_t)slot * kv_dim + kvh * D + c * 8;
        cp_async_16_zfill(&dst[r][c * 8], src, slot >= 0 SCALERL_AT);
    }
}

template <int D>
__device__ __forceinline__ void attend(const __nv_bfloat16* q, const __nv_bfloat16* k_cache,
                                       const __nv_bfloat16* v_cache, __nv_bfloat16* out, float* lse,
                                       const int4* work, const int* block_tables, int max_blocks, int block_size,
                                       int num_heads, int num_kv_heads, float scale_log2) {
    constexpr int BM = PREFILL_BLOCK_M, BN = PREFILL_BLOCK_N, KSTEPS = D / 16, CHUNKS = D / 8;
    SHARED(__nv_bfloat16, s_k, [BN][D + PREFILL_PAD]);
    SHARED(__nv_bfloat16, s_v, [BN][D + PREFILL_PAD]);  // holds the Q tile until V tile 0
    // Cache slots of key tiles n (for K then V) and n+1, by tile parity: one block-table lookup
    // and division per key instead of one per 16-byte chunk.
    SHARED(int, s_slot, [2][BN]);
    assert(blockDim.x == PREFILL_THREADS);
    const int4 item = work[blockIdx.x];
    const int token0 = item.x, pos0 = item.y, rows = item.z;
    const int* table = block_tables + (size_t)item.w * max_blocks;
    const int h = blockIdx.y, kvh = h / (num_heads / num_kv_heads), kv_dim = num_kv_heads * D;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane >> 2, t = lane & 3;
    // ldmatrix addressing: lane l gives row l % 8 of 8x8 matrix l / 8
    const int lr = lane % 8, li = lane / 8;
    const int kv_end = pos0 + rows;  // keys 0 .. kv_end-1 are visible to the tile's last row
    const int n_tiles = (kv_end + BN - 1) / BN;
    const bool active = warp * 16 < rows;  // warp-uniform

    // Q tile -> s_v (rows past the chunk zero-filled), then K tile 0 -> s_k: two commit groups.
#pragma unroll
    for (int i = 0; i < BM / (PREFILL_THREADS / CHUNKS); ++i) {
        const int r = tid / CHUNKS + i * (PREFILL_THREADS / CHUNKS), c = tid % CHUNKS;
        const bool valid = r < rows;
        const __nv_bfloat16* src = valid ? q + ((size_t)(token0 + r) * num_heads + h) * D + c * 8 : q;
        cp_async_16_zfill(&s_v[r][c * 8], src, valid);
    }
    cp_async_commit();
    if (tid < BN) s_slot[0][tid] = slot_of(table, tid, kv_end, block_size);
    __syncthreads();  // s_slot[0] is read by every thread's share of K tile 0
    load_kv_tile<D>(s_k, k_cache, s_slot[0], kv_dim, kvh);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();  // every thread's share of the Q tile has landed
    // A fragments of the warp's 16 rows: matrices (rows 0-7 | 8-15) x (cols 0-7 | 8-15)
    uint32_t qf[KSTEPS][4];
#pragma unroll
    for (int kk = 0; kk < KSTEPS; ++kk) ldmatrix_x4(qf[kk], &s_v[warp * 16 + lr + 8 * (li & 1)][kk * 16 + 8 * (li >> 1)]);

    float o[D / 8][4];  // C fragments of O[16 x D], n8 tiles of dims
#pragma unroll
    for (int j = 0; j < D / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    // Per thread rows g and g+8 of the warp's slab: running max (log2 domain, scaled) and the
    // thread's partial row sum (its 2 columns of each n8 tile; the quad is summed at the end).
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    const int row_pos = pos0 + warp * 16 + g;  // position of row g; row g+8 is at +8

    for (int n = 0; n < n_tiles; ++n) {
        const int key0 = n * BN;
        cp_async_wait<0>();
        // K tile n visible to all; every warp is done reading s_v (Q or V tile n-1) and
        // s_slot[(n+1) & 1] (V tile n-1's slots)
        __syncthreads();
        load_kv_tile<D>(s_v, v_cache, s_slot[n & 1], kv_dim, kvh);
        cp_async_commit();
        if (n + 1 < n_tiles && tid < BN) s_slot[(n + 1) & 1][tid] = slot_of(table, key0 + BN + tid, kv_end, block_size);

        float s[BN / 8][4];  // S[16 x 64]: C fragments of 8 n8 tiles of keys
        if (active) {
#pragma unroll
            for (int j = 0; j < BN / 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < KSTEPS; ++kk) {
#pragma unroll
                for (int jp = 0; jp < BN / 16; ++jp) {
                    // B fragments of key tiles 2jp, 2jp+1: matrices (keys 0-7 | 8-15) x (dims 0-7 | 8-15)
                    uint32_t b[4];
                    ldmatrix_x4(b, &s_k[jp * 16 + lr + 8 * (li >> 1)][kk * 16 + 8 * (li & 1)]);
                    const uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
                    mma_m16n8k16_bf16(s[2 * jp], qf[kk], b0, s[2 * jp]);
                    mma_m16n8k16_bf16(s[2 * jp + 1], qf[kk], b1, s[2 * jp + 1]);
                }
            }
            // Causal mask, only where the tile reaches past the warp's first row.
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
        __syncthreads();  // V tile n visible to all; every warp is done reading s_k; s_slot of n+1 written
        if (n + 1 < n_tiles) {
            load_kv_tile<D>(s_k, k_cache, s_slot[(n + 1) & 1], kv_dim, kvh);
            cp_async_commit();
        }
        if (active) {
#pragma unroll
            for (int kk = 0; kk < BN / 16; ++kk) {
                // P rows g, g+8 x keys 16kk..16kk+15: the C fragments of n8 tiles 2kk, 2kk+1
                const uint32_t a[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]), pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                                       pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                       pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
                for (int dp = 0; dp < D / 16; ++dp) {
                    // B fragments of dim tiles 2dp, 2dp+1: .trans of (keys 0-7 | 8-15) x (dims 0-7 | 8-15)
                    uint32_t b[4];
                    ldmatrix_x4_trans(b, &s_v[kk * 16 + lr + 8 * (li & 1)][dp * 16 + 8 * (li >> 1)]);
                    const uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
                    mma_m16n8k16_bf16(o[2 * dp], a, b0, o[2 * dp]);
                    mma_m16n8k16_bf16(o[2 * dp + 1], a, b1, o[2 * dp + 1]);
                }
            }
        }
    }

    // Epilogue. No warp reads s_k after the last tile's second barrier (and no K load follows
    // it), so each warp stages its own 16 rows there and only needs __syncwarp.
    if (active) {
        float inv[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
            l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
            inv[r] = 1.0f / l[r];
            const int row = warp * 16 + g + 8 * r;
            // ln Σ exp(s·scale) = (m + log2 l) · ln 2, m being max(s)·scale·log2(e)
            if (lse != nullptr && t == 0 && row < rows) lse[(size_t)(token0 + row) * num_heads + h] = (m[r] + log2f(l[r])) * 0.69314718f;
        }
#pragma unroll
        for (int j = 0; j < D / 8; ++j) {
            *reinterpret_cast<uint32_t*>(&s_k[warp * 16 + g][8 * j + 2 * t]) = pack_bf16x2(o[j][0] * inv[0], o[j][1] * inv[0]);
            *reinterpret_cast<uint32_t*>(&s_k[warp * 16 + g + 8][8 * j + 2 * t]) =
                pack_bf16x2(o[j][2] * inv[1], o[j][3] * inv[1]);
        }
        __syncwarp();
#pragma unroll
        for (int i = lane; i < 16 * CHUNKS; i += 32) {
            const int row = warp * 16 + i / CHUNKS, c = i % CHUNKS;
            if (row < rows)
                *reinterpret_cast<uint4*>(out + ((size_t)(token0 + row) * num_heads + h) * D + c * 8) =
                    *reinterpret_cast<const uint4*>(&s_k[row][c * 8]);
        }
    }
}

}  // namespace prefill

#define PREFILL_KERNEL(name, D)                                                                                      \
    extern "C" __global__ void __launch_bounds__(PREFILL_THREADS)                                                    \
        name(const __nv_bfloat16* q, const __nv_bfloat16* k_cache, const __nv_bfloat16* v_cache, __nv_bfloat16* out, \
             float* lse, const int4* work, const int* block_tables, int max_blocks, int block_size, int num_heads,   \
             int num_kv_heads, float scale_log2) {                                                                   \
        prefill::attend<D>(q, k_cache, v_cache, out, lse, work, block_tables, max_blocks, block_size, num_heads,     \
                           num_kv_heads, scale_log2);                                                                \
    }
PREFILL_KERNEL(prefill_attention_d64_bf16, 64)
PREFILL_KERNEL(prefill_attention_d128_bf16, 128)
SCALERL_EXPORT_KERNEL(prefill_attention_d64_bf16)
SCALERL_EXPORT_KERNEL(prefill_attention_d128_bf16)
