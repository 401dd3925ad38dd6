//! One measured figure beside its baseline.

use serde::Serialize;

/// What a figure counts. It decides which way is better and how a value prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Unit {
    /// Seconds of wall time; lower is better. Printed in ns, µs, ms or s.
    #[serde(rename = "s")]
    Seconds,
    /// Mebibytes of memory; lower is better.
    #[serde(rename = "MiB")]
    Mebibytes,
    /// Log lines per second; higher is better.
    #[serde(rename = "lines/s")]
    LinesPerSecond,
    /// Jobs per second; higher is better.
    #[serde(rename = "jobs/s")]
    JobsPerSecond,
}

impl Unit {
    /// Whether a higher value is the better one (rates), rather than a lower one (times, sizes).
    pub fn higher_is_better(self) -> bool {
        matches!(self, Self::LinesPerSecond | Self::JobsPerSecond)
    }

    /// `value` for a reader: `48.5 µs`, `10.63 s`, `41.1 MiB`, `659,000 lines/s`.
    pub fn format(self, value: f64) -> String {
        match self {
            Self::Seconds => {
                let magnitude = value.abs();
                if magnitude < 1e-6 {
                    format!("{:.1} ns", value * 1e9)
                } else if magnitude < 1e-3 {
                    format!("{:.1} µs", value * 1e6)
                } else if magnitude < 1.0 {
                    format!("{:.2} ms", value * 1e3)
                } else {
                    format!("{value:.2} s")
                }
            }
            Self::Mebibytes => format!("{value:.1} MiB"),
            Self::LinesPerSecond => format!("{} lines/s", thousands(value)),
            Self::JobsPerSecond => format!("{} jobs/s", thousands(value)),
        }
    }
}

/// `value` rounded to a whole number, with commas between groups of three digits: `5,000,000`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if value < 0.0 && digits != "0" {
        out.push('-');
    }
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// What a figure should achieve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Goal {
    /// Our figure is at most this, in the row's unit (a time or a size).
    AtMost(f64),
    /// Our figure is at least this, in the row's unit (a rate).
    AtLeast(f64),
    /// The ratio to the baseline ([`Row::ratio`]) is at most this.
    RatioAtMost(f64),
}

impl Goal {
    /// Whether the goal is met; `None` when a figure it needs is missing.
    pub fn met(self, ours: Option<f64>, ratio: Option<f64>) -> Option<bool> {
        match self {
            Self::AtMost(limit) => ours.map(|v| v <= limit),
            Self::AtLeast(limit) => ours.map(|v| v >= limit),
            Self::RatioAtMost(limit) => ratio.map(|r| r <= limit),
        }
    }

    /// The goal as the table prints it: `≤ 50.0 µs`, `≥ 5,000 jobs/s`, `ratio ≤ 1.05`.
    pub fn describe(self, unit: Unit) -> String {
        match self {
            Self::AtMost(limit) => format!("≤ {}", unit.format(limit)),
            Self::AtLeast(limit) => format!("≥ {}", unit.format(limit)),
            Self::RatioAtMost(limit) => format!("ratio ≤ {limit:.2}"),
        }
    }
}

/// One figure of ours beside its baseline, measured in the same run, with its goals.
///
/// A figure that could not be measured stays `None`, and [`Row::note`] says why (a
/// missing QEMU, an unreachable RabbitMQ, a benchmark that failed): a row never silently
/// disappears.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub(crate) metric: String,
    pub(crate) unit: Unit,
    pub(crate) ours: Option<f64>,
    pub(crate) baseline: Option<f64>,
    pub(crate) baseline_is: String,
    pub(crate) goals: Vec<Goal>,
    pub(crate) note: Option<String>,
}

impl Row {
    /// A row for `metric`, counted in `unit`, with no figures and no goal yet.
    #[must_use]
    pub fn new(metric: impl Into<String>, unit: Unit) -> Self {
        Self {
            metric: metric.into(),
            unit,
            ours: None,
            baseline: None,
            baseline_is: String::new(),
            goals: Vec::new(),
            note: None,
        }
    }

    /// Our figure, or `None` if it was not measured. Default: `None`.
    #[must_use]
    pub fn ours(mut self, value: Option<f64>) -> Self {
        self.ours = value;
        self
    }

    /// What the baseline is, in a few words, and its figure from the same run. Default: none.
    #[must_use]
    pub fn baseline(mut self, what: impl Into<String>, value: Option<f64>) -> Self {
        self.baseline_is = what.into();
        self.baseline = value;
        self
    }

    /// Adds a goal; a row with several meets them only if it meets each. Default: no goal.
    #[must_use]
    pub fn goal(mut self, goal: Goal) -> Self {
        self.goals.push(goal);
        self
    }

    /// Why a figure is missing, or under what conditions the figures hold. Default: none.
    #[must_use]
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// The metric's name.
    pub fn metric(&self) -> &str {
        &self.metric
    }

    /// How many times the baseline's cost ours is, so that lower is better and 1.0 means
    /// "as fast as the baseline" whatever the unit: ours/baseline for times and sizes,
    /// baseline/ours for rates. `None` when a figure is missing or a divisor is not positive.
    pub fn ratio(&self) -> Option<f64> {
        let (ours, baseline) = (self.ours?, self.baseline?);
        let (num, den) = if self.unit.higher_is_better() { (baseline, ours) } else { (ours, baseline) };
        (den > 0.0 && num.is_finite() && den.is_finite()).then(|| num / den)
    }

    /// Whether every goal is met: `Some(false)` as soon as one is missed, `None` when the
    /// row has no goal or a goal cannot be judged because a figure is missing.
    pub fn met(&self) -> Option<bool> {
        if self.goals.is_empty() {
            return None;
        }
        let ratio = self.ratio();
        let verdicts: Vec<Option<bool>> = self.goals.iter().map(|g| g.met(self.ours, ratio)).collect();
        if verdicts.contains(&Some(false)) {
            Some(false)
        } else if verdicts.contains(&None) {
            None
        } else {
            Some(true)
        }
    }

    /// The goals as the table prints them, joined with "and"; empty without a goal.
    pub fn goal_text(&self) -> String {
        self.goals.iter().map(|g| g.describe(self.unit)).collect::<Vec<_>>().join(" and ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn a_time_ratio_is_ours_over_the_baseline() {
        let row = Row::new("boot", Unit::Seconds).ours(Some(10.5)).baseline("bare QEMU", Some(10.0));
        assert!(close(row.ratio().unwrap(), 1.05));
    }

    #[test]
    fn a_rate_ratio_is_the_baseline_over_ours_so_lower_is_better_there_too() {
        // 6,000 jobs/s against a bare loop's 12,000: ours costs twice the baseline.
        let row = Row::new("rabbit", Unit::JobsPerSecond).ours(Some(6_000.0)).baseline("bare lapin", Some(12_000.0));
        assert!(close(row.ratio().unwrap(), 2.0));
    }

    #[test]
    fn no_ratio_without_both_figures_or_with_a_zero_divisor() {
        assert_eq!(Row::new("a", Unit::Seconds).ours(Some(1.0)).ratio(), None);
        assert_eq!(Row::new("a", Unit::Seconds).baseline("b", Some(1.0)).ratio(), None);
        assert_eq!(Row::new("a", Unit::Seconds).ours(Some(1.0)).baseline("b", Some(0.0)).ratio(), None);
        assert_eq!(Row::new("a", Unit::JobsPerSecond).ours(Some(0.0)).baseline("b", Some(5.0)).ratio(), None);
    }

    #[test]
    fn goals_on_our_figure_compare_in_the_rows_unit_and_the_limit_itself_meets_them() {
        assert_eq!(Goal::AtMost(50e-6).met(Some(50e-6), None), Some(true));
        assert_eq!(Goal::AtMost(50e-6).met(Some(50.1e-6), None), Some(false));
        assert_eq!(Goal::AtLeast(5_000.0).met(Some(5_000.0), None), Some(true));
        assert_eq!(Goal::AtLeast(5_000.0).met(Some(4_999.0), None), Some(false));
        assert_eq!(Goal::AtLeast(5_000.0).met(None, Some(1.0)), None);
    }

    #[test]
    fn a_ratio_goal_looks_at_the_ratio_not_at_our_figure() {
        assert_eq!(Goal::RatioAtMost(1.05).met(Some(100.0), Some(1.04)), Some(true));
        assert_eq!(Goal::RatioAtMost(1.05).met(Some(0.001), Some(1.06)), Some(false));
        assert_eq!(Goal::RatioAtMost(1.05).met(Some(1.0), None), None);
    }

    #[test]
    fn a_row_meets_its_goals_only_if_it_meets_each() {
        let row = |ours, baseline| {
            Row::new("rabbit", Unit::JobsPerSecond)
                .ours(Some(ours))
                .baseline("bare lapin", baseline)
                .goal(Goal::AtLeast(1_000.0))
                .goal(Goal::RatioAtMost(2.0))
        };
        assert_eq!(row(6_000.0, Some(11_000.0)).met(), Some(true));
        assert_eq!(row(6_000.0, Some(13_000.0)).met(), Some(false), "ratio 2.17");
        assert_eq!(row(900.0, Some(1_000.0)).met(), Some(false), "under 1,000 jobs/s");
        // The ratio cannot be judged without the baseline, but a missed goal is still missed.
        assert_eq!(row(6_000.0, None).met(), None);
        assert_eq!(row(900.0, None).met(), Some(false));
    }

    #[test]
    fn a_row_without_a_goal_has_no_verdict() {
        let row = Row::new("a", Unit::Seconds).ours(Some(1.0)).baseline("b", Some(2.0));
        assert_eq!(row.met(), None);
        assert_eq!(row.goal_text(), "");
    }

    #[test]
    fn units_print_at_a_readable_scale() {
        assert_eq!(Unit::Seconds.format(48.5e-6), "48.5 µs");
        assert_eq!(Unit::Seconds.format(812e-9), "812.0 ns");
        assert_eq!(Unit::Seconds.format(2.43e-3), "2.43 ms");
        assert_eq!(Unit::Seconds.format(10.634), "10.63 s");
        assert_eq!(Unit::Mebibytes.format(41.06), "41.1 MiB");
        assert_eq!(Unit::LinesPerSecond.format(659_012.4), "659,012 lines/s");
        assert_eq!(Unit::JobsPerSecond.format(999.6), "1,000 jobs/s");
        assert_eq!(Unit::JobsPerSecond.format(12.0), "12 jobs/s");
        assert_eq!(Unit::JobsPerSecond.format(1_234_567.0), "1,234,567 jobs/s");
    }

    #[test]
    fn goals_describe_themselves_in_the_rows_unit() {
        let row = Row::new("rabbit", Unit::JobsPerSecond).goal(Goal::AtLeast(1_000.0)).goal(Goal::RatioAtMost(2.0));
        assert_eq!(row.goal_text(), "≥ 1,000 jobs/s and ratio ≤ 2.00");
        assert_eq!(Goal::AtMost(50e-6).describe(Unit::Seconds), "≤ 50.0 µs");
    }
}
