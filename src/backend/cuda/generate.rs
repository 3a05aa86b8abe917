//! The CUDA backend as a `StepModel`, so that `engine::generate` (prefill, then one token per
//! unfinished sequence per step) drives it exactly as it drives the CPU backend. Only the last
//! row of each chunk goes through the lm_head; its f32 logits are downloaded and sampled on the
//! host (device-side sampling is the sampling kernel's issue).

use super::model::{CudaModel, DeviceKvCache};
use crate::engine::StepModel;
use crate::model::{ModelConfig, SeqChunk};
use anyhow::Result;

impl StepModel for CudaModel {
    type Cache = DeviceKvCache;
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn new_cache(&self, num_blocks: usize, block_size: usize) -> Result<DeviceKvCache> {
        CudaModel::new_cache(self, num_blocks, block_size)
    }
    fn last_token_logits(&self, cache: &mut DeviceKvCache, chunks: &[SeqChunk]) -> Result<Vec<f32>> {
        let hidden = self.forward_hidden(cache, chunks)?;
        let last_rows: Vec<usize> = chunks
            .iter()
            .scan(0, |row, ch| {
                *row += ch.tokens.len();
                Some(*row - 1)
            })
            .collect();
        self.logits(&hidden, &last_rows)
    }
}
