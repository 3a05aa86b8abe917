// rope.cu — rotary position embedding (Hugging Face rotate-half) on q and k, with the q/k bias
// of Qwen2 fused in (the bias add costs nothing here: the row is read and written anyway).
//
//   for every head of q and k of token t at position p = positions[t], for i < d/2:
//     x0 = x[i] + b[i],  x1 = x[i + d/2] + b[i + d/2]          (b = q_bias / k_bias, or 0)
//     inv_freq = 1 / theta^(2i/d),  angle = p * inv_freq        (f32, like HF and the CPU)
//     x[i] = x0 cos − x1 sin,  x[i + d/2] = x1 cos + x0 sin      (in place, f32 math, bf16 out)
//
// CPU reference: src/ops/cpu/rope.rs `rope_cos_sin` + `rope_inplace` (after
// src/ops/cpu/matmul.rs `add_bias`).
// Layout: q [tokens, num_heads * head_dim] bf16, k [tokens, num_kv_heads * head_dim] bf16
// (the GEMM outputs, row-major); q_bias [num_heads * head_dim], k_bias [num_kv_heads *
// head_dim] bf16 or null; positions [tokens] int32. head_dim even, <= 2 * ROPE_MAX_HALF = 512.
// Launch: grid = tokens, block = 128. The token's d/2 (cos, sin) pairs are computed once into
// shared memory (accurate powf/sincosf, not __sincosf: angles reach 24K+ rad), one barrier,
// then each thread strides over the (num_heads + num_kv_heads) * d/2 rotation pairs.
// Napkin math: bytes = tokens * (nh + nkv) * d * 2 * 2 (read + write) + bias; FLOPs ~ 6 per
// pair + one powf/sincosf per (token, i) shared by all nh + nkv heads: memory-bound, roofline =
// copy bandwidth. 1.5B model: 14 heads * 128 * 4 B = 7 KB per token, ~5 ns/token at 1.5 TB/s.
// (The flash-attention issue fuses this into the K/V cache write / attention prologue.)
#include "common.cuh"

#define ROPE_MAX_HALF 256

extern "C" __global__ void rope_qk_bf16(__nv_bfloat16* q, __nv_bfloat16* k, const __nv_bfloat16* q_bias,
                                        const __nv_bfloat16* k_bias, const int* positions, int num_heads,
                                        int num_kv_heads, int head_dim, float theta) {
    SHARED(float, s_cos, [ROPE_MAX_HALF]);
    SHARED(float, s_sin, [ROPE_MAX_HALF]);
    const int t = blockIdx.x;
    const int half = head_dim / 2;
    assert(half <= ROPE_MAX_HALF);
    const float pos = (float)positions[t];
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
        sincosf(pos * inv_freq, &s_sin[i], &s_cos[i]);
    }
    __syncthreads();
    const int pairs = (num_heads + num_kv_heads) * half;
    for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
        const int head = p / half, i = p % half;
        __nv_bfloat16* x;
        const __nv_bfloat16* b;
        if (head < num_heads) {
            x = q + ((size_t)t * num_heads + head) * head_dim;
            b = q_bias != nullptr ? q_bias + (size_t)head * head_dim : nullptr;
        } else {
            const int kh = head - num_heads;
            x = k + ((size_t)t * num_kv_heads + kh) * head_dim;
            b = k_bias != nullptr ? k_bias + (size_t)kh * head_dim : nullptr;
        }
        float x0 = __bfloat162float(x[i]), x1 = __bfloat162float(x[i + half]);
        if (b != nullptr) {
            x0 += __bfloat162float(b[i]);
            x1 += __bfloat162float(b[i + half]);
        }
        const float c = s_cos[i], s = s_sin[i];
        x[i] = __float2bfloat16(x0 * c - x1 * s);
        x[i + half] = __float2bfloat16(x1 * c + x0 * s);
    }
}
SCALERL_EXPORT_KERNEL(rope_qk_bf16)
