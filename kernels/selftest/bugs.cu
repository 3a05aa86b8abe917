// bugs.cu — planted bugs the interpreter must catch (selftest only; all are valid CUDA
// that nvcc compiles, they are wrong at run time). main.cpp checks each one:
//   bug_oob_global_write   ASan heap-buffer-overflow (run in a forked child)
//   bug_smem_overflow      ASan heap-buffer-overflow on the per-block shared allocation
//   bug_dyn_smem_overflow  the same for extern (dynamic) shared memory
//   bug_missing_sync       wrong result under the reverse / random schedules only
//   bug_partial_barrier    error "partial barrier" naming this file and the line
//   bug_divergent_barrier  error naming both __syncthreads lines
//   bug_shfl_exited_lane   error: a lane reads a lane that has returned
//   bug_shfl_mask_exited   error: the mask names a lane that has returned
//   bug_deadlock           error: half a warp in __syncwarp, the rest in __syncthreads
//   bug_assert             error: device assert() with file:line
//   bug_cp_async_early     ASan use-after-poison: shared read before cp.async wait_group
//   bug_cp_async_overflow  ASan heap-buffer-overflow: cp.async past the dynamic shared memory
//   bug_spin_wait          watchdog: a spin on a flag another fiber would set (forked)
#include "../common.cuh"

extern "C" __global__ void bug_oob_global_write(float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) out[i] = 1.0f;  // BUG: <= writes out[n]
}
SCALERL_EXPORT_KERNEL(bug_oob_global_write)

extern "C" __global__ void bug_smem_overflow(const float* in, float* out) {
    SHARED(float, buf, [64]);
    buf[threadIdx.x + 1] = in[threadIdx.x];  // BUG: thread 63 writes buf[64]
    __syncthreads();
    out[threadIdx.x] = buf[threadIdx.x];
}
SCALERL_EXPORT_KERNEL(bug_smem_overflow)

extern "C" __global__ void bug_missing_sync(const float* in, float* out) {
    SHARED(float, s, [256]);
    const int t = threadIdx.x;
    s[t] = 2.0f * in[t];
    // BUG: __syncthreads() missing; sequential order hides it (t-1 ran to completion first)
    out[t] = s[t] + (t > 0 ? s[t - 1] : 0.0f);
}
SCALERL_EXPORT_KERNEL(bug_missing_sync)

extern "C" __global__ void bug_partial_barrier(float* out) {
    if (threadIdx.x < 16) {
        __syncthreads();  // BUG: only threads 0-15 get here
    }
    out[threadIdx.x] = 1.0f;
}
SCALERL_EXPORT_KERNEL(bug_partial_barrier)

extern "C" __global__ void bug_divergent_barrier(float* out) {
    if (threadIdx.x % 2) {
        out[threadIdx.x] = 1.0f;
        __syncthreads();  // BUG: odd threads sync here...
    } else {
        out[threadIdx.x] = 2.0f;
        __syncthreads();  // ...even threads here
    }
}
SCALERL_EXPORT_KERNEL(bug_divergent_barrier)

extern "C" __global__ void bug_shfl_exited_lane(const float* in, float* out) {
    const int lane = threadIdx.x % 32;
    float v = in[threadIdx.x];
    if (lane >= 16) return;
    v += __shfl_down_sync(0x0000ffffu, v, 8);  // BUG: lanes 8-15 read lanes 16-23
    out[threadIdx.x] = v;
}
SCALERL_EXPORT_KERNEL(bug_shfl_exited_lane)

extern "C" __global__ void bug_shfl_mask_exited(const float* in, float* out) {
    const int lane = threadIdx.x % 32;
    float v = in[threadIdx.x];
    if (lane >= 16) return;
    v += __shfl_xor_sync(0xffffffffu, v, 1);  // BUG: full mask after half the warp left
    out[threadIdx.x] = v;
}
SCALERL_EXPORT_KERNEL(bug_shfl_mask_exited)

extern "C" __global__ void bug_deadlock(float* out) {
    if (threadIdx.x % 32 < 16) __syncwarp();  // BUG: lanes 16-31 never come
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}
SCALERL_EXPORT_KERNEL(bug_deadlock)

extern "C" __global__ void bug_assert(const float* in) {
    assert(in[threadIdx.x] >= 0.0f);  // BUG (planted): the test passes a negative value
}
SCALERL_EXPORT_KERNEL(bug_assert)

extern "C" __global__ void bug_cp_async_early(const float* in, float* out) {
    SHARED(float, s, [32 * 4]);
    cp_async_16(&s[threadIdx.x * 4], in + threadIdx.x * 4);
    cp_async_commit();
    out[threadIdx.x] = s[threadIdx.x * 4];  // BUG: read before cp_async_wait
    cp_async_wait<0>();
}
SCALERL_EXPORT_KERNEL(bug_cp_async_early)

extern "C" __global__ void bug_spin_wait(volatile int* flag) {
    if (threadIdx.x == 0) {
        while (*flag == 0) {}  // BUG under fibers: thread 1 never runs while 0 spins
    } else {
        *flag = 1;
    }
}
SCALERL_EXPORT_KERNEL(bug_spin_wait)

extern "C" __global__ void bug_dyn_smem_overflow(float* out) {
    EXTERN_SHARED(float, buf);
    buf[threadIdx.x] = 1.0f;  // BUG: launched with room for blockDim.x - 1 floats
    __syncthreads();
    out[threadIdx.x] = buf[0];
}
SCALERL_EXPORT_KERNEL(bug_dyn_smem_overflow)

extern "C" __global__ void bug_cp_async_overflow(const float* in, float* out) {
    EXTERN_SHARED(float, buf);
    cp_async_16(&buf[threadIdx.x * 4], in + threadIdx.x * 4);  // BUG: room for blockDim.x - 1 chunks
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    out[threadIdx.x] = buf[0];
}
SCALERL_EXPORT_KERNEL(bug_cp_async_overflow)
