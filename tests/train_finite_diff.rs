//! Finite-difference checks of every backward op, on random shapes: for a scalar probe
//! L(x) = Σ r ⊙ op(x) (r random), the analytic gradient g must agree with central differences
//! (L(x + εu) − L(x − εu)) / 2ε along random directions u (≈ ⟨g, u⟩) and single coordinates.
//! The ops are f32, so ε is large-ish and the tolerance is relative to ‖g‖.

use scalerl::ops::cpu::attention::{attention_backward, attention_forward, AttnShape, Packing};
use scalerl::ops::cpu::linear::{bias_backward, linear_backward_input, linear_backward_weight};
use scalerl::ops::cpu::logprob::{logprobs_backward, logprobs_forward};
use scalerl::ops::cpu::matmul::matmul_nt;
use scalerl::ops::cpu::norm::{rmsnorm, rmsnorm_backward};
use scalerl::ops::cpu::rope::{rope_backward_inplace, rope_cos_sin, rope_inplace};
use scalerl::ops::cpu::swiglu::{silu_mul, silu_mul_backward};
use scalerl::ops::LogProbShape;
use scalerl::train::{grpo_loss, GrpoConfig, GrpoTokens, LossAgg};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
    fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + ((self.next() + 1.0) * 0.5 * (hi - lo) as f32) as usize % (hi - lo).max(1)
    }
}

fn probe(y: &[f32], r: &[f32]) -> f64 {
    y.iter().zip(r).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// Checks `grad` = ∂f/∂x by central differences along 3 random directions and 4 coordinates.
#[track_caller]
fn check(what: &str, x: &[f32], grad: &[f32], f: &dyn Fn(&[f32]) -> f64, eps: f32, tol: f64, rng: &mut Rng) {
    assert_eq!(x.len(), grad.len(), "{what}");
    let gnorm = grad.iter().map(|g| (*g as f64).powi(2)).sum::<f64>().sqrt();
    let gmax = grad.iter().fold(0f64, |m, g| m.max(g.abs() as f64));
    let fd = |u: &[f32]| {
        let xp: Vec<f32> = x.iter().zip(u).map(|(a, b)| a + eps * b).collect();
        let xm: Vec<f32> = x.iter().zip(u).map(|(a, b)| a - eps * b).collect();
        (f(&xp) - f(&xm)) / (2.0 * eps as f64)
    };
    for _ in 0..3 {
        let u = rng.vec(x.len(), 1.0);
        let (num, an) = (fd(&u), probe(grad, &u));
        assert!((num - an).abs() <= tol * gnorm.max(1e-6), "{what}: direction: finite diff {num} vs analytic {an} (‖g‖ {gnorm})");
    }
    for _ in 0..4 {
        let i = rng.int(0, x.len());
        let mut u = vec![0f32; x.len()];
        u[i] = 1.0;
        let num = fd(&u);
        assert!((num - grad[i] as f64).abs() <= tol * gmax.max(1e-6), "{what}[{i}]: finite diff {num} vs analytic {}", grad[i]);
    }
}

#[test]
fn rmsnorm_backward_matches_finite_differences() {
    let mut rng = Rng(1);
    for _ in 0..6 {
        let (rows, h) = (rng.int(1, 9), rng.int(2, 80));
        let (x, w, r) = (rng.vec(rows * h, 1.0), rng.vec(h, 1.5), rng.vec(rows * h, 1.0));
        let eps = 1e-5;
        let (mut dx, mut dw) = (vec![0f32; rows * h], vec![0.5f32; h]); // dw accumulates onto 0.5
        rmsnorm_backward(&x, &w, eps, &r, &mut dx, &mut dw);
        dw.iter_mut().for_each(|v| *v -= 0.5);
        let fx = |x: &[f32]| {
            let mut y = vec![0f32; x.len()];
            rmsnorm(x, &w, eps, &mut y);
            probe(&y, &r)
        };
        check(&format!("rmsnorm dx ({rows}x{h})"), &x, &dx, &fx, 1e-2, 2e-3, &mut rng);
        let fw = |w: &[f32]| {
            let mut y = vec![0f32; x.len()];
            rmsnorm(&x, w, eps, &mut y);
            probe(&y, &r)
        };
        check(&format!("rmsnorm dw ({rows}x{h})"), &w, &dw, &fw, 1e-2, 2e-3, &mut rng);
    }
}

#[test]
fn rope_backward_matches_finite_differences() {
    let mut rng = Rng(2);
    for _ in 0..6 {
        let (heads, d, pos) = (rng.int(1, 5), 2 * rng.int(1, 33), rng.int(0, 500));
        let (cos, sin) = rope_cos_sin(pos, d, 10000.0);
        let (x, r) = (rng.vec(heads * d, 1.0), rng.vec(heads * d, 1.0));
        let mut g = r.clone();
        rope_backward_inplace(&mut g, d, &cos, &sin);
        let f = |x: &[f32]| {
            let mut y = x.to_vec();
            rope_inplace(&mut y, d, &cos, &sin);
            probe(&y, &r)
        };
        check(&format!("rope (heads {heads}, d {d}, pos {pos})"), &x, &g, &f, 1e-2, 1e-3, &mut rng);
    }
}

#[test]
fn silu_mul_backward_matches_finite_differences() {
    let mut rng = Rng(3);
    for _ in 0..6 {
        let n = rng.int(1, 300);
        let (g, u, r) = (rng.vec(n, 4.0), rng.vec(n, 2.0), rng.vec(n, 1.0));
        let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
        silu_mul_backward(&g, &u, &r, &mut dg, &mut du);
        let fg = |g: &[f32]| {
            let mut y = vec![0f32; g.len()];
            silu_mul(g, &u, &mut y);
            probe(&y, &r)
        };
        check(&format!("silu_mul dgate (n {n})"), &g, &dg, &fg, 1e-2, 2e-3, &mut rng);
        let fu = |u: &[f32]| {
            let mut y = vec![0f32; g.len()];
            silu_mul(&g, u, &mut y);
            probe(&y, &r)
        };
        check(&format!("silu_mul dup (n {n})"), &u, &du, &fu, 1e-2, 2e-3, &mut rng);
    }
}

#[test]
fn linear_backward_matches_naive_and_finite_differences() {
    let mut rng = Rng(4);
    for _ in 0..6 {
        let (m, n, k) = (rng.int(1, 40), rng.int(1, 70), rng.int(1, 90));
        let (x, w, b, r) = (rng.vec(m * k, 1.0), rng.vec(n * k, 1.0), rng.vec(n, 1.0), rng.vec(m * n, 1.0));
        let mut dx = vec![f32::NAN; m * k];
        linear_backward_input(&r, &w, &mut dx, m, n, k);
        let mut dw = vec![0f32; n * k];
        linear_backward_weight(&r, &x, &mut dw, m, n, k);
        let mut db = vec![0f32; n];
        bias_backward(&r, &mut db);
        // Naive f64 references.
        for i in 0..m {
            for p in 0..k {
                let want: f64 = (0..n).map(|j| r[i * n + j] as f64 * w[j * k + p] as f64).sum();
                assert!((dx[i * k + p] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "dx ({m},{n},{k})");
            }
        }
        for j in 0..n {
            for p in 0..k {
                let want: f64 = (0..m).map(|i| r[i * n + j] as f64 * x[i * k + p] as f64).sum();
                assert!((dw[j * k + p] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "dw ({m},{n},{k})");
            }
            let want: f64 = (0..m).map(|i| r[i * n + j] as f64).sum();
            assert!((db[j] as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "db");
        }
        let lin = |x: &[f32], w: &[f32], b: &[f32]| {
            let mut y = vec![0f32; m * n];
            matmul_nt(x, w, &mut y, m, n, k);
            for row in y.chunks_exact_mut(n) {
                row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
            }
            probe(&y, &r)
        };
        check("linear dx", &x, &dx, &|x| lin(x, &w, &b), 1e-2, 1e-3, &mut rng);
        check("linear dw", &w, &dw, &|w| lin(&x, w, &b), 1e-2, 1e-3, &mut rng);
        check("linear db", &b, &db, &|b| lin(&x, &w, b), 1e-2, 1e-3, &mut rng);
    }
}

#[test]
fn attention_backward_matches_finite_differences() {
    let mut rng = Rng(5);
    for trial in 0..5 {
        let nkv = rng.int(1, 3);
        let nh = nkv * rng.int(1, 4);
        let d = 2 * rng.int(1, 9);
        let lens: Vec<usize> = (0..rng.int(1, 4)).map(|_| rng.int(1, 12)).collect();
        let pack = Packing::from_lens(&lens);
        let t = pack.total();
        let sh = AttnShape { num_heads: nh, num_kv_heads: nkv, head_dim: d };
        let (q, k, v) = (rng.vec(t * nh * d, 1.5), rng.vec(t * nkv * d, 1.5), rng.vec(t * nkv * d, 1.0));
        let r = rng.vec(t * nh * d, 1.0);
        let fwd = |q: &[f32], k: &[f32], v: &[f32]| {
            let (mut o, mut l) = (vec![0f32; t * nh * d], vec![0f32; t * nh]);
            attention_forward(q, k, v, &pack, sh, &mut o, &mut l);
            (o, l)
        };
        let (o, lse) = fwd(&q, &k, &v);
        let (mut dq, mut dk, mut dv) = (vec![0f32; q.len()], vec![0f32; k.len()], vec![0f32; v.len()]);
        attention_backward(&q, &k, &v, &o, &lse, &r, &pack, sh, &mut dq, &mut dk, &mut dv);
        let tag = format!("attention #{trial} (lens {lens:?}, heads {nh}/{nkv}, d {d})");
        check(&format!("{tag} dq"), &q, &dq, &|q| probe(&fwd(q, &k, &v).0, &r), 1e-2, 2e-3, &mut rng);
        check(&format!("{tag} dk"), &k, &dk, &|k| probe(&fwd(&q, k, &v).0, &r), 1e-2, 2e-3, &mut rng);
        check(&format!("{tag} dv"), &v, &dv, &|v| probe(&fwd(&q, &k, v).0, &r), 1e-2, 2e-3, &mut rng);
        // Causality and packing: a token's output ignores later tokens and other sequences.
        if lens.len() > 1 {
            let mut k2 = k.clone();
            let last = t - 1;
            k2[last * nkv * d..].iter_mut().for_each(|x| *x += 1.0);
            let o2 = fwd(&q, &k2, &v).0;
            assert_eq!(o[..pack.starts[lens.len() - 1] * nh * d], o2[..pack.starts[lens.len() - 1] * nh * d], "{tag}: leak");
        }
    }
}

#[test]
fn chunked_logprobs_match_finite_differences_and_unchunked() {
    let mut rng = Rng(6);
    for trial in 0..5 {
        let (rows, h, vocab) = (rng.int(1, 12), rng.int(1, 40), rng.int(2, 200));
        let chunk = rng.int(1, vocab + 10);
        let temperature = 0.3 + (rng.next() + 1.0);
        let (hid, w) = (rng.vec(rows * h, 1.0), rng.vec(vocab * h, 1.0));
        let targets: Vec<u32> = (0..rows).map(|_| rng.int(0, vocab) as u32).collect();
        let (a, b) = (rng.vec(rows, 1.0), rng.vec(rows, 1.0));
        let sh = LogProbShape { hidden: h, vocab, temperature, chunk };
        let tag = format!("logprob #{trial} (rows {rows}, h {h}, vocab {vocab}, chunk {chunk}, T {temperature:.2})");
        let f = |hid: &[f32], w: &[f32]| {
            let o = logprobs_forward(hid, w, &targets, sh);
            probe(&o.logp, &a) + probe(&o.entropy, &b)
        };
        let fwd = logprobs_forward(&hid, &w, &targets, sh);
        // The unchunked computation, and a plain per-row reference in f64.
        let whole = logprobs_forward(&hid, &w, &targets, LogProbShape { chunk: vocab, ..sh });
        for i in 0..rows {
            assert!((fwd.logp[i] - whole.logp[i]).abs() < 1e-5 && (fwd.entropy[i] - whole.entropy[i]).abs() < 1e-5, "{tag}: chunked != unchunked");
            let z: Vec<f64> = (0..vocab).map(|v| (0..h).map(|p| hid[i * h + p] as f64 * w[v * h + p] as f64).sum::<f64>() / temperature as f64).collect();
            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
            let ent = lse - z.iter().map(|x| (x - lse).exp() * x).sum::<f64>();
            assert!((fwd.logp[i] as f64 - (z[targets[i] as usize] - lse)).abs() < 1e-4, "{tag}: logp");
            assert!((fwd.entropy[i] as f64 - ent).abs() < 1e-4, "{tag}: entropy");
        }
        let (mut dh, mut dw) = (vec![0f32; hid.len()], vec![0f32; w.len()]);
        logprobs_backward(&hid, &w, &targets, &fwd, &a, Some(&b), sh, &mut dh, &mut dw);
        check(&format!("{tag} d_hidden"), &hid, &dh, &|x| f(x, &w), 1e-2, 2e-3, &mut rng);
        check(&format!("{tag} d_lm_head"), &w, &dw, &|x| f(&hid, x), 1e-2, 2e-3, &mut rng);
    }
}

#[test]
fn grpo_loss_gradients_match_finite_differences() {
    let mut rng = Rng(7);
    for (i, agg) in [LossAgg::TokenMean, LossAgg::SeqMeanTokenMean, LossAgg::SeqMeanTokenSum, LossAgg::SeqMeanTokenSumNorm { constant: 9.0 }]
        .into_iter()
        .enumerate()
    {
        let lens: Vec<usize> = (0..rng.int(1, 5)).map(|_| rng.int(1, 10)).collect();
        let n: usize = lens.iter().sum();
        let logp: Vec<f32> = rng.vec(n, 1.0).iter().map(|v| v * 2.0 - 2.5).collect();
        let entropy = rng.vec(n, 2.0).iter().map(|v| v.abs()).collect::<Vec<_>>();
        let old: Vec<f32> = logp.iter().map(|l| l + rng.next() * 0.4).collect();
        let reference: Vec<f32> = logp.iter().map(|l| l + rng.next() * 1.5).collect();
        let adv = rng.vec(n, 1.5);
        // The dual clip (cap −A·1.3 for A < 0: ratios up to e^0.4 cross it) on every other case.
        let dual_clip = (i % 2 == 1).then_some(1.3);
        let cfg = GrpoConfig { clip_high: 0.28, dual_clip, entropy_coef: 0.3, kl_coef: Some(0.5), agg, ..Default::default() };
        let loss = |lp: &[f32], en: &[f32]| {
            grpo_loss(&cfg, &GrpoTokens { seq_lens: &lens, logp: lp, entropy: en, old_logp: &old, ref_logp: Some(&reference), advantages: &adv }).loss
        };
        let out = grpo_loss(&cfg, &GrpoTokens { seq_lens: &lens, logp: &logp, entropy: &entropy, old_logp: &old, ref_logp: Some(&reference), advantages: &adv });
        // Small steps: the clip is a kink, so stay on one side of it.
        check(&format!("grpo #{i} d_logp"), &logp, &out.d_logp, &|x| loss(x, &entropy), 1e-4, 5e-3, &mut rng);
        check(&format!("grpo #{i} d_entropy"), &entropy, &out.d_entropy, &|x| loss(&logp, x), 1e-3, 1e-3, &mut rng);
    }
}

#[test]
fn whole_model_gradient_matches_finite_differences() {
    use scalerl::model::Model;
    use scalerl::ops::cpu::CpuOps;
    use scalerl::params::HostParams;
    use scalerl::train::{global_norm, sft_backward, PassOptions, Sample};
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut rng = Rng(8);
    for name in ["tiny-qwen2", "tiny-llama"] {
        let model = Model::load(&dir.join(name)).unwrap();
        let c = &model.config;
        let seqs: Vec<Vec<u32>> = [9, 14, 5].iter().map(|&l| (0..l).map(|_| rng.int(0, c.vocab_size) as u32).collect()).collect();
        let samples: Vec<Sample> = seqs.iter().map(|s| Sample { tokens: s, prompt_len: 3 }).collect();
        let o = PassOptions { temperature: 1.0, vocab_chunk: 128, checkpoint: true };
        let loss_at = |m: &Model| {
            let mut g = HostParams::zeros(m.table());
            sft_backward(m, &samples, LossAgg::TokenMean, &o, &mut g).unwrap()
        };
        let mut g = HostParams::zeros(model.table());
        sft_backward(&model, &samples, LossAgg::TokenMean, &o, &mut g).unwrap();
        let gnorm = global_norm(&CpuOps, &g).unwrap();
        for _ in 0..2 {
            // One random direction over every parameter (the flat buffer, table order).
            let u = rng.vec(g.flat().len(), 1.0);
            let an = probe(g.flat(), &u);
            let eps = 1e-3f32;
            let shifted = |s: f32| {
                let mut m = model.clone();
                m.weights.flat_mut().iter_mut().zip(&u).for_each(|(p, u)| *p += s * u);
                loss_at(&m)
            };
            let num = (shifted(eps) - shifted(-eps)) / (2.0 * eps as f64);
            assert!((num - an).abs() <= 5e-3 * gnorm, "{name}: whole-model directional derivative {num} vs analytic {an} (‖g‖ {gnorm})");
        }
    }
}
