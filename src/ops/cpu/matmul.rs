//! `y[m, n] = x[m, k] · w[n, k]ᵀ` — the one GEMM of the CPU backend (every linear layer).
//!
//! Why this shape: PyTorch keeps linear weights as `[out, in]`, so each output element is a dot
//! product of a row of `x` with a row of `w`; both rows are contiguous, which is what SIMD wants.
//!
//! Blocking: rayon splits the `n` rows of `w` into strips (a strip of `w` stays in L2 while every
//! row of `x` streams past it); inside a strip a register tile of MR rows of `x` × NR rows of `w`
//! keeps MR·NR eight-lane accumulators live, so each loaded vector is used NR (or MR) times.
//! Decode (m = 1..8) is bound by reading `w` once: 4·n·k bytes per call. Prefill is bound by the
//! FMAs: 2·m·n·k FLOPs.
//!
//! The inner loop is written for AVX-512 (16 lanes, masked tails) and, generic, compiled with
//! AVX2+FMA and portable; the path is picked at run time. The three sum the lanes in different
//! orders: a row's result moves by ~1e-7 relative between machines with and without AVX-512.
//!
//! From PACKED_MIN_ROWS rows of x on (prefill, training) the product goes to the packed GEMM
//! of gemm.rs instead, which reaches ~3× the FLOP rate; below that, this kernel reads w once
//! while the GEMM would pad the token dimension of its 6×16 tile.

use super::gemm::{gemm_acc_strided, Isa, StridedA, StridedB};
use rayon::prelude::*;

/// Rows of x from which `matmul_nt` uses the packed GEMM. A row's numbers then depend on
/// whether it was computed among ≥ 16 rows or fewer (different summation order, ~1e-7 relative).
pub const PACKED_MIN_ROWS: usize = 16;

const LANES: usize = 8;
const MR: usize = 4;
const NR: usize = 2;

/// A multiply-add that is fused where the CPU has FMA and plain elsewhere (a software `fmaf`
/// would be ~10× slower than `a * b + c`).
trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}
struct Fused;
struct Plain;
impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}
impl MulAdd for Plain {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Dot products of `R` rows of x with `C` rows of w, eight lanes at a time.
#[inline(always)]
fn tile<F: MulAdd, const R: usize, const C: usize>(xr: [&[f32]; R], wr: [&[f32]; C], k: usize) -> [[f32; C]; R] {
    let mut acc = [[[0f32; LANES]; C]; R];
    let full = k / LANES * LANES;
    let mut p = 0;
    while p < full {
        let xv: [&[f32; LANES]; R] = std::array::from_fn(|i| xr[i][p..p + LANES].try_into().unwrap());
        let wv: [&[f32; LANES]; C] = std::array::from_fn(|j| wr[j][p..p + LANES].try_into().unwrap());
        for i in 0..R {
            for j in 0..C {
                for l in 0..LANES {
                    acc[i][j][l] = F::mul_add(xv[i][l], wv[j][l], acc[i][j][l]);
                }
            }
        }
        p += LANES;
    }
    let mut out = [[0f32; C]; R];
    for i in 0..R {
        for j in 0..C {
            // Pairwise lane sum, then the k % 8 tail.
            let a = &acc[i][j];
            let mut s = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
            for q in full..k {
                s = F::mul_add(xr[i][q], wr[j][q], s);
            }
            out[i][j] = s;
        }
    }
    out
}

/// Computes the columns `n0..n0 + cols` of y for every row of x. `y` points at y[0, 0].
#[inline(always)]
fn strip<F: MulAdd>(x: &[f32], w: &[f32], y: YPtr, m: usize, n: usize, k: usize, n0: usize, cols: usize) {
    let xrow = |i: usize| &x[i * k..(i + 1) * k];
    let wrow = |j: usize| &w[j * k..(j + 1) * k];
    let put = |i: usize, j: usize, v: f32| unsafe { *y.0.add(i * n + j) = v };
    let mut j = n0;
    while j < n0 + cols {
        let c = (n0 + cols - j).min(NR);
        let mut i = 0;
        while i < m {
            let r = (m - i).min(MR);
            match (r, c) {
                (MR, NR) => {
                    let t = tile::<F, MR, NR>(std::array::from_fn(|a| xrow(i + a)), std::array::from_fn(|b| wrow(j + b)), k);
                    for a in 0..MR {
                        for b in 0..NR {
                            put(i + a, j + b, t[a][b]);
                        }
                    }
                }
                (1, NR) => {
                    let t = tile::<F, 1, NR>([xrow(i)], std::array::from_fn(|b| wrow(j + b)), k);
                    for b in 0..NR {
                        put(i, j + b, t[0][b]);
                    }
                }
                _ => {
                    for a in 0..r {
                        for b in 0..c {
                            put(i + a, j + b, tile::<F, 1, 1>([xrow(i + a)], [wrow(j + b)], k)[0][0]);
                        }
                    }
                }
            }
            i += r;
        }
        j += c;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn strip_avx2(x: &[f32], w: &[f32], y: YPtr, m: usize, n: usize, k: usize, n0: usize, cols: usize) {
    strip::<Fused>(x, w, y, m, n, k, n0, cols)
}

/// `R` rows of x against `C` rows of w with AVX-512: R·C sixteen-lane accumulators, each loaded
/// vector used C (x) or R (w) times; the k % 16 tail through masked loads (zeros past k).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_avx512<const R: usize, const C: usize>(x: *const f32, w: *const f32, k: usize) -> [[f32; C]; R] {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let mut p = 0;
    while p < k {
        let mask: __mmask16 = if k - p >= 16 { 0xffff } else { ((1u32 << (k - p)) - 1) as u16 };
        // Plain loops, no closures: a closure is not compiled with the function's target features,
        // so an intrinsic inside one becomes a call (this cost half the decode step at batch 8).
        let mut wv = [_mm512_setzero_ps(); C];
        for j in 0..C {
            wv[j] = _mm512_maskz_loadu_ps(mask, w.add(j * k + p));
        }
        for i in 0..R {
            let xv = _mm512_maskz_loadu_ps(mask, x.add(i * k + p));
            for j in 0..C {
                acc[i][j] = _mm512_fmadd_ps(xv, wv[j], acc[i][j]);
            }
        }
        p += 16;
    }
    let mut out = [[0f32; C]; R];
    for i in 0..R {
        for j in 0..C {
            out[i][j] = _mm512_reduce_add_ps(acc[i][j]);
        }
    }
    out
}

/// The strip with AVX-512: groups of 4 rows of w (their 4·k floats stay in L1) against groups
/// of 4 rows of x, then single rows; w is read from memory once per strip whatever m is.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn strip_avx512(x: &[f32], w: &[f32], y: YPtr, m: usize, n: usize, k: usize, n0: usize, cols: usize) {
    debug_assert!(x.len() >= m * k && w.len() >= (n0 + cols) * k);
    let (xp, wp, yp) = (x.as_ptr(), w.as_ptr(), y.0);
    let mut j = n0;
    while j < n0 + cols {
        let c = (n0 + cols - j).min(4);
        let mut i = 0;
        while i < m {
            let r = if m - i >= 4 { 4 } else { 1 };
            let (xi, wj) = (xp.add(i * k), wp.add(j * k));
            match (r, c) {
                (4, 4) => {
                    let t = tile_avx512::<4, 4>(xi, wj, k);
                    for (a, row) in t.iter().enumerate() {
                        for (b, v) in row.iter().enumerate() {
                            *yp.add((i + a) * n + j + b) = *v;
                        }
                    }
                }
                (1, 4) => {
                    let t = tile_avx512::<1, 4>(xi, wj, k);
                    for (b, v) in t[0].iter().enumerate() {
                        *yp.add(i * n + j + b) = *v;
                    }
                }
                _ => {
                    for a in 0..r {
                        for b in 0..c {
                            *yp.add((i + a) * n + j + b) = tile_avx512::<1, 1>(xi.add(a * k), wj.add(b * k), k)[0][0];
                        }
                    }
                }
            }
            i += r;
        }
        j += c;
    }
}

fn strip_dispatch(isa: Isa, x: &[f32], w: &[f32], y: YPtr, m: usize, n: usize, k: usize, n0: usize, cols: usize) {
    assert!(x.len() >= m * k && w.len() >= (n0 + cols) * k && n0 + cols <= n, "strip out of bounds");
    match isa {
        // SAFETY (both): `Isa::best` checked the CPU features; the rows read are inside x and w
        // (asserted above) and the strip's columns inside y.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { strip_avx512(x, w, y, m, n, k, n0, cols) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { strip_avx2(x, w, y, m, n, k, n0, cols) },
        Isa::Portable => strip::<Plain>(x, w, y, m, n, k, n0, cols),
    }
}

/// Strips write disjoint columns of y, so sharing the pointer between rayon tasks is sound.
#[derive(Clone, Copy)]
struct YPtr(*mut f32);
unsafe impl Send for YPtr {}
unsafe impl Sync for YPtr {}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ`, overwriting y.
pub fn matmul_nt(x: &[f32], w: &[f32], y: &mut [f32], m: usize, n: usize, k: usize) {
    matmul_nt_with(Isa::best(), x, w, y, m, n, k)
}

fn matmul_nt_with(isa: Isa, x: &[f32], w: &[f32], y: &mut [f32], m: usize, n: usize, k: usize) {
    assert_eq!(x.len(), m * k, "matmul_nt: x is not [m, k]");
    assert_eq!(w.len(), n * k, "matmul_nt: w is not [n, k]");
    assert_eq!(y.len(), m * n, "matmul_nt: y is not [m, n]");
    if m >= PACKED_MIN_ROWS {
        return matmul_nt_packed(x, w, y, m, n, k);
    }
    // Enough strips to balance the threads, each big enough to amortise a task (~64 KB of w).
    let threads = rayon::current_num_threads().max(1);
    let min_cols = (16 * 1024 / k.max(1)).max(NR);
    let cols = n.div_ceil(threads * 4).max(min_cols).div_ceil(NR) * NR;
    let yp = YPtr(y.as_mut_ptr());
    (0..n.div_ceil(cols)).into_par_iter().for_each(|s| {
        let n0 = s * cols;
        strip_dispatch(isa, x, w, yp, m, n, k, n0, cols.min(n - n0));
    });
}

/// `y[m, n] = x[m, k] · wᵀ[k, n]` on the packed GEMM: x is its A operand, w its B operand read
/// transposed through strides (packed once per reduction slice, shared by every task), y written
/// row-major — no copies of any operand. (An FMA's product commutes, so this gives the same bits
/// as the earlier `yᵀ = w · xᵀ` with w as A.)
fn matmul_nt_packed(x: &[f32], w: &[f32], y: &mut [f32], m: usize, n: usize, k: usize) {
    y.fill(0.0);
    let (a, b) = (StridedA { data: x, rs: k, cs: 1 }, StridedB { data: w, rs: 1, cs: k });
    gemm_acc_strided(m, n, k, a, b, y);
}

/// `y += bias` broadcast over rows.
pub fn add_bias(y: &mut [f32], bias: &[f32]) {
    for row in y.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = (0..k).map(|p| x[i * k + p] as f64 * w[j * k + p] as f64).sum::<f64>() as f32;
            }
        }
        y
    }

    #[test]
    fn matches_naive_on_ragged_shapes() {
        let mut seed = 1u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        for &(m, n, k) in &[(1, 1, 1), (1, 7, 13), (3, 5, 9), (4, 2, 8), (5, 33, 17), (9, 130, 72), (17, 300, 100), (16, 7, 3), (40, 97, 300), (8, 37, 576), (12, 9, 33), (2, 5, 16)] {
            let x: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rnd()).collect();
            let r = naive(&x, &w, m, n, k);
            for isa in Isa::all_available() {
                let mut y = vec![f32::NAN; m * n]; // poisoned: every element must be written
                matmul_nt_with(isa, &x, &w, &mut y, m, n, k);
                for (a, b) in y.iter().zip(&r) {
                    assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "({m},{n},{k}) {isa:?}: {a} vs {b}");
                }
            }
        }
    }
}
