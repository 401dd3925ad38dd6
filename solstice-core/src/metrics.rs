//! Engine metrics in the Prometheus text format, without a metrics framework.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::JobResult;

/// Upper bounds (seconds) of the histogram buckets: from a fast host job to a long
/// illumos build.
const BUCKETS: [f64; 12] = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds, to stay in integers.
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, value: Duration) {
        let secs = value.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            if secs <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", count.load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

#[derive(Debug, Default)]
struct Inner {
    accepted: AtomicU64,
    finished: [AtomicU64; 4],
    running: AtomicU64,
    provision_failures: AtomicU64,
    machines_running: AtomicU64,
    machines_reaped: AtomicU64,
    queue_depth: AtomicU64,
    forge_errors: AtomicU64,
    boot: Histogram,
    duration: Histogram,
}

/// Counters and histograms an [`Engine`](crate::Engine) keeps about its jobs.
///
/// Cheap to clone; every clone updates the same values. Render them with
/// [`EngineMetrics::render`] for a `/metrics` endpoint.
#[derive(Debug, Clone, Default)]
pub struct EngineMetrics {
    inner: Arc<Inner>,
}

fn result_index(result: JobResult) -> usize {
    match result {
        JobResult::Success => 0,
        JobResult::Failure => 1,
        JobResult::Cancelled => 2,
        JobResult::Skipped => 3,
    }
}

impl EngineMetrics {
    /// Fresh metrics, all zero.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn job_started(&self) {
        self.inner.accepted.fetch_add(1, Ordering::Relaxed);
        self.inner.running.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn machine_ready(&self, took: Duration) {
        self.inner.boot.observe(took);
        self.inner.machines_running.fetch_add(1, Ordering::Relaxed);
    }

    /// A machine that [`machine_ready`](Self::machine_ready) counted is gone (destroyed
    /// with its job, or later when it was kept for debug SSH).
    pub(crate) fn machine_gone(&self) {
        // Saturating: a miscount must not wrap the gauge to 2^64.
        let _ = self.inner.machines_running.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
    }

    // Reaping reads the store's machine records.
    #[cfg_attr(not(feature = "_store"), allow(dead_code))]
    pub(crate) fn machine_reaped(&self) {
        self.inner.machines_reaped.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the number of jobs waiting in the queue for this engine's labels, as last
    /// seen by whoever polls the queue (the services do, every few seconds).
    pub fn set_queue_depth(&self, jobs: u64) {
        self.inner.queue_depth.store(jobs, Ordering::Relaxed);
    }

    /// Counts a failed call to a forge's API (the runner services count theirs here,
    /// so one `/metrics` shows them beside the jobs).
    pub fn forge_error(&self) {
        self.inner.forge_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Machines up right now (including any kept for debug SSH after their job).
    pub fn machines_running(&self) -> u64 {
        self.inner.machines_running.load(Ordering::Relaxed)
    }

    pub(crate) fn provision_failed(&self) {
        self.inner.provision_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn job_finished(&self, result: JobResult, took: Duration) {
        self.inner.finished[result_index(result)].fetch_add(1, Ordering::Relaxed);
        self.inner.running.fetch_sub(1, Ordering::Relaxed);
        self.inner.duration.observe(took);
    }

    /// Jobs running right now.
    pub fn running(&self) -> u64 {
        self.inner.running.load(Ordering::Relaxed)
    }

    /// Jobs that finished with `result` so far.
    pub fn finished(&self, result: JobResult) -> u64 {
        self.inner.finished[result_index(result)].load(Ordering::Relaxed)
    }

    /// All values in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let i = &self.inner;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP solstice_jobs_accepted_total Jobs this engine started.\n# TYPE solstice_jobs_accepted_total counter\nsolstice_jobs_accepted_total {}",
            i.accepted.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# HELP solstice_jobs_finished_total Jobs finished, by result.\n# TYPE solstice_jobs_finished_total counter");
        for result in [JobResult::Success, JobResult::Failure, JobResult::Cancelled, JobResult::Skipped] {
            let _ = writeln!(out, "solstice_jobs_finished_total{{result=\"{result}\"}} {}", self.finished(result));
        }
        let _ = writeln!(
            out,
            "# HELP solstice_jobs_running Jobs running now (one machine each).\n# TYPE solstice_jobs_running gauge\nsolstice_jobs_running {}",
            self.running()
        );
        let _ = writeln!(
            out,
            "# HELP solstice_machine_provision_failures_total Machines that could not be provisioned.\n# TYPE solstice_machine_provision_failures_total counter\nsolstice_machine_provision_failures_total {}",
            i.provision_failures.load(Ordering::Relaxed)
        );
        let gauges_and_counters = [
            ("solstice_machines_running", "gauge", "Machines up now, including any kept for debug SSH.", &i.machines_running),
            ("solstice_machines_reaped_total", "counter", "Machines a crashed run left behind, removed at start-up.", &i.machines_reaped),
            ("solstice_queue_depth", "gauge", "Jobs waiting in the queue for this engine's labels, as last polled.", &i.queue_depth),
            ("solstice_forge_api_errors_total", "counter", "Failed calls to a forge's API.", &i.forge_errors),
        ];
        for (name, kind, help, value) in gauges_and_counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", value.load(Ordering::Relaxed));
        }
        i.boot.render(&mut out, "solstice_machine_boot_seconds", "Time from provisioning to a reachable machine.");
        i.duration.render(&mut out, "solstice_job_duration_seconds", "Time from accepting a job to its end.");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_render_as_prometheus_text() {
        let m = EngineMetrics::new();
        m.job_started();
        m.machine_ready(Duration::from_millis(700));
        m.job_finished(JobResult::Failure, Duration::from_secs(12));
        let text = m.render();
        assert!(text.contains("solstice_jobs_accepted_total 1\n"));
        assert!(text.contains("solstice_jobs_finished_total{result=\"failure\"} 1\n"));
        assert!(text.contains("solstice_jobs_running 0\n"));
        assert!(text.contains("solstice_machine_boot_seconds_bucket{le=\"0.5\"} 0\n"));
        assert!(text.contains("solstice_machine_boot_seconds_bucket{le=\"1\"} 1\n"));
        assert!(text.contains("solstice_job_duration_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("solstice_job_duration_seconds_sum 12\n"));
        assert!(text.contains("solstice_machines_running 1\n"), "the machine is not gone yet");
    }

    #[test]
    fn machines_queue_depth_and_forge_errors_are_counted() {
        let m = EngineMetrics::new();
        m.machine_ready(Duration::from_secs(1));
        m.machine_ready(Duration::from_secs(1));
        m.machine_gone();
        m.machine_reaped();
        m.set_queue_depth(7);
        m.forge_error();
        m.forge_error();
        let text = m.render();
        assert_eq!(m.machines_running(), 1);
        for line in ["solstice_machines_running 1\n", "solstice_machines_reaped_total 1\n", "solstice_queue_depth 7\n", "solstice_forge_api_errors_total 2\n"] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        m.machine_gone();
        m.machine_gone();
        assert_eq!(m.machines_running(), 0, "the gauge does not wrap below zero");
    }
}
