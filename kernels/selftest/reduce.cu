// reduce.cu — selftest: one row per block reduced with block_reduce_sum / _max (the
// RMSNorm and softmax pattern), plus __syncthreads_count/_and/_or.
// Launch: grid = rows, block = 256 (any multiple of 32).
#include "../common.cuh"

extern "C" __global__ void selftest_row_reduce(const float* x, float* sums, float* maxs, int* counts, int cols) {
    const float* row = x + (size_t)blockIdx.x * cols;
    float s = 0.0f, m = -INFINITY;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        s += row[i];
        m = fmaxf(m, row[i]);
    }
    s = block_reduce_sum(s);
    m = block_reduce_max(m);
    const bool pos = row[threadIdx.x % cols] > 0.0f;
    const int c = __syncthreads_count(pos);
    const int all = __syncthreads_and(pos), any = __syncthreads_or(pos);
    if (threadIdx.x == 0) {
        sums[blockIdx.x] = s;
        maxs[blockIdx.x] = m;
        counts[3 * blockIdx.x] = c;
        counts[3 * blockIdx.x + 1] = all;
        counts[3 * blockIdx.x + 2] = any;
    }
}
SCALERL_EXPORT_KERNEL(selftest_row_reduce)
