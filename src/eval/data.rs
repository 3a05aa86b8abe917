//! DeepScaleR test files: a JSON list of records with `problem` and `answer` (a string, a number
//! or a list of them); other fields are ignored.
use crate::reward::Gold;
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;

/// One problem of a benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub problem: String,
    pub gold: Gold,
}

/// A named list of problems (the name is the file stem: `aime`, `math`, …).
#[derive(Debug, Clone, PartialEq)]
pub struct Benchmark {
    pub name: String,
    pub problems: Vec<Problem>,
}

impl Benchmark {
    /// Reads a DeepScaleR test file (a JSON list; JSONL and Parquet through `crate::data`).
    /// Errors name the file and, for a bad record, its index.
    pub fn load(path: &Path) -> Result<Benchmark> {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| anyhow!("{}: cannot name a benchmark after this path", path.display()))?
            .to_string();
        if crate::data::formats::Format::of(path) != crate::data::formats::Format::Json {
            return Benchmark::from_data_file(&name, path);
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Benchmark::from_json_str(&name, &text).map_err(|e| anyhow!("{}: {e}", path.display()))
    }

    /// Parses the JSON text of a test file (errors name the record index, not the file).
    pub fn from_json_str(name: &str, text: &str) -> Result<Benchmark> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| anyhow!("invalid JSON: {e}"))?;
        let serde_json::Value::Array(records) = v else {
            bail!("expected a JSON list of records with `problem` and `answer`");
        };
        if records.is_empty() {
            bail!("the file holds no records");
        }
        let mut problems = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let Some(obj) = r.as_object() else {
                bail!("record {i}: expected an object with `problem` and `answer`");
            };
            let problem = match obj.get("problem") {
                Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.clone(),
                Some(serde_json::Value::String(_)) => bail!("record {i}: `problem` is empty"),
                Some(_) => bail!("record {i}: `problem` is not a string"),
                None => bail!("record {i}: no `problem` field"),
            };
            let answer = obj.get("answer").ok_or_else(|| anyhow!("record {i}: no `answer` field"))?;
            let gold = Gold::from_json(answer).ok_or_else(|| {
                anyhow!("record {i}: `answer` must be a string, a number or a list of them, got {answer}")
            })?;
            if gold.answers().is_empty() {
                bail!("record {i}: `answer` is an empty list");
            }
            problems.push(Problem { problem, gold });
        }
        Ok(Benchmark { name: name.to_string(), problems })
    }

    /// A JSONL or Parquet test file (plain `problem`/`answer` fields or verl's layout, see
    /// `crate::data::formats`); every record needs a problem and a non-empty answer.
    pub fn from_data_file(name: &str, path: &Path) -> Result<Benchmark> {
        let file = crate::data::read(path, &crate::data::Fields::default(), true)?;
        if file.items.is_empty() {
            bail!("{}: the file holds no records", path.display());
        }
        let mut problems = Vec::with_capacity(file.items.len());
        for (i, it) in file.items.into_iter().enumerate() {
            let gold = it.gold().ok_or_else(|| anyhow!("{}: record {i}: `answer` is an empty list", path.display()))?;
            problems.push(Problem { problem: it.problem, gold });
        }
        Ok(Benchmark { name: name.to_string(), problems })
    }
}
