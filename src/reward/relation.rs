//! Relations: equations, chains and inequalities, in canonical form
//! ([`relation`]) and compared ([`rel_equiv`], [`any_stated`]).

use super::budget::{Budget, Fail};
use super::compare::{canonical, equiv, ordered, proportional};
use super::expr::{Expr, Func, RelOp};
use super::solve::isolate;

pub(super) fn relation(parts: Vec<Expr>, ops: Vec<RelOp>) -> Expr {
    let parts: Vec<Expr> = parts.into_iter().map(canonical).collect();
    if ops.len() == 1 && ops[0] == RelOp::In {
        return parts.into_iter().nth(1).unwrap_or(Expr::Huge);
    }
    if let Some(iv) = inequality_interval(&parts, &ops) {
        return iv;
    }
    named_value(parts, ops)
}

/// How many leading parts of an `=`/`\approx` chain are exact: those up to
/// the first `\approx`; what follows it is a rounding of them.
fn exact_len(ops: &[RelOp]) -> usize {
    ops.iter()
        .position(|o| *o == RelOp::Approx)
        .map_or(ops.len() + 1, |k| k + 1)
}

/// A chain whose left side names the quantity states one value, the last
/// part of its exact part: `y = 4+3 = 7` is `y = 7`, `y = \frac23 \approx
/// 0.67` is `y = \frac23`. Only `x \approx 0.5 \approx …` (no exact part)
/// keeps its first approximate value.
fn named_value(mut parts: Vec<Expr>, ops: Vec<RelOp>) -> Expr {
    let eqs = ops.iter().all(|o| matches!(o, RelOp::Eq | RelOp::Approx));
    if parts.len() <= 2 || !eqs || !is_name(&parts[0]) {
        return Expr::Rel(parts, ops);
    }
    let exact = exact_len(&ops);
    let (k, op) = if exact == 1 {
        (1, RelOp::Approx)
    } else {
        (exact - 1, RelOp::Eq)
    };
    let value = parts.swap_remove(k);
    parts.truncate(1);
    parts.push(value);
    Expr::Rel(parts, vec![op])
}

/// One-variable inequalities as intervals: `x < 3` → (−∞, 3); `1 \le x <
/// 2` → [1, 2); `3 > x` → (−∞, 3); `0 < g(t) < 2` → (0, 2); and linear
/// ones solved first (`solve.rs`): `-2x > -4` → (−∞, 2).
fn inequality_interval(parts: &[Expr], ops: &[RelOp]) -> Option<Expr> {
    let is_ineq = |o: &RelOp| matches!(o, RelOp::Lt | RelOp::Le | RelOp::Gt | RelOp::Ge);
    if !ops.iter().all(is_ineq) {
        return None;
    }
    interval_of(parts, ops).or_else(|| {
        let (parts, ops) = isolate(parts, ops)?;
        interval_of(&parts, &ops)
    })
}

/// The unknown of an inequality read as a set: a variable, or a name made
/// of distinct variables such as `g(t)` (read `g·t` by the parser). Not
/// `|x|` or `x^2`: their solution sets are not the interval of the bound.
/// At most four factors (a name, not a product: also bounds the work).
fn is_unknown(e: &Expr) -> bool {
    match e {
        Expr::Var(_) => true,
        Expr::Mul(v) if v.len() <= 4 => v
            .iter()
            .enumerate()
            .all(|(i, x)| matches!(x, Expr::Var(_)) && !v[..i].contains(x)),
        _ => false,
    }
}

/// [`inequality_interval`] for `x op c` and `lo op x op hi` as written.
fn interval_of(parts: &[Expr], ops: &[RelOp]) -> Option<Expr> {
    let neg_inf = || Expr::Neg(Box::new(Expr::Inf));
    let is_var = is_unknown;
    let bound_free = |e: &Expr| {
        let mut v = Vec::new();
        e.vars_into(&mut v);
        v.is_empty() && !e.is_structural()
    };
    // Normalize to "lower op x op upper" with op ∈ {<, ≤}.
    let closed = |o: RelOp| matches!(o, RelOp::Le | RelOp::Ge);
    match (parts, ops) {
        ([x, c], [op]) if is_var(x) && bound_free(c) => Some(match op {
            RelOp::Lt | RelOp::Le => Expr::Seq(
                '(',
                vec![neg_inf(), c.clone()],
                if closed(*op) { ']' } else { ')' },
            ),
            _ => Expr::Seq(
                if closed(*op) { '[' } else { '(' },
                vec![c.clone(), Expr::Inf],
                ')',
            ),
        }),
        ([c, x], [op]) if is_var(x) && bound_free(c) => {
            interval_of(&[x.clone(), c.clone()], &[op.flipped()])
        }
        ([lo, x, hi], [o1, o2]) if is_var(x) && bound_free(lo) && bound_free(hi) => {
            let up = matches!(o1, RelOp::Lt | RelOp::Le) && matches!(o2, RelOp::Lt | RelOp::Le);
            let down = matches!(o1, RelOp::Gt | RelOp::Ge) && matches!(o2, RelOp::Gt | RelOp::Ge);
            if up {
                Some(Expr::Seq(
                    if closed(*o1) { '[' } else { '(' },
                    vec![lo.clone(), hi.clone()],
                    if closed(*o2) { ']' } else { ')' },
                ))
            } else if down {
                Some(Expr::Seq(
                    if closed(*o2) { '[' } else { '(' },
                    vec![hi.clone(), lo.clone()],
                    if closed(*o1) { ']' } else { ')' },
                ))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Is `e` a name that can prefix an answer (`x =`, `AB =`, `\text{Area} =`,
/// `f(x) =`, `a_1 =`, `|PQ| =`, and ratios of names: `S_1:S_2 =`,
/// `\frac{AM}{MB} =`)?
fn is_name(e: &Expr) -> bool {
    match e {
        Expr::Call(Func::Abs, x) => is_name(x),
        Expr::Div(x, y) => is_name(x) && is_name(y),
        Expr::Var(_) | Expr::Text(_) | Expr::E | Expr::I => true,
        Expr::Mul(v) => v
            .iter()
            .all(|x| matches!(x, Expr::Var(_) | Expr::E | Expr::I | Expr::Text(_))),
        // `(a, b) = (1, 2)`
        Expr::Seq('(', v, ')') => v.iter().all(is_name),
        _ => false,
    }
}

/// Does an equality chain state `other`? A named chain (already reduced
/// to `name = value` by [`named_value`]) states its value. Otherwise only
/// the exact part counts (up to the first `\approx`: `\frac12 \approx 0.5`
/// states 1/2, `5 \approx 7` states 5, never 7), and it must be true
/// throughout: every part matches, so `2 + 3 = 6` states nothing.
pub(super) fn any_stated(
    rel: &Expr,
    other: &Expr,
    rel_is_answer: bool,
    b: &mut Budget,
) -> Result<bool, Fail> {
    let Expr::Rel(parts, ops) = rel else {
        return Ok(false);
    };
    if !ops.iter().all(|o| matches!(o, RelOp::Eq | RelOp::Approx)) {
        return Ok(false);
    }
    let cmp = |v: &Expr, b: &mut Budget| {
        if rel_is_answer {
            equiv(v, other, b)
        } else {
            equiv(other, v, b)
        }
    };
    if is_name(&parts[0]) {
        return cmp(&parts[parts.len() - 1], b);
    }
    for p in &parts[..exact_len(ops).min(parts.len())] {
        if !cmp(p, b)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Relations: same operators and equivalent sides (possibly mirrored:
/// `a < b` = `b > a`); for single equations also "same solution set":
/// `lhs − rhs` proportional (`y = 2x + 1` = `2x − y + 1 = 0`).
pub(super) fn rel_equiv(a: &Expr, g: &Expr, b: &mut Budget) -> Result<bool, Fail> {
    let (Expr::Rel(pa, oa), Expr::Rel(pg, og)) = (a, g) else {
        return Ok(false);
    };
    let plain = |ops: &[RelOp]| -> Vec<RelOp> {
        ops.iter()
            .map(|o| if *o == RelOp::Approx { RelOp::Eq } else { *o })
            .collect()
    };
    let (oa, og) = (&plain(oa), &plain(og));
    if pa.len() == pg.len() {
        if oa == og && ordered(pa, pg, b)? {
            return Ok(true);
        }
        let flipped: Vec<RelOp> = og.iter().rev().map(|o| o.flipped()).collect();
        if *oa == flipped {
            let rev: Vec<Expr> = pg.iter().rev().cloned().collect();
            if ordered(pa, &rev, b)? {
                return Ok(true);
            }
        }
    }
    if oa.as_slice() == [RelOp::Eq] && og.as_slice() == [RelOp::Eq] {
        let fa = Expr::Add(vec![pa[0].clone(), Expr::Neg(Box::new(pa[1].clone()))]);
        let fg = Expr::Add(vec![pg[0].clone(), Expr::Neg(Box::new(pg[1].clone()))]);
        return proportional(&fa, &fg, b);
    }
    Ok(false)
}
