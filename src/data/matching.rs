//! When two problems are the same problem: the pair rules shared by `dedup` and
//! `decontaminate`, and the candidate index that keeps them from comparing every pair.
//!
//! A pair (a, b) is, in this order:
//! * **exact** — equal normalised text;
//! * **templated** — the numbers changed (neither number sequence is a subsequence of the
//!   other), the other tokens are the same multiset up to [`TEMPLATE_EDITS`] (a sign may flip,
//!   a `\sqrt` appear), and the number-masked shingles have Jaccard ≥ `templated_threshold`:
//!   the same problem with other numbers, so another answer. Reported apart, since whether such
//!   a variant is a leak is the user's call. The token condition keeps out problems that share
//!   a long instruction and little else ("Find the curve defined by the equation \[r = 2.\]
//!   (A) Line (B) Circle …" against "\[r = 4 \tan \theta \sec \theta.\] (A) Line …");
//! * **near-duplicate** — the numbers did not change (one sequence may only add numbers, such as a
//!   problem label or a year) and the shingles have Jaccard ≥ `threshold`.

use super::features::Features;
use super::formats::Item;
use super::minhash::{jaccard, Lsh, MinHasher};
use super::report::Reason;

/// Thresholds and LSH shape (defaults: 3-token shingles, 0.8 and 0.8, 32 bands × 4 rows).
///
/// Why 3-token shingles: problems are short (the median MATH training problem is 38 tokens), and
/// one changed word changes `ngram` shingles; with 5-grams one substituted word already puts a
/// 40-token copy at Jaccard 0.76, below the usual 0.8, with 3-grams at 0.85.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchConfig {
    /// Tokens per shingle.
    pub ngram: usize,
    /// Near-duplicate: Jaccard similarity of the shingle sets at least this.
    pub threshold: f64,
    /// Templated: Jaccard similarity of the number-masked shingle sets at least this.
    pub templated_threshold: f64,
    pub bands: usize,
    pub rows: usize,
    /// MinHash seed (results do not depend on it unless LSH misses a pair).
    pub seed: u64,
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig { ngram: 3, threshold: 0.8, templated_threshold: 0.8, bands: 32, rows: 4, seed: 0x5CA1E }
    }
}

/// A pair's verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    pub reason: Reason,
    /// Jaccard (near-duplicate), masked Jaccard (templated), containment (overlap), 1 (exact).
    pub similarity: f64,
}

/// How strongly a match says "same problem" (picks a record's reported match).
pub fn rank(reason: Reason) -> u8 {
    match reason {
        Reason::Exact => 4,
        Reason::NearDuplicate => 3,
        Reason::Overlap => 2,
        Reason::Templated => 1,
        _ => 0,
    }
}

/// Is `a` a stronger match than `b`? Ties go to the higher similarity, then the smaller id, so
/// the choice never depends on the order candidates were seen in.
pub fn better(a: (Match, u32), b: (Match, u32)) -> bool {
    (rank(a.0.reason), a.0.similarity, std::cmp::Reverse(a.1)) > (rank(b.0.reason), b.0.similarity, std::cmp::Reverse(b.1))
}

/// Is `small` a subsequence of `big`?
fn subsequence(small: &[String], big: &[String]) -> bool {
    let mut it = big.iter();
    small.iter().all(|s| it.any(|b| b == s))
}

/// Did only non-number text change, or were numbers only added (not replaced)?
pub fn numbers_kept(a: &[String], b: &[String]) -> bool {
    subsequence(a, b) || subsequence(b, a)
}

/// Non-number tokens a templated variant may add, drop or change (counted on both sides).
pub const TEMPLATE_EDITS: usize = 2;

/// Size of the symmetric difference of two sorted multisets.
fn multiset_difference(a: &[u64], b: &[u64]) -> usize {
    a.len() + b.len() - 2 * super::minhash::intersection_multiset(a, b)
}

/// The verdict on one pair (see the module doc), or `None`.
pub fn classify(a: &Features, b: &Features, cfg: &MatchConfig) -> Option<Match> {
    if a.key == b.key {
        return Some(Match { reason: Reason::Exact, similarity: 1.0 });
    }
    if numbers_kept(&a.numbers, &b.numbers) {
        let s = jaccard(&a.shingles, &b.shingles);
        (s >= cfg.threshold).then_some(Match { reason: Reason::NearDuplicate, similarity: s })
    } else if multiset_difference(&a.words, &b.words) <= TEMPLATE_EDITS {
        let s = jaccard(&a.masked, &b.masked);
        (s >= cfg.templated_threshold).then_some(Match { reason: Reason::Templated, similarity: s })
    } else {
        None
    }
}

/// The detail of a match whose golds agree.
pub const SAME_ANSWER: &str = "same answer";

/// Whether two records' golds agree (an answer of `a` graded correct against `b`'s gold): a
/// report detail. A copy has the same answer; a near-duplicate with another answer is a variant
/// (same figure, another question; another word) that the user may want to keep.
pub fn answer_detail(a: &Item, b: &Item) -> Option<String> {
    let (ga, gb) = (a.gold()?, b.gold()?);
    let cfg = crate::reward::RewardConfig::default();
    let same = ga.answers().iter().any(|x| crate::reward::check_answer(x, &gb, &cfg) == crate::reward::Reason::Correct);
    Some(if same {
        SAME_ANSWER.to_string()
    } else {
        format!("different answer: `{}` vs `{}`", ga.answers().join("`, `"), gb.answers().join("`, `"))
    })
}

/// Candidate lookup: LSH over both the shingles and the masked shingles (masking merges
/// shingles, so either set can be the more similar one).
pub struct Index {
    hasher: MinHasher,
    raw: Lsh,
    masked: Lsh,
}

/// A record's two MinHash signatures.
pub struct Signature {
    raw: Vec<u64>,
    masked: Vec<u64>,
}

impl Index {
    pub fn new(cfg: &MatchConfig) -> Self {
        let raw = Lsh::new(cfg.bands, cfg.rows);
        let hasher = MinHasher::new(raw.num_perm(), cfg.seed);
        Index { hasher, masked: raw.clone(), raw }
    }

    pub fn signature(&self, f: &Features) -> Signature {
        Signature { raw: self.hasher.signature(&f.shingles), masked: self.hasher.signature(&f.masked) }
    }

    pub fn insert(&mut self, id: u32, sig: &Signature) {
        self.raw.insert(id, &sig.raw);
        self.masked.insert(id, &sig.masked);
    }

    /// Inserted ids that may match, ascending, each once.
    pub fn candidates(&self, sig: &Signature) -> Vec<u32> {
        let mut c = self.raw.query(&sig.raw);
        c.extend(self.masked.query(&sig.masked));
        c.sort_unstable();
        c.dedup();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::super::features::features;
    use super::*;

    fn f(s: &str) -> Features {
        features(s, 5, 13)
    }

    #[test]
    fn pairs_are_classified() {
        let cfg = MatchConfig::default();
        let base = "A bag holds 4 red and 6 blue marbles. Two marbles are drawn at random without replacement. What is the probability that both are red?";
        let same = "A bag holds 4 red and 6 blue marbles.  Two marbles are drawn at random, without replacement. What is the probability that both are red?";
        let tmpl = "A bag holds 5 red and 7 blue marbles. Two marbles are drawn at random without replacement. What is the probability that both are red?";
        let other = "How many positive divisors does 3600 have?";
        assert_eq!(classify(&f(base), &f(base.to_uppercase().as_str()), &cfg).unwrap().reason, Reason::Exact);
        assert_eq!(classify(&f(base), &f(same), &cfg).unwrap().reason, Reason::NearDuplicate);
        let t = classify(&f(base), &f(tmpl), &cfg).unwrap();
        assert_eq!((t.reason, t.similarity), (Reason::Templated, 1.0));
        assert_eq!(classify(&f(base), &f(other), &cfg), None);
        // A label added in front changes no number of the problem: still the same problem.
        let labelled = format!("(1999 AIME) {base}");
        assert_eq!(classify(&f(&labelled), &f(base), &cfg).unwrap().reason, Reason::NearDuplicate);
    }

    #[test]
    fn numbers_kept_is_subsequence_either_way() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(numbers_kept(&v(&["1", "2"]), &v(&["9", "1", "2"])));
        assert!(numbers_kept(&v(&["1", "9", "2"]), &v(&["1", "2"])));
        assert!(!numbers_kept(&v(&["1", "2"]), &v(&["2", "1"])));
        assert!(!numbers_kept(&v(&["1", "2"]), &v(&["1", "3"])));
    }
}
