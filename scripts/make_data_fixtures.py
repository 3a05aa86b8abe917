#!/usr/bin/env python3
"""Generate the data-tool fixtures under tests/fixtures/data/ (tests/data_tools.rs).

Run from the repo root:  python3 scripts/make_data_fixtures.py
The JSON/JSONL files need only the standard library. The Parquet files are written the way
verl's users write them (pandas + pyarrow, snappy), so the Rust reader is tested against a
real writer; they need `pip install pandas pyarrow` (made with pandas 3.1.1, pyarrow 26.0.1)
and are skipped with a note when those are missing. CI never runs this: outputs are committed.

Every training record carries a `source` field naming what it plants; the tests check each
classification against it.
"""
import json
from pathlib import Path

OUT = Path("tests/fixtures/data")
PROMPT_SUFFIX = " Let's think step by step and output the final answer within \\boxed{}."
# MATH's multiple-choice tail: in short problems it is most of the text.
MC = "(A) Line (B) Circle (C) Parabola (D) Ellipse (E) Hyperbola  Enter the letter of the correct option."
# The AIME boilerplate that defeats a plain 13-gram overlap rule.
BP = (" can be written as $\\frac{m}{n}$, where $m$ and $n$ are relatively prime positive integers."
      " Find $m+n$.")

EVAL = [
    # E0: leaked verbatim (train has it with other spacing, case and LaTeX spacing).
    {"problem": "Let $x$, $y$ and $z$ all exceed $1$ and let $w$ be a positive number such that "
                "$\\log_x w = 24$, $\\log_y w = 40$ and $\\log_{xyz} w = 12$. Find $\\log_z w$.",
     "answer": "60"},
    # E1: leaked reworded (near-duplicate).
    {"problem": "In triangle $ABC$, $AB = 13$, $BC = 14$, and $CA = 15$. Let $H$ be the orthocenter "
                "of the triangle. Find the length of the altitude from $A$ to side $BC$.",
     "answer": "12"},
    # E2: leaked inside a longer training problem (overlap).
    {"problem": "Find the number of ordered pairs of positive integers $(a, b)$ such that "
                "$a + b = 1000$ and neither $a$ nor $b$ has a zero digit.",
     "answer": "738"},
    # E3: a templated variant (other numbers) is in train.
    {"problem": "A rectangular box has a volume of $216$ cubic inches and a surface area of $216$ "
                "square inches. The sum of the lengths of its $12$ edges is $72$ inches. What is "
                "the length of its longest side?",
     "answer": "6"},
    # E4: shares only the m/n boilerplate with several different training problems.
    {"problem": "A fair coin is tossed $10$ times. The probability that heads never occur on "
                "consecutive tosses" + BP,
     "answer": "73"},
    # E5: not in train at all.
    {"problem": "How many positive divisors does $3600$ have?", "answer": "45"},
    # E6: a short problem under MATH's multiple-choice boilerplate (as MATH-500 #255 is).
    {"problem": "Find the curve defined by the equation \\[r^2 \\cos 2 \\theta = 4.\\]" + MC,
     "answer": "\\text{(E)}"},
]

TRAIN = [
    # T0 = E0 with other case, spacing, `\,`.
    ("leak-exact", "let $x$,  $y$ and $z$ all exceed $1$ and let $w$ be a positive number such "
     "that $\\log_x w=24$, $\\log_y w = 40$ and $\\log_{xyz}\\, w = 12$.  Find $\\log_z w$.", "60"),
    # T1 ~ E1: a word added, other spacing and punctuation, same numbers.
    ("leak-near", "In triangle $ABC$,  $AB=13$, $BC=14$ and $CA=15$. Let $H$ be the orthocenter "
     "of the triangle. Find the length of the altitude from vertex $A$ to side $BC$.", "12"),
    # T2 holds E2, with a preamble and a second part: most of it is not E2.
    ("leak-overlap", "This problem has two parts; answer the first. Find the number of ordered "
     "pairs of positive integers $(a, b)$ such that $a + b = 1000$ and neither $a$ nor $b$ has a "
     "zero digit. Then, as a second part that you need not answer, explain how the count changes "
     "when the sum is $2000$ instead and give a short proof of your claim.", "738"),
    # T3: E3 with other numbers.
    ("leak-templated", "A rectangular box has a volume of $64$ cubic inches and a surface area of "
     "$96$ square inches. The sum of the lengths of its $12$ edges is $48$ inches. What is the "
     "length of its longest side?", "4"),
    # T4..T8: different problems, the same boilerplate as E4 and as each other.
    ("boilerplate", "A fair die is rolled $4$ times. The probability that the rolls are strictly "
     "increasing" + BP, "1297"),
    ("boilerplate", "Two cards are drawn from a standard deck. The probability that both are aces"
     + BP, "222"),
    ("boilerplate", "Three points are chosen on a circle. The probability that the triangle is "
     "acute" + BP, "5"),
    ("boilerplate", "A number is chosen from $1$ to $100$. The probability that it is a perfect "
     "square" + BP, "11"),
    ("boilerplate", "Five people sit at a round table. The probability that two given people sit "
     "together" + BP, "3"),
    # T9: clean.
    ("clean", "What is the sum of the interior angles of a convex polygon with $9$ sides, in "
     "degrees?", "1260"),
    # T10: exact duplicate of T9 (case, spacing).
    ("dup-exact", "What is the sum of the interior angles of a convex polygon with $9$ sides,  in "
     "DEGREES?", "1260"),
    # T11: near-duplicate of T5 (two words added).
    ("dup-near", "Two cards are drawn at random from a standard deck. The probability that both "
     "are aces" + BP, "222"),
    # T12: templated variant of T9.
    ("dup-templated", "What is the sum of the interior angles of a convex polygon with $12$ sides, "
     "in degrees?", "1800"),
    # T13..T16: other curves under the multiple-choice tail of E6 (MATH train #7186, #7042,
    # #7083, #7346). T13 and E6 share nothing but the tail, yet the tail is most of both: with
    # the boilerplate counted, their containment passes the overlap bar.
    ("boilerplate-mc", "Find the curve defined by the equation \\[r = 2.\\]" + MC, "\\text{(B)}"),
    ("boilerplate-mc", "Find the curve defined by the equation \\[\\theta = \\frac{\\pi}{3}.\\]" + MC,
     "\\text{(A)}"),
    ("boilerplate-mc", "Find the curve defined by the equation \\[r = 4 \\tan \\theta \\sec \\theta.\\]"
     + MC, "\\text{(C)}"),
    ("boilerplate-mc", "Find the curve defined by the equation \\[r = \\frac{1}{1 - \\cos \\theta}.\\]"
     + MC, "\\text{(C)}"),
    # T18, T19: the same text asking another question (MATH train has such pairs): a variant
    # with another answer, not a second copy.
    ("variant-base", "A chess team has $26$ members. However, only $16$ members attended the last "
     "meeting: half of the girls attended but all of the boys attended. How many girls are on the "
     "chess team?", "20"),
    ("dup-variant", "A chess team has $26$ members. However, only $16$ members attended the last "
     "meeting: half of the girls attended but all of the boys attended. How many boys are on the "
     "chess team?", "6"),
    # T20: shares a rare passage with E2 (its first sentence) but asks something else.
    ("shared-passage", "Find the number of ordered pairs of positive integers $(a, b)$ such that "
     "$a + b = 1000$ and the product $ab$ is a perfect square that is also divisible by every "
     "prime less than ten, counting $(a, b)$ and $(b, a)$ once.", "0"),
]

FILTER = [
    {"problem": "P0", "answer": "42"},
    {"problem": "P1", "answer": "\\frac{3}{4}"},
    {"problem": "P2", "answer": ["2", "-2"]},
    {"problem": "P3", "answer": "\\text{(C)}"},
    {"problem": "P4", "answer": 142.0},
    {"problem": "P5", "answer": ""},
    {"problem": "P6", "answer": "  $ $ "},
    {"problem": "P7", "answer": "There is no such function, since the equation has no solution"},
    {"problem": "P8", "answer": "\\frac{1}{"},
    {"problem": "P9", "answer": None},
    {"problem": "P10", "answer": "5225 \\text{ cubic inches}"},
]


def write_json():
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "eval.json").write_text(json.dumps(EVAL, indent=2) + "\n")
    with open(OUT / "train.jsonl", "w") as f:
        for source, problem, answer in TRAIN:
            f.write(json.dumps({"problem": problem, "answer": answer, "source": source}) + "\n")
    (OUT / "filter.json").write_text(json.dumps(FILTER, indent=2) + "\n")
    # Bad input: the second record has no answer; the second line is cut short.
    (OUT / "no_answer.json").write_text(
        json.dumps([{"problem": "ok", "answer": "1"}, {"problem": "no answer here"}], indent=2) + "\n")
    (OUT / "bad_line.jsonl").write_text('{"problem": "a", "answer": "1"}\n{"problem": "b", "answer": \n')


def write_parquet():
    try:
        import pandas as pd
    except ImportError:
        print("pandas/pyarrow missing: Parquet fixtures not written")
        return
    # As DeepScaleR's scripts/data/deepscaler_dataset.py writes verl's training file.
    rows = []
    for i, (_, problem, answer) in enumerate(TRAIN[:3]):
        rows.append({
            "data_source": "",
            "prompt": [{"role": "user", "content": problem + PROMPT_SUFFIX}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": answer},
            "extra_info": {"split": "train", "index": i},
        })
    pd.DataFrame(rows).to_parquet(OUT / "verl_train.parquet")
    # Plain columns with a numeric answer (as AMC's answers are floats in DeepScaleR's JSON).
    pd.DataFrame({"problem": ["What is $2 \\cdot 71$?", "What is $1/2 + 1/4$?"],
                  "answer": [142.0, 0.75]}).to_parquet(OUT / "plain_numeric.parquet")
    # Other column names, for --problem-field.
    pd.DataFrame({"question": ["What is $3^2$?"], "final": ["9"]}).to_parquet(OUT / "question_column.parquet")


if __name__ == "__main__":
    write_json()
    write_parquet()
