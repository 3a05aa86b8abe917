//! `scalerl data dedup`: one copy of each problem. Records are visited in input order (files in
//! the order given); a record that is an exact or near-duplicate of an earlier *kept* record is
//! removed, and one that is a templated variant of it is flagged (removed with
//! `drop_templated`). A near-duplicate whose gold answer differs is another question on the same
//! text ("How many girls …" / "How many boys …"), not a second copy: it is flagged and kept
//! (removed with `drop_variants`). The rules are [`super::matching`]'s; candidates come from
//! LSH, so the cost grows with the number of records, not pairs.

use super::features::all_features;
use super::formats::DataFile;
use super::matching::{answer_detail, better, classify, Index, Match, MatchConfig, SAME_ANSWER};
use super::report::{round4, Action, Outcome, Reason, ReportLine};
use rayon::prelude::*;

#[derive(Debug, Clone, Default)]
pub struct DedupOptions {
    pub matching: MatchConfig,
    /// Remove templated variants too (default: keep and flag them).
    pub drop_templated: bool,
    /// Remove near-duplicates with another gold answer too (default: keep and flag them).
    pub drop_variants: bool,
}

/// (file, record) of every record, in input order.
pub fn flatten(files: &[DataFile]) -> Vec<(usize, usize)> {
    files.iter().enumerate().flat_map(|(f, d)| (0..d.items.len()).map(move |i| (f, i))).collect()
}

pub fn dedup(files: &[DataFile], o: &DedupOptions, progress: &indicatif::ProgressBar) -> Outcome {
    let refs = flatten(files);
    let texts: Vec<&str> = refs.iter().map(|&(f, i)| files[f].items[i].problem.as_str()).collect();
    let feats = all_features(&texts, o.matching.ngram, 0);
    let mut index = Index::new(&o.matching);
    let sigs: Vec<_> = feats.par_iter().map(|f| index.signature(f)).collect();
    let mut out = Outcome::keep_all(files);
    progress.set_length(refs.len() as u64);
    for (id, &(f, i)) in refs.iter().enumerate() {
        progress.inc(1);
        let mut best: Option<(Match, u32)> = None;
        for c in index.candidates(&sigs[id]) {
            if let Some(m) = classify(&feats[id], &feats[c as usize], &o.matching) {
                if best.is_none_or(|b| better((m, c), b)) {
                    best = Some((m, c));
                }
            }
        }
        let Some((m, c)) = best else {
            index.insert(id as u32, &sigs[id]);
            continue;
        };
        let (mf, mi) = refs[c as usize];
        let detail = answer_detail(&files[f].items[i], &files[mf].items[mi]);
        let variant = m.reason == Reason::NearDuplicate && detail.as_deref().is_some_and(|d| d != SAME_ANSWER);
        let keep = (m.reason == Reason::Templated && !o.drop_templated) || (variant && !o.drop_variants);
        let action = if keep { Action::Flagged } else { Action::Removed };
        out.report.push(ReportLine {
            file: files[f].name(),
            index: i,
            reason: m.reason,
            action,
            match_file: Some(files[mf].name()),
            match_index: Some(mi),
            similarity: Some(round4(m.similarity)),
            detail,
        });
        if action == Action::Removed {
            out.keep[f][i] = false;
        } else {
            index.insert(id as u32, &sigs[id]);
        }
    }
    out
}
