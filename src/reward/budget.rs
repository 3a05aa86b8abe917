//! Resource bounds for one grading: input size, nesting depth, and a
//! wall-clock budget checked cooperatively by the parser and evaluator.
//!
//! Why cooperative: grading runs on rayon worker threads inside the trainer;
//! we cannot kill a thread, so every loop that can grow with the input calls
//! [`Budget::tick`], which consults the clock every few hundred steps.

use std::time::{Duration, Instant};

/// Longest boxed answer or gold we try to parse (bytes). Longer → parse error.
pub const MAX_INPUT_BYTES: usize = 32 * 1024;
/// Deepest nesting of groups / operators the recursive parser accepts. Kept
/// small enough that the recursion fits in a 2 MiB thread stack even in
/// debug builds.
pub const MAX_DEPTH: usize = 120;
/// Largest integer exponent evaluated exactly (bigger → floating point).
pub const MAX_EXACT_EXPONENT: i64 = 100_000;
/// Largest n for which n! and binomials are computed exactly.
pub const MAX_FACTORIAL: i64 = 2_000;
/// Most elements in a list/set/tuple we compare (unordered matching is
/// quadratic).
pub const MAX_ITEMS: usize = 512;

/// Why a grading could not reach a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fail {
    /// The text is not something we can read as math.
    Parse,
    /// The time budget ran out.
    Timeout,
}

/// Default number of work steps one grading may take. Deterministic, so
/// the same input gets the same verdict however loaded the machine is;
/// about 10-20 ms of work in an optimized build.
pub const DEFAULT_MAX_STEPS: u64 = 400_000;

pub struct Budget {
    deadline: Instant,
    steps: u64,
    max_steps: u64,
    expired: bool,
}

impl Budget {
    pub fn new(limit: Duration) -> Self {
        Self::with_steps(limit, DEFAULT_MAX_STEPS)
    }

    pub fn with_steps(limit: Duration, max_steps: u64) -> Self {
        Budget {
            deadline: Instant::now() + limit,
            steps: 0,
            max_steps,
            expired: false,
        }
    }

    /// Count one unit of work; `Err(Timeout)` once the step limit is
    /// reached or (checked every 256 steps) the wall-clock deadline passed.
    #[inline]
    pub fn tick(&mut self) -> Result<(), Fail> {
        self.steps += 1;
        if self.steps >= self.max_steps
            || (self.steps % 256 == 0 && Instant::now() >= self.deadline)
        {
            self.expired = true;
        }
        if self.expired {
            Err(Fail::Timeout)
        } else {
            Ok(())
        }
    }

    /// Count `n` steps of work at once and check the clock now (for single
    /// expensive operations such as big-number arithmetic).
    pub fn charge(&mut self, n: u64) -> Result<(), Fail> {
        self.steps = self.steps.saturating_add(n);
        if self.steps >= self.max_steps || Instant::now() >= self.deadline {
            self.expired = true;
        }
        if self.expired {
            Err(Fail::Timeout)
        } else {
            Ok(())
        }
    }

    /// Check the clock now.
    pub fn check_now(&mut self) -> Result<(), Fail> {
        self.charge(1)
    }
}
