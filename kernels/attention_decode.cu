// attention_decode.cu — split-KV ("flash-decoding") GQA attention for decode: one query token
// per sequence over its whole paged context, the query heads of one KV head served by one load
// of each K/V row. Two kernels: the split kernel writes one f32 partial per (sequence, head,
// split); attention_decode_combine merges the splits into the bf16 output and the row LSE.
//
//   sequence s at position p (context n = p + 1 keys), query head h, KV head h / group:
//     s_j = q·k_j * scale for j = 0..n-1,  out = Σ_j softmax(s)_j v_j,  lse = ln Σ_j exp(s_j)
//   split z covers keys [z·c, min((z+1)·c, n)) for c = keys_per_split (a multiple of 64, the
//   same for every sequence); a split starting at or past n has no keys: its block returns at
//   once and writes nothing, and the combine reads only the ceil(n / c) splits that exist.
//   So one grid serves a batch of ragged contexts, and a plan sized for a longer context
//   stays valid as the sequences grow (extra splits are idle blocks).
//
// CPU reference: src/ops/cpu/attention.rs `paged_attention` (decode rows); the LSE is
// the log-sum-exp of the same scaled scores.
// Layout: q, out [tokens, num_heads * head_dim] bf16, of which rows 0..num_seqs are read and
// written: sequence s brings one token, row s (a decode batch, or its leading decode rows when
// prefill chunks follow; the prefill kernel takes those); k_cache, v_cache [num_blocks,
// block_size, num_kv_heads, head_dim] bf16 (the layout of the CPU cache and kv_cache_write.cu);
// positions [tokens] int32 (row s: sequence s's position); block_tables [batch sequences,
// max_blocks] int32; o_part [num_seqs, num_heads, num_splits, head_dim] f32 (each split's
// normalised output); lse_part [num_seqs, num_heads, num_splits] f32 (each split's LSE in log2
// units); lse [num_seqs, num_heads] f32 (natural log; optional, NULL skips it).
// Why keep this cache layout: one token's K (or V) row of one KV head is head_dim * 2 = 256
// contiguous bytes at d = 128 — two full 128-byte lines, sixteen 16-byte cp.async chunks — so a
// warp loading 16 keys issues fully used lines whatever the page order; a head-major page
// ([blocks, kv_heads, block_size, d]) would only make a page's lines adjacent in DRAM, and
// would fork the CPU cache and the writer. Each row starts 16-byte aligned because head_dim is
// a multiple of 8 (64 or 128 here), so block_size is free (1, 7, 16, 32 all work).
//
// Split kernel: grid = (num_seqs, num_kv_heads, num_splits), block = 128 threads (4 warps),
// dynamic shared memory 512 * head_dim bytes of K/V stages (64 KB at d = 128) + 4 bytes per
// staged page. The block first copies its split's page indices from the block table into
// shared memory. Then each warp walks its own 16-key tiles of the split (tiles w, w+4, ...)
// with no block barrier: per tile, cp.async loads the 16 K and V rows (16-byte chunks, the
// chunk index XOR-swizzled by row so ldmatrix is conflict-free) into one of two warp-private
// stages while the warp computes the previous tile on tensor cores:
//   S[16 x 16] = Q[16 x d] · Kᵀ        mma m16n8k16: rows = the group's query heads (zero-padded
//                                      to 16, so group <= 16), K fragments by ldmatrix;
//   online softmax in f32, log2 units (scale * log2 e folded into one multiply; keys past the
//   split's end masked, their K/V rows zero-filled by cp.async: nothing past a context is read);
//   O[16 x d] += P · V                 P straight from S's accumulators (the FA2 register reuse),
//                                      V fragments by ldmatrix.trans.
// At the end the 4 warps' (max, sum, O) meet in shared memory (each warp over its own stages)
// and the block writes the split's normalised output and LSE.
// Combine kernel: grid = (num_seqs, num_heads), block = head_dim threads; each thread reads the
// used splits' LSEs, weights them (2^(lse_z - lse)) and sums its output dim. It runs for
// num_splits == 1 too: one code path, and its cost (4 (d + 1) bytes per head and split, read
// and written once) is noise next to the K/V read.
//
// Napkin math. Bytes per call = K + V read = 2 * ctx * num_kv_heads * d * 2 per sequence, plus
// q and out (num_heads * d * 2 each) and the f32 partials (~8 * num_heads * splits * d). At
// 24K context, 2 KV heads, d 128: 24K * 2 * 128 * 2 * 2 = 24 MiB per sequence per layer, i.e.
// 7.5 µs at H100's 3.35 TB/s (5.2 µs on H200, 12.6 µs on A100); 128 sequences * 28 layers =
// 84 GiB per decode step. FLOPs = 4 * d per key and query head = 6 FLOP per K/V byte at group
// 6 (16 with the mma padding): far below any ridge point, so decode is memory bound and the
// design is all about bytes: one K/V load per group (the per-head paged_attention_bf16 reads
// each row 6 times), whole lines, enough blocks in flight. Batch 1 has only num_kv_heads
// (sequence, KV head) pairs — 2 blocks would leave 130 of 132 SMs idle — hence the splits
// (DecodePlan in src/ops/cuda/attention_decode.rs picks them: ~2 waves of blocks, >= 256
// keys per split). In flight per SM: each warp keeps one 8 KB tile loading while it computes
// the other, 32 KB per block; ptxas gives the d = 128 kernel ~196 registers (0 spills; capping
// it at 168 for a third block spills), so 2 blocks (8 warps, ~64 KB in flight) per SM, about
// twice what Little's law asks of an SM for HBM3 (~4 TB/s x ~1 µs / 132 SMs).
#include "common.cuh"

#define DEC_WARPS 4
#define DEC_THREADS (DEC_WARPS * 32)
#define DEC_TILE 16  // keys per warp step: the k of the P·V mma
#define DEC_STAGES 2

// One 32-bit load of two bf16 (an mma fragment register) from an even element offset.
__device__ __forceinline__ uint32_t ld_bf16x2(const __nv_bfloat16* p) {
    return __ldg(reinterpret_cast<const uint32_t*>(p));
}

// Element offset of 16-byte chunk `c` of row `r` in a [16][D] bf16 stage: chunks are swizzled
// (c ^ r % 8) so the 8 rows one ldmatrix matrix reads hit 8 different bank groups.
template <int D> __device__ __forceinline__ int stage_at(int r, int c) { return r * D + ((c ^ (r & 7)) << 3); }

template <int D>
__device__ __forceinline__ void decode_split(const __nv_bfloat16* q, const __nv_bfloat16* k_cache,
                                             const __nv_bfloat16* v_cache, float* o_part, float* lse_part,
                                             const int* positions, const int* block_tables, int max_blocks,
                                             int block_size, int num_heads, int num_kv_heads, int keys_per_split,
                                             int max_pages, float scale_log2) {
    static_assert(D % 16 == 0 && D >= 64, "the chunk swizzle needs >= 8 chunks per row");
    constexpr int CHUNKS = D / 8;                        // 16-byte chunks per K/V row = n8 tiles of O
    constexpr int KSTEPS = D / 16;                       // k steps of q·k
    constexpr int TILE = DEC_TILE * D;                   // bf16 elements of one K (or V) tile
    constexpr int COPIES = DEC_TILE * CHUNKS / 32;       // cp.async per lane per K (or V) tile
    EXTERN_SHARED(__nv_bfloat16, smem);                  // [warp][stage][K | V][16][D], then pages
    SHARED(float, s_max, [DEC_WARPS][16]);
    SHARED(float, s_sum, [DEC_WARPS][16]);
    assert(blockDim.x == DEC_THREADS);
    const int s = blockIdx.x, kvh = blockIdx.y, z = blockIdx.z, num_splits = gridDim.z;
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, g = lane / 4, t = lane % 4;
    const int n = positions[s] + 1;
    const int begin = z * keys_per_split;
    if (begin >= n) return;  // the whole block: no keys in this split, the combine skips it
    const int end = min(n, begin + keys_per_split);
    const int group = num_heads / num_kv_heads;

    // The split's page indices, once, for every warp's address arithmetic.
    int* s_pages = reinterpret_cast<int*>(smem + DEC_WARPS * DEC_STAGES * 2 * TILE);
    const int first_page = begin / block_size, npages = (end - 1) / block_size - first_page + 1;
    assert(npages <= max_pages && first_page + npages <= max_blocks);
    const int* table = block_tables + (size_t)s * max_blocks;
    for (int i = tid; i < npages; i += DEC_THREADS) {
        const int page = table[first_page + i];
        assert(page >= 0);
        s_pages[i] = page;
    }
    __syncthreads();  // pages are read by every warp; no block barrier after this one until the merge

    // Q as mma A fragments, unscaled (exact bf16 products): rows g and g + 8 are query heads
    // kvh * group + row, zero past the group.
    const __nv_bfloat16* qg = q + ((size_t)s * num_heads + (size_t)kvh * group) * D;
    uint32_t qa[KSTEPS][4];
#pragma unroll
    for (int kk = 0; kk < KSTEPS; kk++) {
        const int col = kk * 16 + 2 * t;
        qa[kk][0] = g < group ? ld_bf16x2(qg + g * D + col) : 0u;
        qa[kk][1] = g + 8 < group ? ld_bf16x2(qg + (g + 8) * D + col) : 0u;
        qa[kk][2] = g < group ? ld_bf16x2(qg + g * D + col + 8) : 0u;
        qa[kk][3] = g + 8 < group ? ld_bf16x2(qg + (g + 8) * D + col + 8) : 0u;
    }

    __nv_bfloat16* wstage = smem + warp * DEC_STAGES * 2 * TILE;
    const size_t row_stride = (size_t)num_kv_heads * D;
    // Tile `tile` of the split into stage `st`: lane copies chunks lane + 32 j (row-major, so
    // consecutive lanes take consecutive 16 bytes of a row). Keys >= end are zero-filled.
    auto load_tile = [&](int tile, int st) {
        __nv_bfloat16* sk = wstage + st * 2 * TILE;
        const int key0 = begin + tile * DEC_TILE;
#pragma unroll
        for (int j = 0; j < COPIES; j++) {
            const int i = lane + 32 * j, r = i / CHUNKS, c = i % CHUNKS, key = key0 + r;
            const bool valid = key < end;
            size_t off = 0;
            if (valid) {
                const size_t slot = (size_t)s_pages[key / block_size - first_page] * block_size + key % block_size;
                off = slot * row_stride + (size_t)kvh * D + c * 8;
            }
            cp_async_16_zfill(sk + stage_at<D>(r, c), k_cache + off, valid);
            cp_async_16_zfill(sk + TILE + stage_at<D>(r, c), v_cache + off, valid);
        }
    };

    float row_max[2] = {-INFINITY, -INFINITY};  // rows g, g + 8; log2 units, uniform over the quad
    float row_sum[2] = {0.0f, 0.0f};            // this lane's columns only until the end
    float acc[CHUNKS][4];                       // O: n8 tile j holds dims 8j + 2t, +1 of rows g, g + 8
#pragma unroll
    for (int j = 0; j < CHUNKS; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

    const int ntiles = (end - begin + DEC_TILE - 1) / DEC_TILE;
    int st = 0;
    if (warp < ntiles) load_tile(warp, 0);
    cp_async_commit();
    for (int tile = warp; tile < ntiles; tile += DEC_WARPS) {  // warp-uniform trip count
        if (tile + DEC_WARPS < ntiles) load_tile(tile + DEC_WARPS, st ^ 1);
        cp_async_commit();  // (possibly empty: keeps "wait for all but the newest group" exact)
        cp_async_wait<1>();
        __syncwarp();  // every lane's copies of this tile have landed
        const __nv_bfloat16* sk = wstage + st * 2 * TILE;
        const __nv_bfloat16* sv = sk + TILE;

        // S = Q Kᵀ: ldmatrix x4 gives B fragments of both 8-key halves for one k step
        // (matrices: keys 0-7 / dims +0, keys 0-7 / +8, keys 8-15 / +0, keys 8-15 / +8).
        float sc[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
        for (int kk = 0; kk < KSTEPS; kk++) {
            uint32_t b[4];
            ldmatrix_x4(b, sk + stage_at<D>((lane / 16) * 8 + lane % 8, kk * 2 + (lane / 8) % 2));
            const uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
            mma_m16n8k16_bf16(sc[0], qa[kk], b0, sc[0]);
            mma_m16n8k16_bf16(sc[1], qa[kk], b1, sc[1]);
        }

        // Online softmax. sc[h][e]: key 8h + 2t + (e & 1), row g + 8 (e >> 1).
        const int key0 = begin + tile * DEC_TILE;
        float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float v = key0 + 8 * h + 2 * t + (e & 1) < end ? sc[h][e] * scale_log2 : -INFINITY;
                sc[h][e] = v;
                tile_max[e >> 1] = fmaxf(tile_max[e >> 1], v);
            }
        float alpha[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
            tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
            // Every tile has a key < end, so the new max is finite; alpha = 0 on the first tile.
            const float m_new = fmaxf(row_max[r], tile_max[r]);
            alpha[r] = exp2f(row_max[r] - m_new);
            row_max[r] = m_new;
            row_sum[r] *= alpha[r];
        }
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float p = exp2f(sc[h][e] - row_max[e >> 1]);
                row_sum[e >> 1] += p;
                sc[h][e] = p;
            }
        // P as the A fragment of P·V: (row g | g + 8) x (keys 2t.. | 8 + 2t..).
        const uint32_t pa[4] = {pack_bf16x2(sc[0][0], sc[0][1]), pack_bf16x2(sc[0][2], sc[0][3]),
                                pack_bf16x2(sc[1][0], sc[1][1]), pack_bf16x2(sc[1][2], sc[1][3])};
#pragma unroll
        for (int j = 0; j < CHUNKS; j++) {
            acc[j][0] *= alpha[0];
            acc[j][1] *= alpha[0];
            acc[j][2] *= alpha[1];
            acc[j][3] *= alpha[1];
        }
        // O += P V: ldmatrix.trans x4 gives B fragments of two 8-dim tiles (matrices: keys 0-7 /
        // dims 8jp.., keys 8-15 / 8jp.., keys 0-7 / 8jp + 8.., keys 8-15 / 8jp + 8..).
#pragma unroll
        for (int jp = 0; jp < CHUNKS / 2; jp++) {
            uint32_t b[4];
            ldmatrix_x4_trans(b, sv + stage_at<D>(lane % 8 + ((lane / 8) % 2) * 8, jp * 2 + lane / 16));
            const uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
            mma_m16n8k16_bf16(acc[2 * jp], pa, b0, acc[2 * jp]);
            mma_m16n8k16_bf16(acc[2 * jp + 1], pa, b1, acc[2 * jp + 1]);
        }
        __syncwarp();  // the whole warp is done reading stage st before it is refilled
        st ^= 1;
    }

    // Merge the 4 warps. Each warp parks its O rows (< group) as f32 [group][D] over its own
    // stages (64 * D of its 128 * D bytes; its copies are all waited for), max and sum beside.
#pragma unroll
    for (int r = 0; r < 2; r++) {
        row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
        row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
    }
    float* wo = reinterpret_cast<float*>(wstage);
#pragma unroll
    for (int j = 0; j < CHUNKS; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int row = g + 8 * (e >> 1);
            if (row < group) wo[row * D + 8 * j + 2 * t + (e & 1)] = acc[j][e];
        }
    if (t == 0) {
        s_max[warp][g] = row_max[0];
        s_max[warp][g + 8] = row_max[1];
        s_sum[warp][g] = row_sum[0];
        s_sum[warp][g + 8] = row_sum[1];
    }
    __syncthreads();
    // A warp without tiles has max -inf, sum 0, O 0: weight 0 (warp 0 always has a tile).
    const size_t head0 = (size_t)s * num_heads + (size_t)kvh * group;
    for (int i = tid; i < group * D; i += DEC_THREADS) {
        const int row = i / D, x = i % D;
        float m = -INFINITY;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) m = fmaxf(m, s_max[w][row]);
        float l = 0.0f, o = 0.0f;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) {
            const float f = exp2f(s_max[w][row] - m);
            l += s_sum[w][row] * f;
            o += reinterpret_cast<const float*>(smem + w * DEC_STAGES * 2 * TILE)[row * D + x] * f;
        }
        const size_t part = (head0 + row) * num_splits + z;
        o_part[part * D + x] = o / l;
        if (x == 0) lse_part[part] = m + log2f(l);
    }
}

extern "C" __global__ void __launch_bounds__(DEC_THREADS)
    attention_decode_split_bf16_d64(const __nv_bfloat16* q, const __nv_bfloat16* k_cache,
                                    const __nv_bfloat16* v_cache, float* o_part, float* lse_part,
                                    const int* positions, const int* block_tables, int max_blocks, int block_size,
                                    int num_heads, int num_kv_heads, int keys_per_split, int max_pages,
                                    float scale_log2) {
    decode_split<64>(q, k_cache, v_cache, o_part, lse_part, positions, block_tables, max_blocks, block_size,
                     num_heads, num_kv_heads, keys_per_split, max_pages, scale_log2);
}

extern "C" __global__ void __launch_bounds__(DEC_THREADS)
    attention_decode_split_bf16_d128(const __nv_bfloat16* q, const __nv_bfloat16* k_cache,
                                     const __nv_bfloat16* v_cache, float* o_part, float* lse_part,
                                     const int* positions, const int* block_tables, int max_blocks, int block_size,
                                     int num_heads, int num_kv_heads, int keys_per_split, int max_pages,
                                     float scale_log2) {
    decode_split<128>(q, k_cache, v_cache, o_part, lse_part, positions, block_tables, max_blocks, block_size,
                      num_heads, num_kv_heads, keys_per_split, max_pages, scale_log2);
}

// out = Σ_z 2^(lse_z − lse2) O_z over the splits that hold keys, lse2 = log2 Σ_z 2^lse_z;
// lse = lse2 · ln 2. Each thread re-reads the (few, L1-broadcast) split LSEs: no barrier.
extern "C" __global__ void attention_decode_combine(const float* o_part, const float* lse_part,
                                                    const int* positions, __nv_bfloat16* out, float* lse,
                                                    int num_heads, int head_dim, int num_splits,
                                                    int keys_per_split) {
    assert((int)blockDim.x == head_dim);
    const int s = blockIdx.x, h = blockIdx.y, x = threadIdx.x;
    const int used = (positions[s] + keys_per_split) / keys_per_split;  // ceil((p + 1) / c)
    assert(used >= 1 && used <= num_splits);
    const size_t head = (size_t)s * num_heads + h;
    const float* lp = lse_part + head * num_splits;
    float m = -INFINITY;
    for (int zi = 0; zi < used; zi++) m = fmaxf(m, lp[zi]);
    float l = 0.0f;
    for (int zi = 0; zi < used; zi++) l += exp2f(lp[zi] - m);
    const float lse2 = m + log2f(l);
    const float* op = o_part + head * num_splits * head_dim + x;
    float o = 0.0f;
    for (int zi = 0; zi < used; zi++) o += exp2f(lp[zi] - lse2) * op[(size_t)zi * head_dim];
    out[head * head_dim + x] = __float2bfloat16(o);
    if (lse && x == 0) lse[head] = lse2 * 0.69314718055994531f;
}

SCALERL_EXPORT_KERNEL(attention_decode_split_bf16_d64)
SCALERL_EXPORT_KERNEL(attention_decode_split_bf16_d128)
SCALERL_EXPORT_KERNEL(attention_decode_combine)
