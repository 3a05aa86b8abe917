// adamw.cu — the optimizer on the device, over the flat f32 buffers of a parameter set (one
// pass each, whatever the tensors):
//
//   sum_squares_f32_partial / sum_squares_f64_final — Σ g² in f64, two deterministic stages:
//       block b sums the fixed chunk [b·chunk, (b+1)·chunk) (each thread a strided subset, then
//       a fixed-order block tree) into partial[b]; one block then sums the partials the same
//       way. The chunk depends only on n, so the result is bit-identical run to run and GPU to
//       GPU. A non-finite gradient makes the sum non-finite (an f64 sum of f32 squares cannot
//       overflow), which is the host's signal to skip the step (train::adamw).
//   scale_f32 — g ← g · s (the clip coefficient).
//   adamw_f32 — one AdamW step, with the host's coefficients (ops::AdamWStep: lr and bias
//       corrections folded in by train::adamw), per element:
//         θ ← θ · decay                              decay = 1 − η λ  (decoupled weight decay)
//         m ← m + (1 − β1)(g − m),   v ← v β2 + (1 − β2) g g
//         θ ← θ − step_size · m / (√v / bc2_sqrt + ε)   step_size = η / (1 − β1ᵗ), bc2_sqrt = √(1 − β2ᵗ)
//       in the CPU reference's order with every product and sum rounded on its own (__fmul_rn,
//       __fadd_rn: no FMA contraction) and IEEE division and square root, so it gives the CPU's
//       bits. Optionally also writes bf16(θ) (round to nearest even) into the bf16 copy the
//       rollout reads: the weight sync fused into the update (2 more bytes per parameter).
//
// CPU reference: src/ops/cpu/adamw.rs (`adamw_update`, `sum_squares`, `scale`).
// Layout: w (θ, the f32 master), g, m, v [n] f32; w_bf16 [n] bf16 or null; partial [blocks] f64.
// Launch: adamw_f32 / scale_f32: grid = min(ceil(n / 4 / 256), 4096), block = 256, grid-stride,
// 4 elements per step with 16-byte accesses when every pointer allows it, else 1.
// sum_squares_f32_partial: grid = ceil(n / chunk), block = 256, chunk = the launcher's
// (a multiple of 1024, ≥ n / 2048); sum_squares_f64_final: grid = 1, block = 256.
// Napkin math (memory-bound, roofline = copy bandwidth): adamw 28 B per parameter (read θ, g,
// m, v; write θ, m, v) + 2 with the bf16 copy; the 1.5B model's 1.78 G parameters move 50 GB
// (53.4 with the copy), ~17 ms at 3 TB/s. sum_squares 4 B per parameter (7.1 GB, ~2.4 ms);
// scale 8 B.
#include "common.cuh"

__device__ __forceinline__ float adamw_one(float& p, float g, float& m, float& v, float beta1, float beta2, float eps,
                                           float step_size, float bc2_sqrt, float decay) {
    p = __fmul_rn(p, decay);
    m = __fadd_rn(m, __fmul_rn(__fadd_rn(1.0f, -beta1), __fadd_rn(g, -m)));
    v = __fadd_rn(__fmul_rn(v, beta2), __fmul_rn(__fmul_rn(__fadd_rn(1.0f, -beta2), g), g));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), bc2_sqrt), eps);
    p = __fadd_rn(p, -__fmul_rn(step_size, __fdiv_rn(m, denom)));
    return p;
}

extern "C" __global__ void adamw_f32(float* w, const float* g, float* m, float* v, __nv_bfloat16* w_bf16, long long n,
                                     float beta1, float beta2, float eps, float step_size, float bc2_sqrt, float decay) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t first = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t scalar_from = 0;
    if ((((uintptr_t)w | (uintptr_t)g | (uintptr_t)m | (uintptr_t)v) & 15) == 0 && ((uintptr_t)w_bf16 & 7) == 0) {
        const size_t n4 = (size_t)n / 4;
        for (size_t i = first; i < n4; i += stride) {
            float4 p = reinterpret_cast<float4*>(w)[i];
            const float4 gg = reinterpret_cast<const float4*>(g)[i];
            float4 mm = reinterpret_cast<float4*>(m)[i];
            float4 vv = reinterpret_cast<float4*>(v)[i];
            adamw_one(p.x, gg.x, mm.x, vv.x, beta1, beta2, eps, step_size, bc2_sqrt, decay);
            adamw_one(p.y, gg.y, mm.y, vv.y, beta1, beta2, eps, step_size, bc2_sqrt, decay);
            adamw_one(p.z, gg.z, mm.z, vv.z, beta1, beta2, eps, step_size, bc2_sqrt, decay);
            adamw_one(p.w, gg.w, mm.w, vv.w, beta1, beta2, eps, step_size, bc2_sqrt, decay);
            reinterpret_cast<float4*>(w)[i] = p;
            reinterpret_cast<float4*>(m)[i] = mm;
            reinterpret_cast<float4*>(v)[i] = vv;
            if (w_bf16 != nullptr)
                reinterpret_cast<uint2*>(w_bf16)[i] = make_uint2(pack_bf16x2(p.x, p.y), pack_bf16x2(p.z, p.w));
        }
        scalar_from = n4 * 4;
    }
    for (size_t i = scalar_from + first; i < (size_t)n; i += stride) {
        float p = w[i], mm = m[i], vv = v[i];
        adamw_one(p, g[i], mm, vv, beta1, beta2, eps, step_size, bc2_sqrt, decay);
        w[i] = p;
        m[i] = mm;
        v[i] = vv;
        if (w_bf16 != nullptr) w_bf16[i] = __float2bfloat16(p);
    }
}
SCALERL_EXPORT_KERNEL(adamw_f32)

extern "C" __global__ void scale_f32(float* x, long long n, float s) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t first = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t scalar_from = 0;
    if (((uintptr_t)x & 15) == 0) {
        const size_t n4 = (size_t)n / 4;
        for (size_t i = first; i < n4; i += stride) {
            float4 a = reinterpret_cast<float4*>(x)[i];
            a.x = __fmul_rn(a.x, s), a.y = __fmul_rn(a.y, s), a.z = __fmul_rn(a.z, s), a.w = __fmul_rn(a.w, s);
            reinterpret_cast<float4*>(x)[i] = a;
        }
        scalar_from = n4 * 4;
    }
    for (size_t i = scalar_from + first; i < (size_t)n; i += stride) x[i] = __fmul_rn(x[i], s);
}
SCALERL_EXPORT_KERNEL(scale_f32)

// Σ over a 1-D block (blockDim.x a multiple of 32, ≤ 1024) in f64, fixed order; result in thread 0.
__device__ __forceinline__ double adamw_block_sum_f64(double v SCALERL_LOC) {
    SHARED(double, adamw_partial, [32]);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, 32 SCALERL_AT);
    if (lane == 0) adamw_partial[warp] = v;
    __syncthreads(SCALERL_AT1);
    v = lane < nwarps ? adamw_partial[lane] : 0.0;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, 32 SCALERL_AT);
    return v;
}

extern "C" __global__ void sum_squares_f32_partial(const float* g, long long n, long long chunk, double* partial) {
    const size_t start = (size_t)blockIdx.x * chunk;
    const size_t len = min((size_t)n, start + (size_t)chunk) - start;
    // Thread i sums the groups of 4 elements i, i + blockDim.x, … in order, with one 16-byte load
    // per group when g is 16-byte aligned (chunk is a multiple of 4: so is every chunk), else 4
    // loads: the same additions either way, so the bits do not depend on the alignment.
    const bool vec = ((uintptr_t)g & 15) == 0;
    double s = 0.0;
    for (size_t i = threadIdx.x; 4 * i < len; i += blockDim.x) {
        const float* p = g + start + 4 * i;
        if (vec && 4 * i + 4 <= len) {
            const float4 a = *reinterpret_cast<const float4*>(p);
            s += (double)a.x * a.x;
            s += (double)a.y * a.y;
            s += (double)a.z * a.z;
            s += (double)a.w * a.w;
        } else {
            for (size_t e = 0; e < 4 && 4 * i + e < len; e++) s += (double)p[e] * p[e];
        }
    }
    s = adamw_block_sum_f64(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
SCALERL_EXPORT_KERNEL(sum_squares_f32_partial)

extern "C" __global__ void sum_squares_f64_final(const double* partial, int parts, double* out) {
    double s = 0.0;
    for (int i = threadIdx.x; i < parts; i += blockDim.x) s += partial[i];
    s = adamw_block_sum_f64(s);
    if (threadIdx.x == 0) out[0] = s;
}
SCALERL_EXPORT_KERNEL(sum_squares_f64_final)
