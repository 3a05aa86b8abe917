//! Kernel parity cases written once for any `Device`: every kernel against the CPU reference with
//! random inputs and NaN-poisoned outputs, the GEMM against the CPU matmul, launch errors, and
//! CUDA graph replay. tests/kernels_interpret.rs runs them in interpret mode on every schedule;
//! tests/gpu.rs runs them on a GPU (with shapes of the 1.5B target model added there).
#![allow(dead_code)]
use half::bf16;
use scalerl::ops::cpu::{norm, rope, split, swiglu};
use scalerl::ops::cuda::{self as k, TokenMeta};
use scalerl::device::{Arg, Device, Dim3, LaunchConfig};
use scalerl::ops::cpu::KvCache;
use std::time::Instant;

pub const POISON: bf16 = bf16::from_bits(0x7fc1); // a NaN: any element left unwritten shows



// ---- inputs and comparisons ----------------------------------------------------------------

pub fn random_bf16(n: usize, seed: u64, scale: f32) -> Vec<bf16> {
    scalerl::util::rng::symmetric_values(n, seed, scale).into_iter().map(bf16::from_f32).collect()
}

pub fn to_f32(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

/// |a − b| ≤ atol + rtol·|b| elementwise, with bf16's 8-bit mantissa in mind.
pub fn assert_close_bf16(got: &[bf16], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let g = g.to_f32();
        assert!((g - w).abs() <= 1e-2 + 1e-2 * w.abs(), "{what}[{i}]: kernel {g} vs reference {w}");
    }
}

pub fn to_bf16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

/// A cache with random bf16 K/V at every position a query of `setup` may see and NaN everywhere
/// else (past each sequence's chunk, blocks nobody owns), so a read past the causal limit, from a
/// wrong block, or an unmasked zero weight on garbage poisons the output.
pub fn nan_padded_cache(setup: &PagedSetup, bs: usize, nkv: usize, d: usize, seed: u64) -> KvCache {
    let kv_dim = nkv * d;
    let mut cpu = KvCache::new(1, setup.num_blocks, bs, nkv, d);
    cpu.k[0].fill(f32::NAN);
    cpu.v[0].fill(f32::NAN);
    for (s, &(start, len)) in setup.chunks.iter().enumerate() {
        for p in 0..start + len {
            let sd = seed * 1_000_000_007 + (s * 100_000 + p) as u64;
            let (kr, vr) = (to_f32(&random_bf16(kv_dim, sd, 1.0)), to_f32(&random_bf16(kv_dim, sd + 50_000, 1.0)));
            cpu.write(0, &setup.tables[s], p, &kr, &vr);
        }
    }
    cpu
}

pub fn max_abs_err(got: &[bf16], want: &[f32]) -> f32 {
    // NaN-propagating (f32::max would drop a NaN difference and report 0).
    got.iter().zip(want).fold(0f32, |m, (g, w)| {
        let d = (g.to_f32() - w).abs();
        if d.is_nan() || m.is_nan() { f32::NAN } else { m.max(d) }
    })
}

/// ‖got − want‖ / ‖want‖ (NaN if anything is NaN).
pub fn rel_l2(got: &[bf16], want: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (g, w) in got.iter().zip(want) {
        let d = g.to_f32() as f64 - *w as f64;
        num += d * d;
        den += (*w as f64) * (*w as f64);
    }
    (num / den.max(1e-30)).sqrt()
}


// ---- parity cases, for any device -------------------------------------------------------------

pub fn rmsnorm_cases(dev: &Device) {
    let mut shapes = vec![(1, 32), (3, 72), (7, 100), (2, 1536), (5, 33)];
    if dev.is_gpu() {
        shapes.extend([(64, 1536), (4096, 1536)]);
    }
    for (rows, hidden) in shapes {
        let seed = (rows * 1000 + hidden) as u64;
        let x = random_bf16(rows * hidden, seed, 2.0);
        let res = random_bf16(rows * hidden, seed + 1, 2.0);
        let w = random_bf16(hidden, seed + 2, 1.0);
        let eps = 1e-6;
        // CPU reference on the bf16-rounded sum (the kernel rounds it too).
        let sum: Vec<f32> = to_f32(&x).iter().zip(to_f32(&res)).map(|(a, b)| bf16::from_f32(a + b).to_f32()).collect();
        let mut want = vec![0f32; rows * hidden];
        norm::rmsnorm(&sum, &to_f32(&w), eps, &mut want);

        let (bx, bres, bw) = (dev.upload(&x).unwrap(), dev.upload(&res).unwrap(), dev.upload(&w).unwrap());
        let bout = dev.upload(&vec![POISON; rows * hidden]).unwrap();
        let cfg = LaunchConfig { grid: Dim3::x(rows as u32), block: Dim3::x(256), shared_bytes: 0 };
        let args = [Arg::Buf(&bx), Arg::Buf(&bres), Arg::Buf(&bw), Arg::Buf(&bout), Arg::I32(hidden as i32), Arg::F32(eps)];
        dev.launch("rmsnorm_residual_bf16", cfg, &args).unwrap();
        let what = format!("rmsnorm {rows}x{hidden} on {}", dev.name());
        let got = dev.download::<bf16>(&bout).unwrap();
        assert_close_bf16(&got, &want, &what);
        assert_eq!(to_f32(&dev.download::<bf16>(&bres).unwrap()), sum, "{what}: residual");
        println!("{what}: max abs err {:.2e}", max_abs_err(&got, &want));

        // Without x (first layer): the residual is only normalised, not changed.
        let bres2 = dev.upload(&res).unwrap();
        let bout2 = dev.upload(&vec![POISON; rows * hidden]).unwrap();
        let args = [Arg::U64(0), Arg::Buf(&bres2), Arg::Buf(&bw), Arg::Buf(&bout2), Arg::I32(hidden as i32), Arg::F32(eps)];
        dev.launch("rmsnorm_residual_bf16", cfg, &args).unwrap();
        norm::rmsnorm(&to_f32(&res), &to_f32(&w), eps, &mut want);
        assert_close_bf16(&dev.download::<bf16>(&bout2).unwrap(), &want, &format!("{what} without x"));
        assert_eq!(dev.download::<bf16>(&bres2).unwrap(), res);
    }
}

pub fn rope_cases(dev: &Device) {
    // (tokens, heads, kv heads, head_dim, bias)
    let mut shapes =
        vec![(1, 1, 1, 2, false), (3, 6, 2, 12, true), (5, 4, 1, 16, false), (2, 12, 2, 128, true), (7, 3, 3, 10, true), (2, 2, 1, 300, true)];
    if dev.is_gpu() {
        shapes.extend([(64, 12, 2, 128, true), (4096, 12, 2, 128, true)]);
    }
    for (t, nh, nkv, d, bias) in shapes {
        let theta = if d == 16 { 100000.0 } else { 10000.0 };
        let seed = (t * 100 + nh * 10 + d) as u64;
        let (q, kk) = (random_bf16(t * nh * d, seed, 2.0), random_bf16(t * nkv * d, seed + 1, 2.0));
        let (qb, kb) = (random_bf16(nh * d, seed + 2, 0.5), random_bf16(nkv * d, seed + 3, 0.5));
        // Positions: ragged, up to the 24K context, not sorted; 0 is in the first shape only.
        let pos: Vec<usize> = (0..t).map(|i| if t == 1 { 0 } else { (i * 7919 + seed as usize * 31) % 24576 + 1 }).collect();
        let mut want_q = to_f32(&q);
        let mut want_k = to_f32(&kk);
        for i in 0..t {
            let (cos, sin) = rope::rope_cos_sin(pos[i], d, theta);
            let (qr, kr) = (&mut want_q[i * nh * d..(i + 1) * nh * d], &mut want_k[i * nkv * d..(i + 1) * nkv * d]);
            if bias {
                qr.iter_mut().zip(to_f32(&qb)).for_each(|(a, b)| *a += b);
                kr.iter_mut().zip(to_f32(&kb)).for_each(|(a, b)| *a += b);
            }
            rope::rope_inplace(qr, d, &cos, &sin);
            rope::rope_inplace(kr, d, &cos, &sin);
        }
        let seqs: Vec<(usize, usize, &[u32])> = pos.iter().map(|&p| (p, 1, &[0u32][..])).collect();
        // A table is irrelevant to RoPE; block_size = 1<<20 makes any position "covered".
        let meta = TokenMeta::upload(dev, &seqs, 1 << 20).unwrap();
        let (bq, bk) = (dev.upload(&q).unwrap(), dev.upload(&kk).unwrap());
        let (bqb, bkb) = (dev.upload(&qb).unwrap(), dev.upload(&kb).unwrap());
        let (oq, ok) = if bias { (Some(&bqb), Some(&bkb)) } else { (None, None) };
        k::rope_qk(dev, &bq, &bk, oq, ok, &meta, nh, nkv, d, theta).unwrap();
        let what = format!("rope t{t} nh{nh} nkv{nkv} d{d} bias {bias} on {}", dev.name());
        // In place: an element the kernel skipped keeps its input value and fails here.
        let (gq, gk) = (dev.download::<bf16>(&bq).unwrap(), dev.download::<bf16>(&bk).unwrap());
        assert_close_bf16(&gq, &want_q, &format!("{what} q"));
        assert_close_bf16(&gk, &want_k, &format!("{what} k"));
        println!("{what}: max abs err {:.2e}", max_abs_err(&gq, &want_q).max(max_abs_err(&gk, &want_k)));
    }
}

pub fn silu_mul_cases(dev: &Device) {
    // The 4th size exceeds the 4096-block grid cap: the grid-stride loop must cover it.
    let mut sizes = vec![1usize, 37, 1000, 256 * 4096 + 77];
    if dev.is_gpu() {
        sizes.push(4096 * 8960);
    }
    for n in sizes {
        let (g, u) = (random_bf16(n, n as u64, 6.0), random_bf16(n, n as u64 + 50, 2.0));
        let mut want = vec![0f32; n];
        swiglu::silu_mul(&to_f32(&g), &to_f32(&u), &mut want);
        let (bg, bu) = (dev.upload(&g).unwrap(), dev.upload(&u).unwrap());
        let bo = dev.upload(&vec![POISON; n]).unwrap();
        k::silu_mul(dev, &bg, &bu, &bo, n).unwrap();
        let got = dev.download::<bf16>(&bo).unwrap();
        assert_close_bf16(&got, &want, &format!("silu_mul n={n} on {}", dev.name()));
        println!("silu_mul n={n}: max abs err {:.2e}", max_abs_err(&got, &want));
        // In place (out = gate).
        k::silu_mul(dev, &bg, &bu, &bg, n).unwrap();
        assert_eq!(dev.download::<bf16>(&bg).unwrap(), got, "silu_mul n={n} in place");
    }
    // As the model calls it: gate and up read from the fused gate|up output [rows, 2·inter].
    let mut shapes = vec![(1usize, 37usize), (5, 8), (7, 96), (300, 1000)];
    if dev.is_gpu() {
        shapes.push((4096, 8960));
    }
    for (rows, inter) in shapes {
        let gu = random_bf16(rows * 2 * inter, (rows * inter) as u64 + 7, 6.0);
        let mut want = vec![0f32; rows * inter];
        swiglu::silu_mul_fused(&to_f32(&gu), &mut want, rows, inter);
        let (bgu, bo) = (dev.upload(&gu).unwrap(), dev.upload(&vec![POISON; rows * inter]).unwrap());
        k::swiglu::silu_mul_fused(dev, &bgu, &bo, rows, inter).unwrap();
        let got = dev.download::<bf16>(&bo).unwrap();
        assert_close_bf16(&got, &want, &format!("silu_mul fused {rows}x{inter} on {}", dev.name()));
        println!("silu_mul fused {rows}x{inter}: max abs err {:.2e}", max_abs_err(&got, &want));
    }
}

/// The fused projections' column split and its inverse (kernels/split_cols.cu): exact copies,
/// so bit-identical to the CPU reference. Shapes: the q|k|v and gate|up splits of the fixture
/// and 1.5B models, 1 and many rows (past the grid cap), odd widths; outputs poisoned.
pub fn split_cols_cases(dev: &Device) {
    let mut shapes: Vec<(usize, Vec<usize>)> = vec![
        (1, vec![48, 16, 16]),
        (7, vec![48, 16, 16]),
        (5, vec![13, 1, 7]),
        (3, vec![96, 96]),
        (9, vec![5, 3]),
        (700, vec![1536, 256, 256]), // 1.5B q|k|v: 1.6M elements, past the 4096-block grid cap
    ];
    if dev.is_gpu() {
        shapes.push((4096, vec![8960, 8960]));
    }
    for (rows, widths) in shapes {
        let w: usize = widths.iter().sum();
        let src = random_bf16(rows * w, (rows * w) as u64, 3.0);
        let src32 = to_f32(&src);
        let mut want: Vec<Vec<f32>> = widths.iter().map(|&n| vec![0f32; rows * n]).collect();
        split::split_cols(&src32, &mut want.iter_mut().map(|v| v.as_mut_slice()).collect::<Vec<_>>(), rows);
        let bsrc = dev.upload(&src).unwrap();
        let parts: Vec<_> = widths.iter().map(|&n| dev.upload(&vec![POISON; rows * n]).unwrap()).collect();
        k::split::split_cols(dev, &bsrc, &parts.iter().collect::<Vec<_>>(), rows, &widths).unwrap();
        for (p, (b, want)) in parts.iter().zip(&want).enumerate() {
            let got = to_f32(&dev.download::<bf16>(b).unwrap());
            assert!(got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()), "split_cols {rows}x{widths:?} part {p} on {}", dev.name());
        }
        // Back: the concatenation of the parts is the source, bit for bit.
        let mut want_back = vec![0f32; rows * w];
        split::concat_cols(&want.iter().map(|v| v.as_slice()).collect::<Vec<_>>(), &mut want_back, rows);
        assert!(want_back.iter().zip(&src32).all(|(a, b)| a.to_bits() == b.to_bits()), "CPU concat_cols ∘ split_cols {rows}x{widths:?}");
        let bdst = dev.upload(&vec![POISON; rows * w]).unwrap();
        k::split::concat_cols(dev, &parts.iter().collect::<Vec<_>>(), &bdst, rows, &widths).unwrap();
        assert_eq!(dev.download::<bf16>(&bdst).unwrap(), src, "concat_cols {rows}x{widths:?} on {}", dev.name());
        println!("split_cols / concat_cols {rows} x {widths:?}: exact");
    }
    // A part too small is refused by name.
    let b = dev.upload(&[bf16::ZERO; 8]).unwrap();
    let e = k::split::split_cols(dev, &b, &[&b, &b], 2, &[2, 3]).unwrap_err().to_string();
    assert!(e.contains("split_cols_bf16") && e.contains("src"), "{e}");
}

pub fn embedding_cases(dev: &Device) {
    let mut shapes = vec![(1, 32, 5), (7, 72, 300), (4, 1536, 10), (9, 33, 3)];
    if dev.is_gpu() {
        shapes.push((4096, 1536, 151936));
    }
    for (rows, hidden, table_rows) in shapes {
        let table = random_bf16(table_rows * hidden, (rows + hidden) as u64, 3.0);
        let ids: Vec<i32> = (0..rows).map(|r| ((r * 37 + 3) % table_rows) as i32).collect();
        let mut want = Vec::new();
        for &i in &ids {
            want.extend_from_slice(&table[i as usize * hidden..(i as usize + 1) * hidden]);
        }
        let (bi, bt) = (dev.upload(&ids).unwrap(), dev.upload(&table).unwrap());
        let bo = dev.upload(&vec![POISON; rows * hidden]).unwrap();
        k::embedding_gather(dev, &bi, &bt, &bo, rows, hidden, table_rows).unwrap();
        assert_eq!(dev.download::<bf16>(&bo).unwrap(), want, "embedding {rows}x{hidden} on {}", dev.name());
    }
    // (An id outside the table is a device assert: on a GPU that poisons the whole context, so
    // only tests/kernels_interpret.rs checks it.)
}

pub fn cast_cases(dev: &Device) {
    let specials = [
        0.0f32,
        -0.0,
        1.0,
        -1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MIN_POSITIVE,
        1e-40,
        -3e-39,
        f32::MAX,
        65504.0,
        // ties: exactly halfway between two bf16 values, round to even both ways
        f32::from_bits(0x3f80_8000),
        f32::from_bits(0x3f81_8000),
        f32::from_bits(0x3f80_8001),
        f32::from_bits(0x3f80_7fff),
    ];
    for n in [1usize, 255, 1000, 256 * 4096 + 5] {
        let mut x: Vec<f32> = random_bf16(n, n as u64, 1.0)
            .iter()
            .enumerate()
            // Full f32 mantissas (not just bf16 values) so that rounding is exercised.
            .map(|(i, v)| v.to_f32() * (1.0 + i as f32 * 1.37e-4).exp2() + i as f32 * 1e-6)
            .collect();
        for (i, s) in specials.iter().enumerate().take(n) {
            x[i] = *s;
        }
        let bx = dev.upload(&x).unwrap();
        let b16 = dev.upload(&vec![POISON; n]).unwrap();
        k::cast_f32_to_bf16(dev, &bx, &b16, n).unwrap();
        let got = dev.download::<bf16>(&b16).unwrap();
        let want: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        assert_eq!(got, want, "f32→bf16 n={n} on {}", dev.name());
        let b32 = dev.upload(&vec![f32::NAN; n]).unwrap();
        k::cast_bf16_to_f32(dev, &b16, &b32, n).unwrap();
        let back = dev.download::<f32>(&b32).unwrap();
        assert!(back.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_f32().to_bits()), "bf16→f32 n={n}");
    }
    // NaN stays NaN.
    let bx = dev.upload(&[f32::NAN, -f32::NAN]).unwrap();
    let b16 = dev.upload(&[POISON; 2]).unwrap();
    k::cast_f32_to_bf16(dev, &bx, &b16, 2).unwrap();
    assert!(dev.download::<bf16>(&b16).unwrap().iter().all(|v| v.is_nan()));
}

/// Small deterministic permutation of 0..n (physical blocks in a scrambled order).
pub fn shuffled(n: usize, seed: u64) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    let r = random_bf16(n, seed, 1.0);
    for i in (1..n).rev() {
        let j = ((r[i].to_f32() + 1.0) * 0.5 * (i + 1) as f32) as usize % (i + 1);
        v.swap(i, j);
    }
    v
}

/// A batch of chunks `(start_pos, len)` over sequences with scrambled block tables.
pub struct PagedSetup {
    pub chunks: Vec<(usize, usize)>,
    pub tables: Vec<Vec<u32>>,
    pub num_blocks: usize,
}

pub fn paged_setup(chunks: &[(usize, usize)], block_size: usize, seed: u64) -> PagedSetup {
    let need: Vec<usize> = chunks.iter().map(|&(s, l)| (s + l).div_ceil(block_size)).collect();
    let num_blocks = need.iter().sum::<usize>() + 2; // two blocks nobody owns
    let perm = shuffled(num_blocks, seed);
    let mut tables = Vec::new();
    let mut next = 0;
    for n in need {
        tables.push(perm[next..next + n].to_vec());
        next += n;
    }
    PagedSetup { chunks: chunks.to_vec(), tables, num_blocks }
}

impl PagedSetup {
    pub fn meta(&self, dev: &Device, block_size: usize) -> TokenMeta {
        let seqs: Vec<(usize, usize, &[u32])> =
            self.chunks.iter().zip(&self.tables).map(|(&(s, l), t)| (s, l, &t[..])).collect();
        TokenMeta::upload(dev, &seqs, block_size).unwrap()
    }
    pub fn queries(&self) -> Vec<(usize, usize)> {
        self.chunks.iter().enumerate().flat_map(|(s, &(start, len))| (start..start + len).map(move |p| (s, p))).collect()
    }
}

/// (chunks (start, len), block_size, kv heads, head_dim, v bias)
type KvWriteCase = (&'static [(usize, usize)], usize, usize, usize, bool);
/// (chunks (start, len), block_size, heads, kv heads, head_dim)
type AttentionCase = (&'static [(usize, usize)], usize, usize, usize, usize);

pub fn kv_cache_write_cases(dev: &Device) {
    // (chunks (start, len), block_size, kv heads, head_dim, v bias)
    let mut cases: Vec<KvWriteCase> = vec![
        (&[(0, 1)], 1, 1, 2, false),
        (&[(0, 17), (5, 3), (40, 1)], 4, 2, 12, true),
        (&[(3, 6), (0, 40)], 16, 1, 16, false),
        (&[(100, 2), (7, 9)], 7, 2, 128, true),
    ];
    if dev.is_gpu() {
        cases.push((&[(0, 1000), (3000, 64), (17, 1)], 16, 2, 128, true));
    }
    for (ci, &(chunks, bs, nkv, d, bias)) in cases.iter().enumerate() {
        let kv_dim = nkv * d;
        let setup = paged_setup(chunks, bs, ci as u64 * 10);
        let q = setup.queries();
        let t = q.len();
        let (kk, v) = (random_bf16(t * kv_dim, ci as u64 + 7, 2.0), random_bf16(t * kv_dim, ci as u64 + 8, 2.0));
        let vb = random_bf16(kv_dim, ci as u64 + 9, 0.5);
        let mut cpu = KvCache::new(1, setup.num_blocks, bs, nkv, d);
        cpu.k[0].fill(f32::NAN);
        cpu.v[0].fill(f32::NAN);
        for (i, &(s, p)) in q.iter().enumerate() {
            let row = |x: &[bf16]| to_f32(&x[i * kv_dim..(i + 1) * kv_dim]);
            let mut vr = row(&v);
            if bias {
                vr.iter_mut().zip(to_f32(&vb)).for_each(|(a, b)| *a = bf16::from_f32(*a + b).to_f32());
            }
            cpu.write(0, &setup.tables[s], p, &row(&kk), &vr);
        }
        let cache_elems = setup.num_blocks * bs * kv_dim;
        let (bkc, bvc) = (dev.upload(&vec![POISON; cache_elems]).unwrap(), dev.upload(&vec![POISON; cache_elems]).unwrap());
        let (bk, bv, bvb) = (dev.upload(&kk).unwrap(), dev.upload(&v).unwrap(), dev.upload(&vb).unwrap());
        let meta = setup.meta(dev, bs);
        k::kv_cache_write(dev, &bk, &bv, bias.then_some(&bvb), &bkc, &bvc, &meta, setup.num_blocks, kv_dim).unwrap();
        let what = format!("kv write case {ci} on {}", dev.name());
        // Written slots hold exactly the rows; every other slot still holds the poison.
        for (name, got, want) in [
            ("k", dev.download::<bf16>(&bkc).unwrap(), &cpu.k[0]),
            ("v", dev.download::<bf16>(&bvc).unwrap(), &cpu.v[0]),
        ] {
            for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
                if w.is_nan() {
                    assert_eq!(g.to_bits(), POISON.to_bits(), "{what} {name}[{i}] written outside the new tokens' slots");
                } else {
                    assert_eq!(g.to_f32(), *w, "{what} {name}[{i}]");
                }
            }
        }
    }
}

pub fn paged_attention_cases(dev: &Device) {
    // (chunks (start, len), block_size, heads, kv heads, head_dim): decode rows at long contexts
    // crossing the 256-key chunk, prefill, chunked prefill mid-block, GQA 1..6 groups, head_dim
    // 2..200 (ragged against the 128 threads).
    let mut cases: Vec<AttentionCase> = vec![
        (&[(0, 1)], 1, 1, 1, 2),
        (&[(0, 1), (16, 1), (299, 1)], 4, 6, 2, 12),
        (&[(0, 40)], 16, 4, 1, 16),
        (&[(5, 3), (0, 1), (519, 2)], 16, 2, 1, 128),
        (&[(250, 9), (12, 4)], 7, 3, 3, 200),
    ];
    if dev.is_gpu() {
        // The 1.5B model's attention: 12 query heads over 2 KV heads, head_dim 128; decode at
        // 4K context next to a prefill chunk.
        cases.push((&[(4000, 1), (100, 1), (0, 200)], 16, 12, 2, 128));
    }
    for (ci, &(chunks, bs, nh, nkv, d)) in cases.iter().enumerate() {
        let setup = paged_setup(chunks, bs, ci as u64 * 10 + 100);
        let q = setup.queries();
        let t = q.len();
        let cpu = nan_padded_cache(&setup, bs, nkv, d, ci as u64 + 100);
        let qv = random_bf16(t * nh * d, ci as u64 + 77, 2.5);
        let tables = setup.tables.clone();
        let qpos: Vec<scalerl::ops::cpu::attention::QueryPos> = q
            .iter()
            .map(|&(s, p)| scalerl::ops::cpu::attention::QueryPos { table: &tables[s], pos: p })
            .collect();
        let mut want = vec![0f32; t * nh * d];
        scalerl::ops::cpu::attention::paged_attention(&to_f32(&qv), &qpos, &cpu, 0, nh, &mut want);

        let (bkc, bvc) = (dev.upload(&to_bf16(&cpu.k[0])).unwrap(), dev.upload(&to_bf16(&cpu.v[0])).unwrap());
        let bq = dev.upload(&qv).unwrap();
        let bo = dev.upload(&vec![POISON; t * nh * d]).unwrap();
        let meta = setup.meta(dev, bs);
        k::paged_attention(dev, &bq, &bkc, &bvc, &bo, &meta, setup.num_blocks, nh, nkv, d).unwrap();
        let got = dev.download::<bf16>(&bo).unwrap();
        assert_close_bf16(&got, &want, &format!("attention case {ci} on {}", dev.name()));
        println!("paged attention case {ci} (nh{nh} nkv{nkv} d{d} bs{bs}): max abs err {:.2e}", max_abs_err(&got, &want));
    }
}

/// `gemm_bf16_nt` against the CPU matmul of the same bf16 values (f32 reference): elementwise
/// within bf16 output rounding plus an accumulation-order term, and ‖err‖/‖ref‖ ≤ 5e-3.
pub fn gemm_check(dev: &Device, m: usize, n: usize, k: usize, seed: u64) {
    let (x, w) = (random_bf16(m * k, seed, 1.0), random_bf16(n * k, seed + 1, 1.0));
    let mut want = vec![0f32; m * n];
    scalerl::ops::cpu::matmul::matmul_nt(&to_f32(&x), &to_f32(&w), &mut want, m, n, k);
    let (bx, bw) = (dev.upload(&x).unwrap(), dev.upload(&w).unwrap());
    let by = dev.upload(&vec![POISON; m * n]).unwrap();
    dev.gemm_bf16_nt(&bx, &bw, &by, m, n, k).unwrap();
    let got = dev.download::<bf16>(&by).unwrap();
    // |x|, |w| ≤ 1: a sum of k products of size ≤ 1 with random signs is ~ sqrt(k)/3.
    let scale = (k as f32).sqrt();
    let what = format!("gemm [m {m}, n {n}, k {k}] on {}", dev.name());
    for (i, (g, r)) in got.iter().zip(&want).enumerate() {
        let g = g.to_f32();
        assert!((g - r).abs() <= 8e-3 * r.abs() + 1e-4 * scale, "{what}: y[{}, {}] = {g} vs reference {r}", i / n, i % n);
    }
    let rel = rel_l2(&got, &want);
    assert!(rel <= 5e-3, "{what}: ‖err‖/‖ref‖ = {rel:.2e}");
    println!("{what}: ‖err‖/‖ref‖ {rel:.2e}, max abs err {:.2e}", max_abs_err(&got, &want));
}

pub fn gemm_cases(dev: &Device) {
    // The tiny fixture's shapes (hidden 72, kv_dim 24, intermediate 136, vocab 300), a 1.5B row.
    for (i, &(m, n, kk)) in [(1, 1, 8), (1, 64, 32), (3, 72, 72), (17, 24, 72), (40, 136, 72), (40, 72, 136), (5, 300, 72), (2, 2048, 1536)]
        .iter()
        .enumerate()
    {
        gemm_check(dev, m, n, kk, 1000 + i as u64);
    }
    if dev.is_gpu() {
        // The 1.5B model's linear layers at 64 and 4096 tokens, and a slice of its lm_head.
        for (i, &(m, n, kk)) in [(64, 2048, 1536), (64, 8960, 1536), (64, 1536, 8960), (4096, 2048, 1536), (64, 16384, 1536)]
            .iter()
            .enumerate()
        {
            gemm_check(dev, m, n, kk, 2000 + i as u64);
        }
    }
    // k = 0 is an empty sum.
    let by = dev.upload(&[POISON; 6]).unwrap();
    let e = dev.alloc(0).unwrap();
    dev.gemm_bf16_nt(&e, &e, &by, 2, 3, 0).unwrap();
    assert!(dev.download::<bf16>(&by).unwrap().iter().all(|v| v.to_f32() == 0.0), "k = 0 on {}", dev.name());
}

/// Shapes whose rows are not 16-byte multiples (odd k, odd n): valid for the API, hard for some
/// cuBLASLt kernels.
pub fn gemm_odd_cases(dev: &Device) {
    for (i, &(m, n, kk)) in [(7, 33, 17), (5, 3, 1), (9, 65, 129), (1, 151, 99)].iter().enumerate() {
        gemm_check(dev, m, n, kk, 3000 + i as u64);
    }
}

/// Errors: unknown kernels, wrong argument sizes, a buffer of another device.
pub fn launch_error_cases(dev: &Device) {
    let cfg = LaunchConfig { grid: Dim3::x(1), block: Dim3::x(32), shared_bytes: 0 };
    let err = dev.launch("no_such_kernel", cfg, &[]).unwrap_err().to_string();
    assert!(err.contains("no_such_kernel"), "{err}");
    let check_sizes = match dev {
        Device::Cuda(c) => c.kernel_params("rmsnorm_residual_bf16").unwrap().is_some(),
        _ => true,
    };
    if check_sizes {
        let err = dev.launch("rmsnorm_residual_bf16", cfg, &[Arg::I32(1)]).unwrap_err().to_string();
        assert!(err.contains("sizes"), "{err}");
    } else {
        println!("this driver cannot report kernel parameter sizes: argument check skipped");
    }
    if dev.is_gpu() {
        let host = Device::interpret().alloc(64).unwrap();
        let err = dev.launch("silu_mul_bf16", cfg, &[Arg::Buf(&host), Arg::Buf(&host), Arg::Buf(&host), Arg::I64(1), Arg::I64(1), Arg::I64(1)]);
        assert!(err.unwrap_err().to_string().contains("host"));
        let err = dev.download::<u8>(&host).unwrap_err().to_string();
        assert!(err.contains("host"), "{err}");
        // The device is still healthy after refused launches.
        dev.synchronize().unwrap();
    }
}

/// Every kernel the interpreter knows is in the fatbin, with the same parameter sizes.
pub fn fatbin_signature_cases(dev: &Device) {
    let Device::Cuda(c) = dev else { return };
    for name in scalerl::device::interpret::kernel_names() {
        let gpu = c.kernel_params(&name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let interp = scalerl::device::interpret::kernel_params(&name).unwrap();
        if let Some(gpu) = gpu {
            assert_eq!(gpu, interp, "{name}: parameter sizes GPU vs interpret");
        }
        println!("{name}: parameters {interp:?}");
    }
}

/// A layer-like sequence (rmsnorm with residual, GEMM, SwiGLU, cast) captured into a CUDA graph
/// and replayed gives the bits of the same launches issued directly, for several inputs.
pub fn graph_cases(dev: &Device) {
    let (t, h, n) = (64usize, 1536usize, 2 * 896usize);
    let w_norm = dev.upload(&random_bf16(h, 1, 1.0)).unwrap();
    let w = dev.upload(&random_bf16(n * h, 2, 0.05)).unwrap();
    let (x, res, normed) = (dev.alloc(t * h * 2).unwrap(), dev.alloc(t * h * 2).unwrap(), dev.alloc(t * h * 2).unwrap());
    let (y, act, out32) = (dev.alloc(t * n * 2).unwrap(), dev.alloc(t * n / 2 * 2).unwrap(), dev.alloc(t * n / 2 * 4).unwrap());
    // gate = y[:, ..n/2] and up = y[:, n/2..]: SwiGLU reads the fused gate|up output in place.
    let half = t * n / 2;
    let body = |d: &Device| -> anyhow::Result<()> {
        k::rmsnorm_residual(d, Some(&x), &res, &w_norm, &normed, t, h, 1e-6)?;
        d.gemm_bf16_nt(&normed, &w, &y, t, n, h)?;
        k::swiglu::silu_mul_fused(d, &y, &act, t, n / 2)?;
        k::cast_bf16_to_f32(d, &act, &out32, half)
    };
    let inputs = |seed: u64| (random_bf16(t * h, seed, 2.0), random_bf16(t * h, seed + 1, 2.0));
    let mut direct = Vec::new();
    for seed in [10u64, 20, 30] {
        let (xi, ri) = inputs(seed);
        dev.write(&x, &xi).unwrap();
        dev.write(&res, &ri).unwrap();
        body(dev).unwrap();
        direct.push((dev.download::<f32>(&out32).unwrap(), dev.download::<bf16>(&res).unwrap()));
    }
    // Capture refuses what a graph cannot hold, and leaves the device usable.
    let err = dev.capture(|d| d.alloc(16).map(|_| ())).err().expect("alloc inside capture must fail");
    assert!(format!("{err:#}").contains("capture"), "{err:#}");
    let graph = dev.capture(|d| body(d)).unwrap();
    for (i, seed) in [10u64, 20, 30].into_iter().enumerate() {
        let (xi, ri) = inputs(seed);
        dev.write(&x, &xi).unwrap();
        dev.write(&res, &ri).unwrap();
        // The inputs must be written before the replay reads them: same stream, so in order.
        graph.replay().unwrap();
        let got = (dev.download::<f32>(&out32).unwrap(), dev.download::<bf16>(&res).unwrap());
        assert!(got.0.iter().all(|v| v.is_finite()), "graph replay {i}: non-finite output");
        assert_eq!(got.0.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), direct[i].0.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "graph replay {i}: output");
        assert_eq!(got.1, direct[i].1, "graph replay {i}: residual");
    }
    // Many replays back to back, then one check: the graph is reusable.
    let (xi, ri) = inputs(10);
    for _ in 0..50 {
        dev.write(&x, &xi).unwrap();
        dev.write(&res, &ri).unwrap();
        graph.replay().unwrap();
    }
    assert_eq!(dev.download::<f32>(&out32).unwrap(), direct[0].0, "after 50 replays");
    let started = Instant::now();
    for _ in 0..100 {
        graph.replay().unwrap();
    }
    dev.synchronize().unwrap();
    let replay_us = started.elapsed().as_secs_f64() * 1e6 / 100.0;
    let started = Instant::now();
    for _ in 0..100 {
        body(dev).unwrap();
    }
    dev.synchronize().unwrap();
    let direct_us = started.elapsed().as_secs_f64() * 1e6 / 100.0;
    println!("graph (4 kernels + GEMM, t={t}): replay {replay_us:.1} µs vs direct launches {direct_us:.1} µs per step");
}
