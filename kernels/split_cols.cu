// split_cols.cu — the fused q|k|v projection's split and its backward's concatenation (issue
// 15): q/k/v are one GEMM into qkv [rows, q + 2·kv] (their weights are consecutive in the flat
// parameter buffer, so [Wq; Wk; Wv] is one [q + 2·kv, hidden] matrix); these kernels move the
// column blocks to and from the separate [rows, n_i] tensors that rope, the KV write and
// attention read. (gate|up needs neither: SwiGLU reads it with a row stride, swiglu.cu.)
//
//   split_cols_bf16:  part_p[r, c] = src[r, off_p + c]     (part 2 absent when n2 = 0)
//   concat_cols_bf16: dst[r, off_p + c] = part_p[r, c]     (the backward: dq|dk|dv → dqkv)
//
// Exact copies (bf16 in, bf16 out, no math), so the split changes no value.
// CPU reference: src/ops/cpu/split.rs `split_cols`, `concat_cols`.
// Layout: src/dst [rows, W] bf16 row-major, W = n0 + n1 + n2, off_p = n0 + … + n_{p−1};
// part_p [rows, n_p] bf16 row-major. Parts and the wide matrix must not overlap.
// Launch: grid = min(ceil(rows·W / 256), 4096), block = 256; grid-stride over the wide matrix's
// elements (consecutive threads touch consecutive wide columns: coalesced on the wide side, and
// within a part's row on the narrow side). No shared memory, no barriers.
// Napkin math: bytes = 4·rows·W (read and write each element once), no FLOPs: memory-bound,
// roofline = copy bandwidth. 1.5B (q 1536, kv 256), 4096 tokens: the qkv split moves 33.5 MB
// per layer (~11 µs at 3 TB/s), against ~0.6 ms for the layer's GEMMs at ~600 TFLOP/s. (A
// later step can fold it into rope's and the KV write's reads.)
#include "common.cuh"

// Which part a wide column belongs to, and its column there.
__device__ __forceinline__ int part_of(long long col, long long n0, long long n1, long long& c) {
    if (col < n0) { c = col; return 0; }
    if (col < n0 + n1) { c = col - n0; return 1; }
    c = col - n0 - n1;
    return 2;
}

extern "C" __global__ void split_cols_bf16(const __nv_bfloat16* src, __nv_bfloat16* p0, __nv_bfloat16* p1,
                                           __nv_bfloat16* p2, long long rows, long long n0, long long n1,
                                           long long n2) {
    const long long w = n0 + n1 + n2;
    const size_t n = (size_t)rows * (size_t)w;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const long long r = (long long)(i / (size_t)w), col = (long long)(i % (size_t)w);
        long long c;
        const int p = part_of(col, n0, n1, c);
        __nv_bfloat16* dst = p == 0 ? p0 : p == 1 ? p1 : p2;
        const long long np = p == 0 ? n0 : p == 1 ? n1 : n2;
        dst[r * np + c] = src[i];
    }
}

extern "C" __global__ void concat_cols_bf16(const __nv_bfloat16* p0, const __nv_bfloat16* p1,
                                            const __nv_bfloat16* p2, __nv_bfloat16* dst, long long rows,
                                            long long n0, long long n1, long long n2) {
    const long long w = n0 + n1 + n2;
    const size_t n = (size_t)rows * (size_t)w;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const long long r = (long long)(i / (size_t)w), col = (long long)(i % (size_t)w);
        long long c;
        const int p = part_of(col, n0, n1, c);
        const __nv_bfloat16* src = p == 0 ? p0 : p == 1 ? p1 : p2;
        const long long np = p == 0 ? n0 : p == 1 ? n1 : n2;
        dst[i] = src[r * np + c];
    }
}
SCALERL_EXPORT_KERNEL(split_cols_bf16)
SCALERL_EXPORT_KERNEL(concat_cols_bf16)
