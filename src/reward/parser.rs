//! Recursive-descent parser from normalized LaTeX tokens to [`Expr`].
//!
//! Grammar (loosest to tightest):
//! ```text
//! list   := item ((',' | ';' | "or" | "and") item)*
//! item   := union (relop union)*            relop: = < > \le \ge \ne \in
//! union  := sum ('\cup' sum)*
//! sum    := [+|-|\pm] term ((+|-|\pm|\mp) term)*
//! term   := unary ((*|\cdot|\times|/|\div) unary | implicit power | unit)*
//! unary  := (-|+|\pm) unary | power
//! power  := postfix ('^' script)*
//! postfix:= primary ('!' | '_' script | "'")*
//! primary:= number | letter | \frac a b | \sqrt[n] a | \binom a b | f arg
//!         | ( list ) | [ list ] | { list } | \{ list \} | |sum| | matrix | \text
//! ```
//! Depth is bounded by [`MAX_DEPTH`]; every loop ticks the [`Budget`].
//! Primaries (numbers, words, commands, functions, matrices) live in
//! `primary.rs`.

use super::budget::{Budget, Fail, MAX_DEPTH, MAX_ITEMS};
use super::expr::{Expr, RelOp};
use super::lexer::{lex, Tok};
use super::normalize::normalize;
use super::primary::{canonical_name, letter, reals};
use super::words::{connective, func_word, number_word, unit_word};

/// Parses one answer or gold string.
pub fn parse(s: &str, budget: &mut Budget) -> Result<Expr, Fail> {
    parse_at_depth(s, budget, 0)
}

pub(super) fn parse_at_depth(s: &str, budget: &mut Budget, depth: usize) -> Result<Expr, Fail> {
    let norm = normalize(s)?;
    if let Some(t) = plain_words(&norm) {
        return Ok(t);
    }
    let mut toks = lex(&norm)?;
    // A leading `=` / `\approx` (`\approx 1.2`) carries no meaning.
    if matches!(toks.first(), Some(Tok::Sym('=')))
        || matches!(toks.first(), Some(Tok::Cmd(c)) if c == "approx")
    {
        toks.remove(0);
    }
    let toks = drop_redundant_groups(toks);
    let (lo, hi) = strip_outer_groups(&toks);
    let toks = toks[lo..hi].to_vec();
    if toks.is_empty() {
        return Err(Fail::Parse);
    }
    let mut p = Parser {
        toks,
        pos: 0,
        depth,
        budget,
    };
    let e = p.parse_list()?;
    if p.pos != p.toks.len() {
        return Err(Fail::Parse);
    }
    Ok(e)
}

/// A whole answer made only of words (`east`, `Evelyn`, `neither`) is text,
/// not a product of single-letter variables. Two-letter runs stay math
/// (`ab`), as do function names.
fn plain_words(s: &str) -> Option<Expr> {
    let t = s.trim();
    if matches!(
        t.to_ascii_lowercase().as_str(),
        "all real numbers" | "all reals" | "real numbers"
    ) {
        return Some(reals());
    }
    if !t.chars().all(|c| c.is_ascii_alphabetic() || c == ' ') || number_word(t).is_some() {
        return None;
    }
    let words: Vec<&str> = t.split_whitespace().collect();
    if words.iter().all(|w| w.len() < 3)
        || words.iter().any(|w| w.len() < 2 || func_word(w).is_some())
    {
        return None;
    }
    Some(Expr::Text(t.to_string()))
}

/// Strips redundant wrapping `( … )` / `{ … }` pairs iteratively, so a
/// 1000-deep `{{{5}}}` or `(((5)))` never reaches the recursive parser.
/// Returns the token range to keep.
fn strip_outer_groups(toks: &[Tok]) -> (usize, usize) {
    let (mut lo, mut hi) = (0usize, toks.len());
    let partner = match_brackets(toks);
    while hi >= lo + 2 {
        let wrapped = partner[lo] == Some(hi - 1)
            && match (&toks[lo], &toks[hi - 1]) {
                (Tok::Sym('{'), Tok::Sym('}')) => true,
                (Tok::Sym('('), Tok::Sym(')')) => no_top_level_comma(&toks[lo + 1..hi - 1]),
                _ => false,
            };
        if !wrapped {
            break;
        }
        lo += 1;
        hi -= 1;
    }
    (lo, hi)
}

/// Removes redundant nested pairs anywhere: `{{X}}` → `{X}` and `((X))` →
/// `(X)`, in one linear pass, so deep nesting such as `x = {{{…5…}}}` never
/// reaches the recursive parser.
fn drop_redundant_groups(toks: Vec<Tok>) -> Vec<Tok> {
    let partner = match_brackets(&toks);
    let mut drop = vec![false; toks.len()];
    for i in 0..toks.len().saturating_sub(1) {
        let (Some(j), Some(k)) = (partner[i], partner[i + 1]) else {
            continue;
        };
        let same = matches!(
            (&toks[i], &toks[i + 1], &toks[j], &toks[k]),
            (Tok::Sym('{'), Tok::Sym('{'), Tok::Sym('}'), Tok::Sym('}'))
                | (Tok::Sym('('), Tok::Sym('('), Tok::Sym(')'), Tok::Sym(')'))
        );
        if same && k + 1 == j {
            drop[i + 1] = true;
            drop[k] = true;
        }
    }
    if !drop.contains(&true) {
        return toks;
    }
    toks.into_iter()
        .zip(drop)
        .filter(|(_, d)| !d)
        .map(|(t, _)| t)
        .collect()
}

/// For each opening bracket token, the index of its closing partner.
/// `(`/`[` close with `)`/`]` (intervals mix them); `{` with `}`.
fn match_brackets(toks: &[Tok]) -> Vec<Option<usize>> {
    let mut partner = vec![None; toks.len()];
    let mut stack: Vec<(usize, char)> = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Sym(c @ ('(' | '[' | '{')) => stack.push((i, *c)),
            Tok::Sym(c @ (')' | ']' | '}')) => {
                let want_brace = *c == '}';
                match stack.last() {
                    Some(&(j, o)) if (o == '{') == want_brace => {
                        stack.pop();
                        partner[j] = Some(i);
                    }
                    _ => return partner, // unbalanced: stop matching
                }
            }
            _ => {}
        }
    }
    partner
}

fn no_top_level_comma(inner: &[Tok]) -> bool {
    let mut depth = 0i32;
    for t in inner {
        match t {
            Tok::Sym('(' | '[' | '{') => depth += 1,
            Tok::Sym(')' | ']' | '}') => depth -= 1,
            Tok::Sym(',' | ';') if depth == 0 => return false,
            _ => {}
        }
    }
    true
}

/// Left in the token stream by [`Parser::next`] in place of a consumed
/// integer literal / other number. Normalized text never contains these
/// control characters, so no real token is mistaken for them.
pub(super) const INT_DONE: char = '\u{1}';
pub(super) const NUM_DONE: char = '\u{2}';

pub(super) struct Parser<'b> {
    pub(super) toks: Vec<Tok>,
    pub(super) pos: usize,
    pub(super) depth: usize,
    pub(super) budget: &'b mut Budget,
}

impl<'b> Parser<'b> {
    pub(super) fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    pub(super) fn peek_sym(&self, c: char) -> bool {
        matches!(self.peek(), Some(Tok::Sym(x)) if *x == c)
    }

    pub(super) fn peek_cmd(&self, name: &str) -> bool {
        matches!(self.peek(), Some(Tok::Cmd(x)) if x == name)
    }

    /// Takes the next token out of the stream (consumed tokens are never
    /// read again, except through [`Self::push_back`]). What is left in its
    /// place says whether it was a number ([`INT_DONE`], [`NUM_DONE`]), so
    /// that a number written right after a number can be recognized.
    pub(super) fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get_mut(self.pos).map(|t| {
            let mark = match t {
                Tok::Num {
                    frac: None,
                    exp: None,
                    ..
                } => INT_DONE,
                Tok::Num { .. } => NUM_DONE,
                _ => ' ',
            };
            std::mem::replace(t, Tok::Sym(mark))
        });
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    /// The token consumed last (see [`Self::next`] for numbers).
    pub(super) fn prev(&self) -> Option<&Tok> {
        self.pos.checked_sub(1).and_then(|i| self.toks.get(i))
    }

    pub(super) fn eat_sym(&mut self, c: char) -> bool {
        if self.peek_sym(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn eat_cmd(&mut self, name: &str) -> bool {
        if self.peek_cmd(name) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub(super) fn expect_sym(&mut self, c: char) -> Result<(), Fail> {
        if self.eat_sym(c) {
            Ok(())
        } else {
            Err(Fail::Parse)
        }
    }

    /// Replaces the token just consumed by `rest` and steps back, so that a
    /// multi-character token can be consumed one character at a time.
    pub(super) fn push_back(&mut self, rest: Tok) {
        self.pos -= 1;
        self.toks[self.pos] = rest;
    }

    pub(super) fn enter(&mut self) -> Result<(), Fail> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Fail::Parse);
        }
        self.budget.tick()
    }

    pub(super) fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Operator chains (`a/b/c`, `x^y^z`, `5!!`, `a ± b ± c`) build nested
    /// trees without recursing in the parser; each link counts toward the
    /// depth limit so evaluation (which recurses) stays bounded. `links`
    /// is released with [`Self::unlink`] when the chain is complete.
    pub(super) fn link(&mut self, links: &mut usize) -> Result<(), Fail> {
        self.enter()?;
        *links += 1;
        Ok(())
    }

    pub(super) fn unlink(&mut self, links: usize) {
        self.depth -= links;
    }

    // ---- lists, relations, unions ----

    pub(super) fn parse_list(&mut self) -> Result<Expr, Fail> {
        let mut items = self.parse_items()?;
        Ok(if items.len() == 1 {
            items.pop().unwrap_or(Expr::Huge)
        } else {
            Expr::List(items)
        })
    }

    /// Items separated by `,`, `;`, "or", "and" (`a, b, \text{ and } c`:
    /// a word after a comma joins it). When both `;` and another separator
    /// occur, `;` separates groups: `a=1, b=3; a=2, b=5` is two solutions,
    /// each a list (which matches the tuple `(1, 3)`).
    pub(super) fn parse_items(&mut self) -> Result<Vec<Expr>, Fail> {
        let mut items = vec![self.parse_item()?];
        // Item indices that start a `;` group; whether any other separator.
        let mut groups = Vec::new();
        let mut other_sep = false;
        loop {
            self.budget.tick()?;
            let semicolon = self.peek_sym(';');
            if !semicolon && !self.peek_connective() {
                break;
            }
            self.pos += 1;
            while self.peek_connective() && !self.peek_sym(';') {
                self.pos += 1;
            }
            if semicolon {
                groups.push(items.len());
            } else {
                other_sep = true;
            }
            // Tolerate a dangling separator before a closer (`1, 2,`).
            if self.at_list_end() {
                break;
            }
            items.push(self.parse_item()?);
            if items.len() > MAX_ITEMS {
                return Err(Fail::Parse);
            }
        }
        if groups.is_empty() || !other_sep {
            return Ok(items);
        }
        let mut out = Vec::with_capacity(groups.len() + 1);
        groups.insert(0, 0);
        for &start in groups.iter().rev() {
            let mut g = items.split_off(start.min(items.len()));
            match g.len() {
                0 => {} // a dangling `;`
                1 => out.push(g.pop().unwrap_or(Expr::Huge)),
                _ => out.push(Expr::List(g)),
            }
        }
        out.reverse();
        Ok(out)
    }

    /// `,`, `;`, "or", "and" (also in `\text{}`).
    fn peek_connective(&self) -> bool {
        match self.peek() {
            Some(Tok::Sym(',' | ';')) => true,
            Some(Tok::Word(w)) => w == "or" || w == "and",
            Some(Tok::Text(t)) => connective(t),
            _ => false,
        }
    }

    pub(super) fn at_list_end(&self) -> bool {
        match self.peek() {
            None => true,
            Some(Tok::Sym(')' | ']' | '}' | '&')) | Some(Tok::End(_)) | Some(Tok::RowSep) => true,
            Some(Tok::Cmd(c)) => c == "}",
            _ => false,
        }
    }

    pub(super) fn rel_op(&mut self) -> Option<RelOp> {
        let op = match self.peek()? {
            Tok::Sym('=') => RelOp::Eq,
            Tok::Sym('<') => RelOp::Lt,
            Tok::Sym('>') => RelOp::Gt,
            Tok::Sym('!') if matches!(self.toks.get(self.pos + 1), Some(Tok::Sym('='))) => {
                self.pos += 2;
                return Some(RelOp::Ne);
            }
            Tok::Cmd(c) => match c.as_str() {
                "le" => RelOp::Le,
                "ge" => RelOp::Ge,
                "ne" => RelOp::Ne,
                "in" => RelOp::In,
                "approx" | "simeq" => RelOp::Approx,
                "equiv" | "cong" => RelOp::Eq,
                _ => return None,
            },
            _ => return None,
        };
        self.pos += 1;
        // `<=`, `>=`, `==`
        if matches!(op, RelOp::Lt | RelOp::Gt | RelOp::Eq) && self.eat_sym('=') {
            return Some(match op {
                RelOp::Lt => RelOp::Le,
                RelOp::Gt => RelOp::Ge,
                o => o,
            });
        }
        Some(op)
    }

    pub(super) fn parse_item(&mut self) -> Result<Expr, Fail> {
        let first = self.parse_union()?;
        let mut parts = vec![first];
        let mut ops = Vec::new();
        while let Some(op) = self.rel_op() {
            self.budget.tick()?;
            ops.push(op);
            parts.push(self.parse_union()?);
        }
        Ok(if ops.is_empty() {
            parts.pop().unwrap_or(Expr::Huge)
        } else {
            Expr::Rel(parts, ops)
        })
    }

    pub(super) fn parse_union(&mut self) -> Result<Expr, Fail> {
        let mut parts = vec![self.parse_sum()?];
        while self.eat_cmd("cup") {
            self.budget.tick()?;
            parts.push(self.parse_sum()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().unwrap_or(Expr::Huge)
        } else {
            Expr::Union(parts)
        })
    }

    // ---- arithmetic ----

    pub(super) fn sign_op(&mut self) -> Option<char> {
        let c = match self.peek()? {
            Tok::Sym('+') => '+',
            Tok::Sym('-') => '-',
            Tok::Cmd(c) if c == "pm" => '±',
            Tok::Cmd(c) if c == "mp" => '∓',
            _ => return None,
        };
        self.pos += 1;
        Some(c)
    }

    pub(super) fn parse_sum(&mut self) -> Result<Expr, Fail> {
        let mut terms: Vec<Expr> = Vec::new();
        match self.sign_op() {
            None => terms.push(self.parse_term()?),
            Some('+') => terms.push(self.parse_term()?),
            Some('-') => terms.push(Expr::Neg(Box::new(self.parse_term()?))),
            Some(c) => {
                let t = self.parse_term()?;
                terms.push(Expr::PlusMinus(
                    Box::new(Expr::num(0)),
                    Box::new(t),
                    c == '∓',
                ));
            }
        }
        let mut links = 0;
        while let Some(op) = self.sign_op() {
            self.budget.tick()?;
            let t = self.parse_term()?;
            match op {
                '+' => terms.push(t),
                '-' => terms.push(Expr::Neg(Box::new(t))),
                c => {
                    self.link(&mut links)?;
                    let acc = if terms.len() == 1 {
                        terms.pop().unwrap_or(Expr::Huge)
                    } else {
                        Expr::Add(std::mem::take(&mut terms))
                    };
                    terms.push(Expr::PlusMinus(Box::new(acc), Box::new(t), c == '∓'));
                }
            }
            if terms.len() > 100_000 {
                return Err(Fail::Parse);
            }
        }
        self.unlink(links);
        Ok(if terms.len() == 1 {
            terms.pop().unwrap_or(Expr::Huge)
        } else {
            Expr::Add(terms)
        })
    }

    /// `*`, `\cdot`, `\times`, `\ast`.
    pub(super) fn peek_mul_op(&self) -> bool {
        self.peek_sym('*')
            || self.peek_cmd("cdot")
            || self.peek_cmd("times")
            || self.peek_cmd("ast")
    }

    /// `/`, `\div`, and `:` (a ratio `a:b` is read as a/b).
    pub(super) fn peek_div_op(&self) -> bool {
        self.peek_sym('/') || self.peek_sym(':') || self.peek_cmd("div")
    }

    /// Can the next token start a factor of an implicit product?
    pub(super) fn starts_factor(&self) -> bool {
        match self.peek() {
            Some(Tok::Num { .. }) | Some(Tok::Word(_)) | Some(Tok::Begin(_)) => true,
            Some(Tok::Sym('(' | '{')) => true,
            // Operators, relations and dots never start a factor; nor do these.
            Some(Tok::Cmd(c)) => !self.is_operator_cmd(c) && !matches!(c.as_str(), "simeq" | "cong" | "colon" | "}"),
            _ => false,
        }
    }

    pub(super) fn parse_term(&mut self) -> Result<Expr, Fail> {
        let mut factors = vec![self.parse_unary()?];
        let mut links = 0;
        loop {
            self.budget.tick()?;
            match self.peek() {
                _ if self.peek_mul_op() => {
                    self.pos += 1;
                    factors.push(self.parse_unary()?);
                }
                _ if self.peek_div_op() => {
                    self.pos += 1;
                    self.link(&mut links)?;
                    let rhs = self.parse_unary()?;
                    let lhs = if factors.len() == 1 {
                        factors.pop().unwrap_or(Expr::Huge)
                    } else {
                        Expr::Mul(std::mem::take(&mut factors))
                    };
                    factors.push(Expr::Div(Box::new(lhs), Box::new(rhs)));
                }
                Some(Tok::Text(t)) if !connective(t) => {
                    // A unit or label after a value: `12 \text{ cm}^2`.
                    self.pos += 1;
                    self.skip_unit_exponent()?;
                }
                Some(Tok::Word(_))
                    if matches!(self.toks.get(self.pos + 1), Some(Tok::Sym('/')))
                        && self.compound_unit(&factors).is_some() =>
                {
                    // `3.5 m/s`: a unit, not variables (see `numerals.rs`).
                    self.pos += self.compound_unit(&factors).unwrap_or(0);
                }
                Some(Tok::Word(w)) if unit_word(w) => {
                    self.pos += 1;
                    self.skip_unit_exponent()?;
                }
                Some(Tok::Word(w)) if w == "or" || w == "and" => break,
                _ if self.starts_factor() => {
                    // Mixed numbers and numbers written next to numbers
                    // (`numerals.rs`) have one reading or none.
                    if !self.juxtaposed_number(&mut factors)? {
                        factors.push(self.parse_power()?);
                    }
                }
                _ => break,
            }
            if factors.len() > 100_000 {
                return Err(Fail::Parse);
            }
        }
        self.unlink(links);
        Ok(if factors.len() == 1 {
            factors.pop().unwrap_or(Expr::Huge)
        } else {
            Expr::Mul(factors)
        })
    }

    pub(super) fn skip_unit_exponent(&mut self) -> Result<(), Fail> {
        if self.eat_sym('^') {
            self.parse_script_arg()?;
        }
        Ok(())
    }

    pub(super) fn parse_unary(&mut self) -> Result<Expr, Fail> {
        // A run of signs (`--5`, `-+-x`) is folded iteratively: only its
        // parity matters, and 10,000 minus signs must not recurse.
        let mut negative = false;
        loop {
            self.budget.tick()?;
            if self.eat_sym('-') {
                negative = !negative;
            } else if !self.eat_sym('+') {
                break;
            }
        }
        self.enter()?;
        let r = match self.peek() {
            Some(Tok::Cmd(c)) if c == "pm" || c == "mp" => {
                let minus_first = c == "mp";
                self.pos += 1;
                self.parse_unary()
                    .map(|e| Expr::PlusMinus(Box::new(Expr::num(0)), Box::new(e), minus_first))
            }
            _ => self.parse_power(),
        };
        self.leave();
        r.map(|e| if negative { Expr::Neg(Box::new(e)) } else { e })
    }

    pub(super) fn parse_power(&mut self) -> Result<Expr, Fail> {
        let base = self.parse_postfix()?;
        let mut exps = Vec::new();
        let mut links = 0;
        while self.eat_sym('^') {
            self.link(&mut links)?;
            exps.push(self.parse_script_arg()?);
        }
        self.unlink(links);
        // Right associative: a^b^c = a^(b^c).
        let mut e = match exps.pop() {
            None => return Ok(base),
            Some(last) => last,
        };
        while let Some(x) = exps.pop() {
            e = Expr::Pow(Box::new(x), Box::new(e));
        }
        Ok(Expr::Pow(Box::new(base), Box::new(e)))
    }

    /// Argument of `^` or `_`: a braced group, or one token. A multi-digit
    /// number is taken whole (`2^10` means 1024 to a human reader).
    pub(super) fn parse_script_arg(&mut self) -> Result<Expr, Fail> {
        self.enter()?;
        let r = match self.peek() {
            Some(Tok::Sym('-')) => {
                self.pos += 1;
                self.parse_script_arg().map(|e| Expr::Neg(Box::new(e)))
            }
            Some(Tok::Sym('+')) => {
                self.pos += 1;
                self.parse_script_arg()
            }
            Some(Tok::Word(w)) if w.len() > 1 => {
                let w = w.clone();
                self.pos += 1;
                self.push_back(Tok::Word(w[1..].to_string()));
                Ok(letter(&w[..1]))
            }
            _ => self.parse_primary(),
        };
        self.leave();
        r
    }

    pub(super) fn parse_postfix(&mut self) -> Result<Expr, Fail> {
        let mut e = self.parse_primary()?;
        let mut links = 0;
        let r = loop {
            self.budget.tick()?;
            if self.peek_sym('!') && !matches!(self.toks.get(self.pos + 1), Some(Tok::Sym('='))) {
                self.pos += 1;
                self.link(&mut links)?;
                e = Expr::Fact(Box::new(e));
            } else if self.peek_sym('\'') {
                self.pos += 1;
                match &mut e {
                    Expr::Var(v) => v.push('\''),
                    _ => return Err(Fail::Parse),
                }
            } else if self.peek_sym('_') {
                self.pos += 1;
                let sub = self.parse_script_arg()?;
                e = match (e, sub) {
                    (Expr::Num(n), Expr::Num(b)) if n.is_integer() && b.is_integer() => {
                        let base = b
                            .to_i64()
                            .filter(|b| (2..=36).contains(b))
                            .ok_or(Fail::Parse)?;
                        Expr::Based(n.numer().to_dec_string(), base as u32)
                    }
                    (Expr::Var(v), sub) => Expr::Var(format!("{v}_{{{}}}", canonical_name(&sub))),
                    (Expr::Pi, sub) => Expr::Var(format!("pi_{{{}}}", canonical_name(&sub))),
                    (Expr::E, sub) => Expr::Var(format!("e_{{{}}}", canonical_name(&sub))),
                    (Expr::I, sub) => Expr::Var(format!("i_{{{}}}", canonical_name(&sub))),
                    _ => return Err(Fail::Parse),
                };
            } else {
                break Ok(e);
            }
        };
        self.unlink(links);
        r
    }
}
