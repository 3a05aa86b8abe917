//! `C[m, n] += A[m, k] · B[k, n]`, the packed GEMM of the CPU backend, with A and B read through
//! strides (C row-major), so no operand is ever copied transposed. Backward: dX = dY·W
//! (A = dY, B = W) and dW += dYᵀ·X (A = dYᵀ, B = X). Forward with many rows (prefill, training)
//! and the log-prob's logits: y = x·Wᵀ (A = x, B = Wᵀ read across W's rows), see
//! `matmul::matmul_nt`.
//!
//! Napkin math: 2·m·n·k FLOPs, FMA-bound. The 12 × 32 register tile does, per step p of the
//! reduction, 24 sixteen-lane FMAs for 2 vector loads of B and 12 broadcasts of A (AVX-512: 24 of
//! the 32 zmm registers hold C), so the peak is 2 FMA ports × 16 lanes × 2 FLOPs per cycle per
//! core. Without AVX-512 the same tile runs as four 6 × 16 AVX2 tiles (8 lanes: half the peak).
//!
//! Blocking (BLIS style). k is cut into equal slices of at most KC; B is packed into 32-column
//! panels `[kc][32]` (zero-padded past n), A into 12-row panels `[kc][12]`, and the register
//! tile runs over a panel of each. When C has enough 32-column panels for every thread (the
//! usual case), each rayon task owns a column block of C (widths chosen so the tasks split
//! evenly, `column_block`): it packs its own panels of B and runs every slice and every 96-row
//! block of A without waiting on the others — B's read from memory overlaps the other tasks'
//! FMAs. For narrow C, tasks own MC × NC blocks and each slice of B is packed once, shared. The
//! A panel (15 KiB) stays in L1 while the B panels of the block (≤ 480 KiB) stream from L2.
//!
//! Deterministic and ISA-independent: every element of C gets, per slice of k in order, one FMA
//! chain over p from zero, added to C — the same order whatever the tile width, thread count
//! or path (AVX-512, AVX2+FMA: bit-identical; the portable path rounds a·b separately).

use rayon::prelude::*;

const MR: usize = 12;
const NR: usize = 32;
/// The longest slice of the reduction; a call cuts k into equal slices of at most KC (576 → 2 ×
/// 288, not 256 + 256 + 64: a short last slice pays a whole slice's packing and C updates).
const KC: usize = 320;
const MC: usize = 96;
const NC: usize = 384;

/// A `[m, k]` operand read as `a[i * rs + p * cs]`.
#[derive(Clone, Copy)]
pub struct StridedA<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

/// A `[k, n]` operand read as `b[p * rs + j * cs]` (row-major: `rs = n, cs = 1`; a row-major
/// `[n, k]` matrix read transposed: `rs = 1, cs = k`).
#[derive(Clone, Copy)]
pub struct StridedB<'a> {
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

/// The instruction set the tile runs with, picked once per call from the CPU's features.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    pub(crate) fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Every path this CPU can run (tests compare them).
    #[cfg(test)]
    pub(crate) fn all_available() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                v.push(Isa::Avx2);
            }
            if std::is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
        }
        v
    }
}

type Tile = [[f32; NR]; MR];

/// Whether the packs may use the AVX-512 transposes (`pack_avx512.rs`).
fn isa_has_avx512(isa: Isa) -> bool {
    #[cfg(target_arch = "x86_64")]
    return isa == Isa::Avx512;
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = isa;
        false
    }
}

/// The 12 × 32 tile over packed panels, `acc[r][j] = Σ_p a[p][r] · b[p][j]`: the portable
/// reference of the SIMD tiles (a·b rounded separately, so close to them, not bit-equal).
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn tile_portable(kc: usize, a: &[f32], b: &[f32]) -> Tile {
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
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)]
unsafe fn tile_avx512<const R: usize>(kc: usize, a: &[f32], b: &[f32]) -> Tile {
    // R ≤ 12 rows of the panel: the last panel of a short block (64 rows = 5 × 12 + 4) runs only
    // its real rows instead of FMAs on zero padding (12% of the work at 64 rows).
    use std::arch::x86_64::*;
    debug_assert!(R <= MR && a.len() >= kc * MR && b.len() >= kc * NR);
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let mut c = [[_mm512_setzero_ps(); 2]; R];
    for p in 0..kc {
        let b0 = _mm512_loadu_ps(bp.add(p * NR));
        let b1 = _mm512_loadu_ps(bp.add(p * NR + 16));
        for r in 0..R {
            let av = _mm512_set1_ps(*ap.add(p * MR + r));
            c[r][0] = _mm512_fmadd_ps(av, b0, c[r][0]);
            c[r][1] = _mm512_fmadd_ps(av, b1, c[r][1]);
        }
    }
    let mut out = [[0f32; NR]; MR];
    for r in 0..R {
        _mm512_storeu_ps(out[r].as_mut_ptr(), c[r][0]);
        _mm512_storeu_ps(out[r].as_mut_ptr().add(16), c[r][1]);
    }
    out
}

/// One 6 × 16 quadrant (rows r0..r0 + 6, columns j0..j0 + 16) of the tile in AVX2: 12
/// accumulators of the 16 ymm registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)]
unsafe fn quadrant_avx2(kc: usize, a: &[f32], b: &[f32], r0: usize, j0: usize, out: &mut Tile) {
    use std::arch::x86_64::*;
    debug_assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    let (ap, bp) = (a.as_ptr().add(r0), b.as_ptr().add(j0));
    let mut c = [[_mm256_setzero_ps(); 2]; 6];
    for p in 0..kc {
        let b0 = _mm256_loadu_ps(bp.add(p * NR));
        let b1 = _mm256_loadu_ps(bp.add(p * NR + 8));
        for r in 0..6 {
            let av = _mm256_broadcast_ss(&*ap.add(p * MR + r));
            c[r][0] = _mm256_fmadd_ps(av, b0, c[r][0]);
            c[r][1] = _mm256_fmadd_ps(av, b1, c[r][1]);
        }
    }
    for r in 0..6 {
        _mm256_storeu_ps(out[r0 + r].as_mut_ptr().add(j0), c[r][0]);
        _mm256_storeu_ps(out[r0 + r].as_mut_ptr().add(j0 + 8), c[r][1]);
    }
}

/// The tile over packed panels; rows from `h` on (zero padding) may be left out (AVX-512).
fn tile(isa: Isa, kc: usize, a: &[f32], b: &[f32], h: usize) -> Tile {
    assert!(a.len() >= kc * MR && b.len() >= kc * NR, "tile: panels shorter than kc");
    match isa {
        // SAFETY (all): `Isa::best` checked the CPU features; the panels hold kc·MR and kc·NR
        // floats (asserted above).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe {
            match h {
                0..=4 => tile_avx512::<4>(kc, a, b),
                5..=8 => tile_avx512::<8>(kc, a, b),
                _ => tile_avx512::<MR>(kc, a, b),
            }
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            let mut out = [[0f32; NR]; MR];
            for (r0, j0) in [(0, 0), (0, 16), (6, 0), (6, 16)] {
                unsafe { quadrant_avx2(kc, a, b, r0, j0, &mut out) };
            }
            out
        }
        Isa::Portable => tile_portable(kc, a, b),
    }
}

/// Packs `B[p0 .. p0 + kc, :]` into 32-column panels `[kc][32]` (`ks · 32` floats apart),
/// zero-padded past n.
fn pack_b(isa: Isa, b: StridedB, n: usize, p0: usize, kc: usize, bpack: &mut [f32], ks: usize) {
    bpack.par_chunks_mut(ks * NR).enumerate().for_each(|(jp, panel)| pack_b_panel(isa, b, n, jp, p0, kc, panel));
}

/// Packs panel `jp` (columns jp·32 .. jp·32 + 32) of `B[p0 .. p0 + kc, :]` (see `pack_b`).
fn pack_b_panel(isa: Isa, b: StridedB, n: usize, jp: usize, p0: usize, kc: usize, panel: &mut [f32]) {
    let (jj, w) = (jp * NR, (n - jp * NR).min(NR));
    let panel = &mut panel[..kc * NR];
    if w < NR {
        panel.fill(0.0);
    }
    if b.cs == 1 {
        // Row-major B (W of dX, x of dW): a contiguous run of each row.
        for p in 0..kc {
            let (src, dst) = (&b.data[(p0 + p) * b.rs + jj..], &mut panel[p * NR..p * NR + NR]);
            if w == NR {
                // Fixed-size copy: inlined vector moves, not a memcpy call per 128 bytes.
                let d: &mut [f32; NR] = dst.try_into().unwrap();
                *d = src[..NR].try_into().unwrap();
            } else {
                dst[..w].copy_from_slice(&src[..w]);
            }
        }
    } else if b.rs == 1 && isa_has_avx512(isa) {
        // Transposed B (Wᵀ of the forward, the lm_head chunk of the log-prob): each column is
        // a contiguous run; 16 columns at a time transposed in registers.
        #[cfg(target_arch = "x86_64")]
        for half in 0..NR / 16 {
            let h = w.saturating_sub(half * 16).min(16);
            if h > 0 {
                let src = &b.data[(jj + half * 16) * b.cs + p0..];
                assert!((h - 1) * b.cs + kc <= src.len() && panel.len() >= kc * NR);
                // SAFETY: AVX-512 was detected (isa); the h columns of kc floats are inside
                // b.data and the panel holds kc·NR floats (asserted just above).
                unsafe { super::pack_avx512::pack_rows_transposed(src.as_ptr(), b.cs, h, kc, panel.as_mut_ptr(), NR, half * 16, 16) };
            }
        }
    } else if b.rs == 1 {
        for jc in 0..w {
            let col = &b.data[(jj + jc) * b.cs + p0..(jj + jc) * b.cs + p0 + kc];
            for (dst, v) in panel.chunks_exact_mut(NR).zip(col) {
                dst[jc] = *v;
            }
        }
    } else {
        for p in 0..kc {
            for jc in 0..w {
                panel[p * NR + jc] = b.data[(p0 + p) * b.rs + (jj + jc) * b.cs];
            }
        }
    }
}

/// Packs rows `i0 .. i0 + mc` of `A[:, p0 .. p0 + kc]` into 12-row panels `[kc][12]`; rows past
/// the block are zero.
fn pack_a(isa: Isa, a: StridedA, i0: usize, mc: usize, p0: usize, kc: usize, apack: &mut [f32], ks: usize) {
    for (ip, panel) in apack.chunks_mut(ks * MR).take(mc.div_ceil(MR)).enumerate() {
        let panel = &mut panel[..kc * MR];
        let (ii, h) = (i0 + ip * MR, (mc - ip * MR).min(MR));
        if h < MR {
            panel.fill(0.0);
        }
        if a.cs == 1 && isa_has_avx512(isa) {
            // Row-major A (dy, W): 12 rows transposed in registers, 16 steps at a time.
            #[cfg(target_arch = "x86_64")]
            {
                let src = &a.data[ii * a.rs + p0..];
                assert!((h - 1) * a.rs + kc <= src.len());
                // SAFETY: AVX-512 was detected (isa); the h rows of kc floats are inside a.data
                // (asserted) and the panel holds kc·MR floats.
                unsafe { super::pack_avx512::pack_rows_transposed(src.as_ptr(), a.rs, h, kc, panel.as_mut_ptr(), MR, 0, MR) };
            }
        } else if a.cs == 1 {
            // Row-major A (dy, W): one contiguous run per row.
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
                dst[..h].copy_from_slice(col);
            }
        } else {
            for p in 0..kc {
                for r in 0..h {
                    panel[p * MR + r] = a.data[(ii + r) * a.rs + (p0 + p) * a.cs];
                }
            }
        }
    }
}

/// `c[m, n] += A · b[k, n]` (c and b row-major). Deterministic: each element of C is summed in
/// the same order whatever the thread count or instruction set.
pub fn gemm_acc(m: usize, n: usize, k: usize, a: StridedA, b: &[f32], c: &mut [f32]) {
    let b = StridedB { data: b, rs: n, cs: 1 };
    gemm_strided(Isa::best(), m, n, k, a, b, c)
}

/// `c[m, n] += A · B` with A and B read through strides: the forward's `y = x · Wᵀ` reads W in
/// place (no transposed copy).
pub fn gemm_acc_strided(m: usize, n: usize, k: usize, a: StridedA, b: StridedB, c: &mut [f32]) {
    gemm_strided(Isa::best(), m, n, k, a, b, c)
}

/// Adds the `h × w` corner of a tile to the row-major C (`n` columns) at (ii, jj).
fn add_tile(t: &Tile, h: usize, w: usize, cp: CPtr, n: usize, ii: usize, jj: usize) {
    for (r, row) in t.iter().enumerate().take(h) {
        // SAFETY: tasks own disjoint blocks of C; (ii + r, jj..jj + w) is inside this one.
        let dst = unsafe { std::slice::from_raw_parts_mut(cp.at((ii + r) * n + jj), w) };
        for (d, v) in dst.iter_mut().zip(row) {
            *d += v;
        }
    }
}

/// Columns of C per task: the widest block (whole 32-column panels, at most NC) whose tasks
/// spread over the threads to within 5% of an even split, else the most even one. Matters when
/// the row blocks alone leave threads idle — prefill of one short prompt is a single row block:
/// q|k|v's 960 columns in 384-column blocks keep one thread busy 50% longer than the other.
/// Blocking C never changes an element's sums.
fn column_block(row_blocks: usize, n: usize, threads: usize) -> usize {
    let threads = threads.max(1);
    // Longest-first greedy assignment of the tasks (work-stealing ends up close to it).
    let makespan = |w: usize| {
        let mut sizes: Vec<usize> = (0..n.div_ceil(w)).map(|j| w.min(n - j * w)).flat_map(|s| std::iter::repeat_n(s, row_blocks)).collect();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        let mut load = vec![0usize; threads];
        for s in sizes {
            *load.iter_mut().min().unwrap() += s;
        }
        *load.iter().max().unwrap()
    };
    let even = (n * row_blocks).div_ceil(threads) as f64;
    let widths: Vec<usize> = (1..=NC / NR).rev().map(|p| p * NR).collect();
    if let Some(&w) = widths.iter().find(|&&w| even / makespan(w) as f64 >= 0.95) {
        return w;
    }
    *widths.iter().min_by_key(|&&w| (makespan(w), usize::MAX - w)).unwrap()
}

pub(crate) fn gemm_strided(isa: Isa, m: usize, n: usize, k: usize, a: StridedA, b: StridedB, c: &mut [f32]) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rs: usize, cs: usize, rows: usize, cols: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert_eq!(c.len(), m * n, "gemm: c is not [{m}, {n}]");
    if k == 0 {
        return;
    }
    assert!(last(a.rs, a.cs, m, k) < a.data.len(), "gemm: a is too small for [{m}, {k}]");
    assert!(last(b.rs, b.cs, k, n) < b.data.len(), "gemm: b is too small for [{k}, {n}]");
    let cp = CPtr(c.as_mut_ptr());
    let slice = k.div_ceil(k.div_ceil(KC));
    let slices = || (0..k).step_by(slice).map(move |p0| (p0, (k - p0).min(slice)));
    // The tiles of the block of C at rows i0.., columns j0..j0 + nc over one slice of k, from
    // B's packed panels (the block's first panel at `first_panel`).
    let block = |apack: &mut Vec<f32>, bpack: &[f32], first_panel: usize, (i0, j0, nc): (usize, usize, usize), p0: usize, kc: usize| {
        let mc = (m - i0).min(MC);
        pack_a(isa, a, i0, mc, p0, kc, apack, slice);
        for ip in 0..mc.div_ceil(MR) {
            let ap = &apack[ip * slice * MR..ip * slice * MR + kc * MR];
            let (ii, h) = (i0 + ip * MR, (mc - ip * MR).min(MR));
            for jp in 0..nc.div_ceil(NR) {
                let panel = first_panel + jp;
                let bp = &bpack[panel * slice * NR..panel * slice * NR + kc * NR];
                let (jj, w) = (j0 + jp * NR, (nc - jp * NR).min(NR));
                add_tile(&tile(isa, kc, ap, bp, h), h, w, cp, n, ii, jj);
            }
        }
    };
    // Buffers sized to this call (a tiny GEMM must not zero 0.6 MB of panels per task).
    let apack = || vec![0f32; m.min(MC).div_ceil(MR) * slice * MR];
    let threads = rayon::current_num_threads();
    let ncol = column_block(1, n, threads);
    if n.div_ceil(ncol) >= threads {
        // Enough column blocks for every thread: each task owns a column block of C, packs its
        // own panels of B and runs every slice of k and every row block on its own — B's read
        // from memory overlaps the other tasks' FMAs, and no barrier between slices.
        (0..n.div_ceil(ncol)).into_par_iter().for_each_init(
            || (apack(), vec![0f32; ncol.min(n).div_ceil(NR) * slice * NR]),
            |(apack, bown), task| {
                let (j0, nc) = (task * ncol, (n - task * ncol).min(ncol));
                for (p0, kc) in slices() {
                    for (jp, panel) in bown.chunks_mut(slice * NR).take(nc.div_ceil(NR)).enumerate() {
                        pack_b_panel(isa, b, n, j0 / NR + jp, p0, kc, panel);
                    }
                    for i0 in (0..m).step_by(MC) {
                        block(apack, bown, 0, (i0, j0, nc), p0, kc);
                    }
                }
            },
        );
        return;
    }
    // Otherwise (narrow C, many threads) tasks own MC × ncb blocks and B is packed once per
    // slice, shared by every task.
    let ncb = column_block(m.div_ceil(MC), n, threads);
    let (mb, nb) = (m.div_ceil(MC), n.div_ceil(ncb));
    let mut bpack = vec![0f32; n.div_ceil(NR) * slice * NR];
    for (p0, kc) in slices() {
        pack_b(isa, b, n, p0, kc, &mut bpack, slice);
        let bpack = &bpack;
        (0..mb * nb).into_par_iter().for_each_init(apack, |apack, task| {
            let (i0, j0) = ((task / nb) * MC, (task % nb) * ncb);
            block(apack, bpack, j0 / NR, (i0, j0, (n - j0).min(ncb)), p0, kc)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn isas() -> Vec<Isa> {
        Isa::all_available()
    }

    #[test]
    fn column_blocks_keep_every_thread_busy() {
        // Prefill of 64 rows (one row block) on 2 threads: q|k|v (960), o (576), gate|up (3072).
        for (n, want) in [(960, 160), (576, 288), (3072, 384)] {
            assert_eq!(column_block(1, n, 2), want, "n = {n}");
        }
        // Many row blocks: full width (6 × [384, 192] splits evenly over 2 threads).
        assert_eq!(column_block(6, 576, 2), NC);
        assert_eq!(column_block(1, 5, 3) % NR, 0);
    }

    #[test]
    fn simd_tiles_match_the_portable_tile_and_each_other_bit_for_bit() {
        let a: Vec<f32> = (0..37 * MR).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37 * NR).map(|i| (i as f32 * 0.11).cos()).collect();
        let p = tile(Isa::Portable, 37, &a, &b, MR);
        let simd: Vec<Tile> = isas().into_iter().skip(1).map(|isa| tile(isa, 37, &a, &b, MR)).collect();
        for s in &simd {
            for (rp, rs) in p.iter().zip(s) {
                for (x, y) in rp.iter().zip(rs) {
                    assert!((x - y).abs() < 1e-4, "{x} vs {y}");
                }
            }
            // The FMA paths (AVX2 and AVX-512) sum in the same order: identical bits.
            assert_eq!(s.map(|r| r.map(f32::to_bits)), simd[0].map(|r| r.map(f32::to_bits)));
        }
    }

    #[test]
    fn transposed_b_matches_row_major_bit_for_bit() {
        // W·xᵀ with xᵀ read through strides (as the forward reads Wᵀ) against the same product
        // with an explicit transposed copy, on every path.
        let (m, n, k) = (37, 45, 300);
        let w: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let x: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut xt = vec![0f32; k * n];
        for j in 0..n {
            for p in 0..k {
                xt[p * n + j] = x[j * k + p];
            }
        }
        for isa in isas() {
            let mut yt = vec![0f32; m * n];
            let bt = StridedB { data: &xt, rs: n, cs: 1 };
            gemm_strided(isa, m, n, k, StridedA { data: &w, rs: k, cs: 1 }, bt, &mut yt);
            let mut y = vec![0f32; m * n];
            let b = StridedB { data: &x, rs: 1, cs: k };
            gemm_strided(isa, m, n, k, StridedA { data: &w, rs: k, cs: 1 }, b, &mut y);
            for (i, (a, b)) in y.iter().zip(&yt).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{isa:?} element {i}: {a} vs {b}");
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
        for &(m, n, k) in &[(1, 1, 1), (5, 17, 3), (7, 33, 300), (100, 200, 270), (13, 5, 600), (30, 400, 513)] {
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
                let mut first: Option<Vec<f32>> = None;
                for isa in isas() {
                    let mut c = c0.clone();
                    let bs = StridedB { data: &b, rs: n, cs: 1 };
                    gemm_strided(isa, m, n, k, StridedA { data: &data, rs, cs }, bs, &mut c);
                    for i in 0..m {
                        for j in 0..n {
                            let want = c0[i * n + j] as f64 + (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum::<f64>();
                            let got = c[i * n + j] as f64;
                            assert!((got - want).abs() < 1e-4 * (1.0 + want.abs()), "({m},{n},{k}) t={transposed} {isa:?}: {got} vs {want}");
                        }
                    }
                    if isa != Isa::Portable {
                        match &first {
                            None => first = Some(c),
                            Some(f) => assert!(f.iter().zip(&c).all(|(x, y)| x.to_bits() == y.to_bits()), "{isa:?} differs from AVX2"),
                        }
                    }
                }
            }
        }
    }
}
