//! `scalerl data decontaminate`: training records that are evaluation problems.
//!
//! Each (training, evaluation) candidate pair — from LSH, or sharing a long n-gram — is judged by
//! [`super::matching`] (exact, templated, near-duplicate) and then by the overlap rule:
//!
//! * The usual rule (a shared 13-gram) flags many pairs of different competition problems,
//!   because they share long boilerplate ("… can be written as m/n, where m and n are relatively
//!   prime positive integers. Find m+n."). So an n-gram found in `boilerplate_df` or more records
//!   of the training and evaluation sets together is boilerplate and does not count; a pair
//!   sharing only boilerplate n-grams is declined (`boilerplate_only`).
//! * A pair sharing a rare long n-gram is confirmed by whole-problem similarity: the containment
//!   of the shorter problem's shingles in the other's must reach `confirm` (this catches an
//!   evaluation problem embedded in a longer training record, which Jaccard would miss), and the
//!   numbers must be kept (one problem's numbers a subsequence of the other's: a shared setup
//!   with other numbers is a variant); else it is declined (`dissimilar`).
//!
//! A training record takes its strongest match (exact > near-duplicate > overlap > templated):
//! the first three remove it, templated flags it (removes it with `drop_templated`).

use super::dedup::flatten;
use super::features::{all_features, Features};
use super::formats::DataFile;
use super::matching::{answer_detail, better, classify, numbers_kept, Index, Match, MatchConfig};
use super::minhash::{containment, HashIndex};
use super::report::{round4, Action, Outcome, Reason, ReportLine};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// The long n-gram rule (defaults: 13 tokens, boilerplate from 5 records, containment 0.8).
#[derive(Debug, Clone, PartialEq)]
pub struct OverlapConfig {
    /// Tokens per long n-gram.
    pub ngram: usize,
    /// An n-gram in at least this many records (training and evaluation together) is boilerplate.
    pub boilerplate_df: usize,
    /// A pair sharing a rare n-gram counts when shingle containment is at least this.
    pub confirm: f64,
}

impl Default for OverlapConfig {
    fn default() -> Self {
        OverlapConfig { ngram: 13, boilerplate_df: 5, confirm: 0.8 }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DecontaminateOptions {
    pub matching: MatchConfig,
    pub overlap: OverlapConfig,
    /// Remove templated variants too (default: keep and flag them).
    pub drop_templated: bool,
    /// Also write the declined candidate pairs to the report (action `declined`).
    pub report_declined: bool,
}

/// Candidate pairs that the overlap rule declined, and the ones it confirmed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairCounts {
    /// Sharing only boilerplate n-grams.
    pub boilerplate_only: usize,
    /// Of those, pairs whose containment reaches `confirm` with their numbers kept: without the
    /// boilerplate discount they would have been removed as overlap.
    pub boilerplate_only_similar: usize,
    /// Sharing a rare n-gram, but below `confirm`.
    pub dissimilar: usize,
    /// Confirmed overlap pairs.
    pub overlap: usize,
}

/// How many problems of one evaluation file are found in the training set, by their strongest
/// match.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaks {
    pub file: String,
    pub problems: usize,
    pub by_reason: BTreeMap<Reason, usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decontamination {
    pub outcome: Outcome,
    pub leaks: Vec<Leaks>,
    pub pairs: PairCounts,
}

/// The verdicts of one training record against its candidates.
#[derive(Default)]
struct Verdicts {
    matches: Vec<(u32, Match)>,
    declined: Vec<(u32, Reason, f64, bool)>,
}

/// Judges one pair beyond the matching rules: overlap, declined (with why), or nothing shared;
/// with whether the similarity test alone would confirm it (for boilerplate-only pairs: what
/// the rule would do without the boilerplate discount).
fn overlap(t: &Features, e: &Features, df: &HashIndex<u32>, cfg: &OverlapConfig) -> Option<(Reason, f64, bool)> {
    let mut shared = 0;
    let mut rare = 0;
    let (mut i, mut j) = (0, 0);
    while i < t.grams.len() && j < e.grams.len() {
        match t.grams[i].cmp(&e.grams[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                shared += 1;
                if (df.get(&t.grams[i]).copied().unwrap_or(0) as usize) < cfg.boilerplate_df {
                    rare += 1;
                }
                i += 1;
                j += 1;
            }
        }
    }
    if shared == 0 {
        return None;
    }
    let sim = containment(&t.shingles, &e.shingles);
    // Numbers must be kept too: a passage shared with other numbers is a variant of a template
    // ("9 people sit around a round table" / "8 people …"), not a copy.
    let similar = sim >= cfg.confirm && numbers_kept(&t.numbers, &e.numbers);
    Some(match (rare, similar) {
        (0, _) => (Reason::BoilerplateOnly, sim, similar),
        (_, true) => (Reason::Overlap, sim, true),
        (_, false) => (Reason::Dissimilar, sim, false),
    })
}

fn texts<'a>(files: &'a [DataFile], refs: &[(usize, usize)]) -> Vec<&'a str> {
    refs.iter().map(|&(f, i)| files[f].items[i].problem.as_str()).collect()
}

pub fn decontaminate(
    train: &[DataFile],
    eval: &[DataFile],
    o: &DecontaminateOptions,
    progress: &indicatif::ProgressBar,
) -> Decontamination {
    let (trefs, erefs) = (flatten(train), flatten(eval));
    let tf = all_features(&texts(train, &trefs), o.matching.ngram, o.overlap.ngram);
    let ef = all_features(&texts(eval, &erefs), o.matching.ngram, o.overlap.ngram);

    // Document frequency of each long n-gram over both sets (a record's grams are a set).
    let mut df: HashIndex<u32> = HashIndex::default();
    for g in tf.iter().chain(&ef).flat_map(|f| &f.grams) {
        *df.entry(*g).or_insert(0) += 1;
    }
    let mut index = Index::new(&o.matching);
    let esigs: Vec<_> = ef.par_iter().map(|f| index.signature(f)).collect();
    let mut by_gram: HashIndex<Vec<u32>> = HashIndex::default();
    for (id, (f, sig)) in ef.iter().zip(&esigs).enumerate() {
        index.insert(id as u32, sig);
        for g in &f.grams {
            by_gram.entry(*g).or_default().push(id as u32);
        }
    }

    progress.set_length(trefs.len() as u64);
    let verdicts: Vec<Verdicts> = tf
        .par_iter()
        .map(|t| {
            let mut cands = index.candidates(&index.signature(t));
            cands.extend(t.grams.iter().filter_map(|g| by_gram.get(g)).flatten());
            cands.sort_unstable();
            cands.dedup();
            let mut v = Verdicts::default();
            for c in cands {
                let e = &ef[c as usize];
                if let Some(m) = classify(t, e, &o.matching) {
                    v.matches.push((c, m));
                } else if let Some((reason, sim, similar)) = overlap(t, e, &df, &o.overlap) {
                    if reason == Reason::Overlap {
                        v.matches.push((c, Match { reason, similarity: sim }));
                    } else {
                        v.declined.push((c, reason, sim, similar));
                    }
                }
            }
            progress.inc(1);
            v
        })
        .collect();

    let mut out = Outcome::keep_all(train);
    let mut pairs = PairCounts::default();
    let mut strongest: Vec<Option<Reason>> = vec![None; erefs.len()];
    for (id, v) in verdicts.iter().enumerate() {
        let (f, i) = trefs[id];
        let line = |reason, action, c: u32, sim: f64| {
            let (ef_, ei) = erefs[c as usize];
            ReportLine {
                file: train[f].name(),
                index: i,
                reason,
                action,
                match_file: Some(eval[ef_].name()),
                match_index: Some(ei),
                similarity: Some(round4(sim)),
                detail: if action == Action::Declined { None } else { answer_detail(&train[f].items[i], &eval[ef_].items[ei]) },
            }
        };
        for &(c, m) in &v.matches {
            let s = &mut strongest[c as usize];
            if s.is_none_or(|r| super::matching::rank(m.reason) > super::matching::rank(r)) {
                *s = Some(m.reason);
            }
            pairs.overlap += usize::from(m.reason == Reason::Overlap);
        }
        let best = v.matches.iter().map(|&(c, m)| (m, c)).reduce(|a, b| if better(b, a) { b } else { a });
        if let Some((m, c)) = best {
            let action = if m.reason == Reason::Templated && !o.drop_templated { Action::Flagged } else { Action::Removed };
            out.keep[f][i] = action != Action::Removed;
            out.report.push(line(m.reason, action, c, m.similarity));
        }
        for &(c, reason, sim, similar) in &v.declined {
            if reason == Reason::BoilerplateOnly {
                pairs.boilerplate_only += 1;
                pairs.boilerplate_only_similar += usize::from(similar);
            } else {
                pairs.dissimilar += 1;
            }
            if o.report_declined {
                out.report.push(line(reason, Action::Declined, c, sim));
            }
        }
    }

    let mut leaks: Vec<Leaks> =
        eval.iter().map(|e| Leaks { file: e.name(), problems: e.items.len(), by_reason: BTreeMap::new() }).collect();
    for (c, r) in strongest.iter().enumerate() {
        if let Some(r) = r {
            *leaks[erefs[c].0].by_reason.entry(*r).or_insert(0) += 1;
        }
    }
    Decontamination { outcome: out, leaks, pairs }
}
