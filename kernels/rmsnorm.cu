// rmsnorm.cu — RMSNorm fused with the residual add (the pre-attention and pre-MLP norms).
//
//   residual[r] += x[r]                       (skipped when x == nullptr: the first layer)
//   out[r]       = residual[r] / sqrt(mean(residual[r]^2) + eps) * weight
//
// CPU reference: src/ops/cpu/norm.rs `add_rmsnorm` (`add_inplace` + `rmsnorm`).
// Layout: row-major [rows, hidden] bf16; weight [hidden] bf16; f32 math inside.
// Launch: grid = rows, block = 256 (a multiple of 32); one block per row, each thread strides
// over the row twice (sum of squares, then scale), the second pass hitting L1/L2.
// Napkin math: bytes = rows * hidden * 2 * (3 with x: read x, read+write residual, write out
// — 4 counting the residual read) + hidden * 2; FLOPs ~ 4 per element: memory-bound, so the
// roofline is the copy bandwidth (bytes / time vs a device-to-device copy).
#include "common.cuh"

extern "C" __global__ void rmsnorm_residual_bf16(const __nv_bfloat16* x, __nv_bfloat16* residual,
                                                 const __nv_bfloat16* weight, __nv_bfloat16* out,
                                                 int hidden, float eps) {
    const size_t base = (size_t)blockIdx.x * hidden;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        float v = __bfloat162float(residual[base + i]);
        if (x != nullptr) {
            // The sum is rounded to bf16 before the norm, as the bf16 PyTorch model does.
            v = __bfloat162float(__float2bfloat16(v + __bfloat162float(x[base + i])));
            residual[base + i] = __float2bfloat16(v);
        }
        ss += v * v;
    }
    const float inv = rsqrtf(block_reduce_sum(ss) / hidden + eps);
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        const float v = __bfloat162float(residual[base + i]);
        out[base + i] = __float2bfloat16(v * inv * __bfloat162float(weight[i]));
    }
}
SCALERL_EXPORT_KERNEL(rmsnorm_residual_bf16)
