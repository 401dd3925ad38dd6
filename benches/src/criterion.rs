//! A criterion benchmark's figure, from the files criterion writes.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A criterion estimate could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CriterionError {
    /// No `estimates.json` for the benchmark: it did not run (filtered out, or failed).
    #[error("criterion wrote no estimates for {id} ({path})")]
    Missing {
        /// The benchmark's id.
        id: String,
        /// Where the estimates were looked for.
        path: PathBuf,
        /// Why the file could not be read.
        #[source]
        source: std::io::Error,
    },
    /// The file is not criterion's estimates format.
    #[error("{path} is not a criterion estimates file")]
    Format {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Deserialize)]
struct Estimates {
    mean: Estimate,
    slope: Option<Estimate>,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
}

/// The time one iteration of benchmark `id` took, in seconds, from the run whose results
/// criterion saved under `home` (criterion's output directory: `$CRITERION_HOME`, by
/// default `$CARGO_TARGET_DIR/criterion`).
///
/// Criterion 0.8 saves each run in `<home>/<id>/new/estimates.json` (an id made with
/// `bench_function("x")` is the directory `x`; one in a group is `group/x`), with every
/// estimate in nanoseconds. The figure is the one criterion prints as "time": the slope
/// of the linear regression when it sampled linearly, the mean otherwise.
///
/// # Errors
///
/// [`CriterionError::Missing`] if the file is not there, [`CriterionError::Format`] if it
/// is not criterion's format.
pub fn criterion_estimate(home: &Path, id: &str) -> Result<f64, CriterionError> {
    let path = home.join(id).join("new").join("estimates.json");
    let bytes =
        std::fs::read(&path).map_err(|source| CriterionError::Missing { id: id.to_owned(), path: path.clone(), source })?;
    let estimates: Estimates = serde_json::from_slice(&bytes).map_err(|source| CriterionError::Format { path, source })?;
    let typical = estimates.slope.unwrap_or(estimates.mean);
    Ok(typical.point_estimate * 1e-9)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Criterion 0.8's `estimates.json`, as it saves it (shortened: one interval is shown
    /// per estimate in full, the fields the harness ignores are kept so the shape is real).
    fn estimates(slope: Option<f64>, mean: f64) -> String {
        let estimate = |v: f64| {
            format!(
                r#"{{"confidence_interval":{{"confidence_level":0.95,"lower_bound":{lo},"upper_bound":{hi}}},"point_estimate":{v},"standard_error":12.5}}"#,
                lo = v * 0.98,
                hi = v * 1.02
            )
        };
        let slope = slope.map_or_else(|| "null".to_owned(), estimate);
        format!(
            r#"{{"mean":{},"median":{},"median_abs_dev":{},"slope":{slope},"std_dev":{}}}"#,
            estimate(mean),
            estimate(mean * 0.99),
            estimate(300.0),
            estimate(900.0)
        )
    }

    fn save(home: &Path, id: &str, body: &str) {
        let dir = home.join(id).join("new");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("estimates.json"), body).unwrap();
    }

    #[test]
    fn the_slope_is_the_figure_when_criterion_sampled_linearly_in_seconds() {
        let home = tempfile::tempdir().unwrap();
        save(home.path(), "plan_10_step_workflow", &estimates(Some(48_512.0), 49_100.0));
        let t = criterion_estimate(home.path(), "plan_10_step_workflow").unwrap();
        assert!((t - 48.512e-6).abs() < 1e-12, "{t}");
    }

    #[test]
    fn the_mean_is_the_figure_without_a_slope() {
        let home = tempfile::tempdir().unwrap();
        save(home.path(), "group/matrix", &estimates(None, 2_400_000.0));
        let t = criterion_estimate(home.path(), "group/matrix").unwrap();
        assert!((t - 2.4e-3).abs() < 1e-12, "{t}");
    }

    #[test]
    fn a_benchmark_that_did_not_run_or_a_foreign_file_is_an_error() {
        let home = tempfile::tempdir().unwrap();
        let err = criterion_estimate(home.path(), "never_ran").unwrap_err();
        assert!(matches!(err, CriterionError::Missing { .. }));
        assert!(err.to_string().contains("never_ran"));
        save(home.path(), "odd", r#"{"median": 3}"#);
        assert!(matches!(criterion_estimate(home.path(), "odd"), Err(CriterionError::Format { .. })));
    }
}
