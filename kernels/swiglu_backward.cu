// swiglu_backward.cu — the backward of out = silu(gate) · up, from the saved pre-activations:
//
//   s = σ(g) = 1 / (1 + exp(−g))
//   dup[i]   = dy · g · s                      (= dy · silu(g))
//   dgate[i] = dy · u · s · (1 + g · (1 − s))  (d silu / dg = s + g s (1 − s))
//
// f32 math in the CPU reference's order of operations, bf16 in and out.
// CPU reference: src/ops/cpu/swiglu.rs `silu_mul_backward` (flat), `silu_mul_fused_backward`.
// Layout: dy [rows, inter] bf16 row-major; gate, up, dgate, dup rows `ld` elements apart. The
// model passes the fused gate|up activations [rows, 2·inter] and their gradient (gate/dgate the
// pointers, up/dup inter elements in, ld = 2·inter): d(gate|up) comes out as the one matrix the
// fused projection's weight and input gradients read, no concatenation (issue 15); rows = 1,
// inter = ld = n is the flat case.
// An output may alias an input (each element is read before one thread writes it).
// Launch: grid = min(ceil(n / 8 / 256), 4096), block = 256, grid-stride, n = rows·inter; 8
// elements per step with 16-byte loads and stores when all five pointers are 16-byte aligned and
// inter and ld are multiples of 8 (a vector stays in one row), else 1. No shared memory.
// Napkin math: bytes = 10n (read gate, up, dy; write dgate, dup); ~12 FLOPs + one exp per
// element: memory-bound, roofline = copy bandwidth. 1.5B, 4096 tokens: n = 36.7M, 367 MB per
// layer, ~120 µs at 3 TB/s.
#include "common.cuh"

__device__ __forceinline__ void swiglu_grad(float g, float u, float d, float& dg, float& du) {
    const float s = 1.0f / (1.0f + expf(-g));
    du = d * g * s;
    dg = d * u * s * (1.0f + g * (1.0f - s));
}

__device__ __forceinline__ void swiglu_grad_x2(uint32_t g2, uint32_t u2, uint32_t d2, uint32_t& dg2, uint32_t& du2) {
    const float2 g = unpack_bf16x2(g2), u = unpack_bf16x2(u2), d = unpack_bf16x2(d2);
    float dg0, du0, dg1, du1;
    swiglu_grad(g.x, u.x, d.x, dg0, du0);
    swiglu_grad(g.y, u.y, d.y, dg1, du1);
    dg2 = pack_bf16x2(dg0, dg1);
    du2 = pack_bf16x2(du0, du1);
}

extern "C" __global__ void silu_mul_backward_bf16(const __nv_bfloat16* gate, const __nv_bfloat16* up,
                                                  const __nv_bfloat16* dy, __nv_bfloat16* dgate,
                                                  __nv_bfloat16* dup, long long rows, long long inter,
                                                  long long ld) {
    const size_t n = (size_t)rows * (size_t)inter;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t first = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t scalar_from = 0;
    if ((((uintptr_t)gate | (uintptr_t)up | (uintptr_t)dy | (uintptr_t)dgate | (uintptr_t)dup) & 15) == 0 &&
        inter % 8 == 0 && ld % 8 == 0) {
        // Vector v covers elements 8v .. 8v + 7 of dy, all in row 8v / inter.
        const size_t n8 = n / 8, inter8 = (size_t)inter / 8, ld8 = (size_t)ld / 8;
        for (size_t v = first; v < n8; v += stride) {
            const size_t at = v / inter8 * ld8 + v % inter8;
            const uint4 g = reinterpret_cast<const uint4*>(gate)[at];
            const uint4 u = reinterpret_cast<const uint4*>(up)[at];
            const uint4 d = reinterpret_cast<const uint4*>(dy)[v];
            uint4 dg, du;
            swiglu_grad_x2(g.x, u.x, d.x, dg.x, du.x);
            swiglu_grad_x2(g.y, u.y, d.y, dg.y, du.y);
            swiglu_grad_x2(g.z, u.z, d.z, dg.z, du.z);
            swiglu_grad_x2(g.w, u.w, d.w, dg.w, du.w);
            reinterpret_cast<uint4*>(dgate)[at] = dg;
            reinterpret_cast<uint4*>(dup)[at] = du;
        }
        scalar_from = n8 * 8;
    }
    for (size_t i = scalar_from + first; i < n; i += stride) {
        const size_t at = i / (size_t)inter * (size_t)ld + i % (size_t)inter;
        float dg, du;
        swiglu_grad(__bfloat162float(gate[at]), __bfloat162float(up[at]), __bfloat162float(dy[i]), dg, du);
        dgate[at] = __float2bfloat16(dg);
        dup[at] = __float2bfloat16(du);
    }
}
SCALERL_EXPORT_KERNEL(silu_mul_backward_bf16)
