//! `scalerl logits`: the logits of a token sequence as JSON, for parity checks.
use super::Device;
use crate::kv::BlockAllocator;
use crate::model::{Model, SeqChunk};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct LogitsArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// Comma-separated token ids, e.g. 1,2,3.
    #[arg(long)]
    pub tokens: String,
    /// Print the logits of every position (default: the last one only).
    #[arg(long)]
    pub all_positions: bool,
    #[arg(long, value_enum, default_value_t = Device::Cpu, env = "SCALERL_DEVICE")]
    pub device: Device,
}

pub fn parse_token_list(s: &str) -> Result<Vec<u32>> {
    let ids = s
        .split(',')
        .map(|t| t.trim().parse::<u32>().with_context(|| format!("`{t}` in --tokens is not a token id")))
        .collect::<Result<Vec<_>>>()?;
    if ids.is_empty() {
        bail!("--tokens is empty");
    }
    Ok(ids)
}

/// Logits `[positions, vocab]` of a single sequence, prefilled in one chunk.
pub fn sequence_logits(model: &Model, tokens: &[u32], all_positions: bool) -> Result<Vec<Vec<f32>>> {
    let max = model.config.max_position_embeddings;
    if tokens.len() > max {
        bail!("{} tokens exceed the model's context of {max}", tokens.len());
    }
    let block_size = 16;
    let mut alloc = BlockAllocator::new(tokens.len().div_ceil(block_size), block_size);
    let mut table = Vec::new();
    alloc.ensure_capacity(&mut table, tokens.len())?;
    let mut cache = model.new_cache(alloc.num_blocks(), block_size);
    let hidden = model.forward_hidden(&mut cache, &[SeqChunk { tokens, start_pos: 0, table: &table }])?;
    let h = model.config.hidden_size;
    let rows = if all_positions { &hidden[..] } else { &hidden[(tokens.len() - 1) * h..] };
    let v = model.config.vocab_size;
    Ok(model.logits(rows).chunks_exact(v).map(|r| r.to_vec()).collect())
}

pub fn run(a: &LogitsArgs) -> Result<()> {
    let tokens = parse_token_list(&a.tokens)?;
    let model = Model::load(&a.model)?;
    let logits = match a.device.cuda_backend_device()? {
        None => sequence_logits(&model, &tokens, a.all_positions)?,
        Some(dev) => {
            let cuda = crate::backend::cuda::CudaModel::from_model(dev, &model)?;
            crate::backend::cuda::sequence_logits(&cuda, &tokens, a.all_positions)?
        }
    };
    let first = if a.all_positions { 0 } else { tokens.len() - 1 };
    let positions: Vec<usize> = (first..tokens.len()).collect();
    let json = serde_json::json!({ "device": a.device.as_str(), "tokens": tokens, "positions": positions, "logits": logits });
    println!("{json}");
    Ok(())
}
