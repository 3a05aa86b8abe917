//! Backward passes of the CPU ops (the reference the GPU training kernels are checked against).
//!
//! Conventions: `dy` is ∂L/∂(op output); every function either overwrites its input-gradient
//! output (`dx`) or, for weights, *accumulates* into it (`dw +=`), so the gradients of a tied or
//! shared tensor simply add up. Shapes are row-major `[rows, cols]`; linear weights keep the
//! PyTorch layout `[out, in]`.

pub use super::gemm::{gemm_acc, StridedA};
use rayon::prelude::*;

/// Rows smaller than this are not worth a rayon task each.
const PAR_MIN_ELEMS: usize = 1 << 14;

// ---------------------------------------------------------------------------------------------
// Linear layers: y[m, n] = x[m, k] · W[n, k]ᵀ (+ b)
// ---------------------------------------------------------------------------------------------

/// `out[c, r] = x[r, c]`: a `[rows, cols]` matrix transposed to `[cols, rows]`, a block of 32
/// output rows per task (reads stay within a few cache lines per input row).
pub fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(x.len(), rows * cols, "transpose: x is not [rows, cols]");
    const B: usize = 32;
    let mut out = vec![0f32; rows * cols];
    if rows == 0 || cols == 0 {
        return out;
    }
    out.par_chunks_mut(B * rows).enumerate().for_each(|(cb, block)| {
        let (c0, cn) = (cb * B, block.len() / rows);
        for r in 0..rows {
            for (c, v) in x[r * cols + c0..r * cols + c0 + cn].iter().enumerate() {
                block[c * rows + r] = *v;
            }
        }
    });
    out
}

/// Input gradient of a linear layer: `dx[m, k] = dy[m, n] · W[n, k]` (overwrites dx).
/// Blocked, packed, parallel outer-product GEMM (`super::gemm::gemm_acc`), W read in place.
pub fn linear_backward_input(dy: &[f32], w: &[f32], dx: &mut [f32], m: usize, n: usize, k: usize) {
    assert_eq!(dy.len(), m * n, "linear_backward_input: dy is not [m, n]");
    assert_eq!(w.len(), n * k, "linear_backward_input: w is not [n, k]");
    assert_eq!(dx.len(), m * k, "linear_backward_input: dx is not [m, k]");
    dx.fill(0.0);
    gemm_acc(m, k, n, StridedA { data: dy, rs: n, cs: 1 }, w, dx);
}

/// Weight gradient of a linear layer: `dW[n, k] += dy[m, n]ᵀ · x[m, k]` (the token dimension m
/// is the reduction; dyᵀ is read through strides, no copy).
pub fn linear_backward_weight(dy: &[f32], x: &[f32], dw: &mut [f32], m: usize, n: usize, k: usize) {
    assert_eq!(dy.len(), m * n, "linear_backward_weight: dy is not [m, n]");
    assert_eq!(x.len(), m * k, "linear_backward_weight: x is not [m, k]");
    assert_eq!(dw.len(), n * k, "linear_backward_weight: dw is not [n, k]");
    gemm_acc(n, k, m, StridedA { data: dy, rs: 1, cs: n }, x, dw);
}

/// Bias gradient: `db[n] += Σ_rows dy[row, n]` (column sums in f64).
pub fn bias_backward(dy: &[f32], db: &mut [f32]) {
    let n = db.len();
    let mut acc = vec![0f64; n];
    for row in dy.chunks_exact(n) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += *v as f64;
        }
    }
    for (d, a) in db.iter_mut().zip(acc) {
        *d += a as f32;
    }
}

/// `x += y`, in parallel for large buffers.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len(), "add_assign: length mismatch");
    if x.len() >= PAR_MIN_ELEMS {
        x.par_chunks_mut(4096).zip(y.par_chunks(4096)).for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, b)| *a += b));
    } else {
        x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
    }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm: y = w ⊙ x · r,  r = 1/sqrt(mean(x²) + eps)
// ---------------------------------------------------------------------------------------------

/// Backward of `rmsnorm` for every row (h = row length, g = w ⊙ dy):
///   dx  = r·g − x · r³ · (Σ_k g_k x_k) / h        (overwrites dx)
///   dw += Σ_rows dy ⊙ x · r                        (accumulates, summed in f64)
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

// ---------------------------------------------------------------------------------------------
// RoPE
// ---------------------------------------------------------------------------------------------

/// Backward of `rope_inplace` on one token (all heads): the rotation is orthogonal, so its
/// gradient is the rotation by −angle. For i < d/2 with (a, b) = (g_i, g_{i+d/2}):
///   (a, b) ← (a·cos + b·sin, b·cos − a·sin)
pub fn rope_backward_inplace(g: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    for head in g.chunks_exact_mut(head_dim) {
        let (a, b) = head.split_at_mut(half);
        for i in 0..half {
            let (g0, g1) = (a[i], b[i]);
            a[i] = g0 * cos[i] + g1 * sin[i];
            b[i] = g1 * cos[i] - g0 * sin[i];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU: y = silu(g) · u,  silu(g) = g·σ(g)
// ---------------------------------------------------------------------------------------------

#[allow(clippy::type_complexity)]
/// Backward of `silu_mul_inplace` from the saved pre-activations `gate` and `up`:
///   dgate = dy · u · σ(g)·(1 + g·(1 − σ(g))),   dup = dy · silu(g)   (both overwritten)
pub fn silu_mul_backward(gate: &[f32], up: &[f32], dy: &[f32], dgate: &mut [f32], dup: &mut [f32]) {
    let f = |(((g, u), d), (dg, du)): (((&f32, &f32), &f32), (&mut f32, &mut f32))| {
        let s = 1.0 / (1.0 + (-*g).exp());
        *du = d * g * s;
        *dg = d * u * s * (1.0 + g * (1.0 - s));
    };
    if gate.len() >= PAR_MIN_ELEMS {
        gate.par_iter().zip(up.par_iter()).zip(dy.par_iter()).zip(dgate.par_iter_mut().zip(dup.par_iter_mut())).for_each(f);
    } else {
        gate.iter().zip(up).zip(dy).zip(dgate.iter_mut().zip(dup.iter_mut())).for_each(f);
    }
}

// ---------------------------------------------------------------------------------------------
// Causal GQA attention over packed whole sequences (training: no KV cache)
// ---------------------------------------------------------------------------------------------

/// The packing of a training batch: sequence `s` occupies rows `starts[s] .. starts[s + 1]`,
/// its tokens at positions 0, 1, … (row − start).
#[derive(Debug, Clone)]
pub struct Packing {
    pub starts: Vec<usize>,
}

impl Packing {
    pub fn from_lens(lens: &[usize]) -> Self {
        let mut starts = vec![0];
        for l in lens {
            starts.push(starts.last().unwrap() + l);
        }
        Packing { starts }
    }
    pub fn total(&self) -> usize {
        *self.starts.last().unwrap()
    }
    pub fn num_seqs(&self) -> usize {
        self.starts.len() - 1
    }
    /// For every row: (first row of its sequence, one past its last row).
    pub fn row_spans(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::with_capacity(self.total());
        for w in self.starts.windows(2) {
            out.extend(std::iter::repeat_n((w[0], w[1]), w[1] - w[0]));
        }
        out
    }
}

/// Shapes of one attention call: `q`/`out` are `[T, num_heads·d]`, `k`/`v` `[T, num_kv_heads·d]`.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

/// Dot product in eight independent lanes (so it vectorises; a plain `sum()` is a serial chain).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let full = n / 8 * 8;
    let mut acc = [0f32; 8];
    for (ca, cb) in a[..full].chunks_exact(8).zip(b[..full].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += ca[l] * cb[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for i in full..n {
        s += a[i] * b[i];
    }
    s
}

/// Causal attention of every row over the earlier rows of its own sequence, keeping the
/// softmax statistics for the backward:
///   s_ij = q_i·k_j / √d (j ≤ i in the same sequence),  lse_i = log Σ_j e^{s_ij},
///   out_i = Σ_j e^{s_ij − lse_i} v_j.
/// Query head h reads KV head h / (num_heads / num_kv_heads). `lse` is `[T, num_heads]`.
pub fn attention_forward(q: &[f32], k: &[f32], v: &[f32], pack: &Packing, sh: AttnShape, out: &mut [f32], lse: &mut [f32]) {
    let AttnShape { num_heads: nh, num_kv_heads: nkv, head_dim: d } = sh;
    let (qd, kvd, group) = (nh * d, nkv * d, nh / nkv);
    let scale = 1.0 / (d as f32).sqrt();
    let spans = pack.row_spans();
    out.par_chunks_exact_mut(d).zip(lse.par_iter_mut()).enumerate().for_each(|(th, (o, l))| {
        let (t, h) = (th / nh, th % nh);
        let start = spans[t].0;
        let qv = &q[t * qd + h * d..t * qd + h * d + d];
        let koff = (h / group) * d;
        let mut s: Vec<f32> = (start..=t).map(|j| dot(qv, &k[j * kvd + koff..j * kvd + koff + d]) * scale).collect();
        let max = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for x in s.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        o.fill(0.0);
        for (jj, p) in s.iter().enumerate() {
            let j = start + jj;
            let w = p / sum;
            for (acc, vv) in o.iter_mut().zip(&v[j * kvd + koff..j * kvd + koff + d]) {
                *acc += w * vv;
            }
        }
        *l = max + sum.ln();
    });
}

/// Backward of `attention_forward` from the saved `out` and `lse` (flash-attention style, the
/// probabilities are recomputed as P_ij = e^{s_ij − lse_i}):
///   dP_ij = dO_i·v_j,   D_i = dO_i·O_i,   dS_ij = P_ij (dP_ij − D_i),
///   dq_i = Σ_j dS_ij k_j / √d,   dk_j = Σ_{i ≥ j} dS_ij q_i / √d,   dv_j = Σ_{i ≥ j} P_ij dO_i,
/// dk/dv summed over the query heads of the KV group. Two passes (queries, then keys) so each
/// output row is written by one task; dq, dk, dv are overwritten.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    pack: &Packing,
    sh: AttnShape,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let AttnShape { num_heads: nh, num_kv_heads: nkv, head_dim: d } = sh;
    let (qd, kvd, group) = (nh * d, nkv * d, nh / nkv);
    let scale = 1.0 / (d as f32).sqrt();
    let spans = pack.row_spans();
    let t_rows = spans.len();
    // D_i per (row, head).
    let big_d: Vec<f32> = (0..t_rows * nh).into_par_iter().map(|th| dot(&dout[th * d..th * d + d], &out[th * d..th * d + d])).collect();

    dq.par_chunks_exact_mut(d).enumerate().for_each(|(th, dqv)| {
        let (i, h) = (th / nh, th % nh);
        let start = spans[i].0;
        let koff = (h / group) * d;
        let qv = &q[i * qd + h * d..i * qd + h * d + d];
        let dov = &dout[i * qd + h * d..i * qd + h * d + d];
        dqv.fill(0.0);
        for j in start..=i {
            let kj = &k[j * kvd + koff..j * kvd + koff + d];
            let p = (dot(qv, kj) * scale - lse[th]).exp();
            let ds = p * (dot(dov, &v[j * kvd + koff..j * kvd + koff + d]) - big_d[th]);
            for (a, kk) in dqv.iter_mut().zip(kj) {
                *a += ds * scale * kk;
            }
        }
    });

    dk.par_chunks_exact_mut(d).zip(dv.par_chunks_exact_mut(d)).enumerate().for_each(|(jg, (dkv, dvv))| {
        let (j, g) = (jg / nkv, jg % nkv);
        let end = spans[j].1;
        let kj = &k[j * kvd + g * d..j * kvd + g * d + d];
        let vj = &v[j * kvd + g * d..j * kvd + g * d + d];
        dkv.fill(0.0);
        dvv.fill(0.0);
        for h in g * group..(g + 1) * group {
            for i in j..end {
                let th = i * nh + h;
                let qi = &q[i * qd + h * d..i * qd + h * d + d];
                let doi = &dout[i * qd + h * d..i * qd + h * d + d];
                let p = (dot(qi, kj) * scale - lse[th]).exp();
                let ds = p * (dot(doi, vj) - big_d[th]);
                for ((a, b), (qq, dd)) in dkv.iter_mut().zip(dvv.iter_mut()).zip(qi.iter().zip(doi)) {
                    *a += ds * scale * qq;
                    *b += p * dd;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_round_trips_ragged_shapes() {
        for &(r, c) in &[(1, 1), (3, 70), (33, 5), (65, 97)] {
            let x: Vec<f32> = (0..r * c).map(|i| i as f32).collect();
            let t = transpose(&x, r, c);
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(t[j * r + i], x[i * c + j]);
                }
            }
            assert_eq!(transpose(&t, c, r), x);
        }
    }

    #[test]
    fn dot_matches_serial_sum() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.3).cos()).collect();
        let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) as f64 - want).abs() < 1e-5);
    }
}
