//! Matrix expressions written with literals are evaluated like numeric
//! ones: a sum, difference, product, scalar multiple or small power of
//! `pmatrix` literals is the matrix it equals (its entries built as
//! expressions), so it compares with the gold entry by entry, as `2+3`
//! compares with 5. Shapes that do not fit (a 2×2 plus a 2×1, a matrix
//! plus a number) have no value and equal nothing.
//!
//! `vmatrix` is a determinant (`primary.rs` builds it with [`determinant`]),
//! never the matrix itself.

use super::expr::Expr;

type Rows = Vec<Vec<Expr>>;

/// Most entry products one expression may build (a 16×16 product is 4096):
/// canonical forms are built without a step budget.
const MAX_WORK: usize = 20_000;
/// Largest matrix power evaluated (`A^3`).
const MAX_POWER: i64 = 8;

enum V {
    Scalar(Expr),
    Matrix(Rows),
}

/// The matrix a scalar-tree expression containing matrix literals equals;
/// `None` if the shapes do not fit or an operation has no matrix meaning.
pub(super) fn fold(e: &Expr) -> Option<Expr> {
    let mut work = 0;
    match value(e, &mut work)? {
        V::Matrix(rows) => Some(Expr::Matrix(rows)),
        V::Scalar(_) => None,
    }
}

fn value(e: &Expr, work: &mut usize) -> Option<V> {
    Some(match e {
        Expr::Matrix(rows) => {
            let (n, k) = shape(rows);
            if k == 0 || rows.iter().any(|r| r.len() != k) {
                return None; // ragged rows: no shape to compute with
            }
            charge(work, n * k)?;
            V::Matrix(rows.clone())
        }
        Expr::Neg(x) => match value(x, work)? {
            V::Scalar(s) => V::Scalar(Expr::Neg(Box::new(s))),
            V::Matrix(m) => V::Matrix(map(m, |a| Expr::Neg(Box::new(a)))),
        },
        Expr::Add(terms) => {
            let mut acc: Option<V> = None;
            for t in terms {
                let v = value(t, work)?;
                acc = Some(match (acc, v) {
                    (None, v) => v,
                    (Some(V::Scalar(a)), V::Scalar(b)) => V::Scalar(Expr::Add(vec![a, b])),
                    (Some(V::Matrix(a)), V::Matrix(b)) => V::Matrix(add(a, b, work)?),
                    _ => return None, // a matrix plus a number
                });
            }
            acc?
        }
        Expr::Mul(factors) => {
            let mut acc: Option<V> = None;
            for f in factors {
                let v = value(f, work)?;
                acc = Some(match acc {
                    None => v,
                    Some(a) => mul(a, v, work)?,
                });
            }
            acc?
        }
        Expr::Div(x, y) => match (value(x, work)?, value(y, work)?) {
            (V::Scalar(a), V::Scalar(b)) => V::Scalar(Expr::Div(Box::new(a), Box::new(b))),
            (V::Matrix(m), V::Scalar(s)) => {
                charge(work, m.len() * m.first().map_or(0, Vec::len))?;
                V::Matrix(map(m, |a| Expr::Div(Box::new(a), Box::new(s.clone()))))
            }
            _ => return None,
        },
        Expr::Pow(x, k) => match value(x, work)? {
            V::Scalar(s) if !anywhere(k) => V::Scalar(Expr::Pow(Box::new(s), k.clone())),
            V::Matrix(m) => {
                let k = match &**k {
                    Expr::Num(r) => r.to_i64().filter(|k| (1..=MAX_POWER).contains(k))?,
                    _ => return None,
                };
                let mut acc = V::Matrix(m.clone());
                for _ in 1..k {
                    acc = mul(acc, V::Matrix(m.clone()), work)?;
                }
                acc
            }
            _ => return None,
        },
        e if anywhere(e) => return None, // `\sqrt{A}`, `|A|`, …
        e => V::Scalar(e.clone()),
    })
}

fn charge(work: &mut usize, n: usize) -> Option<()> {
    *work += n;
    (*work <= MAX_WORK).then_some(())
}

fn map(m: Rows, f: impl Fn(Expr) -> Expr) -> Rows {
    m.into_iter()
        .map(|r| r.into_iter().map(&f).collect())
        .collect()
}

fn shape(m: &[Vec<Expr>]) -> (usize, usize) {
    (m.len(), m.first().map_or(0, Vec::len))
}

fn add(a: Rows, b: Rows, work: &mut usize) -> Option<Rows> {
    if shape(&a) != shape(&b) {
        return None;
    }
    charge(work, a.len() * shape(&a).1)?;
    Some(
        a.into_iter()
            .zip(b)
            .map(|(r, s)| {
                r.into_iter()
                    .zip(s)
                    .map(|(x, y)| Expr::Add(vec![x, y]))
                    .collect()
            })
            .collect(),
    )
}

fn mul(a: V, b: V, work: &mut usize) -> Option<V> {
    Some(match (a, b) {
        (V::Scalar(x), V::Scalar(y)) => V::Scalar(Expr::Mul(vec![x, y])),
        (V::Scalar(s), V::Matrix(m)) | (V::Matrix(m), V::Scalar(s)) => {
            charge(work, m.len() * shape(&m).1)?;
            V::Matrix(map(m, |x| Expr::Mul(vec![s.clone(), x])))
        }
        (V::Matrix(a), V::Matrix(b)) => {
            let ((n, k), (k2, p)) = (shape(&a), shape(&b));
            if k != k2 {
                return None;
            }
            charge(work, n * k * p)?;
            let rows = (0..n)
                .map(|i| {
                    (0..p)
                        .map(|j| {
                            let terms = (0..k)
                                .map(|t| Expr::Mul(vec![a[i][t].clone(), b[t][j].clone()]))
                                .collect();
                            Expr::Add(terms)
                        })
                        .collect()
                })
                .collect();
            V::Matrix(rows)
        }
    })
}

/// Is there a matrix literal among the operands of `+ − · / ^` at the top
/// of `e`? Only those are folded; a matrix under any other node (`\sqrt`,
/// `|…|`) gives [`value`] nothing to compute. No allocation: this runs on
/// every scalar answer.
pub(super) fn contains(e: &Expr) -> bool {
    match e {
        Expr::Matrix(_) => true,
        Expr::Neg(x) => contains(x),
        Expr::Add(v) | Expr::Mul(v) => v.iter().any(contains),
        Expr::Div(x, y) | Expr::Pow(x, y) => contains(x) || contains(y),
        _ => false,
    }
}

/// Is there a matrix literal anywhere in a scalar tree? (Only while
/// folding, so the allocation is rare.)
fn anywhere(e: &Expr) -> bool {
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        if matches!(x, Expr::Matrix(_)) {
            return true;
        }
        x.for_each_child(|c| stack.push(c));
    }
    false
}

/// `\begin{vmatrix}…\end{vmatrix}`: the determinant of a square matrix up
/// to 4×4, by cofactor expansion along the first row; `None` otherwise.
pub(super) fn determinant(m: &[Vec<Expr>]) -> Option<Expr> {
    let n = m.len();
    if n == 0
        || n > 4
        || m.iter()
            .any(|r| r.len() != n || r.iter().any(Expr::is_structural))
    {
        return None;
    }
    if n == 1 {
        return Some(m[0][0].clone());
    }
    let mut terms = Vec::with_capacity(n);
    for (j, a) in m[0].iter().enumerate() {
        let minor: Rows = m[1..]
            .iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .filter(|&(c, _)| c != j)
                    .map(|(_, x)| x.clone())
                    .collect()
            })
            .collect();
        let t = Expr::Mul(vec![a.clone(), determinant(&minor)?]);
        terms.push(if j % 2 == 1 {
            Expr::Neg(Box::new(t))
        } else {
            t
        });
    }
    Some(Expr::Add(terms))
}
