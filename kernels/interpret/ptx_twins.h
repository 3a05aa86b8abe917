// ptx_twins.h — host twins of the inline-PTX wrappers in common.cuh (same names, same
// signatures plus a defaulted source_location). Fragment layouts follow the PTX ISA
// (mma.sync m16n8k16 .row.col; ldmatrix .m8n8 .b16), with g = lane>>2, t = lane&3:
//   A 16x16 (4 regs = 8 halves a0..a7): row g (+8 for a2,a3,a6,a7), col 2t+(i&1) (+8 for i>=4)
//   B 16x8  (2 regs = b0..b3):           k = 2t+(i&1) (+8 for i>=2), n = g
//   C/D 16x8 (c0..c3):                   row g (+8 for c2,c3), col 2t+(i&1)
//   ldmatrix: lanes 8i..8i+7 give the row addresses of matrix i; lane l receives
//   row l/4, cols 2(l%4), 2(l%4)+1 (.trans: the transposed matrix).
// A 32-bit register holds two 16-bit values, the lower-indexed one in the low half.
// These are checked against the documentation only; the first GPU run should diff them.
#pragma once
#include <cstdint>
#include "interp.h"

namespace scalerl_interp {
struct LdmPayload { const void* addr; uint32_t r[4]; };
struct MmaPayload { uint32_t a[4], b[2]; float c[4], d[4]; };
extern const CollectiveOp op_ldm_x1, op_ldm_x2, op_ldm_x4, op_ldm_x1_t, op_ldm_x2_t, op_ldm_x4_t;
extern const CollectiveOp op_mma_bf16, op_mma_f16;

inline void ldmatrix(const CollectiveOp* op, uint32_t* r, int n, const void* p, const Loc& loc) {
    LdmPayload pl{p, {0, 0, 0, 0}};
    warp_sync(op, 0xffffffffu, &pl, loc);  // .sync.aligned: the whole warp
    for (int i = 0; i < n; ++i) r[i] = pl.r[i];
}
inline void mma(const CollectiveOp* op, float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                const float (&c)[4], const Loc& loc) {
    MmaPayload pl{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}, {c[0], c[1], c[2], c[3]}, {0, 0, 0, 0}};
    warp_sync(op, 0xffffffffu, &pl, loc);
    for (int i = 0; i < 4; ++i) d[i] = pl.d[i];  // d may alias c
}
}  // namespace scalerl_interp

#define SCALERL_TWIN_LOC ::scalerl_interp::Loc loc = ::scalerl_interp::Loc::current()
inline void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4], SCALERL_TWIN_LOC) {
    scalerl_interp::mma(&scalerl_interp::op_mma_bf16, d, a, b, c, loc);
}
inline void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4], SCALERL_TWIN_LOC) {
    scalerl_interp::mma(&scalerl_interp::op_mma_f16, d, a, b, c, loc);
}
inline void ldmatrix_x1(uint32_t& r, const void* p, SCALERL_TWIN_LOC) { scalerl_interp::ldmatrix(&scalerl_interp::op_ldm_x1, &r, 1, p, loc); }
inline void ldmatrix_x2(uint32_t (&r)[2], const void* p, SCALERL_TWIN_LOC) { scalerl_interp::ldmatrix(&scalerl_interp::op_ldm_x2, r, 2, p, loc); }
inline void ldmatrix_x4(uint32_t (&r)[4], const void* p, SCALERL_TWIN_LOC) { scalerl_interp::ldmatrix(&scalerl_interp::op_ldm_x4, r, 4, p, loc); }
inline void ldmatrix_x1_trans(uint32_t& r, const void* p, SCALERL_TWIN_LOC) { scalerl_interp::ldmatrix(&scalerl_interp::op_ldm_x1_t, &r, 1, p, loc); }
inline void ldmatrix_x2_trans(uint32_t (&r)[2], const void* p, SCALERL_TWIN_LOC) { scalerl_interp::ldmatrix(&scalerl_interp::op_ldm_x2_t, r, 2, p, loc); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p, SCALERL_TWIN_LOC) { scalerl_interp::ldmatrix(&scalerl_interp::op_ldm_x4_t, r, 4, p, loc); }
// cp.async.cg 16 bytes global -> shared; _zfill with valid == false reads nothing and writes zeros
inline void cp_async_16(void* smem, const void* gmem, SCALERL_TWIN_LOC) { scalerl_interp::cp_async(smem, gmem, 16, 16, loc); }
inline void cp_async_16_zfill(void* smem, const void* gmem, bool valid, SCALERL_TWIN_LOC) {
    scalerl_interp::cp_async(smem, gmem, 16, valid ? 16 : 0, loc);
}
inline void cp_async_commit() { scalerl_interp::cp_async_commit(); }
template <int N> inline void cp_async_wait() { scalerl_interp::cp_async_wait(N); }
inline void cp_async_wait_all() { scalerl_interp::cp_async_commit(); scalerl_interp::cp_async_wait(0); }
#undef SCALERL_TWIN_LOC
