// collectives.cpp — the combine step of every warp collective: shuffles (PTX shfl.sync
// rules, including width < 32 segments and clamping), votes, match, redux, and the
// ldmatrix / mma.sync twins. A combine runs once per completed group, in the fiber of
// the last lane to arrive, with every lane's payload in c.lane[].
#include <algorithm>
#include <cstring>
#include "bf16.h"
#include "interp.h"
#include "ptx_twins.h"

namespace scalerl_interp {
namespace {
WarpPayload* P(Collective& c, int l) { return static_cast<WarpPayload*>(c.lane[l]); }
#define FOR_LANES(c, l) for (uint32_t m_ = (c).mask, l; m_ && ((l = __builtin_ctz(m_)), true); m_ &= m_ - 1)

enum { IDX, UP, DOWN, BFLY };
// PTX ISA, shfl.sync: c = (segmask << 8) | clamp; a source outside [minLane, maxLane]
// (up: below the segment start; down/idx/bfly: above the segment's end) reads its own
// value. Reading a lane that is not in membermask is undefined on the GPU: an error here.
template <int MODE> void shfl(Collective& c) {
    FOR_LANES(c, lane) {
        WarpPayload* p = P(c, int(lane));
        const int b = p->b & 31, cval = p->c & 31, seg = (p->c >> 8) & 31, l = int(lane);
        const int maxLane = (l & seg) | (cval & ~seg), minLane = l & seg;
        int j = l; bool ok = true;
        switch (MODE) {
            case UP: j = l - b; ok = j >= maxLane; break;
            case DOWN: j = l + b; ok = j <= maxLane; break;
            case BFLY: j = l ^ b; ok = j <= maxLane; break;
            default: j = minLane | (b & ~seg); ok = j <= maxLane; break;
        }
        if (!ok) j = l;
        if (!((c.mask >> j) & 1u)) {
            c.fail("lane %d reads lane %d, which is not in the mask 0x%08x%s", l, j, c.mask,
                   (c.exited >> j) & 1u ? " (it has exited or does not exist)" : "");
            return;
        }
        p->out = P(c, j)->in;
    }
}
void syncwarp(Collective&) {}
void vote_all(Collective& c) { uint64_t r = 1; FOR_LANES(c, l) r &= P(c, l)->in != 0; FOR_LANES(c, l) P(c, l)->out = r; }
void vote_any(Collective& c) { uint64_t r = 0; FOR_LANES(c, l) r |= P(c, l)->in != 0; FOR_LANES(c, l) P(c, l)->out = r; }
void ballot(Collective& c) {
    uint64_t r = 0; FOR_LANES(c, l) if (P(c, l)->in) r |= 1ull << l;
    FOR_LANES(c, l) P(c, l)->out = r;
}
void match_any(Collective& c) {
    FOR_LANES(c, l) { uint64_t r = 0; FOR_LANES(c, k) if (P(c, k)->in == P(c, l)->in) r |= 1ull << k; P(c, l)->out = r; }
}
void match_all(Collective& c) {
    bool same = true; const uint64_t v0 = P(c, __builtin_ctz(c.mask))->in;
    FOR_LANES(c, l) same = same && P(c, l)->in == v0;
    FOR_LANES(c, l) P(c, l)->out = same ? c.mask : 0;
}
template <int OP> void redux(Collective& c) {  // b != 0: signed min/max
    const bool sgn = P(c, __builtin_ctz(c.mask))->b != 0;
    uint32_t r = (OP == 1 || OP == 2) ? uint32_t(P(c, __builtin_ctz(c.mask))->in) : OP == 3 ? ~0u : 0u;
    FOR_LANES(c, l) {
        const uint32_t v = uint32_t(P(c, l)->in);
        switch (OP) {
            case 0: r += v; break;
            case 1: r = sgn ? uint32_t(std::min(int32_t(r), int32_t(v))) : std::min(r, v); break;
            case 2: r = sgn ? uint32_t(std::max(int32_t(r), int32_t(v))) : std::max(r, v); break;
            case 3: r &= v; break;
            case 4: r |= v; break;
            default: r ^= v; break;
        }
    }
    FOR_LANES(c, l) P(c, l)->out = r;
}

// ---- ldmatrix ----
template <int NUM, bool TRANS> void ldm(Collective& c) {
    const uint16_t* rows[4][8];
    for (int i = 0; i < NUM; ++i)
        for (int r = 0; r < 8; ++r) {
            const void* a = static_cast<LdmPayload*>(c.lane[8 * i + r])->addr;
            if (reinterpret_cast<uintptr_t>(a) % 16) {
                c.fail("lane %d gives row address %p of matrix %d, which is not 16-byte aligned", 8 * i + r, a, i);
                return;
            }
            rows[i][r] = static_cast<const uint16_t*>(a);
        }
    for (int l = 0; l < 32; ++l) {
        auto* p = static_cast<LdmPayload*>(c.lane[l]);
        const int g = l >> 2, t = l & 3;
        for (int i = 0; i < NUM; ++i) {
            uint32_t lo = TRANS ? rows[i][2 * t][g] : rows[i][g][2 * t];
            uint32_t hi = TRANS ? rows[i][2 * t + 1][g] : rows[i][g][2 * t + 1];
            p->r[i] = lo | (hi << 16);
        }
    }
}

// ---- mma.sync.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32 ----
template <bool BF16> float half_at(uint32_t reg, int hi) {
    const uint16_t h = static_cast<uint16_t>(hi ? reg >> 16 : reg);
    return BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}
template <bool BF16> void mma(Collective& c) {
    float A[16][16], B[16][8], C[16][8];
    for (int l = 0; l < 32; ++l) {
        const auto* p = static_cast<MmaPayload*>(c.lane[l]);
        const int g = l >> 2, t = l & 3;
        for (int i = 0; i < 8; ++i)
            A[g + 8 * ((i >> 1) & 1)][2 * t + (i & 1) + 8 * (i >> 2)] = half_at<BF16>(p->a[i >> 1], i & 1);
        for (int i = 0; i < 4; ++i) B[2 * t + (i & 1) + 8 * (i >> 1)][g] = half_at<BF16>(p->b[i >> 1], i & 1);
        for (int i = 0; i < 4; ++i) C[g + 8 * (i >> 1)][2 * t + (i & 1)] = p->c[i];
    }
    for (int l = 0; l < 32; ++l) {
        auto* p = static_cast<MmaPayload*>(c.lane[l]);
        const int g = l >> 2, t = l & 3;
        for (int i = 0; i < 4; ++i) {
            const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
            float acc = 0.0f;  // products of 16-bit floats are exact in f32
            for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
            p->d[i] = acc + C[row][col];
        }
    }
}
}  // namespace

const CollectiveOp op_syncwarp{"__syncwarp", syncwarp};
const CollectiveOp op_shfl_idx{"__shfl_sync", shfl<IDX>};
const CollectiveOp op_shfl_up{"__shfl_up_sync", shfl<UP>};
const CollectiveOp op_shfl_down{"__shfl_down_sync", shfl<DOWN>};
const CollectiveOp op_shfl_bfly{"__shfl_xor_sync", shfl<BFLY>};
const CollectiveOp op_all{"__all_sync", vote_all};
const CollectiveOp op_any{"__any_sync", vote_any};
const CollectiveOp op_ballot{"__ballot_sync", ballot};
const CollectiveOp op_match_any{"__match_any_sync", match_any};
const CollectiveOp op_match_all{"__match_all_sync", match_all};
const CollectiveOp op_redux_add{"__reduce_add_sync", redux<0>};
const CollectiveOp op_redux_min{"__reduce_min_sync", redux<1>};
const CollectiveOp op_redux_max{"__reduce_max_sync", redux<2>};
const CollectiveOp op_redux_and{"__reduce_and_sync", redux<3>};
const CollectiveOp op_redux_or{"__reduce_or_sync", redux<4>};
const CollectiveOp op_redux_xor{"__reduce_xor_sync", redux<5>};
const CollectiveOp op_ldm_x1{"ldmatrix.x1", ldm<1, false>};
const CollectiveOp op_ldm_x2{"ldmatrix.x2", ldm<2, false>};
const CollectiveOp op_ldm_x4{"ldmatrix.x4", ldm<4, false>};
const CollectiveOp op_ldm_x1_t{"ldmatrix.x1.trans", ldm<1, true>};
const CollectiveOp op_ldm_x2_t{"ldmatrix.x2.trans", ldm<2, true>};
const CollectiveOp op_ldm_x4_t{"ldmatrix.x4.trans", ldm<4, true>};
const CollectiveOp op_mma_bf16{"mma.sync.m16n8k16.bf16", mma<true>};
const CollectiveOp op_mma_f16{"mma.sync.m16n8k16.f16", mma<false>};
}  // namespace scalerl_interp
