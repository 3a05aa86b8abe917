//! `scalerl generate`: sample a completion for one prompt and stream it to stdout.
use super::model_dir::LoadedModel;
use crate::engine::Backend;
use crate::engine::{generate, GenerateOptions, Request, SamplingParams};
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
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tokens per KV-cache block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
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
        seed: a.seed,
        max_new_tokens: a.max_new_tokens,
        stop_token_ids: lm.stop_token_ids(),
    };
    let opts = GenerateOptions { block_size: a.block_size, ..GenerateOptions::default() };
    let started = Instant::now();
    // Decode the whole completion each time and print what is new: a token can end inside a
    // multi-byte character, which shows as U+FFFD until the next token completes it.
    let mut ids = Vec::new();
    let mut printed = 0;
    let mut out = std::io::stdout().lock();
    let mut stream_err = None;
    let requests = [Request { prompt: prompt.clone(), params }];
    let on_token = |_, tok, _| {
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
    let done = generate(&lm.runtime, &requests, &opts, on_token)?;
    if let Some(e) = stream_err {
        return Err(e);
    }
    writeln!(out)?;
    let c = &done[0];
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "[{} prompt + {} generated tokens, finish: {}, {:.1} tok/s overall, device: {}]",
        prompt.len(),
        c.tokens.len(),
        c.finish.as_str(),
        c.tokens.len() as f64 / secs,
        a.device
    );
    Ok(())
}
