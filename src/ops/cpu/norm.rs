//! RMSNorm with the residual add, forward and backward: the CPU reference of
//! kernels/rmsnorm.cu (forward; the backward kernel is the training-kernels issue's).
//!
//! Forward, per row of h values (Hugging Face Qwen2RMSNorm):
//!   residual += x (if given);   y = w ⊙ residual · r,   r = 1/sqrt(mean(residual²) + eps)
//! Backward of y = w ⊙ x·r (g = w ⊙ dy):
//!   dx  = r·g − x · r³ · (Σ_k g_k x_k) / h
//!   dw += Σ_rows dy ⊙ x · r          (summed in f64, in a fixed order: deterministic)

use rayon::prelude::*;

/// Rows smaller than this are not worth a rayon task each.
const PAR_MIN_ELEMS: usize = 1 << 14;

/// `out[r] = x[r] / sqrt(mean(x[r]²) + eps) * weight` for every row r.
pub fn rmsnorm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let h = weight.len();
    let row = |(xr, or): (&[f32], &mut [f32])| {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, v), w) in or.iter_mut().zip(xr).zip(weight) {
            *o = w * (v * inv);
        }
    };
    if x.len() >= PAR_MIN_ELEMS {
        x.par_chunks_exact(h).zip(out.par_chunks_exact_mut(h)).for_each(row);
    } else {
        x.chunks_exact(h).zip(out.chunks_exact_mut(h)).for_each(row);
    }
}

/// `residual += x` (if given), then `out = rmsnorm(residual)`: the fused op of the forward.
pub fn add_rmsnorm(residual: &mut [f32], x: Option<&[f32]>, weight: &[f32], eps: f32, out: &mut [f32]) {
    if let Some(x) = x {
        add_inplace(residual, x);
    }
    rmsnorm(residual, weight, eps, out);
}

/// `x += y`.
pub fn add_inplace(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Backward of `rmsnorm` for every row: overwrites `dx`, accumulates into `dw`.
pub fn rmsnorm_backward(x: &[f32], weight: &[f32], eps: f32, dy: &[f32], dx: &mut [f32], dw: &mut [f32]) {
    let h = weight.len();
    assert_eq!(x.len() % h, 0);
    assert_eq!(dy.len(), x.len());
    assert_eq!(dx.len(), x.len());
    let row = |((xr, dyr), dxr): ((&[f32], &[f32]), &mut [f32])| -> Vec<f64> {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let r = 1.0 / (ms + eps).sqrt();
        let dot: f32 = xr.iter().zip(dyr).zip(weight).map(|((x, dy), w)| w * dy * x).sum();
        let c = r * r * r * dot / h as f32;
        let mut dwr = vec![0f64; h];
        for k in 0..h {
            dxr[k] = r * weight[k] * dyr[k] - xr[k] * c;
            dwr[k] = (dyr[k] * xr[k] * r) as f64;
        }
        dwr
    };
    let sum = |mut a: Vec<f64>, b: Vec<f64>| {
        a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
        a
    };
    let acc: Vec<f64> = if x.len() >= PAR_MIN_ELEMS {
        // Fixed-size groups of rows, summed in order, so the result does not depend on threads.
        let rows_per = (PAR_MIN_ELEMS / h).max(1);
        let parts: Vec<Vec<f64>> = x
            .par_chunks(rows_per * h)
            .zip(dy.par_chunks(rows_per * h))
            .zip(dx.par_chunks_mut(rows_per * h))
            .map(|((xc, dyc), dxc)| {
                xc.chunks_exact(h).zip(dyc.chunks_exact(h)).zip(dxc.chunks_exact_mut(h)).map(row).fold(vec![0f64; h], sum)
            })
            .collect();
        parts.into_iter().fold(vec![0f64; h], sum)
    } else {
        x.chunks_exact(h).zip(dy.chunks_exact(h)).zip(dx.chunks_exact_mut(h)).map(row).fold(vec![0f64; h], sum)
    };
    for (d, a) in dw.iter_mut().zip(acc) {
        *d += a as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmsnorm_of_constant_row_is_weight() {
        let x = vec![3.0f32; 8];
        let w: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let mut out = vec![f32::NAN; 8];
        rmsnorm(&x, &w, 0.0, &mut out);
        for (o, w) in out.iter().zip(&w) {
            assert!((o - w).abs() < 1e-6);
        }
    }
}
