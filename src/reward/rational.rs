//! Exact rationals over [`BigUint`], always kept reduced with a positive
//! denominator, so equality is structural equality.
//!
//! Every constructor/operation returns `None` when a result would exceed the
//! size cap; callers then fall back to floating point.

use super::bigint::{gcd_u128, BigUint, MAX_BITS};
use std::cmp::Ordering;

/// Largest fraction (in bits) we reduce exactly; integers have no limit
/// below `MAX_BITS`.
const GCD_MAX_BITS: u64 = 16_384;

/// A reduced rational. Values whose numerator and denominator fit in a u128
/// are always stored inline (`Small`), so the common case never allocates
/// and equality stays structural.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rat {
    Small {
        neg: bool,
        n: u128,
        d: u128,
    },
    Big {
        neg: bool,
        num: BigUint,
        den: BigUint,
    },
}

/// `num / 10^k` reduced without a general GCD (quadratic in the digits: a
/// 4,000-digit decimal took ~10 ms). `10^k = 2^k 5^k` and `num` does not
/// end in 0 when `k > 0`, so the common factor is a power of 2 or a power of
/// 5, never both.
fn reduce_decimal(num: BigUint, den: BigUint, k: u64) -> Option<Rat> {
    const P27: u64 = 7_450_580_596_923_828_125; // 5^27, the largest in a u64
    let twos = num.trailing_zeros().min(k);
    let (num, den) = if twos > 0 {
        (num.shr(twos), den.shr(twos))
    } else {
        // Divide out 5s, 27 at a time while possible.
        let (mut num, mut den, mut fives) = (num, den, 0);
        for (p, step) in [(P27, 27), (5, 1)] {
            while fives + step <= k {
                let (q, r) = num.divrem_small(p);
                if r != 0 {
                    break;
                }
                num = q;
                den = den.divrem_small(p).0;
                fives += step;
            }
        }
        (num, den)
    };
    match (num.to_u128(), den.to_u128()) {
        (Some(n), Some(d)) => Rat::small(false, n, d),
        _ => Some(Rat::Big {
            neg: false,
            num,
            den,
        }),
    }
}

fn gcd_fast(a: u128, b: u128) -> u128 {
    if a <= u64::MAX as u128 && b <= u64::MAX as u128 {
        let (mut x, mut y) = (a as u64, b as u64);
        while y != 0 {
            let t = x % y;
            x = y;
            y = t;
        }
        return x as u128;
    }
    gcd_u128(a, b)
}

impl Rat {
    pub fn zero() -> Self {
        Rat::Small {
            neg: false,
            n: 0,
            d: 1,
        }
    }

    pub fn from_i64(v: i64) -> Self {
        Rat::Small {
            neg: v < 0,
            n: v.unsigned_abs() as u128,
            d: 1,
        }
    }

    /// Reduced small rational; `None` on a zero denominator.
    fn small(neg: bool, n: u128, d: u128) -> Option<Self> {
        if d == 0 {
            return None;
        }
        let g = gcd_fast(n, d);
        let (n, d) = if g > 1 { (n / g, d / g) } else { (n, d) };
        Some(Rat::Small {
            neg: neg && n != 0,
            n,
            d,
        })
    }

    pub fn from_parts(neg: bool, num: BigUint, den: BigUint) -> Option<Self> {
        if den.is_zero() {
            return None;
        }
        if let (Some(n), Some(d)) = (num.to_u128(), den.to_u128()) {
            return Rat::small(neg, n, d);
        }
        if den.is_one() {
            return Some(Rat::Big {
                neg: neg && !num.is_zero(),
                num,
                den,
            });
        }
        // Reducing a fraction of two huge numbers is quadratic; past this
        // size the caller falls back to floating point instead.
        if num.bits().max(den.bits()) > GCD_MAX_BITS {
            return None;
        }
        let g = num.gcd(&den);
        let (num, den) = if g.is_one() || g.is_zero() {
            (num, den)
        } else {
            (num.divrem(&g)?.0, den.divrem(&g)?.0)
        };
        if let (Some(n), Some(d)) = (num.to_u128(), den.to_u128()) {
            return Some(Rat::Small {
                neg: neg && n != 0,
                n,
                d,
            });
        }
        Some(Rat::Big {
            neg: neg && !num.is_zero(),
            num,
            den,
        })
    }

    /// Parses `digits[.digits]` (no sign, no exponent) exactly.
    pub fn from_decimal(int: &str, frac: &str) -> Option<Self> {
        // `1.500` is `1.5`: trailing zeros after the point change nothing,
        // and without them the numerator of a fraction does not end in 0.
        let frac = frac.trim_end_matches('0');
        let digits = int.len() + frac.len();
        if digits <= 38 {
            // Fits a u128 directly.
            let mut n: u128 = 0;
            for b in int.bytes().chain(frac.bytes()) {
                if !b.is_ascii_digit() {
                    return None;
                }
                n = n * 10 + (b - b'0') as u128;
            }
            return Rat::small(false, n, 10u128.pow(frac.len() as u32));
        }
        let mut all = String::with_capacity(digits);
        all.push_str(int);
        all.push_str(frac);
        let num = BigUint::from_dec_str(&all)?;
        let den = pow10(frac.len() as u64)?;
        if num.bits().max(den.bits()) > GCD_MAX_BITS {
            return Rat::from_parts(false, num, den); // its size rule applies
        }
        reduce_decimal(num, den, frac.len() as u64)
    }

    fn parts(&self) -> (bool, BigUint, BigUint) {
        match self {
            Rat::Small { neg, n, d } => (*neg, BigUint::from_u128(*n), BigUint::from_u128(*d)),
            Rat::Big { neg, num, den } => (*neg, num.clone(), den.clone()),
        }
    }

    pub fn is_zero(&self) -> bool {
        matches!(self, Rat::Small { n: 0, .. })
    }

    /// Size in bits of the larger of numerator and denominator.
    pub fn bits(&self) -> u64 {
        match self {
            Rat::Small { n, d, .. } => {
                (128 - n.leading_zeros()).max(128 - d.leading_zeros()) as u64
            }
            Rat::Big { num, den, .. } => num.bits().max(den.bits()),
        }
    }

    pub fn is_neg(&self) -> bool {
        match self {
            Rat::Small { neg, .. } | Rat::Big { neg, .. } => *neg,
        }
    }

    pub fn is_integer(&self) -> bool {
        match self {
            Rat::Small { d, .. } => *d == 1,
            Rat::Big { den, .. } => den.is_one(),
        }
    }

    pub fn numer(&self) -> BigUint {
        self.parts().1
    }

    pub fn denom(&self) -> BigUint {
        self.parts().2
    }

    /// The value as an i64 when it is an integer that fits.
    pub fn to_i64(&self) -> Option<i64> {
        match self {
            Rat::Small { neg, n, d: 1 } if *n <= i64::MAX as u128 => {
                Some(if *neg { -(*n as i64) } else { *n as i64 })
            }
            _ => None,
        }
    }

    pub fn neg(&self) -> Self {
        let mut r = self.clone();
        match &mut r {
            Rat::Small { neg, n, .. } => *neg = !*neg && *n != 0,
            Rat::Big { neg, .. } => *neg = !*neg,
        }
        r
    }

    pub fn abs(&self) -> Self {
        let mut r = self.clone();
        match &mut r {
            Rat::Small { neg, .. } | Rat::Big { neg, .. } => *neg = false,
        }
        r
    }

    /// Both operands' (sign, numerator, denominator) when both are small: the fast paths.
    fn small_pair(&self, o: &Self) -> Option<((bool, u128, u128), (bool, u128, u128))> {
        match (self, o) {
            (Rat::Small { neg: s1, n: n1, d: d1 }, Rat::Small { neg: s2, n: n2, d: d2 }) => {
                Some(((*s1, *n1, *d1), (*s2, *n2, *d2)))
            }
            _ => None,
        }
    }

    pub fn add(&self, o: &Self) -> Option<Self> {
        if let Some(((s1, n1, d1), (s2, n2, d2))) = self.small_pair(o) {
            if let Some(r) = small_add(s1, n1, d1, s2, n2, d2) {
                return Some(r);
            }
        }
        let (sn, sa, sb) = self.parts();
        let (on, oa, ob) = o.parts();
        // a/b + c/d = (ad + cb) / bd
        let ad = sa.mul(&ob)?;
        let cb = oa.mul(&sb)?;
        let den = sb.mul(&ob)?;
        let (neg, num) = if sn == on {
            (sn, ad.add(&cb)?)
        } else {
            match ad.cmp(&cb) {
                Ordering::Less => (on, cb.sub(&ad)),
                _ => (sn, ad.sub(&cb)),
            }
        };
        Rat::from_parts(neg, num, den)
    }

    pub fn sub(&self, o: &Self) -> Option<Self> {
        self.add(&o.neg())
    }

    pub fn mul(&self, o: &Self) -> Option<Self> {
        if let Some(((s1, n1, d1), (s2, n2, d2))) = self.small_pair(o) {
            // Cross-reduce first so the products stay small.
            let g1 = gcd_fast(n1, d2).max(1);
            let g2 = gcd_fast(n2, d1).max(1);
            if let (Some(n), Some(d)) = (
                (n1 / g1).checked_mul(n2 / g2),
                (d1 / g2).checked_mul(d2 / g1),
            ) {
                return Some(Rat::Small {
                    neg: (s1 != s2) && n != 0,
                    n,
                    d,
                });
            }
        }
        let (sn, sa, sb) = self.parts();
        let (on, oa, ob) = o.parts();
        Rat::from_parts(sn != on, sa.mul(&oa)?, sb.mul(&ob)?)
    }

    /// `None` on division by zero or overflow.
    pub fn div(&self, o: &Self) -> Option<Self> {
        self.mul(&o.recip()?)
    }

    pub fn recip(&self) -> Option<Self> {
        match self {
            Rat::Small { n: 0, .. } => None,
            Rat::Small { neg, n, d } => Some(Rat::Small {
                neg: *neg,
                n: *d,
                d: *n,
            }),
            Rat::Big { neg, num, den } => Rat::from_parts(*neg, den.clone(), num.clone()),
        }
    }

    /// Integer power by repeated squaring; refuses early when the result
    /// would clearly exceed the size cap.
    pub fn pow(&self, e: i64) -> Option<Self> {
        if e < 0 {
            return self.pow(e.checked_neg()?)?.recip();
        }
        let e = e as u64;
        let (neg, num, den) = self.parts();
        let size = num.bits().max(den.bits());
        if size > 1 && (size - 1).saturating_mul(e) > MAX_BITS {
            return None;
        }
        let (mut n, mut d) = (BigUint::from_u64(1), BigUint::from_u64(1));
        let (mut bn, mut bd) = (num, den);
        let mut k = e;
        while k > 0 {
            if k & 1 == 1 {
                n = n.mul(&bn)?;
                d = d.mul(&bd)?;
            }
            k >>= 1;
            if k > 0 {
                bn = bn.mul(&bn)?;
                bd = bd.mul(&bd)?;
            }
        }
        // Powers of coprime numbers stay coprime: no reduction needed, but
        // from_parts also picks the inline form when it fits.
        Rat::from_parts(neg && e % 2 == 1, n, d)
    }

    /// Exact k-th root when numerator and denominator are perfect powers
    /// (odd roots of negatives are real, as a human reads `\sqrt[3]{-8}`).
    pub fn exact_root(&self, k: u32) -> Option<Self> {
        if k == 0 || (self.is_neg() && k % 2 == 0) {
            return None;
        }
        let (neg, num, den) = self.parts();
        Rat::from_parts(neg, num.exact_root(k)?, den.exact_root(k)?)
    }

    pub fn cmp_value(&self, o: &Self) -> Option<Ordering> {
        let d = self.sub(o)?;
        Some(if d.is_zero() {
            Ordering::Equal
        } else if d.is_neg() {
            Ordering::Less
        } else {
            Ordering::Greater
        })
    }

    /// Nearest f64; ±inf or 0 when the magnitude is out of range.
    pub fn to_f64(&self) -> f64 {
        let v = match self {
            Rat::Small { n, d, .. } => {
                if *n < (1u128 << 100) && *d < (1u128 << 100) {
                    *n as f64 / *d as f64
                } else {
                    scale2(*n as f64 / *d as f64, 0)
                }
            }
            Rat::Big { num, den, .. } => {
                let (nm, ne) = num.to_f64_exp();
                let (dm, de) = den.to_f64_exp();
                scale2(nm / dm, ne - de)
            }
        };
        if self.is_neg() {
            -v
        } else {
            v
        }
    }
}

/// a/b ± c/d on u128 with overflow checks; `None` → use the big path.
fn small_add(s1: bool, n1: u128, d1: u128, s2: bool, n2: u128, d2: u128) -> Option<Rat> {
    let (x, y, den) = if d1 == d2 {
        (n1, n2, d1)
    } else {
        let g = gcd_fast(d1, d2);
        let (f1, f2) = (d2 / g, d1 / g);
        (
            n1.checked_mul(f1)?,
            n2.checked_mul(f2)?,
            d1.checked_mul(f1)?,
        )
    };
    let (neg, num) = if s1 == s2 {
        (s1, x.checked_add(y)?)
    } else if x >= y {
        (s1, x - y)
    } else {
        (s2, y - x)
    };
    Rat::small(neg, num, den)
}

/// 10^k, bounded by the size cap.
pub fn pow10(k: u64) -> Option<BigUint> {
    if k.saturating_mul(3322) / 1000 > MAX_BITS {
        return None;
    }
    let mut r = BigUint::from_u64(1);
    let mut base = BigUint::from_u64(10);
    let mut e = k;
    while e > 0 {
        if e & 1 == 1 {
            r = r.mul(&base)?;
        }
        e >>= 1;
        if e > 0 {
            base = base.mul(&base)?;
        }
    }
    Some(r)
}

/// x * 2^e without intermediate overflow.
fn scale2(mut x: f64, mut e: i64) -> f64 {
    while e > 1000 {
        x *= 2f64.powi(1000);
        e -= 1000;
        if x.is_infinite() {
            return x;
        }
    }
    while e < -1000 {
        x *= 2f64.powi(-1000);
        e += 1000;
        if x == 0.0 {
            return x;
        }
    }
    x * 2f64.powi(e as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic() {
        let half = Rat::from_decimal("0", "5").unwrap();
        let r = Rat::from_i64(1).div(&Rat::from_i64(2)).unwrap();
        assert_eq!(half, r);
        assert_eq!(r.add(&r).unwrap(), Rat::from_i64(1));
        assert_eq!(Rat::from_i64(-2).pow(3).unwrap(), Rat::from_i64(-8));
        assert_eq!(Rat::from_i64(-8).exact_root(3).unwrap(), Rat::from_i64(-2));
        assert_eq!(Rat::from_i64(10).pow(5000).unwrap().to_f64(), f64::INFINITY);
        assert!(
            (Rat::from_i64(1).div(&Rat::from_i64(3)).unwrap().to_f64() - 1.0 / 3.0).abs() < 1e-16
        );
        assert!(Rat::from_i64(10).pow(100_000).is_none());
    }

    /// The 2-or-5 reduction of long decimals agrees with the general GCD.
    #[test]
    fn long_decimals_reduce_like_gcd() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..300 {
            let len = 30 + (next() % 120) as usize;
            let mut frac: String = (0..len).map(|_| (b'0' + (next() % 10) as u8) as char).collect();
            // Numerators rich in 2s or 5s (…5, …25, …125, even, powers).
            match round % 4 {
                0 => frac.push('5'),
                1 => frac.push_str(&"5".repeat(1 + round % 7)),
                2 => frac.push_str("2"),
                _ => {}
            }
            let int = ((next() % 1000) as u64).to_string();
            let num = BigUint::from_dec_str(&format!("{int}{}", frac.trim_end_matches('0'))).unwrap();
            let den = pow10(frac.trim_end_matches('0').len() as u64).unwrap();
            assert_eq!(
                Rat::from_decimal(&int, &frac),
                Rat::from_parts(false, num, den),
                "{int}.{frac}"
            );
        }
        // 5^60 / 10^60 = 2^-60 (the 27-at-a-time path); 2^70 / 10^70 = 5^-70.
        for (b, other, k) in [(5, 2, 60), (2, 5, 70)] {
            let digits = Rat::from_i64(b).pow(k).unwrap().numer().to_dec_string();
            let frac = format!("{digits:0>width$}", width = k as usize);
            let want = Rat::from_i64(1).div(&Rat::from_i64(other).pow(k).unwrap());
            assert_eq!(Rat::from_decimal("0", &frac), want, "{b}^{k}");
        }
        // More factors of 2 than the denominator has: 2^200 = …376 with the
        // point before the last four digits is 2^196 / 5^4.
        let p = Rat::from_i64(2).pow(200).unwrap().numer().to_dec_string();
        let (int, frac) = p.split_at(p.len() - 4);
        let want = Rat::from_i64(2).pow(196).unwrap().div(&Rat::from_i64(625)).unwrap();
        assert_eq!(Rat::from_decimal(int, frac), Some(want));
        assert_eq!(Rat::from_decimal("1", "500"), Rat::from_decimal("1", "5"));
        assert_eq!(Rat::from_decimal("0", "0"), Some(Rat::zero()));
    }
}
