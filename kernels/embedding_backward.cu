// embedding_backward.cu — the token embedding's backward, a scatter-add by token id made
// deterministic without atomics: the host groups the batch's rows by token once (a stable sort,
// `EmbedGradPlan` in src/ops/cuda/embedding_backward.rs), and each segment — one distinct token
// and its rows in increasing order — is owned by one block, which adds the rows in that order:
//
//   for each distinct token t with rows r_1 < r_2 < … :  d_table[t] += dx[r_1]; d_table[t] += dx[r_2]; …
//
// so every element sees the same f32 additions, in the same order, as the CPU reference (which
// walks the rows in order): the result is bit-identical to it and does not depend on threads.
// CPU reference: src/ops/cpu/embedding.rs `embedding_backward`.
// Layout: dx [rows, h] bf16 row-major; seg_rows [rows] int32 (rows grouped by token, ascending
// within a group); seg_start [segments + 1] int32; seg_token [segments] int32 (< vocab: the host
// checks); d_table [vocab, h] f32 (a view of the flat f32 gradient buffer).
// Launch: grid = (segments, ceil(h / (2 · 128))), block = 128; each thread owns two neighbouring
// columns of its segment's token (a 4-byte bf16x2 load per row and an 8-byte f32 pair update
// when h is even and the pointers allow: `pairs2`). No shared memory, no barriers.
// Napkin math: bytes = 2 · rows · h (dx) + 8 · distinct · h (d_table rows read + written) +
// 4 · rows; no FLOPs to speak of: memory-bound. 1.5B at 4096 tokens: 12.6 MB + ≤ 50 MB, ≤ 20 µs at
// 3 TB/s. A token repeated k times costs one block k sequential row reads (a frequent token in
// a long batch is the slow block; splitting long segments in two stages is the next step).
#include "common.cuh"

extern "C" __global__ void embedding_backward_bf16(const __nv_bfloat16* dx, const int* seg_rows, const int* seg_start,
                                                   const int* seg_token, float* d_table, int hidden) {
    const int s = blockIdx.x;
    const int c = 2 * (blockIdx.y * blockDim.x + threadIdx.x);
    if (c >= hidden) return;
    const int i0 = seg_start[s], i1 = seg_start[s + 1];
    float* out = d_table + (size_t)seg_token[s] * hidden + c;
    const bool pairs2 = hidden % 2 == 0 && ((uintptr_t)dx & 3) == 0 && ((uintptr_t)d_table & 7) == 0;
    if (pairs2) {
        float2 acc = *reinterpret_cast<const float2*>(out);
#pragma unroll 4
        for (int i = i0; i < i1; i++) {
            const float2 v = unpack_bf16x2(*reinterpret_cast<const uint32_t*>(dx + (size_t)seg_rows[i] * hidden + c));
            acc.x += v.x;
            acc.y += v.y;
        }
        *reinterpret_cast<float2*>(out) = acc;
    } else {
        const bool two = c + 1 < hidden;
        float a0 = out[0], a1 = two ? out[1] : 0.0f;
        for (int i = i0; i < i1; i++) {
            const __nv_bfloat16* row = dx + (size_t)seg_rows[i] * hidden + c;
            a0 += __bfloat162float(row[0]);
            if (two) a1 += __bfloat162float(row[1]);
        }
        out[0] = a0;
        if (two) out[1] = a1;
    }
}
SCALERL_EXPORT_KERNEL(embedding_backward_bf16)
