//! The token stream every comparison starts from. Two problems that differ only in presentation
//! give the same tokens:
//! * case (`Find` = `find`; LaTeX commands too: `\Delta` = `\delta`), whitespace;
//! * `$`, `\(`, `\)`, `\[`, `\]`, braces, `~`, LaTeX spacing (`\,` `\;` `\:` `\!` `\quad`
//!   `\qquad`, `\ `), line breaks `\\`, sizing (`\left` `\right` `\big`…), `\displaystyle`, and
//!   text wrappers (`\text{cm}` = `cm`);
//! * spellings of one command: `\dfrac`/`\tfrac` = `\frac`, `\le` = `\leq`, `\ge` = `\geq`,
//!   `\ne` = `\neq`, `\cdots`/`\ldots` = `\dots`;
//! * thousands separators: `1,000` = `1{,}000` = `1\,000` = `1000`.
//!
//! Tokens are words (letter runs), numbers (digit runs with an optional decimal part, kept whole
//! so that a templated variant shows as a change of number tokens), commands (`\frac`), and any
//! other character on its own (`+`, `=`, `(`, `.`).

/// Commands that only change how a text looks.
const DROPPED: &[&str] = &[
    "left", "right", "big", "bigl", "bigr", "bigg", "biggl", "biggr", "middle", "displaystyle", "textstyle",
    "scriptstyle", "quad", "qquad", "text", "textbf", "textit", "textrm", "texttt", "textnormal", "mathrm", "mathbf",
    "mathit", "mathsf", "mbox", "hbox", "operatorname", "boldsymbol", "bm", "limits", "nolimits", "noindent",
];

/// Spellings of the same command.
fn canonical_command(name: &str) -> &str {
    match name {
        "dfrac" | "tfrac" | "cfrac" => "frac",
        "le" | "leqslant" => "leq",
        "ge" | "geqslant" => "geq",
        "ne" => "neq",
        "cdots" | "ldots" | "dotsb" | "dotsc" | "dotsm" => "dots",
        "lbrace" => "{",
        "rbrace" => "}",
        other => other,
    }
}

/// Is this token a number (digits, optionally a decimal part)?
pub fn is_number(token: &str) -> bool {
    token.as_bytes().first().is_some_and(u8::is_ascii_digit)
}

/// The tokens of `text` (see the module doc).
pub fn tokens(text: &str) -> Vec<String> {
    // `{,}` is LaTeX's thousands separator; folding it first lets the digit rule see `1,000`.
    let lower = text.replace("{,}", ",").to_lowercase();
    let c: Vec<char> = lower.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() || matches!(ch, '$' | '{' | '}' | '~') {
            i += 1;
        } else if ch == '\\' {
            i = command(&c, i, &mut out);
        } else if ch.is_ascii_digit() {
            i = number(&c, i, &mut out);
        } else if ch.is_alphabetic() {
            let start = i;
            while i < c.len() && c[i].is_alphabetic() {
                i += 1;
            }
            out.push(c[start..i].iter().collect());
        } else {
            out.push(ch.to_string());
            i += 1;
        }
    }
    out
}

/// A backslash at `c[i]`: a command token, an escaped character, or nothing (spacing,
/// delimiters); returns the index after it.
fn command(c: &[char], i: usize, out: &mut Vec<String>) -> usize {
    let Some(&next) = c.get(i + 1) else {
        return i + 1;
    };
    if next.is_ascii_alphabetic() {
        let mut j = i + 1;
        while j < c.len() && c[j].is_ascii_alphabetic() {
            j += 1;
        }
        let name: String = c[i + 1..j].iter().collect();
        if !DROPPED.contains(&name.as_str()) {
            match canonical_command(&name) {
                brace @ ("{" | "}") => out.push(format!("\\{brace}")),
                other => out.push(format!("\\{other}")),
            }
        }
        return j;
    }
    match next {
        // Spacing, line breaks, math delimiters, an escaped dollar: presentation only.
        ',' | ';' | ':' | '!' | ' ' | '\\' | '(' | ')' | '[' | ']' | '$' => {}
        // Set braces are content (`\{1, 2\}`), unlike grouping braces.
        '{' | '}' => out.push(format!("\\{next}")),
        other if !other.is_whitespace() => out.push(other.to_string()),
        _ => {}
    }
    i + 2
}

/// A number at `c[i]`: digits, thousands groups (`,ddd` not followed by another digit), and an
/// optional decimal part; returns the index after it.
fn number(c: &[char], mut i: usize, out: &mut Vec<String>) -> usize {
    let mut s = String::new();
    let digit = |j: usize| c.get(j).is_some_and(|d| d.is_ascii_digit());
    while digit(i) {
        s.push(c[i]);
        i += 1;
    }
    // Thousands groups only after a 1-3 digit head: `12,345` but not the pair `12345,678`.
    if s.len() <= 3 {
        loop {
            // `1\,000` and `1,\!000` fold to `1,000` here.
            let mut j = i;
            while c.get(j) == Some(&'\\') && matches!(c.get(j + 1), Some(',' | '!' | ';' | ' ')) {
                j += 2;
            }
            let comma = c.get(j) == Some(&',');
            let skip = if comma { j + 1 } else { j };
            let mut k = skip;
            while c.get(k) == Some(&'\\') && matches!(c.get(k + 1), Some('!' | ',')) {
                k += 2;
            }
            let group = (0..3).all(|d| digit(k + d)) && !digit(k + 3);
            // A spacing-separated group (`1\,000`) counts too; a bare space does not.
            if group && (comma || j > i) {
                s.extend(&c[k..k + 3]);
                i = k + 3;
            } else {
                break;
            }
        }
    }
    if c.get(i) == Some(&'.') && digit(i + 1) {
        s.push('.');
        i += 1;
        while digit(i) {
            s.push(c[i]);
            i += 1;
        }
    }
    out.push(s);
    i
}

/// The exact-match key: the tokens joined by single spaces.
pub fn exact_key(tokens: &[String]) -> String {
    tokens.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Vec<String> {
        tokens(s)
    }

    #[test]
    fn presentation_is_folded() {
        assert_eq!(t("Find $x$ if  $\\dfrac{1}{2}x = 3$."), t("find \\(x\\) if \\frac{1}{2} x=3 ."));
        assert_eq!(t("$\\left( a \\right)\\,\\quad b$"), t("(a) b"));
        assert_eq!(t("\\text{5 cm}"), t("5 cm"));
        assert_eq!(t("1,000 and 1{,}000 and 1\\,000 and 12,345,678"), t("1000 and 1000 and 1000 and 12345678"));
        assert_eq!(t("x \\le 3"), t("x\\leq 3"));
        assert_eq!(t("$1 + 2 + \\cdots + n$"), t("\\[1+2+\\dots+n\\]"));
    }

    #[test]
    fn content_is_kept() {
        assert_eq!(t("3.5 + 0.25"), ["3.5", "+", "0.25"]);
        // A pair of numbers is not a thousands group; set braces are not grouping braces.
        assert_eq!(t("(1,2)"), ["(", "1", ",", "2", ")"]);
        assert_eq!(t("(12345,678)"), ["(", "12345", ",", "678", ")"]);
        assert_eq!(t("\\{1\\}"), ["\\{", "1", "\\}"]);
        assert_ne!(t("x + 1"), t("x - 1"));
        assert_ne!(t("\\sin x"), t("\\cos x"));
        assert!(is_number("12") && is_number("0.5") && !is_number("x") && !is_number("\\frac"));
    }
}
