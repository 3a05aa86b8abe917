//! The training set: DeepScaleR JSON (a list of records with `problem` and `answer`) or JSONL
//! (one record per line), answers as strings, numbers or lists (`Gold::from_json`). Records
//! without a usable problem or answer are skipped and counted; a record that is not a JSON
//! object, or a line that is not JSON, is an error naming the file and record index.
//!
//! Order: epoch e visits the records in a permutation that depends only on (seed, e)
//! (Fisher–Yates with `util::Rng`), so a saved `Cursor` (epoch, index) resumes exactly.

use crate::reward::Gold;
use crate::util::{mix, Rng};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One training problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub problem: String,
    pub gold: Gold,
    /// Position in the loaded data set (files concatenated, skipped records excluded).
    pub id: usize,
}

/// What was skipped while loading (and later filtered), by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipCounts {
    /// No `problem`, or not a non-empty string.
    pub no_problem: usize,
    /// No `answer`, or not a string, number or list of them.
    pub no_answer: usize,
    /// Removed by `Dataset::filter` (e.g. prompts over the token limit).
    pub filtered: usize,
}

impl SkipCounts {
    pub fn total(&self) -> usize {
        self.no_problem + self.no_answer + self.filtered
    }
}

/// Where the next batch starts: record `index` of epoch `epoch`'s order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    pub index: usize,
}

/// The loaded records with a resumable, seeded order.
#[derive(Debug, Clone)]
pub struct Dataset {
    records: Vec<Record>,
    pub skipped: SkipCounts,
    pub files: Vec<PathBuf>,
    seed: u64,
    shuffle: bool,
    cursor: Cursor,
    /// The permutation of `cursor.epoch` (cached).
    order: Vec<usize>,
}

/// The visiting order of epoch `epoch`: a permutation of 0..n that depends only on (seed, epoch).
pub fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    if !shuffle {
        return (0..n).collect();
    }
    Rng::new(mix(seed ^ 0x5CA1_E5EE_D000_0000) ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03)).permutation(n)
}

/// Parses records of one file's text. `jsonl`: one record per non-blank line. Errors name the
/// record index (0-based record for JSON, 1-based line for JSONL), not the file.
pub fn parse_records(text: &str, jsonl: bool, skipped: &mut SkipCounts) -> Result<Vec<(String, Gold)>> {
    let mut out = Vec::new();
    let mut take = |v: &serde_json::Value, what: &dyn Fn() -> String| -> Result<()> {
        let serde_json::Value::Object(obj) = v else {
            bail!("{}: expected a JSON object with `problem` and `answer`", what());
        };
        let problem = match obj.get("problem") {
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.clone(),
            _ => {
                skipped.no_problem += 1;
                return Ok(());
            }
        };
        match obj.get("answer").and_then(Gold::from_json) {
            Some(g) if !g.answers().is_empty() => out.push((problem, g)),
            _ => skipped.no_answer += 1,
        }
        Ok(())
    };
    if jsonl {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| anyhow!("line {}: invalid JSON: {e}", i + 1))?;
            take(&v, &|| format!("line {}", i + 1))?;
        }
    } else {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| anyhow!("invalid JSON: {e}"))?;
        let serde_json::Value::Array(records) = v else {
            bail!("expected a JSON list of records with `problem` and `answer`");
        };
        for (i, r) in records.iter().enumerate() {
            take(r, &|| format!("record {i}"))?;
        }
    }
    Ok(out)
}

impl Dataset {
    /// Loads and concatenates the files (`.jsonl` → JSONL, `.parquet` → Parquet, anything else →
    /// a JSON list).
    pub fn load(paths: &[PathBuf], seed: u64, shuffle: bool) -> Result<Dataset> {
        if paths.is_empty() {
            bail!("no training files given (data.train is empty)");
        }
        let mut skipped = SkipCounts::default();
        let mut all = Vec::new();
        for p in paths {
            if crate::data::formats::Format::of(p) == crate::data::formats::Format::Parquet {
                all.extend(parquet_records(p, &mut skipped)?);
                continue;
            }
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read training file {}", p.display()))?;
            let jsonl = p.extension().is_some_and(|e| e == "jsonl");
            let recs = parse_records(&text, jsonl, &mut skipped).map_err(|e| anyhow!("{}: {e}", p.display()))?;
            all.extend(recs);
        }
        let ds = Self::from_records(all, skipped, seed, shuffle)?;
        Ok(Dataset { files: paths.to_vec(), ..ds })
    }

    /// From already parsed (problem, gold) pairs.
    pub fn from_records(recs: Vec<(String, Gold)>, skipped: SkipCounts, seed: u64, shuffle: bool) -> Result<Dataset> {
        if recs.is_empty() {
            bail!("the training set has no usable record ({} skipped)", skipped.total());
        }
        let records: Vec<Record> =
            recs.into_iter().enumerate().map(|(id, (problem, gold))| Record { problem, gold, id }).collect();
        let order = epoch_order(records.len(), seed, 0, shuffle);
        Ok(Dataset { records, skipped, files: Vec::new(), seed, shuffle, cursor: Cursor::default(), order })
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Keeps the records for which `keep` is true (e.g. prompt ≤ max_prompt_len tokens), counts
    /// the others in `skipped.filtered`, renumbers ids and resets the cursor to the start. Call
    /// it before training (and identically on resume, before `set_cursor`). Returns the number
    /// removed.
    pub fn filter(&mut self, mut keep: impl FnMut(&Record) -> bool) -> Result<usize> {
        let before = self.records.len();
        self.records.retain(|r| keep(r));
        let removed = before - self.records.len();
        if self.records.is_empty() {
            bail!("every training record was filtered out ({removed} removed)");
        }
        for (i, r) in self.records.iter_mut().enumerate() {
            r.id = i;
        }
        self.skipped.filtered += removed;
        self.cursor = Cursor::default();
        self.order = epoch_order(self.records.len(), self.seed, 0, self.shuffle);
        Ok(removed)
    }

    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// Restores a saved cursor (the data set must be loaded and filtered the same way).
    pub fn set_cursor(&mut self, c: Cursor) -> Result<()> {
        if c.index > self.records.len() {
            bail!("data cursor index {} is past the {} records of the training set", c.index, self.records.len());
        }
        if c.epoch != self.cursor.epoch || self.order.len() != self.records.len() {
            self.order = epoch_order(self.records.len(), self.seed, c.epoch, self.shuffle);
        }
        self.cursor = c;
        self.roll_epoch();
        Ok(())
    }

    /// The next `k` records, continuing into the next epoch (reshuffled) when one runs out.
    pub fn next_batch(&mut self, k: usize) -> Vec<Record> {
        let mut out = Vec::with_capacity(k);
        while out.len() < k {
            self.roll_epoch();
            out.push(self.records[self.order[self.cursor.index]].clone());
            self.cursor.index += 1;
        }
        // Canonical form: a finished epoch reads as (epoch + 1, 0).
        self.roll_epoch();
        out
    }

    fn roll_epoch(&mut self) {
        if self.cursor.index >= self.records.len() {
            self.cursor = Cursor { epoch: self.cursor.epoch + 1, index: 0 };
            self.order = epoch_order(self.records.len(), self.seed, self.cursor.epoch, self.shuffle);
        }
    }

    /// Steps per epoch at `batch` prompts per step (the last partial batch spills over).
    pub fn steps_per_epoch(&self, batch: usize) -> usize {
        self.records.len().div_ceil(batch.max(1))
    }
}

/// The records of a Parquet file: plain `problem`/`answer` columns or verl's layout (see
/// `crate::data::formats`). Records without a usable answer are skipped and counted, as in JSON;
/// a missing or empty problem is an error naming the file and record.
fn parquet_records(path: &std::path::Path, skipped: &mut SkipCounts) -> Result<Vec<(String, Gold)>> {
    let file = crate::data::read(path, &crate::data::Fields::default(), false)?;
    let mut out = Vec::with_capacity(file.items.len());
    for it in file.items {
        match it.gold() {
            Some(g) => out.push((it.problem, g)),
            None => skipped.no_answer += 1,
        }
    }
    Ok(out)
}
