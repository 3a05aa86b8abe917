//! Parity cases of the backward and optimizer kernels, written once for any `Device` (like
//! kernel_cases.rs, whose helpers they use): every kernel against its `ops::cpu` reference with
//! random inputs, ragged shapes, NaN-poisoned outputs (accumulated outputs start from random
//! values instead, so a skipped element fails too), unaligned views (the kernels' scalar paths),
//! and the backward GEMMs against the CPU products. tests/backward_interpret.rs runs them in
//! interpret mode on every schedule; tests/gpu.rs on a GPU, with shapes of the 1.5B model added.
//!
//! Each reduction case returns the bits of its results, so the interpret test can check that
//! they are the same on every schedule (and two calls give the same bits here already).
#![allow(dead_code)]
use crate::kernel_cases::{assert_close_bf16, max_abs_err, random_bf16, rel_l2, to_f32, POISON};
use half::bf16;
use scalerl::device::{Buffer, DType, Device};
use scalerl::ops::cpu::{adamw as cpu_adamw, embedding, linear, norm, rope, swiglu};
use scalerl::ops::cuda::{self as k, TokenMeta};
use scalerl::ops::AdamWStep;

/// Random f32 values in [-scale, scale) with full mantissas.
pub fn random_f32(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    random_bf16(n, seed, scale).iter().enumerate().map(|(i, v)| v.to_f32() * (1.0 + (i % 97) as f32 * 1.7e-3)).collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `data` uploaded at an offset of `pad` elements into a larger buffer, returned as a view: the
/// kernels' unaligned (scalar) paths.
fn upload_at<T: bytemuck::Pod>(dev: &Device, data: &[T], pad: usize, fill: T) -> (Buffer, Buffer) {
    let mut v = vec![fill; pad];
    v.extend_from_slice(data);
    let whole = dev.upload(&v).unwrap();
    let size = std::mem::size_of::<T>();
    let view = whole.view(pad * size, data.len() * size).unwrap();
    (whole, view)
}

// ---- element-wise --------------------------------------------------------------------------

pub fn add_cases(dev: &Device) {
    // The last size exceeds the 4096-block grid cap in 8-element vectors.
    let mut sizes = vec![1usize, 7, 8, 1000, 8 * 256 * 4096 + 77];
    if dev.is_gpu() {
        sizes.push(4096 * 8960);
    }
    for (i, &n) in sizes.iter().enumerate() {
        let (x, y) = (random_bf16(n, 10 + i as u64, 3.0), random_bf16(n, 20 + i as u64, 3.0));
        let want: Vec<bf16> = x.iter().zip(&y).map(|(a, b)| bf16::from_f32(a.to_f32() + b.to_f32())).collect();
        for pad in [0usize, 1] {
            let (_wx, bx) = upload_at(dev, &x, pad, POISON);
            let (_wy, by) = upload_at(dev, &y, pad * 3, POISON);
            k::add::add(dev, &bx, &by, n).unwrap();
            assert_eq!(dev.download::<bf16>(&bx).unwrap(), want, "add n={n} pad {pad} on {}", dev.name());
        }
    }
    // add_bias: (rows, cols), cols a multiple of 8 or not.
    let mut shapes = vec![(1usize, 1usize), (3, 24), (5, 72), (4, 256), (7, 13), (33, 8)];
    if dev.is_gpu() {
        shapes.push((4096, 256));
    }
    for (i, &(rows, cols)) in shapes.iter().enumerate() {
        let y = random_bf16(rows * cols, 30 + i as u64, 3.0);
        let b = random_bf16(cols, 40 + i as u64, 1.0);
        let want: Vec<bf16> = y.iter().enumerate().map(|(j, v)| bf16::from_f32(v.to_f32() + b[j % cols].to_f32())).collect();
        // The CPU reference agrees (f32 add, then one rounding).
        let mut cpu = to_f32(&y);
        linear::add_bias(&mut cpu, &to_f32(&b));
        assert_eq!(cpu.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>(), want);
        for pad in [0usize, 1] {
            let (_w, by) = upload_at(dev, &y, pad, POISON);
            let bb = dev.upload(&b).unwrap();
            k::add::add_bias(dev, &by, &bb, rows, cols).unwrap();
            assert_eq!(dev.download::<bf16>(&by).unwrap(), want, "add_bias {rows}x{cols} pad {pad} on {}", dev.name());
        }
    }
}

pub fn swiglu_backward_cases(dev: &Device) {
    let mut sizes = vec![1usize, 37, 1000, 8 * 256 * 4096 + 77];
    if dev.is_gpu() {
        sizes.push(4096 * 8960);
    }
    for n in sizes {
        let (g, u, d) = (random_bf16(n, n as u64, 6.0), random_bf16(n, n as u64 + 50, 2.0), random_bf16(n, n as u64 + 99, 2.0));
        let (mut wg, mut wu) = (vec![0f32; n], vec![0f32; n]);
        swiglu::silu_mul_backward(&to_f32(&g), &to_f32(&u), &to_f32(&d), &mut wg, &mut wu);
        for pad in [0usize, 1] {
            let bufs: Vec<(Buffer, Buffer)> = [&g, &u, &d].iter().map(|x| upload_at(dev, x, pad, POISON)).collect();
            let (_og, bdg) = upload_at(dev, &vec![POISON; n], pad, POISON);
            let (_ou, bdu) = upload_at(dev, &vec![POISON; n], pad, POISON);
            k::silu_mul_backward(dev, &bufs[0].1, &bufs[1].1, &bufs[2].1, &bdg, &bdu, n).unwrap();
            let (gg, gu) = (dev.download::<bf16>(&bdg).unwrap(), dev.download::<bf16>(&bdu).unwrap());
            let what = format!("swiglu_backward n={n} pad {pad} on {}", dev.name());
            assert_close_bf16(&gg, &wg, &format!("{what} dgate"));
            assert_close_bf16(&gu, &wu, &format!("{what} dup"));
            if pad == 0 {
                println!("{what}: max abs err dgate {:.2e}, dup {:.2e}", max_abs_err(&gg, &wg), max_abs_err(&gu, &wu));
            }
        }
    }
    // As the model calls it: gate|up and d(gate|up) as one [rows, 2·inter] matrix each; inter a
    // multiple of 8 takes the vector path (when aligned: pad 0), other widths the scalar one.
    let mut shapes = vec![(1usize, 37usize), (5, 8), (7, 96), (3, 100), (300, 1000)];
    if dev.is_gpu() {
        shapes.push((4096, 8960));
    }
    for (rows, inter) in shapes {
        let gu = random_bf16(rows * 2 * inter, (rows * inter) as u64 + 3, 6.0);
        let d = random_bf16(rows * inter, (rows * inter) as u64 + 4, 2.0);
        let mut want = vec![0f32; rows * 2 * inter];
        swiglu::silu_mul_fused_backward(&to_f32(&gu), &to_f32(&d), &mut want, rows, inter);
        for pad in [0usize, 1] {
            let (_a, bgu) = upload_at(dev, &gu, pad, POISON);
            let (_b, bd) = upload_at(dev, &d, pad, POISON);
            let (_c, bdgu) = upload_at(dev, &vec![POISON; rows * 2 * inter], pad, POISON);
            k::swiglu_backward::silu_mul_fused_backward(dev, &bgu, &bd, &bdgu, rows, inter).unwrap();
            let got = dev.download::<bf16>(&bdgu).unwrap();
            let what = format!("swiglu_backward fused {rows}x{inter} pad {pad} on {}", dev.name());
            assert_close_bf16(&got, &want, &what);
            if pad == 0 {
                println!("{what}: max abs err {:.2e}", max_abs_err(&got, &want));
            }
        }
    }
}

pub fn rope_backward_cases(dev: &Device) {
    // (sequences (start, len), heads, kv heads, head_dim): packed sequences from 0, positions up
    // to 24K (angles of 24K+ rad), d/2 odd (single pairs) and even (two pairs per step).
    let mut shapes: Vec<(Vec<(usize, usize)>, usize, usize, usize)> = vec![
        (vec![(0, 1)], 1, 1, 2),
        (vec![(0, 2), (0, 1)], 6, 2, 12),
        (vec![(0, 5)], 4, 1, 16),
        (vec![(24_000, 1), (7, 1)], 12, 2, 128),
        (vec![(0, 3), (0, 4)], 3, 3, 10),
        (vec![(100, 2)], 2, 1, 300),
    ];
    if dev.is_gpu() {
        shapes.push((vec![(0, 4000), (0, 96)], 12, 2, 128));
    }
    for (ci, (seqs, nh, nkv, d)) in shapes.into_iter().enumerate() {
        let theta = if d == 16 { 100000.0 } else { 10000.0 };
        let table = [0u32];
        let spec: Vec<(usize, usize, &[u32])> = seqs.iter().map(|&(s, l)| (s, l, &table[..])).collect();
        let meta = TokenMeta::upload(dev, &spec, 1 << 20).unwrap();
        let pos: Vec<usize> = seqs.iter().flat_map(|&(s, l)| s..s + l).collect();
        check_rope(dev, &meta, &pos, nh, nkv, d, theta, ci);
    }
}

#[allow(clippy::too_many_arguments)]
fn check_rope(dev: &Device, meta: &TokenMeta, pos: &[usize], nh: usize, nkv: usize, d: usize, theta: f32, ci: usize) {
    let t = pos.len();
    let seed = 700 + ci as u64;
    let (dq, dk) = (random_bf16(t * nh * d, seed, 2.0), random_bf16(t * nkv * d, seed + 1, 2.0));
    let (mut wq, mut wk) = (to_f32(&dq), to_f32(&dk));
    for (i, &p) in pos.iter().enumerate() {
        let (cos, sin) = rope::rope_cos_sin(p, d, theta);
        rope::rope_backward_inplace(&mut wq[i * nh * d..(i + 1) * nh * d], d, &cos, &sin);
        rope::rope_backward_inplace(&mut wk[i * nkv * d..(i + 1) * nkv * d], d, &cos, &sin);
    }
    for pad in [0usize, 1] {
        let (_a, bq) = upload_at(dev, &dq, pad, POISON);
        let (_b, bk) = upload_at(dev, &dk, pad, POISON);
        k::rope_qk_backward(dev, &bq, &bk, meta, nh, nkv, d, theta).unwrap();
        // In place: an element the kernel skipped keeps its input value and fails here.
        let what = format!("rope_backward t{t} nh{nh} nkv{nkv} d{d} pad {pad} on {}", dev.name());
        let (gq, gk) = (dev.download::<bf16>(&bq).unwrap(), dev.download::<bf16>(&bk).unwrap());
        assert_close_bf16(&gq, &wq, &format!("{what} dq"));
        assert_close_bf16(&gk, &wk, &format!("{what} dk"));
        if pad == 0 {
            println!("{what}: max abs err {:.2e}", max_abs_err(&gq, &wq).max(max_abs_err(&gk, &wk)));
        }
    }
}

// ---- reductions ------------------------------------------------------------------------------

/// Bound of an f32 sum's error: `terms` sequential roundings of a total of magnitude `abs_sum`.
fn sum_tol(terms: usize, abs_sum: f64) -> f64 {
    (terms as f64 + 2.0) * f32::EPSILON as f64 * abs_sum + 1e-30
}

pub fn bias_backward_cases(dev: &Device) -> Vec<Vec<u32>> {
    // (rows, cols): one group, many groups with a ragged last one, odd columns (scalar path).
    let mut shapes = vec![(1usize, 1usize), (3, 24), (17, 72), (40, 13), (300, 256), (1100, 6)];
    if dev.is_gpu() {
        shapes.extend([(4096, 1536), (16384, 256)]);
    }
    let mut out = Vec::new();
    for (i, &(rows, cols)) in shapes.iter().enumerate() {
        let dy = random_bf16(rows * cols, 900 + i as u64, 2.0);
        let db0 = random_f32(cols, 950 + i as u64, 1.0);
        let mut want = db0.clone();
        linear::bias_backward(&to_f32(&dy), &mut want);
        let rpg = k::colsum::rows_per_group(rows);
        let terms = rpg + rows.div_ceil(rpg) + 1;
        let mut runs = Vec::new();
        for pad in [0usize, 1] {
            let (_a, bdy) = upload_at(dev, &dy, pad, POISON);
            let (_b, bdb) = upload_at(dev, &db0, pad, f32::NAN);
            k::colsum::bias_backward(dev, &bdy, &bdb, rows, cols).unwrap();
            let got = dev.download::<f32>(&bdb).unwrap();
            let dyf = to_f32(&dy);
            let mut worst = 0f64;
            for c in 0..cols {
                let abs: f64 = (0..rows).map(|r| dyf[r * cols + c].abs() as f64).sum::<f64>() + db0[c].abs() as f64;
                let err = (got[c] as f64 - want[c] as f64).abs();
                assert!(err <= sum_tol(terms, abs), "bias_backward {rows}x{cols} pad {pad} on {}: db[{c}] = {} vs {}", dev.name(), got[c], want[c]);
                worst = worst.max(err / abs);
            }
            if pad == 0 {
                println!("bias_backward {rows}x{cols} on {}: max err / Σ|terms| {worst:.1e}", dev.name());
            }
            runs.push(bits(&got));
        }
        assert_eq!(runs[0], runs[1], "bias_backward {rows}x{cols}: aligned and unaligned runs differ");
        out.push(runs.swap_remove(0));
    }
    out
}

pub fn rmsnorm_backward_cases(dev: &Device) -> Vec<Vec<u32>> {
    // (rows, hidden): odd hidden (single columns), many blocks with a ragged last one, big rows.
    let mut shapes = vec![(1usize, 32usize), (3, 72), (7, 100), (2, 1536), (5, 33), (41, 72), (2, 4000)];
    if dev.is_gpu() {
        shapes.extend([(64, 1536), (4096, 1536)]);
    }
    let eps = 1e-6;
    let mut out = Vec::new();
    for (i, &(rows, h)) in shapes.iter().enumerate() {
        let seed = 1200 + 10 * i as u64;
        let x = random_bf16(rows * h, seed, 2.0);
        let w = random_bf16(h, seed + 1, 1.0);
        let dy = random_bf16(rows * h, seed + 2, 1.0);
        let dw0 = random_f32(h, seed + 3, 0.5);
        let (xf, wf, dyf) = (to_f32(&x), to_f32(&w), to_f32(&dy));
        let (mut want_dx, mut want_dw) = (vec![0f32; rows * h], dw0.clone());
        norm::rmsnorm_backward(&xf, &wf, eps, &dyf, &mut want_dx, &mut want_dw);
        let rpb = k::colsum::rows_per_group(rows);
        let terms = rpb + rows.div_ceil(rpb) + 1;
        let mut runs = Vec::new();
        for pad in [0usize, 1] {
            let (_a, bx) = upload_at(dev, &x, pad, POISON);
            let (_b, bdy) = upload_at(dev, &dy, pad, POISON);
            let (_c, bdx) = upload_at(dev, &vec![POISON; rows * h], pad, POISON);
            let bw = dev.upload(&w).unwrap();
            let (_d, bdw) = upload_at(dev, &dw0, pad, f32::NAN);
            k::rmsnorm_backward(dev, &bx, &bw, &bdy, &bdx, &bdw, rows, h, eps).unwrap();
            let what = format!("rmsnorm_backward {rows}x{h} pad {pad} on {}", dev.name());
            let gdx = dev.download::<bf16>(&bdx).unwrap();
            assert_close_bf16(&gdx, &want_dx, &format!("{what} dx"));
            let gdw = dev.download::<f32>(&bdw).unwrap();
            let mut worst = 0f64;
            for c in 0..h {
                // r ≤ 1/√eps could be large only for tiny rows; here |x| ~ 1, r ~ 1.
                let abs: f64 = (0..rows).map(|r| (dyf[r * h + c] * xf[r * h + c]).abs() as f64 * 2.0).sum::<f64>() + dw0[c].abs() as f64;
                let err = (gdw[c] as f64 - want_dw[c] as f64).abs();
                // + the rounding of r itself (a sum of h squares in another order).
                let r_terms = 2.0 * (h as f64).sqrt();
                assert!(err <= 4.0 * sum_tol(terms + r_terms as usize, abs), "{what}: dw[{c}] = {} vs {}", gdw[c], want_dw[c]);
                worst = worst.max(err / abs);
            }
            if pad == 0 {
                println!("{what}: dx max abs err {:.2e}, dw max err / Σ|terms| {worst:.1e}", max_abs_err(&gdx, &want_dx));
            }
            runs.push(bits(&gdw));
        }
        assert_eq!(runs[0], runs[1], "rmsnorm_backward {rows}x{h}: aligned and unaligned dw differ");
        out.push(runs.swap_remove(0));
    }
    out
}

pub fn embedding_backward_cases(dev: &Device) -> Vec<Vec<u32>> {
    // (rows, hidden, vocab): repeated tokens, a token repeated many times, odd hidden.
    let mut shapes = vec![(1usize, 32usize, 5usize), (7, 72, 300), (40, 33, 6), (9, 1536, 10), (200, 8, 3)];
    if dev.is_gpu() {
        shapes.push((4096, 1536, 151936));
    }
    let mut out = Vec::new();
    for (i, &(rows, h, vocab)) in shapes.iter().enumerate() {
        let tokens: Vec<u32> = (0..rows).map(|r| if r % 5 == 2 { 1 % vocab as u32 } else { ((r * 37 + 3) % vocab) as u32 }).collect();
        let dx = random_bf16(rows * h, 1500 + i as u64, 2.0);
        let table0 = random_f32(vocab * h, 1600 + i as u64, 1.0);
        let mut want = table0.clone();
        embedding::embedding_backward(&tokens, &to_f32(&dx), h, &mut want);
        let plan = k::EmbedGradPlan::new(dev, &tokens, vocab).unwrap();
        let mut runs = Vec::new();
        for pad in [0usize, 1] {
            let (_a, bdx) = upload_at(dev, &dx, pad, POISON);
            let (_b, bt) = upload_at(dev, &table0, pad, f32::NAN);
            k::embedding_backward(dev, &plan, &bdx, &bt, h, vocab).unwrap();
            let got = dev.download::<f32>(&bt).unwrap();
            // The same f32 additions in the same order as the CPU: the same bits; rows of tokens
            // not in the batch untouched.
            assert_eq!(bits(&got), bits(&want), "embedding_backward {rows}x{h} (vocab {vocab}) pad {pad} on {}", dev.name());
            runs.push(bits(&got));
        }
        out.push(runs.swap_remove(0));
    }
    // A token outside the vocabulary is refused on the host.
    let e = k::EmbedGradPlan::new(dev, &[1, 5], 5).err().unwrap().to_string();
    assert!(e.contains("token id 5"), "{e}");
    out
}

// ---- the optimizer ----------------------------------------------------------------------------

pub fn adamw_step_coefficients(lr: f32, t: i32) -> AdamWStep {
    let (b1, b2) = (0.9f32, 0.999f32);
    let bc1 = 1.0 - (b1 as f64).powi(t);
    let bc2 = 1.0 - (b2 as f64).powi(t);
    AdamWStep { beta1: b1, beta2: b2, eps: 1e-8, step_size: (lr as f64 / bc1) as f32, bc2_sqrt: bc2.sqrt() as f32, decay: (1.0 - lr as f64 * 0.01) as f32 }
}

/// max |a − b| / max(|b|, tiny) elementwise, and how many elements differ in their bits.
fn rel_diff(a: &[f32], b: &[f32]) -> (f64, usize) {
    let mut worst = 0f64;
    let mut differ = 0;
    for (x, y) in a.iter().zip(b) {
        assert!(x.is_finite() == y.is_finite(), "{x} vs {y}");
        if x.to_bits() != y.to_bits() {
            differ += 1;
            worst = worst.max(((x - y).abs() / y.abs().max(1e-30)) as f64);
        }
    }
    (worst, differ)
}

/// The AdamW update, the scale and Σ g² against ops::cpu::adamw on flat buffers; the fused bf16
/// copy against half's rounding bit for bit.
pub fn adamw_cases(dev: &Device) -> Vec<Vec<u32>> {
    let mut sizes = vec![1usize, 5, 1000, 4096 * 3 + 3, 300_007];
    if dev.is_gpu() {
        sizes.push(50_000_001);
    }
    let mut out = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let seed = 2000 + 10 * i as u64;
        let w = random_f32(n, seed, 1.0);
        let g = random_f32(n, seed + 1, 0.01);
        let m = random_f32(n, seed + 2, 0.001);
        let v: Vec<f32> = random_f32(n, seed + 3, 1e-4).iter().map(|x| x * x).collect();
        for (step, s) in [(0usize, adamw_step_coefficients(1e-3, 1)), (1, adamw_step_coefficients(1e-6, 7))] {
            let (mut cw, mut cm, mut cv) = (w.clone(), m.clone(), v.clone());
            cpu_adamw::adamw_update(&mut cw, &g, &mut cm, &mut cv, &s);
            for pad in [0usize, 1] {
                let (_a, bw) = upload_at(dev, &w, pad, f32::NAN);
                let (_b, bg) = upload_at(dev, &g, pad, f32::NAN);
                let (_c, bm) = upload_at(dev, &m, pad, f32::NAN);
                let (_d, bv) = upload_at(dev, &v, pad, f32::NAN);
                let (_e, b16) = upload_at(dev, &vec![POISON; n], pad, POISON);
                let fused = step == 1;
                k::adamw::adamw_update(dev, &bw, &bg, &bm, &bv, fused.then_some(&b16), n, &s).unwrap();
                let what = format!("adamw n={n} step {step} pad {pad} on {}", dev.name());
                let (gw, gm, gv) = (dev.download::<f32>(&bw).unwrap(), dev.download::<f32>(&bm).unwrap(), dev.download::<f32>(&bv).unwrap());
                for (name, got, want) in [("w", &gw, &cw), ("m", &gm, &cm), ("v", &gv, &cv)] {
                    let (worst, differ) = rel_diff(got, want);
                    // f32 math on both sides, the same operations in the same order.
                    assert!(worst <= 1e-6, "{what}: {name} max rel diff {worst:.2e}");
                    if pad == 0 && name == "w" {
                        println!("{what}: w max rel diff {worst:.1e}, {differ} of {n} elements not bit-identical to the CPU");
                    }
                }
                if fused {
                    let want16: Vec<bf16> = gw.iter().map(|&x| bf16::from_f32(x)).collect();
                    assert_eq!(dev.download::<bf16>(&b16).unwrap(), want16, "{what}: the fused bf16 copy");
                }
            }
        }
        // scale: one f32 product each, exact on both sides.
        let mut want = g.clone();
        cpu_adamw::scale(&mut want, 0.37);
        let (_a, bg) = upload_at(dev, &g, 1, f32::NAN);
        k::adamw::scale(dev, &bg, n, 0.37).unwrap();
        assert_eq!(bits(&dev.download::<f32>(&bg).unwrap()), bits(&want), "scale n={n} on {}", dev.name());
        // Σ g²: f64 on both sides, different orders; the device's bits do not depend on alignment.
        let want = cpu_adamw::sum_squares(&g);
        let mut sums = Vec::new();
        for pad in [0usize, 1] {
            let (_a, bg) = upload_at(dev, &g, pad, f32::NAN);
            sums.push(k::adamw::sum_squares(dev, &bg, n).unwrap());
        }
        let rel = (sums[0] - want).abs() / want;
        assert!(rel <= 1e-12, "sum_squares n={n} on {}: {} vs {want} (rel {rel:.1e})", dev.name(), sums[0]);
        println!("sum_squares n={n} on {}: rel err vs cpu {rel:.1e}", dev.name());
        assert_eq!(sums[0].to_bits(), sums[1].to_bits(), "sum_squares n={n}: aligned and unaligned differ");
        out.push(vec![sums[0].to_bits() as u32, (sums[0].to_bits() >> 32) as u32]);
    }
    // A non-finite gradient makes the sum non-finite: the step is skipped on the host.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut g = random_f32(5000, 7, 1.0);
        g[4321] = bad;
        let s = k::adamw::sum_squares(dev, &dev.upload(&g).unwrap(), g.len()).unwrap();
        assert!(!s.is_finite(), "sum_squares with a {bad} on {}: {s}", dev.name());
    }
    // The largest finite gradients do not overflow the f64 sum.
    let s = k::adamw::sum_squares(dev, &dev.upload(&[f32::MAX; 4097]).unwrap(), 4097).unwrap();
    assert!(s.is_finite() && s > 1e80, "{s}");
    out
}

/// The master → bf16 weight sync (`cast_f32_to_bf16`): half's rounding bit for bit, on the
/// 4-wide path (aligned, past the grid cap) and the scalar one (an unaligned view).
pub fn master_cast_cases(dev: &Device) {
    let mut sizes = vec![3usize, 1001, 4 * 256 * 4096 + 7];
    if dev.is_gpu() {
        sizes.push(100_000_003);
    }
    for n in sizes {
        let mut x = random_f32(n, n as u64, 3.0);
        let specials = [0.0f32, -0.0, f32::INFINITY, f32::NEG_INFINITY, 1e-40, f32::MAX, f32::from_bits(0x3f80_8000), f32::from_bits(0x3f81_8000)];
        for (i, v) in specials.iter().enumerate().take(n) {
            x[i] = *v;
        }
        let want: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        for pad in [0usize, 1] {
            let (_a, bx) = upload_at(dev, &x, pad, f32::NAN);
            let (_b, b16) = upload_at(dev, &vec![POISON; n], pad * 3, POISON);
            k::cast_f32_to_bf16(dev, &bx, &b16, n).unwrap();
            assert!(dev.download::<bf16>(&b16).unwrap() == want, "cast_f32_to_bf16 n={n} pad {pad} on {}", dev.name());
        }
    }
}

// ---- the backward GEMMs ------------------------------------------------------------------------

/// `gemm_bf16_nn` (dx = dy·w) and `gemm_bf16_tn_acc_f32` (dw += dyᵀ·x, twice: two micro-batches)
/// against the CPU products of the same bf16 values; `pad` puts every operand at an odd element
/// offset (2- and 4-byte aligned pointers).
pub fn gemm_backward_check(dev: &Device, m: usize, n: usize, kk: usize, seed: u64, pad: usize) {
    let (dy, w, x) = (random_bf16(m * n, seed, 1.0), random_bf16(n * kk, seed + 1, 1.0), random_bf16(m * kk, seed + 2, 1.0));
    let dy2 = random_bf16(m * n, seed + 3, 1.0);
    let what = format!("[m {m}, n {n}, k {kk}] pad {pad} on {}", dev.name());
    // NN.
    let mut want = vec![0f32; m * kk];
    linear::linear_backward_input(&to_f32(&dy), &to_f32(&w), &mut want, m, n, kk);
    let (_a, bdy) = upload_at(dev, &dy, pad, POISON);
    let (_b, bw) = upload_at(dev, &w, pad, POISON);
    let (_c, bdx) = upload_at(dev, &vec![POISON; m * kk], pad, POISON);
    dev.gemm_bf16_nn(&bdy, &bw, &bdx, m, n, kk).unwrap();
    let got = dev.download::<bf16>(&bdx).unwrap();
    let scale = (n as f32).sqrt();
    for (i, (g, r)) in got.iter().zip(&want).enumerate() {
        let g = g.to_f32();
        assert!((g - r).abs() <= 8e-3 * r.abs() + 1e-4 * scale, "gemm_bf16_nn {what}: dx[{}, {}] = {g} vs {r}", i / kk, i % kk);
    }
    let rel = rel_l2(&got, &want);
    assert!(rel <= 5e-3, "gemm_bf16_nn {what}: ‖err‖/‖ref‖ = {rel:.2e}");
    // TN, accumulated twice into a random f32 start.
    let dw0 = random_f32(n * kk, seed + 4, 1.0);
    let mut want = dw0.clone();
    linear::linear_backward_weight(&to_f32(&dy), &to_f32(&x), &mut want, m, n, kk);
    linear::linear_backward_weight(&to_f32(&dy2), &to_f32(&x), &mut want, m, n, kk);
    let (_d, bx) = upload_at(dev, &x, pad, POISON);
    let (_e, bdy2) = upload_at(dev, &dy2, pad, POISON);
    let (_f, bdw) = upload_at(dev, &dw0, pad, f32::NAN);
    dev.gemm_bf16_tn_acc_f32(&bdy, &bx, &bdw, m, n, kk).unwrap();
    dev.gemm_bf16_tn_acc_f32(&bdy2, &bx, &bdw, m, n, kk).unwrap();
    let got = dev.download::<f32>(&bdw).unwrap();
    // f32 output: only accumulation order differs (|terms| ≤ 1, 2m of them).
    let tol = 2.0 * (2 * m) as f32 * f32::EPSILON * 4.0 + 1e-6;
    for (i, (g, r)) in got.iter().zip(&want).enumerate() {
        assert!((g - r).abs() <= tol * (1.0 + r.abs()), "gemm_bf16_tn_acc_f32 {what}: dw[{}, {}] = {g} vs {r}", i / kk, i % kk);
    }
    if pad == 0 {
        println!("backward gemms {what}: nn ‖err‖/‖ref‖ {rel:.2e}; tn max abs err {:.2e}", got.iter().zip(&want).map(|(g, r)| (g - r).abs()).fold(0f32, f32::max));
    }
}

pub fn gemm_backward_cases(dev: &Device) {
    // The tiny fixture's layers (hidden 72, kv 24, intermediate 136), odd shapes, a 1.5B row.
    let mut shapes = vec![(1usize, 1usize, 8usize), (3, 72, 72), (17, 24, 72), (40, 136, 72), (40, 72, 136), (7, 33, 17), (5, 3, 1), (9, 65, 129), (2, 256, 1536)];
    if dev.is_gpu() {
        // 1.5B at 64 and 4096 tokens: q/o (1536²), k/v (256 × 1536), gate/up and down.
        shapes.extend([(64, 1536, 1536), (4096, 256, 1536), (4096, 8960, 1536), (4096, 1536, 8960)]);
    }
    for (i, &(m, n, kk)) in shapes.iter().enumerate() {
        for pad in [0usize, 1] {
            gemm_backward_check(dev, m, n, kk, 4000 + 10 * i as u64, pad);
        }
    }
    // Empty sums: n = 0 zeroes dx; m = 0 leaves dw alone.
    let e = dev.alloc(0).unwrap();
    let bdx = dev.upload(&[POISON; 6]).unwrap();
    dev.gemm_bf16_nn(&e, &e, &bdx, 2, 0, 3).unwrap();
    assert!(dev.download::<bf16>(&bdx).unwrap().iter().all(|v| v.to_f32() == 0.0));
    let bdw = dev.upload(&[1.5f32; 6]).unwrap();
    dev.gemm_bf16_tn_acc_f32(&e, &e, &bdw, 0, 2, 3).unwrap();
    assert_eq!(dev.download::<f32>(&bdw).unwrap(), vec![1.5f32; 6]);
}

/// Buffers of the wrong type or size are refused with the op and the buffer's name.
pub fn backward_launch_error_cases(dev: &Device) {
    let b16 = dev.alloc(64 * 2).unwrap().typed(DType::Bf16);
    let f32b = dev.alloc(64 * 4).unwrap().typed(DType::F32);
    let small = dev.alloc(8).unwrap();
    // A bf16 buffer where the f32 gradient goes.
    let e = k::colsum::bias_backward(dev, &b16, &b16, 4, 8).unwrap_err().to_string();
    assert!(e.contains("`db`") && e.contains("bf16") && e.contains("f32"), "{e}");
    let e = dev.gemm_bf16_tn_acc_f32(&b16, &b16, &b16, 2, 2, 2).unwrap_err().to_string();
    assert!(e.contains("dw") && e.contains("bf16"), "{e}");
    // An f32 buffer where bf16 activations go.
    let e = k::add::add(dev, &f32b, &b16, 8).unwrap_err().to_string();
    assert!(e.contains("`x`") && e.contains("f32"), "{e}");
    let e = dev.gemm_bf16_nn(&b16, &f32b, &b16, 2, 2, 2).unwrap_err().to_string();
    assert!(e.contains("w") && e.contains("f32"), "{e}");
    let e = k::rmsnorm_backward(dev, &b16, &b16, &b16, &b16, &b16, 2, 8, 1e-6).unwrap_err().to_string();
    assert!(e.contains("`dw`"), "{e}");
    let e = k::adamw::adamw_update(dev, &f32b, &f32b, &b16, &f32b, None, 8, &adamw_step_coefficients(1e-3, 1)).unwrap_err().to_string();
    assert!(e.contains("first moments"), "{e}");
    // Too small.
    let e = k::silu_mul_backward(dev, &b16, &b16, &b16, &small, &b16, 64).unwrap_err().to_string();
    assert!(e.contains("`dgate`") && e.contains("bytes"), "{e}");
    let e = k::rmsnorm_backward(dev, &b16, &b16, &b16, &b16, &f32b, 1, 9000, 1e-6).unwrap_err().to_string();
    assert!(e.contains("hidden"), "{e}");
}
