// smem.cu — selftest: dynamic (extern) shared memory next to two static arrays and a
// scalar. Each block reverses its slice of `in` through shared memory.
// Launch: block = n threads, dynamic smem = n * sizeof(float).
#include "../common.cuh"

extern "C" __global__ void selftest_dyn_smem(const float* in, float* out) {
    EXTERN_SHARED(float, buf);
    SHARED(int, tag, [4]);
    SHARED(float, scale, );
    const int t = threadIdx.x, n = blockDim.x;
    const float* src = in + (size_t)blockIdx.x * n;
    if (t == 0) scale = 2.0f;
    if (t < 4) tag[t] = t * t;
    buf[t] = src[t];
    __syncthreads();
    out[(size_t)blockIdx.x * n + t] = buf[n - 1 - t] * scale + (float)tag[t % 4];
}
SCALERL_EXPORT_KERNEL(selftest_dyn_smem)
