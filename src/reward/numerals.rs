//! Numbers written next to numbers. Each notation gets one reading, so an
//! ambiguous answer can never be accepted through a second reading (a
//! reward the policy could farm):
//!
//! * An integer literal directly followed by a numeric fraction is a mixed
//!   number: `3\frac{1}{2}`, `3 1/2`, `{3}\frac12` are 3 + 1/2, and a sign
//!   covers the whole (`-3 2/5` = −17/5). The fraction must be proper and
//!   positive; `2\frac32`, `2 3/2`, `3\frac{0}{5}` read as a product or as a
//!   mixed number equally well, so they are parse errors.
//! * Any other number right after a number with only spaces or braces
//!   between (`3 2`, `1.2.3`, `3{2}/5`, `2^3 4`) is a parse error: neither a
//!   product nor a concatenation. Thousands groups written with spaces
//!   (`1 000`) were already joined by `normalize.rs`.
//!
//! Explicit operators and visible brackets keep their meaning: `3 \cdot 2`,
//! `(3)2`, `3\frac{x}{2}` are products.
//!
//! A compound unit written after a number (`3.5 m/s`, `60 km/h`, `9.8
//! m/s^2`) and ending the term is a unit, dropped like `\text{m/s}`; a lone
//! letter after a number stays a variable.

use super::budget::Fail;
use super::expr::Expr;
use super::lexer::Tok;
use super::parser::{Parser, INT_DONE, NUM_DONE};
use super::rational::Rat;
use super::words::{connective, unit_symbol};

impl Parser<'_> {
    /// Does the next factor start with a number that touches the previous
    /// number (only spaces or braces between)?
    pub(super) fn glued_number(&self, last: Option<&Expr>) -> bool {
        let next_is_num = match self.peek() {
            Some(Tok::Num { .. }) => true,
            Some(Tok::Sym('{')) => matches!(self.toks.get(self.pos + 1), Some(Tok::Num { .. })),
            _ => false,
        };
        next_is_num
            && match self.prev() {
                Some(Tok::Sym(INT_DONE | NUM_DONE)) => true,
                // `{3}2`: a braced number is still a visible number.
                Some(Tok::Sym('}')) => last.and_then(signed_literal).is_some(),
                _ => false,
            }
    }

    /// The whole part of a mixed number: the last factor is an integer
    /// literal (possibly negated) that the next token touches.
    fn visible_int(&self, last: Option<&Expr>) -> Option<(bool, Rat)> {
        let (neg, r) = signed_literal(last?)?;
        let touching = matches!(self.prev(), Some(Tok::Sym(INT_DONE | '}')));
        (touching && r.is_integer()).then(|| (neg, r.clone()))
    }

    /// Called before a juxtaposed factor. Reads a mixed number into the last
    /// factor, refuses a number glued to a number, and leaves everything
    /// else to the caller (`Ok(false)`). `Ok(true)`: the factor is consumed.
    pub(super) fn juxtaposed_number(&mut self, factors: &mut Vec<Expr>) -> Result<bool, Fail> {
        if self.peek_cmd("frac") {
            let Some((neg, whole)) = self.visible_int(factors.last()) else {
                return Ok(false);
            };
            let f = self.parse_power()?;
            match literal_fraction(&f) {
                // `2\frac{x}{2}`, `2\frac{\pi}{2}`: a product.
                Lit::NotLiteral => factors.push(f),
                Lit::Proper(part) => set_last(factors, neg, &whole, &part)?,
                Lit::Other => return Err(Fail::Parse),
            }
            return Ok(true);
        }
        if !self.glued_number(factors.last()) {
            return Ok(false);
        }
        // Only `a b/c` with a space (not a brace) between reads: mixed.
        let whole = self.visible_int(factors.last());
        let (Some((neg, whole)), Some(Tok::Sym(INT_DONE)), Some(Tok::Num { .. })) =
            (whole, self.prev(), self.peek())
        else {
            return Err(Fail::Parse);
        };
        let n = self.int_literal()?;
        if !self.eat_sym('/') {
            return Err(Fail::Parse);
        }
        let d = self.int_literal()?;
        // `3 2/5^2`, `3 2/5!`, `3 2/5 7`: the denominator is not the end.
        let binds = matches!(
            self.peek(),
            Some(Tok::Sym('^' | '_' | '!' | '\'' | '/' | ':' | '.'))
        ) || self.peek_cmd("frac")
            || self.glued_number(None);
        let part = proper(&n, &d).filter(|_| !binds).ok_or(Fail::Parse)?;
        set_last(factors, neg, &whole, &part)?;
        Ok(true)
    }

    /// Length in tokens of a compound unit (`m/s`, `km/h`, `m/s^2`) at the
    /// cursor, when it follows a number (`factors` has no variable) and
    /// ends the term; `None` otherwise (then the letters are variables).
    pub(super) fn compound_unit(&self, factors: &[Expr]) -> Option<usize> {
        let t = self.toks.get(self.pos..)?;
        let unit = |i: usize| matches!(t.get(i), Some(Tok::Word(w)) if unit_symbol(w));
        if !(unit(0) && matches!(t.get(1), Some(Tok::Sym('/'))) && unit(2)) {
            return None;
        }
        let n = match (t.get(3), t.get(4), t.get(5), t.get(6)) {
            (Some(Tok::Sym('^')), Some(Tok::Num { .. }), _, _) => 5,
            (
                Some(Tok::Sym('^')),
                Some(Tok::Sym('{')),
                Some(Tok::Num { .. }),
                Some(Tok::Sym('}')),
            ) => 7,
            (Some(Tok::Sym('^')), ..) => return None,
            _ => 3,
        };
        let ends = match t.get(n) {
            None | Some(Tok::RowSep | Tok::End(_)) => true,
            Some(Tok::Sym(c)) => matches!(c, ',' | ';' | ')' | ']' | '}' | '=' | '<' | '>' | '&'),
            Some(Tok::Cmd(c)) => matches!(c.as_str(), "le" | "ge" | "ne" | "approx" | "}"),
            Some(Tok::Word(w)) => w == "or" || w == "and",
            Some(Tok::Text(x)) => connective(x),
            _ => false,
        };
        let numeric = factors.iter().all(|f| {
            let mut v = Vec::new();
            f.vars_into(&mut v);
            v.is_empty() && !f.is_structural()
        });
        (ends && numeric).then_some(n)
    }

    /// The next token as an integer literal (`007` is 7).
    fn int_literal(&mut self) -> Result<Rat, Fail> {
        match self.next() {
            Some(Tok::Num {
                int,
                frac: None,
                exp: None,
            }) => Rat::from_decimal(&int, "").ok_or(Fail::Parse),
            _ => Err(Fail::Parse),
        }
    }
}

/// `5` or `-5` as a literal: its sign and magnitude.
fn signed_literal(e: &Expr) -> Option<(bool, &Rat)> {
    match e {
        Expr::Num(r) => Some((false, r)),
        Expr::Neg(x) => match &**x {
            Expr::Num(r) => Some((true, r)),
            _ => None,
        },
        _ => None,
    }
}

enum Lit {
    /// Not a fraction of two number literals: `\frac{x}{2}`.
    NotLiteral,
    /// A proper positive fraction of integers, `\frac{1}{2}`.
    Proper(Rat),
    /// Any other literal fraction (improper, zero, signed, decimal, or
    /// raised to a power): no single reading after an integer.
    Other,
}

fn literal_fraction(f: &Expr) -> Lit {
    match f {
        Expr::Div(a, b) => match (signed_literal(a), signed_literal(b)) {
            (Some((false, n)), Some((false, d))) => match proper(n, d) {
                Some(p) => Lit::Proper(p),
                None => Lit::Other,
            },
            (Some(_), Some(_)) => Lit::Other,
            _ => Lit::NotLiteral,
        },
        Expr::Pow(base, _) => match literal_fraction(base) {
            Lit::NotLiteral => Lit::NotLiteral,
            _ => Lit::Other,
        },
        _ => Lit::NotLiteral,
    }
}

/// n/d when both are integers and 0 < n < d.
fn proper(n: &Rat, d: &Rat) -> Option<Rat> {
    if !n.is_integer() || !d.is_integer() || n.is_neg() || n.is_zero() || d.is_neg() {
        return None;
    }
    let v = n.div(d)?;
    (v.cmp_value(&Rat::from_i64(1)) == Some(std::cmp::Ordering::Less)).then_some(v)
}

/// Replaces the last factor (the whole part) by ±(whole + part).
fn set_last(factors: &mut [Expr], neg: bool, whole: &Rat, part: &Rat) -> Result<(), Fail> {
    let v = Expr::Num(whole.add(part).ok_or(Fail::Parse)?);
    let slot = factors.last_mut().ok_or(Fail::Parse)?;
    *slot = if neg { Expr::Neg(Box::new(v)) } else { v };
    Ok(())
}
