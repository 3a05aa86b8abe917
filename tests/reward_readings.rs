//! One reading per notation (issue 17): an answer that could be read several
//! ways is graded by one reading only, so ambiguity never widens what is
//! accepted (a false accept is a reward the policy learns to farm). Every
//! test pairs the accepted reading with must-reject cases for the readings
//! that used to be accepted as well.

use scalerl::reward::{answers_equivalent, check_answer, Gold, Reason, RewardConfig};

#[track_caller]
fn same(pairs: &[(&str, &str)]) {
    for (a, g) in pairs {
        assert!(answers_equivalent(a, g), "expected {a:?} == {g:?}");
    }
}

#[track_caller]
fn differ(pairs: &[(&str, &str)]) {
    for (a, g) in pairs {
        assert!(!answers_equivalent(a, g), "expected {a:?} != {g:?}");
    }
}

#[track_caller]
fn unreadable(answers: &[&str]) {
    for a in answers {
        let r = check_answer(a, &Gold::from("1"), &RewardConfig::default());
        assert_eq!(r, Reason::ParseError, "{a:?}");
    }
}

// ---- numbers next to numbers ------------------------------------------------

#[test]
fn spaced_mixed_number_is_its_only_reading() {
    same(&[
        ("3 2/5", "17/5"),
        ("3 2/5", r"3\frac25"),
        ("-3 2/5", "-17/5"),
        ("0 2/5", "2/5"),
        ("1 000 1/2", "1000.5"),
        ("3 200/700", r"3\frac27"),
        ("x = 3 1/2", r"\frac72"),
        (r"3 1/2 \text{ cups}", "3.5"),
        (r"2 \cdot 3 1/2", "7"),
        ("3 1/2, 1 1/4", "1.25, 3.5"),
    ]);
    differ(&[
        // The product and the concatenation readings.
        ("3 2/5", "6/5"),
        ("3 2/5", "32/5"),
        ("-3 2/5", "-6/5"),
        ("-3 2/5", "-13/5"),
        ("-3 2/5", "-32/5"),
        ("0 2/5", "0"),
        ("1 000 1/2", "500"),
        ("3 200/700", "3200/700"),
    ]);
    // An improper or zero fraction, or a denominator that goes on: no
    // single reading at all.
    unreadable(&[
        "2 3/2", "1 234/5", "3 0/5", "3 2/5^2", "3 2/5!", "3 2/5 7", "3.5 1/2", "3 2:5",
    ]);
    differ(&[
        ("2 3/2", "3"),
        ("2 3/2", "7/2"),
        ("2 3/2", "23/2"),
        ("1 234/5", "1234/5"),
    ]);
}

#[test]
fn frac_after_an_integer_is_mixed_only_when_proper() {
    same(&[
        (r"3\frac{1}{2}", "3.5"),
        (r"3 \frac{1}{2}", "3.5"),
        (r"{3}\frac12", "3.5"),
        (r"-3\frac25", "-3.4"),
        (r"2 \cdot 3\frac12", "7"),
        (r"2 \cdot -3\frac12", "-7"),
        // Not numeric literals: a product, as before.
        (r"2\frac{x}{2}", "x"),
        (r"2\frac{\pi}{2}", r"\pi"),
        (r"(3)\frac12", "1.5"),
    ]);
    differ(&[
        (r"2\frac{3}{2}", "3"),
        (r"2\frac{3}{2}", "3.5"),
        (r"3\frac{0}{5}", "0"),
        (r"3\frac{0}{5}", "3"),
        (r"3\frac{-1}{2}", "-1.5"),
        (r"3\frac{-1}{2}", "2.5"),
        (r"3\frac12^2", "0.75"),
        (r"3\frac12^2", "12.25"),
        (r"{3}\frac12", "1.5"),
    ]);
    unreadable(&[
        r"2\frac{3}{2}",
        r"3\frac{0}{5}",
        r"3\frac{1.5}{2}",
        r"3\frac12^2",
    ]);
}

#[test]
fn a_number_right_after_a_number_is_unreadable() {
    unreadable(&[
        "3 2",
        "1.2.3",
        r"3{2}/5",
        "{3}2",
        "2^3 4",
        r"\sin 2 3",
        "1 0000",
        "0.123 456",
    ]);
    differ(&[
        ("3 2", "6"),
        ("3 2", "32"),
        ("1.2.3", "0.36"),
        (r"3{2}/5", "6/5"),
        (r"3{2}/5", "32/5"),
        ("{3}2", "6"),
        ("2^3 4", "32"),
        // Comparing as text keeps numbers apart as well: identical text,
        // a word answer, a gold we cannot parse.
        (r"\text{Day 1 2}", r"\text{Day 12}"),
        (r"\textbf{Room 1 2B}", r"\text{Room 12B}"),
        (r"\textbf{Room 1.2B}", r"\text{Room 12B}"),
        (r"A 1 2 \to B", r"A 12 \to B"),
        (r"A {1}{2} \to B", r"A 12 \to B"),
    ]);
    same(&[
        // Visible operators and brackets still multiply.
        (r"3 \cdot 2", "6"),
        ("(3)2", "6"),
        (r"x 2", "2x"),
        (r"A 12 \to B", r"A12\to B"),
    ]);
}

#[test]
fn thousands_groups_written_with_spaces() {
    same(&[
        ("1 000", "1000"),
        ("12 345 678", "12345678"),
        ("-1 000.5", "-1000.5"),
        ("(1 000, 2)", "(1000, 2)"),
        (r"\$2 500", "2500"),
    ]);
    differ(&[
        ("1 000", "0"),
        ("1 000", "1"),
        ("1 000", "1, 000"),
        ("x^2 100", "x^{2100}"),
    ]);
}

#[test]
fn unending_sequence_is_not_its_finite_start() {
    differ(&[
        ("1, 2, 3, ...", "1,2,3"),
        ("1, 2, 3, ...", r"\{1,2,3\}"),
        (r"1, 2, 3, \ldots", "1, 2, 3"),
        ("1, 2, 3, …", "1, 2, 3"),
        ("0.333...", r"\frac13"),
        ("0.333...", "0.333"),
    ]);
    // A sentence period is still dropped.
    same(&[("5.", "5"), ("1, 2, 3.", "1, 2, 3")]);
}

// ---- equations and chains ---------------------------------------------------

#[test]
fn equation_naming_the_quantity_compares_by_value() {
    same(&[
        ("|PQ| = 2", "2"),
        ("2", "|PQ| = 2"),
        ("S_1:S_2 = 3:8", "3:8"),
        ("S_1:S_2 = 3:8", r"\frac38"),
        (r"\frac{AM}{MB} = \frac{1}{\sqrt3}", r"\frac{\sqrt3}{3}"),
        (r"|\overline{PQ}| = 2\sqrt2", r"\sqrt8"),
        ("AB = 5", "5"),
    ]);
    differ(&[
        ("|PQ| = 2", "3"),
        ("S_1:S_2 = 3:8", "8:3"),
        (r"\frac{AM}{MB} = \frac{1}{\sqrt3}", r"\sqrt3"),
        // A left side that is not a name must hold: `|x - 1| = 2` is not 2.
        ("|x - 1| = 2", "2"),
        ("2x = 4", "4"),
        (r"\frac{x+1}{y} = 3", "3"),
    ]);
}

#[test]
fn chains_compare_by_final_value() {
    same(&[
        ("y = 4+3 = 7", "y = 7"),
        ("y = 7", "y = 4+3 = 7"),
        ("y = 4+3 = 7", "7"),
        ("x = 2+3 = 5", "x = 5"),
        (r"A = \pi r^2 = 25\pi", r"25\pi"),
    ]);
    differ(&[
        ("y = 4+3 = 7", "y = 8"),
        ("y = 4+3 = 7", "x = 7"),
        ("y = 4+3 = 8", "y = 7"),
        ("y = 4+3 = 7", "4"),
        ("2+3 = 6", "6"),
    ]);
}

#[test]
fn approximation_compares_by_exact_part() {
    same(&[
        (r"y = \frac23 \approx 0.67", r"\frac23"),
        (r"y = \frac23 \approx 0.67", r"y = \frac23"),
        (r"\frac12 \approx 0.5", "0.5"),
        (r"\pi \approx 3.14", r"\pi"),
        ("x ≈ 0.5", r"\frac12"),
        (r"x \approx 0.5", "x = 0.5"),
    ]);
    differ(&[
        // The rounded tail is not a second answer.
        (r"y = \frac23 \approx 0.67", "0.67"),
        (r"y = \frac23 \approx 0.67", "y = 0.67"),
        (r"5 \approx 7", "7"),
        (r"\pi \approx 3.14", "3.14"),
        (r"x = \pi \approx 3.14", "3.14"),
    ]);
}

// ---- inequalities as solution sets --------------------------------------------

#[test]
fn linear_inequalities_are_solution_sets() {
    same(&[
        ("-2x > -4", "x < 2"),
        (r"-2x \ge -4", r"x \le 2"),
        ("-2x > -4", r"(-\infty, 2)"),
        (r"-4 < -2x", "x < 2"),
        (r"2x + 1 \le 3x", r"x \ge 1"),
        (r"\frac{x}{2} < 1", r"(-\infty, 2)"),
        (r"1 < 2x - 1 \le 5", "(1, 3]"),
        ("-1 < -x < 1", "(-1, 1)"),
        (r"3 - x \ge 0", r"x \le 3"),
        (r"\sqrt2 < 2x", r"(\frac{\sqrt2}{2}, \infty)"),
    ]);
    differ(&[
        // The sign of the coefficient turns the inequality around.
        ("-2x > -4", "x > 2"),
        ("-2x > -4", r"(2, \infty)"),
        ("-2x > -4", r"(-\infty, -2)"),
        // Strictness is kept.
        (r"-2x \ge -4", "x < 2"),
        ("-2x > -4", r"x \le 2"),
        ("1 < 2x - 1 < 5", "(1, 3]"),
        // Not linear: not the interval of the bound.
        ("x^2 < 4", r"(-\infty, 2)"),
        ("|x| < 2", r"(-\infty, 2)"),
        (r"\frac{1}{x} > 2", r"(-\infty, \frac12)"),
        ("x + y < 3", r"(-\infty, 3)"),
        (r"x \cdot x + x < 2", "x < 2"),
        (r"x \cdot x < 4", r"(-\infty, 4)"),
        ("0x < 1", r"(-\infty, \infty)"),
    ]);
}

#[test]
fn named_quantity_between_bounds_is_an_interval() {
    same(&[
        ("0 < g(t) < 2", "(0, 2)"),
        (r"0 \le f(x) < 2", "[0, 2)"),
        (r"f(x) \ge 0", r"[0, \infty)"),
    ]);
    differ(&[
        ("0 < g(t) < 2", "[0, 2]"),
        ("0 < g(t) < 2", "(0, 3)"),
        ("0 < g(t) < 2", "2"),
    ]);
}

// ---- words and units ----------------------------------------------------------

#[test]
fn percent_words_and_currency_signs() {
    same(&[
        ("25 pct", "25"),
        (r"25 \text{ percentage}", "25"),
        (r"25\%", "25 pct"),
        ("2,500.50$", "2500.5"),
        (r"2{,}500.50\$", "2500.5"),
        ("€12", "12"),
        ("12€", "12"),
        ("£5", "5"),
        ("2500.50 USD", "2500.5"),
        ("12 cm²", "12"),
    ]);
    differ(&[
        // Percent is dropped, never converted; units are not converted.
        ("25 pct", "0.25"),
        ("50¢", "0.5"),
        ("12 cm²", "144"),
        ("€12", "€13"),
    ]);
}

#[test]
fn compound_units_after_a_number() {
    same(&[
        ("3.5 m/s", "3.5"),
        ("60 km/h", "60"),
        ("9.8 m/s^2", "9.8"),
        ("9.8 m/s²", "9.8"),
        (r"\frac72 m/s", "3.5"),
        ("v = 3.5 m/s", "3.5"),
        ("(3 m/s, 4 m/s)", "(3, 4)"),
    ]);
    differ(&[
        ("3.5 m/s", "35"),
        // Not after a number, or not the end of the term: variables.
        ("2x m/s", "2x"),
        ("3.5 m/s + 1", "4.5"),
        ("3 m", "3"),
        ("3 m/x", "3"),
    ]);
}

#[test]
fn lists_written_with_and() {
    same(&[
        (r"1, 2, \text{ and } 3", "1, 2, 3"),
        ("1, 2, and 3", "3, 2, 1"),
        (r"1, 2 \text{, and } 3", r"\{1, 2, 3\}"),
        (r"x = 1 \text{ and } x = 2", "1, 2"),
    ]);
    differ(&[
        (r"1, 2, \text{ and } 3", "1, 2"),
        (r"1, 2, \text{ and } 3", "1, 2, 3, 4"),
        (r"12 \text{ or } 13", "12"),
    ]);
}

#[test]
fn several_solutions_as_assignments() {
    same(&[
        ("a=1,b=3; a=2,b=5", "(1,3),(2,5)"),
        ("a=2, b=5; a=1, b=3", "(1,3),(2,5)"),
        ("a=1,b=3; a=2,b=5", "b=5, a=2; a=1, b=3"),
        // `;` alone still separates plain items.
        ("1; 2; 3", "1, 2, 3"),
        ("x=1; y=2", "(1,2)"),
    ]);
    differ(&[
        ("a=1,b=3; a=2,b=5", "(3,1),(5,2)"),
        ("a=1,b=3; a=2,b=5", "(1,3)"),
        ("a=1,b=3; a=2,b=5", "(1,3),(2,5),(3,7)"),
        // A flat list of the values is not the pairs.
        ("a=1,b=3; a=2,b=5", "1, 3, 2, 5"),
        ("a=1,b=3; a=2,b=5", "(1,5),(2,3)"),
    ]);
}

// ---- matrix expressions -------------------------------------------------------

const A: &str = r"\begin{pmatrix}1&2\\3&4\end{pmatrix}";
const B: &str = r"\begin{pmatrix}0&1\\1&0\end{pmatrix}";

fn m(s: &str) -> String {
    format!(r"\begin{{pmatrix}}{s}\end{{pmatrix}}")
}

#[test]
fn matrix_expressions_are_evaluated() {
    same(&[
        (&format!("{A}+{B}"), &m(r"1&3\\4&4")),
        (&format!("{A}-{B}"), &m(r"1&1\\2&4")),
        (&format!("{A}{B}"), &m(r"2&1\\4&3")),
        (&format!(r"{A} \cdot {B}"), &m(r"2&1\\4&3")),
        (&format!(r"{B} \times {A}"), &m(r"3&4\\1&2")),
        (&format!("2{A}"), &m(r"2&4\\6&8")),
        (&format!("{A}/2"), &m(r"\frac12&1\\\frac32&2")),
        (&format!("{B}^2"), &m(r"1&0\\0&1")),
        (&format!("-{A}"), &m(r"-1&-2\\-3&-4")),
        (&format!(r"{}+{}", m(r"x\\1"), m(r"1\\y")), "(x+1, y+1)"),
        (&m(r"1&2\\3&4"), A),
        // vmatrix is the determinant.
        (r"\begin{vmatrix}1&2\\3&4\end{vmatrix}", "-2"),
        (r"\begin{vmatrix}a&b\\c&d\end{vmatrix}", "ad-bc"),
        (r"\begin{vmatrix}2&0&0\\0&3&0\\0&0&4\end{vmatrix}", "24"),
    ]);
    differ(&[
        (&format!("{A}+{B}"), A),
        // The product is not commutative, nor elementwise.
        (&format!("{A}{B}"), &m(r"3&4\\1&2")),
        (&format!("{A}{B}"), &m(r"0&2\\3&0")),
        // Shapes that do not fit, and a matrix plus a number: no value.
        (&format!("{A}+{}", m(r"1\\1")), &m(r"2&3\\4&5")),
        (&format!("{A}+1"), &m(r"2&3\\4&5")),
        (&format!(r"{A}{}", m(r"1&1")), &m(r"1&1")),
        // A determinant is not the matrix, nor a norm the matrix.
        (r"\begin{vmatrix}1&2\\3&4\end{vmatrix}", A),
        (r"\begin{Vmatrix}1&2\\3&4\end{Vmatrix}", A),
        (r"\begin{vmatrix}1&2\\3&4\end{vmatrix}", "2"),
    ]);
}
