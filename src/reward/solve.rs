//! Linear one-variable inequalities solved for their variable, so that a
//! solution set compares as a set: `-2x > -4` is `x < 2`, `2x + 1 \le 3x`
//! is `x \ge 1`, `1 < 2x - 1 \le 5` is `1 < x \le 3`.
//!
//! Only exact rational coefficients are used: the sign of the coefficient
//! decides whether the inequality turns around, so it must be known
//! exactly. Anything else (`x^2 < 4`, `|x| < 2`, `\sqrt2 x > 1`, two
//! variables) is left as written and compared as a relation.

use super::expr::{Expr, RelOp};
use super::rational::Rat;

/// Largest relation (nodes) we try to solve. The work is linear, but
/// canonical forms are built without a step budget.
const MAX_NODES: usize = 2000;

/// `parts`/`ops` rewritten as `x op c` or `lo op x op hi`, where `x` is the
/// only variable, when the relation is linear in it.
pub(super) fn isolate(parts: &[Expr], ops: &[RelOp]) -> Option<(Vec<Expr>, Vec<RelOp>)> {
    let mut vars = Vec::new();
    let mut nodes = 0;
    for p in parts {
        if p.is_structural() {
            return None;
        }
        nodes += p.vars_into(&mut vars);
    }
    if vars.len() != 1 || nodes > MAX_NODES {
        return None;
    }
    let x = Expr::Var(vars.pop()?);
    match (parts, ops) {
        ([l, r], [op]) => {
            let (a, bound) = match (has_var(l), has_var(r)) {
                (true, false) => {
                    let (a, b) = linear(l)?;
                    let bound = shift(r, &a, &b)?;
                    (a, bound)
                }
                (false, true) => return isolate(&[r.clone(), l.clone()], &[op.flipped()]),
                // Both sides: a·x + b op 0.
                _ => {
                    let ((a1, b1), (a2, b2)) = (linear(l)?, linear(r)?);
                    let (a, b) = (a1.sub(&a2)?, b1.sub(&b2)?);
                    let c = Expr::Num(b.neg().div(&a)?);
                    (a, c)
                }
            };
            let op = if a.is_neg() { op.flipped() } else { *op };
            (!a.is_zero()).then(|| (vec![x, bound], vec![op]))
        }
        ([lo, m, hi], [o1, o2]) if has_var(m) && !has_var(lo) && !has_var(hi) => {
            let (a, b) = linear(m)?;
            if a.is_zero() {
                return None;
            }
            let (lo, hi) = (shift(lo, &a, &b)?, shift(hi, &a, &b)?);
            let (o1, o2) = if a.is_neg() {
                (o1.flipped(), o2.flipped())
            } else {
                (*o1, *o2)
            };
            Some((vec![lo, x, hi], vec![o1, o2]))
        }
        _ => None,
    }
}

fn has_var(e: &Expr) -> bool {
    let mut v = Vec::new();
    e.vars_into(&mut v);
    !v.is_empty()
}

/// `(c − b) / a` for a bound `c` of `a·x + b`: exact when `c` is rational,
/// else as an expression (`\sqrt2 < 2x` gives `\sqrt2 / 2`).
fn shift(c: &Expr, a: &Rat, b: &Rat) -> Option<Expr> {
    if let Some((ca, cb)) = linear(c) {
        if ca.is_zero() {
            return Some(Expr::Num(cb.sub(b)?.div(a)?));
        }
    }
    let num = Expr::Add(vec![c.clone(), Expr::Num(b.neg())]);
    Some(Expr::Div(Box::new(num), Box::new(Expr::Num(a.clone()))))
}

/// `e` as `a·x + b` with rational `a`, `b` (the caller checked that `x` is
/// the only variable); `None` when it is not linear with exact
/// coefficients.
fn linear(e: &Expr) -> Option<(Rat, Rat)> {
    Some(match e {
        Expr::Num(r) => (Rat::zero(), r.clone()),
        Expr::Var(_) => (Rat::from_i64(1), Rat::zero()),
        Expr::Neg(x) => {
            let (a, b) = linear(x)?;
            (a.neg(), b.neg())
        }
        Expr::Add(v) => {
            let (mut a, mut b) = (Rat::zero(), Rat::zero());
            for t in v {
                let (ta, tb) = linear(t)?;
                a = a.add(&ta)?;
                b = b.add(&tb)?;
            }
            (a, b)
        }
        Expr::Mul(v) => {
            let (mut a, mut b) = (Rat::zero(), Rat::from_i64(1));
            for f in v {
                let (fa, fb) = linear(f)?;
                if !a.is_zero() && !fa.is_zero() {
                    return None; // x·x
                }
                a = a.mul(&fb)?.add(&fa.mul(&b)?)?;
                b = b.mul(&fb)?;
            }
            (a, b)
        }
        Expr::Div(x, y) => {
            let (a, b) = linear(x)?;
            let (ya, yb) = linear(y)?;
            if !ya.is_zero() || yb.is_zero() {
                return None;
            }
            (a.div(&yb)?, b.div(&yb)?)
        }
        _ => return None,
    })
}
