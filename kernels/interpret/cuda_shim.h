// cuda_shim.h — the CUDA surface kernels see when compiled by g++ for interpret mode
// (-DSCALERL_INTERPRET; included by common.cuh). Qualifiers vanish, threadIdx & co.
// read the current fiber's context, and every synchronising intrinsic takes a defaulted
// std::source_location so errors name the kernel's file:line.
//
// Shared memory: kernels declare it with SHARED(T, name, dims) / EXTERN_SHARED(T, name)
// (common.cuh), NOT with a source rewrite. Why the macro: the same text is the plain
// `__shared__` declaration under nvcc, it needs no build step (build.rs just compiles
// the .cu as C++), and in interpret mode each declaration becomes its own per-block heap
// allocation, so AddressSanitizer puts redzones around it and one block's shared memory
// is never seen by another OS thread (`#define __shared__ static` gets both wrong).
// A bare `__shared__` is a compile error here so it can't slip through.
#pragma once
#include <algorithm>
#include <atomic>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include "bf16.h"
#include "interp.h"

// ---- qualifiers -----------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __grid_constant__
#define __constant__
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static_assert(false, "interpret mode: declare shared memory with SHARED()/EXTERN_SHARED() (common.cuh)");

#define threadIdx (::scalerl_interp::tls_cur->threadIdx)
#define blockIdx (::scalerl_interp::tls_cur->blockIdx)
#define blockDim (::scalerl_interp::tls_cur->blockDim)
#define gridDim (::scalerl_interp::tls_cur->gridDim)
#define warpSize 32

#define SHARED(T, name, dims)                                                               \
    static const char scalerl_key_##name = 0;                                               \
    auto& name = *reinterpret_cast<T(*) dims>(::scalerl_interp::static_shared(             \
        &scalerl_key_##name, sizeof(T dims), alignof(T), #name, ::scalerl_interp::Loc::current()))
#define EXTERN_SHARED(T, name) T* name = reinterpret_cast<T*>(::scalerl_interp::dynamic_shared())

// ---- vector types -----------------------------------------------------------------------
#define SCALERL_VEC2(T, N, A) struct alignas(A) N##2 { T x, y; }; \
    inline N##2 make_##N##2(T x, T y) { return {x, y}; }
#define SCALERL_VEC4(T, N, A) struct alignas(A) N##4 { T x, y, z, w; }; \
    inline N##4 make_##N##4(T x, T y, T z, T w) { return {x, y, z, w}; }
SCALERL_VEC2(float, float, 8) SCALERL_VEC4(float, float, 16)
SCALERL_VEC2(int, int, 8) SCALERL_VEC4(int, int, 16)
SCALERL_VEC2(unsigned int, uint, 8) SCALERL_VEC4(unsigned int, uint, 16)
SCALERL_VEC2(double, double, 16) SCALERL_VEC2(long long, longlong, 16)
SCALERL_VEC2(short, short, 4) SCALERL_VEC2(unsigned short, ushort, 4)
SCALERL_VEC4(unsigned char, uchar, 4) SCALERL_VEC4(char, char, 4)
#undef SCALERL_VEC2
#undef SCALERL_VEC4
struct float3 { float x, y, z; };
inline float3 make_float3(float x, float y, float z) { return {x, y, z}; }
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return {x, y, z}; }

inline float2 __bfloat1622float2(__nv_bfloat162 v) { return {float(v.x), float(v.y)}; }
inline __nv_bfloat162 __float22bfloat162_rn(float2 v) { return {__nv_bfloat16(v.x), __nv_bfloat16(v.y)}; }
inline float2 __half22float2(__half2 v) { return {float(v.x), float(v.y)}; }
inline __half2 __float22half2_rn(float2 v) { return {__half(v.x), __half(v.y)}; }

// ---- barriers and warp collectives --------------------------------------------------------
using scalerl_interp::Loc;
inline void __syncthreads(Loc loc = Loc::current()) { scalerl_interp::block_sync(0, loc); }
inline int __syncthreads_count(int p, Loc loc = Loc::current()) { return scalerl_interp::block_sync(p != 0, loc); }
inline int __syncthreads_or(int p, Loc loc = Loc::current()) { return scalerl_interp::block_sync(p != 0, loc) != 0; }
inline int __syncthreads_and(int p, Loc loc = Loc::current()) {
    return unsigned(scalerl_interp::block_sync(p != 0, loc)) == scalerl_interp::block_threads();
}

namespace scalerl_interp {
template <class T> inline uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp collectives move <= 8 bytes");
    uint64_t u = 0; std::memcpy(&u, &v, sizeof(T)); return u;
}
template <class T> inline T from_bits(uint64_t u) { T v; std::memcpy(&v, &u, sizeof(T)); return v; }
inline uint64_t warp_op(const CollectiveOp* op, unsigned mask, uint64_t in, int b, int c, const Loc& loc) {
    WarpPayload p{in, b, c, 0};
    warp_sync(op, mask, &p, loc);
    return p.out;
}
template <class T> inline T shfl(const CollectiveOp* op, unsigned mask, T v, int b, int width, bool clamp_hi, const Loc& loc) {
    if (width <= 0 || width > 32 || (width & (width - 1))) trap("shuffle width must be a power of two <= 32", loc);
    // PTX shfl.sync operand c: segment mask in bits 12:8, clamp lane in 4:0 (see cuda's sm_30_intrinsics.hpp)
    const int c = ((32 - width) << 8) | (clamp_hi ? 0x1f : 0);
    return from_bits<T>(warp_op(op, mask, to_bits(v), b, c, loc));
}
}  // namespace scalerl_interp

inline void __syncwarp(unsigned mask = 0xffffffffu, Loc loc = Loc::current()) {
    scalerl_interp::warp_op(&scalerl_interp::op_syncwarp, mask, 0, 0, 0, loc);
}
template <class T> inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = 32, Loc loc = Loc::current()) {
    return scalerl_interp::shfl(&scalerl_interp::op_shfl_idx, mask, var, srcLane, width, true, loc);
}
template <class T> inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32, Loc loc = Loc::current()) {
    return scalerl_interp::shfl(&scalerl_interp::op_shfl_up, mask, var, int(delta), width, false, loc);
}
template <class T> inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32, Loc loc = Loc::current()) {
    return scalerl_interp::shfl(&scalerl_interp::op_shfl_down, mask, var, int(delta), width, true, loc);
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = 32, Loc loc = Loc::current()) {
    return scalerl_interp::shfl(&scalerl_interp::op_shfl_bfly, mask, var, laneMask, width, true, loc);
}
inline int __all_sync(unsigned mask, int pred, Loc loc = Loc::current()) {
    return int(scalerl_interp::warp_op(&scalerl_interp::op_all, mask, pred != 0, 0, 0, loc));
}
inline int __any_sync(unsigned mask, int pred, Loc loc = Loc::current()) {
    return int(scalerl_interp::warp_op(&scalerl_interp::op_any, mask, pred != 0, 0, 0, loc));
}
inline unsigned __ballot_sync(unsigned mask, int pred, Loc loc = Loc::current()) {
    return unsigned(scalerl_interp::warp_op(&scalerl_interp::op_ballot, mask, pred != 0, 0, 0, loc));
}
// Not a sync point on the GPU; here the lanes of the warp that reach the same call once
// everything else has run as far as it can (what a converged warp would report).
inline unsigned __activemask(Loc loc = Loc::current()) { return scalerl_interp::warp_active(loc); }
template <class T> inline unsigned __match_any_sync(unsigned mask, T value, Loc loc = Loc::current()) {
    return unsigned(scalerl_interp::warp_op(&scalerl_interp::op_match_any, mask, scalerl_interp::to_bits(value), 0, 0, loc));
}
template <class T> inline unsigned __match_all_sync(unsigned mask, T value, int* pred, Loc loc = Loc::current()) {
    unsigned r = unsigned(scalerl_interp::warp_op(&scalerl_interp::op_match_all, mask, scalerl_interp::to_bits(value), 0, 0, loc));
    *pred = r != 0;
    return r;
}
#define SCALERL_REDUX(NAME, OP, T)                                                          \
    inline T NAME(unsigned mask, T v, Loc loc = Loc::current()) {                           \
        return T(scalerl_interp::warp_op(&scalerl_interp::OP, mask, uint32_t(v), std::is_signed_v<T>, 0, loc)); \
    }
SCALERL_REDUX(__reduce_add_sync, op_redux_add, unsigned) SCALERL_REDUX(__reduce_add_sync, op_redux_add, int)
SCALERL_REDUX(__reduce_min_sync, op_redux_min, unsigned) SCALERL_REDUX(__reduce_min_sync, op_redux_min, int)
SCALERL_REDUX(__reduce_max_sync, op_redux_max, unsigned) SCALERL_REDUX(__reduce_max_sync, op_redux_max, int)
SCALERL_REDUX(__reduce_and_sync, op_redux_and, unsigned) SCALERL_REDUX(__reduce_or_sync, op_redux_or, unsigned)
SCALERL_REDUX(__reduce_xor_sync, op_redux_xor, unsigned)
#undef SCALERL_REDUX

inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_signal_fence(std::memory_order_seq_cst); }
inline void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }
[[noreturn]] inline void __trap(Loc loc = Loc::current()) { scalerl_interp::trap("__trap()", loc); }
inline void __nanosleep(unsigned) {}
inline long long clock64() { return static_cast<long long>(__builtin_ia32_rdtsc()); }

// device assert() aborts the launch (with file:line), not the process
#undef assert
#define assert(e) ((e) ? void(0) : ::scalerl_interp::trap("assert(" #e ") failed", ::scalerl_interp::Loc::current()))

// ---- atomics: acq_rel so ThreadSanitizer sees the usual fence+atomic patterns ------------
namespace scalerl_interp {
template <class T> inline std::atomic_ref<T> aref(T* p) { return std::atomic_ref<T>(*p); }
constexpr auto kAO = std::memory_order_acq_rel;
template <class T, class F> inline T atomic_update(T* p, F f) {  // CAS loop for what atomic_ref lacks
    auto a = aref(p); T old = a.load(std::memory_order_relaxed);
    while (!a.compare_exchange_weak(old, f(old), kAO, std::memory_order_relaxed)) {}
    return old;
}
}  // namespace scalerl_interp
#define SCALERL_ATOMIC_INT(T)                                                                           \
    inline T atomicAdd(T* p, T v) { return scalerl_interp::aref(p).fetch_add(v, scalerl_interp::kAO); } \
    inline T atomicSub(T* p, T v) { return scalerl_interp::aref(p).fetch_sub(v, scalerl_interp::kAO); } \
    inline T atomicAnd(T* p, T v) { return scalerl_interp::aref(p).fetch_and(v, scalerl_interp::kAO); } \
    inline T atomicOr(T* p, T v) { return scalerl_interp::aref(p).fetch_or(v, scalerl_interp::kAO); }   \
    inline T atomicXor(T* p, T v) { return scalerl_interp::aref(p).fetch_xor(v, scalerl_interp::kAO); } \
    inline T atomicExch(T* p, T v) { return scalerl_interp::aref(p).exchange(v, scalerl_interp::kAO); } \
    inline T atomicMax(T* p, T v) { return scalerl_interp::atomic_update(p, [v](T o) { return o > v ? o : v; }); } \
    inline T atomicMin(T* p, T v) { return scalerl_interp::atomic_update(p, [v](T o) { return o < v ? o : v; }); } \
    inline T atomicCAS(T* p, T cmp, T v) {                                                              \
        scalerl_interp::aref(p).compare_exchange_strong(cmp, v, scalerl_interp::kAO, std::memory_order_relaxed); \
        return cmp;                                                                                     \
    }
SCALERL_ATOMIC_INT(int) SCALERL_ATOMIC_INT(unsigned int) SCALERL_ATOMIC_INT(unsigned long long)
SCALERL_ATOMIC_INT(long long)
#undef SCALERL_ATOMIC_INT
inline unsigned short atomicCAS(unsigned short* p, unsigned short cmp, unsigned short v) {
    scalerl_interp::aref(p).compare_exchange_strong(cmp, v, scalerl_interp::kAO, std::memory_order_relaxed);
    return cmp;
}
inline unsigned atomicInc(unsigned* p, unsigned v) {
    return scalerl_interp::atomic_update(p, [v](unsigned o) { return o >= v ? 0u : o + 1; });
}
inline unsigned atomicDec(unsigned* p, unsigned v) {
    return scalerl_interp::atomic_update(p, [v](unsigned o) { return (o == 0 || o > v) ? v : o - 1; });
}
inline float atomicAdd(float* p, float v) { return scalerl_interp::aref(p).fetch_add(v, scalerl_interp::kAO); }
inline double atomicAdd(double* p, double v) { return scalerl_interp::aref(p).fetch_add(v, scalerl_interp::kAO); }
inline float atomicExch(float* p, float v) { return scalerl_interp::aref(p).exchange(v, scalerl_interp::kAO); }
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* p, __nv_bfloat16 v) {
    return __ushort_as_bfloat16(scalerl_interp::atomic_update(&p->__x, [v](unsigned short o) {
        return __bfloat16_as_ushort(__ushort_as_bfloat16(o) + v); }));
}
inline __half atomicAdd(__half* p, __half v) {
    return __ushort_as_half(scalerl_interp::atomic_update(&p->__x, [v](unsigned short o) {
        return __half_as_ushort(__ushort_as_half(o) + v); }));
}

// ---- math ---------------------------------------------------------------------------------
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return exp10f(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __fdiv_rn(float x, float y) { return x / y; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fsub_rn(float a, float b) { return a - b; }
// Double-precision rounded ops: on the GPU they also forbid contraction into an FMA.
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __saturatef(float x) { return x != x ? 0.0f : fminf(fmaxf(x, 0.0f), 1.0f); }
inline int __float2int_rn(float x) { return static_cast<int>(nearbyintf(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline int __float2int_rd(float x) { return static_cast<int>(floorf(x)); }
inline int __float2int_ru(float x) { return static_cast<int>(ceilf(x)); }
inline unsigned __float2uint_rn(float x) { return static_cast<unsigned>(nearbyintf(x)); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline float __uint2float_rn(unsigned x) { return static_cast<float>(x); }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline unsigned __float_as_uint(float x) { unsigned i; std::memcpy(&i, &x, 4); return i; }
inline float __int_as_float(int i) { float x; std::memcpy(&x, &i, 4); return x; }
inline float __uint_as_float(unsigned i) { float x; std::memcpy(&x, &i, 4); return x; }
inline long long __double_as_longlong(double x) { long long i; std::memcpy(&i, &x, 8); return i; }
inline double __longlong_as_double(long long i) { double x; std::memcpy(&x, &i, 8); return x; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz(unsigned(x)) : 32; }
inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1); x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4); return __builtin_bswap32(x);
}
inline unsigned __umulhi(unsigned a, unsigned b) { return unsigned((unsigned long long)a * b >> 32); }
inline int __mulhi(int a, int b) { return int((long long)a * b >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline int __mul24(int a, int b) { return a * b; }
inline unsigned __umul24(unsigned a, unsigned b) { return a * b; }
// CUDA's global min/max overloads (device code writes min(a, b) without std::)
#define SCALERL_MINMAX(T) inline T min(T a, T b) { return a < b ? a : b; } inline T max(T a, T b) { return a > b ? a : b; }
SCALERL_MINMAX(int) SCALERL_MINMAX(unsigned) SCALERL_MINMAX(long long) SCALERL_MINMAX(unsigned long long)
SCALERL_MINMAX(long) SCALERL_MINMAX(unsigned long)
#undef SCALERL_MINMAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// cache-hinted loads/stores are plain accesses on the host
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline T __ldca(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline T __ldlu(const T* p) { return *p; }
template <class T> inline void __stcg(T* p, T v) { *p = v; }
template <class T> inline void __stcs(T* p, T v) { *p = v; }
template <class T> inline void __stwb(T* p, T v) { *p = v; }
