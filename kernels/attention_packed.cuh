// attention_packed.cuh — what the packed-sequence attention kernels share (the forward in
// attention_packed.cu, the backward in attention_packed_backward.cu): loading row tiles of a
// packed activation into padded shared memory, and the two mma.sync tile products of the
// FlashAttention-2 scheme, with the fragment index math written once.
//
// Layout (both files): q, out, dout, dq [T, num_heads * D] bf16; k, v, dk, dv [T, num_kv_heads * D]
// bf16; lse, delta [T, num_heads] f32; the rows of a sequence consecutive, its tokens at positions
// 0 .. len-1. A work item (int4, built on the host by src/ops/cuda/attention_packed.rs) names one
// 64-row tile: (first row of its sequence, position of the tile's first row, valid rows 1..64,
// length of the sequence).
//
// Tiles live in shared memory as rows of D + 8 bf16: the 8 rows an ldmatrix reads are 272 (or 144)
// bytes apart, 16 mod 128, so they fall in 8 different 16-byte bank groups (no conflicts for
// ldmatrix, ldmatrix.trans or the 4-byte fragment stores of the epilogues).
//
// Fragments (mma.sync m16n8k16 row.col bf16 -> f32, PTX ISA; g = lane >> 2, t = lane & 3):
// an accumulator tile of 16 rows x 8n columns is float[n][4], element (j, e) at row g + 8 (e >> 1),
// column 8 j + 2 t + (e & 1). The C fragments of two adjacent n8 tiles are, packed to bf16 pairs,
// the A fragment of one k16 step (the FA2 register trick: P and dS never touch shared memory).
#pragma once
#include "common.cuh"

#define PACKED_THREADS 128  // 4 warps, 16 rows each
#define PACKED_TILE 64      // rows of a work item's tile (query rows or keys)
#define PACKED_PAD 8        // bf16 of padding per shared-memory row (16 bytes)

namespace packed {

template <int D>
using Row = __nv_bfloat16[D + PACKED_PAD];

// ROWS rows of head column block `col0` of a packed activation with row stride `ld` elements,
// starting at row `row0`, into dst[0 .. ROWS): rows >= `valid` are zero-filled (cp.async with
// src-size 0 reads nothing), so no byte past a sequence ever enters an mma.
template <int D, int ROWS>
__device__ __forceinline__ void load_rows(Row<D>* dst, const __nv_bfloat16* src, size_t row0, int valid, int ld, int col0 SCALERL_LOC) {
    constexpr int CHUNKS = D / 8, STEP = PACKED_THREADS / CHUNKS;
    static_assert(ROWS % STEP == 0, "tile rows must cover the block's 16-byte chunks");
    const int c = threadIdx.x % CHUNKS;
#pragma unroll
    for (int i = 0; i < ROWS / STEP; ++i) {
        const int r = threadIdx.x / CHUNKS + i * STEP;
        const bool ok = r < valid;
        const __nv_bfloat16* p = ok ? src + (row0 + r) * (size_t)ld + col0 + c * 8 : src;
        cp_async_16_zfill(&dst[r][c * 8], p, ok SCALERL_AT);
    }
}

// acc[16 x N] = A[a0 .. a0+16) . B[0 .. N)^T over D: A and B both row-major [rows][D] in shared
// memory (Q.K^T, dO.V^T, K.Q^T, V.dO^T). A fragments by ldmatrix.x4, B fragments of two n8 tiles
// per ldmatrix.x4. acc is overwritten.
template <int D, int N>
__device__ __forceinline__ void mma_abt(float (&acc)[N / 8][4], const Row<D>* a, int a0, const Row<D>* b SCALERL_LOC) {
    const int lane = threadIdx.x % 32, lr = lane % 8, li = lane / 8;
#pragma unroll
    for (int j = 0; j < N / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        // A: matrices (rows 0-7 | 8-15) x (cols 0-7 | 8-15) of the 16x16 step
        uint32_t af[4];
        ldmatrix_x4(af, &a[a0 + lr + 8 * (li & 1)][kk * 16 + 8 * (li >> 1)] SCALERL_AT);
#pragma unroll
        for (int jp = 0; jp < N / 16; ++jp) {
            // B of n8 tiles 2jp, 2jp+1: matrices (rows 0-7 | 8-15) x (dims 0-7 | 8-15)
            uint32_t bf[4];
            ldmatrix_x4(bf, &b[jp * 16 + lr + 8 * (li >> 1)][kk * 16 + 8 * (li & 1)] SCALERL_AT);
            const uint32_t b0[2] = {bf[0], bf[1]}, b1[2] = {bf[2], bf[3]};
            mma_m16n8k16_bf16(acc[2 * jp], af, b0, acc[2 * jp] SCALERL_AT);
            mma_m16n8k16_bf16(acc[2 * jp + 1], af, b1, acc[2 * jp + 1] SCALERL_AT);
        }
    }
}

// The A fragments (bf16) of a 16 x K tile held as accumulator fragments float[K/8][4].
template <int K>
__device__ __forceinline__ void to_a_frags(uint32_t (&a)[K / 16][4], const float (&c)[K / 8][4]) {
#pragma unroll
    for (int kk = 0; kk < K / 16; ++kk) {
        a[kk][0] = pack_bf16x2(c[2 * kk][0], c[2 * kk][1]);
        a[kk][1] = pack_bf16x2(c[2 * kk][2], c[2 * kk][3]);
        a[kk][2] = pack_bf16x2(c[2 * kk + 1][0], c[2 * kk + 1][1]);
        a[kk][3] = pack_bf16x2(c[2 * kk + 1][2], c[2 * kk + 1][3]);
    }
}

// acc[16 x D] += A[16 x K] . B[0 .. K) with A in registers (to_a_frags) and B row-major [K][D] in
// shared memory (P.V, P^T.dO, dS^T.Q, dS.K): B fragments by ldmatrix.x4.trans, two n8 tiles each.
template <int D, int K>
__device__ __forceinline__ void mma_ab(float (&acc)[D / 8][4], const uint32_t (&a)[K / 16][4], const Row<D>* b SCALERL_LOC) {
    const int lane = threadIdx.x % 32, lr = lane % 8, li = lane / 8;
#pragma unroll
    for (int kk = 0; kk < K / 16; ++kk) {
#pragma unroll
        for (int dp = 0; dp < D / 16; ++dp) {
            // .trans of matrices (rows 0-7 | 8-15) x (dims 0-7 | 8-15)
            uint32_t bf[4];
            ldmatrix_x4_trans(bf, &b[kk * 16 + lr + 8 * (li & 1)][dp * 16 + 8 * (li >> 1)] SCALERL_AT);
            const uint32_t b0[2] = {bf[0], bf[1]}, b1[2] = {bf[2], bf[3]};
            mma_m16n8k16_bf16(acc[2 * dp], a[kk], b0, acc[2 * dp] SCALERL_AT);
            mma_m16n8k16_bf16(acc[2 * dp + 1], a[kk], b1, acc[2 * dp + 1] SCALERL_AT);
        }
    }
}

// The warp's 16 x D accumulator tile times `mul`, as bf16 rows 16w.. of global memory: staged in
// `stage` rows a0 .. a0+15 (which only this warp reads), then 16-byte stores of rows < `valid`
// (row r of the stage goes to dst + (row0 + r) * ld + col0).
template <int D>
__device__ __forceinline__ void store_rows(const float (&acc)[D / 8][4], float mul, Row<D>* stage, int a0, __nv_bfloat16* dst,
                                           size_t row0, int valid, int ld, int col0 SCALERL_LOC) {
    constexpr int CHUNKS = D / 8;
    const int lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
        *reinterpret_cast<uint32_t*>(&stage[a0 + g][8 * j + 2 * t]) = pack_bf16x2(acc[j][0] * mul, acc[j][1] * mul);
        *reinterpret_cast<uint32_t*>(&stage[a0 + g + 8][8 * j + 2 * t]) = pack_bf16x2(acc[j][2] * mul, acc[j][3] * mul);
    }
    __syncwarp(0xffffffffu SCALERL_AT);
#pragma unroll
    for (int i = lane; i < 16 * CHUNKS; i += 32) {
        const int r = a0 + i / CHUNKS, c = i % CHUNKS;
        if (r < valid)
            *reinterpret_cast<uint4*>(dst + (row0 + r) * (size_t)ld + col0 + c * 8) = *reinterpret_cast<const uint4*>(&stage[r][c * 8]);
    }
}

}  // namespace packed
