// colsum.cu — deterministic column sums, the two stages of every reduction over tokens that
// ends in a parameter gradient:
//
//   colsum_bf16_partial:  partial[g, c] = Σ_{r in group g} x[r, c]   (f32, rows in order)
//   colsum_f32_acc:       out[c]       += Σ_g partial[g, c]          (f32, groups in order)
//
// Together they are the q/k/v bias gradient (db += Σ_rows dy); rmsnorm_backward.cu writes its
// own per-block partials of dw and finishes with colsum_f32_acc. The groups are fixed by the
// launcher from the row count alone (never from the device), and every sum runs in a fixed
// order, so the result is bit-identical run to run, schedule to schedule and GPU to GPU.
// CPU reference: src/ops/cpu/linear.rs `bias_backward` (f64 sums; here f32, relative error
// ~1e-6 at thousands of rows).
// Layout: x [rows, cols] bf16 row-major; partial [groups, cols] f32; out [cols] f32 (a view of
// the flat f32 gradient buffer, any 4-byte alignment).
// Launch: colsum_bf16_partial grid = (ceil(cols / (2 · 128)), groups), block = 128, two
// neighbouring columns per thread (one 4-byte bf16x2 load per row when cols is even and x is
// 4-byte aligned: `pairs2`), rows_per_group consecutive rows per block. colsum_f32_acc grid =
// ceil(cols / 256), block = 256, a column per thread. No shared memory, no barriers.
// Napkin math: bytes = 2 · rows · cols (the bf16 read) + 8 · groups · cols (partials written and
// read) + 8 · cols (out); FLOPs 1 per element: memory-bound. The launcher picks ~256 groups
// (rows_per_group = max(4, ceil(rows / 256))): enough blocks to fill an H100 while the partials
// stay small. 1.5B q bias at 4096 tokens: 12.6 MB + 3.1 MB of partials, ~5 µs at 3 TB/s.
#include "common.cuh"

extern "C" __global__ void colsum_bf16_partial(const __nv_bfloat16* x, float* partial, int rows, int cols,
                                               int rows_per_group) {
    const int c = 2 * (blockIdx.x * blockDim.x + threadIdx.x);
    if (c >= cols) return;
    const int g = blockIdx.y;
    const int r0 = g * rows_per_group, r1 = min(rows, r0 + rows_per_group);
    float s0 = 0.0f, s1 = 0.0f;
    const bool two = c + 1 < cols;
    const bool pairs2 = cols % 2 == 0 && ((uintptr_t)x & 3) == 0;
    if (pairs2) {
        // Unrolled so several rows' loads are in flight at once (the adds stay in row order).
#pragma unroll 4
        for (int r = r0; r < r1; r++) {
            const float2 v = unpack_bf16x2(*reinterpret_cast<const uint32_t*>(x + (size_t)r * cols + c));
            s0 += v.x;
            s1 += v.y;
        }
    } else {
        for (int r = r0; r < r1; r++) {
            s0 += __bfloat162float(x[(size_t)r * cols + c]);
            if (two) s1 += __bfloat162float(x[(size_t)r * cols + c + 1]);
        }
    }
    partial[(size_t)g * cols + c] = s0;
    if (two) partial[(size_t)g * cols + c + 1] = s1;
}
SCALERL_EXPORT_KERNEL(colsum_bf16_partial)

extern "C" __global__ void colsum_f32_acc(const float* partial, int groups, int cols, float* out) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float s = 0.0f;
    for (int g = 0; g < groups; g++) s += partial[(size_t)g * cols + c];
    out[c] += s;
}
SCALERL_EXPORT_KERNEL(colsum_f32_acc)
