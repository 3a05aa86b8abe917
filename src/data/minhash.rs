//! Seeded hashing, MinHash signatures and LSH banding.
//!
//! Everything here is a pure function of its input and the seed (FNV-1a and the SplitMix64
//! finaliser; hash maps with a fixed hasher), so runs are reproducible across machines and
//! processes: no `RandomState`.
//!
//! MinHash: for a set S of 64-bit shingle hashes, signature[k] = min over s in S of
//! mix(s ^ seed_k); two sets agree at one position with probability equal to their Jaccard
//! similarity J. LSH: the signature is cut into `bands` bands of `rows` positions; two sets that
//! agree on a whole band become candidates, with probability 1 − (1 − J^rows)^bands. With the
//! defaults (32 × 4 = 128 positions) that is 0.87 at J = 0.5, 0.988 at J = 0.6 and above
//! 0.9998 at J ≥ 0.7. Candidates are then confirmed by their exact similarity, so the banding
//! only decides recall and speed, never a verdict.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The SplitMix64 finaliser: a bijective mix of 64 bits.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit hash of a string (FNV-1a, then mixed so every bit depends on every byte).
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in s.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix64(h)
}

/// Order-sensitive hashes of every `n` consecutive items of `hashes` (n-gram hashes); a sequence
/// shorter than `n` gives one hash of the whole of it. Sorted and deduplicated: a set.
pub fn ngram_set(hashes: &[u64], n: usize) -> Vec<u64> {
    let n = n.max(1);
    let mut out: Vec<u64> = if hashes.len() <= n {
        vec![fold(hashes)]
    } else {
        hashes.windows(n).map(fold).collect()
    };
    out.sort_unstable();
    out.dedup();
    out
}

fn fold(window: &[u64]) -> u64 {
    window.iter().fold(0x9E37_79B9_7F4A_7C15, |h, &t| mix64(h.rotate_left(23) ^ t))
}

/// |a ∩ b| for sorted, deduplicated sets.
pub fn intersection(a: &[u64], b: &[u64]) -> usize {
    intersection_multiset(a, b)
}

/// |a ∩ b| for sorted multisets (each common element counted as often as both have it); for
/// sets it is the set intersection.
pub fn intersection_multiset(a: &[u64], b: &[u64]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

/// Jaccard similarity |a ∩ b| / |a ∪ b| of sorted sets (1 for two empty sets).
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    let inter = intersection(a, b);
    let union = a.len() + b.len() - inter;
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// Containment |a ∩ b| / min(|a|, |b|): how much of the smaller set the other holds (1 when one
/// problem contains the other, however long the other is).
pub fn containment(a: &[u64], b: &[u64]) -> f64 {
    let small = a.len().min(b.len());
    if small == 0 {
        0.0
    } else {
        intersection(a, b) as f64 / small as f64
    }
}

/// MinHash over `num_perm` seeded hash functions.
#[derive(Debug, Clone)]
pub struct MinHasher {
    seeds: Vec<u64>,
}

impl MinHasher {
    pub fn new(num_perm: usize, seed: u64) -> Self {
        let seeds = (0..num_perm as u64).map(|k| mix64(seed ^ mix64(k.wrapping_add(0x5CA1_AB1E)))).collect();
        MinHasher { seeds }
    }

    /// The signature of a set of shingle hashes (all `u64::MAX` for an empty set).
    pub fn signature(&self, set: &[u64]) -> Vec<u64> {
        let mut sig = vec![u64::MAX; self.seeds.len()];
        for &s in set {
            for (m, &k) in sig.iter_mut().zip(&self.seeds) {
                *m = (*m).min(mix64(s ^ k));
            }
        }
        sig
    }
}

/// A hasher for keys that are already well-mixed 64-bit hashes (deterministic, no seed).
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix64(self.0 ^ u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = mix64(self.0 ^ x);
    }
}

/// A `HashMap` keyed by hashes, with a fixed hasher (iteration order is reproducible).
pub type HashIndex<V> = HashMap<u64, V, BuildHasherDefault<PassThrough>>;

/// LSH tables: band key → ids of the inserted signatures with that band.
#[derive(Debug, Clone)]
pub struct Lsh {
    bands: usize,
    rows: usize,
    table: HashIndex<Vec<u32>>,
}

impl Lsh {
    pub fn new(bands: usize, rows: usize) -> Self {
        Lsh { bands: bands.max(1), rows: rows.max(1), table: HashIndex::default() }
    }

    /// Signature length this index expects.
    pub fn num_perm(&self) -> usize {
        self.bands * self.rows
    }

    /// One key per band (the band number is mixed in, so equal rows in two bands differ).
    fn keys<'a>(&'a self, sig: &'a [u64]) -> impl Iterator<Item = u64> + 'a {
        sig.chunks(self.rows).take(self.bands).enumerate().map(|(b, rows)| {
            rows.iter().fold(mix64(b as u64 + 1), |h, &r| mix64(h.rotate_left(17) ^ r))
        })
    }

    pub fn insert(&mut self, id: u32, sig: &[u64]) {
        let keys: Vec<u64> = self.keys(sig).collect();
        for k in keys {
            self.table.entry(k).or_default().push(id);
        }
    }

    /// Ids sharing at least one band with `sig`, ascending, each once.
    pub fn query(&self, sig: &[u64]) -> Vec<u32> {
        let mut out: Vec<u32> = self.keys(sig).filter_map(|k| self.table.get(&k)).flatten().copied().collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(range: std::ops::Range<u64>) -> Vec<u64> {
        let mut v: Vec<u64> = range.map(mix64).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn signatures_estimate_jaccard_and_are_reproducible() {
        let a = set(0..200);
        let b = set(50..250); // J = 150 / 250 = 0.6
        assert!((jaccard(&a, &b) - 0.6).abs() < 1e-12);
        let h = MinHasher::new(512, 7);
        let (sa, sb) = (h.signature(&a), h.signature(&b));
        let est = sa.iter().zip(&sb).filter(|(x, y)| x == y).count() as f64 / 512.0;
        assert!((est - 0.6).abs() < 0.07, "estimate {est}");
        assert_eq!(MinHasher::new(512, 7).signature(&a), sa, "same seed, same signature");
        assert_ne!(MinHasher::new(512, 8).signature(&a), sa, "the seed matters");
    }

    #[test]
    fn lsh_finds_similar_sets_only() {
        let h = MinHasher::new(128, 1);
        let mut lsh = Lsh::new(32, 4);
        lsh.insert(0, &h.signature(&set(0..100)));
        lsh.insert(1, &h.signature(&set(1000..1100)));
        // J = 95/105 ≈ 0.9 with set 0, 0 with set 1.
        assert_eq!(lsh.query(&h.signature(&set(5..105))), [0]);
        assert!(lsh.query(&h.signature(&set(5000..5100))).is_empty());
    }

    #[test]
    fn ngrams_are_order_sensitive_sets() {
        let t: Vec<u64> = ["a", "b", "c", "a", "b", "c"].iter().map(|s| hash_str(s)).collect();
        let g = ngram_set(&t, 3);
        assert_eq!(g.len(), 3, "abc, bca, cab");
        let r: Vec<u64> = t.iter().rev().copied().collect();
        assert_eq!(intersection(&g, &ngram_set(&r, 3)), 0);
        assert_eq!(ngram_set(&t[..2], 3).len(), 1, "short sequences give one gram");
        assert_eq!(containment(&g, &ngram_set(&t[..4], 3)), 1.0);
    }
}
