//! Vocabulary: function names, number words, unit words and list
//! connectives, as the parser recognizes them in letter runs and `\text{}`.

use super::expr::Func;

/// A function name written as a word or command (`sin`, `\\ln`, `arctan`).
pub fn func_word(w: &str) -> Option<Func> {
    Some(match w {
        "sin" => Func::Sin,
        "cos" => Func::Cos,
        "tan" | "tg" => Func::Tan,
        "cot" | "ctg" => Func::Cot,
        "sec" => Func::Sec,
        "csc" | "cosec" => Func::Csc,
        "arcsin" | "asin" => Func::Asin,
        "arccos" | "acos" => Func::Acos,
        "arctan" | "atan" => Func::Atan,
        "sinh" => Func::Sinh,
        "cosh" => Func::Cosh,
        "tanh" => Func::Tanh,
        "ln" => Func::Ln,
        "log" | "lg" => Func::Log10,
        "exp" => Func::Exp,
        _ => return None,
    })
}

/// `three` → 3 (zero to twenty, tens to fifty, hundred).
pub fn number_word(w: &str) -> Option<i64> {
    const WORDS: [&str; 21] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
        "twenty",
    ];
    let w = w.trim().to_ascii_lowercase();
    WORDS
        .iter()
        .position(|x| *x == w)
        .map(|i| i as i64)
        .or(match w.as_str() {
            "thirty" => Some(30),
            "forty" => Some(40),
            "fifty" => Some(50),
            "hundred" | "one hundred" => Some(100),
            _ => None,
        })
}

/// Words dropped after a value: units of measure and counted nouns. Only
/// words of 2+ letters: a single letter after a number is a variable
/// (`3m` is 3·m).
pub fn unit_word(w: &str) -> bool {
    const UNITS: &[&str] = &[
        "cm",
        "mm",
        "km",
        "meter",
        "meters",
        "metre",
        "metres",
        "inch",
        "inches",
        "ft",
        "feet",
        "foot",
        "yd",
        "yard",
        "yards",
        "mile",
        "miles",
        "mph",
        "kph",
        "dollar",
        "dollars",
        "cent",
        "cents",
        "degree",
        "degrees",
        "deg",
        "unit",
        "units",
        "square",
        "sq",
        "cubic",
        "hour",
        "hours",
        "hr",
        "hrs",
        "minute",
        "minutes",
        "min",
        "mins",
        "second",
        "seconds",
        "secs",
        "day",
        "days",
        "week",
        "weeks",
        "month",
        "months",
        "year",
        "years",
        "kg",
        "grams",
        "gram",
        "pounds",
        "pound",
        "lb",
        "lbs",
        "ounce",
        "ounces",
        "oz",
        "liter",
        "liters",
        "litre",
        "litres",
        "ml",
        "mL",
        "gallon",
        "gallons",
        "percent",
        "percentage",
        "pct",
        "USD",
        "EUR",
        "GBP",
        "JPY",
        "CNY",
        "INR",
        "euro",
        "euros",
        "yen",
        "yuan",
        "rupees",
        "people",
        "students",
        "ways",
        "points",
        "cups",
        "tiles",
        "coins",
        "marbles",
        "apples",
        "pages",
        "times",
        "radians",
        "rad",
        "steps",
        "games",
        "boxes",
        "books",
        "cookies",
        "eggs",
        "chairs",
        "handshakes",
        "numbers",
        "integers",
        "values",
        "sides",
        "diagonals",
        "triangles",
        "squares",
        "per",
        "each",
        "total",
        "mi",
        "ms",
        "kW",
        "Pa",
        "Hz",
        "eV",
    ];
    UNITS.contains(&w)
}

/// Words that separate list items (`12 \text{ or } 13`, `1, 2 \text{, and
/// } 3`): "or" or "and" with commas around, or a bare comma.
pub fn connective(t: &str) -> bool {
    let mut words = t
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty());
    match (words.next(), words.next()) {
        (Some("or" | "and"), None) => true,
        (None, _) => t.trim() == ",",
        _ => false,
    }
}

/// Unit symbols read only inside a compound unit after a number (`3.5
/// m/s`, `60 km/h`, `9.8 m/s^2`): alone, a single letter after a number is
/// a variable (`3m` is 3·m).
pub fn unit_symbol(w: &str) -> bool {
    const SYMBOLS: &[&str] = &[
        "m", "s", "h", "g", "L", "N", "J", "W", "km", "cm", "mm", "kg", "mg", "ft", "mi", "yd",
        "min", "hr", "sec", "mL", "mol", "Pa", "Hz", "lb", "oz", "gal", "rad", "day", "yr",
    ];
    SYMBOLS.contains(&w)
}
