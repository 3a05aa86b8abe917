//! String-level cleanup before lexing. Everything here is presentation that
//! a human grader ignores:
//!
//! * Unicode math (`−`, `½`, `√2`, `π`, `°`, `≤`, full-width digits) → LaTeX.
//! * `$`, `\$`, `€`, `£`, `¥`, `\%`, `%`, `\displaystyle`, `\left`/`\right`, `\big…`,
//!   spacing commands, `^\circ` / `\degree` are dropped.
//! * `\dfrac`/`\tfrac` → `\frac`, `\dbinom` → `\binom`, `\le`/`\leq` → `\le`.
//! * Text-like wrappers (`\text`, `\mbox`, `\mathrm`, `\textbf`, `\mathbf`,
//!   …) become `{…}` when their content has no letters (`\text{-2}` is -2)
//!   and `\text{…}` otherwise (a word or a unit, decided by the parser).
//! * Thousands separators: `1{,}000`, `1,\!000`, `8\,000` always; bare
//!   `12,345,678` (groups of exactly three digits, no spaces) only outside
//!   brackets, since `(100,200)` is a pair.
//! * Trailing sentence punctuation (`\frac12.`) is dropped.

use super::budget::{Fail, MAX_INPUT_BYTES};
use super::extract::matching_brace;

/// Marker for a thin space / negative space, resolved by [`join_thousands`].
const THIN: char = '\u{1}';

pub fn normalize(s: &str) -> Result<String, Fail> {
    if s.len() > MAX_INPUT_BYTES {
        return Err(Fail::Parse);
    }
    let mapped = map_unicode(s);
    let rewritten = rewrite_commands(&mapped);
    let joined = join_thousands(&rewritten);
    Ok(strip_trailing(&joined).to_string())
}

fn map_unicode(s: &str) -> String {
    if s.is_ascii() && !s.bytes().any(|b| b < 0x20 && b != b'\n' && b != b'\t') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let rep: &str = match c {
            '\u{2212}' | '\u{2013}' | '\u{2014}' | '\u{2010}' | '\u{2011}' => "-",
            '\u{00d7}' => r"\times ",
            '\u{00b7}' | '\u{22c5}' | '\u{2219}' => r"\cdot ",
            '\u{00f7}' => r"\div ",
            '\u{03c0}' => r"\pi ",
            '\u{221e}' => r"\infty ",
            '\u{00b0}' | '\u{2218}' => "",
            // Currency signs, dropped like `$`: `12€`, `£5`, `¥100`, `50¢`.
            '\u{20ac}' | '\u{00a3}' | '\u{00a5}' | '\u{20b9}' | '\u{00a2}' | '\u{20a9}' => "",
            '\u{2264}' | '\u{2a7d}' => r"\le ",
            '\u{2265}' | '\u{2a7e}' => r"\ge ",
            '\u{2260}' => r"\ne ",
            '\u{2248}' => r"\approx ",
            '\u{00b1}' => r"\pm ",
            '\u{2213}' => r"\mp ",
            '\u{222a}' => r"\cup ",
            '\u{2208}' => r"\in ",
            '\u{2205}' => r"\emptyset ",
            '\u{211d}' => r"\mathbb{R}",
            '\u{00bd}' => r"\frac{1}{2}",
            '\u{2153}' => r"\frac{1}{3}",
            '\u{2154}' => r"\frac{2}{3}",
            '\u{00bc}' => r"\frac{1}{4}",
            '\u{00be}' => r"\frac{3}{4}",
            '\u{2155}' => r"\frac{1}{5}",
            '\u{2159}' => r"\frac{1}{6}",
            '\u{215b}' => r"\frac{1}{8}",
            c if superscript(c).is_some() => {
                // A run of superscripts is one exponent: `10⁻³` → `10^{-3}`.
                out.push_str("^{");
                out.push(superscript(c).unwrap_or('0'));
                while let Some(d) = chars.peek().and_then(|&d| superscript(d)) {
                    out.push(d);
                    chars.next();
                }
                out.push('}');
                continue;
            }
            '\u{03b1}' => r"\alpha ",
            '\u{03b2}' => r"\beta ",
            '\u{03b8}' => r"\theta ",
            '\u{2026}' => r"\ldots ",
            '\u{221a}' => {
                // `√2` / `√x`: the radicand is the following alphanumeric run.
                out.push_str(r"\sqrt");
                if chars.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
                    out.push('{');
                    while let Some(&d) = chars.peek() {
                        if !d.is_ascii_alphanumeric() {
                            break;
                        }
                        out.push(d);
                        chars.next();
                    }
                    out.push('}');
                }
                continue;
            }
            // Full-width ASCII (digits, letters, punctuation).
            '\u{ff01}'..='\u{ff5e}' => {
                out.push(char::from_u32(c as u32 - 0xfee0).unwrap_or(' '));
                continue;
            }
            c if c.is_control() || c.is_whitespace() => " ",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(rep);
    }
    out
}

fn superscript(c: char) -> Option<char> {
    Some(match c {
        '\u{2070}' => '0',
        '\u{00b9}' => '1',
        '\u{00b2}' => '2',
        '\u{00b3}' => '3',
        '\u{2074}'..='\u{2079}' => char::from_u32(c as u32 - 0x2074 + '4' as u32)?,
        '\u{207b}' => '-',
        '\u{207a}' => '+',
        _ => return None,
    })
}

/// Text-like wrappers whose content is either plain math or a word.
const TEXT_CMDS: &[&str] = &[
    "text",
    "textrm",
    "textnormal",
    "mbox",
    "hbox",
    "mathrm",
    "textit",
    "mathit",
    "textsf",
    "mathsf",
    "texttt",
    "mathtt",
    "textbf",
    "mathbf",
    "boldsymbol",
    "bm",
    "emph",
    "textup",
    "mathbfit",
    "pmb",
];

fn rewrite_commands(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'$' | b'%' => i += 1,
            b'~' => {
                out.push(' ');
                i += 1;
            }
            b'^' => {
                // Degrees: `^\circ`, `^{\circ}`, `^{\circ}` with spaces.
                if let Some(len) = degree_suffix(&s[i + 1..]) {
                    i += 1 + len;
                } else {
                    out.push('^');
                    i += 1;
                }
            }
            b'\\' => {
                let name_len = b[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .count();
                if name_len == 0 {
                    // Control symbol.
                    match b.get(i + 1) {
                        None => i += 1,
                        Some(b',') | Some(b'!') | Some(b';') | Some(b':') | Some(b' ') => {
                            out.push(THIN);
                            i += 2;
                        }
                        Some(b'$') | Some(b'%') | Some(b'#') => i += 2,
                        Some(_) => {
                            let ch_len = s[i + 1..].chars().next().map_or(1, |c| c.len_utf8());
                            out.push_str(&s[i..i + 1 + ch_len]);
                            i += 1 + ch_len;
                        }
                    }
                    continue;
                }
                let name = &s[i + 1..i + 1 + name_len];
                let mut next = i + 1 + name_len;
                match name {
                    "left" | "right" | "bigl" | "bigr" | "Bigl" | "Bigr" | "big" | "Big"
                    | "bigg" | "Bigg" | "biggl" | "biggr" | "Biggl" | "Biggr" | "middle" => {
                        if b.get(next) == Some(&b'.') {
                            next += 1; // invisible delimiter
                        }
                    }
                    "displaystyle" | "textstyle" | "scriptstyle" | "limits" | "nolimits"
                    | "quad" | "qquad" | "hfill" | "medspace" | "thinspace" | "enspace"
                    | "noindent" => out.push(' '),
                    "circ" | "degree" | "degrees" => {}
                    "dfrac" | "tfrac" | "cfrac" => out.push_str(r"\frac"),
                    "dbinom" | "tbinom" => out.push_str(r"\binom"),
                    "leq" | "le" | "leqslant" | "leqq" => out.push_str(r"\le "),
                    "geq" | "ge" | "geqslant" | "geqq" => out.push_str(r"\ge "),
                    "neq" | "ne" => out.push_str(r"\ne "),
                    "lt" => out.push('<'),
                    "gt" => out.push('>'),
                    "varnothing" => out.push_str(r"\emptyset "),
                    "infin" => out.push_str(r"\infty "),
                    "lbrace" => out.push_str(r"\{"),
                    "rbrace" => out.push_str(r"\}"),
                    "lbrack" => out.push('['),
                    "rbrack" => out.push(']'),
                    "langle" => out.push('('),
                    "rangle" => out.push(')'),
                    "colon" => out.push(':'),
                    "dollar" | "%" => {}
                    "operatorname" => {
                        // `\operatorname{arcsin}` is the command `\arcsin`.
                        let rest = &s[next..];
                        let ws = rest.len() - rest.trim_start().len();
                        if let Some(body) = rest[ws..].strip_prefix('{') {
                            if let Some(end) = matching_brace(body) {
                                let name = body[..end].trim();
                                if !name.is_empty() && name.bytes().all(|c| c.is_ascii_alphabetic())
                                {
                                    out.push('\\');
                                    out.push_str(name);
                                    out.push(' ');
                                    i = next + ws + 1 + end + 1;
                                    continue;
                                }
                            }
                        }
                    }
                    n if TEXT_CMDS.contains(&n) => {
                        let rest = &s[next..];
                        let ws = rest.len() - rest.trim_start().len();
                        if rest[ws..].starts_with('{') {
                            let body = &rest[ws + 1..];
                            if let Some(end) = matching_brace(body) {
                                let content = &body[..end];
                                if has_plain_letters(content) {
                                    out.push_str(r"\text{");
                                    out.push_str(content.trim());
                                    out.push('}');
                                    i = next + ws + 1 + end + 1;
                                } else {
                                    // Math inside: keep processing it inline.
                                    out.push('{');
                                    i = next + ws + 1;
                                }
                                continue;
                            }
                        }
                    }
                    _ => {
                        out.push('\\');
                        out.push_str(name);
                        // Keep `\pi2` from becoming one name later.
                        if b.get(next).is_some_and(|c| c.is_ascii_alphanumeric()) {
                            out.push(' ');
                        }
                    }
                }
                i = next;
            }
            _ => {
                let ch_len = s[i..].chars().next().map_or(1, |c| c.len_utf8());
                out.push_str(&s[i..i + ch_len]);
                i += ch_len;
            }
        }
    }
    out
}

/// Length of `\circ`, `{\circ}` (with optional spaces) at the start of `s`.
fn degree_suffix(s: &str) -> Option<usize> {
    let t = s.trim_start();
    let lead = s.len() - t.len();
    for pat in [
        r"\circ",
        r"{\circ}",
        r"{ \circ }",
        r"{\circ }",
        r"{ \circ}",
        r"\degree",
    ] {
        if let Some(after) = t.strip_prefix(pat) {
            // `\circ` must not be a prefix of a longer command.
            if !after.starts_with(|c: char| c.is_ascii_alphabetic()) {
                return Some(lead + pat.len());
            }
        }
    }
    None
}

/// True if `s` has letters outside of `\commands` (so it reads as words).
fn has_plain_letters(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 1;
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
            continue;
        }
        if b[i].is_ascii_alphabetic() {
            return true;
        }
        i += 1;
    }
    false
}

/// Removes thousands separators and turns remaining thin-space markers into
/// spaces.
fn join_thousands(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut depth: i32 = 0;
    // End of a bare `1,234,567` run already validated at its first comma.
    let mut thousands_end = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let prev_digit = i > 0 && out.as_bytes().last().is_some_and(|p| p.is_ascii_digit());
        match c {
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth -= 1,
            b'\\' if b.get(i + 1) == Some(&b'{') => depth += 1,
            b'\\' if b.get(i + 1) == Some(&b'}') => depth -= 1,
            _ => {}
        }
        if prev_digit {
            // `{,}` followed by digits.
            if s[i..].starts_with("{,}") && digit_group_len(&b[i + 3..]) == Some(3) {
                i += 3;
                continue;
            }
            // `,\!` / `,` + thin space (+ spaces) followed by three digits.
            if c == b',' {
                let mut j = i + 1;
                let mut marked = false;
                while j < b.len() && (b[j] == THIN as u8 || b[j] == b' ') {
                    marked |= b[j] == THIN as u8;
                    j += 1;
                }
                if marked && digit_group_len(&b[j..]) == Some(3) {
                    i = j;
                    continue;
                }
            }
            // Thin space between digit groups: `8\,000`.
            if c == THIN as u8 {
                let mut j = i;
                while j < b.len() && (b[j] == THIN as u8 || b[j] == b' ') {
                    j += 1;
                }
                if digit_group_len(&b[j..]) == Some(3) {
                    i = j;
                    continue;
                }
            }
            // Bare `12,345`: only at bracket depth 0 and when every group
            // after the first has exactly three digits. Spaced `12 345`
            // anywhere (a space between numbers means nothing else).
            if matches!(c, b',' | b' ') && i < thousands_end {
                i += 1;
                continue;
            }
            if c == b' ' {
                if let Some(len) = spaced_thousands(&out, &b[i..]) {
                    thousands_end = i + len;
                    i += 1;
                    continue;
                }
            }
            if c == b',' && depth == 0 {
                if let Some(len) = bare_thousands(&out, &b[i..]) {
                    thousands_end = i + len;
                    i += 1;
                    continue;
                }
            }
        }
        if c == THIN as u8 {
            out.push(' ');
            i += 1;
            continue;
        }
        let ch_len = s[i..].chars().next().map_or(1, |c| c.len_utf8());
        out.push_str(&s[i..i + ch_len]);
        i += ch_len;
    }
    out
}

/// Number of digits at the start of `b` if the run is followed by a
/// non-digit (or the end).
fn digit_group_len(b: &[u8]) -> Option<usize> {
    let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
    (n > 0).then_some(n)
}

/// `rest` starts with `,`. Is this comma a thousands separator? The digit run
/// before it (in `out`) must have 1–3 digits and not follow a decimal point
/// or a letter, and every `,group` after must be exactly three digits.
/// Returns the length of the whole `,ddd,ddd` run.
fn bare_thousands(out: &str, rest: &[u8]) -> Option<usize> {
    let ob = out.as_bytes();
    let lead = ob.iter().rev().take_while(|c| c.is_ascii_digit()).count();
    let before = ob.len() - lead;
    if !(1..=3).contains(&lead)
        || (before > 0 && (ob[before - 1] == b'.' || ob[before - 1].is_ascii_alphabetic()))
    {
        return None;
    }
    let mut j = 0;
    while j < rest.len() && rest[j] == b',' {
        match digit_group_len(&rest[j + 1..]) {
            Some(3) => j += 4,
            _ => return None,
        }
    }
    (j > 0).then_some(j)
}

/// `rest` starts with a space after a digit run. Is it a thousands
/// separator, as in `12 345 678`? The run before must have 1–3 digits and
/// not follow a decimal point, a letter or `^`/`_` (`x^2 100` is not
/// x^{2100}); each following group is one or more spaces and exactly three
/// digits, except that a group directly followed by `/` is the numerator of
/// a mixed number (`1 000 1/2`, `3 200/700`), never a thousands group.
/// Returns the length of the `' ddd ddd'` run.
fn spaced_thousands(out: &str, rest: &[u8]) -> Option<usize> {
    let ob = out.as_bytes();
    let lead = ob.iter().rev().take_while(|c| c.is_ascii_digit()).count();
    let before = ob.len() - lead;
    if !(1..=3).contains(&lead)
        || (before > 0
            && (matches!(ob[before - 1], b'.' | b'^' | b'_') || ob[before - 1].is_ascii_alphabetic()))
    {
        return None;
    }
    let mut j = 0;
    loop {
        let spaces = rest[j..].iter().take_while(|&&c| c == b' ').count();
        if spaces == 0 {
            break;
        }
        let k = j + spaces;
        if digit_group_len(&rest[k..]) != Some(3) || rest.get(k + 3) == Some(&b'/') {
            break;
        }
        j = k + 3;
    }
    (j > 0).then_some(j)
}

/// Drops trailing sentence punctuation, but never the dots of an ellipsis:
/// `1, 2, 3, ...` is an unending sequence, not the list `1, 2, 3`.
fn strip_trailing(s: &str) -> &str {
    let mut t = s.trim();
    loop {
        if t.ends_with("..") {
            return t;
        }
        let before = t.len();
        for suffix in [".", ",", ";", ":", r"\\", r"\quad", "\\"] {
            if let Some(r) = t.strip_suffix(suffix) {
                t = r.trim_end();
            }
        }
        if t.len() == before {
            return t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalize(s).unwrap()
    }

    #[test]
    fn basics() {
        assert_eq!(n(r"\dfrac{1}{2}."), r"\frac{1}{2}");
        assert_eq!(n(r"90^\circ"), "90");
        assert_eq!(n(r"45^{\circ}"), "45");
        assert_eq!(n(r"\$32,\!348"), "32348");
        assert_eq!(n(r"8\,000"), "8000");
        assert_eq!(n(r"1{,}251"), "1251");
        assert_eq!(n("13,535"), "13535");
        assert_eq!(n("(100,200)"), "(100,200)");
        assert_eq!(n("1, 2"), "1, 2");
        assert_eq!(n(r"11,\! 111,\! 111,\! 100"), "11111111100");
        assert_eq!(n(r"\text{-2}"), "{-2}");
        assert_eq!(n(r"\textbf{Evelyn}"), r"\text{Evelyn}");
        assert_eq!(n(r"\left(3,\frac{\pi}{2}\right)"), r"(3,\frac{\pi}{2})");
        assert_eq!(n("½"), r"\frac{1}{2}");
        assert_eq!(n("√2"), r"\sqrt{2}");
        assert_eq!(n("３"), "3");
        assert_eq!(n("10⁻³"), "10^{-3}");
        assert_eq!(n("x²"), "x^{2}");
        assert_eq!(n(r"\operatorname{arcsin}(x)"), r"\arcsin (x)");
        assert_eq!(n("25\\%"), "25");
        assert_eq!(n("12 345 678"), "12345678");
        assert_eq!(n("-1 000.5"), "-1000.5");
        assert_eq!(n("(1 000, 2)"), "(1000, 2)");
        assert_eq!(n("1 000 1/2"), "1000 1/2");
        assert_eq!(n("3 200/700"), "3 200/700");
        assert_eq!(n("3 2/5"), "3 2/5");
        assert_eq!(n("x^2 100"), "x^2 100");
        assert_eq!(n("0.123 456"), "0.123 456");
        assert_eq!(n("1 0000"), "1 0000");
        assert_eq!(n("1, 2, 3, ..."), "1, 2, 3, ...");
        assert_eq!(n("5."), "5");
    }
}
