//! Gradients of every parameter, in the layout of `ModelWeights` (same shapes, same Hugging Face
//! names), plus named iteration over weights and gradients alike.
//!
//! A gradient buffer *is* a `ModelWeights` full of ∂L/∂θ: the backward accumulates into it
//! (`+=`), so micro-batches add up and the two uses of tied embeddings (input lookup and
//! lm_head) land in the one `embed` tensor. Zero it between optimizer steps.

use crate::model::weights::{LayerWeights, ModelWeights};

/// ∂L/∂θ for every parameter of a model, shaped like its `ModelWeights`.
pub struct Grads(pub ModelWeights);

impl Grads {
    /// Zero gradients shaped like `w` (tied embeddings stay tied: no lm_head buffer).
    pub fn zeros_like(w: &ModelWeights) -> Self {
        let z = |v: &Vec<f32>| vec![0f32; v.len()];
        let zo = |v: &Option<Vec<f32>>| v.as_ref().map(z);
        Grads(ModelWeights {
            embed: z(&w.embed),
            layers: w
                .layers
                .iter()
                .map(|l| LayerWeights {
                    input_norm: z(&l.input_norm),
                    q_proj: z(&l.q_proj),
                    k_proj: z(&l.k_proj),
                    v_proj: z(&l.v_proj),
                    q_bias: zo(&l.q_bias),
                    k_bias: zo(&l.k_bias),
                    v_bias: zo(&l.v_bias),
                    o_proj: z(&l.o_proj),
                    post_norm: z(&l.post_norm),
                    gate_proj: z(&l.gate_proj),
                    up_proj: z(&l.up_proj),
                    down_proj: z(&l.down_proj),
                })
                .collect(),
            final_norm: z(&w.final_norm),
            lm_head: zo(&w.lm_head),
        })
    }

    pub fn zero(&mut self) {
        for (_, g) in named_params_mut(&mut self.0) {
            g.fill(0.0);
        }
    }

    pub fn named(&self) -> Vec<(String, &Vec<f32>)> {
        named_params(&self.0)
    }

    pub fn named_mut(&mut self) -> Vec<(String, &mut Vec<f32>)> {
        named_params_mut(&mut self.0)
    }

    /// The gradient of the lm_head: its own tensor, or `embed` when the embeddings are tied.
    pub fn lm_head_mut(&mut self) -> &mut Vec<f32> {
        match self.0.lm_head.as_mut() {
            Some(h) => h,
            None => &mut self.0.embed,
        }
    }

    /// ‖g‖₂ over all parameters (the norm of the per-tensor norms, as `clip_grad_norm_`), in f64.
    pub fn global_norm(&self) -> f64 {
        self.named().iter().map(|(_, g)| g.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>()).sum::<f64>().sqrt()
    }

    pub fn scale(&mut self, s: f32) {
        for (_, g) in self.named_mut() {
            g.iter_mut().for_each(|v| *v *= s);
        }
    }
}

macro_rules! named_list {
    ($w:expr, $($r:tt)*) => {{
        let w = $w;
        let mut out = Vec::new();
        out.push(("model.embed_tokens.weight".to_string(), $($r)* w.embed));
        for (l, lw) in IterEither::iter_mut_or_iter($($r)* w.layers) {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            out.push((p("input_layernorm.weight"), $($r)* lw.input_norm));
            out.push((p("self_attn.q_proj.weight"), $($r)* lw.q_proj));
            out.push((p("self_attn.k_proj.weight"), $($r)* lw.k_proj));
            out.push((p("self_attn.v_proj.weight"), $($r)* lw.v_proj));
            if let Some(b) = $($r)* lw.q_bias { out.push((p("self_attn.q_proj.bias"), b)); }
            if let Some(b) = $($r)* lw.k_bias { out.push((p("self_attn.k_proj.bias"), b)); }
            if let Some(b) = $($r)* lw.v_bias { out.push((p("self_attn.v_proj.bias"), b)); }
            out.push((p("self_attn.o_proj.weight"), $($r)* lw.o_proj));
            out.push((p("post_attention_layernorm.weight"), $($r)* lw.post_norm));
            out.push((p("mlp.gate_proj.weight"), $($r)* lw.gate_proj));
            out.push((p("mlp.up_proj.weight"), $($r)* lw.up_proj));
            out.push((p("mlp.down_proj.weight"), $($r)* lw.down_proj));
        }
        out.push(("model.norm.weight".to_string(), $($r)* w.final_norm));
        if let Some(h) = $($r)* w.lm_head { out.push(("lm_head.weight".to_string(), h)); }
        out
    }};
}

/// Helper so one macro body serves `&` and `&mut` (enumerate over the right iterator).
trait IterEither {
    type I;
    fn iter_mut_or_iter(self) -> Self::I;
}
impl<'a> IterEither for &'a Vec<LayerWeights> {
    type I = std::iter::Enumerate<std::slice::Iter<'a, LayerWeights>>;
    fn iter_mut_or_iter(self) -> Self::I {
        self.iter().enumerate()
    }
}
impl<'a> IterEither for &'a mut Vec<LayerWeights> {
    type I = std::iter::Enumerate<std::slice::IterMut<'a, LayerWeights>>;
    fn iter_mut_or_iter(self) -> Self::I {
        self.iter_mut().enumerate()
    }
}

/// Every parameter tensor with its Hugging Face name, in checkpoint order (embed, layers, norm,
/// lm_head if untied).
pub fn named_params(w: &ModelWeights) -> Vec<(String, &Vec<f32>)> {
    named_list!(w, &)
}

/// As `named_params`, mutable (the optimizer's view).
pub fn named_params_mut(w: &mut ModelWeights) -> Vec<(String, &mut Vec<f32>)> {
    named_list!(w, &mut)
}

/// A deep copy of the weights (`ModelWeights` is not `Clone`).
pub fn clone_weights(w: &ModelWeights) -> ModelWeights {
    ModelWeights {
        embed: w.embed.clone(),
        layers: w
            .layers
            .iter()
            .map(|l| LayerWeights {
                input_norm: l.input_norm.clone(),
                q_proj: l.q_proj.clone(),
                k_proj: l.k_proj.clone(),
                v_proj: l.v_proj.clone(),
                q_bias: l.q_bias.clone(),
                k_bias: l.k_bias.clone(),
                v_bias: l.v_bias.clone(),
                o_proj: l.o_proj.clone(),
                post_norm: l.post_norm.clone(),
                gate_proj: l.gate_proj.clone(),
                up_proj: l.up_proj.clone(),
                down_proj: l.down_proj.clone(),
            })
            .collect(),
        final_norm: w.final_norm.clone(),
        lm_head: w.lm_head.clone(),
    }
}
