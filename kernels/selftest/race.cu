// race.cu — planted data races for the ThreadSanitizer build (scripts/interpret-tsan.sh).
// No fiber order shows a non-atomic race (fibers never interleave between sync points);
// TSan does, given barriers and warp collectives as its only happens-before edges.
#include "../common.cuh"

extern "C" __global__ void race_nonatomic_add(int* counter) {
    *counter += 1;  // BUG: every thread of the block, no atomic
}
SCALERL_EXPORT_KERNEL(race_nonatomic_add)

extern "C" __global__ void race_missing_barrier(const float* in, float* out) {
    SHARED(float, s, [64]);
    s[threadIdx.x] = in[threadIdx.x];
    // BUG: __syncthreads() missing
    out[threadIdx.x] = s[(threadIdx.x + 1) % 64];
}
SCALERL_EXPORT_KERNEL(race_missing_barrier)

extern "C" __global__ void race_cross_block(float* out) {
    out[threadIdx.x] += 1.0f;  // BUG: every block updates the same elements (blockIdx forgotten)
}
SCALERL_EXPORT_KERNEL(race_cross_block)
