// indices.cu — selftest: threadIdx/blockIdx/blockDim/gridDim on a 3-D grid of 3-D blocks.
// Each thread writes its linear global id (x fastest, as CUDA numbers threads) at that id.
#include "../common.cuh"

extern "C" __global__ void selftest_indices(unsigned* out) {
    const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned bid = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const unsigned nthreads = blockDim.x * blockDim.y * blockDim.z;
    out[bid * nthreads + tid] = bid * 1000 + tid;
}
SCALERL_EXPORT_KERNEL(selftest_indices)
