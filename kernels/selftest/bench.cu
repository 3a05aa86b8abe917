// bench.cu — kernels that measure the interpreter itself (selftest --bench): an empty
// kernel (launch cost) and loops of barriers / shuffles (cost per thread per sync point).
#include "../common.cuh"

extern "C" __global__ void bench_empty() {}
SCALERL_EXPORT_KERNEL(bench_empty)

extern "C" __global__ void bench_syncthreads(int iters, float* out) {
    float v = threadIdx.x;
    for (int i = 0; i < iters; ++i) { v += 1.0f; __syncthreads(); }
    if (threadIdx.x == 0) out[blockIdx.x] = v;
}
SCALERL_EXPORT_KERNEL(bench_syncthreads)

extern "C" __global__ void bench_shfl(int iters, float* out) {
    float v = threadIdx.x;
    for (int i = 0; i < iters; ++i) v += __shfl_xor_sync(0xffffffffu, v, 1);
    if (threadIdx.x == 0) out[blockIdx.x] = v;
}
SCALERL_EXPORT_KERNEL(bench_shfl)
