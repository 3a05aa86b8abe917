// cast.cu — element-wise casts between f32 and bf16 (round to nearest even, like PyTorch's
// .to(torch.bfloat16) and half::bf16::from_f32). Used to turn the f32 weights of `ModelWeights`
// into bf16 device weights, and the bf16 logits into f32 for the host.
//
// CPU reference: half::bf16::from_f32 / to_f32 (tests/kernels_interpret.rs).
// Layout: in [n], out [n], contiguous.
// Launch: grid = min(ceil(n / 256), 4096), block = 256; grid-stride loop. No shared memory.
// Napkin math: bytes = 6n; no FLOPs worth counting: copy bandwidth is the roofline.
#include "common.cuh"

extern "C" __global__ void cast_f32_to_bf16(const float* in, __nv_bfloat16* out, long long n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)n; i += stride)
        out[i] = __float2bfloat16(in[i]);
}
SCALERL_EXPORT_KERNEL(cast_f32_to_bf16)

extern "C" __global__ void cast_bf16_to_f32(const __nv_bfloat16* in, float* out, long long n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)n; i += stride)
        out[i] = __bfloat162float(in[i]);
}
SCALERL_EXPORT_KERNEL(cast_bf16_to_f32)
