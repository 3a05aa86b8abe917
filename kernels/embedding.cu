// embedding.cu — row gather: out[r] = table[ids[r]] for r < rows. It is the token embedding
// lookup, and also picks the rows of the final hidden states that the lm_head needs (the last
// position of each sequence).
//
// CPU reference: src/ops/cpu/embedding.rs `embedding`.
// Layout: ids [rows] int32 (each in [0, table_rows): the host checks, the kernel asserts);
// table [table_rows, hidden] bf16 row-major; out [rows, hidden] bf16.
// Launch: grid = rows, block = 256; each thread strides over the row (coalesced 2-byte
// accesses; 16-byte vectors are a later step). No shared memory, no barriers.
// Napkin math: bytes = 4 * rows * hidden (read + write); no FLOPs: copy bandwidth is the
// roofline. 1.5B model: 3 KB per token, nothing next to the layers.
#include "common.cuh"

extern "C" __global__ void embedding_gather_bf16(const int* ids, const __nv_bfloat16* table, __nv_bfloat16* out,
                                                 int hidden, int table_rows) {
    const int id = ids[blockIdx.x];
    assert(id >= 0 && id < table_rows);
    const __nv_bfloat16* src = table + (size_t)id * hidden;
    __nv_bfloat16* dst = out + (size_t)blockIdx.x * hidden;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = src[i];
}
SCALERL_EXPORT_KERNEL(embedding_gather_bf16)
