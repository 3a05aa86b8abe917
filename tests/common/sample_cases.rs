//! Device sampler cases written once for any `Device` (kernels/sample.cu against the CPU
//! reference src/ops/cpu/sample.rs): the same token and the same log-prob bits on the same logits
//! and counter, errors in the reference's words, and a chi-square test of sampled frequencies
//! against the exact truncated softmax. tests/sample_interpret.rs runs them in interpret mode.
#![allow(dead_code)]
use half::bf16;
use scalerl::device::{Buffer, DType, Device};
use scalerl::engine::sampler::SamplingParams;
use scalerl::ops::cpu::sample::sample_row;
use scalerl::ops::cuda::sample::{draw_params, sample, sample_launch, PARAM_WORDS};
use scalerl::ops::Draw;
use scalerl::util::Rng;

/// Written into the outputs before a launch: a token no row can draw and a NaN log-prob, so a
/// row the kernel leaves unwritten fails the comparison.
const POISON_TOKEN: i32 = i32::MIN + 7;
const POISON_LOGPROB: u32 = 0x7fc0_0bad;

/// Logits like an LM's: a few large, most far below, at `scale`.
pub fn random_logits(v: usize, seed: u64, scale: f64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..v).map(|_| (rng.normal() * scale) as f32).collect()
}

/// The engine's draw of `position` under `p`: the counter-based uniform of (seed, position).
fn engine_draw(p: SamplingParams, position: usize) -> Draw {
    p.draw(position)
}

fn params(temperature: f32, top_k: usize, top_p: f32, min_p: f32, seed: u64) -> SamplingParams {
    SamplingParams { temperature, top_k, top_p, min_p, seed, ..Default::default() }
}

/// Launches on `rows` rows (row i's logits and draw), outputs poisoned, and compares every row
/// with the CPU reference: the token exactly and the log-prob's bits (NaN never matches).
pub fn check_rows(dev: &Device, vocab: usize, logits: &[f32], draws: &[Draw], what: &str) {
    let bl = dev.upload(logits).unwrap().typed(DType::F32);
    check_launch(dev, vocab, logits, &bl, draws, what);
}

/// `check_rows` on bf16 logits (`sample_bf16`): the CPU reference gets the same values widened.
pub fn check_rows_bf16(dev: &Device, vocab: usize, logits: &[f32], draws: &[Draw], what: &str) {
    let b16: Vec<bf16> = logits.iter().map(|&x| bf16::from_f32(x)).collect();
    let widened: Vec<f32> = b16.iter().map(|x| x.to_f32()).collect();
    let bl = dev.upload(&b16).unwrap().typed(DType::Bf16);
    check_launch(dev, vocab, &widened, &bl, draws, &format!("{what} (bf16)"));
}

fn check_launch(dev: &Device, vocab: usize, logits: &[f32], bl: &Buffer, draws: &[Draw], what: &str) {
    let rows = draws.len();
    assert_eq!(logits.len(), rows * vocab);
    let words: Vec<u32> = draws.iter().flat_map(|d| draw_params(d, vocab).unwrap()).collect();
    assert_eq!(words.len(), rows * PARAM_WORDS);
    let bp = dev.upload(&words).unwrap();
    let bt = dev.upload(&vec![POISON_TOKEN; rows]).unwrap();
    let bo = dev.upload(&vec![f32::from_bits(POISON_LOGPROB); rows]).unwrap().typed(DType::F32);
    sample_launch(dev, bl, &bp, &bt, &bo, rows, vocab).unwrap();
    let tokens: Vec<i32> = dev.download(&bt).unwrap();
    let logprobs: Vec<f32> = dev.download(&bo).unwrap();
    // A GPU's f64 log may differ from the host's in its last bit, which can move the f32
    // log-prob by one ulp; interpret mode runs the host's log, so there every bit must match.
    let ulps = if dev.is_gpu() { 1 } else { 0 };
    for (i, d) in draws.iter().enumerate() {
        let want = sample_row(&logits[i * vocab..(i + 1) * vocab], d).unwrap();
        let close = logprobs[i].is_finite() && (logprobs[i].to_bits() as i64 - want.logprob.to_bits() as i64).abs() <= ulps;
        assert!(
            tokens[i] == want.token as i32 && close,
            "{what}: row {i} ({d:?}): device token {} log-prob {} ({:#x}), CPU token {} log-prob {} ({:#x})",
            tokens[i],
            logprobs[i],
            logprobs[i].to_bits(),
            want.token,
            want.logprob,
            want.logprob.to_bits()
        );
    }
}

/// Every sampling mode on random rows, each row with its own draw from the engine's generator.
pub fn parity_cases(dev: &Device) {
    let modes = [
        params(0.0, 0, 1.0, 0.0, 1),    // greedy
        params(0.7, 1, 1.0, 0.0, 2),    // top_k = 1 is greedy too
        params(1.0, 0, 1.0, 0.0, 3),    // plain
        params(0.6, 0, 1.0, 0.0, 4),    // the training temperature
        params(1.3, 50, 1.0, 0.0, 5),   // top-k
        params(1.0, 0, 0.9, 0.0, 6),    // top-p
        params(1.0, 0, 0.01, 0.0, 7),   // top-p that keeps the top token only
        params(0.8, 0, 1.0, 0.05, 8),   // min-p
        params(0.9, 40, 0.8, 0.02, 9),  // all three
        params(1.0, 5000, 0.95, 0.0, 10), // top_k ≥ V: off
        params(2.5, 7, 0.5, 0.5, 11),
    ];
    for (vocab, scale) in [(37usize, 2.0), (1000, 3.0), (3001, 1.0), (3001, 12.0)] {
        let mut logits = Vec::new();
        let mut draws = Vec::new();
        for (j, p) in modes.iter().enumerate() {
            for pos in [0usize, 17, 4096] {
                let mut row = random_logits(vocab, (vocab * 100 + j * 10 + pos) as u64, scale);
                if j % 3 == 0 {
                    // Masked tokens (−∞), as a grammar or a banned-token list would leave them.
                    for c in (0..vocab).step_by(5) {
                        row[c] = f32::NEG_INFINITY;
                    }
                }
                logits.extend(row);
                draws.push(engine_draw(p.clone(), pos));
            }
        }
        check_rows(dev, vocab, &logits, &draws, &format!("V {vocab}, scale {scale}"));
        // bf16 rows (what CudaOps samples from): coarser values, so more ties at every cut.
        check_rows_bf16(dev, vocab, &logits, &draws, &format!("V {vocab}, scale {scale}"));
    }
}

/// Ties, coarse logits and the uniform's extremes: where a cut falls inside a run of equal
/// values, and where the draw point sits at either end of the kept mass.
pub fn tie_cases(dev: &Device) {
    let vocab = 200;
    let mut logits = Vec::new();
    let mut draws = Vec::new();
    let mut rng = Rng::new(5);
    for (j, (t, k, p, mp)) in [(1.0, 0, 1.0, 0.0), (1.0, 3, 1.0, 0.0), (0.5, 0, 0.6, 0.0), (1.0, 10, 0.9, 0.3), (0.0, 0, 1.0, 0.0)]
        .into_iter()
        .enumerate()
    {
        for u in [0.0, 0.5, 1.0 - 1.0 / (1u64 << 53) as f64, rng.next_f64()] {
            // Logits on a grid of 0.5: many tokens share each value, the maximum included.
            let row: Vec<f32> = (0..vocab).map(|i| (((i * 7 + j * 13) % 9) as f32) * 0.5 - 2.0).collect();
            logits.extend(row);
            draws.push(Draw { temperature: t, top_k: k, top_p: p, min_p: mp, uniform: if t == 0.0 { 0.0 } else { u } });
        }
    }
    // Every logit equal: the draw is ⌊u · V⌋ in vocabulary order.
    for u in [0.0, 0.3, 0.999] {
        logits.extend(vec![0.25f32; vocab]);
        draws.push(Draw { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, uniform: u });
    }
    check_rows(dev, vocab, &logits, &draws, "ties");
    check_rows_bf16(dev, vocab, &logits, &draws, "ties");
}

/// Rows that cannot be sampled fail with the reference's message and name the row and column.
pub fn error_cases(dev: &Device) {
    let plain = Draw { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, uniform: 0.5 };
    let greedy = Draw { temperature: 0.0, ..plain };
    let cases: [(Vec<f32>, Draw, &str); 5] = [
        (vec![0.0, 1.0, f32::NAN, 2.0, f32::NAN], plain, "logit 2 is NaN"),
        (vec![0.0, f32::INFINITY, 1.0, 0.0, 0.0], greedy, "logit 1 is inf"),
        // Finite, but +∞ once divided by the temperature.
        (vec![3e38, 0.0, 1.0, 0.0, 0.0], Draw { temperature: 0.1, ..plain }, "logit 0 is inf"),
        (vec![f32::NEG_INFINITY; 5], plain, "every logit of the row is -inf"),
        (vec![f32::NEG_INFINITY; 5], greedy, "every logit of the row is -inf"),
    ];
    for (row, d, want) in cases {
        let cpu = sample_row(&row, &d).unwrap_err().to_string();
        // Row 1 of a batch of three: the good rows around it must not hide it.
        let mut logits = vec![0.5f32; 5];
        logits.extend(&row);
        logits.extend(vec![0.5f32; 5]);
        let b32 = dev.upload(&logits).unwrap().typed(DType::F32);
        let b16 = dev.upload(&logits.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>()).unwrap().typed(DType::Bf16);
        for (b, exact) in [(b32, true), (b16, logits[5] != 3e38)] {
            let err = format!("{:#}", sample(dev, &b, 5, &[plain, d, plain], &[10, 11, 12]).unwrap_err());
            assert!(err.contains("row 11") && err.contains(want), "{err}");
            // (3e38 is not a bf16 value: in bf16 the message names the rounded logit.)
            if exact {
                assert!(err.ends_with(&cpu), "device: {err}; CPU: {cpu}");
            }
        }
    }
    // An untagged buffer is refused: the kernel is picked by the element type.
    let raw = dev.upload(&[0.0f32; 5]).unwrap();
    let err = format!("{:#}", sample(dev, &raw, 5, &[plain], &[0]).unwrap_err());
    assert!(err.contains("element type"), "{err}");
    // Parameters out of range are refused on the host, naming the parameter.
    let b = dev.upload(&[0.0f32; 5]).unwrap().typed(DType::F32);
    let err = format!("{:#}", sample(dev, &b, 5, &[Draw { min_p: 2.0, ..plain }], &[3]).unwrap_err());
    assert!(err.contains("min_p") && err.contains("row 3"), "{err}");
}

/// The exact distribution after min-p, top-k and top-p (the reference's definition, in f64 with
/// the exact exp): the kept tokens' probabilities, 0 elsewhere.
pub fn truncated_softmax(logits: &[f32], t: f32, top_k: usize, top_p: f32, min_p: f32) -> Vec<f64> {
    let s: Vec<f64> = logits.iter().map(|&x| (x / t) as f64).collect();
    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = s.iter().map(|&v| (v - m).exp()).collect();
    // p_i ≥ min_p · p_max, with p_max = 1 / z.
    let mut kept: Vec<bool> = w.iter().map(|&wi| wi > 0.0 && wi >= min_p as f64).collect();
    if top_k > 0 && top_k < s.len() {
        let mut sorted = s.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let kth = sorted[top_k - 1];
        kept.iter_mut().zip(&s).for_each(|(k, &v)| *k &= v >= kth);
    }
    let mass: f64 = (0..s.len()).filter(|&i| kept[i]).map(|i| w[i]).sum();
    // top-p: keep whole groups of equal values, from the top, until top_p of the kept mass.
    let mut order: Vec<usize> = (0..s.len()).filter(|&i| kept[i]).collect();
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    let mut run = 0.0;
    let mut cut = f64::NEG_INFINITY;
    for (j, &i) in order.iter().enumerate() {
        run += w[i];
        let last = order.get(j + 1).is_none_or(|&n| s[n] != s[i]);
        if last && run >= top_p as f64 * mass {
            cut = s[i];
            break;
        }
    }
    let keep: Vec<bool> = (0..s.len()).map(|i| kept[i] && s[i] >= cut).collect();
    let total: f64 = (0..s.len()).filter(|&i| keep[i]).map(|i| w[i]).sum();
    (0..s.len()).map(|i| if keep[i] { w[i] / total } else { 0.0 }).collect()
}

/// Pearson's chi-square of `n` device draws (one row each, positions 0..n of one seed) against
/// the exact truncated softmax; fails when the statistic passes `critical` (the 0.999 quantile of
/// chi-square with `df` degrees of freedom, df = kept tokens − 1) or when a token outside the
/// kept set is drawn. Returns the statistic.
pub fn chi_square_case(dev: &Device, logits: &[f32], p: SamplingParams, n: usize, df: usize, critical: f64) -> f64 {
    let v = logits.len();
    let expect = truncated_softmax(logits, p.temperature, p.top_k, p.top_p, p.min_p);
    let kept = expect.iter().filter(|&&e| e > 0.0).count();
    assert_eq!(kept - 1, df, "the case's df: {expect:?}");
    let rows: Vec<f32> = (0..n).flat_map(|_| logits.iter().cloned()).collect();
    let draws: Vec<Draw> = (0..n).map(|pos| p.draw(pos)).collect();
    let b = dev.upload(&rows).unwrap().typed(DType::F32);
    let labels: Vec<usize> = (0..n).collect();
    let got = sample(dev, &b, v, &draws, &labels).unwrap();
    let mut counts = vec![0usize; v];
    for s in &got {
        counts[s.token as usize] += 1;
    }
    let mut chi2 = 0.0;
    for i in 0..v {
        if expect[i] == 0.0 {
            assert_eq!(counts[i], 0, "token {i} is outside the kept set but was drawn {} times of {n}", counts[i]);
            continue;
        }
        let e = expect[i] * n as f64;
        chi2 += (counts[i] as f64 - e).powi(2) / e;
    }
    assert!(chi2 < critical, "chi-square {chi2:.2} ≥ {critical} (df {df}, α = 0.001): counts {counts:?}, expected {:?}", expect.iter().map(|e| (e * n as f64).round()).collect::<Vec<_>>());
    chi2
}
