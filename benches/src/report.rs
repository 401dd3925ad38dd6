//! The rows of one run as a table and as JSON.

use serde::Serialize;

use crate::row::{Goal, Row, Unit};

/// How the ratio column reads, printed under the table and stored in the JSON.
pub(crate) const RATIO_MEANING: &str = "ratio = how many times the baseline's cost ours is: ours/baseline for times and \
     sizes, baseline/ours for rates; lower is better, 1.00 is as fast as the baseline";

/// The rows of one harness run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    rows: Vec<Row>,
    quick: bool,
    started: String,
    wall_seconds: f64,
}

impl Report {
    /// A report of `rows`, from a run started at `started` (RFC 3339) that took
    /// `wall_seconds`; `quick` tells whether it was the `--quick` run.
    pub fn new(rows: Vec<Row>, quick: bool, started: impl Into<String>, wall_seconds: f64) -> Self {
        Self { rows, quick, started: started.into(), wall_seconds }
    }

    /// The rows.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The table: metric, ours, baseline, ratio, goal, met; then what each baseline is and
    /// the notes. A missing figure prints as `n/a`; "met" is `yes`, `no`, `n/a` (a figure
    /// the goal needs is missing) or `—` (no goal).
    pub fn table(&self) -> String {
        let header = ["metric", "ours", "baseline", "ratio", "goal", "met"].map(String::from);
        let mut lines: Vec<[String; 6]> = vec![header];
        for row in &self.rows {
            let value = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| row.unit.format(v));
            let met = match (row.goals.is_empty(), row.met()) {
                (true, _) => "—",
                (false, Some(true)) => "yes",
                (false, Some(false)) => "no",
                (false, None) => "n/a",
            };
            let goal = if row.goals.is_empty() { "—".to_owned() } else { row.goal_text() };
            lines.push([
                row.metric.clone(),
                value(row.ours),
                value(row.baseline),
                row.ratio().map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}×")),
                goal,
                met.to_owned(),
            ]);
        }
        let mut widths = [0usize; 6];
        for line in &lines {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            let cells: Vec<String> = line
                .iter()
                .zip(widths)
                .enumerate()
                .map(|(column, (cell, width))| {
                    let pad = " ".repeat(width - cell.chars().count());
                    // Figures align right, words left.
                    if (1..=3).contains(&column) { format!("{pad}{cell}") } else { format!("{cell}{pad}") }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
            if i == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                out.push_str(&rule.join("  "));
                out.push('\n');
            }
        }
        out.push_str(&format!("\n{RATIO_MEANING}.\n"));
        for row in &self.rows {
            if !row.baseline_is.is_empty() {
                out.push_str(&format!("- {}: baseline = {}", row.metric, row.baseline_is));
            } else {
                out.push_str(&format!("- {}: no baseline", row.metric));
            }
            if let Some(note) = &row.note {
                out.push_str(&format!("; {note}"));
            }
            out.push('\n');
        }
        out
    }

    /// The same rows as a JSON document:
    ///
    /// ```text
    /// { "quick": true, "started": "2026-12-05T17:30:00Z", "wall_seconds": 312.4,
    ///   "ratio": "ratio = how many times …",
    ///   "rows": [ { "metric": "…", "unit": "s", "better": "lower", "ours": 4.85e-5,
    ///               "baseline": 2.83e-5, "baseline_is": "…", "ratio": 1.71,
    ///               "goal": "≤ 50.0 µs", "goals": [{"kind": "at_most", "value": 5e-5}],
    ///               "met": true, "note": null }, … ] }
    /// ```
    ///
    /// Figures are in the row's `unit` (seconds, not the table's µs); a missing figure,
    /// ratio or verdict is `null`.
    pub fn to_json(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct JsonRow<'a> {
            metric: &'a str,
            unit: Unit,
            better: &'static str,
            ours: Option<f64>,
            baseline: Option<f64>,
            baseline_is: Option<&'a str>,
            ratio: Option<f64>,
            goal: Option<String>,
            goals: &'a [Goal],
            met: Option<bool>,
            note: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct JsonReport<'a> {
            quick: bool,
            started: &'a str,
            wall_seconds: f64,
            ratio: &'static str,
            rows: Vec<JsonRow<'a>>,
        }
        let rows = self
            .rows
            .iter()
            .map(|row| JsonRow {
                metric: &row.metric,
                unit: row.unit,
                better: if row.unit.higher_is_better() { "higher" } else { "lower" },
                ours: row.ours,
                baseline: row.baseline,
                baseline_is: (!row.baseline_is.is_empty()).then_some(row.baseline_is.as_str()),
                ratio: row.ratio(),
                goal: (!row.goals.is_empty()).then(|| row.goal_text()),
                goals: &row.goals,
                met: row.met(),
                note: row.note.as_deref(),
            })
            .collect();
        let report =
            JsonReport { quick: self.quick, started: &self.started, wall_seconds: self.wall_seconds, ratio: RATIO_MEANING, rows };
        // Plain data of strings, numbers and options: serializing it cannot fail. serde_json
        // turns a non-finite float into null.
        serde_json::to_value(report).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn sample() -> Report {
        Report::new(
            vec![
                Row::new("plan a 10-step workflow", Unit::Seconds)
                    .ours(Some(48.5e-6))
                    .baseline("YAML events alone", Some(28.3e-6))
                    .goal(Goal::AtMost(50e-6)),
                Row::new("jobs through RabbitMQ", Unit::JobsPerSecond)
                    .baseline("bare lapin loop", None)
                    .goal(Goal::RatioAtMost(2.0))
                    .note("not measured: RabbitMQ is unreachable at 127.0.0.1:5672"),
                Row::new("peak RSS", Unit::Mebibytes).ours(Some(70.0)).goal(Goal::AtMost(64.0)),
            ],
            true,
            "2026-12-05T17:30:00Z",
            12.5,
        )
    }

    #[test]
    fn the_json_has_one_object_per_row_with_figures_in_the_rows_unit() {
        let json = sample().to_json();
        assert_eq!(json["quick"], json!(true));
        assert_eq!(json["started"], json!("2026-12-05T17:30:00Z"));
        assert_eq!(json["wall_seconds"], json!(12.5));
        assert_eq!(json["rows"].as_array().unwrap().len(), 3);
        let plan = &json["rows"][0];
        assert_eq!(plan["metric"], json!("plan a 10-step workflow"));
        assert_eq!(plan["unit"], json!("s"));
        assert_eq!(plan["better"], json!("lower"));
        assert_eq!(plan["ours"], json!(48.5e-6));
        assert_eq!(plan["baseline"], json!(28.3e-6));
        assert_eq!(plan["baseline_is"], json!("YAML events alone"));
        assert!((plan["ratio"].as_f64().unwrap() - 48.5 / 28.3).abs() < 1e-9);
        assert_eq!(plan["goal"], json!("≤ 50.0 µs"));
        assert_eq!(plan["goals"], json!([{"kind": "at_most", "value": 50e-6}]));
        assert_eq!(plan["met"], json!(true));
        assert_eq!(plan["note"], json!(null));
    }

    #[test]
    fn a_row_that_could_not_be_measured_stays_in_the_json_with_nulls_and_its_reason() {
        let json = sample().to_json();
        let rabbit = &json["rows"][1];
        assert_eq!(rabbit["unit"], json!("jobs/s"));
        assert_eq!(rabbit["better"], json!("higher"));
        assert_eq!(rabbit["ours"], json!(null));
        assert_eq!(rabbit["baseline"], json!(null));
        assert_eq!(rabbit["ratio"], json!(null));
        assert_eq!(rabbit["goals"], json!([{"kind": "ratio_at_most", "value": 2.0}]));
        assert_eq!(rabbit["met"], json!(null));
        assert_eq!(rabbit["note"], json!("not measured: RabbitMQ is unreachable at 127.0.0.1:5672"));
        let rss = &json["rows"][2];
        assert_eq!(rss["baseline_is"], json!(null));
        assert_eq!(rss["met"], json!(false));
    }

    #[test]
    fn the_table_has_a_header_and_one_line_per_row_with_the_verdict() {
        let table = sample().table();
        let lines: Vec<&str> = table.lines().collect();
        let columns: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(columns, ["metric", "ours", "baseline", "ratio", "goal", "met"]);
        assert!(lines[1].starts_with("----"));
        assert!(lines[2].starts_with("plan a 10-step workflow"), "{table}");
        assert!(lines[2].contains("48.5 µs") && lines[2].contains("28.3 µs") && lines[2].contains("1.71×"), "{table}");
        let verdict = |line: &str| line.split_whitespace().last().unwrap_or_default().to_owned();
        assert!(lines[2].contains("≤ 50.0 µs") && verdict(lines[2]) == "yes", "{table}");
        assert!(lines[3].contains("ratio ≤ 2.00") && verdict(lines[3]) == "n/a", "{table}");
        assert!(lines[4].contains("≤ 64.0 MiB") && verdict(lines[4]) == "no", "{table}");
        // The columns line up although "µ" and "≤" take more than one byte.
        let met_column = |line: &str| line.chars().count() - line.split_whitespace().last().unwrap().chars().count();
        assert_eq!(met_column(lines[0]), met_column(lines[2]));
        assert_eq!(met_column(lines[0]), met_column(lines[4]));
        assert!(table.contains("- jobs through RabbitMQ: baseline = bare lapin loop; not measured: RabbitMQ is unreachable"));
        assert!(table.contains("- peak RSS: no baseline"));
    }
}
