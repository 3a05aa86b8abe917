//! The column blocks of a fused projection's output (issue 15): `[rows, Σ widths]` to and from
//! one `[rows, widths[p]]` tensor per part. The CPU reference of kernels/split_cols.cu: exact
//! copies, no arithmetic.

/// `parts[p][r, c] = src[r, off_p + c]`, `off_p = Σ_{i<p} widths[i]` (`widths[p]` = a part's columns).
pub fn split_cols(src: &[f32], parts: &mut [&mut [f32]], rows: usize) {
    let widths: Vec<usize> = parts.iter().map(|p| p.len() / rows.max(1)).collect();
    let w: usize = widths.iter().sum();
    assert_eq!(src.len(), rows * w, "split_cols: src is not [rows, Σ widths]");
    for (r, row) in src.chunks_exact(w.max(1)).take(rows).enumerate() {
        let mut off = 0;
        for (p, &n) in parts.iter_mut().zip(&widths) {
            p[r * n..(r + 1) * n].copy_from_slice(&row[off..off + n]);
            off += n;
        }
    }
}

/// `dst[r, off_p + c] = parts[p][r, c]`: the inverse of `split_cols`.
pub fn concat_cols(parts: &[&[f32]], dst: &mut [f32], rows: usize) {
    let widths: Vec<usize> = parts.iter().map(|p| p.len() / rows.max(1)).collect();
    let w: usize = widths.iter().sum();
    assert_eq!(dst.len(), rows * w, "concat_cols: dst is not [rows, Σ widths]");
    for (r, row) in dst.chunks_exact_mut(w.max(1)).take(rows).enumerate() {
        let mut off = 0;
        for (p, &n) in parts.iter().zip(&widths) {
            row[off..off + n].copy_from_slice(&p[r * n..(r + 1) * n]);
            off += n;
        }
    }
}
