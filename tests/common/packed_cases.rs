//! Parity cases of the training attention over packed sequences (kernels/attention_packed.cu and
//! kernels/attention_packed_backward.cu), written once for any `Device`: out, lse, dq, dk and dv
//! against the CPU reference (`attention_forward` / `attention_backward` on the same bf16 values),
//! every output poisoned with NaN before its launch, and the bits of every result returned so the
//! caller can check that two runs and every thread schedule agree exactly (determinism).
//! tests/attention_packed_interpret.rs runs them in interpret mode on every schedule.
//! The including test crate declares `kernel_cases` (tests/common/kernel_cases.rs) at its root.
//!
//! Tolerances (|kernel − reference| ≤ atol + rtol·|reference|, per element):
//! - out: atol 1e-2, rtol 1e-2 — as the prefill kernel: the output's bf16 rounding (2^-9
//!   relative) and P rounded to bf16 for P·V (2^-9 relative per weight, averaging out).
//! - lse: 1e-4 + 1e-5·|lse| — f32 scores and sums on both sides (exp2/log2 in the kernel, exp/ln
//!   on the CPU), tens of f32 ulps at |lse| of a few units.
//! - dq, dk, dv: 5e-2·rms(reference) + 2e-2·|reference| — each is a sum over up to (group ×)
//!   len terms of products whose one factor (P or dS) the kernel rounds to bf16 (2^-9 relative)
//!   before the f32 accumulation, then one bf16 rounding of the result; dS = P·(dP − delta) also
//!   inherits delta's cancellation, so an element near zero in a large row carries an error of
//!   the row's scale (the absolute term). Measured: the worst element at ≤ 40% of its bound.
//! - and for every output tensor, relative L2 error ≤ 6e-3: measured ≈ 1.8e-3 (out) and ≈ 2.4e-3
//!   (dq, dk, dv), about the bf16 rounding of the result itself; a systematic error (a lost key
//!   tile, head or scale) shows here even where it hides in the per-element bound.
#![allow(dead_code)]
use super::kernel_cases::{random_bf16, to_f32, POISON};
use half::bf16;
use scalerl::device::{Buffer, Device};
use scalerl::ops::cpu::attention::{attention_backward, attention_forward, AttnShape, Packing};
use scalerl::ops::cuda::attention_packed::{attention_packed, attention_packed_backward, PackedPlan};

/// (sequence lengths, heads, kv heads, head_dim)
pub type PackedCase = (&'static [usize], usize, usize, usize);

/// Ragged lengths around the 16-row warp slabs, the 32/64-row key steps and the 64-row tiles,
/// several sequences per batch, GQA 1, 2 and 6 (the 1.5B model's 12/2), D 64 and 128.
pub const CASES: [PackedCase; 6] = [
    (&[1], 1, 1, 64),
    (&[15, 16, 17], 2, 1, 64),
    (&[63, 64, 65], 2, 2, 128),
    (&[200, 1, 37], 6, 1, 64),
    (&[130, 70], 12, 2, 128),
    (&[1, 2, 96, 129], 4, 2, 128),
];

/// Every output of one case, as bits, for the determinism checks.
#[derive(Clone, PartialEq, Eq)]
pub struct Bits {
    pub out: Vec<u16>,
    pub lse: Vec<u32>,
    pub dq: Vec<u16>,
    pub dk: Vec<u16>,
    pub dv: Vec<u16>,
}

/// Per output of one case: (max abs err, relative L2 err, largest |err| / tolerance).
#[derive(Clone, Copy, Default, Debug)]
pub struct Errors {
    pub out: (f32, f64, f32),
    pub lse: f32,
    pub dq: (f32, f64, f32),
    pub dk: (f32, f64, f32),
    pub dv: (f32, f64, f32),
}

fn bits16(v: &[bf16]) -> Vec<u16> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn rms(v: &[f32]) -> f32 {
    (v.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>() / v.len().max(1) as f64).sqrt() as f32
}

/// Checks `got` against `want` elementwise (atol + rtol·|want|), naming the first failure by
/// row, head and dim; returns (max abs err, relative L2 err, largest |err| / tolerance).
fn check(got: &[bf16], want: &[f32], atol: f32, rtol: f32, heads: usize, d: usize, what: &str) -> (f32, f64, f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut max, mut num, mut den, mut worst) = (0f32, 0f64, 0f64, 0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let g = g.to_f32();
        let e = (g - w).abs();
        assert!(
            e <= atol + rtol * w.abs(),
            "{what}[row {}, head {}, dim {}] = {g} vs reference {w} (|err| {e:.3e} > {:.3e})",
            i / (heads * d),
            i % (heads * d) / d,
            i % d,
            atol + rtol * w.abs()
        );
        max = max.max(e);
        worst = worst.max(e / (atol + rtol * w.abs()));
        num += (e as f64) * (e as f64);
        den += (*w as f64) * (*w as f64);
    }
    let rel = (num / den.max(1e-30)).sqrt();
    assert!(rel <= 6e-3 || num < 1e-24, "{what}: relative L2 error {rel:.3e} > 6e-3");
    (max, rel, worst)
}

fn nan_at<T: Copy>(v: &[T], is_nan: impl Fn(T) -> bool) -> Option<usize> {
    v.iter().position(|&x| is_nan(x))
}

/// One case: the forward against `attention_forward`, then the backward (on the reference's out
/// and lse, rounded as the kernels store them) against `attention_backward`.
pub fn run_case(dev: &Device, case: PackedCase, seed: u64) -> (Bits, Errors) {
    let (lens, nh, nkv, d) = case;
    let pack = Packing::from_lens(lens);
    let t = pack.total();
    let sh = AttnShape { num_heads: nh, num_kv_heads: nkv, head_dim: d };
    let schedule = match dev {
        Device::Interpret(i) => format!(", {:?} schedule", i.schedule()),
        _ => String::new(),
    };
    let what = format!("packed {lens:?} nh{nh} nkv{nkv} d{d} on {}{schedule}", dev.name());
    // q at scale 4: scores of a few units, so the running max moves between key tiles.
    let q = random_bf16(t * nh * d, seed, 4.0);
    let k = random_bf16(t * nkv * d, seed + 1, 1.0);
    let v = random_bf16(t * nkv * d, seed + 2, 1.0);
    let dout = random_bf16(t * nh * d, seed + 3, 1.0);
    let (qf, kf, vf, df) = (to_f32(&q), to_f32(&k), to_f32(&v), to_f32(&dout));
    let mut want_out = vec![0f32; t * nh * d];
    let mut want_lse = vec![0f32; t * nh];
    attention_forward(&qf, &kf, &vf, &pack, sh, &mut want_out, &mut want_lse);

    let plan = PackedPlan::new(dev, lens).unwrap();
    let (bq, bk, bv) = (dev.upload(&q).unwrap(), dev.upload(&k).unwrap(), dev.upload(&v).unwrap());
    let bo = dev.upload(&vec![POISON; t * nh * d]).unwrap();
    let bl = dev.upload(&vec![f32::NAN; t * nh]).unwrap();
    attention_packed(dev, &plan, &bq, &bk, &bv, &bo, &bl, nh, nkv, d).unwrap();
    let (out, lse) = (dev.download::<bf16>(&bo).unwrap(), dev.download::<f32>(&bl).unwrap());
    if let Some(i) = nan_at(&out, |x| x.is_nan()) {
        panic!("{what}: out[row {}, head {}] is NaN (unwritten or poisoned)", i / (nh * d), i % (nh * d) / d);
    }
    if let Some(i) = nan_at(&lse, |x| !x.is_finite()) {
        panic!("{what}: lse[row {}, head {}] = {}", i / nh, i % nh, lse[i]);
    }
    let mut err = Errors { out: check(&out, &want_out, 1e-2, 1e-2, nh, d, &format!("{what}: out")), ..Default::default() };
    for (i, (g, w)) in lse.iter().zip(&want_lse).enumerate() {
        let e = (g - w).abs();
        assert!(e <= 1e-4 + 1e-5 * w.abs(), "{what}: lse[row {}, head {}] = {g} vs reference {w}", i / nh, i % nh);
        err.lse = err.lse.max(e);
    }

    // The backward from the reference's out (as bf16, what the forward stores) and lse.
    let out16: Vec<bf16> = want_out.iter().map(|&x| bf16::from_f32(x)).collect();
    let (mut want_dq, mut want_dk, mut want_dv) = (vec![0f32; t * nh * d], vec![0f32; t * nkv * d], vec![0f32; t * nkv * d]);
    attention_backward(&qf, &kf, &vf, &to_f32(&out16), &want_lse, &df, &pack, sh, &mut want_dq, &mut want_dk, &mut want_dv);
    let (bo16, blse, bdo) = (dev.upload(&out16).unwrap(), dev.upload(&want_lse).unwrap(), dev.upload(&dout).unwrap());
    let backward = || -> (Vec<bf16>, Vec<bf16>, Vec<bf16>) {
        let delta = dev.upload(&vec![f32::NAN; t * nh]).unwrap();
        let poisoned = |n: usize| -> Buffer { dev.upload(&vec![POISON; n]).unwrap() };
        let (bdq, bdk, bdv) = (poisoned(t * nh * d), poisoned(t * nkv * d), poisoned(t * nkv * d));
        attention_packed_backward(dev, &plan, &bq, &bk, &bv, &bo16, &blse, &bdo, &delta, &bdq, &bdk, &bdv, nh, nkv, d).unwrap();
        let get = |b: &Buffer| dev.download::<bf16>(b).unwrap();
        (get(&bdq), get(&bdk), get(&bdv))
    };
    let (dq, dk, dv) = backward();
    for (name, g, heads) in [("dq", &dq, nh), ("dk", &dk, nkv), ("dv", &dv, nkv)] {
        if let Some(i) = nan_at(g, |x| x.is_nan()) {
            panic!("{what}: {name}[row {}, head {}] is NaN (unwritten or poisoned)", i / (heads * d), i % (heads * d) / d);
        }
    }
    // (+1e-6: a one-row case has dq = dk = 0 exactly in the reference, rms 0)
    err.dq = check(&dq, &want_dq, 5e-2 * rms(&want_dq) + 1e-6, 2e-2, nh, d, &format!("{what}: dq"));
    err.dk = check(&dk, &want_dk, 5e-2 * rms(&want_dk) + 1e-6, 2e-2, nkv, d, &format!("{what}: dk"));
    err.dv = check(&dv, &want_dv, 5e-2 * rms(&want_dv) + 1e-6, 2e-2, nkv, d, &format!("{what}: dv"));

    // Determinism within a run: the same launch again gives the same bits.
    let again = backward();
    assert!(bits16(&again.0) == bits16(&dq), "{what}: dq differs between two runs");
    assert!(bits16(&again.1) == bits16(&dk), "{what}: dk differs between two runs");
    assert!(bits16(&again.2) == bits16(&dv), "{what}: dv differs between two runs");
    let bo2 = dev.upload(&vec![POISON; t * nh * d]).unwrap();
    let bl2 = dev.upload(&vec![f32::NAN; t * nh]).unwrap();
    attention_packed(dev, &plan, &bq, &bk, &bv, &bo2, &bl2, nh, nkv, d).unwrap();
    assert!(bits16(&dev.download::<bf16>(&bo2).unwrap()) == bits16(&out), "{what}: out differs between two runs");
    assert!(dev.download::<f32>(&bl2).unwrap().iter().map(|x| x.to_bits()).eq(lse.iter().map(|x| x.to_bits())), "{what}: lse differs between two runs");

    let bits = Bits { out: bits16(&out), lse: lse.iter().map(|x| x.to_bits()).collect(), dq: bits16(&dq), dk: bits16(&dk), dv: bits16(&dv) };
    (bits, err)
}

/// Every case on `dev`; returns each case's bits (for the cross-schedule comparison). On a GPU
/// the 1.5B model's attention at 2K tokens joins: a 1536-row sequence (24 query tiles, the dK/dV
/// blocks of its first key tiles loop over 48 query steps per head), a 511-row one and a single row.
pub fn packed_attention_cases(dev: &Device) -> Vec<Bits> {
    let mut cases = CASES.to_vec();
    if dev.is_gpu() {
        cases.push((&[1536, 511, 1], 12, 2, 128));
        cases.push((&[1000, 24], 12, 2, 64));
    }
    cases
        .iter()
        .enumerate()
        .map(|(ci, &case)| {
            let (bits, e) = run_case(dev, case, 900 + 10 * ci as u64);
            let f = |x: (f32, f64, f32)| format!("{:.2e} (rel L2 {:.2e}, {:.0}% of tol)", x.0, x.1, 100.0 * x.2);
            println!(
                "packed case {ci} {:?} nh{} nkv{} d{} on {}: max abs err out {}, lse {:.2e}; dq {}, dk {}, dv {}",
                case.0, case.1, case.2, case.3, dev.name(), f(e.out), e.lse, f(e.dq), f(e.dk), f(e.dv)
            );
            bits
        })
        .collect()
}

/// The launchers name the buffer or argument at fault instead of launching.
pub fn packed_launch_error_cases(dev: &Device) {
    let (nh, nkv, d) = (4usize, 2usize, 64usize);
    let plan = PackedPlan::new(dev, &[20, 3]).unwrap();
    let t = plan.tokens();
    let alloc = |n: usize| dev.alloc(n).unwrap();
    let (q, out, dout, dq) = (alloc(t * nh * d * 2), alloc(t * nh * d * 2), alloc(t * nh * d * 2), alloc(t * nh * d * 2));
    let (k, v, dk, dv) = (alloc(t * nkv * d * 2), alloc(t * nkv * d * 2), alloc(t * nkv * d * 2), alloc(t * nkv * d * 2));
    let (lse, delta) = (alloc(t * nh * 4), alloc(t * nh * 4));
    let short_q = alloc(t * nh * d * 2 - 2);
    let short_kv = alloc(t * nkv * d * 2 - 2);
    let short_stat = alloc(t * nh * 4 - 4);
    let expect = |r: anyhow::Result<()>, needle: &str| {
        let e = format!("{:#}", r.expect_err(needle));
        assert!(e.contains(needle), "expected an error naming {needle}: {e}");
    };
    let fwd = |q, k, v, o, l, nh, nkv, d| attention_packed(dev, &plan, q, k, v, o, l, nh, nkv, d);
    expect(fwd(&short_q, &k, &v, &out, &lse, nh, nkv, d), "`q`");
    expect(fwd(&q, &short_kv, &v, &out, &lse, nh, nkv, d), "`k`");
    expect(fwd(&q, &k, &short_kv, &out, &lse, nh, nkv, d), "`v`");
    expect(fwd(&q, &k, &v, &short_q, &lse, nh, nkv, d), "`out`");
    // an LSE sized for bf16 (what `Ops::zeros` gives on the CUDA backend) is refused
    let bf16_lse = alloc(t * nh * 2);
    expect(fwd(&q, &k, &v, &out, &bf16_lse, nh, nkv, d), "`lse`");
    expect(fwd(&q, &k, &v, &out, &lse, nh, nkv, 96), "head_dim 96");
    expect(fwd(&q, &k, &v, &out, &lse, 5, nkv, d), "5 heads over 2 KV heads");
    let bwd = |q, k, v, o, l, g, de, dq, dk, dv| attention_packed_backward(dev, &plan, q, k, v, o, l, g, de, dq, dk, dv, nh, nkv, d);
    expect(bwd(&short_q, &k, &v, &out, &lse, &dout, &delta, &dq, &dk, &dv), "`q`");
    expect(bwd(&q, &short_kv, &v, &out, &lse, &dout, &delta, &dq, &dk, &dv), "`k`");
    expect(bwd(&q, &k, &short_kv, &out, &lse, &dout, &delta, &dq, &dk, &dv), "`v`");
    expect(bwd(&q, &k, &v, &short_q, &lse, &dout, &delta, &dq, &dk, &dv), "`out`");
    expect(bwd(&q, &k, &v, &out, &short_stat, &dout, &delta, &dq, &dk, &dv), "`lse`");
    expect(bwd(&q, &k, &v, &out, &lse, &short_q, &delta, &dq, &dk, &dv), "`dout`");
    expect(bwd(&q, &k, &v, &out, &lse, &dout, &short_stat, &dq, &dk, &dv), "`delta`");
    expect(bwd(&q, &k, &v, &out, &lse, &dout, &delta, &short_q, &dk, &dv), "`dq`");
    expect(bwd(&q, &k, &v, &out, &lse, &dout, &delta, &dq, &short_kv, &dv), "`dk`");
    expect(bwd(&q, &k, &v, &out, &lse, &dout, &delta, &dq, &dk, &short_kv), "`dv`");
    let e = attention_packed_backward(dev, &plan, &q, &k, &v, &out, &lse, &dout, &delta, &dq, &dk, &dv, nh, nkv, 32).unwrap_err();
    assert!(format!("{e:#}").contains("head_dim 32"), "{e:#}");
    // plans of no sequence or an empty one
    assert!(format!("{:#}", PackedPlan::new(dev, &[]).err().unwrap()).contains("no sequences"));
    assert!(format!("{:#}", PackedPlan::new(dev, &[3, 0, 2]).err().unwrap()).contains("sequence 1 is empty"));
}
