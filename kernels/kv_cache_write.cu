// kv_cache_write.cu — stores the new K and V rows of a batch of tokens in the paged KV cache,
// with the V bias of Qwen2 fused in (the K bias is fused into rope.cu, which runs first: the
// cache holds post-RoPE K).
//
//   token t of sequence s = seq_ids[t] at position p = positions[t] goes to
//   slot = block_tables[s][p / block_size] * block_size + p % block_size
//   k_cache[slot] = k[t],  v_cache[slot] = v[t] + v_bias
//
// CPU reference: src/kv/cache.rs `KvCache::write` / `token_offset`.
// Layout: k, v [tokens, kv_dim] bf16 (kv_dim = num_kv_heads * head_dim); v_bias [kv_dim] bf16 or
// null; k_cache, v_cache [num_blocks, block_size, num_kv_heads, head_dim] bf16 (one layer);
// positions, seq_ids [tokens] int32; block_tables [num_seqs, max_blocks] int32 row-major.
// Launch: grid = tokens, block = 128; each thread strides over kv_dim. No shared memory.
// Napkin math: bytes = 8 * tokens * kv_dim (read k, v; write both) + the table lookups; no
// FLOPs: copy bandwidth. 1.5B model (kv_dim 256): 2 KB per token per layer.
#include "common.cuh"

extern "C" __global__ void kv_cache_write_bf16(const __nv_bfloat16* k, const __nv_bfloat16* v, const __nv_bfloat16* v_bias,
                                               __nv_bfloat16* k_cache, __nv_bfloat16* v_cache, const int* positions,
                                               const int* seq_ids, const int* block_tables, int max_blocks,
                                               int block_size, int kv_dim) {
    const int t = blockIdx.x;
    const int pos = positions[t];
    assert(pos >= 0 && pos / block_size < max_blocks);
    const int block = block_tables[(size_t)seq_ids[t] * max_blocks + pos / block_size];
    assert(block >= 0);
    const size_t dst = ((size_t)block * block_size + pos % block_size) * kv_dim;
    const size_t src = (size_t)t * kv_dim;
    for (int i = threadIdx.x; i < kv_dim; i += blockDim.x) {
        k_cache[dst + i] = k[src + i];
        float vv = __bfloat162float(v[src + i]);
        if (v_bias != nullptr) vv += __bfloat162float(v_bias[i]);
        v_cache[dst + i] = __float2bfloat16(vv);
    }
}
SCALERL_EXPORT_KERNEL(kv_cache_write_bf16)
