//! `C[m, n] += A[m, k] · B[k, n]`, the packed GEMM of the CPU backend, with A read through
//! strides (so `dy` and `dyᵀ` need no transposed copy) and B row-major. Backward: dX = dY·W
//! (A = dY, B = W) and dW += dYᵀ·X (A = dYᵀ, B = X). Forward with many rows (prefill, training):
//! yᵀ = W·xᵀ (A = W read in place, B = xᵀ), see `matmul::matmul_nt`.
//! Napkin math: 2·m·n·k FLOPs; the 6×16 tile does 12 FMAs per 2 loads + 6 broadcasts, so it is
//! FMA-bound (peak = 2 FMA/cycle × 8 lanes × 2 FLOPs per core).
//!
//! Blocking (BLIS style): rayon tasks own disjoint MC × NC blocks of C. Per KC slice of the
//! reduction a task packs its B block into 16-column panels `[kc][16]` and its A block into
//! 6-row panels `[kc][6]` (zero-padded at the edges), then a 6 × 16 register tile does, for each
//! p, two vector loads of B and six broadcasts of A into 12 eight-lane accumulators (outer
//! products: no horizontal sums). The tile is written with AVX2+FMA intrinsics (picked at run
//! time) and has a portable version.

use rayon::prelude::*;

const MR: usize = 6;
const NR: usize = 16;
const KC: usize = 256;
const MC: usize = 96;
const NC: usize = 192;

/// A `[m, k]` operand read as `a[i * rs + p * cs]`.
#[derive(Clone, Copy)]
pub struct StridedA<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

#[derive(Clone, Copy)]
struct CPtr(*mut f32);
unsafe impl Send for CPtr {}
unsafe impl Sync for CPtr {}
impl CPtr {
    /// A method, so closures capture the whole (Sync) wrapper, not the raw field.
    fn at(&self, i: usize) -> *mut f32 {
        // SAFETY: callers stay within the matrix.
        unsafe { self.0.add(i) }
    }
}

/// 6 × 16 tile over packed panels: `acc[r][j] = Σ_p a[p][r] · b[p][j]`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn tile_portable(kc: usize, a: &[f32], b: &[f32]) -> [[f32; NR]; MR] {
    let mut acc = [[0f32; NR]; MR];
    for p in 0..kc {
        let bv: &[f32; NR] = b[p * NR..p * NR + NR].try_into().unwrap();
        for r in 0..MR {
            let av = a[p * MR + r];
            for j in 0..NR {
                acc[r][j] += av * bv[j];
            }
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_avx2(kc: usize, a: &[f32], b: &[f32]) -> [[f32; NR]; MR] {
    use std::arch::x86_64::*;
    debug_assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let mut c = [[_mm256_setzero_ps(); 2]; MR];
    for p in 0..kc {
        let b0 = _mm256_loadu_ps(bp.add(p * NR));
        let b1 = _mm256_loadu_ps(bp.add(p * NR + 8));
        for r in 0..MR {
            let av = _mm256_broadcast_ss(&*ap.add(p * MR + r));
            c[r][0] = _mm256_fmadd_ps(av, b0, c[r][0]);
            c[r][1] = _mm256_fmadd_ps(av, b1, c[r][1]);
        }
    }
    let mut out = [[0f32; NR]; MR];
    for r in 0..MR {
        _mm256_storeu_ps(out[r].as_mut_ptr(), c[r][0]);
        _mm256_storeu_ps(out[r].as_mut_ptr().add(8), c[r][1]);
    }
    out
}

fn tile(avx2: bool, kc: usize, a: &[f32], b: &[f32]) -> [[f32; NR]; MR] {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: the caller checked the CPU features; the panels hold kc·MR and kc·NR floats.
        return unsafe { tile_avx2(kc, a, b) };
    }
    let _ = avx2;
    tile_portable(kc, a, b)
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `c[m, n] += A · b[k, n]` (c and b row-major). Deterministic: each element of C is summed in
/// the same order whatever the thread count.
pub fn gemm_acc(m: usize, n: usize, k: usize, a: StridedA, b: &[f32], c: &mut [f32]) {
    assert_eq!(b.len(), k * n, "gemm_acc: b is not [k, n]");
    assert_eq!(c.len(), m * n, "gemm_acc: c is not [m, n]");
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!((m - 1) * a.rs + (k - 1) * a.cs < a.data.len(), "gemm_acc: a is too small for [m, k]");
    let avx2 = has_avx2();
    let cp = CPtr(c.as_mut_ptr());
    let (mb, nb) = (m.div_ceil(MC), n.div_ceil(NC));
    (0..mb * nb).into_par_iter().for_each(|task| {
        let (i0, j0) = ((task / nb) * MC, (task % nb) * NC);
        let (mc, nc) = ((m - i0).min(MC), (n - j0).min(NC));
        let (mpanels, npanels) = (mc.div_ceil(MR), nc.div_ceil(NR));
        let mut apack = vec![0f32; mpanels * KC * MR];
        let mut bpack = vec![0f32; npanels * KC * NR];
        for p0 in (0..k).step_by(KC) {
            let kc = (k - p0).min(KC);
            // Pack B[p0.., j0..] into [panel][p][16], zero-padded past n.
            for jp in 0..npanels {
                let panel = &mut bpack[jp * KC * NR..jp * KC * NR + kc * NR];
                let (jj, w) = (j0 + jp * NR, (nc - jp * NR).min(NR));
                for p in 0..kc {
                    let (src, dst) = (&b[(p0 + p) * n + jj..], &mut panel[p * NR..p * NR + NR]);
                    if w == NR {
                        // Fixed-size copy: inlined vector moves, not a memcpy call per 64 bytes.
                        let d: &mut [f32; NR] = dst.try_into().unwrap();
                        *d = src[..NR].try_into().unwrap();
                    } else {
                        dst[..w].copy_from_slice(&src[..w]);
                        dst[w..].fill(0.0);
                    }
                }
            }
            // Pack A[i0.., p0..] into [panel][p][6]; rows past m stay zero from the allocation.
            for ip in 0..mpanels {
                let panel = &mut apack[ip * KC * MR..ip * KC * MR + kc * MR];
                let (ii, h) = (i0 + ip * MR, (mc - ip * MR).min(MR));
                if a.cs == 1 {
                    // Row-major A (dy): one contiguous run per row.
                    for r in 0..h {
                        let row = &a.data[(ii + r) * a.rs + p0..(ii + r) * a.rs + p0 + kc];
                        for (dst, v) in panel.chunks_exact_mut(MR).zip(row) {
                            dst[r] = *v;
                        }
                    }
                } else if a.rs == 1 {
                    // Transposed A (dyᵀ): the panel's rows are adjacent for each p.
                    for (p, dst) in panel.chunks_exact_mut(MR).enumerate() {
                        let col = &a.data[(p0 + p) * a.cs + ii..(p0 + p) * a.cs + ii + h];
                        dst[..h].iter_mut().zip(col).for_each(|(d, v)| *d = *v);
                    }
                } else {
                    for p in 0..kc {
                        for r in 0..h {
                            panel[p * MR + r] = a.data[(ii + r) * a.rs + (p0 + p) * a.cs];
                        }
                    }
                }
            }
            for ip in 0..mpanels {
                let ap = &apack[ip * KC * MR..ip * KC * MR + kc * MR];
                let (ii, h) = (i0 + ip * MR, (mc - ip * MR).min(MR));
                for jp in 0..npanels {
                    let bp = &bpack[jp * KC * NR..jp * KC * NR + kc * NR];
                    let (jj, w) = (j0 + jp * NR, (nc - jp * NR).min(NR));
                    let t = tile(avx2, kc, ap, bp);
                    for (r, row) in t.iter().enumerate().take(h) {
                        // SAFETY: tasks own disjoint blocks of C; (ii + r, jj..jj + w) is inside it.
                        let dst = unsafe { std::slice::from_raw_parts_mut(cp.at((ii + r) * n + jj), w) };
                        for (d, v) in dst.iter_mut().zip(row) {
                            *d += v;
                        }
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_tile_matches_simd_tile() {
        let a: Vec<f32> = (0..37 * MR).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37 * NR).map(|i| (i as f32 * 0.11).cos()).collect();
        let (p, s) = (tile(false, 37, &a, &b), tile(has_avx2(), 37, &a, &b));
        for (rp, rs) in p.iter().zip(&s) {
            for (x, y) in rp.iter().zip(rs) {
                assert!((x - y).abs() < 1e-4, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn matches_naive_on_ragged_shapes_and_strides() {
        let mut s = 3u64;
        let mut rnd = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        for &(m, n, k) in &[(1, 1, 1), (5, 17, 3), (7, 33, 300), (100, 200, 270), (13, 5, 600)] {
            let a: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rnd()).collect();
            let c0: Vec<f32> = (0..m * n).map(|_| rnd()).collect();
            for transposed in [false, true] {
                // Row-major A, or A stored transposed ([k, m]).
                let (data, rs, cs) = if transposed {
                    let mut t = vec![0f32; m * k];
                    for i in 0..m {
                        for p in 0..k {
                            t[p * m + i] = a[i * k + p];
                        }
                    }
                    (t, 1, m)
                } else {
                    (a.clone(), k, 1)
                };
                let mut c = c0.clone();
                gemm_acc(m, n, k, StridedA { data: &data, rs, cs }, &b, &mut c);
                for i in 0..m {
                    for j in 0..n {
                        let want = c0[i * n + j] as f64 + (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum::<f64>();
                        let got = c[i * n + j] as f64;
                        assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "({m},{n},{k}) t={transposed}: {got} vs {want}");
                    }
                }
            }
        }
    }
}
