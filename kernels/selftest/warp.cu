// warp.cu — selftest: every shuffle variant (incl. width < 32 and out-of-segment
// clamping), 64-bit and bf16 payloads, two independent half-warp groups, votes, match,
// redux and __activemask. Launch: 1 block of 32 threads (a single warp).
#include "../common.cuh"

// case k: op[k] (0 idx, 1 up, 2 down, 3 xor), width[k], arg[k] (srcLane/delta/laneMask);
// lane l shuffles the value 10*l + 7; out[32*k + l] is what it got.
extern "C" __global__ void selftest_shuffles(const int* op, const int* width, const int* arg, int ncases, int* out,
                                            double* out64, float* outbf, int* halves) {
    const int lane = threadIdx.x;
    for (int k = 0; k < ncases; ++k) {
        const int v = 10 * lane + 7;
        int r = -1;
        switch (op[k]) {
            case 0: r = __shfl_sync(0xffffffffu, v, arg[k], width[k]); break;
            case 1: r = __shfl_up_sync(0xffffffffu, v, arg[k], width[k]); break;
            case 2: r = __shfl_down_sync(0xffffffffu, v, arg[k], width[k]); break;
            default: r = __shfl_xor_sync(0xffffffffu, v, arg[k], width[k]); break;
        }
        out[32 * k + lane] = r;
    }
    out64[lane] = __shfl_xor_sync(0xffffffffu, 1e10 + lane, 5);  // 8-byte payload
    outbf[lane] = __bfloat162float(__shfl_down_sync(0xffffffffu, __float2bfloat16(0.5f * lane), 3));
    // two groups in one warp, each with its own mask
    if (lane < 16) halves[lane] = __shfl_sync(0x0000ffffu, lane * 3, 15 - lane);
    else halves[lane] = __shfl_sync(0xffff0000u, lane * 3, 31 - lane + 16);
}
SCALERL_EXPORT_KERNEL(selftest_shuffles)

// out[0..5]: all/any/ballot on a full warp; out[6..8]: the same on lanes 0-15 only;
// out[9]: match_any of lane%4 (lane 5's view); out[10]: reduce_add; out[11]: reduce_max(int);
// out[12]: __activemask after lanes >= 20 returned (seen by lane 0)
extern "C" __global__ void selftest_votes(const int* pred, unsigned* out) {
    const int lane = threadIdx.x;
    const int p = pred[lane];
    const unsigned a = __all_sync(0xffffffffu, p), y = __any_sync(0xffffffffu, p), b = __ballot_sync(0xffffffffu, p);
    const unsigned a1 = __all_sync(0xffffffffu, 1), y0 = __any_sync(0xffffffffu, 0);
    const unsigned m = __match_any_sync(0xffffffffu, lane % 4);
    const unsigned s = __reduce_add_sync(0xffffffffu, (unsigned)lane);
    const int mx = __reduce_max_sync(0xffffffffu, lane == 7 ? 100 : -lane);
    if (lane == 0) { out[0] = a; out[1] = y; out[2] = b; out[3] = a1; out[4] = y0; out[10] = s; out[11] = (unsigned)mx; }
    if (lane == 5) out[9] = m;
    if (lane < 16) {
        const unsigned ha = __all_sync(0x0000ffffu, p), hy = __any_sync(0x0000ffffu, p), hb = __ballot_sync(0x0000ffffu, p);
        if (lane == 0) { out[6] = ha; out[7] = hy; out[8] = hb; }
    }
    __syncwarp();
    if (lane >= 20) return;
    const unsigned act = __activemask();
    if (lane == 0) out[12] = act;
}
SCALERL_EXPORT_KERNEL(selftest_votes)
