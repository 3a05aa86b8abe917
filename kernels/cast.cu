// cast.cu — element-wise casts between f32 and bf16 (round to nearest even, like PyTorch's
// .to(torch.bfloat16) and half::bf16::from_f32). Used to turn the f32 weights of `ModelWeights`
// into bf16 device weights, and the bf16 logits into f32 for the host.
//
// CPU reference: half::bf16::from_f32 / to_f32 (tests/kernels_interpret.rs).
// Layout: in [n], out [n], contiguous.
// Launch: grid = min(ceil(n / 256), 4096) (f32 → bf16: ceil(n / 4 / 256)), block = 256;
// grid-stride loop. No shared memory.
// Napkin math: bytes = 6n; no FLOPs worth counting: copy bandwidth is the roofline.
#include "common.cuh"

// With `in` 16-byte and `out` 8-byte aligned (whole buffers: the master -> bf16 weight sync of
// a flat parameter set), a thread converts 4 elements per step (one 16-byte load, one 8-byte
// store; the launcher's grid then covers n / 4); else one. The same rounding either way.
extern "C" __global__ void cast_f32_to_bf16(const float* in, __nv_bfloat16* out, long long n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    const size_t first = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t scalar_from = 0;
    if (((uintptr_t)in & 15) == 0 && ((uintptr_t)out & 7) == 0) {
        const size_t n4 = (size_t)n / 4;
        for (size_t i = first; i < n4; i += stride) {
            const float4 v = reinterpret_cast<const float4*>(in)[i];
            reinterpret_cast<uint2*>(out)[i] = make_uint2(pack_bf16x2(v.x, v.y), pack_bf16x2(v.z, v.w));
        }
        scalar_from = n4 * 4;
    }
    for (size_t i = scalar_from + first; i < (size_t)n; i += stride) out[i] = __float2bfloat16(in[i]);
}
SCALERL_EXPORT_KERNEL(cast_f32_to_bf16)

extern "C" __global__ void cast_bf16_to_f32(const __nv_bfloat16* in, float* out, long long n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)n; i += stride)
        out[i] = __bfloat162float(in[i]);
}
SCALERL_EXPORT_KERNEL(cast_bf16_to_f32)
