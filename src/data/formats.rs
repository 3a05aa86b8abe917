//! Records in and out: DeepScaleR JSON (a list of objects), JSONL (one object per line) and
//! Parquet (see [`super::parquet`] for the shapes), chosen by the file extension (`.jsonl`,
//! `.parquet`; anything else is a JSON list, as the trainer reads it).
//!
//! A record gives a problem and a gold answer. Where they come from ([`Fields`]):
//! * by default `problem`, else `prompt`; and `answer`, else `reward_model.ground_truth` (verl);
//! * or any field named by an option, with dots reaching into nested objects/structs.
//!
//! A problem is a non-empty string, or a list of chat messages `{role, content}` as verl stores
//! its prompts: the last user message is the problem, and the prompt template's text around
//! `{problem}` (DeepScaleR's "Let's think step by step …" by default) is stripped from it, so
//! the trainer does not add it twice. The answer is a string, a number or a list of them.
//!
//! Every other field of a record is kept and written back to JSON/JSONL output; the problem and
//! answer are written as `problem` and `answer`, which the trainer and `scalerl eval` read.

use super::atomic::write_atomic;
use super::parquet;
use crate::reward::Gold;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Jsonl,
    Parquet,
}

impl Format {
    /// By extension: `.jsonl`, `.parquet`, anything else a JSON list (the trainer's rule).
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
            Some("jsonl") => Format::Jsonl,
            Some("parquet") => Format::Parquet,
            _ => Format::Json,
        }
    }
}

/// Where a record's problem and answer are.
#[derive(Debug, Clone, PartialEq)]
pub struct Fields {
    /// Field (dotted path) of the problem; `None`: `problem`, else `prompt`.
    pub problem: Option<String>,
    /// Field (dotted path) of the answer; `None`: `answer`, else `reward_model.ground_truth`.
    pub answer: Option<String>,
    /// The user-message template: its text around `{problem}` is stripped from chat-message
    /// problems when reading, and added when writing verl's shape.
    pub prompt_template: String,
}

impl Default for Fields {
    fn default() -> Self {
        Fields { problem: None, answer: None, prompt_template: crate::eval::DEEPSCALER_PROMPT_TEMPLATE.to_string() }
    }
}

/// One record.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub problem: String,
    /// The gold as written (a string, a number or a list of them); `None` when the record has
    /// none (absent or null).
    pub answer: Option<Value>,
    /// The rest of the record (Parquet rows as JSON), without the fields the problem and answer
    /// came from.
    pub rest: Map<String, Value>,
}

impl Item {
    /// The gold answer, when the record has a usable one.
    pub fn gold(&self) -> Option<Gold> {
        self.answer.as_ref().and_then(Gold::from_json).filter(|g| !g.answers().is_empty())
    }

    /// The record as written to JSON/JSONL: the other fields plus `problem` and `answer`.
    pub fn to_json(&self) -> Value {
        let mut o = self.rest.clone();
        o.insert("problem".into(), Value::String(self.problem.clone()));
        o.insert("answer".into(), self.answer.clone().unwrap_or(Value::Null));
        Value::Object(o)
    }
}

/// The records of one file, in file order (a record's index is its position here).
#[derive(Debug, Clone, PartialEq)]
pub struct DataFile {
    pub path: PathBuf,
    pub items: Vec<Item>,
}

impl DataFile {
    /// The path as reports and summaries show it.
    pub fn name(&self) -> String {
        self.path.display().to_string()
    }
}

/// Reads one file. `need_answer`: a record without an answer (absent or null) is an error;
/// otherwise it is kept with `answer: None` (for `filter`, whose job is to drop it). Errors name
/// the file and the record (0-based; JSONL adds the line).
pub fn read(path: &Path, fields: &Fields, need_answer: bool) -> Result<DataFile> {
    let items = match Format::of(path) {
        Format::Parquet => {
            let (columns, rows) = parquet::read_rows(path)?;
            let has = |c: &str| columns.iter().any(|x| x == c);
            // Columns are the same for every row: check them once, naming what the file has.
            for spec in [&fields.problem, &fields.answer].into_iter().flatten() {
                let top = spec.split('.').next().unwrap_or(spec);
                if !has(top) {
                    bail!("{}: no column `{top}` (the file has: {})", path.display(), columns.join(", "));
                }
            }
            if fields.problem.is_none() && !has("problem") && !has("prompt") {
                bail!(
                    "{}: no column `problem` nor verl's `prompt` (the file has: {}); name one with --problem-field",
                    path.display(),
                    columns.join(", ")
                );
            }
            let mut items = Vec::with_capacity(rows.len());
            for (i, row) in rows.into_iter().enumerate() {
                items.push(item(row, fields, need_answer).map_err(|e| anyhow!("{}: record {i}: {e}", path.display()))?);
            }
            items
        }
        format => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            parse_json_text(&text, format == Format::Jsonl, fields, need_answer)
                .map_err(|e| anyhow!("{}: {e}", path.display()))?
        }
    };
    Ok(DataFile { path: path.to_path_buf(), items })
}

/// The records of a JSON list or of JSONL text (errors name the record, not the file).
pub fn parse_json_text(text: &str, jsonl: bool, fields: &Fields, need_answer: bool) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    if jsonl {
        for (line, t) in text.lines().enumerate() {
            if t.trim().is_empty() {
                continue;
            }
            let i = items.len();
            let at = || format!("record {i} (line {})", line + 1);
            let v: Value = serde_json::from_str(t).map_err(|e| anyhow!("{}: invalid JSON: {e}", at()))?;
            items.push(object_item(v, fields, need_answer).map_err(|e| anyhow!("{}: {e}", at()))?);
        }
    } else {
        let v: Value = serde_json::from_str(text).map_err(|e| anyhow!("invalid JSON: {e}"))?;
        let Value::Array(records) = v else {
            bail!("expected a JSON list of records (or use the .jsonl extension for one record per line)");
        };
        for (i, r) in records.into_iter().enumerate() {
            items.push(object_item(r, fields, need_answer).map_err(|e| anyhow!("record {i}: {e}"))?);
        }
    }
    Ok(items)
}

fn object_item(v: Value, fields: &Fields, need_answer: bool) -> Result<Item> {
    match v {
        Value::Object(o) => item(o, fields, need_answer),
        other => bail!("expected an object, got {}", short(&other)),
    }
}

/// The problem and answer of one record, the rest kept.
fn item(mut rec: Map<String, Value>, fields: &Fields, need_answer: bool) -> Result<Item> {
    let problem_path = match &fields.problem {
        Some(p) => p.clone(),
        None if rec.contains_key("problem") => "problem".into(),
        None if rec.contains_key("prompt") => "prompt".into(),
        None => bail!("no `problem` field (nor verl's `prompt`)"),
    };
    let answer_path = match &fields.answer {
        Some(p) => Some(p.clone()),
        None if rec.contains_key("answer") => Some("answer".into()),
        None if rec.contains_key("reward_model") => Some("reward_model.ground_truth".into()),
        None => None,
    };
    let problem_value = lookup(&rec, &problem_path).with_context(|| format!("no `{problem_path}` field"))?;
    let problem = problem_text(problem_value, &fields.prompt_template).with_context(|| format!("`{problem_path}`"))?;
    let answer = match answer_path.as_deref().and_then(|p| lookup(&rec, p)) {
        None | Some(Value::Null) => None,
        Some(v) if Gold::from_json(v).is_some() => Some(v.clone()),
        Some(v) => bail!(
            "`{}` must be a string, a number or a list of them, got {}",
            answer_path.as_deref().unwrap_or("answer"),
            short(v)
        ),
    };
    if answer.is_none() && need_answer {
        bail!(
            "no answer (`{}` is missing or null); `scalerl data filter` drops such records",
            answer_path.as_deref().unwrap_or("answer")
        );
    }
    for path in [Some(problem_path.as_str()), answer_path.as_deref()].into_iter().flatten() {
        rec.remove(path.split('.').next().unwrap_or(path));
    }
    Ok(Item { problem, answer, rest: rec })
}

/// The value at a dotted path (`reward_model.ground_truth`).
fn lookup<'a>(rec: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut v = rec.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}

/// A problem string, or the last user message of a chat (template text around it stripped).
fn problem_text(v: &Value, template: &str) -> Result<String> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Array(messages) => {
            let user = messages
                .iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                .context("a list of chat messages without a `user` message")?;
            let content = user.get("content").and_then(Value::as_str).context("the user message has no string `content`")?;
            strip_template(content, template).to_string()
        }
        other => bail!("expected a string or a list of chat messages, got {}", short(other)),
    };
    if text.trim().is_empty() {
        bail!("the problem is empty");
    }
    Ok(text)
}

/// `content` without the template's text before and after `{problem}`, when it has both.
pub fn strip_template<'a>(content: &'a str, template: &str) -> &'a str {
    let Some((pre, post)) = template.split_once("{problem}") else {
        return content;
    };
    content
        .strip_prefix(pre)
        .and_then(|c| c.strip_suffix(post))
        .filter(|c| !c.trim().is_empty())
        .unwrap_or(content)
}

/// A JSON value for an error message, cut short.
fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// The layout of Parquet output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParquetShape {
    /// Columns `problem` and `answer` (a string, or a list of strings when any gold is a list).
    #[default]
    Plain,
    /// verl's: `data_source`, `prompt` (chat messages, the user turn rendered with the prompt
    /// template), `ability`, `reward_model {ground_truth, style}`, `extra_info {index}`.
    Verl,
}

/// How output is written.
#[derive(Debug, Clone, Default)]
pub struct OutputOptions {
    pub parquet_shape: ParquetShape,
    /// For verl's shape: the user message around `{problem}` (DeepScaleR's when empty).
    pub prompt_template: String,
}

/// Writes the records to `path` in the format of its extension, atomically: nothing appears (or
/// changes) at `path` unless the whole file was written.
pub fn write(path: &Path, items: &[&Item], opts: &OutputOptions) -> Result<()> {
    write_atomic(path, &encode(path, items, opts)?)
}

/// The bytes [`write`] would write (build every output before writing any).
pub fn encode(path: &Path, items: &[&Item], opts: &OutputOptions) -> Result<Vec<u8>> {
    Ok(match Format::of(path) {
        Format::Json => {
            let list: Vec<Value> = items.iter().map(|it| it.to_json()).collect();
            let mut b = serde_json::to_vec_pretty(&list)?;
            b.push(b'\n');
            b
        }
        Format::Jsonl => {
            let mut b = Vec::new();
            for it in items {
                serde_json::to_writer(&mut b, &it.to_json())?;
                b.push(b'\n');
            }
            b
        }
        Format::Parquet => {
            let template = if opts.prompt_template.is_empty() {
                crate::eval::DEEPSCALER_PROMPT_TEMPLATE
            } else {
                opts.prompt_template.as_str()
            };
            parquet::to_bytes(items, opts.parquet_shape, template).with_context(|| format!("cannot encode {}", path.display()))?
        }
    })
}
