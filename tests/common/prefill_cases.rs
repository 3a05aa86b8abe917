//! Parity cases of the FlashAttention-2-style prefill attention (kernels/attention_prefill.cu),
//! written once for any `Device`: out against the CPU reference `paged_attention` on the same
//! bf16 values, lse against an f64 log-sum-exp computed here; outputs poisoned with NaN before the
//! launch; K/V NaN at every cache position no query may see. tests/attention_prefill_interpret.rs
//! runs them in interpret mode on every schedule; tests/gpu.rs can add them on a GPU, where the
//! shapes of the 1.5B target model (12 heads over 2 KV heads, head_dim 128, 1K–4K tokens) join.
//! The including test crate declares `kernel_cases` (tests/common/kernel_cases.rs) at its root.
#![allow(dead_code)]
use super::kernel_cases::{max_abs_err, nan_padded_cache, paged_setup, random_bf16, to_bf16, to_f32, POISON};
use half::bf16;
use scalerl::ops::cpu::attention::{paged_attention, QueryPos};
use scalerl::ops::cuda::attention::AttentionPlan;
use scalerl::ops::cuda::attention_prefill::{prefill_attention, PrefillPlan};
use scalerl::device::Device;
use scalerl::ops::cpu::KvCache;

/// (chunks (start, len), block_size, heads, kv heads, head_dim)
type PrefillCase = (&'static [(usize, usize)], usize, usize, usize, usize);

/// ln Σ_j exp(q·k_j / √d) over the visible keys, in f64.
fn lse_f64(q: &[f32], cpu: &KvCache, table: &[u32], pos: usize, kv_head: usize) -> f64 {
    let d = cpu.head_dim;
    let scale = 1.0 / (d as f64).sqrt();
    let s: Vec<f64> = (0..=pos)
        .map(|j| {
            let o = cpu.token_offset(table, j) + kv_head * d;
            cpu.k[0][o..o + d].iter().zip(q).map(|(&k, &x)| k as f64 * x as f64).sum::<f64>() * scale
        })
        .collect();
    let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    max + s.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// Runs one case; checks every `stride`-th token row plus the last row of every chunk (all rows
/// when `stride` is 1) and that no output is left NaN. Returns (max abs err of out, of lse, the
/// kernel(s) the forward's plan picked).
fn run_case(dev: &Device, case: PrefillCase, seed: u64, stride: usize) -> (f32, f64, &'static str) {
    let (chunks, bs, nh, nkv, d) = case;
    let setup = paged_setup(chunks, bs, seed);
    let queries = setup.queries();
    let t = queries.len();
    let cpu = nan_padded_cache(&setup, bs, nkv, d, seed);
    // q at scale 4: scores of a few units, so the running max moves between key tiles.
    let qv = random_bf16(t * nh * d, seed + 77, 4.0);
    let mut checked: Vec<usize> = (0..t).step_by(stride).collect();
    let mut end = 0;
    for &(_, len) in chunks {
        end += len;
        if end > 0 && (end - 1) % stride != 0 {
            checked.push(end - 1);
        }
    }
    checked.sort_unstable();
    checked.dedup();

    let row = |i: usize| &qv[i * nh * d..(i + 1) * nh * d];
    let q_sub: Vec<f32> = checked.iter().flat_map(|&i| to_f32(row(i))).collect();
    let qpos: Vec<QueryPos> =
        checked.iter().map(|&i| QueryPos { table: &setup.tables[queries[i].0], pos: queries[i].1 }).collect();
    let mut want = vec![0f32; checked.len() * nh * d];
    paged_attention(&q_sub, &qpos, &cpu, 0, nh, &mut want);

    let (bkc, bvc) = (dev.upload(&to_bf16(&cpu.k[0])).unwrap(), dev.upload(&to_bf16(&cpu.v[0])).unwrap());
    let bq = dev.upload(&qv).unwrap();
    let bo = dev.upload(&vec![POISON; t * nh * d]).unwrap();
    let bl = dev.upload(&vec![f32::NAN; t * nh]).unwrap();
    let meta = setup.meta(dev, bs);
    let plan = PrefillPlan::new(dev, &meta).unwrap();
    prefill_attention(dev, &plan, &bq, &bkc, &bvc, &bo, Some(&bl), &meta, setup.num_blocks, nh, nkv, d).unwrap();
    let what = format!("prefill case {chunks:?} bs{bs} nh{nh} nkv{nkv} d{d} on {}", dev.name());
    let (out, lse) = (dev.download::<bf16>(&bo).unwrap(), dev.download::<f32>(&bl).unwrap());
    if let Some(i) = out.iter().position(|v| v.is_nan()) {
        panic!("{what}: out[{}, head {}] is NaN (unwritten or poisoned)", i / (nh * d), i % (nh * d) / d);
    }
    if let Some(i) = lse.iter().position(|v| !v.is_finite()) {
        panic!("{what}: lse[{}, head {}] = {}", i / nh, i % nh, lse[i]);
    }
    // Inference skips the LSE (a null pointer); its output must be the same, bit for bit. The
    // forward's plan below makes that call itself when it picks the prefill kernel.
    let forward = AttentionPlan::new(dev, &meta, nh, nkv, d).unwrap();
    let no_lse = |o: &scalerl::device::Buffer| {
        prefill_attention(dev, &plan, &bq, &bkc, &bvc, o, None, &meta, setup.num_blocks, nh, nkv, d)
    };
    let out_no_lse = if forward.kernel() == "prefill_attention" {
        None
    } else {
        let bo_no_lse = dev.upload(&vec![POISON; t * nh * d]).unwrap();
        no_lse(&bo_no_lse).unwrap();
        Some(dev.download::<bf16>(&bo_no_lse).unwrap())
    };
    let same_bits = |other: &[bf16]| {
        if let Some(i) = (0..out.len()).find(|&i| out[i].to_bits() != other[i].to_bits()) {
            panic!("{what}: without lse, out[{i}] = {} instead of {}", other[i], out[i]);
        }
    };
    if let Some(o) = &out_no_lse {
        same_bits(o);
    }

    let check = |out: &[bf16], how: &str| -> Vec<bf16> {
        let got: Vec<bf16> = checked.iter().flat_map(|&i| out[i * nh * d..(i + 1) * nh * d].to_vec()).collect();
        for (x, (g, w)) in got.iter().zip(&want).enumerate() {
            let (g, i) = (g.to_f32(), checked[x / (nh * d)]);
            // as kernel_cases' assert_close_bf16: bf16 output rounding, and P rounded to bf16
            assert!(
                (g - w).abs() <= 1e-2 + 1e-2 * w.abs(),
                "{what} ({how}): out[token {i} (pos {}), head {}, dim {}] = {g} vs reference {w}",
                queries[i].1,
                x % (nh * d) / d,
                x % d
            );
        }
        got
    };
    let got = check(&out, "prefill kernel");
    // The forward's dispatch (attention.rs): leading decode rows go to the decode kernel, the
    // chunks after them to the prefill kernel, into one poisoned output.
    let bo_plan = dev.upload(&vec![POISON; t * nh * d]).unwrap();
    forward.run(dev, &bq, &bkc, &bvc, &bo_plan, &meta, setup.num_blocks, nh, nkv, d).unwrap();
    let via_plan = dev.download::<bf16>(&bo_plan).unwrap();
    if let Some(i) = via_plan.iter().position(|v| v.is_nan()) {
        panic!("{what} ({}): out[{}, head {}] is NaN", forward.kernel(), i / (nh * d), i % (nh * d) / d);
    }
    if out_no_lse.is_none() {
        same_bits(&via_plan); // the plan's prefill call passes no LSE
    }
    check(&via_plan, forward.kernel());
    let mut lse_err = 0f64;
    for (ci, &i) in checked.iter().enumerate() {
        let (s, p) = queries[i];
        for h in 0..nh {
            let qh = &q_sub[(ci * nh + h) * d..(ci * nh + h + 1) * d];
            let w = lse_f64(qh, &cpu, &setup.tables[s], p, h / (nh / nkv));
            let g = lse[i * nh + h] as f64;
            // f32 scores and sums, exp2/log2: tens of f32 ulps at |lse| of a few units
            assert!((g - w).abs() <= 5e-5 + 5e-6 * w.abs(), "{what}: lse[token {i} (pos {p}), head {h}] = {g} vs {w}");
            lse_err = lse_err.max((g - w).abs());
        }
    }
    (max_abs_err(&got, &want), lse_err, forward.kernel())
}

pub fn prefill_attention_cases(dev: &Device) {
    let mut cases: Vec<PrefillCase> = vec![
        // one token; one full 64-row tile
        (&[(0, 1)], 16, 1, 1, 64),
        (&[(0, 64)], 16, 2, 2, 64),
        // three query and key tiles, the last with 22 rows
        (&[(0, 150)], 16, 4, 2, 128),
        // a chunk starting mid-block and mid-tile, a short prefill, a decode row; GQA 6
        (&[(37, 90), (0, 5), (130, 1)], 32, 6, 1, 64),
        // the target's heads: chunks from mid-tile positions, a tile of one row, a decode row
        (&[(70, 61), (3, 129), (200, 1)], 16, 12, 2, 128),
        (&[(100, 33), (0, 97)], 32, 2, 1, 128),
        // five key tiles, GQA 1 at both head dims, a 2-row chunk at position 1
        (&[(0, 300)], 32, 2, 2, 64),
        (&[(250, 70), (1, 2)], 16, 3, 3, 128),
        // decode rows first, then prefill chunks (continuous batching): the forward's plan sends
        // the leading rows to the decode kernel (3 KV splits at 700 keys) and the rest here
        (&[(700, 1), (5, 1), (37, 90), (0, 5)], 32, 6, 1, 64),
        (&[(200, 1), (70, 61), (3, 129)], 16, 12, 2, 128),
    ];
    if dev.is_gpu() {
        // The 1.5B model's attention: prefill from 0 at 1K and 4K, chunked prefill of 2K tokens
        // after 1000 cached ones next to a decode row at 3K context and a 300-token prefill.
        cases.push((&[(0, 1024)], 16, 12, 2, 128));
        cases.push((&[(0, 4096)], 16, 12, 2, 128));
        cases.push((&[(1000, 2048), (3000, 1), (0, 300)], 16, 12, 2, 128));
        cases.push((&[(8000, 1), (3000, 1), (0, 1000)], 16, 12, 2, 128));
    }
    for (ci, &case) in cases.iter().enumerate() {
        let tokens: usize = case.0.iter().map(|c| c.1).sum();
        let stride = if tokens > 512 { 61 } else { 1 };
        let (out_err, lse_err, plan) = run_case(dev, case, 500 + ci as u64, stride);
        println!(
            "prefill case {ci} {:?} (bs{} nh{} nkv{} d{}): max abs err out {out_err:.2e}, lse {lse_err:.2e}; forward: {plan}",
            case.0, case.1, case.2, case.3, case.4
        );
    }
}

/// The launcher names the buffer or argument at fault instead of launching.
pub fn prefill_launch_error_cases(dev: &Device) {
    let (nh, nkv, d, bs) = (4usize, 2usize, 64usize, 16usize);
    let setup = paged_setup(&[(3, 20), (0, 1)], bs, 9);
    let meta = setup.meta(dev, bs);
    let plan = PrefillPlan::new(dev, &meta).unwrap();
    let t = meta.tokens;
    let cache_bytes = setup.num_blocks * bs * nkv * d * 2;
    let (q, out) = (dev.alloc(t * nh * d * 2).unwrap(), dev.alloc(t * nh * d * 2).unwrap());
    let lse = dev.alloc(t * nh * 4).unwrap();
    let (kc, vc) = (dev.alloc(cache_bytes).unwrap(), dev.alloc(cache_bytes).unwrap());
    let short_act = dev.alloc(t * nh * d * 2 - 2).unwrap();
    let short_lse = dev.alloc(t * nh * 4 - 4).unwrap();
    let short_cache = dev.alloc(cache_bytes - 2).unwrap();
    let nb = setup.num_blocks;
    let run = |q, k, v, o, l, nb, nh, nkv, d| prefill_attention(dev, &plan, q, k, v, o, Some(l), &meta, nb, nh, nkv, d);
    let expect = |r: anyhow::Result<()>, needle: &str| {
        let e = format!("{:#}", r.expect_err(needle));
        assert!(e.contains(needle), "expected an error naming {needle}: {e}");
    };
    expect(run(&short_act, &kc, &vc, &out, &lse, nb, nh, nkv, d), "`q`");
    expect(run(&q, &kc, &vc, &short_act, &lse, nb, nh, nkv, d), "`out`");
    expect(run(&q, &kc, &vc, &out, &short_lse, nb, nh, nkv, d), "`lse`");
    expect(run(&q, &short_cache, &vc, &out, &lse, nb, nh, nkv, d), "`k_cache`");
    expect(run(&q, &kc, &short_cache, &out, &lse, nb, nh, nkv, d), "`v_cache`");
    // a cache with fewer blocks than the tables name
    expect(run(&q, &kc, &vc, &out, &lse, 2, nh, nkv, d), "block");
    expect(run(&q, &kc, &vc, &out, &lse, nb, nh, nkv, 96), "head_dim 96");
    expect(run(&q, &kc, &vc, &out, &lse, nb, 5, nkv, d), "5 heads over 2 KV heads");
    // a plan from another batch
    let other = paged_setup(&[(0, 21), (0, 1)], bs, 9).meta(dev, bs);
    let other_plan = PrefillPlan::new(dev, &other).unwrap();
    let e = prefill_attention(dev, &other_plan, &q, &kc, &vc, &out, Some(&lse), &meta, nb, nh, nkv, d).unwrap_err();
    assert!(format!("{e:#}").contains("plan"), "{e:#}");
}
