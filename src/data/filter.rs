//! `scalerl data filter`: keep only problems whose gold answer the math reward can check.
//!
//! Every acceptable answer of a record's gold must be:
//! * present and not empty (`no_answer`, `empty`);
//! * not prose: a sentence is not an answer a grader can compare (`prose`: four or more words of
//!   two or more letters, LaTeX commands aside, one of them a function word such as "is", "the",
//!   "where"; a unit after a number or a list of names is not prose);
//! * parsed by the reward's parser (`unparsable`, `timeout`), and
//! * graded correct when a response boxes it (`self_check`): `</think> \boxed{gold}` graded
//!   against the whole gold with the reward's rules. This catches golds that do not survive the
//!   round trip through `\boxed{}` (unbalanced braces, a nested box), whatever the parser says.

use super::formats::{DataFile, Item};
use super::report::{Action, Outcome, Reason, ReportLine};
use crate::reward::{check_answer, grade, Gold, Reason as Grade, RewardConfig};
use rayon::prelude::*;

/// Why a gold cannot be checked, and which answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ungradable {
    /// `no_answer`, `empty`, `prose`, `unparsable`, `timeout` or `self_check`.
    pub kind: &'static str,
    pub detail: String,
}

const FUNCTION_WORDS: &[&str] = &[
    "is", "are", "the", "where", "when", "if", "for", "with", "which", "that", "there", "of", "to", "and", "be", "can",
    "an", "it", "not", "no",
];

/// Is this answer a sentence rather than a value (see the module doc)?
pub fn is_prose(answer: &str) -> bool {
    let mut words = Vec::new();
    let mut chars = answer.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            // A LaTeX command name is not a word.
            while chars.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
                chars.next();
            }
        } else if c.is_alphabetic() {
            let mut w = c.to_lowercase().to_string();
            while let Some(&n) = chars.peek().filter(|n| n.is_alphabetic()) {
                w.extend(n.to_lowercase());
                chars.next();
            }
            if w.chars().count() >= 2 {
                words.push(w);
            }
        }
    }
    words.len() >= 4 && words.iter().any(|w| FUNCTION_WORDS.contains(&w.as_str()))
}

/// A parseable gold no answer text-matches by accident: a `ParseError` from `check_answer`
/// against it can only come from the answer side, i.e. from the text being probed.
const PROBE_GOLD: &str = "0";

/// An answer as an error detail shows it (long ones cut).
fn clip(a: &str) -> String {
    match a.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &a[..i]),
        None => a.to_string(),
    }
}

/// Checks one record's gold (see the module doc).
pub fn check(item: &Item, cfg: &RewardConfig) -> Result<(), Ungradable> {
    let fail = |kind, detail: String| Err(Ungradable { kind, detail });
    let Some(gold) = item.gold() else {
        return fail("no_answer", "the record has no answer".into());
    };
    for a in gold.answers() {
        let shown = clip(a);
        if a.trim().trim_matches('$').trim().is_empty() {
            return fail("empty", format!("empty answer `{shown}`"));
        }
        if is_prose(a) {
            return fail("prose", format!("`{shown}` is a sentence, not a value"));
        }
        match check_answer(a, &Gold::One(PROBE_GOLD.into()), cfg) {
            Grade::ParseError => return fail("unparsable", format!("the reward cannot parse `{shown}`")),
            Grade::Timeout => return fail("timeout", format!("parsing `{shown}` ran out of budget")),
            _ => {}
        }
        let g = grade(&format!("{} \\boxed{{{a}}}", cfg.think_close_tag), &gold, cfg);
        if g.reason != Grade::Correct {
            return fail("self_check", format!("a response boxing `{shown}` is graded {}", g.reason));
        }
    }
    Ok(())
}

/// Keeps the records with a checkable gold; the others are removed and reported (`ungradable`,
/// the detail saying why).
pub fn filter(files: &[DataFile], cfg: &RewardConfig, progress: &indicatif::ProgressBar) -> Outcome {
    let refs = super::dedup::flatten(files);
    progress.set_length(refs.len() as u64);
    let verdicts: Vec<Result<(), Ungradable>> = refs
        .par_iter()
        .map(|&(f, i)| {
            progress.inc(1);
            check(&files[f].items[i], cfg)
        })
        .collect();
    let mut out = Outcome::keep_all(files);
    for (&(f, i), v) in refs.iter().zip(verdicts) {
        if let Err(u) = v {
            out.keep[f][i] = false;
            out.report.push(ReportLine {
                file: files[f].name(),
                index: i,
                reason: Reason::Ungradable,
                action: Action::Removed,
                match_file: None,
                match_index: None,
                similarity: None,
                detail: Some(format!("{}: {}", u.kind, u.detail)),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prose_is_sentences_not_units_or_names() {
        assert!(is_prose("$f(x)=ax+b$, where $b$ is an arbitrary integer"));
        assert!(is_prose("There are infinitely many such numbers"));
        assert!(!is_prose("5225 \\text{ cubic inches}"));
        assert!(!is_prose("\\text{Softball, Kickball, Picnic}"));
        assert!(!is_prose("\\frac{\\sqrt{3}}{2}"));
        assert!(!is_prose("\\text{two lines}"));
    }
}
