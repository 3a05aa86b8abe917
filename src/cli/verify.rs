//! `scalerl verify`: grade responses against gold answers.
//!
//! * `scalerl verify --input cases.jsonl` reads JSON lines with `response`
//!   and `gold` (a string, a number, or a list of acceptable answers) and
//!   writes every line back to stdout, in order, with `reward` and `reason`
//!   added; all other fields are kept byte-for-byte. `--input -` reads stdin.
//! * `scalerl verify --response TEXT --gold TEXT` grades one pair and prints
//!   `{"reward":…,"reason":…,"answer":…}`.

use crate::reward::{grade, grade_batch, Gold, Grade, RewardConfig};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct VerifyArgs {
    /// JSONL file with `response` and `gold` per line (`-` for stdin).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["response", "gold", "gold_json"])]
    pub input: Option<PathBuf>,
    /// A single response to grade (with --gold or --gold-json).
    #[arg(long, value_name = "TEXT")]
    pub response: Option<String>,
    /// The gold answer for --response, taken literally as one string.
    #[arg(long, value_name = "TEXT", conflicts_with = "gold_json")]
    pub gold: Option<String>,
    /// The gold for --response as JSON: a string, a number or a list.
    #[arg(long, value_name = "JSON")]
    pub gold_json: Option<String>,
    /// Do not require `</think>`: grade the whole response when it is absent.
    #[arg(long)]
    pub no_think_required: bool,
    /// Reward for a correct answer.
    #[arg(long, default_value_t = 1.0)]
    pub correct_reward: f32,
    /// Reward for anything else.
    #[arg(long, default_value_t = 0.0)]
    pub wrong_reward: f32,
    /// Wall-clock budget per grading, in milliseconds (safety net).
    #[arg(long, value_name = "MS")]
    pub time_budget_ms: Option<u64>,
    /// Deterministic work budget per grading (steps).
    #[arg(long, value_name = "N")]
    pub max_steps: Option<u64>,
}

impl VerifyArgs {
    fn config(&self) -> RewardConfig {
        let mut cfg = RewardConfig {
            require_think_close: !self.no_think_required,
            correct_reward: self.correct_reward,
            wrong_reward: self.wrong_reward,
            ..RewardConfig::default()
        };
        if let Some(ms) = self.time_budget_ms {
            cfg.time_budget = Duration::from_millis(ms);
        }
        if let Some(n) = self.max_steps {
            cfg.max_steps = n;
        }
        cfg
    }
}

pub fn run(args: &VerifyArgs) -> Result<()> {
    let cfg = args.config();
    if let Some(path) = &args.input {
        let stdout = std::io::stdout();
        let mut out = BufWriter::new(stdout.lock());
        if path.as_os_str() == "-" {
            verify_stream(
                BufReader::new(std::io::stdin().lock()),
                "<stdin>",
                &cfg,
                &mut out,
            )?;
        } else {
            let f = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            verify_stream(
                BufReader::new(f),
                &path.display().to_string(),
                &cfg,
                &mut out,
            )?;
        }
        out.flush()?;
        return Ok(());
    }
    let Some(response) = &args.response else {
        bail!("give --input FILE, or --response TEXT with --gold TEXT (or --gold-json JSON)");
    };
    let gold = match (&args.gold, &args.gold_json) {
        (Some(g), None) => Gold::One(g.clone()),
        (None, Some(j)) => {
            let v: serde_json::Value =
                serde_json::from_str(j).context("--gold-json is not valid JSON")?;
            Gold::from_json(&v)
                .context("--gold-json must be a string, a number or a list of them")?
        }
        _ => bail!("--response needs exactly one of --gold or --gold-json"),
    };
    let g = grade(response, &gold, &cfg);
    println!("{}", grade_json(&g));
    Ok(())
}

fn grade_json(g: &Grade) -> serde_json::Value {
    serde_json::json!({ "reward": g.reward, "reason": g.reason.as_str(), "answer": g.answer })
}

/// Lines graded per parallel batch: bounds memory on huge files while
/// keeping every core busy.
const CHUNK: usize = 4096;

/// Grades a JSONL stream; output lines are in input order. Blank lines are
/// passed through unchanged.
pub fn verify_stream<R: Read, W: Write>(
    input: BufReader<R>,
    name: &str,
    cfg: &RewardConfig,
    out: &mut W,
) -> Result<()> {
    let mut pending: Vec<Pending> = Vec::with_capacity(CHUNK);
    for (i, line) in input.lines().enumerate() {
        let lineno = i + 1;
        let line = line.with_context(|| format!("{name}:{lineno}: cannot read line"))?;
        match parse_line(line, name, lineno) {
            Ok(p) => pending.push(p),
            Err(e) => {
                // Lines before the bad one are still written, in order.
                flush(&mut pending, cfg, out)?;
                return Err(e);
            }
        }
        if pending.len() >= CHUNK {
            flush(&mut pending, cfg, out)?;
        }
    }
    flush(&mut pending, cfg, out)
}

struct Pending {
    line: String,
    /// `None` for a blank line.
    item: Option<(String, Gold, bool)>,
}

fn parse_line(line: String, name: &str, lineno: usize) -> Result<Pending> {
    if line.trim().is_empty() {
        return Ok(Pending { line, item: None });
    }
    let v: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("{name}:{lineno}: invalid JSON"))?;
    let obj = v
        .as_object()
        .with_context(|| format!("{name}:{lineno}: expected a JSON object"))?;
    let response = obj
        .get("response")
        .and_then(|r| r.as_str())
        .with_context(|| format!("{name}:{lineno}: missing string field `response`"))?
        .to_string();
    let gold = obj.get("gold").and_then(Gold::from_json).with_context(|| {
        format!("{name}:{lineno}: `gold` must be a string, a number or a list of them")
    })?;
    let has_ours = obj.contains_key("reward") || obj.contains_key("reason");
    Ok(Pending {
        line,
        item: Some((response, gold, has_ours)),
    })
}

fn flush<W: Write>(pending: &mut Vec<Pending>, cfg: &RewardConfig, out: &mut W) -> Result<()> {
    let items: Vec<(&str, &Gold)> = pending
        .iter()
        .filter_map(|p| p.item.as_ref().map(|(r, g, _)| (r.as_str(), g)))
        .collect();
    let grades = grade_batch(&items, cfg);
    let mut grades = grades.into_iter();
    for p in pending.drain(..) {
        let Some((_, _, has_ours)) = p.item else {
            writeln!(out, "{}", p.line)?;
            continue;
        };
        let g = grades.next().context("internal: grade count mismatch")?;
        writeln!(out, "{}", with_grade(&p.line, &g, has_ours)?)?;
    }
    Ok(())
}

/// The input line with `reward` and `reason` appended. Text splicing keeps
/// the other fields exactly as written (order, number formatting); a line
/// that already has these fields is re-serialized with them replaced.
fn with_grade(line: &str, g: &Grade, has_ours: bool) -> Result<String> {
    let reward = serde_json::to_string(&g.reward)?;
    if !has_ours {
        let body = line.trim_end();
        if let Some(head) = body.strip_suffix('}') {
            let head = head.trim_end();
            let sep = if head.ends_with('{') { "" } else { "," };
            return Ok(format!(
                "{head}{sep}\"reward\":{reward},\"reason\":\"{}\"}}",
                g.reason.as_str()
            ));
        }
    }
    let mut v: serde_json::Value = serde_json::from_str(line)?;
    if let Some(o) = v.as_object_mut() {
        o.insert("reward".into(), serde_json::json!(g.reward));
        o.insert("reason".into(), serde_json::json!(g.reason.as_str()));
    }
    Ok(serde_json::to_string(&v)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_str(input: &str) -> Result<String> {
        let mut out = Vec::new();
        verify_stream(
            BufReader::new(input.as_bytes()),
            "t.jsonl",
            &RewardConfig::default(),
            &mut out,
        )?;
        Ok(String::from_utf8(out)?)
    }

    #[test]
    fn jsonl_in_order_with_fields_kept() {
        let input = concat!(
            r#"{"id": 1, "response": "</think> \\boxed{5}", "gold": "5"}"#,
            "\n",
            r#"{"z": [1,2], "response": "</think> \\boxed{0.5}", "gold": ["1/3", "\\frac12"]}"#,
            "\n\n",
            r#"{"response": "no tag \\boxed{5}", "gold": 5, "reward": 7}"#,
            "\n"
        );
        let out = run_str(input).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with(r#"{"id": 1, "response""#));
        assert!(
            lines[0].ends_with(r#""reward":1.0,"reason":"correct"}"#),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains(r#""z": [1,2]"#) && lines[1].contains("correct"));
        assert_eq!(lines[2], "");
        let v: serde_json::Value = serde_json::from_str(lines[3]).unwrap();
        assert_eq!(v["reason"], "no_think_close");
        assert_eq!(v["reward"], 0.0);
    }

    #[test]
    fn bad_json_names_file_and_line() {
        let mut out = Vec::new();
        let input = "{\"response\": \"</think>\\\\boxed{1}\", \"gold\": \"1\"}\n{oops\n";
        let err = verify_stream(
            BufReader::new(input.as_bytes()),
            "t.jsonl",
            &RewardConfig::default(),
            &mut out,
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("t.jsonl:2"), "{msg}");
        // The good line before the bad one was written.
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("\"reason\":\"correct\""));
        let err = run_str("{\"response\": \"x\"}\n").unwrap_err();
        assert!(format!("{err:#}").contains("t.jsonl:1"));
    }
}
