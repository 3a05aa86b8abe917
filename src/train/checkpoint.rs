//! Checkpoints of a run, written atomically and pruned to the newest K.
//!
//! Layout of `run_dir/step-N/` (N = optimizer steps completed):
//!   model.safetensors            the weights, Hugging Face names (F32 or BF16) — with the
//!   config.json, tokenizer*, …   files copied from the source model, the directory is a
//!                                Hugging Face model (`Model::load(step-N)` works)
//!   optimizer.safetensors        AdamW moments `m.<param>`, `v.<param>` (F32), step counts in
//!                                the header metadata (optional)
//!   trainer_state.json           step, data cursor, stage, seeds, clip history (written last)
//! and `run_dir/latest` holds the name of the newest complete checkpoint (`step-N`).
//!
//! A save writes `run_dir/.tmp-step-N`, fsyncs every file and the directory, renames it to
//! `step-N`, fsyncs `run_dir`, then replaces `latest` (temp file + rename). Only then are older
//! checkpoints beyond `keep_last` deleted. A crash at any point leaves the previous checkpoint
//! and `latest` intact; stray `.tmp-step-*` directories are ignored and removed by the next save.

pub use super::adamw::OptimizerState;
use super::config::SaveDtype;
use super::data::Cursor;
use crate::model::config::ModelConfig;
use crate::model::Model;
use crate::params::{HostParams, ParamTable};
use anyhow::{anyhow, bail, Context, Result};
use safetensors::{Dtype, View};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Files copied verbatim from the source model directory when present (config.json is required).
pub const MODEL_SIDE_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
];

pub const TRAINER_STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const LATEST_FILE: &str = "latest";

/// Everything besides the tensors that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed (the next step to run).
    pub step: usize,
    /// Where the data order continues.
    pub cursor: Cursor,
    /// Index of the current stage in `RunConfig::stages()`.
    pub stage_index: usize,
    /// The run's seed (data order, sampling).
    pub seed: u64,
    /// Sampler RNG state(s), if the sampler keeps any between steps.
    #[serde(default)]
    pub rng_state: Vec<u64>,
    /// Clip ratio of every completed step (for `RunConfig::stage_at` after a resume).
    #[serde(default)]
    pub clip_history: Vec<f64>,
    /// Free-form extras (counters, the config's hash, …).
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// What `save` writes.
pub struct SaveRequest<'a> {
    pub weights: &'a HostParams,
    /// The source Hugging Face model directory (config.json, tokenizer files).
    pub source_model_dir: &'a Path,
    pub dtype: SaveDtype,
    pub optimizer: Option<&'a OptimizerState>,
    pub state: &'a TrainerState,
}

/// A loaded checkpoint.
pub struct Loaded {
    pub dir: PathBuf,
    pub model: Model,
    pub optimizer: Option<OptimizerState>,
    pub state: TrainerState,
}

pub fn step_dir_name(step: usize) -> String {
    format!("step-{step}")
}

fn tmp_dir_name(step: usize) -> String {
    format!(".tmp-step-{step}")
}

/// An f32 tensor serialised as F32 or BF16 on demand (one tensor's bytes in memory at a time).
struct TensorOut<'a> {
    data: &'a [f32],
    shape: Vec<usize>,
    dtype: SaveDtype,
}

impl View for TensorOut<'_> {
    fn dtype(&self) -> Dtype {
        match self.dtype {
            SaveDtype::F32 => Dtype::F32,
            SaveDtype::Bf16 => Dtype::BF16,
        }
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        match self.dtype {
            SaveDtype::F32 => Cow::Owned(self.data.iter().flat_map(|x| x.to_le_bytes()).collect()),
            SaveDtype::Bf16 => Cow::Owned(self.data.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect()),
        }
    }
    fn data_len(&self) -> usize {
        self.data.len()
            * match self.dtype {
                SaveDtype::F32 => 4,
                SaveDtype::Bf16 => 2,
            }
    }
}

fn fsync_file(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).with_context(|| format!("cannot fsync {}", path.display()))
}

fn fsync_dir(path: &Path) -> Result<()> {
    // Directories can be opened read-only and synced on Unix; elsewhere this is best effort.
    match File::open(path) {
        Ok(f) => {
            let _ = f.sync_all();
            Ok(())
        }
        Err(e) => Err(anyhow!("cannot open directory {} to fsync it: {e}", path.display())),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))?;
    f.sync_all().with_context(|| format!("cannot fsync {}", path.display()))
}

/// Writes the Hugging Face weights file `model.safetensors` into `dir`, every tensor of the
/// weights' table under its name and shape; `cfg` (the model's config.json) must describe the
/// same tensors.
pub fn write_model_safetensors(dir: &Path, weights: &HostParams, cfg: &ModelConfig, dtype: SaveDtype) -> Result<()> {
    let expected = ParamTable::with_lm_head(cfg, weights.table().has_own_lm_head());
    if *expected != **weights.table() {
        bail!("the weights to write do not have the tensors that config.json in {} implies", dir.display());
    }
    let tensors: Vec<(String, TensorOut)> =
        weights.iter().map(|(e, data)| (e.name.clone(), TensorOut { data, shape: e.shape.clone(), dtype })).collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let path = dir.join("model.safetensors");
    safetensors::serialize_to_file(tensors, Some(meta), &path)
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    fsync_file(&path)
}

fn write_optimizer(path: &Path, opt: &OptimizerState) -> Result<()> {
    let mut tensors = Vec::with_capacity(2 * opt.moments.len());
    for (name, m, v) in &opt.moments {
        if m.len() != v.len() {
            bail!("optimizer state of `{name}`: m has {} values, v has {}", m.len(), v.len());
        }
        tensors.push((format!("m.{name}"), TensorOut { data: m, shape: vec![m.len()], dtype: SaveDtype::F32 }));
        tensors.push((format!("v.{name}"), TensorOut { data: v, shape: vec![v.len()], dtype: SaveDtype::F32 }));
    }
    let order: Vec<String> = opt.moments.iter().map(|(n, _, _)| n.clone()).collect();
    let meta = HashMap::from([
        ("steps".to_string(), opt.steps.to_string()),
        ("updates".to_string(), opt.updates.to_string()),
        ("params".to_string(), serde_json::to_string(&order)?),
    ]);
    safetensors::serialize_to_file(tensors, Some(meta), path).map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    fsync_file(path)
}

/// Reads `optimizer.safetensors`.
pub fn read_optimizer(path: &Path) -> Result<OptimizerState> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow!("corrupt safetensors file {}: {e}", path.display()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let get = |k: &str| meta.get(k).with_context(|| format!("{}: metadata `{k}` is missing", path.display()));
    let steps: usize = get("steps")?.parse().with_context(|| format!("{}: metadata `steps`", path.display()))?;
    let updates: usize = get("updates")?.parse().with_context(|| format!("{}: metadata `updates`", path.display()))?;
    let order: Vec<String> =
        serde_json::from_str(get("params")?).with_context(|| format!("{}: metadata `params`", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("corrupt safetensors file {}: {e}", path.display()))?;
    let f32s = |name: &str| -> Result<Vec<f32>> {
        let t = st.tensor(name).map_err(|e| anyhow!("{}: tensor `{name}`: {e}", path.display()))?;
        if t.dtype() != Dtype::F32 {
            bail!("{}: tensor `{name}` is {:?}, expected F32", path.display(), t.dtype());
        }
        Ok(t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    };
    let moments = order
        .into_iter()
        .map(|n| Ok((n.clone(), f32s(&format!("m.{n}"))?, f32s(&format!("v.{n}"))?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(OptimizerState { steps, updates, moments })
}

/// Removes stray `.tmp-step-*` directories (left by a crash during a save).
pub fn clean_stray_temps(run_dir: &Path) -> Result<usize> {
    let mut n = 0;
    if !run_dir.is_dir() {
        return Ok(0);
    }
    for e in fs::read_dir(run_dir).with_context(|| format!("cannot list {}", run_dir.display()))? {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(".tmp-step-") {
            fs::remove_dir_all(e.path()).with_context(|| format!("cannot remove stray {}", e.path().display()))?;
            n += 1;
        }
    }
    Ok(n)
}

/// First half of a save: writes and fsyncs `run_dir/.tmp-step-N` and returns its path. Nothing
/// visible to `latest`/`load_latest` changes. (Exposed so a crash between writing and
/// committing can be tested.)
pub fn write_temp(run_dir: &Path, req: &SaveRequest) -> Result<PathBuf> {
    fs::create_dir_all(run_dir).with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
    clean_stray_temps(run_dir)?;
    let tmp = run_dir.join(tmp_dir_name(req.state.step));
    fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let src = req.source_model_dir;
    let cfg = ModelConfig::from_file(&src.join("config.json"))?;
    for name in MODEL_SIDE_FILES {
        let from = src.join(name);
        if from.is_file() {
            let to = tmp.join(name);
            fs::copy(&from, &to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
            fsync_file(&to)?;
        }
    }
    write_model_safetensors(&tmp, req.weights, &cfg, req.dtype)?;
    if let Some(opt) = req.optimizer {
        write_optimizer(&tmp.join(OPTIMIZER_FILE), opt)?;
    }
    // Last: its presence marks a fully written directory.
    write_synced(&tmp.join(TRAINER_STATE_FILE), serde_json::to_string_pretty(req.state)?.as_bytes())?;
    fsync_dir(&tmp)?;
    Ok(tmp)
}

/// Second half of a save: renames `.tmp-step-N` to `step-N`, points `latest` at it, then
/// deletes the oldest checkpoints beyond `keep_last` (never the new one).
pub fn commit(run_dir: &Path, step: usize, keep_last: usize) -> Result<PathBuf> {
    let tmp = run_dir.join(tmp_dir_name(step));
    if !tmp.join(TRAINER_STATE_FILE).is_file() {
        bail!("{} is not a complete checkpoint (no {TRAINER_STATE_FILE})", tmp.display());
    }
    let dst = run_dir.join(step_dir_name(step));
    let mut old = None;
    if dst.exists() {
        // Saving the same step again (e.g. after a resume): move the old one aside first.
        let aside = run_dir.join(format!(".old-step-{step}"));
        let _ = fs::remove_dir_all(&aside);
        fs::rename(&dst, &aside).with_context(|| format!("cannot move {} aside", dst.display()))?;
        old = Some(aside);
    }
    fs::rename(&tmp, &dst).with_context(|| format!("cannot rename {} to {}", tmp.display(), dst.display()))?;
    fsync_dir(run_dir)?;
    let latest_tmp = run_dir.join(".latest.tmp");
    write_synced(&latest_tmp, format!("{}\n", step_dir_name(step)).as_bytes())?;
    let latest = run_dir.join(LATEST_FILE);
    fs::rename(&latest_tmp, &latest).with_context(|| format!("cannot update {}", latest.display()))?;
    fsync_dir(run_dir)?;
    if let Some(aside) = old {
        fs::remove_dir_all(&aside).with_context(|| format!("cannot remove {}", aside.display()))?;
    }
    prune(run_dir, keep_last.max(1), step)?;
    Ok(dst)
}

/// Saves a checkpoint atomically (see the module docs); returns `run_dir/step-N`.
pub fn save(run_dir: &Path, req: &SaveRequest, keep_last: usize) -> Result<PathBuf> {
    write_temp(run_dir, req)?;
    commit(run_dir, req.state.step, keep_last)
}

/// Complete checkpoints in `run_dir` as (step, path), oldest first.
pub fn list(run_dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut out = Vec::new();
    if !run_dir.is_dir() {
        return Ok(out);
    }
    for e in fs::read_dir(run_dir).with_context(|| format!("cannot list {}", run_dir.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_prefix("step-").and_then(|s| s.parse::<usize>().ok()) {
            if e.path().join(TRAINER_STATE_FILE).is_file() {
                out.push((n, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn prune(run_dir: &Path, keep_last: usize, keep_step: usize) -> Result<()> {
    let all = list(run_dir)?;
    let excess = all.len().saturating_sub(keep_last);
    for (n, path) in all.into_iter().take(excess) {
        if n != keep_step {
            fs::remove_dir_all(&path).with_context(|| format!("cannot remove old checkpoint {}", path.display()))?;
        }
    }
    Ok(())
}

/// The checkpoint `latest` points to; without a `latest` file, the newest complete `step-N`;
/// `None` when the run has none.
pub fn latest(run_dir: &Path) -> Result<Option<PathBuf>> {
    let p = run_dir.join(LATEST_FILE);
    if p.is_file() {
        let name = fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
        let dir = run_dir.join(name.trim());
        if !dir.join(TRAINER_STATE_FILE).is_file() {
            bail!("{} points to {}, which is not a complete checkpoint", p.display(), dir.display());
        }
        return Ok(Some(dir));
    }
    Ok(list(run_dir)?.pop().map(|(_, p)| p))
}

/// Reads a checkpoint directory: the model (via `Model::load`), optimizer state and trainer state.
pub fn load(dir: &Path) -> Result<Loaded> {
    let sp = dir.join(TRAINER_STATE_FILE);
    let text = fs::read_to_string(&sp).with_context(|| format!("cannot read {}", sp.display()))?;
    let state: TrainerState = serde_json::from_str(&text).with_context(|| format!("invalid {}", sp.display()))?;
    let op = dir.join(OPTIMIZER_FILE);
    let optimizer = if op.is_file() { Some(read_optimizer(&op)?) } else { None };
    let model = Model::load(dir)?;
    Ok(Loaded { dir: dir.to_path_buf(), model, optimizer, state })
}

/// `load(latest(run_dir))`, or `None` for a fresh run.
pub fn load_latest(run_dir: &Path) -> Result<Option<Loaded>> {
    latest(run_dir)?.map(|d| load(&d)).transpose()
}
