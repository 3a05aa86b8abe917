//! Primaries of the grammar in `parser.rs`: numbers (with repeating
//! decimals and e-notation), letters and words, `\\text{}`, LaTeX commands
//! (`\\frac`, `\\sqrt[n]`, `\\binom`, sets, floors, decorations),
//! functions with their powers and bases, and matrix environments.

use super::budget::{Fail, MAX_ITEMS};
use super::expr::{Expr, Func};
use super::lexer::Tok;
use super::matrix::determinant;
use super::parser::{parse_at_depth, Parser};
use super::rational::{pow10, Rat};
use super::words::{func_word, number_word, unit_word};

impl Parser<'_> {
    pub(super) fn parse_primary(&mut self) -> Result<Expr, Fail> {
        self.enter()?;
        let r = self.parse_primary_inner();
        self.leave();
        r
    }

    pub(super) fn parse_primary_inner(&mut self) -> Result<Expr, Fail> {
        let tok = self.next().ok_or(Fail::Parse)?;
        match tok {
            Tok::Num { int, frac, exp } => self.number(&int, frac.as_deref(), exp),
            Tok::Word(w) => self.word(w),
            Tok::Cmd(c) => self.command(&c),
            Tok::Text(t) => self.text(t),
            Tok::Sym(c @ ('(' | '[')) => {
                if self.eat_sym(if c == '(' { ')' } else { ']' }) {
                    return Err(Fail::Parse);
                }
                let mut items = self.parse_items()?;
                let close = match self.next() {
                    Some(Tok::Sym(d @ (')' | ']'))) => d,
                    _ => return Err(Fail::Parse),
                };
                if items.len() == 1 && (c == '(') == (close == ')') {
                    return Ok(items.pop().unwrap_or(Expr::Huge));
                }
                Ok(Expr::Seq(c, items, close))
            }
            Tok::Sym('{') => {
                let e = self.parse_list()?;
                self.expect_sym('}')?;
                Ok(e)
            }
            Tok::Sym('|') => {
                let e = self.parse_sum()?;
                self.expect_sym('|')?;
                Ok(Expr::Call(Func::Abs, Box::new(e)))
            }
            Tok::Begin(env) => self.matrix(&env),
            _ => Err(Fail::Parse),
        }
    }

    pub(super) fn number(
        &mut self,
        int: &str,
        frac: Option<&str>,
        exp: Option<i64>,
    ) -> Result<Expr, Fail> {
        let frac_digits = frac.unwrap_or("");
        // Repeating decimal: `0.\overline{3}`, `0.1\dot{6}`. The digits are
        // read raw so that `\overline{09}` keeps its leading zero.
        if frac.is_some()
            && exp.is_none()
            && ["overline", "dot", "bar"].iter().any(|c| self.peek_cmd(c))
        {
            self.pos += 1;
            let braced = self.eat_sym('{');
            let rep_digits = match self.next() {
                Some(Tok::Num {
                    int: d,
                    frac: None,
                    exp: None,
                }) => d,
                _ => return Err(Fail::Parse),
            };
            if braced {
                self.expect_sym('}')?;
            }
            return repeating(int, frac_digits, &rep_digits)
                .map(Expr::Num)
                .ok_or(Fail::Parse);
        }
        let Some(mut v) = Rat::from_decimal(int, frac_digits) else {
            return Ok(Expr::Huge);
        };
        if let Some(e) = exp {
            let p = match pow10(e.unsigned_abs()) {
                Some(p) => Rat::from_parts(false, p, super::bigint::BigUint::from_u64(1))
                    .ok_or(Fail::Parse)?,
                None => return Ok(Expr::Huge),
            };
            v = match if e < 0 { v.div(&p) } else { v.mul(&p) } {
                Some(r) => r,
                None => return Ok(Expr::Huge),
            };
        }
        Ok(Expr::Num(v))
    }

    pub(super) fn word(&mut self, w: String) -> Result<Expr, Fail> {
        if w.len() > 1 {
            if let Some(f) = func_word(&w) {
                return self.function(f);
            }
            // `sinx` → sin x
            for fw in [
                "arcsin", "arccos", "arctan", "sin", "cos", "tan", "cot", "sec", "csc", "ln",
                "log", "exp",
            ] {
                if let Some(rest) = w.strip_prefix(fw) {
                    if !rest.is_empty() && rest.len() <= 2 {
                        // The rest of the word becomes the argument.
                        self.push_back(Tok::Word(rest.to_string()));
                        return self.function(func_word(fw).ok_or(Fail::Parse)?);
                    }
                }
            }
            if let Some(n) = number_word(&w) {
                return Ok(Expr::num(n));
            }
            if w == "or" || w == "and" {
                return Err(Fail::Parse);
            }
            self.push_back(Tok::Word(w[1..].to_string()));
            return Ok(letter(&w[..1]));
        }
        Ok(letter(&w))
    }

    pub(super) fn text(&mut self, t: String) -> Result<Expr, Fail> {
        if let Some(n) = number_word(&t) {
            return Ok(Expr::num(n));
        }
        if matches!(
            t.to_ascii_lowercase().trim(),
            "all real numbers" | "all reals" | "all real x" | "real numbers"
        ) {
            return Ok(reals());
        }
        if t.bytes().any(|b| b.is_ascii_digit()) {
            // `\text{5 cm}`: read the math inside.
            if let Ok(e) = parse_at_depth(&t, self.budget, self.depth + 1) {
                return Ok(e);
            }
        }
        Ok(Expr::Text(t))
    }

    /// Argument of `\frac`, `\sqrt`, `\binom`: a braced group or a single
    /// character (`\frac12`, `\sqrt3`, `\frac ab`).
    pub(super) fn single_arg(&mut self) -> Result<Expr, Fail> {
        match self.peek().cloned() {
            Some(Tok::Sym('{')) => {
                self.pos += 1;
                if self.peek_sym('}') {
                    return Err(Fail::Parse);
                }
                let e = self.parse_list()?;
                self.expect_sym('}')?;
                Ok(e)
            }
            Some(Tok::Num {
                int,
                frac: None,
                exp: None,
            }) if int.len() > 1 => {
                self.pos += 1;
                self.push_back(Tok::Num {
                    int: int[1..].to_string(),
                    frac: None,
                    exp: None,
                });
                Ok(Expr::num((int.as_bytes()[0] - b'0') as i64))
            }
            Some(Tok::Word(w)) if w.len() > 1 => {
                self.pos += 1;
                self.push_back(Tok::Word(w[1..].to_string()));
                Ok(letter(&w[..1]))
            }
            _ => self.parse_primary(),
        }
    }

    pub(super) fn command(&mut self, c: &str) -> Result<Expr, Fail> {
        if let Some(f) = func_word(c) {
            return self.function(f);
        }
        match c {
            "frac" => {
                let a = self.single_arg()?;
                let b = self.single_arg()?;
                Ok(Expr::Div(Box::new(a), Box::new(b)))
            }
            "sqrt" => {
                let idx = if self.eat_sym('[') {
                    let e = self.parse_list()?;
                    self.expect_sym(']')?;
                    e
                } else {
                    Expr::num(2)
                };
                let a = self.single_arg()?;
                Ok(Expr::Root(Box::new(idx), Box::new(a)))
            }
            "binom" => {
                let a = self.single_arg()?;
                let b = self.single_arg()?;
                Ok(Expr::Binom(Box::new(a), Box::new(b)))
            }
            "pi" => Ok(Expr::Pi),
            "infty" => Ok(Expr::Inf),
            "emptyset" => Ok(Expr::Set(Vec::new())),
            "mathbb" => {
                let a = self.single_arg()?;
                match a {
                    Expr::Var(v) if v == "R" => Ok(Expr::Seq(
                        '(',
                        vec![Expr::Neg(Box::new(Expr::Inf)), Expr::Inf],
                        ')',
                    )),
                    Expr::Var(v) => Ok(Expr::Var(format!("mathbb{v}"))),
                    _ => Err(Fail::Parse),
                }
            }
            "{" => {
                if self.eat_cmd("}") {
                    return Ok(Expr::Set(Vec::new()));
                }
                let items = self.parse_items()?;
                if !self.eat_cmd("}") {
                    return Err(Fail::Parse);
                }
                Ok(Expr::Set(items))
            }
            "lfloor" | "lceil" => {
                let e = self.parse_sum()?;
                let close = if c == "lfloor" { "rfloor" } else { "rceil" };
                if !self.eat_cmd(close) {
                    return Err(Fail::Parse);
                }
                Ok(Expr::Call(
                    if c == "lfloor" {
                        Func::Floor
                    } else {
                        Func::Ceil
                    },
                    Box::new(e),
                ))
            }
            "|" => {
                let e = self.parse_sum()?;
                if !self.eat_cmd("|") {
                    return Err(Fail::Parse);
                }
                Ok(Expr::Call(Func::Abs, Box::new(e)))
            }
            "overline" | "bar" | "hat" | "vec" | "tilde" | "widehat" | "overrightarrow"
            | "mathcal" | "mathfrak" | "mathscr" => {
                // Decorated names (`\overline{AB}`) are opaque symbols.
                let a = self.single_arg()?;
                Ok(Expr::Var(format!("{c}{{{}}}", canonical_name(&a))))
            }
            _ if c.len() > 1
                && c.bytes().all(|b| b.is_ascii_alphabetic())
                && !self.is_operator_cmd(c) =>
            {
                // Greek letters and other symbols: opaque variables.
                Ok(Expr::Var(format!("\\{c}")))
            }
            _ => Err(Fail::Parse),
        }
    }

    pub(super) fn is_operator_cmd(&self, c: &str) -> bool {
        matches!(
            c,
            "cdot"
                | "times"
                | "div"
                | "ast"
                | "pm"
                | "mp"
                | "cup"
                | "cap"
                | "le"
                | "ge"
                | "ne"
                | "in"
                | "approx"
                | "equiv"
                | "to"
                | "rightarrow"
                | "Rightarrow"
                | "implies"
                | "iff"
                | "ldots"
                | "dots"
                | "cdots"
                | "vdots"
                | "ddots"
                | "rfloor"
                | "rceil"
                | "setminus"
                | "mid"
                | "quad"
                | "qquad"
                | "land"
                | "lor"
                | "wedge"
                | "vee"
                | "neg"
                | "forall"
                | "exists"
                | "end"
                | "begin"
                | "not"
                | "notin"
                | "subset"
                | "subseteq"
                | "supset"
                | "therefore"
                | "because"
                | "overset"
                | "underset"
                | "stackrel"
        )
    }

    pub(super) fn function(&mut self, f: Func) -> Result<Expr, Fail> {
        let mut power = None;
        let mut base = None;
        loop {
            if self.eat_sym('^') {
                power = Some(self.parse_script_arg()?);
            } else if self.eat_sym('_') {
                base = Some(self.parse_script_arg()?);
            } else {
                break;
            }
        }
        let arg = self.func_arg()?;
        let inverse = matches!(&power, Some(Expr::Neg(p)) if **p == Expr::num(1));
        let f = if inverse {
            match f {
                Func::Sin => Func::Asin,
                Func::Cos => Func::Acos,
                Func::Tan => Func::Atan,
                other => other,
            }
        } else {
            f
        };
        let call = match (f, base) {
            (Func::Log10 | Func::Ln, Some(b)) => Expr::LogBase(Box::new(b), Box::new(arg)),
            (_, Some(_)) => return Err(Fail::Parse),
            (f, None) => Expr::Call(f, Box::new(arg)),
        };
        Ok(match power {
            Some(p) if !inverse => Expr::Pow(Box::new(call), Box::new(p)),
            _ => call,
        })
    }

    /// `\sin(x)`, `\sin{x}`, or an implicit product without operators:
    /// `\sin 2x`, `\cot x`. Stops at the next function (`\sin x \cos x`).
    pub(super) fn func_arg(&mut self) -> Result<Expr, Fail> {
        if self.peek_sym('(') || self.peek_sym('{') {
            return self.parse_power();
        }
        let mut factors = vec![self.parse_unary()?];
        loop {
            self.budget.tick()?;
            let is_func = match self.peek() {
                Some(Tok::Cmd(c)) => func_word(c).is_some(),
                Some(Tok::Word(w)) => {
                    func_word(w).is_some() || unit_word(w) || w == "or" || w == "and"
                }
                Some(Tok::Sym('(')) => true,
                _ => false,
            };
            if is_func || !self.starts_factor() {
                break;
            }
            // Mixed numbers and numbers next to numbers read as in a term
            // (`\sin 3\frac12` is sin 3.5, `\sin 2 3` has no reading).
            if !self.juxtaposed_number(&mut factors)? {
                factors.push(self.parse_power()?);
            }
        }
        Ok(if factors.len() == 1 {
            factors.pop().unwrap_or(Expr::Huge)
        } else {
            Expr::Mul(factors)
        })
    }

    pub(super) fn matrix(&mut self, env: &str) -> Result<Expr, Fail> {
        if !matches!(
            env,
            "pmatrix"
                | "bmatrix"
                | "Bmatrix"
                | "vmatrix"
                | "Vmatrix"
                | "matrix"
                | "smallmatrix"
                | "array"
        ) {
            return Err(Fail::Parse);
        }
        if env == "array" && self.eat_sym('{') {
            // Column spec `{cc|c}`: skip to the closing brace.
            while !self.eat_sym('}') {
                self.next().ok_or(Fail::Parse)?;
            }
        }
        let mut rows = Vec::new();
        let mut row = Vec::new();
        loop {
            self.budget.tick()?;
            match self.peek() {
                Some(Tok::End(_)) => {
                    self.pos += 1;
                    if !row.is_empty() {
                        rows.push(row);
                    }
                    break;
                }
                None => return Err(Fail::Parse),
                _ => {}
            }
            row.push(self.parse_item()?);
            if self.eat_sym('&') {
                continue;
            }
            if matches!(self.peek(), Some(Tok::RowSep)) {
                self.pos += 1;
                rows.push(std::mem::take(&mut row));
                continue;
            }
            if !matches!(self.peek(), Some(Tok::End(_))) {
                return Err(Fail::Parse);
            }
        }
        if rows.is_empty() || rows.len() * rows[0].len() > MAX_ITEMS {
            return Err(Fail::Parse);
        }
        match env {
            // `vmatrix` is a determinant, `Vmatrix` a norm: not the matrix.
            "vmatrix" => determinant(&rows).ok_or(Fail::Parse),
            "Vmatrix" => Err(Fail::Parse),
            _ => Ok(Expr::Matrix(rows)),
        }
    }
}

/// ℝ as the interval (−∞, ∞).
pub(super) fn reals() -> Expr {
    Expr::Seq('(', vec![Expr::Neg(Box::new(Expr::Inf)), Expr::Inf], ')')
}

/// `e` is Euler's number and `i` the imaginary unit; other letters are
/// variables.
pub(super) fn letter(l: &str) -> Expr {
    match l {
        "e" => Expr::E,
        "i" => Expr::I,
        _ => Expr::Var(l.to_string()),
    }
}

/// A stable name for a subscript or decorated symbol.
pub(super) fn canonical_name(e: &Expr) -> String {
    match e {
        Expr::Num(r) if r.is_integer() => {
            let s = r.numer().to_dec_string();
            if r.is_neg() {
                format!("-{s}")
            } else {
                s
            }
        }
        Expr::Var(v) => v.clone(),
        Expr::E => "e".into(),
        Expr::I => "i".into(),
        Expr::Pi => "pi".into(),
        Expr::Mul(v) => v.iter().map(canonical_name).collect::<Vec<_>>().join(""),
        other => format!("{other:?}"),
    }
}

/// Value of `int.frac(rep)(rep)…`.
fn repeating(int: &str, frac: &str, rep: &str) -> Option<Rat> {
    // x = (int frac rep - int frac) / (10^|frac| (10^|rep| - 1))
    let all = Rat::from_decimal(&format!("{int}{frac}{rep}"), "")?;
    let head = Rat::from_decimal(&format!("{int}{frac}"), "")?;
    let one = super::bigint::BigUint::from_u64(1);
    let p_frac = Rat::from_parts(false, pow10(frac.len() as u64)?, one.clone())?;
    let p_rep = Rat::from_parts(false, pow10(rep.len() as u64)?, one)?;
    let den = p_frac.mul(&p_rep.sub(&Rat::from_i64(1))?)?;
    all.sub(&head)?.div(&den)
}
