//! Minimal complex f64 arithmetic for the inexact evaluation path
//! (`\sqrt{-1}`, `6 - 5i`, logs of negatives at sample points).

use std::f64::consts::PI;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cx {
    pub re: f64,
    pub im: f64,
}

impl Cx {
    pub const fn new(re: f64, im: f64) -> Self {
        Cx { re, im }
    }

    pub const fn real(re: f64) -> Self {
        Cx { re, im: 0.0 }
    }

    pub fn is_finite(self) -> bool {
        self.re.is_finite() && self.im.is_finite()
    }

    pub fn is_real(self) -> bool {
        self.im == 0.0
    }

    pub fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }

    pub fn arg(self) -> f64 {
        self.im.atan2(self.re)
    }

    pub fn neg(self) -> Self {
        Cx::new(-self.re, -self.im)
    }

    pub fn add(self, o: Self) -> Self {
        Cx::new(self.re + o.re, self.im + o.im)
    }

    pub fn sub(self, o: Self) -> Self {
        Cx::new(self.re - o.re, self.im - o.im)
    }

    pub fn mul(self, o: Self) -> Self {
        if self.is_real() && o.is_real() {
            return Cx::real(self.re * o.re);
        }
        Cx::new(
            self.re * o.re - self.im * o.im,
            self.re * o.im + self.im * o.re,
        )
    }

    /// `None` when dividing by zero.
    pub fn div(self, o: Self) -> Option<Self> {
        if o.re == 0.0 && o.im == 0.0 {
            return None;
        }
        if self.is_real() && o.is_real() {
            return Some(Cx::real(self.re / o.re));
        }
        let d = o.re * o.re + o.im * o.im;
        Some(Cx::new(
            (self.re * o.re + self.im * o.im) / d,
            (self.im * o.re - self.re * o.im) / d,
        ))
    }

    pub fn exp(self) -> Self {
        let m = self.re.exp();
        if self.im == 0.0 {
            return Cx::real(m);
        }
        Cx::new(m * self.im.cos(), m * self.im.sin())
    }

    /// Principal logarithm; `None` at 0.
    pub fn ln(self) -> Option<Self> {
        if self.re == 0.0 && self.im == 0.0 {
            return None;
        }
        if self.is_real() && self.re > 0.0 {
            return Some(Cx::real(self.re.ln()));
        }
        Some(Cx::new(self.abs().ln(), self.arg()))
    }

    /// Principal power `self^e`; `None` for 0 to a non-positive power.
    pub fn pow(self, e: Self) -> Option<Self> {
        if self.re == 0.0 && self.im == 0.0 {
            return if e.re > 0.0 {
                Some(Cx::real(0.0))
            } else {
                None
            };
        }
        if self.is_real() && e.is_real() && (self.re > 0.0 || e.re.fract() == 0.0) {
            return Some(Cx::real(self.re.powf(e.re)));
        }
        Some(self.ln()?.mul(e).exp())
    }

    pub fn sqrt(self) -> Self {
        if self.is_real() {
            return if self.re >= 0.0 {
                Cx::real(self.re.sqrt())
            } else {
                Cx::new(0.0, (-self.re).sqrt())
            };
        }
        let r = self.abs().sqrt();
        let t = self.arg() / 2.0;
        Cx::new(r * t.cos(), r * t.sin())
    }

    pub fn sin(self) -> Self {
        if self.is_real() {
            return Cx::real(self.re.sin());
        }
        Cx::new(
            self.re.sin() * self.im.cosh(),
            self.re.cos() * self.im.sinh(),
        )
    }

    pub fn cos(self) -> Self {
        if self.is_real() {
            return Cx::real(self.re.cos());
        }
        Cx::new(
            self.re.cos() * self.im.cosh(),
            -self.re.sin() * self.im.sinh(),
        )
    }
}

pub const CX_PI: Cx = Cx::real(PI);
pub const CX_E: Cx = Cx::real(std::f64::consts::E);
pub const CX_I: Cx = Cx::new(0.0, 1.0);

/// Relative tolerance for inexact comparisons. Tight on purpose: a
/// truncated decimal such as `0.3333333333` (rel. error 1e-10) must not
/// match 1/3, while float noise (~1e-15) must.
pub const REL_TOL: f64 = 1e-11;
/// Absolute tolerance near zero (`\sin\pi` vs `0`).
pub const ABS_TOL: f64 = 1e-12;

pub fn close(a: Cx, b: Cx) -> bool {
    let d = a.sub(b).abs();
    let m = a.abs().max(b.abs());
    d <= REL_TOL * m || d <= ABS_TOL
}
