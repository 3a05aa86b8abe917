//! Prefill and decode speed of the CPU backend, printed as one JSON line in the same format as
//! scripts/bench_torch.py so that scripts/bench-cpu-vs-torch.sh can divide the two: the best of
//! 3 runs for prefill and for decode, as that script takes for PyTorch.
//!
//!   cargo run --release --example cpu_speed -- MODEL_DIR [batch] [prompt_len] [new_tokens]
use scalerl::engine::{generate, GenerateOptions, Request, SamplingParams};
use scalerl::model::Model;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    scalerl::util::alloc::keep_freed_memory(); // as the scalerl binary does
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).expect("usage: cpu_speed MODEL_DIR [batch] [prompt_len] [new_tokens]");
    let arg = |i: usize, d: usize| args.get(i).map_or(d, |s| s.parse().expect("a number"));
    let (batch, prompt_len, new_tokens) = (arg(2, 1), arg(3, 64), arg(4, 64));
    let model = Model::load(std::path::Path::new(dir))?;
    let vocab = model.config.vocab_size.min(1000) as u32;
    let requests: Vec<Request> = (0..batch)
        .map(|b| Request {
            prompt: (0..prompt_len).map(|i| ((i * 7 + b * 13 + 1) as u32) % vocab).collect(),
            params: SamplingParams { temperature: 0.0, max_new_tokens: new_tokens, ..Default::default() },
        })
        .collect();
    // Warm-up (page in the weights, spin up rayon).
    generate(&model, &requests[..1], &GenerateOptions::default(), |_, _, _| {})?;
    // Best of 3 runs for each phase, as scripts/bench_torch.py takes for PyTorch.
    let (mut prefill_s, mut decode_s) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..3 {
        let start = Instant::now();
        let mut first_step_done = None;
        let mut produced = 0usize;
        generate(&model, &requests, &GenerateOptions::default(), |_, _, _| {
            produced += 1;
            if produced == batch {
                first_step_done = Some(Instant::now());
            }
        })?;
        let (end, first) = (Instant::now(), first_step_done.expect("every request produced a token"));
        prefill_s = prefill_s.min((first - start).as_secs_f64());
        decode_s = decode_s.min((end - first).as_secs_f64());
    }
    println!(
        "{}",
        serde_json::json!({
            "impl": "scalerl-cpu",
            "prefill_tok_s": (batch * prompt_len) as f64 / prefill_s,
            "decode_tok_s": (batch * (new_tokens - 1)) as f64 / decode_s,
            "batch": batch,
            "threads": rayon::current_num_threads(),
        })
    );
    Ok(())
}
