//! The side-by-side performance harness of Solstice CI.
//!
//! `scripts/bench` (the `solstice-bench` binary of this package) builds every benchmark of
//! the workspace in release mode, runs each one together with its baseline in the same run
//! (the machines are shared and noisy, so a figure from another day is no baseline), and
//! reports one [`Row`] per measured figure: as a table on the terminal and as JSON in a
//! file it names.
//!
//! This library is what the harness and the benchmarks share:
//!
//! - [`Row`], [`Unit`] and [`Goal`]: one figure of ours beside its baseline, the ratio of
//!   the two and whether the goal is met; [`Report`] renders the rows as the table and the
//!   JSON document.
//! - [`Figures`]: how a benchmark that is a plain program (`harness = false`) hands its
//!   raw figures to the harness: `--json FILE` on its command line, one JSON object of
//!   named numbers and texts, rewritten after every figure so that what was measured
//!   before a failure still arrives.
//! - [`criterion_estimate`]: reads a criterion benchmark's figure from the
//!   `estimates.json` criterion writes, rather than from its terminal output.
//!
//! ```
//! use solstice_bench::{Goal, Row, Unit};
//!
//! let row = Row::new("plan a 10-step workflow", Unit::Seconds)
//!     .ours(Some(48.5e-6))
//!     .baseline("the YAML parser's events alone", Some(28.3e-6))
//!     .goal(Goal::AtMost(50e-6));
//! assert_eq!(row.met(), Some(true));
//! assert!((row.ratio().unwrap_or_default() - 1.714).abs() < 0.001);
//! ```

#![warn(missing_docs, missing_debug_implementations)]

mod criterion;
mod figures;
mod report;
mod row;

pub use criterion::{CriterionError, criterion_estimate};
pub use figures::{Figures, FiguresError};
pub use report::Report;
pub use row::{Goal, Row, Unit, thousands};
