//! Parity cases of the fused lm_head log-prob (kernels/logprob.cu) and the GRPO per-token loss
//! (kernels/grpo_loss.cu), written once for any `Device`: against the CPU references
//! (src/ops/cpu/logprob.rs, src/ops/cpu/grpo.rs) with random bf16 inputs, outputs and scratch
//! poisoned with NaN before each launch, shapes with ragged edges (rows not a multiple of 16 or of
//! the 128-row tile, hidden not a multiple of the 32-wide k tile, vocabularies that end a few
//! columns into a chunk), targets on chunk and tile edges. Each case returns the bits of its
//! outputs so the caller can check determinism (tests/logprob_interpret.rs: across schedules and
//! runs; tests/gpu.rs: two runs on the GPU, where the 1.5B model's shape joins).
//! The including test crate declares `kernel_cases` (tests/common/kernel_cases.rs) at its root.
//!
//! Tolerances (what they are made of):
//! - forward (logp, entropy, lse, mean logit): the kernel multiplies the same bf16 values as the
//!   reference and keeps every logit and statistic in f32, so only f32 rounding differs (the
//!   order of the hidden-size dot products, exp2/log2 in base 2): |Δ| ≤ 3e-5 · (1 + |ref|)
//!   (measured in interpret mode: ≤ 5e-6).
//! - backward: ∂L/∂logits is rounded to bf16 (relative 2^-9 per element) for the two gradient
//!   products, as a bf16 training backward does, and d_hidden is returned in bf16 (another 2^-9):
//!   ‖Δ‖/‖ref‖ ≤ 4e-3 for d_lm_head (f32) and dx (f32) (measured: 0.9–1.6e-3), ≤ 6e-3 for the
//!   bf16 d_hidden, and every element within 2% of the largest.
//! - GRPO loss: the same f32/f64 expressions as the reference; per-token gradients within
//!   1e-6 relative (expf may differ by an ulp on a GPU), sums within 1e-9 relative (f64 in another
//!   order).
#![allow(dead_code)]
use super::kernel_cases::{random_bf16, to_f32};
use half::bf16;
use scalerl::device::{Buffer, DType, Device};
use scalerl::ops::cpu::grpo::grpo_loss;
use scalerl::ops::cpu::logprob::{logprobs_backward, logprobs_forward};
use scalerl::ops::cuda::grpo_loss::{grpo_blocks, grpo_finish, grpo_token_loss, GrpoBuffers, GRPO_SUMS};
use scalerl::ops::cuda::logprob::{logprob_backward, logprob_forward, LogProbOut, LogProbPlan};
use scalerl::ops::grpo::{GrpoConfig, GrpoOutput, GrpoTokens, LossAgg};
use scalerl::ops::{LogProbShape, TokenLogProbs};

/// (rows, hidden, vocab, chunk asked for, temperature)
pub type Case = (usize, usize, usize, usize, f32);
pub const CASES: [Case; 4] = [
    // chunks of 256, 256 and 3 columns; 37 rows; hidden = 2 k tiles
    (37, 64, 515, 256, 1.0),
    // two row tiles (the second with 2 rows), hidden = 2 k tiles + 8, chunks 384, 384, 233
    (130, 72, 1001, 384, 0.6),
    // one chunk (8192 clamps to the vocabulary), hidden 160 = 5 k tiles, 19 rows
    (19, 160, 300, 8192, 0.6),
    // chunk 100 rounds up to one 128-column tile: 7 chunks, the last 9 columns wide
    (64, 136, 777, 100, 1.0),
];
/// On a GPU only: the 1.5B model's lm_head (hidden 1536, vocab 151936, chunks of 8192) on 256
/// rows (the CPU reference spends ~0.5 TFLOP on its forward and backward).
pub const GPU_CASES: [Case; 1] = [(256, 1536, 151936, 8192, 0.6)];

pub fn shape(c: &Case) -> LogProbShape {
    LogProbShape { hidden: c.1, vocab: c.2, temperature: c.4, chunk: c.3 }
}

/// Random hidden states and lm_head (logits of a few units: peaked and flat rows both occur),
/// random targets with the kernel plan's chunk and tile edges among them.
pub fn inputs(c: &Case, seed: u64) -> (Vec<bf16>, Vec<bf16>, Vec<u32>) {
    let (t, h, v) = (c.0, c.1, c.2);
    let x = random_bf16(t * h, seed, 1.0);
    // logit std ≈ √h · (1/√3) · (s/√3) = 3 at s = 9/√h
    let w = random_bf16(v * h, seed + 1, 9.0 / (h as f32).sqrt());
    let plan = LogProbPlan::new(t, shape(c)).unwrap();
    let mut edges = vec![0, v - 1, 127.min(v - 1), 128.min(v - 1), 129.min(v - 1)];
    for k in 1..plan.chunks {
        edges.extend([k * plan.chunk - 1, k * plan.chunk, k * plan.chunk + 1]);
    }
    let mut s = seed.wrapping_mul(6364136223846793005) | 1;
    let targets = (0..t)
        .map(|i| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            if i < edges.len() { edges[i].min(v - 1) as u32 } else { ((s >> 33) % v as u64) as u32 }
        })
        .collect();
    (x, w, targets)
}

pub fn nan_f32(dev: &Device, n: usize) -> Buffer {
    dev.upload(&vec![f32::NAN; n]).unwrap()
}

pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The forward through the launcher, every output and scratch buffer poisoned.
pub fn device_forward(dev: &Device, c: &Case, x: &Buffer, w: &Buffer, y: &Buffer) -> TokenLogProbs {
    let t = c.0;
    let plan = LogProbPlan::new(t, shape(c)).unwrap();
    let partials = nan_f32(dev, plan.partials_bytes() / 4);
    let target_u = nan_f32(dev, t);
    let o: Vec<Buffer> = (0..4).map(|_| nan_f32(dev, t)).collect();
    let out = LogProbOut { logp: &o[0], entropy: &o[1], lse: &o[2], mean_z: &o[3] };
    logprob_forward(dev, &plan, x, w, y, &partials, &target_u, &out).unwrap();
    let get = |b: &Buffer| dev.download::<f32>(b).unwrap();
    TokenLogProbs { logp: get(&o[0]), entropy: get(&o[1]), lse: get(&o[2]), mean_z: get(&o[3]) }
}

pub fn check_close(got: &[f32], want: &[f32], what: &str) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        assert!(d <= 3e-5 * (1.0 + w.abs()), "{what}[{i}]: kernel {g} vs reference {w}");
        worst = worst.max(d);
    }
    worst
}

/// ‖got − want‖ / ‖want‖ ≤ tol and every |got − want| ≤ 2% of max |want| (NaN fails).
pub fn check_grad(got: &[f32], want: &[f32], tol: f64, what: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, w| m.max(w.abs()));
    let (mut num, mut den) = (0f64, 0f64);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        assert!(d <= 0.02 * scale, "{what}[{i}]: kernel {g} vs reference {w} (max |ref| {scale})");
        num += (d as f64).powi(2);
        den += (*w as f64).powi(2);
    }
    let rel = (num / den).sqrt();
    assert!(rel <= tol, "{what}: relative L2 error {rel:.2e} > {tol:.0e}");
    rel
}

/// Upstream gradients of logp and entropy: random, of comparable size (a sign error in either
/// term shows).
pub fn upstream(t: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    (to_f32(&random_bf16(t, seed + 7, 1.0)), to_f32(&random_bf16(t, seed + 8, 1.0)))
}

/// One case, forward and backward on `dev`: checked against the CPU reference; returns every
/// output's bits (for the determinism checks) and prints the errors.
pub fn run_case(dev: &Device, ci: usize, c: &Case) -> Vec<u32> {
    let (t, h, v) = (c.0, c.1, c.2);
    let seed = 100 + ci as u64;
    let (x, w, targets) = inputs(c, seed);
    let (xf, wf) = (to_f32(&x), to_f32(&w));
    let sh = shape(c);
    let want = logprobs_forward(&xf, &wf, &targets, sh);
    let (bx, bw) = (dev.upload(&x).unwrap(), dev.upload(&w).unwrap());
    let by = dev.upload(&targets.iter().map(|&y| y as i32).collect::<Vec<i32>>()).unwrap();
    let got = device_forward(dev, c, &bx, &bw, &by);
    let what = format!("case {ci} {c:?} on {}", dev.name());
    let e_lp = check_close(&got.logp, &want.logp, &format!("{what}: logp"));
    let e_en = check_close(&got.entropy, &want.entropy, &format!("{what}: entropy"));
    let e_lse = check_close(&got.lse, &want.lse, &format!("{what}: lse"));
    let e_mu = check_close(&got.mean_z, &want.mean_z, &format!("{what}: mean_z"));

    // Backward: d_lm_head accumulates onto a random start; dx and the dz scratch are poisoned.
    let (gl, ge) = upstream(t, seed);
    let dw0 = to_f32(&random_bf16(v * h, seed + 9, 0.01));
    let (mut want_dx, mut want_dw) = (vec![0f32; t * h], dw0.clone());
    logprobs_backward(&xf, &wf, &targets, &want, &gl, Some(&ge), sh, &mut want_dx, &mut want_dw);
    let plan = LogProbPlan::new(t, sh).unwrap();
    let (lse, mu) = (dev.upload(&got.lse).unwrap(), dev.upload(&got.mean_z).unwrap());
    let (bgl, bge) = (dev.upload(&gl).unwrap(), dev.upload(&ge).unwrap());
    let dz = dev.upload(&vec![bf16::from_bits(0x7fc1); plan.dz_bytes() / 2]).unwrap();
    let (dx, dw) = (nan_f32(dev, t * h), dev.upload(&dw0).unwrap());
    logprob_backward(dev, &plan, &bx, &bw, &by, &lse, &mu, &bgl, Some(&bge), &dz, &dx, &dw).unwrap();
    let (got_dx, got_dw) = (dev.download::<f32>(&dx).unwrap(), dev.download::<f32>(&dw).unwrap());
    let e_dx = check_grad(&got_dx, &want_dx, 4e-3, &format!("{what}: dx"));
    // the lm_head gradient alone (without the random start it was added to)
    let delta = |a: &[f32]| a.iter().zip(&dw0).map(|(x, y)| x - y).collect::<Vec<f32>>();
    let e_dw = check_grad(&delta(&got_dw), &delta(&want_dw), 4e-3, &format!("{what}: d_lm_head"));
    println!(
        "{what}: {} chunks of {}; max abs err logp {e_lp:.1e} entropy {e_en:.1e} lse {e_lse:.1e} mean_z {e_mu:.1e}; \
         rel L2 err dx {e_dx:.1e} d_lm_head {e_dw:.1e}",
        plan.chunks, plan.chunk
    );
    [got.logp, got.entropy, got.lse, got.mean_z, got_dx, got_dw].iter().flat_map(|v| bits(v)).collect()
}


/// Every case (the GPU adds the 1.5B shape), forward and backward; the bits of each case's
/// outputs, and a second run of case 1 must give the same bits.
pub fn logprob_cases(dev: &Device) -> Vec<Vec<u32>> {
    let mut cases = CASES.to_vec();
    if dev.is_gpu() {
        cases.extend(GPU_CASES);
    }
    let out: Vec<Vec<u32>> = cases.iter().enumerate().map(|(ci, c)| run_case(dev, ci, c)).collect();
    assert!(run_case(dev, 1, &cases[1]) == out[1], "case 1: a second run on {} gives other bits", dev.name());
    batch_invariance_case(dev);
    out
}

/// A row's forward results do not depend on the other rows of the call: rows 100..116 of case 1
/// alone (warp 0 of a partial tile) give the same bits as in the 130-row call (warp 3 of the first
/// tile), so the old-policy and the current log-probs of a token agree exactly whatever the
/// batches were.
pub fn batch_invariance_case(dev: &Device) {
    let c = CASES[1];
    let (x, w, targets) = inputs(&c, 101);
    let (h, r0, r1) = (c.1, 100, 116);
    let up_rows = |x: &[bf16], y: &[u32]| (dev.upload(x).unwrap(), dev.upload(&y.iter().map(|&t| t as i32).collect::<Vec<i32>>()).unwrap());
    let bw = dev.upload(&w).unwrap();
    let (bx, by) = up_rows(&x, &targets);
    let all = device_forward(dev, &c, &bx, &bw, &by);
    let sub_case = (r1 - r0, c.1, c.2, c.3, c.4);
    let (sx, sy) = up_rows(&x[r0 * h..r1 * h], &targets[r0..r1]);
    let sub = device_forward(dev, &sub_case, &sx, &bw, &sy);
    for (name, a, b) in [("logp", &all.logp, &sub.logp), ("entropy", &all.entropy, &sub.entropy), ("lse", &all.lse, &sub.lse)] {
        assert!(bits(&a[r0..r1]) == bits(b), "{name} of rows {r0}..{r1} alone differs from the 130-row call on {}", dev.name());
    }
}

// ---- GRPO per-token loss -----------------------------------------------------------------------

pub struct GrpoBatch {
    pub lens: Vec<usize>,
    pub logp: Vec<f32>,
    pub entropy: Vec<f32>,
    pub old: Vec<f32>,
    pub reference: Vec<f32>,
    pub adv: Vec<f32>,
}

/// ~2,500 tokens (3 blocks of the kernel) in sequences of 0–200 tokens; ratios well outside the
/// clip range both ways, advantages of both signs (and zero), KL terms past the ±10 clamp.
pub fn grpo_batch(seed: u64) -> GrpoBatch {
    let mut r = scalerl::util::rng::XorShift::new(seed);
    let mut next = move || r.unit_f64();
    let mut lens: Vec<usize> = (0..24).map(|_| (next() * 200.0) as usize).collect();
    lens[3] = 0;
    lens[10] = 0;
    let n: usize = lens.iter().sum();
    let mut adv = Vec::with_capacity(n);
    for (i, &l) in lens.iter().enumerate() {
        let a = if i % 7 == 0 { 0.0 } else { (next() * 4.0 - 2.0) as f32 };
        adv.extend(std::iter::repeat_n(a, l));
    }
    let logp: Vec<f32> = (0..n).map(|_| (-next() * 6.0) as f32).collect();
    let old: Vec<f32> = logp.iter().map(|&l| l + ((next() - 0.5) * 3.0) as f32).collect();
    let reference: Vec<f32> = logp.iter().map(|&l| l + ((next() - 0.5) * 8.0) as f32).collect();
    let entropy: Vec<f32> = (0..n).map(|_| (next() * 3.0) as f32).collect();
    GrpoBatch { lens, logp, entropy, old, reference, adv }
}

pub fn grpo_configs() -> Vec<GrpoConfig> {
    let mut v = Vec::new();
    for agg in [LossAgg::TokenMean, LossAgg::SeqMeanTokenMean, LossAgg::SeqMeanTokenSum, LossAgg::SeqMeanTokenSumNorm { constant: 160.0 }] {
        for (clip_low, clip_high) in [(0.2, 0.2), (0.2, 0.28)] {
            for dual_clip in [None, Some(3.0)] {
                for (kl_coef, entropy_coef) in [(Some(0.001), 0.001), (None, 0.0), (Some(0.5), 0.3)] {
                    v.push(GrpoConfig { clip_low, clip_high, dual_clip, entropy_coef, kl_coef, agg });
                }
            }
        }
    }
    v
}

pub fn grpo_device(dev: &Device, cfg: &GrpoConfig, b: &GrpoBatch) -> GrpoOutput {
    let n = b.logp.len();
    let mut offsets = vec![0i32];
    for &l in &b.lens {
        offsets.push(offsets.last().unwrap() + l as i32);
    }
    let up = |v: &[f32]| dev.upload(v).unwrap();
    let (lp, en, old, rf, adv) = (up(&b.logp), up(&b.entropy), up(&b.old), up(&b.reference), up(&b.adv));
    let offs = dev.upload(&offsets).unwrap();
    let (dl, de) = (nan_f32(dev, n), nan_f32(dev, n));
    let partials = dev.upload(&vec![f64::NAN; grpo_blocks(n) * GRPO_SUMS]).unwrap();
    let bufs = GrpoBuffers {
        logp: &lp,
        entropy: &en,
        old_logp: &old,
        ref_logp: Some(&rf),
        advantages: &adv,
        seq_offsets: &offs,
        d_logp: &dl,
        d_entropy: &de,
        partials: &partials,
    };
    grpo_token_loss(dev, cfg, b.lens.len(), n, &bufs).unwrap();
    let mut out = grpo_finish(cfg, &dev.download::<f64>(&partials).unwrap(), n);
    out.d_logp = dev.download(&dl).unwrap();
    out.d_entropy = dev.download(&de).unwrap();
    out
}

/// Checks every part and gradient; returns (max relative error of the sums, number of
/// per-token gradients that differ from the reference in any bit).
pub fn grpo_check(got: &GrpoOutput, want: &GrpoOutput, what: &str) -> (f64, usize) {
    let mut worst = 0f64;
    for (name, g, w) in [
        ("loss", got.loss, want.loss),
        ("pg_loss", got.pg_loss, want.pg_loss),
        ("entropy_loss", got.entropy_loss, want.entropy_loss),
        ("kl_loss", got.kl_loss, want.kl_loss),
        ("clip_frac", got.clip_frac, want.clip_frac),
        ("clip_frac_lower", got.clip_frac_lower, want.clip_frac_lower),
        ("approx_kl", got.approx_kl, want.approx_kl),
        ("entropy_mean", got.entropy_mean, want.entropy_mean),
    ] {
        assert!((g - w).abs() <= 1e-9 * (1e-3 + w.abs()), "{what}: {name} {g} vs reference {w}");
        worst = worst.max((g - w).abs() / (1e-3 + w.abs()));
    }
    let mut differ = 0;
    for (name, g, w) in [("d_logp", &got.d_logp, &want.d_logp), ("d_entropy", &got.d_entropy, &want.d_entropy)] {
        assert_eq!(g.len(), w.len(), "{what}: {name} length");
        for (i, (a, b)) in g.iter().zip(w.iter()).enumerate() {
            assert!((a - b).abs() <= 1e-6 * b.abs() + 1e-12, "{what}: {name}[{i}] {a} vs reference {b}");
            differ += (a.to_bits() != b.to_bits()) as usize;
        }
    }
    (worst, differ)
}


/// Every variant of the objective (4 aggregations × symmetric / clip-higher × dual clip off / on ×
/// KL and entropy off, DeepScaleR's, strong) against the CPU reference; the bits of each
/// variant's outputs. The inputs reach every branch: the ratio clip, the dual clip, the KL clamp.
pub fn grpo_cases(dev: &Device) -> Vec<Vec<u32>> {
    let b = grpo_batch(3);
    let (n, kl_clamped) = (b.logp.len(), b.reference.iter().zip(&b.logp).filter(|(r, l)| (*r - *l).exp() - (*r - *l) - 1.0 > 10.0).count());
    assert!(n > 2 * 1024 && kl_clamped > 0, "{n} tokens, {kl_clamped} past the KL clamp");
    let mut seen = (0usize, 0usize, 0usize);
    let (mut worst, mut differ) = (0f64, 0usize);
    let mut all = Vec::new();
    let cfgs = grpo_configs();
    for (i, cfg) in cfgs.iter().enumerate() {
        let x = GrpoTokens { seq_lens: &b.lens, logp: &b.logp, entropy: &b.entropy, old_logp: &b.old, ref_logp: Some(&b.reference), advantages: &b.adv };
        let want = grpo_loss(cfg, &x);
        let got = grpo_device(dev, cfg, &b);
        let (w, d) = grpo_check(&got, &want, &format!("variant {i} {cfg:?} on {}", dev.name()));
        (worst, differ) = (worst.max(w), differ + d);
        seen.0 += (want.clip_frac > 0.0) as usize;
        seen.1 += (want.clip_frac_lower > 0.0) as usize;
        seen.2 += (want.kl_loss != 0.0) as usize;
        let mut v: Vec<u32> = got.d_logp.iter().chain(&got.d_entropy).map(|x| x.to_bits()).collect();
        v.extend([got.loss, got.pg_loss, got.kl_loss].iter().flat_map(|x| [x.to_bits() as u32, (x.to_bits() >> 32) as u32]));
        all.push(v);
    }
    assert!(seen.0 > 0 && seen.1 > 0 && seen.2 > 0, "{seen:?}");
    println!(
        "GRPO loss: {} variants over {n} tokens in {} sequences match the CPU reference on {}: sums within {worst:.1e} \
         (relative), {differ} of {} per-token gradients not bit-identical",
        cfgs.len(),
        b.lens.len(),
        dev.name(),
        2 * n * cfgs.len()
    );
    all
}

// ---- refusals --------------------------------------------------------------------------------

pub fn expect_err<T>(r: anyhow::Result<T>, needle: &str) {
    match r {
        Ok(_) => panic!("expected an error naming {needle}"),
        Err(e) => {
            let e = format!("{e:#}");
            assert!(e.contains(needle), "expected an error naming {needle}: {e}");
        }
    }
}

/// The plan and the launchers name what is wrong instead of launching.
pub fn logprob_launch_error_cases(dev: &Device) {
    let sh = LogProbShape { hidden: 64, vocab: 300, temperature: 1.0, chunk: 128 };
    expect_err(LogProbPlan::new(4, LogProbShape { hidden: 100, ..sh }), "multiple of 8");
    expect_err(LogProbPlan::new(4, LogProbShape { temperature: 0.0, ..sh }), "temperature");
    expect_err(LogProbPlan::new(4, LogProbShape { vocab: 0, ..sh }), "vocabulary");
    let p = LogProbPlan::new(4, sh).unwrap();
    assert_eq!((p.chunk, p.chunks), (128, 3));
    assert_eq!(LogProbPlan::new(4, LogProbShape { chunk: 1 << 20, ..sh }).unwrap().chunks, 1);
    let f = |n: usize| dev.alloc(n).unwrap();
    let (x, w, y, part, tu) = (f(4 * 64 * 2), f(300 * 64 * 2), f(16), f(p.partials_bytes()), f(16));
    let o: Vec<Buffer> = (0..4).map(|_| f(16)).collect();
    let out = LogProbOut { logp: &o[0], entropy: &o[1], lse: &o[2], mean_z: &o[3] };
    let short = f(8);
    expect_err(logprob_forward(dev, &p, &short, &w, &y, &part, &tu, &out), "`x`");
    expect_err(logprob_forward(dev, &p, &x, &short, &y, &part, &tu, &out), "`lm_head`");
    expect_err(logprob_forward(dev, &p, &x, &w, &f(12), &part, &tu, &out), "`targets`");
    expect_err(logprob_forward(dev, &p, &x, &w, &y, &short, &tu, &out), "`partials`");
    let short_out = LogProbOut { entropy: &short, ..out };
    expect_err(logprob_forward(dev, &p, &x, &w, &y, &part, &tu, &short_out), "`entropy`");
    let (dz, dx, dw) = (f(p.dz_bytes()), f(4 * 64 * 4), f(300 * 64 * 4));
    let b = |dz: &Buffer, dx: &Buffer, dw: &Buffer| logprob_backward(dev, &p, &x, &w, &y, &o[0], &o[1], &o[2], None, dz, dx, dw);
    expect_err(b(&short, &dx, &dw), "`dz`");
    expect_err(b(&dz, &short, &dw), "`dx`");
    expect_err(b(&dz, &dx, &f(300 * 64 * 2)), "`d_lm_head` holds");
    // Typed buffers: a bf16 lm_head gradient or an f32 x is refused by name, whatever its size.
    expect_err(b(&dz, &dx, &f(300 * 64 * 4).typed(DType::Bf16)), "`d_lm_head` holds bf16 elements");
    let x32 = f(4 * 64 * 4).typed(DType::F32);
    expect_err(logprob_forward(dev, &p, &x32, &w, &y, &part, &tu, &out), "`x` holds f32 elements");

    // GRPO: the KL term needs the reference log-probs; short buffers are named.
    let g = |n: usize| dev.alloc(n * 4).unwrap();
    let (a, offs, partials) = (g(10), dev.upload(&[0i32, 10]).unwrap(), dev.alloc(GRPO_SUMS * 8).unwrap());
    let mut bufs = GrpoBuffers { logp: &a, entropy: &a, old_logp: &a, ref_logp: None, advantages: &a, seq_offsets: &offs, d_logp: &a, d_entropy: &a, partials: &partials };
    expect_err(grpo_token_loss(dev, &GrpoConfig::default(), 1, 10, &bufs), "ref_logp");
    let short4 = g(9);
    bufs.ref_logp = Some(&a);
    bufs.advantages = &short4;
    expect_err(grpo_token_loss(dev, &GrpoConfig::default(), 1, 10, &bufs), "`advantages`");
    bufs.advantages = &a;
    expect_err(grpo_token_loss(dev, &GrpoConfig::default(), 2, 10, &bufs), "`seq_offsets`");
}

