// attention_paged.cu — plain, correct causal GQA attention over the paged KV cache, one query
// token per row (prefill, chunked prefill and decode are the same call). Not yet flash/fused:
// the FlashAttention-2 prefill and split-KV decode kernels are their own issue.
//
//   for query token t (position p = positions[t], sequence s = seq_ids[t]) and query head h
//   (KV head h / (num_heads / num_kv_heads)):
//     s_j = q·k_j * scale for j = 0..=p,  out = Σ_j softmax(s)_j v_j     (f32 softmax)
//   K/V of position j live at slot block_tables[s][j / block_size] * block_size + j % block_size;
//   the token's own K/V (and those of the rest of its chunk) must already be written
//   (kv_cache_write.cu), causality comes from j <= p.
//
// CPU reference: src/ops/cpu/attention.rs `paged_attention`.
// Layout: q, out [tokens, num_heads * head_dim] bf16; k_cache, v_cache [num_blocks, block_size,
// num_kv_heads, head_dim] bf16; positions, seq_ids [tokens] int32; block_tables [num_seqs,
// max_blocks] int32. head_dim <= 256.
// Launch: grid = (tokens, num_heads), block = ATTN_THREADS = 128 (asserted). The keys are
// walked in chunks of ATTN_CHUNK = 256 with an online softmax (running max m and sum l, the
// accumulators rescaled by exp(m_old − m_new)), so any context length works with 3.3 KB of
// static shared memory: q (pre-scaled, f32), the chunk's scores/probabilities and slot offsets.
// Per chunk: thread j computes whole dot products for keys j, j+128 (one K row per thread:
// uncoalesced, fine for a plain kernel), block max and sum reductions, then thread d
// accumulates Σ_j p_j v_j[d] for its output dims d = tid, tid + 128 (coalesced over d).
// Napkin math: per (token, head) with n = p+1 keys: bytes = 4 n d (K and V rows, bf16; the
// group's query heads re-read the same K/V, L2 catches them), FLOPs = 4 n d. Decode at 24K
// context, d = 128: 12.6 MB per head per token from L2/HBM, arithmetic intensity 1 FLOP/B —
// memory-bound; this kernel reaches a fraction of that (K reads uncoalesced, one block per
// head so the GQA group shares no loads). Prefill is O(T^2) with no reuse: fine for tests.
#include "common.cuh"

#define ATTN_THREADS 128
#define ATTN_CHUNK 256
#define ATTN_MAX_HEAD_DIM 256
#define ATTN_DIMS_PER_THREAD (ATTN_MAX_HEAD_DIM / ATTN_THREADS)

extern "C" __global__ void paged_attention_bf16(const __nv_bfloat16* q, const __nv_bfloat16* k_cache,
                                                const __nv_bfloat16* v_cache, __nv_bfloat16* out,
                                                const int* positions, const int* seq_ids, const int* block_tables,
                                                int max_blocks, int block_size, int num_heads, int num_kv_heads,
                                                int head_dim, float scale) {
    SHARED(float, s_q, [ATTN_MAX_HEAD_DIM]);
    SHARED(float, s_p, [ATTN_CHUNK]);
    SHARED(int, s_slot, [ATTN_CHUNK]);
    assert(blockDim.x == ATTN_THREADS && head_dim <= ATTN_MAX_HEAD_DIM);
    const int t = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
    const int kvh = h / (num_heads / num_kv_heads);
    const int kv_dim = num_kv_heads * head_dim;
    const int pos = positions[t];
    assert(pos >= 0 && pos / block_size < max_blocks);
    const int* table = block_tables + (size_t)seq_ids[t] * max_blocks;
    const __nv_bfloat16* qrow = q + ((size_t)t * num_heads + h) * head_dim;
    for (int i = tid; i < head_dim; i += ATTN_THREADS) s_q[i] = __bfloat162float(qrow[i]) * scale;
    __syncthreads();  // s_q is read by every thread in the score loop

    float m = -INFINITY, l = 0.0f;
    float acc[ATTN_DIMS_PER_THREAD];
#pragma unroll
    for (int r = 0; r < ATTN_DIMS_PER_THREAD; r++) acc[r] = 0.0f;

    const int n = pos + 1;
    for (int c0 = 0; c0 < n; c0 += ATTN_CHUNK) {
        const int cn = min(ATTN_CHUNK, n - c0);
        float local_max = -INFINITY;
        for (int j = tid; j < cn; j += ATTN_THREADS) {
            const int key = c0 + j;
            const int block = table[key / block_size];
            assert(block >= 0);
            const int slot = block * block_size + key % block_size;
            const __nv_bfloat16* krow = k_cache + (size_t)slot * kv_dim + (size_t)kvh * head_dim;
            float s = 0.0f;
            for (int i = 0; i < head_dim; i++) s += s_q[i] * __bfloat162float(krow[i]);
            s_p[j] = s;
            s_slot[j] = slot;
            local_max = fmaxf(local_max, s);
        }
        // The reductions' barriers also publish s_p / s_slot to the whole block.
        const float m_new = fmaxf(m, block_reduce_max(local_max));
        const float alpha = expf(m - m_new);  // 0 on the first chunk (m = −inf)
        float local_sum = 0.0f;
        for (int j = tid; j < cn; j += ATTN_THREADS) {
            const float p = expf(s_p[j] - m_new);
            s_p[j] = p;
            local_sum += p;
        }
        l = l * alpha + block_reduce_sum(local_sum);
#pragma unroll
        for (int r = 0; r < ATTN_DIMS_PER_THREAD; r++) {
            const int d = tid + r * ATTN_THREADS;
            if (d < head_dim) {
                float a = acc[r] * alpha;
                const __nv_bfloat16* vcol = v_cache + (size_t)kvh * head_dim + d;
                for (int j = 0; j < cn; j++) a += s_p[j] * __bfloat162float(vcol[(size_t)s_slot[j] * kv_dim]);
                acc[r] = a;
            }
        }
        m = m_new;
        __syncthreads();  // everyone is done with s_p / s_slot before the next chunk rewrites them
    }
    const float inv_l = 1.0f / l;
    __nv_bfloat16* orow = out + ((size_t)t * num_heads + h) * head_dim;
#pragma unroll
    for (int r = 0; r < ATTN_DIMS_PER_THREAD; r++) {
        const int d = tid + r * ATTN_THREADS;
        if (d < head_dim) orow[d] = __float2bfloat16(acc[r] * inv_l);
    }
}
SCALERL_EXPORT_KERNEL(paged_attention_bf16)
