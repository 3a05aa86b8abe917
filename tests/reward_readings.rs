//! One reading per notation (issue 17): an answer that could be read several
//! ways is graded by one reading only, so ambiguity never widens what is
//! accepted (a false accept is a reward the policy learns to farm). Every
//! test pairs the accepted reading with must-reject cases for the readings
//! that used to be accepted as well.

use scalerl::reward::{answers_equivalent, check_answer, grade, Gold, Reason, RewardConfig};

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
        (r"\sin 3\frac12", r"\sin 3.5"),
        (r"\sin 3 1/2", r"\sin 3.5"),
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
        (r"\sin 3\frac12", r"\sin 1.5"),
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
fn a_word_is_not_math_without_its_signs() {
    differ(&[
        (r"\text{x}", "-x"),
        (r"\text{xy}", "x+y"),
        (r"\mathrm{ab}", "a-b"),
        (r"\text{x y}", "x/y"),
        (r"\text{x - y}", r"\text{x + y}"),
        (r"\text{x - y}, 1", r"\text{x + y}, 1"),
    ]);
    same(&[
        (r"\mathrm{Ne}", "Ne"),
        (r"\text{no solution}", "No Solution"),
        (r"\text{No solution.}", r"\text{no solution}"),
        (r"\text{Evelyn}", "evelyn"),
        (r"\text{x - y}", r"\text{x-y}"),
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
    // A sentence period is still dropped; an unending sequence equals
    // itself however its dots are written.
    same(&[
        ("5.", "5"),
        ("1, 2, 3.", "1, 2, 3"),
        ("1, 2, 3, ...", r"1, 2, 3, \ldots"),
        (r"1, 2, 3, \dots", "1, 2, 3, …"),
    ]);
    differ(&[("1, 2, 4, ...", r"1, 2, 3, \ldots")]);
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
        ("(a=1, b=3; a=2, b=5;)", "(1,3),(2,5)"),
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

// ---- DeepScaleR's deliberate rules are kept ---------------------------------------

#[test]
fn deepscaler_rules_are_kept() {
    let cfg = RewardConfig::default();
    // The last box only, even when an earlier one is right and the last
    // one has no reading.
    let g = Gold::from("7");
    let r = grade(r"</think>\boxed{7} or \boxed{3 2}", &g, &cfg);
    assert_eq!(r.reason, Reason::ParseError);
    assert_eq!(
        grade(r"</think>\boxed{3 2} or \boxed{7}", &g, &cfg).reason,
        Reason::Correct
    );
    differ(&[
        // Exact answers: no rounding tolerance, also not through `\approx`.
        ("3.14", r"\pi"),
        ("0.67", r"\frac23"),
        (r"\frac23 \approx 0.67", "0.67"),
        // No degree conversion, no percent conversion.
        (r"90^\circ", r"\frac{\pi}{2}"),
        (r"25\%", "0.25"),
    ]);
}

// ---- properties over random cases ------------------------------------------------

/// Deterministic xorshift, so failures reproduce without a crate.
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn frac(n: i64, d: i64) -> String {
    format!(r"\frac{{{n}}}{{{d}}}")
}

/// `a b/c` matches its mixed value and neither the product a·b/c nor the
/// concatenation ab/c (where those are different numbers); an improper
/// fraction has no reading.
#[test]
fn property_mixed_number_has_one_reading() {
    let mut seed = 0x853c49e6748fea9bu64;
    for _ in 0..300 {
        let a = (rng(&mut seed) % 60) as i64;
        let c = 2 + (rng(&mut seed) % 40) as i64;
        let b = 1 + (rng(&mut seed) % (c - 1) as u64) as i64;
        let ans = format!("{a} {b}/{c}");
        let mixed = a * c + b;
        let concat: i64 = format!("{a}{b}").parse().expect("digits");
        assert!(answers_equivalent(&ans, &frac(mixed, c)), "{ans}");
        assert!(
            answers_equivalent(&format!("-{ans}"), &frac(-mixed, c)),
            "-{ans}"
        );
        if a * b != mixed {
            assert!(
                !answers_equivalent(&ans, &frac(a * b, c)),
                "{ans} as a product"
            );
        }
        if concat != mixed {
            assert!(
                !answers_equivalent(&ans, &frac(concat, c)),
                "{ans} concatenated"
            );
        }
        let improper = format!("{} {}/{c}", a + 1, c + b);
        let r = check_answer(&improper, &Gold::from("1"), &RewardConfig::default());
        assert_eq!(r, Reason::ParseError, "{improper}");
    }
}

/// `p \approx q` and `y = p \approx q` state p only.
#[test]
fn property_approximation_states_its_exact_part() {
    let mut seed = 0x2545f4914f6cdd1du64;
    for _ in 0..200 {
        let p = (rng(&mut seed) % 1000) as i64 - 500;
        let q = p + 1 + (rng(&mut seed) % 50) as i64;
        for ans in [format!(r"{p} \approx {q}"), format!(r"y = {p} \approx {q}")] {
            assert!(answers_equivalent(&ans, &p.to_string()), "{ans}");
            assert!(!answers_equivalent(&ans, &q.to_string()), "{ans}");
        }
    }
}

/// `k x op c` is the interval on the right side of c/k, turned around for
/// a negative k, and never the other side or the other strictness.
#[test]
fn property_linear_inequality_direction() {
    let mut seed = 0x9e3779b97f4a7c15u64;
    let ops = [
        ("<", false, false),
        (r"\le", false, true),
        (">", true, false),
        (r"\ge", true, true),
    ];
    for _ in 0..200 {
        let k = match (rng(&mut seed) % 19) as i64 - 9 {
            0 => 3,
            k => k,
        };
        let c = (rng(&mut seed) % 41) as i64 - 20;
        let (op, greater, closed) = ops[(rng(&mut seed) % 4) as usize];
        let ans = format!("{k}x {op} {c}");
        let bound = frac(c, k);
        let up = greater == (k > 0);
        let interval = |up: bool, closed: bool| {
            let (l, r) = if closed { ('[', ']') } else { ('(', ')') };
            if up {
                format!(r"{l}{bound}, \infty)")
            } else {
                format!(r"(-\infty, {bound}{r}")
            }
        };
        assert!(answers_equivalent(&ans, &interval(up, closed)), "{ans}");
        assert!(!answers_equivalent(&ans, &interval(!up, closed)), "{ans}");
        assert!(!answers_equivalent(&ans, &interval(up, !closed)), "{ans}");
    }
}

/// Sums and products of random 2×2 integer matrices equal their values;
/// `AB` is not `BA` where the two differ.
#[test]
fn property_matrix_arithmetic() {
    let mut seed = 0xdeadbeefcafef00du64;
    let mat = |seed: &mut u64| -> [[i64; 2]; 2] {
        let mut v = || (rng(seed) % 11) as i64 - 5;
        [[v(), v()], [v(), v()]]
    };
    let tex = |x: [[i64; 2]; 2]| {
        m(&format!(
            r"{}&{}\\{}&{}",
            x[0][0], x[0][1], x[1][0], x[1][1]
        ))
    };
    let prod = |x: [[i64; 2]; 2], y: [[i64; 2]; 2]| {
        let e = |i: usize, j: usize| x[i][0] * y[0][j] + x[i][1] * y[1][j];
        [[e(0, 0), e(0, 1)], [e(1, 0), e(1, 1)]]
    };
    for _ in 0..100 {
        let (a, b) = (mat(&mut seed), mat(&mut seed));
        let sum = [
            [a[0][0] + b[0][0], a[0][1] + b[0][1]],
            [a[1][0] + b[1][0], a[1][1] + b[1][1]],
        ];
        assert!(answers_equivalent(
            &format!("{}+{}", tex(a), tex(b)),
            &tex(sum)
        ));
        let (ab, ba) = (prod(a, b), prod(b, a));
        assert!(answers_equivalent(
            &format!("{}{}", tex(a), tex(b)),
            &tex(ab)
        ));
        if ab != ba {
            assert!(!answers_equivalent(
                &format!("{}{}", tex(a), tex(b)),
                &tex(ba)
            ));
        }
    }
}
