//! The report: one JSON line per removed or flagged record (and, when asked, per declined
//! candidate pair), naming the record by file and index, why, and what it matched.
//!
//! `{"file":"train/math.json","index":12,"reason":"near_duplicate","action":"removed",
//!   "match_file":"test/math.json","match_index":3,"similarity":0.91}`

use super::formats::{DataFile, Item};
use serde::Serialize;
use std::collections::BTreeMap;

/// Why a record is in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Equal after normalisation.
    Exact,
    /// MinHash/Jaccard similarity at or over the threshold, numbers unchanged.
    NearDuplicate,
    /// A long n-gram shared with an evaluation problem that is not boilerplate, confirmed by
    /// whole-problem similarity.
    Overlap,
    /// The same text with other numbers.
    Templated,
    /// The gold answer cannot be checked by the math reward (`detail` says why).
    Ungradable,
    /// A declined pair: every shared long n-gram is boilerplate (frequent across the corpus).
    BoilerplateOnly,
    /// A declined pair: a rare long n-gram is shared, but the problems are not similar overall.
    Dissimilar,
    /// The prompt is longer than `max_prompt_len` tokens (`stats`).
    TooLong,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Exact => "exact",
            Reason::NearDuplicate => "near_duplicate",
            Reason::Overlap => "overlap",
            Reason::Templated => "templated",
            Reason::Ungradable => "ungradable",
            Reason::BoilerplateOnly => "boilerplate_only",
            Reason::Dissimilar => "dissimilar",
            Reason::TooLong => "too_long",
        }
    }
}

/// What happened to the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Not in the output.
    Removed,
    /// Kept in the output, reported for the user to decide (templated variants by default).
    Flagged,
    /// A candidate pair the rules looked at and did not count as a match (kept).
    Declined,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Removed => "removed",
            Action::Flagged => "flagged",
            Action::Declined => "declined",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportLine {
    pub file: String,
    /// 0-based position of the record in its file.
    pub index: usize,
    pub reason: Reason,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_index: Option<usize>,
    /// Rounded to 4 decimals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What a job decided: which records stay (per file, per record) and the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub keep: Vec<Vec<bool>>,
    pub report: Vec<ReportLine>,
}

impl Outcome {
    /// Everything kept so far, before any report line.
    pub fn keep_all(files: &[DataFile]) -> Outcome {
        Outcome { keep: files.iter().map(|f| vec![true; f.items.len()]).collect(), report: Vec::new() }
    }

    /// The kept records of all files, in order (what `--out` gets).
    pub fn kept<'a>(&self, files: &'a [DataFile]) -> Vec<&'a Item> {
        files
            .iter()
            .zip(&self.keep)
            .flat_map(|(f, k)| f.items.iter().zip(k).filter(|(_, &keep)| keep).map(|(it, _)| it))
            .collect()
    }

    pub fn removed(&self) -> usize {
        self.keep.iter().flatten().filter(|&&k| !k).count()
    }
}

/// A similarity as reported (4 decimals keep lines short and diffs stable).
pub fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// The report as JSONL text.
pub fn to_jsonl(lines: &[ReportLine]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for l in lines {
        serde_json::to_writer(&mut out, l)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Lines counted by (reason, action), for summaries.
pub fn counts(lines: &[ReportLine]) -> BTreeMap<(Reason, Action), usize> {
    let mut c = BTreeMap::new();
    for l in lines {
        *c.entry((l.reason, l.action)).or_insert(0) += 1;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_serialise_as_documented() {
        let l = ReportLine {
            file: "t.json".into(),
            index: 3,
            reason: Reason::NearDuplicate,
            action: Action::Removed,
            match_file: Some("e.json".into()),
            match_index: Some(0),
            similarity: Some(round4(0.912345)),
            detail: None,
        };
        let text = String::from_utf8(to_jsonl(&[l]).unwrap()).unwrap();
        assert_eq!(
            text,
            "{\"file\":\"t.json\",\"index\":3,\"reason\":\"near_duplicate\",\"action\":\"removed\",\
             \"match_file\":\"e.json\",\"match_index\":0,\"similarity\":0.9123}\n"
        );
    }
}
