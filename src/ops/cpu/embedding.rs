//! The token embedding, forward and backward: the CPU reference of kernels/embedding.cu.
//!   out[r] = table[token_r]          d_table[token_r] += dx[r]   (rows in order: deterministic)

use super::norm::add_inplace;

pub fn embedding(tokens: &[u32], table: &[f32], hidden: usize, out: &mut [f32]) {
    for (r, &t) in tokens.iter().enumerate() {
        let t = t as usize;
        out[r * hidden..(r + 1) * hidden].copy_from_slice(&table[t * hidden..(t + 1) * hidden]);
    }
}

pub fn embedding_backward(tokens: &[u32], dx: &[f32], hidden: usize, d_table: &mut [f32]) {
    for (r, &t) in tokens.iter().enumerate() {
        let t = t as usize;
        add_inplace(&mut d_table[t * hidden..(t + 1) * hidden], &dx[r * hidden..(r + 1) * hidden]);
    }
}
