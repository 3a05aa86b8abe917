//! Embedding the engine: load a model once, then stream samples with their log-probs through
//! the library — what a program that uses scalerl as its sampler does.
//!
//!   cargo run --release --example stream_samples -- MODEL_DIR [PROMPT] [N] [MAX_NEW] [DEVICE]
//!
//! DEVICE is cpu (default), cuda, cuda:N or interpret. The samples share the prompt's KV blocks
//! and run as one continuous batch; each token is printed as soon as it is drawn, with the
//! log-prob the GRPO ratio is built from.
use scalerl::engine::{generate_with_stats, Backend, GenerateOptions, Request, Runtime, SamplingParams, StepModel};
use scalerl::model::{ChatTemplate, GenerationConfig, Model, TextTokenizer};
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: stream_samples MODEL_DIR [PROMPT] [N] [MAX_NEW] [DEVICE]";
    let dir = Path::new(args.get(1).ok_or_else(|| anyhow::anyhow!(usage))?);
    let prompt_text = args.get(2).map_or("What is 7 + 5?", |s| s.as_str());
    let n: usize = args.get(3).map_or(Ok(4), |s| s.parse())?;
    let max_new: usize = args.get(4).map_or(Ok(32), |s| s.parse())?;
    let backend: Backend = args.get(5).map_or(Ok(Backend::Cpu), |s| s.parse())?;

    // Once: the weights on the chosen backend, the tokenizer, the stop ids.
    let runtime = Runtime::new(backend, Model::load(dir)?)?;
    let tok = TextTokenizer::load(dir)?;
    let stop = GenerationConfig::load(dir)?.stop_token_ids(&runtime.config().eos_token_ids, &tok);
    let template = if tok.chat_template.is_some() { ChatTemplate::Model } else { ChatTemplate::R1Distill };
    let prompt = template.encode_user_turn(&tok, prompt_text)?;

    let requests: Vec<Request> = (0..n)
        .map(|i| Request {
            prompt: prompt.clone(),
            params: SamplingParams { temperature: 0.7, top_p: 0.95, seed: i as u64, max_new_tokens: max_new, stop_token_ids: stop.clone(), ..Default::default() },
        })
        .collect();
    let mut sums = vec![0f64; n];
    let (out, stats) = generate_with_stats(&runtime, &requests, &GenerateOptions::default(), |i, token, logprob| {
        sums[i] += logprob as f64;
        let piece = tok.decode(&[token], false).unwrap_or_default();
        println!("sample {i}: {token:>6} {logprob:>8.3} {piece:?}");
    })?;
    for (i, c) in out.iter().enumerate() {
        println!("sample {i} ({}, {} tokens, Σ log p = {:.2}): {}", c.finish.as_str(), c.tokens.len(), sums[i], tok.decode(&c.tokens, true)?);
    }
    eprintln!("{} samples on {}: {} steps, {} preemptions", n, runtime.device_name(), stats.steps, stats.preemptions);
    Ok(())
}
