//! `scalerl generate`: sample a completion for one prompt and stream it to stdout.
use super::model_dir::LoadedModel;
use crate::engine::Backend;
use crate::engine::{generate_with_stats, GenerateOptions, Request, SamplingParams};
use crate::model::ChatTemplate;
use anyhow::{bail, Result};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Hugging Face model directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as one user turn of the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Chat template to use (implies --chat): model, r1-distill, or r1-distill-think.
    #[arg(long)]
    pub chat_template: Option<ChatTemplate>,
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// 0 = greedy. Default: generation_config.json's temperature, else greedy.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Default: generation_config.json's top_p, else 1.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// 0 = off. Default: generation_config.json's top_k, else 0.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Keep only tokens with p ≥ min_p · p_max; 0 = off. Default: generation_config.json's
    /// min_p, else 0.
    #[arg(long)]
    pub min_p: Option<f32>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tokens per KV-cache block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Samples of the prompt (sample i is drawn with seed + i); they share the prompt's KV
    /// blocks. With more than one, each is printed when done (no streaming).
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    /// KV cache capacity in tokens (default: room for every sample at once). Blocks are taken
    /// as samples grow; a full cache preempts the newest ones, which are recomputed later with
    /// the same result.
    #[arg(long)]
    pub max_kv_tokens: Option<usize>,
    /// Most tokens one step computes: a longer prompt is prefilled in chunks.
    #[arg(long, default_value_t = 8192)]
    pub max_step_tokens: usize,
    /// One JSON line per sample on stdout: sample, seed, tokens, text, logprobs, finish.
    #[arg(long)]
    pub json: bool,
    /// Backend: cpu (the f32 reference), cuda / cuda:N (bf16, the CUDA kernels), or interpret
    /// (the CUDA kernels run on the CPU with CUDA semantics; slow, for checking).
    #[arg(long, default_value = "cpu", env = "SCALERL_DEVICE")]
    pub device: Backend,
}

pub fn run(a: &GenerateArgs) -> Result<()> {
    if a.prompt.is_empty() {
        bail!("the prompt is empty");
    }
    let lm = LoadedModel::load(&a.model, a.device)?;
    let template = a.chat_template.or(if a.chat { Some(ChatTemplate::Model) } else { None });
    let prompt = match template {
        Some(t) => t.encode_user_turn(&lm.tokenizer, &a.prompt)?,
        None => lm.tokenizer.encode(&a.prompt, true)?,
    };
    let sampling_default = lm.generation.do_sample != Some(false);
    let params = SamplingParams {
        temperature: a.temperature.or(lm.generation.temperature.filter(|_| sampling_default)).unwrap_or(0.0),
        top_p: a.top_p.or(lm.generation.top_p).unwrap_or(1.0),
        top_k: a.top_k.or(lm.generation.top_k).unwrap_or(0),
        min_p: a.min_p.or(lm.generation.min_p).unwrap_or(0.0),
        seed: a.seed,
        max_new_tokens: a.max_new_tokens,
        stop_token_ids: lm.stop_token_ids(),
    };
    if a.n == 0 {
        bail!("--n must be at least 1");
    }
    let opts = GenerateOptions {
        block_size: a.block_size,
        max_kv_tokens: a.max_kv_tokens,
        max_step_tokens: a.max_step_tokens,
        ..GenerateOptions::default()
    };
    let requests: Vec<Request> = (0..a.n)
        .map(|i| Request { prompt: prompt.clone(), params: SamplingParams { seed: a.seed.wrapping_add(i as u64), ..params.clone() } })
        .collect();
    let started = Instant::now();
    let stream = a.n == 1 && !a.json;
    // Decode the whole completion each time and print what is new: a token can end inside a
    // multi-byte character, which shows as U+FFFD until the next token completes it.
    let mut ids = Vec::new();
    let mut printed = 0;
    let mut out = std::io::stdout().lock();
    let mut stream_err = None;
    let on_token = |_, tok, _| {
        if !stream {
            return;
        }
        ids.push(tok);
        match lm.tokenizer.decode(&ids, true) {
            Ok(text) if !text.ends_with('\u{FFFD}') && text.len() > printed && text.is_char_boundary(printed) => {
                let _ = out.write_all(text[printed..].as_bytes());
                let _ = out.flush();
                printed = text.len();
            }
            Ok(_) => {}
            Err(e) => stream_err = Some(e),
        }
    };
    let (done, stats) = generate_with_stats(&lm.runtime, &requests, &opts, on_token)?;
    if let Some(e) = stream_err {
        return Err(e);
    }
    if stream {
        writeln!(out)?;
    }
    for (i, c) in done.iter().enumerate() {
        let text = lm.tokenizer.decode(&c.tokens, true)?;
        if a.json {
            let line = serde_json::json!({
                "sample": i,
                "seed": requests[i].params.seed,
                "prompt_tokens": prompt.len(),
                "tokens": c.tokens,
                "text": text,
                "logprobs": c.logprobs,
                "finish": c.finish.as_str(),
            });
            writeln!(out, "{line}")?;
        } else if !stream {
            writeln!(out, "--- sample {i} (seed {}, finish: {})\n{text}", requests[i].params.seed, c.finish.as_str())?;
        }
    }
    let generated: usize = done.iter().map(|c| c.tokens.len()).sum();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "[{} prompt + {} generated tokens in {} sample{}, finish: {}, {:.1} tok/s overall, {} steps, {} preemptions, device: {}]",
        prompt.len(),
        generated,
        a.n,
        if a.n == 1 { "" } else { "s" },
        done.iter().map(|c| c.finish.as_str()).collect::<Vec<_>>().join(","),
        generated as f64 / secs,
        stats.steps,
        stats.preemptions,
        a.device
    );
    Ok(())
}
