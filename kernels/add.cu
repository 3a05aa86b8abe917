// add.cu — the element-wise adds of the packed training forward and the backward, bf16 in and
// out, f32 math (round to nearest even once, like the CPU reference's f32 add then a bf16 store):
//
//   add_bf16:       x[i] += y[i]                    (the residual adds; gradient sums, Ops::add)
//   add_bias_bf16:  y[r, c] += b[c]  for r < rows   (the v bias of packed attention, Ops::add_bias)
//
// CPU reference: src/ops/cpu/norm.rs `add_inplace`, src/ops/cpu/matmul.rs `add_bias`.
// Layout: x, y [n] bf16; y [rows, cols] and b [cols] bf16, row-major. In place.
// Launch: grid = min(ceil(n / 8 / 256), 4096), block = 256, grid-stride. When every pointer is
// 16-byte aligned (whole allocations are; parameter views may not be) a thread moves 8
// elements with one 16-byte load per operand (add_bias_bf16 also needs cols % 8 == 0); else one
// element per step. No shared memory, no barriers.
// Napkin math: add 6n bytes (read x, y; write x), add_bias 4n + 2·cols; FLOPs 1 per element:
// memory-bound, roofline = copy bandwidth. 1.5B, 4096 tokens: one residual add moves 38 MB,
// ~13 µs at 3 TB/s.
#include "common.cuh"

__device__ __forceinline__ uint32_t add_bf16x2(uint32_t a, uint32_t b) {
    const float2 x = unpack_bf16x2(a), y = unpack_bf16x2(b);
    return pack_bf16x2(x.x + y.x, x.y + y.y);
}

__device__ __forceinline__ uint4 add_bf16x8(uint4 a, uint4 b) {
    return make_uint4(add_bf16x2(a.x, b.x), add_bf16x2(a.y, b.y), add_bf16x2(a.z, b.z), add_bf16x2(a.w, b.w));
}

extern "C" __global__ void add_bf16(__nv_bfloat16* x, const __nv_bfloat16* y, long long n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t first = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t scalar_from = 0;
    if ((((uintptr_t)x | (uintptr_t)y) & 15) == 0) {
        const size_t n8 = (size_t)n / 8;
        uint4* x8 = reinterpret_cast<uint4*>(x);
        const uint4* y8 = reinterpret_cast<const uint4*>(y);
        for (size_t i = first; i < n8; i += stride) x8[i] = add_bf16x8(x8[i], y8[i]);
        scalar_from = n8 * 8;
    }
    for (size_t i = scalar_from + first; i < (size_t)n; i += stride)
        x[i] = __float2bfloat16(__bfloat162float(x[i]) + __bfloat162float(y[i]));
}
SCALERL_EXPORT_KERNEL(add_bf16)

extern "C" __global__ void add_bias_bf16(__nv_bfloat16* y, const __nv_bfloat16* b, long long rows, int cols) {
    const size_t n = (size_t)rows * cols;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t first = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if ((((uintptr_t)y | (uintptr_t)b) & 15) == 0 && cols % 8 == 0) {
        uint4* y8 = reinterpret_cast<uint4*>(y);
        const uint4* b8 = reinterpret_cast<const uint4*>(b);
        const size_t cols8 = cols / 8;
        for (size_t i = first; i < n / 8; i += stride) y8[i] = add_bf16x8(y8[i], b8[i % cols8]);
        return;
    }
    for (size_t i = first; i < n; i += stride)
        y[i] = __float2bfloat16(__bfloat162float(y[i]) + __bfloat162float(b[i % cols]));
}
SCALERL_EXPORT_KERNEL(add_bias_bf16)
