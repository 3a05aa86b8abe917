//! The CPU's roofline: this machine's f32 FMA peak and memory bandwidth, measured in the same
//! run, and each CPU op of the ops layer as a fraction of the ceiling that bounds it — so "fast"
//! on the CPU has a number (issue 19). `cargo bench --bench cpu_roofline` prints one table;
//! `cargo test --all-targets` (CI) runs it once on small shapes.
//!
//! Ceilings, all threads of the rayon pool (RAYON_NUM_THREADS):
//! - FMA peak: 12 independent FMA chains per thread, as wide as the GEMM's own path (16 lanes
//!   with AVX-512, 8 with AVX2+FMA, scalar otherwise), 2 FLOPs per lane per FMA; enough chains to cover
//!   the FMA latency (4-5 cycles × 2 ports).
//! - Bandwidth: a parallel copy of a buffer far larger than the caches, counted as read + write
//!   (the write-allocate read is not counted, as STREAM's "copy").
//!
//! Ops, at SmolLM2-135M's shapes (hidden 576, 9 heads / 3 KV heads of 64, MLP 1536, vocabulary
//! 49,152) — the model of the side-by-side PyTorch scripts:
//! - `linear` at prefill/training rows (m = 512): FLOP-bound, 2·m·n·k FLOPs → % of peak;
//! - `linear` at decode rows (m = 1, 8): the weight is read once, n·k·4 bytes → % of bandwidth;
//! - the backward's two products (input and weight gradients), FLOP-bound;
//! - packed causal attention (one 512-token sequence): 4·d·heads·T(T+1)/2 FLOPs → % of peak,
//!   its backward at 2.5× those FLOPs, and the paged form: a 512-token prefill (FLOPs as the
//!   packed forward) and decode over a 2048-token context (K+V bytes → % of bandwidth);
//! - add+RMSNorm: 3 rows read/written (residual in/out, out) → % of bandwidth;
//! - the fused lm_head log-prob over 512 rows: 2·T·V·H FLOPs → % of peak.
use scalerl::model::ModelConfig;
use scalerl::ops::cpu::CpuOps;
use scalerl::ops::{LogProbShape, Ops};
use std::hint::black_box;
use std::time::Instant;

/// Median wall time of `reps` calls of `f` (after one warm-up), in seconds.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    scalerl::util::rng::symmetric_values(n, seed, 0.1)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_avx2(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    // Opaque constants and count, so nothing is folded or hoisted; twelve named chains so they
    // stay in registers (an array may be kept in memory).
    let (a, b) = (_mm256_set1_ps(black_box(0.999_9)), _mm256_set1_ps(black_box(1e-4)));
    let one = _mm256_set1_ps(black_box(1.0));
    let (mut c0, mut c1, mut c2, mut c3, mut c4, mut c5) = (one, one, one, one, one, one);
    let (mut c6, mut c7, mut c8, mut c9, mut c10, mut c11) = (one, one, one, one, one, one);
    for _ in 0..black_box(iters) {
        c0 = _mm256_fmadd_ps(c0, a, b);
        c1 = _mm256_fmadd_ps(c1, a, b);
        c2 = _mm256_fmadd_ps(c2, a, b);
        c3 = _mm256_fmadd_ps(c3, a, b);
        c4 = _mm256_fmadd_ps(c4, a, b);
        c5 = _mm256_fmadd_ps(c5, a, b);
        c6 = _mm256_fmadd_ps(c6, a, b);
        c7 = _mm256_fmadd_ps(c7, a, b);
        c8 = _mm256_fmadd_ps(c8, a, b);
        c9 = _mm256_fmadd_ps(c9, a, b);
        c10 = _mm256_fmadd_ps(c10, a, b);
        c11 = _mm256_fmadd_ps(c11, a, b);
    }
    let s = [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11].into_iter().fold(_mm256_setzero_ps(), |s, x| _mm256_add_ps(s, x));
    let mut out = [0f32; 8];
    _mm256_storeu_ps(out.as_mut_ptr(), s);
    out.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_avx512(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    // As the AVX2 chains, sixteen lanes wide (the GEMM's tile when the CPU has AVX-512).
    let (a, b) = (_mm512_set1_ps(black_box(0.999_9)), _mm512_set1_ps(black_box(1e-4)));
    let one = _mm512_set1_ps(black_box(1.0));
    let (mut c0, mut c1, mut c2, mut c3, mut c4, mut c5) = (one, one, one, one, one, one);
    let (mut c6, mut c7, mut c8, mut c9, mut c10, mut c11) = (one, one, one, one, one, one);
    for _ in 0..black_box(iters) {
        c0 = _mm512_fmadd_ps(c0, a, b);
        c1 = _mm512_fmadd_ps(c1, a, b);
        c2 = _mm512_fmadd_ps(c2, a, b);
        c3 = _mm512_fmadd_ps(c3, a, b);
        c4 = _mm512_fmadd_ps(c4, a, b);
        c5 = _mm512_fmadd_ps(c5, a, b);
        c6 = _mm512_fmadd_ps(c6, a, b);
        c7 = _mm512_fmadd_ps(c7, a, b);
        c8 = _mm512_fmadd_ps(c8, a, b);
        c9 = _mm512_fmadd_ps(c9, a, b);
        c10 = _mm512_fmadd_ps(c10, a, b);
        c11 = _mm512_fmadd_ps(c11, a, b);
    }
    let s = [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11].into_iter().fold(_mm512_setzero_ps(), |s, x| _mm512_add_ps(s, x));
    _mm512_reduce_add_ps(s)
}

/// FLOPs of one thread's `fma_chains(iters)`, and the chains themselves: the widest FMA the
/// CPU has (AVX-512, else AVX2+FMA, else scalar), the one the packed GEMM runs with.
fn fma_chains(iters: usize) -> (f64, f32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was detected just above.
        return ((iters * 12 * 16 * 2) as f64, unsafe { fma_chains_avx512(iters) });
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the features were detected just above.
        return ((iters * 12 * 8 * 2) as f64, unsafe { fma_chains_avx2(iters) });
    }
    let mut c = [1.0f32; 12];
    for _ in 0..iters {
        for x in c.iter_mut() {
            *x = x.mul_add(0.999_9, 1e-4);
        }
    }
    ((iters * 12 * 2) as f64, c.iter().sum())
}

/// f32 GFLOP/s of all threads.
fn peak_gflops(iters: usize, reps: usize) -> f64 {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    let flops = fma_chains(1).0 * iters as f64 * threads as f64;
    let secs = time(reps, || {
        let s: f32 = (0..threads).into_par_iter().map(|_| fma_chains(iters).1).sum();
        black_box(s);
    });
    flops / secs / 1e9
}

/// Copy GB/s (read + write) of all threads over `bytes`.
fn copy_gbps(bytes: usize, reps: usize) -> f64 {
    use rayon::prelude::*;
    let n = bytes / 4;
    let src = random(n, 1);
    let mut dst = vec![0f32; n];
    let chunk = n.div_ceil(rayon::current_num_threads() * 4).max(1024);
    let secs = time(reps, || {
        dst.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(d, s)| d.copy_from_slice(s));
        black_box(&dst);
    });
    (2 * n * 4) as f64 / secs / 1e9
}

struct Row {
    op: String,
    secs: f64,
    work: f64,
    /// true: FLOPs against the peak; false: bytes against the bandwidth.
    flops: bool,
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this once without it.
    let full = std::env::args().any(|a| a == "--bench");
    let reps = if full { 11 } else { 1 };
    let threads = rayon::current_num_threads();
    let peak = peak_gflops(if full { 20_000_000 } else { 10_000 }, reps);
    let bw = copy_gbps(if full { 512 << 20 } else { 4 << 20 }, reps);

    // SmolLM2-135M's shapes in the full run; a small model in test mode.
    let (h, inter, vocab, t) = if full { (576, 1536, 49_152, 512) } else { (64, 128, 512, 32) };
    let cfg = ModelConfig::from_json(&format!(
        r#"{{"architectures": ["LlamaForCausalLM"], "hidden_size": {h}, "intermediate_size": {inter}, "num_attention_heads": {heads},
            "num_key_value_heads": {kv}, "num_hidden_layers": 1, "vocab_size": {vocab}, "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true}}"#,
        heads = h / 64,
        kv = (h / 64 / 3).max(1),
    ))
    .unwrap();
    let o = CpuOps;
    let mut rows: Vec<Row> = Vec::new();

    // Linear at prefill/training rows and at decode rows, and the backward's products.
    for (name, n) in [("qkv-like", h), ("mlp-up", inter)] {
        let w = random(n * h, 3);
        for m in [t, 8, 1] {
            let x = random(m * h, 4);
            let mut y = vec![0f32; m * n];
            let secs = time(reps, || o.linear(&x, &w, &mut y, m, n, h).unwrap());
            let flop_bound = m >= 64;
            let work = if flop_bound { 2.0 * (m * n * h) as f64 } else { (n * h * 4) as f64 };
            rows.push(Row { op: format!("linear {name} m={m} n={n} k={h}"), secs, work, flops: flop_bound });
        }
        let (x, dy) = (random(t * h, 5), random(t * n, 6));
        let mut dx = vec![0f32; t * h];
        let secs = time(reps, || o.linear_backward_input(&dy, &w, &mut dx, t, n, h).unwrap());
        rows.push(Row { op: format!("linear dX {name} m={t} n={n} k={h}"), secs, work: 2.0 * (t * n * h) as f64, flops: true });
        let mut dw = vec![0f32; n * h];
        let secs = time(reps, || o.linear_backward_weight(&dy, &x, &mut dw, t, n, h).unwrap());
        rows.push(Row { op: format!("linear dW {name} m={t} n={n} k={h}"), secs, work: 2.0 * (t * n * h) as f64, flops: true });
    }

    // Packed causal attention over one sequence of t tokens.
    let seq: Vec<u32> = (0..t as u32).map(|i| i % 100 + 1).collect();
    let b = o.packed_batch(&cfg, &[&seq]).unwrap();
    let (q, k, v) = (random(t * cfg.q_dim(), 7), random(t * cfg.kv_dim(), 8), random(t * cfg.kv_dim(), 9));
    let (mut out, mut lse) = (vec![0f32; t * cfg.q_dim()], vec![0f32; t * cfg.num_heads]);
    let secs = time(reps, || o.attention_packed(&b, &q, &k, &v, &mut out, &mut lse, &cfg).unwrap());
    let att_flops = 4.0 * cfg.head_dim as f64 * cfg.num_heads as f64 * (t * (t + 1) / 2) as f64;
    rows.push(Row { op: format!("attention packed T={t} heads={} d={}", cfg.num_heads, cfg.head_dim), secs, work: att_flops, flops: true });
    // Its backward: FLOPs counted as flash attention's 2.5× the forward (5 products of the 2 —
    // recomputing P and the second pass's extra products are not credited).
    let dout = random(t * cfg.q_dim(), 15);
    let (mut dq, mut dk, mut dv) = (vec![0f32; t * cfg.q_dim()], vec![0f32; t * cfg.kv_dim()], vec![0f32; t * cfg.kv_dim()]);
    let secs = time(reps, || o.attention_packed_backward(&b, &q, &k, &v, &out, &lse, &dout, &mut dq, &mut dk, &mut dv, &cfg).unwrap());
    rows.push(Row { op: format!("attention packed bwd T={t}"), secs, work: 2.5 * att_flops, flops: true });

    // Paged attention over a KV cache of 16-token blocks (block tables in reverse, so blocks are
    // not contiguous): a prefill of the t-token sequence (FLOP-bound, as the packed forward) and
    // decode of one query per sequence over a long context (K and V read once: bytes against
    // the bandwidth).
    {
        use scalerl::ops::cpu::attention::{paged_attention, QueryPos};
        use scalerl::ops::cpu::KvCache;
        let (bs, ctx) = (16, if full { 2048 } else { 64 });
        for (name, seqs, len) in [("prefill", 1, t), ("decode", 1, ctx), ("decode", 8, ctx)] {
            let nb = seqs * len.div_ceil(bs);
            let mut cache = KvCache::new(1, nb, bs, cfg.num_kv_heads, cfg.head_dim);
            let tables: Vec<Vec<u32>> = (0..seqs).map(|s| (0..len.div_ceil(bs)).rev().map(|b| (s * len.div_ceil(bs) + b) as u32).collect()).collect();
            let (kk, vv) = (random(len * cfg.kv_dim(), 16), random(len * cfg.kv_dim(), 17));
            for tb in &tables {
                for p in 0..len {
                    cache.write(0, tb, p, &kk[p * cfg.kv_dim()..(p + 1) * cfg.kv_dim()], &vv[p * cfg.kv_dim()..(p + 1) * cfg.kv_dim()]);
                }
            }
            let queries: Vec<QueryPos> = if name == "prefill" {
                (0..len).map(|p| QueryPos { table: &tables[0], pos: p }).collect()
            } else {
                tables.iter().map(|tb| QueryPos { table: tb, pos: len - 1 }).collect()
            };
            let qq = random(queries.len() * cfg.q_dim(), 18);
            let mut oo = vec![0f32; qq.len()];
            let secs = time(reps, || paged_attention(&qq, &queries, &cache, 0, cfg.num_heads, &mut oo));
            let (work, flops) = if name == "prefill" { (att_flops, true) } else { ((seqs * len * cfg.kv_dim() * 4 * 2) as f64, false) };
            rows.push(Row { op: format!("attention paged {name} seqs={seqs} ctx={len}"), secs, work, flops });
        }
    }

    // add + RMSNorm over t rows.
    let (mut res, x, w) = (random(t * h, 10), random(t * h, 11), random(h, 12));
    let mut y = vec![0f32; t * h];
    let secs = time(reps, || o.add_rmsnorm(&mut res, Some(&x), &w, &mut y, t, h, 1e-5).unwrap());
    rows.push(Row { op: format!("add+rmsnorm rows={t} h={h}"), secs, work: (4 * t * h * 4) as f64, flops: false });

    // The fused lm_head log-prob over t rows.
    let (hid, lm) = (random(t * h, 13), random(vocab * h, 14));
    let rows_idx: Vec<usize> = (0..t).collect();
    let targets: Vec<u32> = (0..t as u32).map(|i| i * 7 % vocab as u32).collect();
    let sh = LogProbShape { hidden: h, vocab, temperature: 0.6, chunk: 4096 };
    let secs = time(reps, || {
        black_box(o.logprobs(&hid, &rows_idx, &targets, &lm, sh).unwrap());
    });
    rows.push(Row { op: format!("logprobs T={t} V={vocab} H={h}"), secs, work: 2.0 * (t * vocab * h) as f64, flops: true });

    println!("CPU roofline ({threads} threads): f32 FMA peak {peak:.1} GFLOP/s, copy bandwidth {bw:.1} GB/s{}", if full { "" } else { " (test mode: small shapes, one repetition)" });
    println!("{:<44} {:>10} {:>14} {:>9}", "op", "time", "achieved", "% ceiling");
    for r in &rows {
        let (rate, ceiling, unit) = if r.flops { (r.work / r.secs / 1e9, peak, "GFLOP/s") } else { (r.work / r.secs / 1e9, bw, "GB/s") };
        println!("{:<44} {:>8.3}ms {:>7.1} {:<7} {:>8.1}%", r.op, r.secs * 1e3, rate, unit, 100.0 * rate / ceiling);
    }
}
