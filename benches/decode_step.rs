//! One decode step of a DeepSeek-R1-Distill-Qwen-1.5B-shaped model with random weights (no
//! download: the shapes come from tests/fixtures/r1-distill-1.5b-config), at batch 1, 32 and 128
//! × context 1K, 8K, 16K and 24K on the GPU, split into the forward (embedding → final norm, the
//! device's time), sampling (lm_head, the logits to the host, the draw: temperature 0.6, top-p
//! 0.95 as DeepScaleR samples) and the host's issue time of the forward (launches, metadata
//! uploads, allocations: the GPU idles whenever this exceeds the forward), next to the step's HBM
//! roofline: the bytes a decode step must read — every weight but the embedding table (of which
//! it reads `batch` rows) plus every sequence's K and V of every layer — over the
//! device-to-device copy bandwidth measured in the same run. The engine's own bookkeeping around
//! `Transformer::step` (scheduling, block tables) is not in it. `engine step` is the same step as
//! the engine runs it, `Transformer::step`: on the CUDA backend the bucket's CUDA graph replayed
//! on its persistent buffers, with the metadata writes and the one download of the results
//! (src/ops/cuda/decode_graphs.rs), against `step` = the per-step path's forward + sample.
//!
//! Napkin math (R1-Distill-1.5B: 28 layers, hidden 1536, 12 query / 2 KV heads of 128, MLP 8960,
//! vocabulary 151,936 untied; bf16):
//!   weights read per step: 1,543,714,304 parameters (1.777 B less the 233 M embedding table)
//!     = 3.087 GB;
//!   K + V per token: 28 layers × 2 × 256 × 2 B = 28,672 B, so per step batch × context × 28.7 KB.
//!   Predicted roofline per step at H100 SXM's 3.35 TB/s nominal:
//!     batch   1 ×  8K: 3.087 + 0.235 GB =  3.32 GB →  0.99 ms
//!     batch   1 × 24K: 3.087 + 0.705 GB =  3.79 GB →  1.13 ms
//!     batch 128 ×  8K: 3.087 + 30.07 GB = 33.16 GB →  9.90 ms
//!     batch 128 × 24K: 3.087 + 90.20 GB = 93.29 GB → 27.85 ms
//!   The issue's targets are steps within 1.25x (batch 128 × 8K) and 1.5x (batch 1) of the
//!   roofline: the step must then move its bytes at ≥ 80% (1/1.25) and ≥ 67% (1/1.5) of the
//!   bandwidth the roofline assumes, i.e. 12.4 ms at batch 128 × 8K and 1.49 ms at batch 1 × 8K
//!   against 3.35 TB/s (a device-to-device copy reaches less than nominal, so the table's
//!   roofline, taken from this run's copy, is the fairer bar). Host work per step (issue and
//!   sampling's host part) should stay under 5% of the step.
//!   Sampling runs on the device (kernels/sample.cu: the lm_head's bf16 logits are read where
//!   they are, and only a token id and its log-prob per row come back); its bit-exact integer
//!   draw is compute-bound, ~60-80 µs predicted for a batch up to the SM count (the kernel's
//!   header), beside ~0.14 ms to read the lm_head (467 MB) and ~0.9 ms for all the weights.
//!   Batch 128 × 24K needs 90 GB of K/V, more than an H100 holds: the blocks of each context wrap
//!   around a pool (KV_POOL_GIB, 32 GiB by default, at most half the GPU's memory; batch 128 × 8K
//!   fits unwrapped on an H100). Each sequence's last block, which the step writes, is its own;
//!   the pool is ~650x the 50 MB L2, so wrapped reads still come from HBM and the roofline counts
//!   every byte.
//!
//! Modes: `cargo bench --bench decode_step` (`--bench` in the arguments) runs the GPU shapes, or
//! prints "skipped: no GPU (…)" for them, then the CPU backend on a small model (the same code
//! path: hidden 256, 2 layers, 4/2 heads of 64, vocabulary 512) at batch 1 and 4 × context 64
//! and 256. Without `--bench` (`cargo test --all-targets`, as CI runs every bench once) it runs
//! one step per small shape on the CPU backend and one through the CUDA backend in interpret
//! mode (the GPU part's code: cache fill, tables wrapping a pool, the copy ceiling — checked
//! before a GPU sees it). An argument that is not a flag filters the shapes by name
//! (`b128_ctx8192`); criterion's flags from the GPU check (--warm-up-time …) are ignored. The table
//! goes to stdout; with CRITERION_HOME set (the GPU check) the numbers also go to
//! $CRITERION_HOME/decode_step.json for scripts/gpu_check_table.py.
use rayon::prelude::*;
use scalerl::device::{Buffer, Device};
use scalerl::model::{CudaModel, Model, ModelConfig, SeqChunk, Transformer};
use scalerl::ops::cuda::CudaOps;
use scalerl::ops::{Draw, Ops};
use scalerl::params::{HostParams, ParamTable, Role};
use std::time::{Duration, Instant};

const R1_CONFIG: &str = include_str!("../tests/fixtures/r1-distill-1.5b-config/config.json");
const BLOCK: usize = 16;
const GPU_BATCHES: [usize; 3] = [1, 32, 128];
const GPU_CONTEXTS: [usize; 4] = [1024, 8192, 16384, 24576];
const CPU_BATCHES: [usize; 2] = [1, 4];
const CPU_CONTEXTS: [usize; 2] = [64, 256];
/// DeepScaleR's rollout sampling.
const DRAW: Draw = Draw { temperature: 0.6, top_p: 0.95, top_k: 0, min_p: 0.0, uniform: 0.5 };

/// One shape's timings, milliseconds per step (medians over the timed steps).
#[derive(serde::Serialize)]
struct Row {
    id: String,
    batch: usize,
    context: usize,
    steps: usize,
    step_ms: f64,
    forward_ms: f64,
    sample_ms: f64,
    /// The host's issue time of the forward; None on the CPU (no device: the host does it all).
    host_issue_ms: Option<f64>,
    /// `Transformer::step`, as the engine runs it (CUDA: the decode graph's replay).
    engine_step_ms: f64,
    weight_bytes: u64,
    kv_bytes: u64,
    /// (weight + KV bytes) / the run's copy bandwidth; None on the CPU.
    roofline_ms: Option<f64>,
    x_roofline: Option<f64>,
    kv_wrapped: bool,
}

/// Random weights, cheap to make for 1.8 B parameters (xorshift, uniform with σ 0.02, in
/// parallel): matrices ±0.0346, residual outputs scaled by 1/√(2·layers), unit norms, zero biases.
fn random_weights(c: &ModelConfig, seed: u64) -> HostParams {
    let table = ParamTable::new(c);
    let mut p = HostParams::zeros(&table);
    let entries = table.entries().to_vec();
    let flat = p.flat_mut();
    let half_width = 0.02 * 3f32.sqrt();
    let out_scale = 1.0 / (2.0 * c.num_layers as f32).sqrt();
    for (ei, e) in entries.iter().enumerate() {
        let v = &mut flat[e.range()];
        let scale = match e.role {
            Role::Matrix => half_width,
            Role::ResidualOut => half_width * out_scale,
            Role::Norm => {
                v.fill(1.0);
                continue;
            }
            Role::Bias => continue,
        };
        v.par_chunks_mut(1 << 16).enumerate().for_each(|(ci, chunk)| {
            let mut r = scalerl::util::rng::XorShift::new(seed ^ ((ei as u64) << 40) ^ ci as u64);
            for x in chunk {
                *x = r.symmetric(scale);
            }
        });
    }
    p
}

/// Parameters a decode step of `batch` sequences reads: all but the embedding table, of which
/// only the batch's rows (a tied table is read whole as the lm_head anyway).
fn weight_bytes_per_step(c: &ModelConfig, table: &ParamTable, batch: usize, elem: u64) -> u64 {
    let embed = table.entry(table.embed()).range().len() as u64;
    let rows = if c.tie_word_embeddings { 0 } else { (batch * c.hidden_size) as u64 };
    (table.total() as u64 - if c.tie_word_embeddings { 0 } else { embed } + rows) * elem
}

/// The block tables of `batch` sequences at `ctx` tokens: blocks `0..pool` shared round-robin
/// for the context, each sequence's last block its own (`pool + s`), so the step's K/V writes
/// never collide. Returns the tables and whether the contexts wrapped around the pool.
fn tables(batch: usize, ctx: usize, pool: usize) -> (Vec<Vec<u32>>, bool) {
    let per = ctx.div_ceil(BLOCK);
    let wrapped = batch * (per - 1) > pool;
    let t = (0..batch)
        .map(|s| {
            let mut t: Vec<u32> = (0..per - 1).map(|j| ((s * (per - 1) + j) % pool.max(1)) as u32).collect();
            t.push((pool + s) as u32);
            t
        })
        .collect();
    (t, wrapped)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times decode steps of `model` at each shape; `sync` waits for the device (a no-op on the CPU).
#[allow(clippy::too_many_arguments)]
fn run_shapes<O: Ops>(
    model: &Transformer<O>,
    sync: &dyn Fn(),
    fill_cache: &dyn Fn(&mut O::Cache),
    shapes: &[(usize, usize)],
    pool_blocks: usize,
    elem: u64,
    copy_gbs: Option<f64>,
    budget: Duration,
    max_steps: usize,
) -> Vec<Row> {
    let c = &model.config;
    let kv_token_bytes = (c.num_layers * 2 * c.kv_dim()) as u64 * elem;
    let most_batch = shapes.iter().map(|s| s.0).max().unwrap_or(1);
    let mut cache = model.new_cache(pool_blocks + most_batch, BLOCK).unwrap();
    fill_cache(&mut cache);
    let mut rows = Vec::new();
    for &(batch, ctx) in shapes {
        let (tabs, wrapped) = tables(batch, ctx, pool_blocks);
        let toks: Vec<[u32; 1]> = (0..batch).map(|s| [(s * 7919 % c.vocab_size) as u32]).collect();
        let chunks: Vec<SeqChunk> =
            (0..batch).map(|s| SeqChunk { tokens: &toks[s], start_pos: ctx - 1, table: &tabs[s] }).collect();
        let rows_idx: Vec<usize> = (0..batch).collect();
        let draws = vec![DRAW; batch];
        let step_draws = vec![Some(DRAW); batch];
        let (mut fwd, mut smp, mut host, mut engine) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let start = Instant::now();
        // One untimed step (first-use allocations, cuBLASLt's algorithm pick), then timed ones
        // until the budget or max_steps, at least 3 when timing.
        for i in 0..=max_steps {
            sync();
            let t0 = Instant::now();
            let hidden = model.forward(&mut cache, &chunks).unwrap();
            let t1 = Instant::now();
            sync();
            let t2 = Instant::now();
            let out = model.ops.sample(&hidden, &rows_idx, model.lm_head(), c, &draws).unwrap();
            let t3 = Instant::now();
            sync();
            let t4 = Instant::now();
            // The first of these is the bucket's warm-up (eager run, then the capture).
            let stepped = model.step(&mut cache, &chunks, &step_draws).unwrap();
            let t5 = Instant::now();
            assert!(stepped.iter().all(|s| s.is_some_and(|s| (s.token as usize) < c.vocab_size)), "bad engine step at b{batch} ctx{ctx}");
            assert_eq!(out.len(), batch);
            assert!(out.iter().all(|s| (s.token as usize) < c.vocab_size && s.logprob.is_finite()), "bad draw at b{batch} ctx{ctx}");
            if i == 0 && max_steps > 0 {
                continue;
            }
            host.push((t1 - t0).as_secs_f64() * 1e3);
            fwd.push((t2 - t0).as_secs_f64() * 1e3);
            smp.push((t3 - t2).as_secs_f64() * 1e3);
            engine.push((t5 - t4).as_secs_f64() * 1e3);
            if fwd.len() >= 3 && start.elapsed() > budget {
                break;
            }
        }
        let (forward_ms, sample_ms) = (median(&mut fwd), median(&mut smp));
        let host_issue_ms = copy_gbs.map(|_| median(&mut host));
        let engine_step_ms = median(&mut engine);
        let step_ms = forward_ms + sample_ms;
        let weight_bytes = weight_bytes_per_step(c, model.table(), batch, elem);
        let kv_bytes = (batch * ctx) as u64 * kv_token_bytes;
        let roofline_ms = copy_gbs.map(|g| (weight_bytes + kv_bytes) as f64 / g / 1e6);
        rows.push(Row {
            id: format!("b{batch}_ctx{ctx}"),
            batch,
            context: ctx,
            steps: fwd.len(),
            step_ms,
            forward_ms,
            sample_ms,
            host_issue_ms,
            engine_step_ms,
            weight_bytes,
            kv_bytes,
            roofline_ms,
            x_roofline: roofline_ms.map(|r| step_ms / r),
            kv_wrapped: wrapped,
        });
        print_row(rows.last().unwrap());
    }
    rows
}

fn print_header(what: &str) {
    println!("{what}");
    println!("(step = forward + sample; host: the host's issue time of the forward; x roof: step / roofline; fwd x: forward / roofline; engine: Transformer::step, the decode graph on CUDA)");
    println!(
        "{:<16} {:>5} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10} {:>8} {:>8} {:>10}",
        "decode_step", "steps", "step", "forward", "sample", "host", "host %", "roofline", "x roof", "fwd x", "engine"
    );
}

fn print_row(r: &Row) {
    let ms = |v: f64| format!("{v:.3} ms");
    println!(
        "{:<16} {:>5} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10} {:>8} {:>8} {:>10}{}",
        r.id,
        r.steps,
        ms(r.step_ms),
        ms(r.forward_ms),
        ms(r.sample_ms),
        r.host_issue_ms.map(ms).unwrap_or_else(|| "-".into()),
        r.host_issue_ms.map(|h| format!("{:.1}%", 100.0 * h / r.step_ms)).unwrap_or_else(|| "-".into()),
        r.roofline_ms.map(ms).unwrap_or_else(|| "-".into()),
        r.x_roofline.map(|x| format!("{x:.2}x")).unwrap_or_else(|| "-".into()),
        r.roofline_ms.map(|x| format!("{:.2}x", r.forward_ms / x)).unwrap_or_else(|| "-".into()),
        ms(r.engine_step_ms),
        if r.kv_wrapped { "  (K/V wrap the pool)" } else { "" }
    );
}

/// Device-to-device copy bandwidth (bytes read + written per second, GB/s) of `bytes` (512 MiB
/// on the GPU), the median of 10 copies: the same ceiling the other GPU benches measure.
fn copy_bandwidth(dev: &Device, bytes: usize) -> f64 {
    let (src, dst) = (dev.alloc(bytes).unwrap(), dev.alloc(bytes).unwrap());
    dev.zero(&src).unwrap();
    let mut t: Vec<f64> = (0..11)
        .map(|_| {
            dev.synchronize().unwrap();
            let s = Instant::now();
            dev.copy(&src, &dst, bytes).unwrap();
            dev.synchronize().unwrap();
            s.elapsed().as_secs_f64()
        })
        .skip(1)
        .collect();
    2.0 * bytes as f64 / median(&mut t) / 1e9
}

/// Fills every layer's K and V with random bf16 values in ±1: 16 MiB uploaded, then doubled by
/// device copies (an uninitialised cache could hold NaN patterns).
fn fill_device_cache(dev: &Device, bufs: &[&Buffer]) {
    let seed_bytes = 16usize << 20;
    let vals: Vec<half::bf16> = (0..seed_bytes / 2)
        .map(|i| half::bf16::from_f32(((i as u32).wrapping_mul(2_654_435_761) >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0))
        .collect();
    for b in bufs {
        let n = b.len_bytes();
        let first = seed_bytes.min(n);
        dev.write(&b.view(0, first).unwrap(), &vals[..first / 2]).unwrap();
        let mut done = first;
        while done < n {
            let m = done.min(n - done);
            dev.copy(&b.view(0, m).unwrap(), &b.view(done, m).unwrap(), m).unwrap();
            done += m;
        }
    }
    dev.synchronize().unwrap();
}

/// The R1-Distill-1.5B config, or the small one of the CPU run (the same architecture scaled
/// down so a step takes milliseconds).
fn config(small: bool) -> ModelConfig {
    let mut c = ModelConfig::from_json(R1_CONFIG).unwrap();
    if small {
        // head_dim 64: the CUDA backend's split-KV decode kernel, as at full size (128).
        (c.hidden_size, c.intermediate_size, c.num_layers) = (256, 512, 2);
        (c.num_heads, c.num_kv_heads, c.head_dim, c.vocab_size) = (4, 2, 64, 512);
    }
    c
}

fn shapes(batches: &[usize], contexts: &[usize], filter: Option<&str>) -> Vec<(usize, usize)> {
    batches
        .iter()
        .flat_map(|&b| contexts.iter().map(move |&c| (b, c)))
        .filter(|(b, c)| filter.is_none_or(|f| format!("b{b}_ctx{c}").contains(f)))
        .collect()
}

/// The CUDA backend's part: the 1.5B model on the GPU, or (`dev` in interpret mode, test mode
/// only) the small model through the same code — cache fill, wrapped tables, copy ceiling — so
/// a mistake here shows in CI rather than on a rare GPU.
fn device_part(dev: Device, filter: Option<&str>, json: &mut Vec<serde_json::Value>) {
    let gpu = dev.is_gpu();
    let config = config(!gpu);
    let shapes = if gpu { shapes(&GPU_BATCHES, &GPU_CONTEXTS, filter) } else { shapes(&CPU_BATCHES, &CPU_CONTEXTS, filter) };
    if shapes.is_empty() {
        return;
    }
    let t = Instant::now();
    let weights = random_weights(&config, 1);
    let host = Model::from_weights(config.clone(), weights).unwrap();
    let dev_name = dev.name();
    let total = dev.total_memory().unwrap().unwrap_or(80 << 30);
    let model = CudaModel::from_model(CudaOps::new(dev), &host).unwrap();
    drop(host);
    let dev = model.ops.dev.clone();
    let copy_gbs = copy_bandwidth(&dev, if gpu { 512 << 20 } else { 4 << 20 });
    // The K/V pool: KV_POOL_GIB (32) or half the GPU's memory, whichever is less; in interpret
    // mode 24 blocks, so batch 4 x 256 wraps around it.
    let block_bytes = BLOCK * config.num_layers * 2 * config.kv_dim() * 2;
    let pool_gib: usize = std::env::var("KV_POOL_GIB").ok().and_then(|v| v.parse().ok()).unwrap_or(32);
    let pool_blocks = if gpu { ((pool_gib << 30).min(total / 2)) / block_bytes } else { 24 };
    print_header(&format!(
        "decode_step on {dev_name}: {}, random bf16 weights, blocks of {BLOCK}, K/V pool {:.2} GiB \
         (set up in {:.1} s); copy ceiling {copy_gbs:.0} GB/s (device-to-device, read + written, this run); \
         roofline = (weights + K/V bytes) / copy ceiling",
        if gpu { "R1-Distill-1.5B shape" } else { "the small model (checking the code path, not timing it)" },
        (pool_blocks * block_bytes) as f64 / (1u64 << 30) as f64,
        t.elapsed().as_secs_f64()
    ));
    let sync = || dev.synchronize().unwrap();
    let fill = |cache: &mut scalerl::ops::cuda::DeviceKvCache| {
        let bufs: Vec<&Buffer> = cache.k.iter().chain(cache.v.iter()).collect();
        fill_device_cache(&dev, &bufs);
    };
    let (budget, steps) = if gpu { (Duration::from_millis(1500), 20) } else { (Duration::ZERO, 0) };
    let rows = run_shapes(&model, &sync, &fill, &shapes, pool_blocks, 2, Some(copy_gbs), budget, steps);
    json.push(serde_json::json!({ "backend": if gpu { "cuda" } else { "interpret" }, "device": dev_name, "copy_gb_per_s": copy_gbs, "rows": rows }));
}

fn cpu_part(timing: bool, filter: Option<&str>, json: &mut Vec<serde_json::Value>) {
    let config = config(true);
    let shapes = shapes(&CPU_BATCHES, &CPU_CONTEXTS, filter);
    if shapes.is_empty() {
        return;
    }
    let model = Model::from_weights(config.clone(), random_weights(&config, 1)).unwrap();
    let pool = shapes.iter().map(|&(b, c)| b * c.div_ceil(BLOCK)).max().unwrap();
    print_header(&format!(
        "decode_step on the CPU backend ({}): small model of the same code path (hidden 256, 2 layers, 4/2 heads of 64, \
         vocabulary 512), f32; {}",
        model.ops.name(),
        if timing { "medians of timed steps" } else { "one step per shape (test mode)" }
    ));
    let (budget, steps) = if timing { (Duration::from_millis(500), 50) } else { (Duration::ZERO, 0) };
    let rows = run_shapes(&model, &|| {}, &|_| {}, &shapes, pool, 4, None, budget, steps);
    json.push(serde_json::json!({ "backend": "cpu", "device": model.ops.name(), "rows": rows }));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench_mode = args.iter().any(|a| a == "--bench");
    // The first argument that is neither a flag nor a flag's value: criterion's filter.
    let valued = ["--warm-up-time", "--measurement-time", "--sample-size", "--save-baseline", "--baseline", "--profile-time"];
    let filter = args
        .iter()
        .enumerate()
        .find(|(i, a)| !a.starts_with("--") && (*i == 0 || !valued.contains(&args[i - 1].as_str())))
        .map(|(_, a)| a.as_str());
    let mut json = Vec::new();
    if bench_mode {
        match Device::cuda(0) {
            Ok(dev) => device_part(dev, filter, &mut json),
            Err(e) => {
                let why = format!("{e:#}");
                println!("decode_step GPU shapes skipped: {}", if why.starts_with("no GPU") { why } else { format!("no GPU ({why})") });
            }
        }
    } else {
        device_part(Device::interpret(), filter, &mut json);
    }
    cpu_part(bench_mode, filter, &mut json);
    if let Ok(home) = std::env::var("CRITERION_HOME") {
        std::fs::create_dir_all(&home).unwrap();
        let path = std::path::Path::new(&home).join("decode_step.json");
        std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
        println!("numbers: {}", path.display());
    }
}
