//! The per-forward token metadata every paged kernel reads (positions, sequence ids, block
//! tables), uploaded once per forward.
use crate::device::{Buffer, Device};
use anyhow::{bail, ensure, Result};

/// Where the tokens of a batch sit: per token its position and sequence, per sequence its block
/// table (padded with −1 to `max_blocks`), all int32 in device memory.
pub struct TokenMeta {
    pub tokens: usize,
    pub block_size: usize,
    /// 1 + the largest physical block id in the tables (checked against the cache's size).
    pub blocks_used: usize,
    pub num_seqs: usize,
    pub max_blocks: usize,
    /// Host copy of each sequence's chunk `(start_pos, len)`, in row order: the attention
    /// launchers plan their grids (tiles, KV splits) from it without a download.
    pub chunks: Vec<(usize, usize)>,
    pub positions: Buffer,
    pub seq_ids: Buffer,
    pub block_tables: Buffer,
}

impl TokenMeta {
    /// `seqs[s] = (start_pos, len, table)`: tokens `start_pos .. start_pos + len` of sequence s,
    /// whose table must cover them with blocks of `block_size` positions.
    pub fn upload(dev: &Device, seqs: &[(usize, usize, &[u32])], block_size: usize) -> Result<Self> {
        ensure!(block_size > 0, "block size 0");
        let max_blocks = seqs.iter().map(|s| s.2.len()).max().unwrap_or(0).max(1);
        let (mut positions, mut seq_ids) = (Vec::new(), Vec::new());
        let mut tables = vec![-1i32; seqs.len().max(1) * max_blocks];
        let mut blocks_used = 0;
        for (s, &(start, len, table)) in seqs.iter().enumerate() {
            if start + len > table.len() * block_size {
                bail!(
                    "sequence {s}: block table covers {} positions, the chunk needs {}",
                    table.len() * block_size,
                    start + len
                );
            }
            blocks_used = table.iter().map(|&b| b as usize + 1).fold(blocks_used, usize::max);
            for p in start..start + len {
                positions.push(i32::try_from(p)?);
                seq_ids.push(s as i32);
            }
            for (i, &b) in table.iter().enumerate() {
                tables[s * max_blocks + i] = i32::try_from(b)?;
            }
        }
        Ok(TokenMeta {
            tokens: positions.len(),
            block_size,
            blocks_used,
            num_seqs: seqs.len(),
            max_blocks,
            chunks: seqs.iter().map(|&(start, len, _)| (start, len)).collect(),
            positions: dev.upload(&positions)?,
            seq_ids: dev.upload(&seq_ids)?,
            block_tables: dev.upload(&tables)?,
        })
    }
}
