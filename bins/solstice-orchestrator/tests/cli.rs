//! The binary's command line and configuration, without a broker: the exit codes of
//! the table every Solstice CI program shares.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_solstice-orchestrator");

fn orchestrator(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).env_remove("SOLSTICE_CONFIG").env_remove("SOLSTICE_ENGINE_HOST_LABELS");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run the binary")
}

#[test]
fn usage_config_and_help_have_their_exit_codes() {
    let out = orchestrator(&["--no-such-flag"], &[]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let help = orchestrator(&["--help"], &[]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("5 a service or operation failed at run time"));

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("orchestrator.toml");
    std::fs::write(&config, "[engine]\nhost_labels = [\"host\"]\n\n[forgejo]\n").expect("write");
    let out = orchestrator(&["--config", &config.to_string_lossy(), "check-config"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(":4:1: forgejo: [forgejo] is read by solstice-forgejo-runner"), "{stderr}");

    let out = orchestrator(&["check-config"], &[("SOLSTICE_ENGINE_CLAIM_LEASE", "soon")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("environment variable SOLSTICE_ENGINE_CLAIM_LEASE: `soon` is not a duration"), "{stderr}");
}

#[test]
fn check_config_prints_the_resolved_configuration() {
    let out = orchestrator(
        &["check-config"],
        &[("SOLSTICE_ENGINE_HOST_LABELS", "host,linux"), ("SOLSTICE_SHUTDOWN_GRACE", "90"), ("HOSTNAME", "ci-9")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("name = \"ci-9\""), "{stdout}");
    assert!(stdout.contains("shutdown_grace = \"1m30s\""), "{stdout}");
    assert!(stdout.contains("host_labels = [\"host\", \"linux\"]") || stdout.contains("host_labels = [\n"), "{stdout}");
    assert!(stdout.contains("listen = \"127.0.0.1:9464\""), "{stdout}");
}
