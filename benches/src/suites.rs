//! The benchmarks of the workspace, how the harness runs each, and the rows (with their
//! baselines and goals) it makes of their figures. The goals are the ones the issues set
//! and `docs/benchmarks.md` lists.

use std::collections::HashMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use solstice_bench::{Figures, Goal, Row, Unit, criterion_estimate, thousands};

use crate::artifacts::Target;
use crate::process;

/// What every benchmark run needs to know.
#[derive(Debug)]
pub struct Context {
    pub quick: bool,
    /// `CRITERION_HOME` for the criterion benchmarks: emptied before the run.
    pub criterion_home: PathBuf,
    /// Where the plain-program benchmarks write their figures files: emptied before the run.
    pub figures: PathBuf,
    pub executables: HashMap<String, PathBuf>,
}

impl Context {
    fn executable(&self, target: Target) -> &Path {
        // `artifacts::build` checked that every target has one.
        self.executables.get(target.name()).map_or(Path::new(target.name()), PathBuf::as_path)
    }
}

/// One benchmark of the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// `solstice-workflow/benches/plan.rs` (criterion): planning workflows.
    Workflow,
    /// `solstice-forgejo/benches/log_throughput.rs`: a step's log into a fake Forgejo.
    Log,
    /// `solstice-vm/benches/provision.rs`: booting the test guest (needs QEMU).
    Provision,
    /// `tests/scale/src/bin/queue_bench.rs`: jobs per second through the queues (RabbitMQ
    /// for two of its rows).
    Queue,
    /// `solstice-core/benches/step_eval.rs` (criterion): evaluating a step's expressions
    /// when it runs.
    Steps,
}

impl Suite {
    pub const ALL: [Self; 5] = [Self::Workflow, Self::Steps, Self::Log, Self::Provision, Self::Queue];

    pub fn target(self) -> Target {
        match self {
            Self::Workflow => Target::Bench { package: "solstice-workflow", name: "plan" },
            Self::Log => Target::Bench { package: "solstice-forgejo", name: "log_throughput" },
            Self::Provision => Target::Bench { package: "solstice-vm", name: "provision" },
            Self::Queue => Target::Bin { package: "solstice-scale", name: "queue_bench" },
            Self::Steps => Target::Bench { package: "solstice-core", name: "step_eval" },
        }
    }

    pub fn run(self, context: &Context) -> Vec<Row> {
        match self {
            Self::Workflow => workflow(context),
            Self::Log => log(context),
            Self::Provision => provision(context),
            Self::Queue => queue(context),
            Self::Steps => steps(context),
        }
    }
}

/// The note of a row: why a figure is missing (the program's failure, or the reason it was
/// not run), or `None` when every figure is there.
fn missing(figures: &[Option<f64>], reason: Option<&str>) -> Option<String> {
    if figures.iter().all(Option::is_some) {
        return None;
    }
    Some(format!("not measured: {}", reason.unwrap_or("the benchmark did not report this figure")))
}

fn with_note(row: Row, note: Option<String>) -> Row {
    match note {
        Some(note) => row.note(note),
        None => row,
    }
}

/// Planning (parse + translate + expand) against the YAML parser's bare event stream over
/// the same document, the floor no reader on that parser can go under.
fn workflow(context: &Context) -> Vec<Row> {
    let target = Suite::Workflow.target();
    let mut command = Command::new(context.executable(target));
    command.args(["--bench", "--noplot"]).env("CRITERION_HOME", &context.criterion_home);
    if context.quick {
        command.args(["--warm-up-time", "1", "--measurement-time", "2"]);
    }
    let outcome = process::run("workflow", command, Duration::from_secs(15 * 60));
    let estimate = |id: &str| criterion_estimate(&context.criterion_home, id);
    let mut reason = outcome.failure;
    let mut figure = |id: &str| match estimate(id) {
        Ok(t) => Some(t),
        Err(e) => {
            reason.get_or_insert_with(|| e.to_string());
            None
        }
    };
    let cases = [
        ("workflow: plan a 10-step workflow", "plan_10_step_workflow", "yaml_events_10_step_workflow", 50e-6),
        ("workflow: plan a 256-job matrix", "plan_256_combination_matrix", "yaml_events_256_combination_matrix", 5e-3),
    ];
    let measured: Vec<_> = cases.iter().map(|(_, ours, base, _)| (figure(ours), figure(base))).collect();
    cases
        .iter()
        .zip(measured)
        .map(|((metric, _, _, goal), (ours, base))| {
            let row = Row::new(*metric, Unit::Seconds)
                .ours(ours)
                .baseline("the YAML parser's event stream over the same file, nothing built", base)
                .goal(Goal::AtMost(*goal));
            with_note(row, missing(&[ours, base], reason.as_deref()))
        })
        .collect()
}

/// A job's steps through the real engine (fake machine and executor) with expressions in
/// every step's name, env, `if:`, working directory and script, evaluated when each step
/// runs, against the same job without expressions. Per step; the goal (under 1 ms added
/// per step, issue 15) is checked on our whole figure, which includes the baseline.
fn steps(context: &Context) -> Vec<Row> {
    const STEPS: f64 = 20.0;
    let mut command = Command::new(context.executable(Suite::Steps.target()));
    command.args(["--bench", "--noplot"]).env("CRITERION_HOME", &context.criterion_home);
    if context.quick {
        command.args(["--warm-up-time", "1", "--measurement-time", "2"]);
    }
    let outcome = process::run("steps", command, Duration::from_secs(10 * 60));
    let mut reason = outcome.failure;
    let mut figure = |id: &str| match criterion_estimate(&context.criterion_home, id) {
        Ok(t) => Some(t / STEPS),
        Err(e) => {
            reason.get_or_insert_with(|| e.to_string());
            None
        }
    };
    let ours = figure("job_20_steps_evaluated_at_run_time");
    let base = figure("job_20_steps_without_expressions");
    let row = Row::new("engine: a step's expressions evaluated when it runs, per step", Unit::Seconds)
        .ours(ours)
        .baseline("the same step without expressions through the same engine", base)
        .goal(Goal::AtMost(1e-3));
    let note = missing(&[ours, base], reason.as_deref()).or_else(|| {
        let (ours, base) = (ours?, base?);
        Some(format!("adds {} per step (name, 3 env values, if, working directory, script; 32 KB event)", Unit::Seconds.format(ours - base)))
    });
    vec![with_note(row, note)]
}

/// A step's output to the fake Forgejo's stored log, against the same command's output
/// read and written to a file by a bare loop; and the process's peak memory meanwhile.
fn log(context: &Context) -> Vec<Row> {
    const FULL_LINES: u64 = 5_000_000;
    let lines: u64 = if context.quick { 1_000_000 } else { FULL_LINES };
    let file = context.figures.join("log_throughput.json");
    let mut command = Command::new(context.executable(Suite::Log.target()));
    command.arg(lines.to_string()).arg("--json").arg(&file);
    let outcome = process::run("log", command, Duration::from_secs(15 * 60));
    let (figures, reason) = read_figures(&file, outcome.failure);
    let ours = figures.get_number("ours_lines_per_s");
    let base = figures.get_number("baseline_lines_per_s");
    let throughput = Row::new("forgejo: step log lines to the stored log", Unit::LinesPerSecond)
        .ours(ours)
        .baseline("the same command's output read line by line and written to a file by a bare loop", base)
        .goal(Goal::AtLeast(100_000.0));
    let peak = figures.get_number("peak_rss_mib");
    let idle = figures.get_number("rss_before_job_mib");
    let memory = Row::new("forgejo: peak RSS while logging", Unit::Mebibytes)
        .ours(peak)
        .baseline("the same process before the job (fake Forgejo and runner started, idle)", idle)
        .goal(Goal::AtMost(64.0));
    let count = |n: u64| thousands(n as f64);
    let conditions = if lines == FULL_LINES {
        format!("{} lines", count(lines))
    } else {
        format!("{} lines (the goal is set for {})", count(lines), count(FULL_LINES))
    };
    let memory_note = missing(&[peak, idle], reason.as_deref()).unwrap_or(conditions.clone());
    vec![
        with_note(throughput, missing(&[ours, base], reason.as_deref()).or(Some(conditions))),
        memory.note(memory_note),
    ]
}

/// Provisioning the test guest to its first SSH command, against the same QEMU command line
/// started by hand with SSH polled at the same interval; the sides alternate run by run.
fn provision(context: &Context) -> Vec<Row> {
    const BARE_QEMU: &str = "the same QEMU command line started by hand, SSH polled at the same interval";
    let runs = if context.quick { 3 } else { 5 };
    let row = Row::new("vm: provision to first SSH command", Unit::Seconds).goal(Goal::RatioAtMost(1.05));
    if !on_path("qemu-system-x86_64") {
        return vec![row.baseline(BARE_QEMU, None).note(
            "not measured: qemu-system-x86_64 is not on PATH (scripts/bench installs qemu-system-x86 on Debian and \
             Ubuntu)",
        )];
    }
    let file = context.figures.join("provision.json");
    let mut command = Command::new(context.executable(Suite::Provision.target()));
    command.arg("--json").arg(&file).env("SOLSTICE_BENCH_RUNS", runs.to_string());
    let outcome = process::run("provision", command, Duration::from_secs(40 * 60));
    let (figures, reason) = read_figures(&file, outcome.failure);
    let ours = figures.get_number("ours_median_s");
    let base = figures.get_number("baseline_median_s");
    let accel = figures.get_text("accelerator").unwrap_or("unknown accelerator").to_owned();
    let note = missing(&[ours, base], reason.as_deref())
        .unwrap_or_else(|| format!("tiny-linux guest under {accel}, median of {runs} runs per side"));
    vec![row.ours(ours).baseline(BARE_QEMU, base).note(note)]
}

/// Jobs through the engine with a null hypervisor and executor: in-process against a bare
/// tokio loop, and through RabbitMQ against a bare lapin loop with the same durability.
fn queue(context: &Context) -> Vec<Row> {
    let jobs = if context.quick { 2_000 } else { 5_000 };
    let url = std::env::var("SOLSTICE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/solstice-test".to_owned());
    let unreachable = match amqp_authority(&url) {
        Some(authority) if reachable(&authority) => None,
        Some(authority) => Some(format!(
            "RabbitMQ is not reachable at {authority} (start it with `eval \"$(.ci/services.sh)\"`, as scripts/bench does)"
        )),
        None => Some(format!("cannot tell host and port from the AMQP URL in SOLSTICE_TEST_AMQP_URL ({})", redact(&url))),
    };
    let file = context.figures.join("queue_bench.json");
    let mut command = Command::new(context.executable(Suite::Queue.target()));
    command.args(["--jobs", &jobs.to_string(), "--amqp-url", &url, "--json"]).arg(&file);
    // Without a broker the in-process rows are still measured; the program then fails at
    // the broker and the RabbitMQ rows say why.
    let outcome = process::run("queue", command, Duration::from_secs(30 * 60));
    let (figures, failure) = read_figures(&file, outcome.failure);
    let rabbit_reason = unreachable.or(failure.clone());
    let number = |name: &str| figures.get_number(name);
    let (memory, bare_memory) = (number("in_process_jobs_per_s"), number("bare_in_process_jobs_per_s"));
    let (rabbit, bare, bare_same) =
        (number("rabbitmq_jobs_per_s"), number("bare_lapin_jobs_per_s"), number("bare_lapin_same_messages_jobs_per_s"));
    let per_job = number("messages_per_job").map_or_else(|| "as many messages".to_owned(), |m| format!("{m:.0} messages"));
    let conditions = format!("{} jobs, 64 at once", thousands(jobs as f64));
    vec![
        with_note(
            Row::new("queue: jobs through the engine, in-process", Unit::JobsPerSecond)
                .ours(memory)
                .baseline("a bare tokio loop: a task per job sending its events over a channel, 64 at once", bare_memory)
                .goal(Goal::AtLeast(5_000.0)),
            missing(&[memory, bare_memory], failure.as_deref()).or(Some(conditions.clone())),
        ),
        with_note(
            Row::new("queue: jobs through the engine, RabbitMQ", Unit::JobsPerSecond)
                .ours(rabbit)
                .baseline("a bare lapin loop, persistent and confirmed, 1 message per job", bare)
                .goal(Goal::AtLeast(1_000.0))
                .goal(Goal::RatioAtMost(2.0)),
            missing(&[rabbit, bare], rabbit_reason.as_deref()).or(Some(conditions.clone())),
        ),
        with_note(
            Row::new("queue: RabbitMQ, same messages per job", Unit::JobsPerSecond)
                .ours(rabbit)
                .baseline(format!("the same bare lapin loop moving {per_job} per job, as the RabbitMQ run did"), bare_same),
            missing(&[rabbit, bare_same], rabbit_reason.as_deref()).or(Some(conditions)),
        ),
    ]
}

/// The figures a program wrote, and the reason to give for missing ones: its failure, or
/// that it wrote no figures file at all.
fn read_figures(file: &Path, failure: Option<String>) -> (Figures, Option<String>) {
    match Figures::read(file) {
        Ok(figures) => (figures, failure),
        Err(e) => (Figures::default(), Some(failure.unwrap_or_else(|| format!("{e}")))),
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

fn reachable(authority: &str) -> bool {
    let Ok(addresses) = authority.to_socket_addrs() else { return false };
    addresses.into_iter().any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(3)).is_ok())
}

/// `host:port` of an `amqp://` or `amqps://` URL (port 5672 or 5671 when not given).
fn amqp_authority(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let default_port = match scheme {
        "amqp" => 5672,
        "amqps" => 5671,
        _ => return None,
    };
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.is_empty() {
        return None;
    }
    // A port is what follows the last colon outside an IPv6 literal's brackets.
    let has_port = host_port.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']') && p.parse::<u16>().is_ok());
    Some(if has_port { host_port.to_owned() } else { format!("{host_port}:{default_port}") })
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, _)), Some((_, host))) => format!("{scheme}://***@{host}"),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_amqp_authority_defaults_the_port_and_drops_the_credentials() {
        assert_eq!(amqp_authority("amqp://guest:guest@127.0.0.1:5672/solstice-test").as_deref(), Some("127.0.0.1:5672"));
        assert_eq!(amqp_authority("amqp://rabbit.internal/%2f").as_deref(), Some("rabbit.internal:5672"));
        assert_eq!(amqp_authority("amqps://u:p@mq.example:5999").as_deref(), Some("mq.example:5999"));
        assert_eq!(amqp_authority("amqps://mq.example?heartbeat=10").as_deref(), Some("mq.example:5671"));
        assert_eq!(amqp_authority("amqp://[::1]/v").as_deref(), Some("[::1]:5672"));
        assert_eq!(amqp_authority("amqp://[::1]:5673/v").as_deref(), Some("[::1]:5673"));
        assert_eq!(amqp_authority("memory"), None);
        assert_eq!(amqp_authority("http://x:1"), None);
    }

    #[test]
    fn a_redacted_url_keeps_the_host_not_the_password() {
        assert_eq!(redact("amqp://guest:s3cret@mq:5672/v"), "amqp://***@mq:5672/v");
        assert_eq!(redact("amqp://mq/v"), "amqp://mq/v");
    }

    #[test]
    fn a_row_with_every_figure_has_no_missing_note_and_one_without_says_why() {
        assert_eq!(missing(&[Some(1.0), Some(2.0)], Some("ignored")), None);
        assert_eq!(missing(&[Some(1.0), None], Some("failed (exit status: 1): Error: x")).as_deref(), Some("not measured: failed (exit status: 1): Error: x"));
        assert_eq!(missing(&[None], None).as_deref(), Some("not measured: the benchmark did not report this figure"));
    }

    #[test]
    fn every_benchmark_builds_a_distinct_target() {
        let names: std::collections::HashSet<_> = Suite::ALL.iter().map(|s| s.target().name()).collect();
        assert_eq!(names.len(), Suite::ALL.len());
    }
}
