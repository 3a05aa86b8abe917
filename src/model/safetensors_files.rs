//! Memory-mapped safetensors checkpoints: one `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`. Tensors are looked up by name and converted to f32
//! (F32, BF16 and F16 are accepted) with errors that name the file and the tensor.

use anyhow::{bail, Context, Result};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

struct Shard {
    path: PathBuf,
    mmap: Mmap,
}

/// Every shard of a checkpoint, mapped once; `tensor_f32` parses the header lazily per shard.
pub struct Checkpoint {
    shards: Vec<Shard>,
    /// tensor name -> index into `shards`
    index: HashMap<String, usize>,
}

impl Checkpoint {
    /// Opens `dir/model.safetensors.index.json` if present, else `dir/model.safetensors`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let files: Vec<PathBuf> = if index_path.exists() {
            shard_files_from_index(&index_path)?.into_iter().map(|f| dir.join(f)).collect()
        } else if single.exists() {
            vec![single]
        } else {
            bail!(
                "no weights in {}: expected model.safetensors or model.safetensors.index.json",
                dir.display()
            );
        };
        let mut shards = Vec::new();
        let mut index = HashMap::new();
        for (i, path) in files.into_iter().enumerate() {
            let file = File::open(&path).with_context(|| format!("cannot open weights {}", path.display()))?;
            // SAFETY: the checkpoint is read-only input; a concurrent writer would be a user error
            // and could at worst give wrong numbers, which every loader with mmap accepts.
            let mmap = unsafe { Mmap::map(&file) }
                .with_context(|| format!("cannot memory-map {}", path.display()))?;
            let st = SafeTensors::deserialize(&mmap)
                .map_err(|e| anyhow::anyhow!("corrupt safetensors file {}: {e}", path.display()))?;
            for name in st.names() {
                index.insert(name.to_string(), i);
            }
            shards.push(Shard { path, mmap });
        }
        Ok(Checkpoint { shards, index })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The tensor `name` as f32, checked against `shape`.
    pub fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let &i = self
            .index
            .get(name)
            .with_context(|| format!("tensor `{name}` is missing from the checkpoint"))?;
        let shard = &self.shards[i];
        let st = SafeTensors::deserialize(&shard.mmap)
            .map_err(|e| anyhow::anyhow!("corrupt safetensors file {}: {e}", shard.path.display()))?;
        let view = st
            .tensor(name)
            .map_err(|e| anyhow::anyhow!("{}: tensor `{name}`: {e}", shard.path.display()))?;
        if view.shape() != shape {
            bail!(
                "{}: tensor `{name}` has shape {:?}, expected {:?}",
                shard.path.display(),
                view.shape(),
                shape
            );
        }
        let data = view.data();
        let out = match view.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => bail!(
                "{}: tensor `{name}` has dtype {other:?}; only F32, BF16 and F16 are supported",
                shard.path.display()
            ),
        };
        Ok(out)
    }
}

fn shard_files_from_index(path: &Path) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let index: Index =
        serde_json::from_str(&text).with_context(|| format!("invalid shard index {}", path.display()))?;
    let mut files: Vec<String> = index.weight_map.into_values().collect();
    files.sort();
    files.dedup();
    if files.is_empty() {
        bail!("{}: weight_map is empty", path.display());
    }
    Ok(files)
}
