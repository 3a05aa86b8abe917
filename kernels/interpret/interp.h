// interp.h — the internal seam between the CUDA shim (inlined into every kernel
// compiled for the host) and the runtime (runtime.cpp). Kernels never include this
// directly: common.cuh -> cuda_shim.h -> here.
//
// Every CUDA thread is a fiber; a "sync point" (barrier, warp collective) records
// what the thread waits for and switches back to the block's scheduler. The last
// lane to arrive at a warp collective runs the op's combine() over all lanes'
// payloads (payloads live on the lanes' own fiber stacks), so shuffles, votes,
// ldmatrix and mma all share one mechanism.
#pragma once
#include <cstddef>
#include <cstdint>
#include <source_location>
#include <type_traits>
#include <utility>

struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

namespace scalerl_interp {

using Loc = std::source_location;

// What threadIdx & co. read. One per fiber, written by the scheduler at block start.
struct ThreadCtx {
    uint3 threadIdx, blockIdx;
    dim3 blockDim, gridDim;
    unsigned tid, lane, warp;  // linear id in block, tid % 32, tid / 32
};
// initial-exec: the runtime is linked into executables (test binaries), never dlopen'd;
// this makes threadIdx one fs-relative load instead of a __tls_get_addr call.
extern thread_local const ThreadCtx* tls_cur __attribute__((tls_model("initial-exec")));

// ---- warp collectives -------------------------------------------------------------
struct Collective;
struct CollectiveOp {
    const char* name;              // "__shfl_xor_sync", "mma.m16n8k16.bf16", ...
    void (*combine)(Collective&);  // runs once, when every lane of the mask has arrived
};
struct Collective {
    void* lane[32];     // payload of each participating lane (nullptr outside mask)
    uint32_t mask;      // participating lanes (all arrived, same op, same mask)
    uint32_t exited;    // lanes of this warp that exited or do not exist
    char err[400];      // set by fail(): the block aborts with this message
    void fail(const char* fmt, ...) __attribute__((format(printf, 2, 3)));
};
// Payload of the scalar collectives (shuffle, vote, match, redux): b and c are the PTX
// operands (source lane/delta/mask, segment|clamp), in/out the 8 value bytes.
struct WarpPayload { uint64_t in; int b, c; uint64_t out; };
extern const CollectiveOp op_syncwarp, op_shfl_idx, op_shfl_up, op_shfl_down, op_shfl_bfly,
    op_all, op_any, op_ballot, op_match_any, op_match_all, op_redux_add, op_redux_min,
    op_redux_max, op_redux_and, op_redux_or, op_redux_xor;  // collectives.cpp
void warp_sync(const CollectiveOp* op, uint32_t mask, void* payload, const Loc& loc);
// __activemask: waits until every other lane of the warp is blocked or has exited, then
// returns the lanes waiting at this same __activemask call site (= the converged lanes).
uint32_t warp_active(const Loc& loc);

// ---- block barrier: returns how many threads arrived with pred != 0 ----------------
int block_sync(int pred, const Loc& loc);
unsigned block_threads();

// ---- shared memory: one heap allocation per declaration per block (ASan redzones) ---
void* static_shared(const void* key, size_t size, size_t align, const char* name, const Loc& loc);
void* dynamic_shared();

// ---- cp.async: per-thread queue, performed at wait_group --------------------------
void cp_async(void* dst, const void* src, unsigned bytes, unsigned src_bytes, const Loc& loc);
void cp_async_commit();
void cp_async_wait(int n);

// __trap(), failed assert(): abort the block with a message (never the process).
[[noreturn]] void trap(const char* what, const Loc& loc);

// ---- kernel registry (SCALERL_EXPORT_KERNEL) ---------------------------------------
using Thunk = void (*)(void** args);
void register_kernel(const char* name, Thunk thunk, int nparams, const size_t* sizes, const char* file);

template <class F> struct KernelSig;
template <class... A> struct KernelSig<void (*)(A...)> {
    static constexpr int n = sizeof...(A);
    static constexpr size_t sizes[n ? n : 1] = {sizeof(std::remove_cvref_t<A>)...};
    // Each CUDA thread gets its own copy of the arguments, like params in constant bank.
    template <auto F, size_t... I> static void call(void** args, std::index_sequence<I...>) {
        F(*static_cast<std::remove_cvref_t<A>*>(args[I])...);
    }
};
template <auto F> void thunk(void** args) {
    using S = KernelSig<decltype(F)>;
    S::template call<F>(args, std::make_index_sequence<S::n>{});
}
struct Registrar {
    Registrar(const char* name, Thunk t, int n, const size_t* sizes, const char* file) {
        register_kernel(name, t, n, sizes, file);
    }
};

}  // namespace scalerl_interp

#define SCALERL_CAT2_(a, b) a##b
#define SCALERL_CAT_(a, b) SCALERL_CAT2_(a, b)
// Registers kernel `name` (an extern "C" __global__ function) under its own name.
#define SCALERL_EXPORT_KERNEL(name) SCALERL_EXPORT_KERNEL_AS(#name, name)
// For template instantiations: SCALERL_EXPORT_KERNEL_AS("scale_f32", scale<float>)
#define SCALERL_EXPORT_KERNEL_AS(str, ...)                                                   \
    static ::scalerl_interp::Registrar SCALERL_CAT_(scalerl_reg_, __COUNTER__)(             \
        str, &::scalerl_interp::thunk<&__VA_ARGS__>,                                        \
        ::scalerl_interp::KernelSig<decltype(&__VA_ARGS__)>::n,                             \
        ::scalerl_interp::KernelSig<decltype(&__VA_ARGS__)>::sizes, __FILE__);
