// common.cuh — shared by every kernel, in both builds:
//   nvcc (the product): real CUDA, inline PTX for mma.sync / ldmatrix / cp.async;
//   g++ -DSCALERL_INTERPRET (CI): the same source on the host runtime in interpret/,
//   where the PTX wrappers are host twins with identical names and signatures.
// Kernel files include only this header and follow four rules:
//   1. kernels are `extern "C" __global__` (one name for cudarc and the interpreter) and
//      the file ends with SCALERL_EXPORT_KERNEL(name) per kernel (no-op under nvcc);
//   2. shared memory is declared with SHARED(T, name, dims) / EXTERN_SHARED(T, name),
//      e.g. SHARED(float, tile, [64][64]); SHARED(float, total, ); EXTERN_SHARED(float, smem);
//      (one heap allocation per declaration per block in interpret mode, so ASan sees
//      overflows; a bare __shared__ does not compile there — see interpret/cuda_shim.h);
//   3. warp-synchronous code uses __syncwarp / *_sync intrinsics (wrong on Volta+ anyway);
//   4. no thread returns before a __syncthreads the others reach (the interpreter reports it).
#pragma once

#ifdef SCALERL_INTERPRET
#include "interpret/cuda_shim.h"
#include "interpret/ptx_twins.h"
// Helpers below take the caller's source location so an error inside them names the
// kernel line that called them, not this file.
#define SCALERL_LOC , ::scalerl_interp::Loc scalerl_loc = ::scalerl_interp::Loc::current()
#define SCALERL_AT , scalerl_loc
#define SCALERL_AT1 scalerl_loc
#else
#include <assert.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>
#define SHARED(T, name, dims) __shared__ __align__(16) T name dims
// one extern array for every kernel of a file avoids nvcc's "incompatible redeclaration"
#define EXTERN_SHARED(T, name)                                    \
    extern __shared__ __align__(16) unsigned char scalerl_dyn_smem_[]; \
    T* name = reinterpret_cast<T*>(scalerl_dyn_smem_)
#define SCALERL_EXPORT_KERNEL(name)
#define SCALERL_EXPORT_KERNEL_AS(str, ...)
#define SCALERL_LOC
#define SCALERL_AT
#define SCALERL_AT1

// ---- inline-PTX wrappers (sm_80+) -------------------------------------------------------
// D = A*B + C, m16n8k16, A row-major 16x16, B col-major 16x8, f32 accumulators.
// Fragment layouts: see interpret/ptx_twins.h (the PTX ISA's, with g = lane>>2, t = lane&3).
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                  const float (&c)[4]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%10,%11,%12,%13};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
__device__ __forceinline__ void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                 const float (&c)[4]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%10,%11,%12,%13};\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
                   "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
__device__ __forceinline__ unsigned scalerl_smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
// ldmatrix: lanes 8i..8i+7 pass the (16-byte aligned) row addresses of 8x8 b16 matrix i.
__device__ __forceinline__ void ldmatrix_x1(uint32_t& r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r) : "r"(scalerl_smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(scalerl_smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(scalerl_smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x1_trans(uint32_t& r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r) : "r"(scalerl_smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(scalerl_smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(scalerl_smem_addr(p)));
}
// cp.async.cg: 16 bytes global -> shared, bypassing L1. _zfill(valid = false) writes zeros.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(scalerl_smem_addr(smem)), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_16_zfill(void* smem, const void* gmem, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
                 :: "r"(scalerl_smem_addr(smem)), "l"(gmem), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" :: "n"(N) : "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
#endif  // SCALERL_INTERPRET

// ---- bf16 helpers ----------------------------------------------------------------------
// Two values in one 32-bit register, `lo` in the low half: the mma/ldmatrix fragment format.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    return uint32_t(__bfloat16_as_ushort(__float2bfloat16(lo))) |
           (uint32_t(__bfloat16_as_ushort(__float2bfloat16(hi))) << 16);
}
__device__ __forceinline__ float2 unpack_bf16x2(uint32_t v) {
    return make_float2(__bfloat162float(__ushort_as_bfloat16((unsigned short)(v & 0xffffu))),
                       __bfloat162float(__ushort_as_bfloat16((unsigned short)(v >> 16))));
}

// ---- warp / block reductions -----------------------------------------------------------
// Result in every lane of the (full) warp.
__device__ __forceinline__ float warp_reduce_sum(float v SCALERL_LOC) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o, 32 SCALERL_AT);
    return v;
}
__device__ __forceinline__ float warp_reduce_max(float v SCALERL_LOC) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o, 32 SCALERL_AT));
    return v;
}
// 1-D blocks, blockDim.x a multiple of 32 (<= 1024). Result in every thread. Safe to call
// repeatedly: the leading barrier protects the scratch from the previous call's readers.
__device__ __forceinline__ float block_reduce_sum(float v SCALERL_LOC) {
    SHARED(float, scalerl_partial, [32]);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    v = warp_reduce_sum(v SCALERL_AT);
    __syncthreads(SCALERL_AT1);
    if (lane == 0) scalerl_partial[warp] = v;
    __syncthreads(SCALERL_AT1);
    v = lane < nwarps ? scalerl_partial[lane] : 0.0f;
    return warp_reduce_sum(v SCALERL_AT);
}
__device__ __forceinline__ float block_reduce_max(float v SCALERL_LOC) {
    SHARED(float, scalerl_partial_max, [32]);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    v = warp_reduce_max(v SCALERL_AT);
    __syncthreads(SCALERL_AT1);
    if (lane == 0) scalerl_partial_max[warp] = v;
    __syncthreads(SCALERL_AT1);
    v = lane < nwarps ? scalerl_partial_max[lane] : -INFINITY;
    return warp_reduce_max(v SCALERL_AT);
}
