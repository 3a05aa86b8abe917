// asan_canary.cu — a planted out-of-bounds write, compiled into the Rust-linked interpret
// library only in AddressSanitizer builds (build.rs, SCALERL_SANITIZE=address). The test
// `asan_reports_a_planted_out_of_bounds_write` (tests/kernels_interpret.rs) launches it through
// the device layer in a child process and requires ASan's report: if ASan stops working in the
// Rust build (a broken link, a lost flag), that test fails instead of every parity test passing
// unchecked. Not a product kernel; never in the fatbin.
#include "../common.cuh"

extern "C" __global__ void asan_canary_oob_write(float* out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) out[i] = 1.0f;  // PLANTED: i == n writes one float past the end
}
SCALERL_EXPORT_KERNEL(asan_canary_oob_write)
