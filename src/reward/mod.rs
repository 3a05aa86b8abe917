//! Math reward: grades a model response against a ground-truth answer.
//!
//! # Format rules
//! * The response must contain the close tag (`</think>` by default;
//!   [`RewardConfig::require_think_close`]). An opening `<think>` is not
//!   required. The graded text is everything after the **first** close tag.
//! * The answer is the content of the **last** `\boxed{…}` or `\fbox{…}` (by
//!   start position) in the graded text, found by brace matching (escaped
//!   `\{ \}` do not count). No box, a last box that never closes, or a blank
//!   last box → [`Reason::NoBox`]. `\boxed 6` (no brace) takes one token.
//! * The gold may be a string, a number or a list (any element may match);
//!   `$…$` and a `\boxed{}` around the gold are removed.
//!
//! # One reading per notation
//! When an answer could be read several ways, it is graded by one reading
//! only (or none): accepting whichever reading matches would widen what is
//! accepted, and a false accept is a reward the policy learns to farm.
//! * `a b/c` and `a\frac{b}{c}` (integer `a`, also `{a}`, `-a`, `0`, or
//!   thousands with spaces, `1 000 1/2`) are mixed numbers: `3 2/5` is 17/5,
//!   never 6/5 (a product) or 32/5 (spaces dropped); `-3 2/5` is −17/5. The
//!   fraction must be proper and positive: `2\frac32`, `2 3/2`, `3\frac05`,
//!   `3\frac12^2` could be a product or a mixed number → `parse_error`.
//!   A non-numeric fraction is a product (`2\frac{x}{2} = x`).
//! * A number right after a number with only spaces or braces between is
//!   neither a product nor a concatenation → `parse_error` (`3 2`, `1.2.3`,
//!   `3{2}/5`, `2^3 4`), unless a rule above or the thousands rule reads it.
//!   Comparing as text keeps such numbers apart too (`\text{Day 1 2} ≠
//!   \text{Day 12}`).
//! * An answer ending in `...` (an unending sequence) is not the finite list
//!   before it: `1, 2, 3, ... ≠ 1, 2, 3` (the dots are not a sentence
//!   period; `\ldots` likewise). It equals the same sequence written with
//!   other dots (`1, 2, 3, \ldots`), compared as text.
//!
//! # Equivalence rules (what a careful human grader accepts)
//! * Identical text (ignoring whitespace and `$`, but not a space between
//!   two numbers) is always equal.
//! * Numbers are exact rationals: `\frac12 = 1/2 = 0.5 = .5 = \dfrac{2}{4}`,
//!   `28 = 28.00 = 028`, `3\frac12 = 3 1/2 = 3.5` (mixed numbers, above),
//!   `0.\overline{3} = 1/3`, `2.88 \times 10^4 = 28800 = 2.88e4`,
//!   `\sqrt{81} = 9`, `3! = 6`,
//!   `\binom52 = 10`, `2^{10} = 1024`, `10^{5000}` = its 5001-digit integer.
//! * **Truncated decimals are not equal**: `0.333 ≠ 1/3`,
//!   `0.3333333333 ≠ 1/3` (both sides exact → exact comparison).
//! * Irrational values are compared in floating point with a tight relative
//!   tolerance of 1e-11 (absolute 1e-12 near zero): `2\sqrt3 = \sqrt{12}`,
//!   `\frac{1}{\sqrt2} = \frac{\sqrt2}{2}`, `5^{1/2} = \sqrt5`,
//!   `\sqrt[3]{2} = 2^{1/3}`, `\sqrt{-1} = i`. Judgement call: a decimal
//!   with ≥ 11 correct significant digits of an irrational is accepted,
//!   since it is indistinguishable in f64; `3.14159 ≠ \pi`.
//! * Expressions with variables are evaluated at 4 rational sample points
//!   (exactly when possible; 2 points for expressions over 2000 nodes):
//!   `p - q = -q + p`, `(x+1)^2 = x^2+2x+1`, `\frac{x+1}{2} = \frac x2 +
//!   \frac12`, `ab = ba`, `\binom{n+1}{2} = \frac{n(n+1)}{2}` (binomials
//!   with integer k use the falling factorial). Expressions containing `n!`
//!   or a binomial are sampled at small integers instead.
//! * `e` is Euler's number, `i` the imaginary unit, `\pi` is π;
//!   `\log` is base 10, `\ln` natural, `\log_b` base b; trig in radians;
//!   `\sin^{-1}` is arcsin; `\sin^2 x = (\sin x)^2`.
//! * `\cdot`, `\times`, `*`, juxtaposition (except of two numbers, above)
//!   all multiply; `a/b`, `\frac`,
//!   `\div` divide, and a ratio `a:b` is read as a/b (judgement call:
//!   `1:2` = `\frac12`); `^` binds tighter than implicit multiplication;
//!   `2^10` means 2^{10}; `a/bc` is (a/b)·c.
//! * Presentation is ignored: `\left`/`\right`, `\displaystyle`, spacing,
//!   `\text{}`/`\textbf{}`/`\mathbf{}` around math, `$`, `\$`, a trailing
//!   period, outer braces `{9}`, redundant parentheses (any depth).
//! * Thousands separators: `1{,}000 = 1,\!000 = 1\,000 = 1,000 = 1 000 =
//!   1000`. Judgement call: a bare comma is a separator only in
//!   `d,ddd(,ddd)*` outside brackets; `(100,200)` stays a pair and `1, 000`
//!   a list. A space is one in `d ddd( ddd)*` anywhere (`100 200 = 100200`),
//!   except that a group directly followed by `/` is a mixed number's
//!   numerator (`3 200/700 = 3\frac27`).
//! * Units and labels after a value are dropped: `5\text{ cm}`,
//!   `8\mbox{ inches}^2`, `12\,\mathrm{cm}`, `10 meters`, `12 cm²`,
//!   `2500 USD`, `^\circ`, `°`; currency signs anywhere (`\$`, `€`, `£`,
//!   `¥`, `₹`, `¢`: `2,500.50$ = €2500.5 = 2500.5`); a compound unit of
//!   unit symbols after a number that ends the term (`3.5 m/s`, `60 km/h`,
//!   `9.8 m/s^2` are the number; a lone letter after a number is still a
//!   variable: `3 m` is 3·m). Percent is dropped on either side, whether
//!   `\%`, `pct` or `percentage`: `25\% = 25 pct = 25` (judgement call,
//!   following the corpus rule set: `25\%` is *not* `0.25`). Units are never
//!   converted; degrees are not converted to radians.
//! * `x = 5`, `AB = 5`, `\text{Area} = 5`, `f(x) = …`, `(a,b) = (1,2)`,
//!   `|PQ| = 2`, `S_1:S_2 = 3:8`, `\frac{AM}{MB} = \frac{1}{\sqrt3}` equal
//!   `5` / `…` / `(1,2)` / `2` / `3:8` / `\frac{\sqrt3}{3}`: a name (a
//!   variable, a product of variables or words, its absolute value, or a
//!   ratio of names) on the left of `=` is dropped, and a chain that starts
//!   with a name states its final value: `y = 4+3 = 7` is `y = 7`, both
//!   against `7` and against `y = 7`. A chain without a name must hold
//!   throughout (`2+3 = 5` equals `5`; `2+3 = 6` states nothing).
//! * `\approx` starts a rounding, not a second answer: a chain compares by
//!   its exact part, the parts before the first `\approx` (`y = \frac23
//!   \approx 0.67` is `y = \frac23`, not 0.67; `\pi \approx 3.14` is `\pi`;
//!   `5 \approx 7` is only 5). `x \approx 0.5` has no exact part and states
//!   0.5. A leading `=` or `\approx` is ignored; `\equiv` is `=`.
//!   Two equations are equal when both sides match (also mirrored) or when
//!   `lhs − rhs` of one is a constant multiple of the other's
//!   (`y = 2x+1` = `2x - y + 1 = 0`).
//! * One-variable inequalities are intervals (solution sets): `x < 3 =
//!   (-\infty, 3)`, `x \ge 0 = [0, \infty)`, `1 \le x < 2 = [1, 2)`. Linear
//!   ones with rational coefficients are solved first, turning around for a
//!   negative coefficient: `-2x > -4 = x < 2`, `-2x \ge -4 = x \le 2`, `1 <
//!   2x - 1 \le 5 = (1, 3]`; others (`x^2 < 4`, `|x| < 2`) stay relations.
//!   A name of distinct variables between bounds is the unknown too: `0 <
//!   g(t) < 2 = (0, 2)`. `x \in S` is `S`;
//!   `\mathbb{R} = \text{all real numbers} = (-\infty, \infty)`.
//! * Tuples and intervals compare elementwise in order and **bracket types
//!   matter** (`(3,4] ≠ [3,4]`); a parenthesized tuple also matches the same
//!   items without parentheses (`(1,2)` = `1, 2` = `x=1, y=2`); `\langle
//!   1, 2 \rangle` is `(1, 2)`.
//! * Sets `\{…\}` and bare comma lists (and "or"/"and" lists, also `a, b,
//!   \text{ and } c`) are unordered multisets: `1,-2 = -2, 1`, `a=2, b=3 =
//!   b=3, a=2`, `x=1 \text{ or } x=2 = 1, 2`, but `12 \text{ or } 13 ≠ 12`
//!   (hedging: every listed value must be matched). When `;` and `,` both
//!   separate, `;` separates solutions: `a=1,b=3; a=2,b=5 = (1,3),(2,5)`
//!   (each solution's values in written order), never the flat `1,3,2,5`.
//!   Judgement call: a bare list is unordered even when the question might
//!   want an order, since the boxed answer alone cannot tell.
//!   A one-element set equals its element. Unions of intervals are
//!   unordered, and equal an "or" list of the same intervals
//!   (`x<-1 \text{ or } x>1`). `\emptyset = \varnothing = \{\}`.
//! * `±` expands to both values: `1 \pm \sqrt{19}` = `1+\sqrt{19},
//!   1-\sqrt{19}`; inside a set it is flattened into the set.
//! * Matrices compare elementwise; `pmatrix`/`bmatrix` are the same; a
//!   column or row vector equals the same tuple in parentheses. Matrix
//!   expressions are evaluated like numeric ones: a sum, difference,
//!   product, scalar multiple or power (up to 8) of literals is the matrix
//!   it equals (`A+B`, `AB`, `2A`, `A/2`, `B^2`); shapes that do not fit and
//!   a matrix plus a number have no value. `vmatrix` is the determinant (up
//!   to 4×4) and `Vmatrix` a norm (`parse_error`): neither is the matrix.
//! * Numerals with a base, `52_8`: equal to `52_{8}` and to the bare digits
//!   `52` (judgement call: the question names the base) but not to another
//!   base (`40_9 ≠ 40_{10}`) nor to the decimal value.
//! * Multiple choice: a gold `A`–`E`, `(C)` or `\text{(C)}` matches an
//!   answer with the same letter in any case and wrapping (`c`, `(C)`,
//!   `\textbf{(C)}`, `(C) 12`, `\displaystyle \text{(C)}`). A gold that
//!   carries the option's value, `\textbf{(A) } 12`, accepts `A` or `12`.
//! * Words are compared case-insensitively on letters and digits, and must
//!   carry the same math signs (`\text{Evelyn} = Evelyn`, `\text{x - y} ≠
//!   \text{x + y}`). A word against math keeps the math's symbols
//!   (`\mathrm{Ne} = Ne`, but `\text{x} ≠ -x`, `\text{xy} ≠ x+y`). A whole
//!   answer of words (3+ letters, not a function name) is text, not a
//!   product of variables; number words `zero`…`twenty` are numbers. A gold
//!   we cannot parse is compared with the answer as text (whitespace,
//!   braces and `$` ignored, except between two numbers).
//! * Unicode: `−5`, `½`, `√2`, `π`, `45°`, `×`, `≤`, `10⁻³`, full-width
//!   digits; `\operatorname{arcsin}` is `\arcsin`.
//!
//! # Bounds
//! * Answers and golds over 32 KiB ([`MAX_INPUT_BYTES`]) and emoji/CJK
//!   inside the box → `parse_error`.
//! * Recursion depth is capped at [`MAX_DEPTH`] (each nested group costs
//!   two levels, so about 60 nested `\frac`/`\sqrt`/brackets; operator
//!   chains such as `a/b/c` or `x^y^z` count one per link) → `parse_error`.
//!   Redundant nesting is removed before parsing at any depth
//!   (`{{{…5…}}}`, `((…5…))`, `--…-5`), so it is never a problem.
//! * Exact numbers are capped at 65,536 bits (fractions of two numbers over
//!   16,384 bits are not reduced exactly); larger results go to f64, and
//!   anything outside f64's range (`10^{10^{10}}`, `10^{-10^{10}}`,
//!   `1000000!`) equals nothing but an identical string.
//! * Every grading has a deterministic work budget
//!   ([`RewardConfig::max_steps`]: tokens, evaluated nodes, big-number work)
//!   and a wall-clock safety net ([`RewardConfig::time_budget`]), both
//!   checked cooperatively → `timeout`. The step budget decides in practice,
//!   so the same input gets the same reward on a loaded machine.
//! * Nothing here panics on any input (fuzzed: `fuzz/`,
//!   `scripts/fuzz-verifier.sh`, and the random/mutation tests in
//!   `tests/reward_unit.rs`).

mod bigint;
mod budget;
mod compare;
mod complex;
mod eval;
mod expr;
mod extract;
mod lexer;
mod matrix;
mod normalize;
mod numerals;
mod parser;
mod primary;
mod rational;
mod relation;
mod solve;
mod words;

use rayon::prelude::*;
use std::time::Duration;

pub use budget::{MAX_DEPTH, MAX_INPUT_BYTES};

/// How rewards are computed.
#[derive(Clone, Debug)]
pub struct RewardConfig {
    /// Require the close tag (`</think>`); without it the reward is wrong.
    pub require_think_close: bool,
    pub correct_reward: f32,
    pub wrong_reward: f32,
    /// Wall-clock budget for one grading (all golds together): a safety
    /// net; the deterministic `max_steps` normally decides first, so a
    /// loaded machine does not change rewards.
    pub time_budget: Duration,
    /// Work steps one grading may take (parser tokens, evaluated nodes,
    /// big-number work), deterministic → `timeout`.
    pub max_steps: u64,
    /// The tag that ends the reasoning part.
    pub think_close_tag: String,
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig {
            require_think_close: true,
            correct_reward: 1.0,
            wrong_reward: 0.0,
            time_budget: Duration::from_millis(40),
            max_steps: budget::DEFAULT_MAX_STEPS,
            think_close_tag: "</think>".to_string(),
        }
    }
}

/// Why a response got its reward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Correct,
    Wrong,
    NoThinkClose,
    NoBox,
    ParseError,
    Timeout,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Correct => "correct",
            Reason::Wrong => "wrong",
            Reason::NoThinkClose => "no_think_close",
            Reason::NoBox => "no_box",
            Reason::ParseError => "parse_error",
            Reason::Timeout => "timeout",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ground truth: one answer, or several acceptable ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gold {
    One(String),
    Any(Vec<String>),
}

impl Gold {
    /// From DeepScaleR-style JSON: a string, a number (kept as written, e.g.
    /// `142.0`), or a list of strings/numbers. `None` for anything else.
    pub fn from_json(v: &serde_json::Value) -> Option<Gold> {
        fn scalar(v: &serde_json::Value) -> Option<String> {
            match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        }
        match v {
            serde_json::Value::Array(items) => items
                .iter()
                .map(scalar)
                .collect::<Option<Vec<_>>>()
                .map(Gold::Any),
            other => scalar(other).map(Gold::One),
        }
    }

    pub fn answers(&self) -> &[String] {
        match self {
            Gold::One(s) => std::slice::from_ref(s),
            Gold::Any(v) => v,
        }
    }
}

impl From<&str> for Gold {
    fn from(s: &str) -> Self {
        Gold::One(s.to_string())
    }
}

/// The outcome for one response.
#[derive(Clone, Debug, PartialEq)]
pub struct Grade {
    pub reward: f32,
    pub reason: Reason,
    /// The extracted boxed answer, when there was one.
    pub answer: Option<String>,
}

/// Grades one response.
pub fn grade(response: &str, gold: &Gold, cfg: &RewardConfig) -> Grade {
    let make = |reason: Reason, answer: Option<&str>| Grade {
        reward: if reason == Reason::Correct {
            cfg.correct_reward
        } else {
            cfg.wrong_reward
        },
        reason,
        answer: answer.map(str::to_string),
    };
    let Some(part) = extract::graded_part(response, &cfg.think_close_tag, cfg.require_think_close)
    else {
        return make(Reason::NoThinkClose, None);
    };
    let Some(answer) = extract::last_boxed(part) else {
        return make(Reason::NoBox, None);
    };
    make(judge(answer, gold, cfg), Some(answer))
}

/// Grades many responses in parallel (rayon); results keep input order.
pub fn grade_batch(items: &[(&str, &Gold)], cfg: &RewardConfig) -> Vec<Grade> {
    items.par_iter().map(|(r, g)| grade(r, g, cfg)).collect()
}

/// Is `answer` (already extracted, no box) equivalent to `gold`? Uses the
/// default time budget; a parse error or timeout counts as "no".
pub fn answers_equivalent(answer: &str, gold: &str) -> bool {
    check_answer(
        answer,
        &Gold::One(gold.to_string()),
        &RewardConfig::default(),
    ) == Reason::Correct
}

/// Like [`answers_equivalent`] but with the detailed outcome
/// (`Correct`, `Wrong`, `ParseError` or `Timeout`).
pub fn check_answer(answer: &str, gold: &Gold, cfg: &RewardConfig) -> Reason {
    judge(answer, gold, cfg)
}

fn judge(answer: &str, gold: &Gold, cfg: &RewardConfig) -> Reason {
    let mut budget = budget::Budget::with_steps(cfg.time_budget, cfg.max_steps);
    let mut parse_failed = false;
    for g in gold.answers() {
        match compare::check(answer, g, &mut budget) {
            Ok(true) => return Reason::Correct,
            Ok(false) => {}
            Err(budget::Fail::Parse) => parse_failed = true,
            Err(budget::Fail::Timeout) => return Reason::Timeout,
        }
    }
    if parse_failed {
        Reason::ParseError
    } else {
        Reason::Wrong
    }
}

/// Fuzzing hook: runs the parser alone (normalize → lex → parse →
/// canonical form) on arbitrary text and discards the result. Not part of
/// the stable API.
#[doc(hidden)]
pub fn fuzz_parse(text: &str) {
    let mut budget = budget::Budget::new(RewardConfig::default().time_budget);
    if let Ok(e) = parser::parse(text, &mut budget) {
        let e = compare::canonical(e);
        let _ = compare::equiv(&e, &e, &mut budget);
    }
}
