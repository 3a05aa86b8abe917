// rmsnorm_backward.cu — the backward of out = rmsnorm(x) · w (Hugging Face Qwen2RMSNorm), per row
// of h values, g = w ⊙ dy:
//
//   r   = 1 / sqrt(Σ x² / h + eps)
//   dx  = r · w ⊙ dy − x · r³ · (Σ_k w_k dy_k x_k) / h            (overwritten, bf16)
//   dw += Σ_rows dy ⊙ x · r                                       (accumulated, f32)
//
// The weight gradient is a deterministic two-stage reduction: each block keeps its rows' sum in
// registers (every thread owns fixed columns) and writes one partial row; colsum_f32_acc
// (colsum.cu) then adds the partials up in block order into dw. f32 math in the CPU
// reference's order of operations; the residual add of the forward needs no backward here (its
// gradient is the identity: the transformer adds dx to the stream's gradient).
// CPU reference: src/ops/cpu/norm.rs `rmsnorm_backward` (f64 dw sums).
// Layout: x (the saved pre-norm residual), dy, dx [rows, h] bf16 row-major; w [h] bf16;
// dw_partial [ceil(rows / rows_per_block), h] f32 scratch.
// Launch: grid = ceil(rows / rows_per_block), block = the smallest multiple of 32 ≥ h / 8 (so
// h ≤ 8192; 1.5B: 192 threads); each thread owns RMSB_COLS = 8 columns, 4 pairs of neighbours
// (4-byte bf16x2 accesses when h is even and x, dy, dx are 4-byte aligned, else 2-byte ones:
// the same sums, so the same bits) — so x and dy are read once into registers, one two-value block
// reduction per row (2 barriers), then dx is written and the dw sums updated. The launcher
// picks rows_per_block = max(4, ceil(rows / 256)) (~256 blocks at long batches).
// Napkin math: bytes = rows · h · 2 · 3 (read x, dy; write dx) + h · 2 (w) + 8 · blocks · h
// (partials written + read) + 8h (dw); ~10 FLOPs per element: memory-bound, roofline = copy
// bandwidth. 1.5B at 4096 tokens: 37.7 MB + 3.1 MB of partials, ~14 µs at 3 TB/s.
#include "common.cuh"

#define RMSB_COLS 8

// Sums of two values over a 1-D block (blockDim.x a multiple of 32), in a fixed order; the result
// in every thread. The leading barrier protects the scratch from the previous call's readers.
__device__ __forceinline__ float2 rmsb_block_sum2(float2 v SCALERL_LOC) {
    SHARED(float2, rmsb_partial, [32]);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        v.x += __shfl_xor_sync(0xffffffffu, v.x, o, 32 SCALERL_AT);
        v.y += __shfl_xor_sync(0xffffffffu, v.y, o, 32 SCALERL_AT);
    }
    __syncthreads(SCALERL_AT1);
    if (lane == 0) rmsb_partial[warp] = v;
    __syncthreads(SCALERL_AT1);
    v = lane < nwarps ? rmsb_partial[lane] : make_float2(0.0f, 0.0f);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        v.x += __shfl_xor_sync(0xffffffffu, v.x, o, 32 SCALERL_AT);
        v.y += __shfl_xor_sync(0xffffffffu, v.y, o, 32 SCALERL_AT);
    }
    return v;
}

// Thread tid owns the column pairs (2p, 2p + 1), p = tid + j·blockDim.x, j < RMSB_PAIRS. VEC: one
// 4-byte bf16x2 access per pair (h even, x, dy, dx 4-byte aligned); else two 2-byte accesses
// (and a guard for an odd h's last column). The same columns per thread and the same sums either
// way, so the bits do not depend on the alignment.
#define RMSB_PAIRS (RMSB_COLS / 2)
template <bool VEC>
__device__ __forceinline__ void rmsb_rows(const __nv_bfloat16* x, const __nv_bfloat16* w, const __nv_bfloat16* dy,
                                          __nv_bfloat16* dx, float* dw_partial, int rows, int hidden,
                                          int rows_per_block, float eps) {
    const int tid = threadIdx.x, bd = blockDim.x;
    float wv[RMSB_COLS], acc[RMSB_COLS];
#pragma unroll
    for (int k = 0; k < RMSB_COLS; k++) {
        const int c = (tid + (k / 2) * bd) * 2 + k % 2;
        wv[k] = c < hidden ? __bfloat162float(w[c]) : 0.0f;
        acc[k] = 0.0f;
    }
    const int r0 = blockIdx.x * rows_per_block, r1 = min(rows, r0 + rows_per_block);
    for (int r = r0; r < r1; r++) {
        const size_t base = (size_t)r * hidden;
        float xv[RMSB_COLS], gv[RMSB_COLS];
        float ss = 0.0f, dot = 0.0f;
#pragma unroll
        for (int j = 0; j < RMSB_PAIRS; j++) {
            const int c = (tid + j * bd) * 2;
            if constexpr (VEC) {
                float2 a = make_float2(0.0f, 0.0f), b = make_float2(0.0f, 0.0f);
                if (c < hidden) {
                    a = unpack_bf16x2(*reinterpret_cast<const uint32_t*>(x + base + c));
                    b = unpack_bf16x2(*reinterpret_cast<const uint32_t*>(dy + base + c));
                }
                xv[2 * j] = a.x, xv[2 * j + 1] = a.y;
                gv[2 * j] = b.x, gv[2 * j + 1] = b.y;
            } else {
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const bool in = c + e < hidden;
                    xv[2 * j + e] = in ? __bfloat162float(x[base + c + e]) : 0.0f;
                    gv[2 * j + e] = in ? __bfloat162float(dy[base + c + e]) : 0.0f;
                }
            }
#pragma unroll
            for (int e = 0; e < 2; e++) {
                ss += xv[2 * j + e] * xv[2 * j + e];
                dot += wv[2 * j + e] * gv[2 * j + e] * xv[2 * j + e];
            }
        }
        const float2 tot = rmsb_block_sum2(make_float2(ss, dot));
        const float rinv = 1.0f / sqrtf(tot.x / (float)hidden + eps);
        const float coef = rinv * rinv * rinv * tot.y / (float)hidden;
#pragma unroll
        for (int j = 0; j < RMSB_PAIRS; j++) {
            const int c = (tid + j * bd) * 2;
            if (c >= hidden) continue;
            float d[2];
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const int k = 2 * j + e;
                d[e] = rinv * wv[k] * gv[k] - xv[k] * coef;
                acc[k] += gv[k] * xv[k] * rinv;
            }
            if constexpr (VEC) {
                *reinterpret_cast<uint32_t*>(dx + base + c) = pack_bf16x2(d[0], d[1]);
            } else {
                dx[base + c] = __float2bfloat16(d[0]);
                if (c + 1 < hidden) dx[base + c + 1] = __float2bfloat16(d[1]);
            }
        }
    }
#pragma unroll
    for (int k = 0; k < RMSB_COLS; k++) {
        const int c = (tid + (k / 2) * bd) * 2 + k % 2;
        if (c < hidden) dw_partial[(size_t)blockIdx.x * hidden + c] = acc[k];
    }
}

extern "C" __global__ void rmsnorm_backward_bf16(const __nv_bfloat16* x, const __nv_bfloat16* w, const __nv_bfloat16* dy,
                                                 __nv_bfloat16* dx, float* dw_partial, int rows, int hidden,
                                                 int rows_per_block, float eps) {
    assert(blockDim.x % 32 == 0 && (long long)blockDim.x * RMSB_COLS >= hidden);
    if (hidden % 2 == 0 && (((uintptr_t)x | (uintptr_t)dy | (uintptr_t)dx) & 3) == 0) {
        rmsb_rows<true>(x, w, dy, dx, dw_partial, rows, hidden, rows_per_block, eps);
    } else {
        rmsb_rows<false>(x, w, dy, dx, dw_partial, rows, hidden, rows_per_block, eps);
    }
}
SCALERL_EXPORT_KERNEL(rmsnorm_backward_bf16)
