//! Evaluation of scalar expressions: exact rationals while possible,
//! complex floating point after the first irrational step (π, √2, sin …).
//!
//! Bounds: exact results are capped by `MAX_BITS`; integer exponents beyond
//! `MAX_EXACT_EXPONENT` and factorials beyond `MAX_FACTORIAL` go to floating
//! point, and anything that overflows or underflows f64 (`10^{10^{10}}`,
//! `10^{-10^{10}}`) is `Huge`: such a value equals nothing but an identical
//! string, which the caller checks first.

use super::bigint::BigUint;
use super::budget::{Budget, Fail, MAX_EXACT_EXPONENT, MAX_FACTORIAL};
use super::complex::{close, Cx, CX_E, CX_I, CX_PI};
use super::expr::{Expr, Func};
use super::rational::Rat;

#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    R(Rat),
    C(Cx),
    /// ±∞ (`true` = negative).
    Inf(bool),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvalErr {
    /// Division by zero, 0/0, log 0, ∞ − ∞, …
    Undefined,
    /// Out of f64 range or over the exactness caps.
    Huge,
    /// Not a number (a tuple, text, an unknown variable).
    NotScalar,
    Timeout,
}

impl From<Fail> for EvalErr {
    fn from(_: Fail) -> Self {
        EvalErr::Timeout
    }
}

type R = Result<Val, EvalErr>;

/// Variable assignment for one sample point.
pub type Env<'a> = &'a [(String, Rat)];

pub fn eval(e: &Expr, env: Env, b: &mut Budget) -> R {
    b.tick()?;
    match e {
        Expr::Num(r) => Ok(Val::R(r.clone())),
        Expr::Huge => Err(EvalErr::Huge),
        Expr::Var(v) => env
            .iter()
            .find(|(n, _)| n == v)
            .map(|(_, r)| Val::R(r.clone()))
            .ok_or(EvalErr::NotScalar),
        Expr::Pi => Ok(Val::C(CX_PI)),
        Expr::E => Ok(Val::C(CX_E)),
        Expr::I => Ok(Val::C(CX_I)),
        Expr::Inf => Ok(Val::Inf(false)),
        Expr::Neg(a) => Ok(neg(eval(a, env, b)?)),
        Expr::Add(v) => {
            let mut acc = Val::R(Rat::zero());
            for t in v {
                let x = eval(t, env, b)?;
                charge_big(&acc, &x, b)?;
                acc = add(acc, x)?;
            }
            Ok(acc)
        }
        Expr::Mul(v) => {
            let mut acc = Val::R(Rat::from_i64(1));
            for t in v {
                let x = eval(t, env, b)?;
                charge_big(&acc, &x, b)?;
                acc = mul(acc, x)?;
            }
            Ok(acc)
        }
        Expr::Div(x, y) => {
            let (x, y) = (eval(x, env, b)?, eval(y, env, b)?);
            charge_big(&x, &y, b)?;
            div(x, y)
        }
        Expr::Pow(x, y) => pow(eval(x, env, b)?, eval(y, env, b)?, b),
        Expr::Root(k, x) => {
            let k = eval(k, env, b)?;
            let x = eval(x, env, b)?;
            root(x, k, b)
        }
        Expr::Call(f, x) => call(*f, eval(x, env, b)?),
        Expr::LogBase(base, x) => {
            let lb = call(Func::Ln, eval(base, env, b)?)?;
            let lx = call(Func::Ln, eval(x, env, b)?)?;
            div(lx, lb)
        }
        Expr::Fact(x) => factorial(eval(x, env, b)?, b),
        Expr::Binom(n, k) => binom(eval(n, env, b)?, eval(k, env, b)?, b),
        Expr::Based(digits, base) => based_value(digits, *base)
            .map(Val::R)
            .ok_or(EvalErr::Undefined),
        Expr::PlusMinus(..) => Err(EvalErr::NotScalar),
        _ => Err(EvalErr::NotScalar),
    }
}

/// Big-number operations cost up to (bits/64)^2 limb operations: charge
/// them to the budget so long chains of huge products stop in time.
fn charge_big(a: &Val, c: &Val, b: &mut Budget) -> Result<(), EvalErr> {
    let bits = |v: &Val| if let Val::R(r) = v { r.bits() } else { 0 };
    let (x, y) = (bits(a), bits(c));
    if x.max(y) > 128 {
        b.charge(1 + (x / 64 + 1) * (y / 64 + 1) / 64)?;
    }
    Ok(())
}

/// Value of a numeral written in `base`; `None` if a digit is out of range.
pub fn based_value(digits: &str, base: u32) -> Option<Rat> {
    let mut acc = Rat::zero();
    let b = Rat::from_i64(base as i64);
    for c in digits.chars() {
        let d = c.to_digit(36)?;
        if d >= base {
            return None;
        }
        acc = acc.mul(&b)?.add(&Rat::from_i64(d as i64))?;
    }
    Some(acc)
}

/// Float view of a finite value; `Huge` if out of range.
fn to_cx(v: &Val) -> Result<Cx, EvalErr> {
    match v {
        Val::R(r) => {
            let f = r.to_f64();
            if f.is_finite() && (f != 0.0 || r.is_zero()) {
                Ok(Cx::real(f))
            } else {
                Err(EvalErr::Huge)
            }
        }
        Val::C(c) => Ok(*c),
        Val::Inf(_) => Err(EvalErr::Undefined),
    }
}

/// A float result, refusing overflow, NaN and underflow to zero.
fn finite(c: Cx, inputs_nonzero: bool) -> R {
    if !c.is_finite() {
        return Err(EvalErr::Huge);
    }
    if inputs_nonzero && c.re == 0.0 && c.im == 0.0 {
        return Err(EvalErr::Huge);
    }
    Ok(Val::C(c))
}

fn sign_of(v: &Val) -> Option<i8> {
    match v {
        Val::R(r) => Some(if r.is_zero() {
            0
        } else if r.is_neg() {
            -1
        } else {
            1
        }),
        Val::C(c) if c.im == 0.0 => Some(if c.re == 0.0 {
            0
        } else if c.re < 0.0 {
            -1
        } else {
            1
        }),
        Val::Inf(n) => Some(if *n { -1 } else { 1 }),
        _ => None,
    }
}

pub fn neg(v: Val) -> Val {
    match v {
        Val::R(r) => Val::R(r.neg()),
        Val::C(c) => Val::C(c.neg()),
        Val::Inf(n) => Val::Inf(!n),
    }
}

fn add(a: Val, b: Val) -> R {
    match (&a, &b) {
        (Val::R(x), Val::R(y)) => match x.add(y) {
            Some(r) => Ok(Val::R(r)),
            None => finite(to_cx(&a)?.add(to_cx(&b)?), false),
        },
        (Val::Inf(x), Val::Inf(y)) => {
            if x == y {
                Ok(a)
            } else {
                Err(EvalErr::Undefined)
            }
        }
        (Val::Inf(_), _) => Ok(a),
        (_, Val::Inf(_)) => Ok(b),
        _ => finite(to_cx(&a)?.add(to_cx(&b)?), false),
    }
}

fn mul(a: Val, b: Val) -> R {
    match (&a, &b) {
        (Val::R(x), Val::R(y)) => match x.mul(y) {
            Some(r) => Ok(Val::R(r)),
            None => finite(to_cx(&a)?.mul(to_cx(&b)?), true),
        },
        (Val::Inf(_), _) | (_, Val::Inf(_)) => match (sign_of(&a), sign_of(&b)) {
            (Some(s), Some(t)) if s != 0 && t != 0 => Ok(Val::Inf(s * t < 0)),
            _ => Err(EvalErr::Undefined),
        },
        _ => {
            let (x, y) = (to_cx(&a)?, to_cx(&b)?);
            let nz = x.abs() != 0.0 && y.abs() != 0.0;
            finite(x.mul(y), nz)
        }
    }
}

/// Quotient of two values (exact when both are rational).
pub fn div(a: Val, b: Val) -> R {
    match (&a, &b) {
        (Val::R(x), Val::R(y)) => {
            if y.is_zero() {
                return Err(EvalErr::Undefined);
            }
            match x.div(y) {
                Some(r) => Ok(Val::R(r)),
                None => finite(
                    to_cx(&a)?.div(to_cx(&b)?).ok_or(EvalErr::Undefined)?,
                    !x.is_zero(),
                ),
            }
        }
        (Val::Inf(_), Val::Inf(_)) => Err(EvalErr::Undefined),
        (_, Val::Inf(_)) => Ok(Val::R(Rat::zero())),
        (Val::Inf(_), _) => match sign_of(&b) {
            Some(s) if s != 0 => Ok(if s < 0 { neg(a) } else { a }),
            _ => Err(EvalErr::Undefined),
        },
        _ => {
            let (x, y) = (to_cx(&a)?, to_cx(&b)?);
            finite(x.div(y).ok_or(EvalErr::Undefined)?, x.abs() != 0.0)
        }
    }
}

fn pow(a: Val, e: Val, b: &mut Budget) -> R {
    b.check_now()?;
    if let (Val::R(x), Val::R(y)) = (&a, &e) {
        // Squaring chain cost ~ (result bits / 64)^2 limb operations.
        if let Some(k) = y.to_i64() {
            let result_bits = x.bits().saturating_mul(k.unsigned_abs().min(1 << 20));
            // Only when the exact path will really run (else it refuses fast).
            if result_bits > 4096 && result_bits <= super::bigint::MAX_BITS {
                b.charge(1 + (result_bits / 64).pow(2) / 64)?;
            }
        }
    }
    match (&a, &e) {
        (Val::R(x), Val::R(y)) => {
            if y.is_integer() {
                let Some(k) = y.to_i64() else {
                    return float_pow(&a, &e);
                };
                if x.is_zero() {
                    return match k.signum() {
                        -1 => Err(EvalErr::Undefined),
                        0 => Ok(Val::R(Rat::from_i64(1))),
                        _ => Ok(Val::R(Rat::zero())),
                    };
                }
                if x.abs() == Rat::from_i64(1) {
                    return Ok(Val::R(Rat::from_i64(if x.is_neg() && k % 2 != 0 {
                        -1
                    } else {
                        1
                    })));
                }
                if k.abs() <= MAX_EXACT_EXPONENT {
                    if let Some(r) = x.pow(k) {
                        return Ok(Val::R(r));
                    }
                }
                return float_pow(&a, &e);
            }
            // Rational exponent p/q: exact when the base is a perfect q-th power.
            if let (Some(p), Some(q)) = (small(&y.numer()), small(&y.denom())) {
                let p = if y.is_neg() { -p } else { p };
                if q <= 64 {
                    if let Some(r) = x.exact_root(q as u32) {
                        return pow(Val::R(r), Val::R(Rat::from_i64(p)), b);
                    }
                    // Odd roots of negatives are real, as a human reads them.
                    if x.is_neg() && q % 2 == 1 {
                        let m = x.abs().to_f64().powf(p as f64 / q as f64);
                        let m = if p % 2 == 0 { m } else { -m };
                        return finite(Cx::real(m), true);
                    }
                }
            }
            float_pow(&a, &e)
        }
        (Val::Inf(n), _) => match sign_of(&e) {
            Some(1) => Ok(if *n { Val::Inf(false) } else { a.clone() }),
            Some(-1) => Ok(Val::R(Rat::zero())),
            _ => Err(EvalErr::Undefined),
        },
        (_, Val::Inf(n)) => {
            let m = to_cx(&a)?.abs();
            if (m > 1.0) != *n && m != 1.0 {
                Ok(Val::Inf(false))
            } else if m != 1.0 {
                Ok(Val::R(Rat::zero()))
            } else {
                Err(EvalErr::Undefined)
            }
        }
        _ => float_pow(&a, &e),
    }
}

fn small(n: &BigUint) -> Option<i64> {
    n.to_u128()
        .filter(|v| *v <= i64::MAX as u128)
        .map(|v| v as i64)
}

fn float_pow(a: &Val, e: &Val) -> R {
    let x = to_cx(a)?;
    let y = to_cx(e)?;
    let r = x.pow(y).ok_or(EvalErr::Undefined)?;
    finite(r, x.abs() != 0.0)
}

fn root(x: Val, k: Val, b: &mut Budget) -> R {
    if let (Val::R(r), Val::R(kr)) = (&x, &k) {
        if let Some(k) = kr.to_i64().filter(|k| (1..=64).contains(k)) {
            if let Some(v) = r.exact_root(k as u32) {
                return Ok(Val::R(v));
            }
            if r.is_neg() && k % 2 == 1 {
                return finite(Cx::real(-(r.abs().to_f64().powf(1.0 / k as f64))), true);
            }
            if k == 2 {
                return finite(to_cx(&x)?.sqrt(), !r.is_zero());
            }
        }
    }
    let inv = div(Val::R(Rat::from_i64(1)), k)?;
    pow(x, inv, b)
}

fn call(f: Func, x: Val) -> R {
    // Exact special cases that matter for comparisons with exact golds.
    if let Val::R(r) = &x {
        match f {
            Func::Abs => return Ok(Val::R(r.abs())),
            Func::Floor | Func::Ceil => return floor_ceil(r, f == Func::Ceil),
            Func::Sin
            | Func::Tan
            | Func::Asin
            | Func::Atan
            | Func::Sinh
            | Func::Tanh
            | Func::Exp
                if r.is_zero() =>
            {
                return Ok(Val::R(if f == Func::Exp {
                    Rat::from_i64(1)
                } else {
                    Rat::zero()
                }))
            }
            Func::Cos | Func::Cosh | Func::Sec if r.is_zero() => {
                return Ok(Val::R(Rat::from_i64(1)))
            }
            Func::Ln if *r == Rat::from_i64(1) => return Ok(Val::R(Rat::zero())),
            Func::Log10 => {
                // log10 of an exact power of ten is exact.
                if let Some(k) = exact_log10(r) {
                    return Ok(Val::R(Rat::from_i64(k)));
                }
            }
            _ => {}
        }
    }
    if let Val::Inf(_) = x {
        return Err(EvalErr::Undefined);
    }
    let c = to_cx(&x)?;
    let nz = c.abs() != 0.0;
    let real = |v: f64| -> R {
        if v.is_finite() {
            Ok(Val::C(Cx::real(v)))
        } else {
            Err(EvalErr::Undefined)
        }
    };
    match f {
        Func::Sin => finite(c.sin(), false),
        Func::Cos => finite(c.cos(), false),
        Func::Tan => finite(c.sin().div(c.cos()).ok_or(EvalErr::Undefined)?, false),
        Func::Cot => finite(c.cos().div(c.sin()).ok_or(EvalErr::Undefined)?, false),
        Func::Sec => finite(Cx::real(1.0).div(c.cos()).ok_or(EvalErr::Undefined)?, false),
        Func::Csc => finite(Cx::real(1.0).div(c.sin()).ok_or(EvalErr::Undefined)?, false),
        Func::Exp => finite(c.exp(), true),
        Func::Ln => finite(c.ln().ok_or(EvalErr::Undefined)?, false),
        Func::Log10 => finite(
            c.ln()
                .ok_or(EvalErr::Undefined)?
                .div(Cx::real(std::f64::consts::LN_10))
                .ok_or(EvalErr::Undefined)?,
            false,
        ),
        Func::Sinh => finite(c.exp().sub(c.neg().exp()).mul(Cx::real(0.5)), false),
        Func::Cosh => finite(c.exp().add(c.neg().exp()).mul(Cx::real(0.5)), false),
        Func::Tanh => {
            let (p, m) = (c.exp(), c.neg().exp());
            finite(p.sub(m).div(p.add(m)).ok_or(EvalErr::Undefined)?, false)
        }
        Func::Abs => finite(Cx::real(c.abs()), nz),
        _ if !c.is_real() => Err(EvalErr::Undefined),
        Func::Asin if c.re.abs() <= 1.0 => real(c.re.asin()),
        Func::Acos if c.re.abs() <= 1.0 => real(c.re.acos()),
        Func::Atan => real(c.re.atan()),
        Func::Floor => real(c.re.floor()),
        Func::Ceil => real(c.re.ceil()),
        _ => Err(EvalErr::Undefined),
    }
}

fn exact_log10(r: &Rat) -> Option<i64> {
    if r.is_neg() || r.is_zero() || r.bits() > 8192 {
        return None;
    }
    let (n, d) = (r.numer().to_dec_string(), r.denom().to_dec_string());
    let is_pow10 = |s: &str| s.starts_with('1') && s[1..].bytes().all(|b| b == b'0');
    match (is_pow10(&n), is_pow10(&d)) {
        (true, true) => Some(n.len() as i64 - d.len() as i64),
        _ => None,
    }
}

fn floor_ceil(r: &Rat, ceil: bool) -> R {
    let (q, rem) = r.numer().divrem(&r.denom()).ok_or(EvalErr::Undefined)?;
    let q = Rat::from_parts(r.is_neg(), q, BigUint::from_u64(1)).ok_or(EvalErr::Huge)?;
    if rem.is_zero() {
        return Ok(Val::R(q));
    }
    // Truncation toward zero; adjust toward -inf (floor) or +inf (ceil).
    let one = Rat::from_i64(1);
    let v = match (r.is_neg(), ceil) {
        (true, false) => q.sub(&one),
        (false, true) => q.add(&one),
        _ => Some(q),
    };
    v.map(Val::R).ok_or(EvalErr::Huge)
}

fn as_int(v: &Val) -> Option<i64> {
    match v {
        Val::R(r) => r.to_i64(),
        Val::C(c) if c.is_real() && c.re.fract() == 0.0 && c.re.abs() < 1e15 => Some(c.re as i64),
        _ => None,
    }
}

fn factorial(x: Val, b: &mut Budget) -> R {
    let n = as_int(&x).ok_or(EvalErr::Undefined)?;
    if n < 0 {
        return Err(EvalErr::Undefined);
    }
    if n > MAX_FACTORIAL {
        return Err(EvalErr::Huge);
    }
    let mut acc = Rat::from_i64(1);
    for k in 2..=n {
        b.tick()?;
        acc = acc.mul(&Rat::from_i64(k)).ok_or(EvalErr::Huge)?;
    }
    Ok(Val::R(acc))
}

/// `\binom{n}{k}` for integer k ≥ 0 and any n (the falling-factorial
/// formula), so `\binom{n+1}{2}` can be compared with `n(n+1)/2`.
fn binom(n: Val, k: Val, b: &mut Budget) -> R {
    let k = as_int(&k).ok_or(EvalErr::Undefined)?;
    if k < 0 {
        return Ok(Val::R(Rat::zero()));
    }
    if let Some(ni) = as_int(&n) {
        if ni >= 0 && k > ni {
            return Ok(Val::R(Rat::zero()));
        }
        if ni >= 0 {
            if ni > MAX_FACTORIAL {
                return Err(EvalErr::Huge);
            }
            let k = k.min(ni - k);
            return falling(Val::R(Rat::from_i64(ni)), k, b);
        }
    }
    if k > MAX_FACTORIAL {
        return Err(EvalErr::Huge);
    }
    falling(n, k, b)
}

/// n (n−1) … (n−k+1) / k!
fn falling(n: Val, k: i64, b: &mut Budget) -> R {
    let mut acc = Val::R(Rat::from_i64(1));
    for j in 0..k {
        b.tick()?;
        let term = add(n.clone(), Val::R(Rat::from_i64(-j)))?;
        acc = div(mul(acc, term)?, Val::R(Rat::from_i64(j + 1)))?;
    }
    Ok(acc)
}

/// Equality of two evaluated values: exact for rationals, within
/// tolerance once either side is inexact.
pub fn values_equal(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::R(x), Val::R(y)) => x == y,
        (Val::Inf(x), Val::Inf(y)) => x == y,
        (Val::Inf(_), _) | (_, Val::Inf(_)) => false,
        _ => match (to_cx(a), to_cx(b)) {
            (Ok(x), Ok(y)) => close(x, y),
            _ => false,
        },
    }
}
