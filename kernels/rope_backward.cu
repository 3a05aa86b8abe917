// rope_backward.cu — the backward of rope_qk_bf16's rotation on the gradients of q and k, in
// place. The rotation is orthogonal, so its backward is the rotation by −angle:
//
//   for every head of dq and dk of token t at p = positions[t], i < d/2, (a, b) = (g[i], g[i+d/2]):
//     g[i] = a cos + b sin,   g[i + d/2] = b cos − a sin          (f32 math, bf16 out)
//
// with the forward's angles (inv_freq = 1 / theta^(2i/d) in f32, angle = p · inv_freq, accurate
// powf/sincosf). The q/k bias gradients are the column sums of the result (colsum.cu).
// CPU reference: src/ops/cpu/rope.rs `rope_backward_inplace` (with `rope_cos_sin`).
// Layout: dq [tokens, num_heads · head_dim], dk [tokens, num_kv_heads · head_dim] bf16 row-major;
// positions [tokens] int32. head_dim even, ≤ 2 · ROPE_BWD_MAX_HALF = 512.
// Launch: grid = tokens, block = 128. The token's d/2 (cos, sin) pairs are computed once into
// shared memory, one barrier, then the threads stride over the (num_heads + num_kv_heads) · d/2
// rotation pairs — two neighbouring pairs per step with 4-byte bf16x2 accesses when d/2 is even
// and dq, dk are 4-byte aligned (`pairs2`), else one.
// Napkin math: bytes = tokens · (nh + nkv) · d · 2 · 2 (read + write); ~6 FLOPs per pair + one
// powf/sincosf per (token, i) shared by all heads: memory-bound, roofline = copy bandwidth.
// 1.5B: 14 heads · 128 · 4 B = 7 KB per token; 4096 tokens 29 MB, ~10 µs at 3 TB/s.
#include "common.cuh"

#define ROPE_BWD_MAX_HALF 256

__device__ __forceinline__ void rope_unrotate(float& a, float& b, float c, float s) {
    const float a0 = a, b0 = b;
    a = a0 * c + b0 * s;
    b = b0 * c - a0 * s;
}

extern "C" __global__ void rope_qk_backward_bf16(__nv_bfloat16* dq, __nv_bfloat16* dk, const int* positions,
                                                 int num_heads, int num_kv_heads, int head_dim, float theta) {
    SHARED(float, s_cos, [ROPE_BWD_MAX_HALF]);
    SHARED(float, s_sin, [ROPE_BWD_MAX_HALF]);
    const int t = blockIdx.x;
    const int half = head_dim / 2;
    assert(half <= ROPE_BWD_MAX_HALF);
    const float pos = (float)positions[t];
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const float inv_freq = 1.0f / powf(theta, (float)(2 * i) / (float)head_dim);
        sincosf(pos * inv_freq, &s_sin[i], &s_cos[i]);
    }
    __syncthreads();
    const bool pairs2 = half % 2 == 0 && (((uintptr_t)dq | (uintptr_t)dk) & 3) == 0;
    const int step = pairs2 ? 2 : 1;  // rotation pairs per work item
    const int per_head = half / step;
    const int items = (num_heads + num_kv_heads) * per_head;
    for (int p = threadIdx.x; p < items; p += blockDim.x) {
        const int head = p / per_head, i = (p % per_head) * step;
        __nv_bfloat16* x = head < num_heads ? dq + ((size_t)t * num_heads + head) * head_dim
                                            : dk + ((size_t)t * num_kv_heads + (head - num_heads)) * head_dim;
        if (pairs2) {
            uint32_t* lo = reinterpret_cast<uint32_t*>(x + i);
            uint32_t* hi = reinterpret_cast<uint32_t*>(x + i + half);
            float2 a = unpack_bf16x2(*lo), b = unpack_bf16x2(*hi);
            rope_unrotate(a.x, b.x, s_cos[i], s_sin[i]);
            rope_unrotate(a.y, b.y, s_cos[i + 1], s_sin[i + 1]);
            *lo = pack_bf16x2(a.x, a.y);
            *hi = pack_bf16x2(b.x, b.y);
        } else {
            float a = __bfloat162float(x[i]), b = __bfloat162float(x[i + half]);
            rope_unrotate(a, b, s_cos[i], s_sin[i]);
            x[i] = __float2bfloat16(a);
            x[i + half] = __float2bfloat16(b);
        }
    }
}
SCALERL_EXPORT_KERNEL(rope_qk_backward_bf16)
