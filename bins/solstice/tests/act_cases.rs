//! nektos/act's test workflows as a conformance suite for `solstice run --host`.
//!
//! The workflows are vendored unchanged in `tests/act-cases/` (see its README for the act commit).
//! Each case runs in its own temporary directory through the built `solstice` binary, and its
//! outcome is compared with the one act's tests expect (`pkg/runner/runner_test.go`,
//! `pkg/runner/job_executor_test.go`), or with GitHub's where the two differ (`github_differs`).
//!
//! Cases that fail for now are listed in [`KNOWN_GAPS`] with the reason. The test fails when a
//! case outside that list fails, and when a listed case passes (so the list shrinks as features
//! land). See docs/conformance.md.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Cases expected to fail for now, each with what is missing. Remove an entry once its case
/// passes (the test says when).
const KNOWN_GAPS: &[(&str, &str)] = &[
    (
        "issue-1195",
        "the case expects `github.repository_owner` to be `nektos`, which act takes from its own checkout's git \
         remote; solstice run takes it from the `origin` remote of --repo, and the case runs in a copy with no \
         git remote, so it is empty. Passing the owner needs a flag or an event file with `repository`"
    ),
    (
        "secrets",
        "`--secret` exists (the test passes act's `.secrets` as `--secret NAME=VALUE`), but the last two steps read `env.HELLO` and `env.MULTILINE_ENV`, which act seeds from `.env` (its \
         --env-file); GitHub has no such input (the nearest is `vars`) and neither has solstice run, so this case \
         stays here until solstice run can seed the `env` context",
    ),
];

/// The cases: every act test case whose steps are only `run:` and `actions/checkout`.
const CASES: &[Case] = &[
    // pkg/runner/runner_test.go, TestRunEvent / TestRunEventHostEnvironment.
    Case::new("checkout", "push.yml", Outcome::Success),
    Case::new("commands", "push.yml", Outcome::Success),
    Case::new("defaults-run", "main.yaml", Outcome::JobFailed).github_differs(
        "act expects success, but the job `without-defaults` checks that `$SHELL` is not bash while running `sh`. \
         `$SHELL` is the login shell the runner inherits, not the step's shell (GitHub's Ubuntu runners have \
         SHELL=/bin/bash; the test sets that), so on GitHub the check fails. act disables this case in its own host \
         mode: \"this test is somewhat invalid, shell sh is not necessarily bash\" (TestRunEventHostEnvironment)",
    ),
    Case::new("env-and-path", "push.yaml", Outcome::Success),
    Case::new("environment-files", "push.yaml", Outcome::Success),
    Case::new("environment-files-parser-bug", "push.yaml", Outcome::Success),
    Case::new("evalenv", "push.yml", Outcome::Success),
    Case::new("evalmatrix", "push.yml", Outcome::Success),
    Case::new("evalmatrix-merge-array", "push.yml", Outcome::Success),
    Case::new("evalmatrix-merge-map", "push.yml", Outcome::Success),
    Case::new("evalmatrixneeds", "push.yml", Outcome::Success),
    Case::new("evalmatrixneeds2", "push.yml", Outcome::Success),
    Case::new("if-env-act", "push.yml", Outcome::JobFailed).github_differs(
        "act sets `ACT` in the env context and the case requires it; GitHub does not (its env context holds only \
         what the workflow sets: https://docs.github.com/en/actions/reference/workflows-and-actions/contexts#env-context), \
         so the step `if: ${{ !env.ACT }}` runs its `exit 1`",
    ),
    Case::new("issue-1195", "push.yml", Outcome::Success),
    Case::new("job-needs-context-contains-result", "push.yml", Outcome::Success),
    // act expects "job 'fail' failed"; GitHub skips `next`, whose ancestor failed: "If a job fails
    // or is skipped, all jobs that need it are skipped unless the jobs use a conditional expression
    // that causes the job to continue" (https://docs.github.com/en/actions/reference/workflows-and-actions/workflow-syntax#jobsjob_idneeds).
    Case::new("job-status-check", "push.yml", Outcome::JobFailed).must_not_print("│ should never reach here"),
    Case::new("matrix", "push.yml", Outcome::Success),
    Case::new("matrix-exitcode", "push.yml", Outcome::JobFailed),
    Case::new("matrix-include-exclude", "push.yml", Outcome::Success),
    Case::new("nix-prepend-path", "push.yml", Outcome::Success),
    Case::new("outputs", "push.yml", Outcome::Success),
    // act's default actor is "nektos/act" (pkg/runner/run_context.go); the test passes it with --actor.
    Case::new("runs-on", "push.yml", Outcome::Success),
    Case::new("set-env-new-env-file-per-step", "push.yml", Outcome::Success),
    Case::new("steps-context/conclusion", "push.yml", Outcome::Success),
    Case::new("steps-context/outcome", "push.yml", Outcome::Success),
    Case::new("workdir", "push.yml", Outcome::JobFailed)
        .solstice_differs(
            "act and GitHub run steps with `working-directory: /tmp` or `/root`; on the host (`--host`, as this \
             suite runs), Solstice CI refuses a working directory outside the job's workspace, runner.temp and \
             runner.tool_cache, because a directory made there outlives the job (issue 16, item 8; in a VM any \
             directory is allowed, as on GitHub), so the \
             jobs `workdir` (defaults to /root), `top-level-workdir` (/tmp) and `workdir-from-matrix` fail",
        )
        .must_print_one_of(&["Working directory '/root' is not under '"])
        .needs_root_dir(),
    Case::new("workflow_call_inputs", "workflow_call_inputs.yml", Outcome::Refused)
        .args(&["--eventpath", "event.json"])
        .solstice_differs(
            "act runs it, but its `workflow_call` inputs `required` and `with_default` have no `type`, which \
             GitHub's workflow schema requires for `on.workflow_call.inputs` (GitHub refuses the file: \
             \"Required property is missing: type\")",
        )
        .must_print_one_of(&["Required property is missing: type"]),
    Case::new("workflow_dispatch", "workflow_dispatch.yml", Outcome::Success).args(&["--eventpath", "event.json"]),
    Case::new("workflow_dispatch-scalar", "workflow_dispatch.yml", Outcome::Success),
    Case::new("workflow_dispatch_no_inputs_mapping", "workflow_dispatch.yml", Outcome::Success),
    // pkg/model/testdata/strategy, run by TestRunEvent.
    Case::new("strategy", "push.yml", Outcome::Success),
    // TestRunEventSecrets: act passes `.secrets` as secrets and `.env` as the env context.
    Case::new("secrets", "push.yml", Outcome::Success).secrets_file(".secrets"),
    // TestRunActionInputs: act passes the input SOME_INPUT=input to a workflow_dispatch run.
    Case::new("input-from-cli", "input.yml", Outcome::Refused)
        .args(&["--input", "SOME_INPUT=input"])
        .must_print_one_of(&["SOME_INPUT", "SOME_VALUE", "`NAME`", "'NAME'", "\"NAME\""])
        .github_differs(
            "act expects success, but the workflow's inputs NAME and SOME_VALUE are required and SOME_INPUT is not \
             declared; GitHub refuses such a dispatch (HTTP 422 \"Unexpected inputs provided: [...]\", \
             https://docs.github.com/en/rest/actions/workflows#create-a-workflow-dispatch-event)",
        ),
    // TestRunMatrixWithUserDefinedInclusions: act narrows the matrix with its --matrix option.
    Case::new("matrix-with-user-inclusions", "push.yml", Outcome::JobFailed).github_differs(
        "act expects success because its test keeps only the combinations node 8/8.x and os ubuntu-18.04 (act's \
         --matrix option); GitHub has no such option and runs every combination, and all but those fail their grep",
    ),
    // pkg/runner/job_executor_test.go, TestJobExecutor: GitHub rejects these workflows too.
    Case::new("uses-and-run-in-one-step", "push.yml", Outcome::Refused),
    Case::new("uses-github-empty", "push.yml", Outcome::Refused),
    Case::new("uses-github-noref", "push.yml", Outcome::Refused),
    Case::new("uses-github-root", "push.yml", Outcome::Success),
    Case::new("job-nil-step", "push.yml", Outcome::Refused),
];

/// How `solstice run` ended, by its exit code (the table in `solstice --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Exit 0: every job succeeded.
    Success,
    /// Exit 1: a job failed.
    JobFailed,
    /// Exit 2 or 3: refused before any job ran (an invalid workflow, bad arguments).
    Refused,
}

impl Outcome {
    fn of(code: Option<i32>) -> Option<Outcome> {
        match code {
            Some(0) => Some(Outcome::Success),
            Some(1) => Some(Outcome::JobFailed),
            Some(2 | 3) => Some(Outcome::Refused),
            _ => None,
        }
    }
}

/// One act test case and what a conforming run does with it.
#[derive(Debug)]
struct Case {
    /// The directory under `tests/act-cases/`.
    dir: &'static str,
    /// The workflow file in it.
    workflow: &'static str,
    /// What GitHub does; the same as act expects unless `github_differs` says why not.
    expected: Outcome,
    /// Why act's expectation differs from GitHub's behaviour, which the suite follows.
    github_differs: Option<&'static str>,
    /// Why Solstice CI deliberately differs from both act and GitHub here.
    solstice_differs: Option<&'static str>,
    /// Arguments after the workflow; relative paths are in the case's directory (the cwd).
    args: &'static [&'static str],
    /// A dotenv file in the case whose entries are passed as `--secret NAME=VALUE`.
    secrets_file: Option<&'static str>,
    /// Text the output must not contain.
    must_not_print: Option<&'static str>,
    /// The output (stdout and stderr) must contain one of these, when not empty.
    must_print_one_of: &'static [&'static str],
    /// The case changes into `/root`, so it needs that directory to be accessible.
    needs_root_dir: bool,
}

impl Case {
    const fn new(dir: &'static str, workflow: &'static str, expected: Outcome) -> Case {
        Case {
            dir,
            workflow,
            expected,
            github_differs: None,
            solstice_differs: None,
            args: &[],
            secrets_file: None,
            must_not_print: None,
            must_print_one_of: &[],
            needs_root_dir: false,
        }
    }

    const fn github_differs(self, why: &'static str) -> Case {
        Case { github_differs: Some(why), ..self }
    }

    const fn solstice_differs(self, why: &'static str) -> Case {
        Case { solstice_differs: Some(why), ..self }
    }

    const fn args(self, args: &'static [&'static str]) -> Case {
        Case { args, ..self }
    }

    const fn secrets_file(self, file: &'static str) -> Case {
        Case { secrets_file: Some(file), ..self }
    }

    const fn must_not_print(self, text: &'static str) -> Case {
        Case { must_not_print: Some(text), ..self }
    }

    const fn must_print_one_of(self, texts: &'static [&'static str]) -> Case {
        Case { must_print_one_of: texts, ..self }
    }

    const fn needs_root_dir(self) -> Case {
        Case { needs_root_dir: true, ..self }
    }
}

/// What one run printed and how it ended.
struct Run {
    code: Option<i32>,
    output: String,
}

/// A case that takes longer than this is killed and counts as failed.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/act-cases")
}

/// Copies the files of a case (not its subdirectories) into `to`.
fn copy_case(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_file() {
            let name = path.file_name().expect("file name");
            std::fs::copy(&path, to.join(name)).unwrap_or_else(|e| panic!("copy {}: {e}", path.display()));
        }
    }
}

/// `NAME=VALUE` lines as act reads them (godotenv): a double-quoted value has its quotes removed
/// and `\n` turned into a newline; other values are taken as they are.
fn dotenv_entries(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| {
            let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(quoted) => quoted.replace("\\n", "\n"),
                None => value.to_owned(),
            };
            format!("{}={value}", name.trim())
        })
        .collect()
}

/// Runs one case in a fresh directory through `solstice run --host`.
fn run_case(case: &Case) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_case(&cases_dir().join(case.dir), dir.path());
    let mut command = Command::new(env!("CARGO_BIN_EXE_solstice"));
    // act's default actor is "nektos/act" (pkg/runner/run_context.go).
    command.arg("run").arg("--host").arg(dir.path().join(case.workflow)).arg("--repo").arg(dir.path()).args(["--actor", "nektos/act"]);
    command.args(case.args);
    if let Some(file) = case.secrets_file {
        let text = std::fs::read_to_string(dir.path().join(file)).expect("read the secrets file");
        for entry in dotenv_entries(&text) {
            command.arg("--secret").arg(entry);
        }
    }
    // GitHub's Ubuntu runners log in with bash as the login shell; `ACT` must not leak in from outside.
    command.env("SHELL", "/bin/bash").env_remove("ACT");
    command.current_dir(dir.path()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("run solstice");
    // Read both pipes on threads so a chatty case cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait for solstice") {
            break status.code();
        }
        if started.elapsed() > CASE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = format!(
        "{}\n--- stderr ---\n{}",
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader")
    );
    Run { code, output }
}

/// Why a run does not conform to the case, or `None` when it does.
fn mismatch(case: &Case, run: &Run) -> Option<String> {
    let outcome = Outcome::of(run.code);
    if outcome != Some(case.expected) {
        return Some(format!("expected {:?}, got exit code {:?}", case.expected, run.code));
    }
    if let Some(text) = case.must_not_print.filter(|text| run.output.contains(text)) {
        return Some(format!("printed `{text}`"));
    }
    if !case.must_print_one_of.is_empty() && !case.must_print_one_of.iter().any(|text| run.output.contains(text)) {
        return Some(format!("printed none of {:?}", case.must_print_one_of));
    }
    None
}

#[test]
fn act_test_workflows_run_as_act_and_github_expect() {
    for (name, _) in KNOWN_GAPS {
        assert!(CASES.iter().any(|c| c.dir == *name), "KNOWN_GAPS names `{name}`, which is not a case");
    }
    let root_dir_accessible = std::fs::read_dir("/root").is_ok();
    let (mut ran, mut passed, mut gaps, mut skipped) = (0, 0, Vec::new(), Vec::new());
    let mut problems = Vec::new();
    for case in CASES {
        if case.needs_root_dir && !root_dir_accessible {
            skipped.push(case.dir);
            continue;
        }
        let run = run_case(case);
        ran += 1;
        let gap = KNOWN_GAPS.iter().find(|(name, _)| *name == case.dir).map(|(_, why)| *why);
        match (mismatch(case, &run), gap) {
            (None, None) => passed += 1,
            (Some(_), Some(_)) => gaps.push(case.dir),
            (None, Some(_)) => problems.push(format!(
                "`{}` now passes: remove it from KNOWN_GAPS (and update docs/conformance.md)",
                case.dir
            )),
            (Some(why), None) => {
                let note = case
                    .github_differs
                    .map(|d| format!("\n(GitHub differs from act here: {d})"))
                    .or(case.solstice_differs.map(|d| format!("\n(Solstice CI differs from act and GitHub here: {d})")))
                    .unwrap_or_default();
                problems.push(format!("`{}` fails: {why}{note}\n{}", case.dir, run.output));
            }
        }
    }
    let skipped = if skipped.is_empty() {
        String::new()
    } else {
        format!(", {} skipped as /root is not accessible ({})", skipped.len(), skipped.join(", "))
    };
    println!("act cases: {ran} run, {passed} passed, {} known gaps ({}){skipped}", gaps.len(), gaps.join(", "));
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn dotenv_values_are_read_as_act_reads_them() {
    let entries = dotenv_entries("A=plain\nB=\"x\\ny\"\n\n# note\nJSON={\"foo\": \"bar\"}\n");
    assert_eq!(entries, ["A=plain", "B=x\ny", "JSON={\"foo\": \"bar\"}"]);
}
