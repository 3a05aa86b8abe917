//! `scalerl data stats`: what a data set holds — the kinds of its gold answers and the length of
//! its prompts in tokens, as the trainer builds them (prompt template, then one user turn of the
//! chat template, under the model's tokenizer), with the share over `max_prompt_len` (the
//! trainer drops those prompts).

use super::formats::Item;
use crate::model::{ChatTemplate, TextTokenizer};
use anyhow::{anyhow, Result};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// The kind of one answer: `integer`, `decimal`, `fraction`, `choice` (A–E), `matrix`,
/// `tuple_or_set` (tuples, intervals, sets, lists), `equation` (=, <, >, ≤, ≥), `text`
/// (words), `expression` (anything else: radicals, π, variables), or `empty`.
pub fn answer_kind(answer: &str) -> &'static str {
    let a = answer.trim().trim_matches('$').trim();
    let bare: String = a.chars().filter(|c| !c.is_whitespace()).collect();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let unsigned = bare.strip_prefix('-').unwrap_or(&bare);
    let no_commas = unsigned.replace(',', "");
    if bare.is_empty() {
        "empty"
    } else if digits(unsigned) || (unsigned.contains(',') && digits(&no_commas) && thousands(unsigned)) {
        "integer"
    } else if unsigned.split_once('.').is_some_and(|(i, f)| (i.is_empty() || digits(i)) && digits(f)) {
        "decimal"
    } else if is_fraction(unsigned) {
        "fraction"
    } else if is_choice(&bare) {
        "choice"
    } else if bare.contains("matrix}") {
        "matrix"
    } else if bare.contains(',') || bare.starts_with("\\{") {
        "tuple_or_set"
    } else if ["=", "<", ">", "\\le", "\\ge", "\\neq"].iter().any(|op| bare.contains(op)) {
        "equation"
    } else if is_text(a) {
        "text"
    } else {
        "expression"
    }
}

/// `1,234,567`: groups of three after the first.
fn thousands(s: &str) -> bool {
    let mut parts = s.split(',');
    parts.next().is_some_and(|h| (1..=3).contains(&h.len())) && parts.all(|p| p.len() == 3)
}

/// `3/4`, `\frac{3}{4}`, `\dfrac34`.
fn is_fraction(s: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((n, d)) = s.split_once('/') {
        return digits(n) && digits(d);
    }
    let Some(rest) = ["\\frac", "\\dfrac", "\\tfrac"].iter().find_map(|p| s.strip_prefix(p)) else {
        return false;
    };
    let parts: Vec<&str> = rest.split(['{', '}']).filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [n, d] => digits(n) && digits(d),
        [nd] => nd.len() == 2 && digits(nd),
        _ => false,
    }
}

/// `C`, `(C)`, `\text{(C)}`, `\textbf{(C)}`.
fn is_choice(s: &str) -> bool {
    let inner = ["\\textbf{", "\\text{", "\\mathrm{"]
        .iter()
        .find_map(|p| s.strip_prefix(p).and_then(|r| r.strip_suffix('}')))
        .unwrap_or(s);
    let inner = inner.strip_prefix('(').and_then(|r| r.strip_suffix(')')).unwrap_or(inner);
    inner.len() == 1 && inner.bytes().all(|b| (b'A'..=b'E').contains(&b))
}

/// Words only (after LaTeX commands): a name, a day, "odd".
fn is_text(a: &str) -> bool {
    let mut letters = 0;
    let mut rest = a;
    while let Some(c) = rest.chars().next() {
        if c == '\\' {
            rest = rest[1..].trim_start_matches(|c: char| c.is_ascii_alphabetic());
            continue;
        }
        if c.is_ascii_digit() {
            return false;
        }
        if c.is_alphabetic() {
            letters += 1;
        }
        rest = &rest[c.len_utf8()..];
    }
    letters >= 3
}

/// Lengths summarised.
#[derive(Debug, Clone, PartialEq)]
pub struct LengthStats {
    pub count: usize,
    pub mean: f64,
    pub p50: usize,
    pub p90: usize,
    pub p99: usize,
    pub max: usize,
    pub limit: usize,
    /// How many are longer than `limit`.
    pub over: usize,
}

/// Summary of `lens` (nearest-rank percentiles) against `limit`.
pub fn length_stats(lens: &[usize], limit: usize) -> LengthStats {
    let mut s = lens.to_vec();
    s.sort_unstable();
    let pct = |p: f64| if s.is_empty() { 0 } else { s[(((p * s.len() as f64).ceil() as usize).max(1) - 1).min(s.len() - 1)] };
    LengthStats {
        count: s.len(),
        mean: if s.is_empty() { 0.0 } else { s.iter().sum::<usize>() as f64 / s.len() as f64 },
        p50: pct(0.5),
        p90: pct(0.9),
        p99: pct(0.99),
        max: s.last().copied().unwrap_or(0),
        limit,
        over: s.iter().filter(|&&l| l > limit).count(),
    }
}

/// Records per answer kind (a record's first acceptable answer; `missing` without a gold), and
/// how many records have several acceptable answers.
pub fn answer_kinds(items: &[&Item]) -> (BTreeMap<&'static str, usize>, usize) {
    let mut kinds = BTreeMap::new();
    let mut several = 0;
    for it in items {
        let kind = match it.gold() {
            Some(g) => {
                several += usize::from(g.answers().len() > 1);
                answer_kind(&g.answers()[0])
            }
            None => "missing",
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    (kinds, several)
}

/// Token count of every record's prompt as the trainer builds it.
pub fn prompt_lengths(items: &[&Item], tok: &TextTokenizer, chat: ChatTemplate, template: &str) -> Result<Vec<usize>> {
    items
        .par_iter()
        .enumerate()
        .map(|(i, it)| {
            chat.encode_user_turn(tok, &crate::eval::render_prompt(template, &it.problem))
                .map(|t| t.len())
                .map_err(|e| anyhow!("record {i}: {e:#}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let cases = [
            ("42", "integer"),
            ("-7", "integer"),
            ("1,000", "integer"),
            ("0.25", "decimal"),
            ("\\frac{3}{4}", "fraction"),
            ("\\dfrac34", "fraction"),
            ("-3/4", "fraction"),
            ("\\text{(C)}", "choice"),
            ("(1, 2)", "tuple_or_set"),
            ("[0, \\infty)", "tuple_or_set"),
            ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "matrix"),
            ("y = 2x + 1", "equation"),
            ("\\text{Tuesday}", "text"),
            ("2\\sqrt{3}", "expression"),
            ("$ $", "empty"),
        ];
        for (a, k) in cases {
            assert_eq!(answer_kind(a), k, "{a}");
        }
    }

    #[test]
    fn percentiles_and_share_over() {
        let lens: Vec<usize> = (1..=100).collect();
        let s = length_stats(&lens, 90);
        assert_eq!((s.p50, s.p90, s.p99, s.max, s.over), (50, 90, 99, 100, 10));
        assert!((s.mean - 50.5).abs() < 1e-12);
    }
}
