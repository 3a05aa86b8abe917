//! Tokens of the normalized LaTeX answer.

use super::budget::Fail;
use super::extract::matching_brace;

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// `int[.frac][e±exp]`; `frac` is `Some("")` for a trailing point (`0.`),
    /// which matters for `0.\overline{3}`.
    Num {
        int: String,
        frac: Option<String>,
        exp: Option<i64>,
    },
    /// A run of ASCII letters (`x`, `ab`, `sin`, `cm`); the parser splits it.
    Word(String),
    /// `\name` (letters) or an escaped symbol such as `\{` (name `{`).
    Cmd(String),
    /// Content of `\text{...}` (already normalized to contain letters).
    Text(String),
    /// `\begin{env}` / `\end{env}`.
    Begin(String),
    End(String),
    /// `\\` (matrix row separator).
    RowSep,
    /// Any other single character: operators, brackets, punctuation.
    Sym(char),
}

pub fn lex(s: &str) -> Result<Vec<Tok>, Fail> {
    let b = s.as_bytes();
    let mut toks = Vec::with_capacity(s.len() / 2 + 1);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let (tok, len) = lex_number(&s[i..])?;
            toks.push(tok);
            i += len;
            continue;
        }
        if c.is_ascii_alphabetic() {
            let n = b[i..]
                .iter()
                .take_while(|c| c.is_ascii_alphabetic())
                .count();
            toks.push(Tok::Word(s[i..i + n].to_string()));
            i += n;
            continue;
        }
        if c == b'\\' {
            let n = b[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_alphabetic())
                .count();
            if n == 0 {
                match b.get(i + 1) {
                    Some(b'\\') => toks.push(Tok::RowSep),
                    Some(&d) if d.is_ascii() => toks.push(Tok::Cmd((d as char).to_string())),
                    _ => return Err(Fail::Parse),
                }
                i += 2;
                continue;
            }
            let name = &s[i + 1..i + 1 + n];
            i += 1 + n;
            match name {
                "text" | "begin" | "end" => {
                    let rest = &s[i..];
                    let ws = rest.len() - rest.trim_start().len();
                    let body = rest[ws..].strip_prefix('{').ok_or(Fail::Parse)?;
                    let end = matching_brace(body).ok_or(Fail::Parse)?;
                    let content = body[..end].trim().to_string();
                    toks.push(match name {
                        "text" => Tok::Text(content),
                        "begin" => Tok::Begin(content),
                        _ => Tok::End(content),
                    });
                    i += ws + 1 + end + 1;
                }
                _ => toks.push(Tok::Cmd(name.to_string())),
            }
            continue;
        }
        let ch = s[i..].chars().next().ok_or(Fail::Parse)?;
        if !ch.is_ascii() {
            // Emoji, CJK, …: not math we can read.
            return Err(Fail::Parse);
        }
        toks.push(Tok::Sym(ch));
        i += 1;
    }
    Ok(toks)
}

/// Lexes a number starting at `s`: digits, optional `.digits`, optional
/// scientific exponent (`1e5`, `2.5E-3`; only when digits follow the `e`, so
/// `2e` stays 2·e).
fn lex_number(s: &str) -> Result<(Tok, usize), Fail> {
    let b = s.as_bytes();
    let int_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
    let mut i = int_len;
    let mut frac = None;
    if b.get(i) == Some(&b'.') {
        let f = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        frac = Some(s[i + 1..i + 1 + f].to_string());
        i += 1 + f;
    }
    let mut exp = None;
    if matches!(b.get(i), Some(b'e') | Some(b'E')) {
        let mut j = i + 1;
        let neg = match b.get(j) {
            Some(b'-') => {
                j += 1;
                true
            }
            Some(b'+') => {
                j += 1;
                false
            }
            _ => false,
        };
        let d = b[j..].iter().take_while(|c| c.is_ascii_digit()).count();
        // Only a pure exponent: `2e3x` is fine, `1e5` too, `3ex` is 3·e·x.
        if d > 0 && !b.get(j + d).is_some_and(|c| c.is_ascii_alphabetic()) {
            // Saturate silly exponents; the evaluator refuses them anyway.
            let v: i64 = s[j..j + d]
                .parse()
                .unwrap_or(i64::MAX / 4)
                .min(i64::MAX / 4);
            exp = Some(if neg { -v } else { v });
            i = j + d;
        }
    }
    Ok((
        Tok::Num {
            int: s[..int_len].to_string(),
            frac,
            exp,
        },
        i,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_commands() {
        let t = lex(r"2.5e-3 + \frac{1}{2}x \text{ cm}").unwrap();
        assert_eq!(
            t[0],
            Tok::Num {
                int: "2".into(),
                frac: Some("5".into()),
                exp: Some(-3)
            }
        );
        assert_eq!(t[1], Tok::Sym('+'));
        assert_eq!(t[2], Tok::Cmd("frac".into()));
        assert_eq!(t.last(), Some(&Tok::Text("cm".into())));
        assert!(lex("🙂").is_err());
        assert_eq!(
            lex("0.").unwrap()[0],
            Tok::Num {
                int: "0".into(),
                frac: Some("".into()),
                exp: None
            }
        );
    }
}
