//! Interpret-mode parity of every CUDA kernel against the CPU reference: random inputs, several
//! shapes including ragged ones, outputs poisoned (NaN) before the launch so an unwritten element
//! fails, and every thread schedule. CI also runs this file under AddressSanitizer.
use half::bf16;
use scalerl::backend::cpu::ops;
use scalerl::device::{Arg, Device, Dim3, LaunchConfig, Schedule};

const SCHEDULES: [Schedule; 4] = [Schedule::Sequential, Schedule::Reverse, Schedule::Random(1), Schedule::Random(2)];
const POISON: bf16 = bf16::from_bits(0x7fc1); // a NaN: any element left unwritten shows

fn random_bf16(n: usize, seed: u64, scale: f32) -> Vec<bf16> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            bf16::from_f32(((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale)
        })
        .collect()
}

fn to_f32(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

/// |a − b| ≤ atol + rtol·|b| elementwise, with bf16's 8-bit mantissa in mind.
fn assert_close_bf16(got: &[bf16], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let g = g.to_f32();
        assert!((g - w).abs() <= 1e-2 + 1e-2 * w.abs(), "{what}[{i}]: kernel {g} vs reference {w}");
    }
}

#[test]
fn kernels_are_compiled_in() {
    let names = scalerl::device::interpret::kernel_names();
    assert!(names.iter().any(|n| n == "rmsnorm_residual_bf16"), "{names:?}");
}

#[test]
fn rmsnorm_residual_matches_cpu() {
    for (rows, hidden) in [(1, 32), (3, 72), (7, 100), (2, 1536), (5, 33)] {
        for (si, &schedule) in SCHEDULES.iter().enumerate() {
            let dev = Device::Interpret { schedule };
            let seed = (rows * 1000 + hidden + si) as u64;
            let x = random_bf16(rows * hidden, seed, 2.0);
            let res = random_bf16(rows * hidden, seed + 1, 2.0);
            let w = random_bf16(hidden, seed + 2, 1.0);
            let eps = 1e-6;
            // CPU reference on the bf16-rounded sum (the kernel rounds it too).
            let sum: Vec<f32> = to_f32(&x).iter().zip(to_f32(&res)).map(|(a, b)| bf16::from_f32(a + b).to_f32()).collect();
            let mut want = vec![0f32; rows * hidden];
            ops::rmsnorm(&sum, &to_f32(&w), eps, &mut want);

            let (bx, bres, bw) = (dev.upload(&x).unwrap(), dev.upload(&res).unwrap(), dev.upload(&w).unwrap());
            let bout = dev.upload(&vec![POISON; rows * hidden]).unwrap();
            let cfg = LaunchConfig { grid: Dim3::x(rows as u32), block: Dim3::x(256), shared_bytes: 0 };
            let args = [Arg::Buf(&bx), Arg::Buf(&bres), Arg::Buf(&bw), Arg::Buf(&bout), Arg::I32(hidden as i32), Arg::F32(eps)];
            dev.launch("rmsnorm_residual_bf16", cfg, &args).unwrap();
            let what = format!("rmsnorm {rows}x{hidden} {schedule:?}");
            assert_close_bf16(&dev.download::<bf16>(&bout).unwrap(), &want, &what);
            let new_res = dev.download::<bf16>(&bres).unwrap();
            assert_eq!(to_f32(&new_res), sum, "{what}: residual");

            // Without x (first layer): the residual is only normalised, not changed.
            let bres2 = dev.upload(&res).unwrap();
            let bout2 = dev.upload(&vec![POISON; rows * hidden]).unwrap();
            let args = [Arg::U64(0), Arg::Buf(&bres2), Arg::Buf(&bw), Arg::Buf(&bout2), Arg::I32(hidden as i32), Arg::F32(eps)];
            dev.launch("rmsnorm_residual_bf16", cfg, &args).unwrap();
            ops::rmsnorm(&to_f32(&res), &to_f32(&w), eps, &mut want);
            assert_close_bf16(&dev.download::<bf16>(&bout2).unwrap(), &want, &format!("{what} without x"));
            assert_eq!(dev.download::<bf16>(&bres2).unwrap(), res);
        }
    }
}

#[test]
fn launch_errors_are_clear() {
    let dev = Device::interpret();
    let cfg = LaunchConfig { grid: Dim3::x(1), block: Dim3::x(32), shared_bytes: 0 };
    let err = dev.launch("no_such_kernel", cfg, &[]).unwrap_err().to_string();
    assert!(err.contains("no_such_kernel"), "{err}");
    let err = dev.launch("rmsnorm_residual_bf16", cfg, &[Arg::I32(1)]).unwrap_err().to_string();
    assert!(err.contains("sizes"), "{err}");
}

// ---- the kernels of the CUDA backend's forward (launched through backend::cuda::kernels, the
// same launchers the model uses) -------------------------------------------------------------

use scalerl::backend::cuda::kernels::{self as k, TokenMeta};
use scalerl::kv::KvCache;

fn max_abs_err(got: &[bf16], want: &[f32]) -> f32 {
    got.iter().zip(want).fold(0f32, |m, (g, w)| m.max((g.to_f32() - w).abs()))
}

/// Small deterministic permutation of 0..n (physical blocks in a scrambled order).
fn shuffled(n: usize, seed: u64) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    let r = random_bf16(n, seed, 1.0);
    for i in (1..n).rev() {
        let j = ((r[i].to_f32() + 1.0) * 0.5 * (i + 1) as f32) as usize % (i + 1);
        v.swap(i, j);
    }
    v
}

#[test]
fn new_kernels_are_compiled_in() {
    let names = scalerl::device::interpret::kernel_names();
    for n in [
        "rope_qk_bf16",
        "silu_mul_bf16",
        "embedding_gather_bf16",
        "kv_cache_write_bf16",
        "cast_f32_to_bf16",
        "cast_bf16_to_f32",
        "paged_attention_bf16",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
}

#[test]
fn rope_qk_with_bias_matches_cpu() {
    // (tokens, heads, kv heads, head_dim, bias)
    for (t, nh, nkv, d, bias) in
        [(1, 1, 1, 2, false), (3, 6, 2, 12, true), (5, 4, 1, 16, false), (2, 12, 2, 128, true), (7, 3, 3, 10, true), (2, 2, 1, 300, true)]
    {
        let theta = if d == 16 { 100000.0 } else { 10000.0 };
        let mut worst = 0f32;
        for (si, &schedule) in SCHEDULES.iter().enumerate() {
            let dev = Device::Interpret { schedule };
            let seed = (t * 100 + nh * 10 + d + si) as u64;
            let (q, kk) = (random_bf16(t * nh * d, seed, 2.0), random_bf16(t * nkv * d, seed + 1, 2.0));
            let (qb, kb) = (random_bf16(nh * d, seed + 2, 0.5), random_bf16(nkv * d, seed + 3, 0.5));
            // Positions: ragged, up to the 24K context, not sorted; 0 is in the first shape only.
            let pos: Vec<usize> =
                (0..t).map(|i| if t == 1 { 0 } else { (i * 7919 + seed as usize * 31) % 24576 + 1 }).collect();
            let mut want_q = to_f32(&q);
            let mut want_k = to_f32(&kk);
            for i in 0..t {
                let (cos, sin) = ops::rope_cos_sin(pos[i], d, theta);
                let (qr, kr) = (&mut want_q[i * nh * d..(i + 1) * nh * d], &mut want_k[i * nkv * d..(i + 1) * nkv * d]);
                if bias {
                    qr.iter_mut().zip(to_f32(&qb)).for_each(|(a, b)| *a += b);
                    kr.iter_mut().zip(to_f32(&kb)).for_each(|(a, b)| *a += b);
                }
                ops::rope_inplace(qr, d, &cos, &sin);
                ops::rope_inplace(kr, d, &cos, &sin);
            }
            let seqs: Vec<(usize, usize, &[u32])> = pos.iter().map(|&p| (p, 1, &[0u32][..])).collect();
            // A table is irrelevant to RoPE; block_size = 1<<20 makes any position "covered".
            let meta = TokenMeta::upload(&dev, &seqs, 1 << 20).unwrap();
            let (bq, bk) = (dev.upload(&q).unwrap(), dev.upload(&kk).unwrap());
            let (bqb, bkb) = (dev.upload(&qb).unwrap(), dev.upload(&kb).unwrap());
            let (oq, ok) = if bias { (Some(&bqb), Some(&bkb)) } else { (None, None) };
            k::rope_qk(&dev, &bq, &bk, oq, ok, &meta, nh, nkv, d, theta).unwrap();
            let what = format!("rope t{t} nh{nh} nkv{nkv} d{d} bias {bias} {schedule:?}");
            // In place: an element the kernel skipped keeps its input value and fails here.
            let (gq, gk) = (dev.download::<bf16>(&bq).unwrap(), dev.download::<bf16>(&bk).unwrap());
            assert_close_bf16(&gq, &want_q, &format!("{what} q"));
            assert_close_bf16(&gk, &want_k, &format!("{what} k"));
            worst = worst.max(max_abs_err(&gq, &want_q)).max(max_abs_err(&gk, &want_k));
        }
        println!("rope t{t} nh{nh} nkv{nkv} d{d}: max abs err {worst:.2e}");
    }
}

#[test]
fn silu_mul_matches_cpu() {
    // The last size exceeds the 4096-block grid cap: the grid-stride loop must cover it.
    for n in [1usize, 37, 1000, 256 * 4096 + 77] {
        let schedules: &[Schedule] = if n > 100_000 { &SCHEDULES[..2] } else { &SCHEDULES };
        for (si, &schedule) in schedules.iter().enumerate() {
            let dev = Device::Interpret { schedule };
            let (g, u) = (random_bf16(n, n as u64 + si as u64, 6.0), random_bf16(n, n as u64 + 50, 2.0));
            let mut want = to_f32(&g);
            ops::silu_mul_inplace(&mut want, &to_f32(&u));
            let (bg, bu) = (dev.upload(&g).unwrap(), dev.upload(&u).unwrap());
            let bo = dev.upload(&vec![POISON; n]).unwrap();
            k::silu_mul(&dev, &bg, &bu, &bo, n).unwrap();
            let got = dev.download::<bf16>(&bo).unwrap();
            assert_close_bf16(&got, &want, &format!("silu_mul n={n} {schedule:?}"));
            if si == 0 {
                println!("silu_mul n={n}: max abs err {:.2e}", max_abs_err(&got, &want));
            }
            // In place (out = gate), as the model calls it.
            k::silu_mul(&dev, &bg, &bu, &bg, n).unwrap();
            assert_eq!(dev.download::<bf16>(&bg).unwrap(), got, "silu_mul n={n} in place");
        }
    }
}

#[test]
fn embedding_gather_matches_cpu() {
    for (rows, hidden, table_rows) in [(1, 32, 5), (7, 72, 300), (4, 1536, 10), (9, 33, 3)] {
        for (si, &schedule) in SCHEDULES.iter().enumerate() {
            let dev = Device::Interpret { schedule };
            let table = random_bf16(table_rows * hidden, (rows + hidden + si) as u64, 3.0);
            let ids: Vec<i32> = (0..rows).map(|r| ((r * 37 + si * 5 + 3) % table_rows) as i32).collect();
            let mut want = Vec::new();
            for &i in &ids {
                want.extend_from_slice(&table[i as usize * hidden..(i as usize + 1) * hidden]);
            }
            let (bi, bt) = (dev.upload(&ids).unwrap(), dev.upload(&table).unwrap());
            let bo = dev.upload(&vec![POISON; rows * hidden]).unwrap();
            k::embedding_gather(&dev, &bi, &bt, &bo, rows, hidden, table_rows).unwrap();
            assert_eq!(dev.download::<bf16>(&bo).unwrap(), want, "embedding {rows}x{hidden} {schedule:?}");
        }
    }
    // An id outside the table is a device assert (a clear launch error), not a wild read.
    let dev = Device::interpret();
    let (bi, bt) = (dev.upload(&[3i32]).unwrap(), dev.upload(&random_bf16(3 * 8, 1, 1.0)).unwrap());
    let bo = dev.alloc(16).unwrap();
    let err = k::embedding_gather(&dev, &bi, &bt, &bo, 1, 8, 3).unwrap_err().to_string();
    assert!(err.contains("assert"), "{err}");
}

#[test]
fn casts_round_to_nearest_even_like_half() {
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
        let schedules: &[Schedule] = if n > 100_000 { &SCHEDULES[..2] } else { &SCHEDULES };
        for (si, &schedule) in schedules.iter().enumerate() {
            let dev = Device::Interpret { schedule };
            let mut x: Vec<f32> = random_bf16(n, n as u64 + si as u64, 1.0)
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
            k::cast_f32_to_bf16(&dev, &bx, &b16, n).unwrap();
            let got = dev.download::<bf16>(&b16).unwrap();
            let want: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
            assert_eq!(got, want, "f32→bf16 n={n} {schedule:?}");
            let b32 = dev.upload(&vec![f32::NAN; n]).unwrap();
            k::cast_bf16_to_f32(&dev, &b16, &b32, n).unwrap();
            let back = dev.download::<f32>(&b32).unwrap();
            assert!(
                back.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_f32().to_bits()),
                "bf16→f32 n={n} {schedule:?}"
            );
        }
    }
    // NaN stays NaN.
    let dev = Device::interpret();
    let bx = dev.upload(&[f32::NAN, -f32::NAN]).unwrap();
    let b16 = dev.upload(&[POISON; 2]).unwrap();
    k::cast_f32_to_bf16(&dev, &bx, &b16, 2).unwrap();
    assert!(dev.download::<bf16>(&b16).unwrap().iter().all(|v| v.is_nan()));
}

/// A batch of chunks `(start_pos, len)` over sequences with scrambled block tables.
struct PagedSetup {
    chunks: Vec<(usize, usize)>,
    tables: Vec<Vec<u32>>,
    num_blocks: usize,
}

fn paged_setup(chunks: &[(usize, usize)], block_size: usize, seed: u64) -> PagedSetup {
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
    fn meta(&self, dev: &Device, block_size: usize) -> TokenMeta {
        let seqs: Vec<(usize, usize, &[u32])> =
            self.chunks.iter().zip(&self.tables).map(|(&(s, l), t)| (s, l, &t[..])).collect();
        TokenMeta::upload(dev, &seqs, block_size).unwrap()
    }
    fn queries(&self) -> Vec<(usize, usize)> {
        // (sequence, position) of each token, in batch order
        self.chunks
            .iter()
            .enumerate()
            .flat_map(|(s, &(start, len))| (start..start + len).map(move |p| (s, p)))
            .collect()
    }
}

#[test]
fn kv_cache_write_matches_cpu() {
    // (chunks (start, len), block_size, kv heads, head_dim, v bias)
    let cases: [(&[(usize, usize)], usize, usize, usize, bool); 4] = [
        (&[(0, 1)], 1, 1, 2, false),
        (&[(0, 17), (5, 3), (40, 1)], 4, 2, 12, true),
        (&[(3, 6), (0, 40)], 16, 1, 16, false),
        (&[(100, 2), (7, 9)], 7, 2, 128, true),
    ];
    for (ci, &(chunks, bs, nkv, d, bias)) in cases.iter().enumerate() {
        let kv_dim = nkv * d;
        for (si, &schedule) in SCHEDULES.iter().enumerate() {
            let dev = Device::Interpret { schedule };
            let setup = paged_setup(chunks, bs, ci as u64 * 10 + si as u64);
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
            let (bkc, bvc) =
                (dev.upload(&vec![POISON; cache_elems]).unwrap(), dev.upload(&vec![POISON; cache_elems]).unwrap());
            let (bk, bv, bvb) = (dev.upload(&kk).unwrap(), dev.upload(&v).unwrap(), dev.upload(&vb).unwrap());
            let meta = setup.meta(&dev, bs);
            k::kv_cache_write(&dev, &bk, &bv, bias.then_some(&bvb), &bkc, &bvc, &meta, setup.num_blocks, kv_dim)
                .unwrap();
            let what = format!("kv write case {ci} {schedule:?}");
            // Written slots hold exactly the rows; every other slot still holds the poison.
            for (name, got, want) in [
                ("k", dev.download::<bf16>(&bkc).unwrap(), &cpu.k[0]),
                ("v", dev.download::<bf16>(&bvc).unwrap(), &cpu.v[0]),
            ] {
                for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
                    if w.is_nan() {
                        assert_eq!(
                            g.to_bits(),
                            POISON.to_bits(),
                            "{what} {name}[{i}] written outside the new tokens' slots"
                        );
                    } else {
                        assert_eq!(g.to_f32(), *w, "{what} {name}[{i}]");
                    }
                }
            }
        }
    }
}

#[test]
fn paged_attention_matches_cpu() {
    // (chunks (start, len), block_size, heads, kv heads, head_dim). Decode rows (len 1 at long
    // contexts crossing the 256-key chunk), prefill, chunked prefill mid-block, GQA 1..6 groups,
    // head_dim 2..200 (ragged against the 128 threads).
    let cases: [(&[(usize, usize)], usize, usize, usize, usize); 5] = [
        (&[(0, 1)], 1, 1, 1, 2),
        (&[(0, 1), (16, 1), (299, 1)], 4, 6, 2, 12),
        (&[(0, 40)], 16, 4, 1, 16),
        (&[(5, 3), (0, 1), (519, 2)], 16, 2, 1, 128),
        (&[(250, 9), (12, 4)], 7, 3, 3, 200),
    ];
    for (ci, &(chunks, bs, nh, nkv, d)) in cases.iter().enumerate() {
        let kv_dim = nkv * d;
        let mut worst = 0f32;
        for (si, &schedule) in SCHEDULES.iter().enumerate() {
            if ci == 3 && si >= 2 {
                continue; // the long contexts at d = 128 are the slowest case: two schedules
            }
            let dev = Device::Interpret { schedule };
            let setup = paged_setup(chunks, bs, ci as u64 * 10 + si as u64 + 100);
            let q = setup.queries();
            let t = q.len();
            // The cache: random bf16 K/V at every position a query may see (0..=p of its
            // sequence), NaN everywhere else, so a read past the causal limit or from a wrong
            // block poisons the output.
            let mut cpu = KvCache::new(1, setup.num_blocks, bs, nkv, d);
            cpu.k[0].fill(f32::NAN);
            cpu.v[0].fill(f32::NAN);
            for (s, &(start, len)) in setup.chunks.iter().enumerate() {
                for p in 0..start + len {
                    let seed = (ci * 1_000_000 + s * 10_000 + p) as u64;
                    let (kr, vr) =
                        (to_f32(&random_bf16(kv_dim, seed, 1.0)), to_f32(&random_bf16(kv_dim, seed + 5000, 1.0)));
                    cpu.write(0, &setup.tables[s], p, &kr, &vr);
                }
            }
            let qv = random_bf16(t * nh * d, ci as u64 + 77, 2.5);
            let tables = setup.tables.clone();
            let qpos: Vec<scalerl::backend::cpu::attention::QueryPos> = q
                .iter()
                .map(|&(s, p)| scalerl::backend::cpu::attention::QueryPos { table: &tables[s], pos: p })
                .collect();
            let mut want = vec![0f32; t * nh * d];
            scalerl::backend::cpu::attention::paged_attention(&to_f32(&qv), &qpos, &cpu, 0, nh, &mut want);

            let c16 = |x: &[f32]| -> Vec<bf16> { x.iter().map(|&v| bf16::from_f32(v)).collect() };
            let (bkc, bvc) = (dev.upload(&c16(&cpu.k[0])).unwrap(), dev.upload(&c16(&cpu.v[0])).unwrap());
            let bq = dev.upload(&qv).unwrap();
            let bo = dev.upload(&vec![POISON; t * nh * d]).unwrap();
            let meta = setup.meta(&dev, bs);
            k::paged_attention(&dev, &bq, &bkc, &bvc, &bo, &meta, setup.num_blocks, nh, nkv, d).unwrap();
            let got = dev.download::<bf16>(&bo).unwrap();
            assert_close_bf16(&got, &want, &format!("attention case {ci} {schedule:?}"));
            worst = worst.max(max_abs_err(&got, &want));
        }
        println!("paged attention case {ci} (nh{nh} nkv{nkv} d{d} bs{bs}): max abs err {worst:.2e}");
    }
}

#[test]
fn launchers_refuse_bad_shapes() {
    let dev = Device::interpret();
    let setup = paged_setup(&[(0, 5)], 4, 1);
    let meta = setup.meta(&dev, 4);
    let small = dev.alloc(8).unwrap();
    let q = dev.alloc(5 * 2 * 8 * 2).unwrap();
    // A cache too small for the table's blocks.
    let err =
        k::paged_attention(&dev, &q, &small, &small, &q, &meta, setup.num_blocks, 2, 1, 8).unwrap_err().to_string();
    assert!(err.contains("k_cache"), "{err}");
    let err = k::paged_attention(&dev, &q, &small, &small, &q, &meta, 1, 2, 1, 8).unwrap_err().to_string();
    assert!(err.contains("block"), "{err}");
    // A table that does not cover the chunk.
    let e = TokenMeta::upload(&dev, &[(3, 4, &[0u32][..])], 4).err().unwrap().to_string();
    assert!(e.contains("covers"), "{e}");
}
