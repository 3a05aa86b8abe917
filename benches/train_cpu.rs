//! Forward + backward tokens/s of the CPU trainer under the GRPO loss (training forward over
//! whole sequences, chunked lm_head log-probs and entropy at T = 0.6, loss, backward into every
//! parameter), on the tiny fixture model and, if scripts/fetch-artifacts.sh cached it,
//! SmolLM2-135M.
//!
//!     cargo bench --bench train_cpu                            # criterion
//!     cargo bench --bench train_cpu -- --json DIR BATCH LEN    # one JSON line (scripts/bench-train-vs-torch.sh)
//!
//! Napkin math: a training step costs ≈ 3× the forward FLOPs (2·params per token forward,
//! 4·params backward) plus attention, so tokens/s ≈ FLOP/s ÷ (6 · params).
use criterion::{BenchmarkId, Criterion, Throughput};
use scalerl::model::Model;
use scalerl::params::HostParams;
use scalerl::train::{broadcast_advantages, grpo_backward, GrpoConfig, GrpoInputs, PassOptions, Sample};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn models() -> Vec<(String, PathBuf, usize, usize)> {
    let mut out = vec![(
        "tiny-qwen2".to_string(),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-qwen2"),
        4,
        128,
    )];
    let cache = std::env::var_os("SCALERL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/scalerl"));
    let smol = cache.join("smollm2-135m-instruct");
    if smol.join("model.safetensors").exists() {
        out.push(("smollm2-135m".to_string(), smol, 1, 256));
    } else {
        eprintln!("skipped: SmolLM2-135M not fetched (run scripts/fetch-artifacts.sh)");
    }
    out
}

/// `batch` random sequences of `len` tokens (prompt = first quarter) and their GRPO inputs.
struct Workload {
    seqs: Vec<Vec<u32>>,
    prompt_len: usize,
    adv: Vec<f32>,
    old: Vec<f32>,
    reference: Vec<f32>,
}

impl Workload {
    fn new(vocab: usize, batch: usize, len: usize) -> Self {
        let mut s = 7u64;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as usize
        };
        // Ids ≥ 256 avoid special tokens in every vocabulary here (content is irrelevant to speed).
        let lo = 256.min(vocab / 2);
        let seqs: Vec<Vec<u32>> = (0..batch).map(|_| (0..len).map(|_| (lo + next() % (vocab - lo)) as u32).collect()).collect();
        let prompt_len = (len / 4).max(1);
        let samples: Vec<Sample> = seqs.iter().map(|t| Sample { tokens: t, prompt_len }).collect();
        let per_seq: Vec<f32> = (0..batch).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
        let adv = broadcast_advantages(&samples, &per_seq);
        let n = adv.len();
        let old = (0..n).map(|i| -5.0 + (i % 7) as f32 * 0.01).collect();
        let reference = (0..n).map(|i| -5.0 - (i % 5) as f32 * 0.01).collect();
        Workload { seqs, prompt_len, adv, old, reference }
    }

    fn tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.len()).sum()
    }

    fn step(&self, model: &Model, grads: &mut HostParams) -> f64 {
        let samples: Vec<Sample> = self.seqs.iter().map(|t| Sample { tokens: t, prompt_len: self.prompt_len }).collect();
        let inputs = GrpoInputs { advantages: &self.adv, old_logp: &self.old, ref_logp: Some(&self.reference) };
        let o = PassOptions::default();
        grpo_backward(model, &samples, &inputs, &GrpoConfig::default(), &o, grads).unwrap().loss
    }
}

/// `--json DIR BATCH LEN`: best of 3 timed steps after a warm-up, as one JSON line.
fn json_mode(dir: &Path, batch: usize, len: usize) {
    let model = Model::load(dir).unwrap();
    let w = Workload::new(model.config.vocab_size, batch, len);
    let mut grads = HostParams::zeros(model.table());
    let mut best = f64::INFINITY;
    for rep in 0..4 {
        grads.flat_mut().fill(0.0);
        let t0 = Instant::now();
        std::hint::black_box(w.step(&model, &mut grads));
        if rep > 0 {
            best = best.min(t0.elapsed().as_secs_f64());
        }
    }
    println!(
        "{{\"fwd_bwd_tok_s\": {:.1}, \"tokens\": {}, \"seconds\": {:.4}, \"threads\": {}}}",
        w.tokens() as f64 / best,
        w.tokens(),
        best,
        rayon::current_num_threads()
    );
}

fn bench(c: &mut Criterion) {
    for (name, dir, batch, len) in models() {
        let model = Model::load(&dir).unwrap();
        let w = Workload::new(model.config.vocab_size, batch, len);
        let mut grads = HostParams::zeros(model.table());
        let mut g = c.benchmark_group(format!("train_cpu/{name}"));
        g.sample_size(10);
        g.throughput(Throughput::Elements(w.tokens() as u64));
        g.bench_function(BenchmarkId::new("grpo_fwd_bwd_tokens", format!("{batch}x{len}")), |b| {
            b.iter(|| {
                grads.flat_mut().fill(0.0);
                w.step(&model, &mut grads)
            })
        });
        g.finish();
    }
}

fn main() {
    scalerl::util::alloc::keep_freed_memory(); // as the scalerl binary does
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--json") {
        let dir = PathBuf::from(&args[i + 1]);
        let (batch, len) = (args[i + 2].parse().unwrap(), args[i + 3].parse().unwrap());
        return json_mode(&dir, batch, len);
    }
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
