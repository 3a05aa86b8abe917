//! The packing of the GEMM (gemm.rs) for operands read across their rows, with AVX-512: 16 rows ×
//! 16 columns loaded as 16 vectors, transposed in registers, stored as 16 packed steps of the
//! reduction. Element by element the same packing took about a cycle per float (a scattered
//! 4-byte store each), a third of the GEMM's time at training shapes; this takes ~0.3.
//!
//! The transpose swaps the off-diagonal blocks at block sizes 8, 4, 2, 1 (each level swaps one
//! bit of the row index with the same bit of the column index): for rows i and j = i + b,
//!   new_i[c] = c & b == 0 ? r_i[c] : r_j[c − b],   new_j[c] = c & b == 0 ? r_i[c + b] : r_j[c],
//! one two-source permute (`vpermt2ps`) per output row and level: 64 for 256 floats.
#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// The permute indices of one level b: (lo, hi) as in the module doc (lanes ≥ 16 pick r_j).
const fn level(b: usize) -> ([i32; 16], [i32; 16]) {
    let (mut lo, mut hi) = ([0i32; 16], [0i32; 16]);
    let mut c = 0;
    while c < 16 {
        if c & b == 0 {
            lo[c] = c as i32;
            hi[c] = (c + b) as i32;
        } else {
            lo[c] = (16 + c - b) as i32;
            hi[c] = (16 + c) as i32;
        }
        c += 1;
    }
    (lo, hi)
}

/// Computed at compile time: building them per call cost as much as the permutes.
const LEVELS: [(usize, ([i32; 16], [i32; 16])); 4] = [(8, level(8)), (4, level(4)), (2, level(2)), (1, level(1))];

/// `rows[i][c]` → `rows[c][i]` for a 16 × 16 block.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn transpose16(rows: &mut [__m512; 16]) {
    for (b, (lo, hi)) in LEVELS {
        let (lo, hi) = (_mm512_loadu_si512(lo.as_ptr().cast()), _mm512_loadu_si512(hi.as_ptr().cast()));
        for i in 0..16 {
            if i & b == 0 {
                let (ri, rj) = (rows[i], rows[i + b]);
                rows[i] = _mm512_permutex2var_ps(ri, lo, rj);
                rows[i + b] = _mm512_permutex2var_ps(ri, hi, rj);
            }
        }
    }
}

/// Mask of the first `n` (≤ 16) lanes.
fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// Packs `h` (≤ `width` ≤ 16) rows of `kc` floats, row r starting at `src + r·stride`, into
/// `dst[p · step + offset + r]` for p < kc, r < width (rows h..width written as zeros).
///
/// # Safety
/// The CPU must have AVX-512F; the rows must be readable for kc floats and `dst` writable at
/// every index written.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn pack_rows_transposed(src: *const f32, stride: usize, h: usize, kc: usize, dst: *mut f32, step: usize, offset: usize, width: usize) {
    debug_assert!(h <= width && width <= 16);
    let store = lanes(width);
    let mut p = 0;
    while p < kc {
        let n = (kc - p).min(16);
        let m = lanes(n);
        // Fixed trip counts (rows past h load nothing: an all-zero mask reads no memory) and no
        // closures (a closure is not compiled with this function's AVX-512 feature).
        let mut rows = [_mm512_setzero_ps(); 16];
        for (r, row) in rows.iter_mut().enumerate() {
            let mr = if r < h { m } else { 0 };
            *row = _mm512_maskz_loadu_ps(mr, src.wrapping_add(r * stride + p));
        }
        transpose16(&mut rows);
        for (q, row) in rows.iter().enumerate() {
            if q < n {
                _mm512_mask_storeu_ps(dst.add((p + q) * step + offset), store, *row);
            }
        }
        p += 16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_like_the_element_by_element_loop() {
        if !std::is_x86_feature_detected!("avx512f") {
            eprintln!("skipped: no AVX-512 on this CPU");
            return;
        }
        let (stride, rows) = (50, 16);
        let src: Vec<f32> = (0..rows * stride).map(|i| i as f32).collect();
        for &(h, width, kc, step, offset) in &[(12, 12, 37, 12, 0), (5, 12, 16, 12, 0), (16, 16, 33, 32, 16), (1, 16, 1, 32, 0), (16, 16, 50, 32, 0)] {
            let mut got = vec![f32::NAN; kc * step];
            // SAFETY: AVX-512 checked above; the rows and the output are in bounds.
            unsafe { pack_rows_transposed(src.as_ptr(), stride, h, kc, got.as_mut_ptr(), step, offset, width) };
            for p in 0..kc {
                for q in 0..step {
                    let want = if q < offset || q >= offset + width {
                        f32::NAN // never written
                    } else if q - offset < h {
                        src[(q - offset) * stride + p]
                    } else {
                        0.0
                    };
                    let g = got[p * step + q];
                    assert!(g == want || (g.is_nan() && want.is_nan()), "h={h} kc={kc} p={p} q={q}: {g} vs {want}");
                }
            }
        }
    }
}
