//! The expression tree produced by the parser.
//!
//! Scalar nodes evaluate to numbers; structural nodes (tuples, intervals,
//! sets, lists, matrices, relations, text) are compared structurally by
//! `compare.rs` and never evaluated as a whole.

use super::rational::Rat;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Sin,
    Cos,
    Tan,
    Cot,
    Sec,
    Csc,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Ln,
    /// `\log` without a base: base 10 (competition convention).
    Log10,
    Exp,
    Abs,
    Floor,
    Ceil,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelOp {
    Eq,
    /// `\approx`, `\simeq`: equal for comparison, but a side may be rounded.
    Approx,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
}

impl RelOp {
    /// The same relation read right-to-left (`a < b` is `b > a`).
    pub fn flipped(self) -> RelOp {
        match self {
            RelOp::Lt => RelOp::Gt,
            RelOp::Le => RelOp::Ge,
            RelOp::Gt => RelOp::Lt,
            RelOp::Ge => RelOp::Le,
            o => o,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// Exact literal (integers, decimals, repeating decimals, e-notation).
    Num(Rat),
    /// A literal too large to hold exactly (e.g. `1e100000`).
    Huge,
    Var(String),
    Pi,
    E,
    I,
    Inf,
    Neg(Box<Expr>),
    Add(Vec<Expr>),
    Mul(Vec<Expr>),
    Div(Box<Expr>, Box<Expr>),
    Pow(Box<Expr>, Box<Expr>),
    /// `Root(index, radicand)`.
    Root(Box<Expr>, Box<Expr>),
    Call(Func, Box<Expr>),
    /// `LogBase(base, arg)`.
    LogBase(Box<Expr>, Box<Expr>),
    Fact(Box<Expr>),
    Binom(Box<Expr>, Box<Expr>),
    /// `a ± b` (`a` is 0 for a leading `±`); `minus_first` for `∓`.
    PlusMinus(Box<Expr>, Box<Expr>, bool),
    /// A numeral with a base subscript, `52_8`: digits and base.
    Based(String, u32),
    // ---- structural ----
    /// Bracketed comma list: tuple or interval; the brackets are kept.
    Seq(char, Vec<Expr>, char),
    /// `\{...\}`; `\emptyset` is the empty set.
    Set(Vec<Expr>),
    /// `A \cup B \cup ...`.
    Union(Vec<Expr>),
    /// A bare comma / "or" / "and" separated list (unordered, like a set).
    List(Vec<Expr>),
    Matrix(Vec<Vec<Expr>>),
    /// A relation chain `e0 op0 e1 op1 e2 ...`.
    Rel(Vec<Expr>, Vec<RelOp>),
    /// A word or phrase (`\text{Evelyn}`), compared as normalized text.
    Text(String),
}

impl Expr {
    pub fn num(v: i64) -> Expr {
        Expr::Num(Rat::from_i64(v))
    }

    pub fn is_structural(&self) -> bool {
        matches!(
            self,
            Expr::Seq(..)
                | Expr::Set(_)
                | Expr::Union(_)
                | Expr::List(_)
                | Expr::Matrix(_)
                | Expr::Rel(..)
                | Expr::Text(_)
        )
    }

    /// Calls `f` on each immediate child of a scalar node (structural nodes
    /// report none: their items are visited by the comparison, not the
    /// evaluator). No allocation: traversals run on every grading.
    pub fn for_each_child<'a>(&'a self, mut f: impl FnMut(&'a Expr)) {
        match self {
            Expr::Neg(a) | Expr::Call(_, a) | Expr::Fact(a) => f(a),
            Expr::Add(v) | Expr::Mul(v) => v.iter().for_each(f),
            Expr::Div(a, b)
            | Expr::Pow(a, b)
            | Expr::Root(a, b)
            | Expr::LogBase(a, b)
            | Expr::Binom(a, b)
            | Expr::PlusMinus(a, b, _) => {
                f(a);
                f(b)
            }
            _ => {}
        }
    }

    /// Variable names in a scalar expression (deduplicated), and the number
    /// of nodes visited. Iterative so deep trees cannot overflow the stack.
    pub fn vars_into(&self, out: &mut Vec<String>) -> usize {
        let mut stack = vec![self];
        let mut nodes = 0;
        while let Some(e) = stack.pop() {
            nodes += 1;
            if let Expr::Var(v) = e {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            e.for_each_child(|c| stack.push(c));
        }
        nodes
    }

    pub fn has_plus_minus(&self) -> bool {
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            if matches!(e, Expr::PlusMinus(..)) {
                return true;
            }
            e.for_each_child(|c| stack.push(c));
        }
        false
    }

    /// Expands every `±` into both signs: `1 ± √5` → [1 + √5, 1 − √5].
    /// At most 2^4 variants; more `±` signs than that are left unexpanded.
    pub fn expand_plus_minus(&self) -> Vec<Expr> {
        let mut out = vec![self.clone()];
        for _ in 0..4 {
            let mut next = Vec::new();
            let mut changed = false;
            for e in &out {
                match expand_first(e) {
                    Some((p, m)) => {
                        next.push(p);
                        next.push(m);
                        changed = true;
                    }
                    None => next.push(e.clone()),
                }
            }
            out = next;
            if !changed {
                break;
            }
        }
        out
    }
}

/// Replaces the first `±` found (pre-order) by `+` and by `−`.
fn expand_first(e: &Expr) -> Option<(Expr, Expr)> {
    if let Expr::PlusMinus(a, b, minus_first) = e {
        let p = Expr::Add(vec![(**a).clone(), (**b).clone()]);
        let m = Expr::Add(vec![(**a).clone(), Expr::Neg(b.clone())]);
        return Some(if *minus_first { (m, p) } else { (p, m) });
    }
    macro_rules! un {
        ($ctor:expr, $a:expr) => {
            expand_first($a).map(|(p, m)| ($ctor(Box::new(p)), $ctor(Box::new(m))))
        };
    }
    macro_rules! bin {
        ($ctor:expr, $a:expr, $b:expr) => {
            if let Some((p, m)) = expand_first($a) {
                Some((
                    $ctor(Box::new(p), $b.clone()),
                    $ctor(Box::new(m), $b.clone()),
                ))
            } else {
                expand_first($b).map(|(p, m)| {
                    (
                        $ctor($a.clone(), Box::new(p)),
                        $ctor($a.clone(), Box::new(m)),
                    )
                })
            }
        };
    }
    match e {
        Expr::Neg(a) => un!(Expr::Neg, a),
        Expr::Fact(a) => un!(Expr::Fact, a),
        Expr::Call(f, a) => {
            expand_first(a).map(|(p, m)| (Expr::Call(*f, Box::new(p)), Expr::Call(*f, Box::new(m))))
        }
        Expr::Div(a, b) => bin!(Expr::Div, a, b),
        Expr::Pow(a, b) => bin!(Expr::Pow, a, b),
        Expr::Root(a, b) => bin!(Expr::Root, a, b),
        Expr::LogBase(a, b) => bin!(Expr::LogBase, a, b),
        Expr::Binom(a, b) => bin!(Expr::Binom, a, b),
        Expr::Add(v) | Expr::Mul(v) => {
            for (i, c) in v.iter().enumerate() {
                if let Some((p, m)) = expand_first(c) {
                    let mut vp = v.clone();
                    let mut vm = v.clone();
                    vp[i] = p;
                    vm[i] = m;
                    return Some(if matches!(e, Expr::Add(_)) {
                        (Expr::Add(vp), Expr::Add(vm))
                    } else {
                        (Expr::Mul(vp), Expr::Mul(vm))
                    });
                }
            }
            None
        }
        _ => None,
    }
}
