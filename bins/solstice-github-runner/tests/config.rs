//! The binary's configuration file goes through the shared loader: what is wrong is
//! named with its file, line and column (or its variable), and the exit status is 2
//! (the table of every Solstice CI program: 3 is a bad command line).

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
        .env_remove("SOLSTICE_CONFIG")
        .env_remove("SOLSTICE_GITHUB_DIR")
        .env_remove("SOLSTICE_QUEUE_URL")
        .env_remove("SOLSTICE_GITHUB_LABELS")
        .env("SOLSTICE_METRICS_LISTEN", "");
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
    let cases: [Case; 7] = [
        ("[github]\ndir = \".\"\n\nlables = [\"host\"]\n", &[], "error: github-runner.toml:4:1: unknown field `lables`"),
        ("capacity = \"two\"\n", &[], "error: github-runner.toml:1:12: invalid type: string \"two\""),
        ("[engine]\nenabled = false\n", &[], "error: github-runner.toml:2:11: engine.enabled: is false but queue.url is not a RabbitMQ URL"),
        (
            "[queue]\nurl = \"amqp://file\"\n",
            &[("SOLSTICE_QUEUE_URL", "rabbitmq:5672")],
            "error: environment variable SOLSTICE_QUEUE_URL: queue.url: `rabbitmq:5672` must be empty",
        ),
        ("capacity = 0\n", &[], "error: github-runner.toml:1:12: capacity: must be at least 1"),
        ("shutdown_grace = \"soon\"\n", &[], "error: github-runner.toml:1:18: `soon` is not a duration"),
        ("[forgejo]\n", &[], "[forgejo] is read by solstice-forgejo-runner and `solstice serve`, not by solstice-github-runner"),
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
    // files in the temporary directory, finds none: not registered (status 2).
    let example = include_str!("../../../docs/deploy/github-runner.toml");
    let (out, err) = run_with(example, &[]);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("github.dir: register the runner first"), "{err}");
    assert!(!err.contains("/var/lib/solstice/github"), "--dir overrides `dir`: {err}");
    // An empty queue URL in the environment means the in-process queue, so an engine
    // that is off has nobody to hand jobs to.
    let (out, err) = run_with("[engine]\nenabled = false\n[queue]\nurl = \"amqp://x\"\n", &[("SOLSTICE_QUEUE_URL", "")]);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("github-runner.toml:2:11: engine.enabled: is false but queue.url is not a RabbitMQ URL"), "{err}");
}

#[test]
fn a_bad_command_line_is_status_3_and_help_states_the_table() {
    let out = Command::new(BIN).args(["run", "--bogus"]).output().expect("run the binary");
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(BIN).arg("--help").output().expect("run the binary");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 the forge refused the runner"));
}
