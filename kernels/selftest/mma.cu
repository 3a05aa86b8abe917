// mma.cu — selftest of the PTX wrappers.
// selftest_ldmatrix: one warp; shared holds four 8x8 b16 matrices side by side (row pitch
//   32 elements), element (i, r, c) = 64*i + 8*r + c. Writes every lane's registers for
//   x1, x2, x4 and their .trans forms: out[(variant*32 + lane)*4 + reg].
// selftest_mma_{bf16,f16}: one warp computes C[16x16] = A[16x16] * B[16x16] (A, B
//   row-major in global, f32 out): cp.async to shared, ldmatrix.x4 for A, ldmatrix.x4.trans
//   for B (two n-tiles of 8), two mma.sync.m16n8k16. FLOPs 2*16^3 = 8K: a plumbing test.
#include "../common.cuh"

extern "C" __global__ void selftest_ldmatrix(const unsigned short* mats, unsigned* out) {
    SHARED(unsigned short, tile, [8][32]);
    const int lane = threadIdx.x;
    for (int i = lane; i < 8 * 32; i += 32) tile[i / 32][i % 32] = mats[i];
    __syncwarp();
    // lane l names row l%8 of matrix l/8
    const void* row = &tile[lane % 8][8 * (lane / 8)];
    uint32_t r4[4] = {0, 0, 0, 0}, r2[2] = {0, 0}, r1 = 0;
    unsigned* o = out + lane * 4;
    ldmatrix_x1(r1, row);        o[0 * 128] = r1;
    ldmatrix_x2(r2, row);        o[1 * 128] = r2[0]; o[1 * 128 + 1] = r2[1];
    ldmatrix_x4(r4, row);        for (int i = 0; i < 4; ++i) o[2 * 128 + i] = r4[i];
    ldmatrix_x1_trans(r1, row);  o[3 * 128] = r1;
    ldmatrix_x2_trans(r2, row);  o[4 * 128] = r2[0]; o[4 * 128 + 1] = r2[1];
    ldmatrix_x4_trans(r4, row);  for (int i = 0; i < 4; ++i) o[5 * 128 + i] = r4[i];
}

template <bool BF16, class T>
__device__ __forceinline__ void mma_tile(const T* A, const T* B, float* C) {
    SHARED(T, As, [16][16]);
    SHARED(T, Bs, [16][16]);
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    // 16x16 x 2 bytes = 32 chunks of 16 bytes per matrix: one chunk per lane
    cp_async_16(&As[lane / 2][(lane % 2) * 8], A + lane * 8);
    cp_async_16(&Bs[lane / 2][(lane % 2) * 8], B + lane * 8);
    cp_async_commit();
    cp_async_wait<0>();
    __syncwarp();  // other lanes' copies: wait_group only covers this thread's own
    // A: matrices (rows 0-7|8-15) x (cols 0-7|8-15) in the order a0..a3 wants
    const int i = lane / 8, r = lane % 8;
    uint32_t a[4], b[4];
    ldmatrix_x4(a, &As[r + 8 * (i & 1)][8 * (i >> 1)]);
    // B (k x n, row-major): .trans of the 8x8 block at (k0, n0) gives b = {B[2t..2t+1][g]}
    ldmatrix_x4_trans(b, &Bs[r + 8 * (i & 1)][8 * (i >> 1)]);
    for (int nt = 0; nt < 2; ++nt) {
        float acc[4] = {0.f, 0.f, 0.f, 0.f};
        const uint32_t bf[2] = {b[2 * nt], b[2 * nt + 1]};
        if (BF16) mma_m16n8k16_bf16(acc, a, bf, acc);
        else mma_m16n8k16_f16(acc, a, bf, acc);
        for (int q = 0; q < 4; ++q) C[(g + 8 * (q >> 1)) * 16 + 8 * nt + 2 * t + (q & 1)] = acc[q];
    }
}
extern "C" __global__ void selftest_mma_bf16(const __nv_bfloat16* A, const __nv_bfloat16* B, float* C) {
    mma_tile<true>(A, B, C);
}
extern "C" __global__ void selftest_mma_f16(const __half* A, const __half* B, float* C) {
    mma_tile<false>(A, B, C);
}
SCALERL_EXPORT_KERNEL(selftest_ldmatrix)
SCALERL_EXPORT_KERNEL(selftest_mma_bf16)
SCALERL_EXPORT_KERNEL(selftest_mma_f16)
