// atomics.cu — selftest: atomicAdd (float, int, unsigned, unsigned long long, bf16),
// atomicMax/Min, an atomicCAS increment loop and atomicExch, from many blocks (several OS
// threads). Launch: any grid, any block; n = total threads.
#include "../common.cuh"

struct AtomicOut {
    float fsum; int isum; unsigned usum; unsigned long long ullsum;
    int imax, imin; unsigned umax; int cas_count; int exch_slot; __nv_bfloat16 bsum;
};

extern "C" __global__ void selftest_atomics(AtomicOut* o, int* exch_old) {
    const int gid = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(&o->fsum, 1.0f);
    atomicAdd(&o->isum, gid);
    atomicAdd(&o->usum, 2u);
    atomicAdd(&o->ullsum, 1ull << 33);
    atomicMax(&o->imax, (gid * 37) % 1001 - 500);
    atomicMin(&o->imin, (gid * 37) % 1001 - 500);
    atomicMax(&o->umax, (unsigned)gid * 3u);
    int old = atomicAdd(&o->cas_count, 0), assumed;  // an atomic read: plain would race
    do {  // the classic CAS loop
        assumed = old;
        old = atomicCAS(&o->cas_count, assumed, assumed + 1);
    } while (old != assumed);
    exch_old[gid] = atomicExch(&o->exch_slot, gid);
    atomicAdd(&o->bsum, __float2bfloat16(1.0f));
}
SCALERL_EXPORT_KERNEL(selftest_atomics)
