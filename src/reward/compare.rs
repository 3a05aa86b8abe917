//! Deciding whether an answer and a gold are equivalent.
//!
//! Order of checks (cheapest first):
//! 1. identical after removing whitespace → equal (this is how
//!    `10^{10^{10}}` matches itself without being evaluated);
//! 2. multiple-choice gold (`A`–`E`, `(C)`, `\text{(C)}`) → compare letters;
//! 3. parse both, canonicalize (expand `±`, `x \in S` → S, one-variable
//!    inequalities → intervals), then compare structurally, with numbers
//!    compared exactly (rationals) or within tolerance (floats), and
//!    expressions with variables compared at several rational points.

use super::budget::{Budget, Fail, MAX_ITEMS};
use super::eval::{based_value, div, eval, values_equal, EvalErr, Val};
use super::expr::Expr;
use super::extract::clean_gold;
use super::matrix;
use super::parser::parse;
use super::relation::{any_stated, rel_equiv, relation};
use super::rational::Rat;

/// Full equivalence check of an answer string against one gold string.
/// `Err(Parse)` only when the answer cannot be read at all.
pub fn check(answer: &str, gold: &str, b: &mut Budget) -> Result<bool, Fail> {
    let gold = clean_gold(gold);
    let answer = answer.trim();
    if same_text(answer, gold) {
        return Ok(true);
    }
    if let Some(g) = choice_letter(gold, true) {
        return Ok(choice_letter(answer, false) == Some(g));
    }
    // `\textbf{(A) } 12`: the letter or the option's value both count.
    if let Some((g, rest)) = choice_with_value(gold) {
        if choice_letter(answer, false) == Some(g) {
            return Ok(true);
        }
        return check(answer, rest, b);
    }
    let g = match parse(gold, b) {
        Ok(g) => g,
        Err(Fail::Timeout) => return Err(Fail::Timeout),
        // A gold we cannot read is compared as text.
        Err(Fail::Parse) => {
            return Ok(loose_key(answer) == loose_key(gold) && !loose_key(gold).is_empty())
        }
    };
    let a = match parse(answer, b) {
        Ok(a) => a,
        Err(Fail::Timeout) => return Err(Fail::Timeout),
        Err(Fail::Parse) => {
            return if loose_key(answer) == loose_key(gold) && !loose_key(gold).is_empty() {
                Ok(true)
            } else {
                Err(Fail::Parse)
            }
        }
    };
    // A word on either side (`\mathrm{Ne}` vs `Ne`): compare as text. Two
    // words by their letters and digits (and signs); a word against math
    // keeps the math's symbols: `\text{x}` is not `-x`, `\text{xy}` not
    // `x+y` (dropping them would be a second, wider reading).
    match (matches!(a, Expr::Text(_)), matches!(g, Expr::Text(_))) {
        (true, true) if words_equal(answer, gold) => return Ok(true),
        (true, false) | (false, true)
            if loose_key(answer) == loose_key(gold) && !loose_key(gold).is_empty() =>
        {
            return Ok(true)
        }
        _ => {}
    }
    let a = canonical(a);
    let g = canonical(g);
    equiv(&a, &g, b)
}

/// Identical text: whitespace and `$` are not significant, except between
/// two numbers (`3 2/5` is not the text `32/5`, see [`Squash`]). Compared
/// lazily: most pairs differ within a few characters.
fn same_text(a: &str, b: &str) -> bool {
    let drop = |c: char| c.is_whitespace() || c == '$';
    Squash::new(a, drop).eq(Squash::new(b, drop))
}

/// `s` without the `dropped` characters, except that a run of dropped
/// characters between two digits (or a digit and a decimal point) leaves one
/// space: comparing text must not join `3 2` into `32` or `3{2}` into `32`,
/// a reading the parser refuses.
fn squash(s: &str, dropped: impl Fn(char) -> bool) -> String {
    Squash::new(s, dropped).collect()
}

/// The characters of [`squash`], one at a time.
struct Squash<'a, F> {
    chars: std::str::Chars<'a>,
    dropped: F,
    /// Was the last character given out a digit or a point?
    after_number: bool,
    /// A character held back while the separating space is given out.
    held: Option<char>,
}

impl<'a, F: Fn(char) -> bool> Squash<'a, F> {
    fn new(s: &'a str, dropped: F) -> Self {
        Squash {
            chars: s.chars(),
            dropped,
            after_number: false,
            held: None,
        }
    }
}

impl<F: Fn(char) -> bool> Iterator for Squash<'_, F> {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        let numeric = |c: char| c.is_ascii_digit() || c == '.';
        if let Some(c) = self.held.take() {
            self.after_number = numeric(c);
            return Some(c);
        }
        let mut gap = false;
        loop {
            let c = self.chars.next()?;
            if (self.dropped)(c) {
                gap = true;
                continue;
            }
            if gap && self.after_number && numeric(c) {
                self.held = Some(c);
                self.after_number = false;
                return Some(' ');
            }
            self.after_number = numeric(c);
            return Some(c);
        }
    }
}

/// Without the text-mode commands whose argument is compared as plain text.
fn strip_text_commands(s: &str) -> String {
    s.replace(r"\textbf", "").replace(r"\text", "").replace(r"\mathrm", "").replace(r"\mbox", "")
}

/// Letters and digits only, lowercased: how words are compared
/// (`\text{Evelyn}` = `Evelyn`, `\text{(C)}` = `c`).
/// Numbers keep their separation (`Day 1 2` is not `Day 12`, `3.5` not
/// `35`).
fn text_key(s: &str) -> String {
    let key = squash(&strip_text_commands(s), |c| !c.is_alphanumeric());
    key.chars().flat_map(char::to_lowercase).collect()
}

/// Words are equal when their letters and digits are, and so are the math
/// signs they carry: `\text{No solution.}` = `no solution`, but `\text{x -
/// y}` ≠ `\text{x + y}`.
fn words_equal(x: &str, y: &str) -> bool {
    let signs = |s: &str| -> String { s.chars().filter(|c| "+-*/^=<>|!".contains(*c)).collect() };
    text_key(x) == text_key(y) && signs(x) == signs(y)
}

/// Fallback key when a side cannot be parsed: like [`text_key`] but keeps
/// symbols, so `--5` does not become `5`.
fn loose_key(s: &str) -> String {
    // Unending sequences match however the dots are written.
    let s = s
        .replace(r"\ldots", "...")
        .replace(r"\cdots", "...")
        .replace(r"\dots", "...")
        .replace('…', "...");
    let key = squash(&strip_text_commands(&s), |c| {
        c.is_whitespace() || matches!(c, '{' | '}' | '$')
    });
    key.chars().flat_map(char::to_lowercase).collect()
}

/// A multiple-choice letter: `C`, `(C)`, `\text{(C)}`, `\textbf{(C) }`.
/// For a gold only an upper-case A–E counts (a lone `e` is Euler's number);
/// an answer may also be lower case or carry the option's text after the
/// letter (`(C) 12`).
fn choice_letter(s: &str, is_gold: bool) -> Option<char> {
    // Presentation noise first (`\displaystyle`, `\left.`, `$`), and for an
    // answer a `name =` prefix.
    let norm = super::normalize::normalize(s).ok()?;
    let mut t = norm.trim();
    if !is_gold {
        if let Some((_, rhs)) = t.rsplit_once('=') {
            t = rhs.trim();
        }
    }
    let flat: String = t
        .chars()
        .filter(|c| !matches!(c, '{' | '}' | '$' | ' '))
        .collect();
    let mut t = flat.as_str();
    for w in [r"\textbf", r"\text", r"\mathrm", r"\mathbf", r"\mbox"] {
        if let Some(r) = t.strip_prefix(w) {
            t = r;
        }
    }
    let t = t.trim_end_matches(['.', ':']);
    let letter = if let Some(r) = t.strip_prefix('(') {
        let mut cs = r.chars();
        let l = cs.next()?;
        if cs.next() != Some(')') || (is_gold && !cs.as_str().is_empty()) {
            return None;
        }
        l
    } else {
        let mut cs = t.chars();
        let l = cs.next()?;
        if cs.next().is_some() {
            return None;
        }
        l
    };
    let ok = if is_gold {
        ('A'..='E').contains(&letter)
    } else {
        ('A'..='E').contains(&letter.to_ascii_uppercase())
    };
    ok.then(|| letter.to_ascii_uppercase())
}

/// A gold of the form `(X) value` with X in A–E: the letter and the value.
fn choice_with_value(gold: &str) -> Option<(char, &str)> {
    let mut t = gold.trim();
    for w in [r"\textbf{", r"\text{", r"\mathrm{", r"\mathbf{"] {
        if let Some(r) = t.strip_prefix(w) {
            t = r.trim_start();
        }
    }
    let r = t.strip_prefix('(')?;
    let mut cs = r.chars();
    let l = cs.next().filter(|c| ('A'..='E').contains(c))?;
    let rest = cs.as_str().strip_prefix(')')?;
    let rest = rest.trim_start().trim_start_matches('}').trim();
    let rest = rest
        .trim_start_matches(r"\ ")
        .trim_start_matches('~')
        .trim();
    (!rest.is_empty()).then_some((l, rest))
}

// ---------------------------------------------------------------------------
// Canonical forms

/// Rewrites presentation variants into one form:
/// * `±` expands into a set of both values (`1 \pm \sqrt5` = `{1+√5, 1−√5}`),
///   flattened into an enclosing list or set;
/// * `x \in S` → `S`;
/// * one-variable inequalities → intervals (`x \ge 0` = `[0, ∞)`);
/// * a one-element list is its element.
pub fn canonical(e: Expr) -> Expr {
    match e {
        Expr::List(items) => {
            let items = flatten_pm(items);
            if items.len() == 1 {
                items.into_iter().next().unwrap_or(Expr::Huge)
            } else {
                Expr::List(items)
            }
        }
        Expr::Set(items) => Expr::Set(flatten_pm(items)),
        Expr::Seq(o, items, c) => Expr::Seq(o, items.into_iter().map(canonical).collect(), c),
        Expr::Union(parts) => Expr::Union(parts.into_iter().map(canonical).collect()),
        Expr::Matrix(rows) => Expr::Matrix(
            rows.into_iter()
                .map(|r| r.into_iter().map(canonical).collect())
                .collect(),
        ),
        Expr::Rel(parts, ops) => relation(parts, ops),
        // `A + B` of matrix literals: the matrix it equals (`matrix.rs`).
        e if !e.is_structural() && matrix::contains(&e) => match matrix::fold(&e) {
            Some(m) => canonical(m),
            None => e,
        },
        e if !e.is_structural() && e.has_plus_minus() => {
            let v = e.expand_plus_minus();
            if v.len() == 1 {
                v.into_iter().next().unwrap_or(Expr::Huge)
            } else {
                Expr::Set(v)
            }
        }
        e => e,
    }
}

fn flatten_pm(items: Vec<Expr>) -> Vec<Expr> {
    let mut out = Vec::with_capacity(items.len());
    for it in items {
        match canonical(it) {
            Expr::Set(v) if !v.is_empty() && v.iter().all(|x| !x.is_structural()) => out.extend(v),
            x => out.push(x),
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Structural comparison

pub fn equiv(a: &Expr, g: &Expr, b: &mut Budget) -> Result<bool, Fail> {
    b.tick()?;
    use Expr::*;
    match (a, g) {
        (Text(x), Text(y)) => Ok(words_equal(x, y)),
        (Rel(..), Rel(..)) => {
            if rel_equiv(a, g, b)? {
                return Ok(true);
            }
            // `x = 5` vs `y = 5` is decided above; `k = 2` vs `2 = k` too.
            Ok(false)
        }
        (Rel(..), _) => any_stated(a, g, true, b),
        (_, Rel(..)) => any_stated(g, a, false, b),
        (Seq(o1, x, c1), Seq(o2, y, c2)) => Ok(o1 == o2 && c1 == c2 && ordered(x, y, b)?),
        // A parenthesized tuple written without parentheses.
        (Seq('(', x, ')'), List(y)) | (List(x), Seq('(', y, ')')) => ordered(x, y, b),
        (Set(x) | List(x), Set(y) | List(y)) => unordered(x, y, b),
        (Union(x), Union(y)) => unordered(x, y, b),
        // `x < -1 \text{ or } x > 1` is the union of its intervals.
        (Union(x), List(y)) | (List(y), Union(x)) if y.iter().all(|e| matches!(e, Seq(..))) => {
            unordered(x, y, b)
        }
        // `{5}` for `5` (a one-element answer to "find all …").
        (Set(x), y) | (y, Set(x)) if x.len() == 1 && !y.is_structural() => equiv(&x[0], y, b),
        (Matrix(x), Matrix(y)) => {
            if x.len() != y.len() || x.iter().zip(y).any(|(r, s)| r.len() != s.len()) {
                return Ok(false);
            }
            for (r, s) in x.iter().zip(y) {
                if !ordered(r, s, b)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        // A column or row vector written as a tuple.
        (Matrix(m), Seq('(', v, ')')) | (Seq('(', v, ')'), Matrix(m)) => match vector_of(m) {
            Some(col) => ordered_refs(&col, v, b),
            None => Ok(false),
        },
        (Based(d1, b1), Based(d2, b2)) => Ok(b1 == b2
            && d1.trim_start_matches('0') == d2.trim_start_matches('0')
            || {
                b1 == b2
                    && based_value(d1, *b1).is_some()
                    && based_value(d1, *b1) == based_value(d2, *b2)
            }),
        (Based(d, base), Num(n)) | (Num(n), Based(d, base)) => Ok(based_vs_plain(d, *base, n)),
        (x, y) if !x.is_structural() && !y.is_structural() => scalar_equiv(x, y, b),
        _ => Ok(false),
    }
}

/// `52_8` vs `52`: the digits without their base subscript count (the
/// question names the base); in base 10 the value counts too.
fn based_vs_plain(digits: &str, base: u32, n: &Rat) -> bool {
    if !n.is_integer() || n.is_neg() {
        return false;
    }
    let nd = n.numer().to_dec_string();
    nd == digits.trim_start_matches('0')
        || nd == digits
        || (base == 10 && based_value(digits, 10).as_ref() == Some(n))
}

fn vector_of(m: &[Vec<Expr>]) -> Option<Vec<&Expr>> {
    if m.iter().all(|r| r.len() == 1) {
        Some(m.iter().map(|r| &r[0]).collect())
    } else if m.len() == 1 {
        Some(m[0].iter().collect())
    } else {
        None
    }
}

pub(super) fn ordered(x: &[Expr], y: &[Expr], b: &mut Budget) -> Result<bool, Fail> {
    if x.len() != y.len() {
        return Ok(false);
    }
    for (p, q) in x.iter().zip(y) {
        if !equiv(p, q, b)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn ordered_refs(x: &[&Expr], y: &[Expr], b: &mut Budget) -> Result<bool, Fail> {
    if x.len() != y.len() {
        return Ok(false);
    }
    for (p, q) in x.iter().zip(y) {
        if !equiv(p, q, b)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Multiset equality with greedy matching (equivalence is transitive for
/// everything we compare, so greedy suffices).
fn unordered(x: &[Expr], y: &[Expr], b: &mut Budget) -> Result<bool, Fail> {
    if x.len() != y.len() || x.len() > MAX_ITEMS {
        return Ok(false);
    }
    let mut used = vec![false; y.len()];
    'outer: for p in x {
        for (j, q) in y.iter().enumerate() {
            if !used[j] && equiv(p, q, b)? {
                used[j] = true;
                continue 'outer;
            }
        }
        return Ok(false);
    }
    Ok(true)
}

// ---------------------------------------------------------------------------
// Numeric comparison

/// Sample points for variables: small positive rationals, different per
/// variable and per point, so that `xy` ≠ `x^2` and `x+1` ≠ `x+2`.
fn sample(point: usize, var: usize) -> Rat {
    const NUM: [i64; 8] = [7, 13, 5, 17, 11, 19, 3, 23];
    const DEN: [i64; 5] = [5, 3, 7, 4, 9];
    let n = NUM[(point * 3 + var * 5) % NUM.len()] + (var as i64) * 2;
    let d = DEN[(point + var * 2) % DEN.len()];
    Rat::from_i64(n)
        .div(&Rat::from_i64(d))
        .unwrap_or_else(|| Rat::from_i64(1))
}

const POINTS: usize = 4;

/// Fewer points for huge expressions (a 5001-term sum): two random points
/// already make a false match vanishingly unlikely, and the time budget
/// matters more there.
fn points_for(nodes: usize) -> usize {
    if nodes > 2000 {
        2
    } else {
        POINTS
    }
}

/// Small positive integers, for expressions with factorials or binomials
/// (`n!`, `\binom{2n}{n}` are only defined at integers).
fn sample_int(point: usize, var: usize) -> Rat {
    Rat::from_i64(3 + ((point * 5 + var * 3) % 9) as i64)
}

fn env_for(vars: &[String], point: usize, ints: bool) -> Vec<(String, Rat)> {
    vars.iter()
        .enumerate()
        .map(|(j, v)| {
            (
                v.clone(),
                if ints {
                    sample_int(point, j)
                } else {
                    sample(point, j)
                },
            )
        })
        .collect()
}

fn has_factorial(e: &Expr) -> bool {
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        if matches!(x, Expr::Fact(_) | Expr::Binom(..)) {
            return true;
        }
        x.for_each_child(|c| stack.push(c));
    }
    false
}

fn scalar_equiv(a: &Expr, g: &Expr, b: &mut Budget) -> Result<bool, Fail> {
    let mut vars = Vec::new();
    let nodes = a.vars_into(&mut vars) + g.vars_into(&mut vars);
    vars.sort();
    if vars.is_empty() {
        return match (eval(a, &[], b), eval(g, &[], b)) {
            (Err(EvalErr::Timeout), _) | (_, Err(EvalErr::Timeout)) => Err(Fail::Timeout),
            (Ok(x), Ok(y)) => Ok(values_equal(&x, &y)),
            _ => Ok(false),
        };
    }
    let ints = has_factorial(a) || has_factorial(g);
    let mut agreed = 0;
    for k in 0..points_for(nodes) {
        let env = env_for(&vars, k, ints);
        match (eval(a, &env, b), eval(g, &env, b)) {
            (Err(EvalErr::Timeout), _) | (_, Err(EvalErr::Timeout)) => return Err(Fail::Timeout),
            (Ok(x), Ok(y)) => {
                if !values_equal(&x, &y) {
                    return Ok(false);
                }
                agreed += 1;
            }
            // Both undefined here (a pole): try the next point.
            (Err(_), Err(_)) => {}
            _ => return Ok(false),
        }
    }
    Ok(agreed > 0)
}

/// Is `f = c·g` for a nonzero constant `c` at every sample point?
pub(super) fn proportional(f: &Expr, g: &Expr, b: &mut Budget) -> Result<bool, Fail> {
    let mut vars = Vec::new();
    f.vars_into(&mut vars);
    g.vars_into(&mut vars);
    vars.sort();
    if vars.is_empty() {
        return Ok(false);
    }
    let mut ratio: Option<Val> = None;
    let mut agreed = 0;
    let ints = has_factorial(f) || has_factorial(g);
    for k in 0..POINTS {
        let env = env_for(&vars, k, ints);
        let (x, y) = match (eval(f, &env, b), eval(g, &env, b)) {
            (Err(EvalErr::Timeout), _) | (_, Err(EvalErr::Timeout)) => return Err(Fail::Timeout),
            (Ok(x), Ok(y)) => (x, y),
            _ => continue,
        };
        let zero = Val::R(Rat::zero());
        let (xz, yz) = (values_equal(&x, &zero), values_equal(&y, &zero));
        if xz || yz {
            if xz != yz {
                return Ok(false);
            }
            continue;
        }
        let Ok(r) = div(x, y) else { return Ok(false) };
        match &ratio {
            None => ratio = Some(r),
            Some(r0) if values_equal(r0, &r) => {}
            Some(_) => return Ok(false),
        }
        agreed += 1;
    }
    Ok(agreed >= 2)
}
