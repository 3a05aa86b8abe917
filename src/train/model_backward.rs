//! The training forward and backward of the Qwen2/Llama decoder over whole packed sequences
//! (prompt + response, no KV cache), on the CPU backend.
//!
//! Forward, per layer (T rows = all tokens of the batch, each sequence causal on its own):
//!   n1 = rmsnorm(x, w_in);  q,k,v = n1·W{q,k,v}ᵀ (+ b);  q,k ← rope(q,k)
//!   a  = attn(q, k, v);     x' = x + a·W_oᵀ
//!   n2 = rmsnorm(x', w_post); u = silu(n2·W_gᵀ) ⊙ (n2·W_uᵀ);  x'' = x' + u·W_dᵀ
//! then `hidden = rmsnorm(x_L, w_final)`. The backward runs the same chain in reverse with the
//! ops of `backend::cpu::backward`, from ∂L/∂hidden to ∂L/∂θ for every parameter.
//!
//! Activation memory: `Save::All` keeps every layer's intermediates; `Save::Checkpoint` keeps
//! only each layer's input x and recomputes the layer's forward just before its backward
//! (per-layer gradient checkpointing). The recomputation is the same deterministic code on the
//! same input, so both give bit-identical gradients.

use super::grads::Grads;
use crate::backend::cpu::backward::{
    attention_backward, attention_forward, bias_backward, linear_backward_input, linear_backward_weight, rmsnorm_backward,
    rope_backward_inplace, silu_mul_backward, AttnShape, Packing,
};
use crate::backend::cpu::matmul::{add_bias, matmul_nt};
use crate::backend::cpu::ops::{add_inplace, rmsnorm, rope_cos_sin, rope_inplace, silu_mul_inplace};
use crate::model::config::ModelConfig;
use crate::model::weights::{LayerWeights, ModelWeights};
use anyhow::{bail, Result};

/// What the training forward keeps for the backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Save {
    /// Every intermediate of every layer (fastest backward, most memory).
    All,
    /// Only each layer's input; the layer is recomputed in the backward.
    Checkpoint,
    /// Nothing: a forward for log-probs only (no backward possible).
    Nothing,
}

/// The intermediates of one layer that its backward reads.
struct LayerActs {
    n1: Vec<f32>,
    q: Vec<f32>, // after RoPE
    k: Vec<f32>, // after RoPE
    v: Vec<f32>,
    attn: Vec<f32>,
    lse: Vec<f32>,
    x_mid: Vec<f32>,
    n2: Vec<f32>,
    gate: Vec<f32>, // pre-activation
    up: Vec<f32>,
    act: Vec<f32>, // silu(gate) ⊙ up
}

/// Row layout shared by the forward and backward: the packing and each row's RoPE angles.
struct Rows {
    pack: Packing,
    cos: Vec<Vec<f32>>, // per position
    sin: Vec<Vec<f32>>,
    pos: Vec<usize>, // per row
}

/// The result of `train_forward`: final-normed hidden states and what the backward needs.
pub struct TrainForward {
    /// `[T, hidden]` final-normed hidden states, rows in sequence order.
    pub hidden: Vec<f32>,
    /// The packing of the sequences into rows.
    pub pack: Packing,
    tokens: Vec<u32>,
    rows: Rows,
    save: Save,
    layer_inputs: Vec<Vec<f32>>,
    acts: Vec<Option<LayerActs>>,
    x_final: Vec<f32>,
}

fn layer_forward(c: &ModelConfig, lw: &LayerWeights, x: &[f32], rows: &Rows) -> (Vec<f32>, LayerActs) {
    let t = rows.pos.len();
    let (h, qd, kvd, inter) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
    let mut n1 = vec![0f32; t * h];
    rmsnorm(x, &lw.input_norm, c.rms_norm_eps, &mut n1);
    let (mut q, mut k, mut v) = (vec![0f32; t * qd], vec![0f32; t * kvd], vec![0f32; t * kvd]);
    matmul_nt(&n1, &lw.q_proj, &mut q, t, qd, h);
    matmul_nt(&n1, &lw.k_proj, &mut k, t, kvd, h);
    matmul_nt(&n1, &lw.v_proj, &mut v, t, kvd, h);
    for (y, b) in [(&mut q, &lw.q_bias), (&mut k, &lw.k_bias), (&mut v, &lw.v_bias)] {
        if let Some(b) = b {
            add_bias(y, b);
        }
    }
    for (i, &p) in rows.pos.iter().enumerate() {
        rope_inplace(&mut q[i * qd..(i + 1) * qd], c.head_dim, &rows.cos[p], &rows.sin[p]);
        rope_inplace(&mut k[i * kvd..(i + 1) * kvd], c.head_dim, &rows.cos[p], &rows.sin[p]);
    }
    let sh = AttnShape { num_heads: c.num_heads, num_kv_heads: c.num_kv_heads, head_dim: c.head_dim };
    let (mut attn, mut lse) = (vec![0f32; t * qd], vec![0f32; t * c.num_heads]);
    attention_forward(&q, &k, &v, &rows.pack, sh, &mut attn, &mut lse);
    let mut x_mid = vec![0f32; t * h];
    matmul_nt(&attn, &lw.o_proj, &mut x_mid, t, h, qd);
    add_inplace(&mut x_mid, x);

    let mut n2 = vec![0f32; t * h];
    rmsnorm(&x_mid, &lw.post_norm, c.rms_norm_eps, &mut n2);
    let (mut gate, mut up) = (vec![0f32; t * inter], vec![0f32; t * inter]);
    matmul_nt(&n2, &lw.gate_proj, &mut gate, t, inter, h);
    matmul_nt(&n2, &lw.up_proj, &mut up, t, inter, h);
    let mut act = gate.clone();
    silu_mul_inplace(&mut act, &up);
    let mut x_out = vec![0f32; t * h];
    matmul_nt(&act, &lw.down_proj, &mut x_out, t, h, inter);
    add_inplace(&mut x_out, &x_mid);
    (x_out, LayerActs { n1, q, k, v, attn, lse, x_mid, n2, gate, up, act })
}

/// Backward of one layer: `dx` holds ∂L/∂x_out on entry and ∂L/∂x_in on return; the parameter
/// gradients are accumulated into `g`.
fn layer_backward(c: &ModelConfig, lw: &LayerWeights, x: &[f32], a: &LayerActs, rows: &Rows, dx: &mut [f32], g: &mut LayerWeights) {
    let t = rows.pos.len();
    let (h, qd, kvd, inter) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);

    // MLP: x_out = x_mid + act·W_dᵀ, act = silu(gate) ⊙ up, gate/up = n2·W_{g,u}ᵀ.
    let mut d_act = vec![0f32; t * inter];
    linear_backward_input(dx, &lw.down_proj, &mut d_act, t, h, inter);
    linear_backward_weight(dx, &a.act, &mut g.down_proj, t, h, inter);
    let (mut d_gate, mut d_up) = (vec![0f32; t * inter], vec![0f32; t * inter]);
    silu_mul_backward(&a.gate, &a.up, &d_act, &mut d_gate, &mut d_up);
    drop(d_act);
    linear_backward_weight(&d_gate, &a.n2, &mut g.gate_proj, t, inter, h);
    linear_backward_weight(&d_up, &a.n2, &mut g.up_proj, t, inter, h);
    let mut d_n2 = vec![0f32; t * h];
    let mut tmp = vec![0f32; t * h];
    linear_backward_input(&d_gate, &lw.gate_proj, &mut d_n2, t, inter, h);
    linear_backward_input(&d_up, &lw.up_proj, &mut tmp, t, inter, h);
    add_inplace(&mut d_n2, &tmp);
    rmsnorm_backward(&a.x_mid, &lw.post_norm, c.rms_norm_eps, &d_n2, &mut tmp, &mut g.post_norm);
    add_inplace(dx, &tmp); // dx = ∂L/∂x_mid

    // Attention: x_mid = x + attn·W_oᵀ.
    let mut d_attn = vec![0f32; t * qd];
    linear_backward_input(dx, &lw.o_proj, &mut d_attn, t, h, qd);
    linear_backward_weight(dx, &a.attn, &mut g.o_proj, t, h, qd);
    let (mut dq, mut dk, mut dv) = (vec![0f32; t * qd], vec![0f32; t * kvd], vec![0f32; t * kvd]);
    let sh = AttnShape { num_heads: c.num_heads, num_kv_heads: c.num_kv_heads, head_dim: c.head_dim };
    attention_backward(&a.q, &a.k, &a.v, &a.attn, &a.lse, &d_attn, &rows.pack, sh, &mut dq, &mut dk, &mut dv);
    drop(d_attn);
    for (i, &p) in rows.pos.iter().enumerate() {
        rope_backward_inplace(&mut dq[i * qd..(i + 1) * qd], c.head_dim, &rows.cos[p], &rows.sin[p]);
        rope_backward_inplace(&mut dk[i * kvd..(i + 1) * kvd], c.head_dim, &rows.cos[p], &rows.sin[p]);
    }
    for (d, gb) in [(&dq, &mut g.q_bias), (&dk, &mut g.k_bias), (&dv, &mut g.v_bias)] {
        if let Some(gb) = gb {
            bias_backward(d, gb);
        }
    }
    linear_backward_weight(&dq, &a.n1, &mut g.q_proj, t, qd, h);
    linear_backward_weight(&dk, &a.n1, &mut g.k_proj, t, kvd, h);
    linear_backward_weight(&dv, &a.n1, &mut g.v_proj, t, kvd, h);
    let mut d_n1 = vec![0f32; t * h];
    linear_backward_input(&dq, &lw.q_proj, &mut d_n1, t, qd, h);
    linear_backward_input(&dk, &lw.k_proj, &mut tmp, t, kvd, h);
    add_inplace(&mut d_n1, &tmp);
    linear_backward_input(&dv, &lw.v_proj, &mut tmp, t, kvd, h);
    add_inplace(&mut d_n1, &tmp);
    rmsnorm_backward(x, &lw.input_norm, c.rms_norm_eps, &d_n1, &mut tmp, &mut g.input_norm);
    add_inplace(dx, &tmp); // dx = ∂L/∂x_in
}

/// Runs the decoder over whole sequences (each at positions 0..len), keeping what `save` asks.
pub fn train_forward(c: &ModelConfig, w: &ModelWeights, seqs: &[&[u32]], save: Save) -> Result<TrainForward> {
    let h = c.hidden_size;
    let mut tokens = Vec::new();
    for s in seqs {
        if s.is_empty() {
            bail!("a training sequence is empty");
        }
        for &t in s.iter() {
            if t as usize >= c.vocab_size {
                bail!("token id {t} is outside the vocabulary (size {})", c.vocab_size);
            }
        }
        tokens.extend_from_slice(s);
    }
    let pack = Packing::from_lens(&seqs.iter().map(|s| s.len()).collect::<Vec<_>>());
    let max_len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
    let (cos, sin) = (0..max_len).map(|p| rope_cos_sin(p, c.head_dim, c.rope_theta)).unzip();
    let pos = pack.row_spans().iter().enumerate().map(|(r, (s, _))| r - s).collect();
    let rows = Rows { pack: pack.clone(), cos, sin, pos };

    let mut x = Vec::with_capacity(tokens.len() * h);
    for &tok in &tokens {
        x.extend_from_slice(&w.embed[tok as usize * h..(tok as usize + 1) * h]);
    }
    let (mut layer_inputs, mut acts) = (Vec::new(), Vec::new());
    for lw in &w.layers {
        let (x_out, a) = layer_forward(c, lw, &x, &rows);
        if save != Save::Nothing {
            layer_inputs.push(std::mem::replace(&mut x, x_out));
        } else {
            x = x_out;
        }
        acts.push(if save == Save::All { Some(a) } else { None });
    }
    let mut hidden = vec![0f32; x.len()];
    rmsnorm(&x, &w.final_norm, c.rms_norm_eps, &mut hidden);
    Ok(TrainForward { hidden, pack, tokens, rows, save, layer_inputs, acts, x_final: x })
}

/// Accumulates ∂L/∂θ into `grads` given ∂L/∂hidden (`[T, hidden]`, same rows as `fwd.hidden`).
/// The lm_head's own gradient is the log-prob module's business (it owns the vocabulary
/// product); this covers the final norm, every layer and the embedding lookup.
pub fn train_backward(c: &ModelConfig, w: &ModelWeights, fwd: &TrainForward, d_hidden: &[f32], grads: &mut Grads) -> Result<()> {
    if fwd.save == Save::Nothing {
        bail!("train_backward needs a forward run with Save::All or Save::Checkpoint");
    }
    let h = c.hidden_size;
    assert_eq!(d_hidden.len(), fwd.hidden.len(), "d_hidden must be [T, hidden]");
    let g = &mut grads.0;
    let mut dx = vec![0f32; d_hidden.len()];
    rmsnorm_backward(&fwd.x_final, &w.final_norm, c.rms_norm_eps, d_hidden, &mut dx, &mut g.final_norm);
    for l in (0..w.layers.len()).rev() {
        let x_in = &fwd.layer_inputs[l];
        let recomputed;
        let a = match &fwd.acts[l] {
            Some(a) => a,
            None => {
                recomputed = layer_forward(c, &w.layers[l], x_in, &fwd.rows).1;
                &recomputed
            }
        };
        layer_backward(c, &w.layers[l], x_in, a, &fwd.rows, &mut dx, &mut g.layers[l]);
    }
    for (r, &tok) in fwd.tokens.iter().enumerate() {
        let e = &mut g.embed[tok as usize * h..(tok as usize + 1) * h];
        add_inplace(e, &dx[r * h..(r + 1) * h]);
    }
    Ok(())
}
