//! The binary's configuration file goes through the shared loader: what is wrong is
//! named with its file, line and column (or its variable), and the exit status is 2.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_solstice-github-runner");

/// `run` with the configuration `text` and no credential files: a valid configuration
/// gets as far as reading the credentials.
fn run_with(text: &str, env: &[(&str, &str)]) -> (Output, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("github-runner.toml");
    std::fs::write(&config, text).expect("config");
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&config)
        .arg("--dir")
        .arg(dir.path())
        .arg("run")
        .env_remove("SOLSTICE_GITHUB_CONFIG")
        .env_remove("SOLSTICE_GITHUB_DIR")
        .env_remove("SOLSTICE_GITHUB_QUEUE_URL")
        .env_remove("SOLSTICE_GITHUB_LABELS")
        .env("SOLSTICE_GITHUB_METRICS_LISTEN", "");
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = cmd.output().expect("run the binary");
    let err = String::from_utf8_lossy(&out.stderr).replace(&*config.to_string_lossy(), "github-runner.toml");
    (out, err)
}

/// A configuration file, the variables set for the run, and what the error must say.
type Case = (&'static str, &'static [(&'static str, &'static str)], &'static str);

#[test]
fn a_bad_file_is_refused_at_its_line_and_column_with_status_2() {
    let cases: [Case; 5] = [
        ("dir = \".\"\n\nlables = [\"host\"]\n", &[], "error: github-runner.toml:3:1: unknown field `lables`"),
        ("capacity = \"two\"\n", &[], "error: github-runner.toml:1:12: invalid type: string \"two\""),
        ("labels = [\"host\"]\nengine = false\n", &[], "error: github-runner.toml:2:10: engine: is false but there is no queue_url"),
        (
            "queue_url = \"amqp://file\"\n",
            &[("SOLSTICE_GITHUB_QUEUE_URL", "rabbitmq:5672")],
            "error: environment variable SOLSTICE_GITHUB_QUEUE_URL: queue_url: `rabbitmq:5672` is not an amqp://",
        ),
        ("capacity = 0\n", &[], "error: github-runner.toml:1:12: capacity: must be at least 1"),
    ];
    for (text, env, expected) in cases {
        let (out, err) = run_with(text, env);
        assert_eq!(out.status.code(), Some(2), "{text:?}: {err}");
        assert!(err.contains(expected), "{text:?}: expected `{expected}` in: {err}");
    }
}

#[test]
fn a_valid_file_gets_as_far_as_the_missing_credentials() {
    // The deployment example, with `--dir` over its `dir`: the runner looks for its
    // files in the temporary directory, finds none, and fails at run time (status 1).
    let example = include_str!("../../../docs/deploy/github-runner.toml");
    let (out, err) = run_with(example, &[]);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("reading the runner's files"), "{err}");
    assert!(!err.contains("/var/lib/solstice/github"), "--dir overrides `dir`: {err}");
    // An empty queue URL in the environment means none, so `engine = false` has nothing to hand jobs to.
    let (out, err) = run_with("engine = false\nqueue_url = \"amqp://x\"\n", &[("SOLSTICE_GITHUB_QUEUE_URL", "")]);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("github-runner.toml:1:10: engine: is false but there is no queue_url"), "{err}");
}
