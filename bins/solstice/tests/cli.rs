//! `solstice run` and `solstice workflow` end to end, through the real binary.

use std::process::{Command, Output};

fn solstice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_solstice")).args(args).output().expect("run solstice")
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write workflow");
    path.to_string_lossy().into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_sample_workflow_passes_on_the_host_with_streamed_steps() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/workflows/hello.yml");
    let out = solstice(&["run", "--host", sample]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{text}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in ["▶ Greet", "│ Hello from Linux", "│ the answer is 42", "✓ Use it: success", "✓ job success"] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}

#[test]
fn a_failing_workflow_exits_non_zero_and_shows_what_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = write(
        &dir,
        "fail.yml",
        "on: push\njobs:\n  test:\n    runs-on: host\n    steps:\n      - run: echo before\n      - name: Break\n        run: exit 7\n      - name: Report\n        if: failure()\n        run: echo reporting the failure\n      - name: Never\n        run: echo never\n  after:\n    needs: test\n    runs-on: host\n    steps:\n      - run: echo should be skipped\n",
    );
    let out = solstice(&["run", &wf]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("exit code 7"), "{text}");
    assert!(text.contains("│ reporting the failure"), "{text}");
    assert!(!text.contains("│ never"), "{text}");
    assert!(!text.contains("should be skipped"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not succeed"));
}

#[test]
fn an_invalid_workflow_names_the_line_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A malformed expression is invalid input. (An unsupported action is not: it fails its
    // step when, and only if, the step runs.)
    let wf = write(&dir, "bad.yml", "on: push\njobs:\n  test:\n    runs-on: host\n    steps:\n      - run: echo ${{ github.sha ) }}\n");
    let out = solstice(&["run", &wf]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yml") && err.contains("Line: 6, Col: 14"), "no file, line and column in: {err}");
}

#[test]
fn a_job_for_an_unserved_label_fails_with_advice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = write(&dir, "vm.yml", "on: push\njobs:\n  t:\n    runs-on: omnios-r151056\n    steps:\n      - run: echo hi\n");
    let out = solstice(&["run", &wf]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("--host"), "{}", stdout(&out));
}

#[test]
fn workflow_plan_prints_json_with_matrix_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = write(
        &dir,
        "m.yml",
        "on: push\njobs:\n  build:\n    runs-on: ${{ matrix.os }}\n    strategy:\n      matrix:\n        os: [omnios, openindiana]\n    steps:\n      - run: make\n",
    );
    let out = solstice(&["workflow", "plan", &wf]);
    assert_eq!(out.status.code(), Some(0));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let jobs = plan["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["runs_on"], serde_json::json!(["omnios"]));
    assert_eq!(jobs[1]["matrix"]["os"], "openindiana");
    assert_eq!(jobs[0]["steps"][0]["kind"], "run");
}

#[test]
fn workflow_eval_prints_kind_and_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = write(&dir, "ctx.json", r#"{"github": {"ref": "refs/heads/main"}}"#);
    let out = solstice(&["workflow", "eval", "format('{0}!', github.ref)", "--contexts", &ctx]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(value, serde_json::json!({"kind": "String", "value": "refs/heads/main!"}));
    let bad = solstice(&["workflow", "eval", "1 +"]);
    assert_ne!(bad.status.code(), Some(0));
    assert!(!bad.stderr.is_empty());
}

#[test]
fn a_kdl_workflow_runs_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = write(
        &dir,
        "workflow.kdl",
        "name \"kdl\"\non \"push\"\njob \"hello\" {\n    runs-on \"host\"\n    steps {\n        run \"echo hello from kdl\" name=\"Greet\"\n    }\n}\n",
    );
    let out = solstice(&["run", &wf]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("│ hello from kdl"), "{text}");
}

/// The README's demo: the sample workflow in the tiny QEMU guest. Never skipped: without
/// QEMU or the guest's Debian packages it fails and says what to install.
#[test]
fn the_sample_workflow_runs_in_a_fresh_vm() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/workflows/hello.yml");
    let out = solstice(&["run", sample]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{text}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in ["answered SSH after", "│ Hello from Linux on vm-", "│ the answer is 42", "destroyed", "✓ job success"] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    assert!(!text.contains("│ Hello from Linux on vm\n"), "ran on the host, not in a VM:\n{text}");
}

/// `runner.os`/`runner.arch` and `RUNNER_*` describe the machine the job runs on: with
/// `--host`, this host's own values in GitHub's spelling.
#[test]
fn a_host_job_reports_the_hosts_os_and_arch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = write(
        &dir,
        "os.yml",
        "on: push\njobs:\n  os:\n    runs-on: anything\n    steps:\n      - run: echo \"os=${{ runner.os }}/${{ runner.arch }} env=$RUNNER_OS/$RUNNER_ARCH\"\n",
    );
    let out = solstice(&["run", "--host", &wf]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let (os, arch) = (solstice_core::RunnerInfo::host_os(), solstice_core::RunnerInfo::host_arch());
    assert!(text.contains(&format!("│ os={os}/{arch} env={os}/{arch}")), "{text}");
}

/// In a VM, `runner.os`/`runner.arch` and `RUNNER_*` are what the image catalog declares
/// (here FreeBSD/ARM64 for the tiny Linux guest), and `if: runner.os` follows them.
#[test]
fn a_vm_job_reports_the_os_and_arch_its_catalog_declares() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = solstice_e2e::catalog_declaring_freebsd(dir.path(), "fake-bsd");
    let wf = write(
        &dir,
        "os.yml",
        "on: push\njobs:\n  os:\n    runs-on: fake-bsd\n    steps:\n      - run: echo \"os=${{ runner.os }}/${{ runner.arch }} env=$RUNNER_OS/$RUNNER_ARCH kernel=$(uname -s)\"\n      - if: runner.os == 'Linux'\n        run: echo linux-only-step\n      - run: test -d \"$RUNNER_TEMP\" && test -d \"$RUNNER_TOOL_CACHE\" && echo \"dirs-ok $RUNNER_NAME\"\n",
    );
    let out = solstice(&["run", "--catalog", &catalog.to_string_lossy(), &wf]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("│ os=FreeBSD/ARM64 env=FreeBSD/ARM64 kernel=Linux"), "{text}");
    assert!(!text.contains("│ linux-only-step"), "{text}");
    assert!(text.contains("│ dirs-ok vm-"), "{text}");
}

#[test]
fn config_check_accepts_the_examples_and_names_the_kind() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    for (file, kind) in [
        ("docs/deploy/solstice.toml", "`solstice serve` configuration"),
        ("bins/solstice-orchestrator/orchestrator.example.toml", "`solstice-orchestrator` configuration"),
        ("docs/deploy/forgejo-runner.toml", "`solstice-forgejo-runner` configuration"),
        ("docs/deploy/github-runner.toml", "`solstice-github-runner` configuration"),
    ] {
        let path = format!("{root}/{file}");
        let out = solstice(&["config", "check", &path]);
        assert_eq!(out.status.code(), Some(0), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout(&out).contains(kind), "{file}: {}", stdout(&out));
    }
}

/// Each `(file name, text, expected message)`: `config check --kind KIND` exits 2 and says it.
fn assert_config_check_refuses(dir: &tempfile::TempDir, kind: &str, cases: &[(&str, &str, &str)]) {
    for &(name, text, expected) in cases {
        let path = write(dir, name, text);
        let out = solstice(&["config", "check", "--kind", kind, &path]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(expected), "{name}: expected `{expected}` in: {err}");
    }
}

#[test]
fn config_check_says_what_is_wrong_and_where_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("typo.toml", "capacity = 2\n\n[forgejo]\ncapacty = 3\n", "typo.toml:4:1: unknown field `capacty`"),
        ("type.toml", "capacity = \"two\"\n[forgejo]\n", "type.toml:1:12: invalid type: string \"two\""),
        ("syntax.toml", "[forgejo\nfile = \"x\"\n", "syntax.toml:1:9: "),
        ("label.toml", "[forgejo]\nlabels = [\"omnios:vmm\"]\n", "label.toml:2:10: forgejo.labels: label `omnios:vmm` has unknown scheme"),
        ("listen.toml", "[forgejo]\n[metrics]\nlisten = \"anywhere\"\n", "listen.toml:3:10: metrics.listen: `anywhere` is not an address"),
        ("nothing.toml", "capacity = 2\n", "serve needs a [forgejo] or a [github] section"),
        ("grace.toml", "shutdown_grace = \"soon\"\n[forgejo]\n", "grace.toml:1:18: `soon` is not a duration"),
        ("debug.toml", "[forgejo]\n\n[debug_ssh]\nlisten = \"ci.example.org\"\n", "debug.toml:4:10: debug_ssh.listen: `ci.example.org` is not an IP address"),
        ("ports.toml", "[forgejo]\n[debug_ssh]\nlisten = \"127.0.0.1\"\nfirst_port = 3000\nlast_port = 2999\n", "ports.toml:5:13: debug_ssh.last_port: "),
        ("debugkey.toml", "[forgejo]\n[debug_ssh]\nport = 22\n", "debugkey.toml:3:1: unknown field `port`"),
    ];
    assert_config_check_refuses(&dir, "serve", &cases);
    let cases = [
        ("orch.toml", "capacity = 0\n[engine]\nhost_labels = [\"h\"]\n", "orch.toml:1:12: capacity: must be at least 1"),
        ("forge.toml", "[engine]\nhost_labels = [\"h\"]\n[forgejo]\n", "[forgejo] is read by solstice-forgejo-runner and `solstice serve`, not by solstice-orchestrator"),
        ("old.toml", "host_labels = [\"h\"]\n", "old.toml:1:1: unknown field `host_labels`"),
    ];
    assert_config_check_refuses(&dir, "orchestrator", &cases);
    let missing = solstice(&["config", "check", &dir.path().join("absent.toml").to_string_lossy()]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("could not read"));
    // A bad command line is a usage error, and --help states the table.
    assert_eq!(solstice(&["config", "check", "--kind", "nonsense", "x.toml"]).status.code(), Some(3));
    assert_eq!(solstice(&["frobnicate"]).status.code(), Some(3));
    let help = solstice(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("Exit codes: 0 ok;"), "{}", stdout(&help));
}

/// GitHub runner files: guessed from their `[github]` or named with `--kind github-runner`,
/// checked with the runner's checks.
#[test]
fn config_check_checks_github_runner_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write(&dir, "scale-out.toml", "[github]\n[queue]\nurl = \"amqp://solstice@rabbitmq.internal/%2f\"\n[engine]\nenabled = false\n");
    let out = solstice(&["config", "check", &good]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("scale-out.toml: a valid `solstice-github-runner` configuration"), "{}", stdout(&out));
    let bare = write(&dir, "bare.toml", "capacity = 2\n");
    let out = solstice(&["config", "check", "--kind", "github-runner", &bare]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("`solstice-github-runner` configuration"), "{}", stdout(&out));
    let cases = [
        ("typo.toml", "[github]\ndir = \"/srv/gh\"\ncapacty = 2\n", "typo.toml:3:1: unknown field `capacty`"),
        ("type.toml", "[github]\nlabels = \"host\"\n", "type.toml:2:10: invalid type: string \"host\", expected a sequence"),
        ("labels.toml", "[github]\nlabels = []\n", "labels.toml:2:10: github.labels: is empty"),
        ("queue.toml", "[queue]\nurl = \"rabbitmq.internal:5672\"\n", "queue.toml:2:7: queue.url: `rabbitmq.internal:5672` must be empty"),
        ("engine.toml", "[engine]\nenabled = false\n", "engine.toml:2:11: engine.enabled: is false but queue.url is not a RabbitMQ URL"),
    ];
    assert_config_check_refuses(&dir, "github-runner", &cases);
}

/// `solstice.toml` takes `[debug_ssh]`, with durations written with units.
#[test]
fn config_check_accepts_debug_ssh_in_solstice_toml() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write(
        &dir,
        "debug.toml",
        "[forgejo]\n\n[debug_ssh]\nlisten = \"0.0.0.0\"\nhost = \"ci.example.org\"\nfirst_port = 2200\nlast_port = 2209\nttl = \"10m\"\n",
    );
    let out = solstice(&["config", "check", "--kind", "serve", &good]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("`solstice serve` configuration"), "{}", stdout(&out));
    // Bad values are placed: see config_check_says_what_is_wrong_and_where_and_exits_2.
}

/// A git repository with one commit on branch `topic` and an `origin` remote, holding
/// the workflow `wf.yml`.
fn git_repo(workflow: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let git = |args: &[&str]| {
        let out = Command::new("git").arg("-C").arg(dir.path()).args(args).output().expect("git runs");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["init", "-q", "-b", "topic"]);
    git(&["config", "user.name", "Committer Name"]);
    git(&["config", "user.email", "c@example.org"]);
    git(&["remote", "add", "origin", "git@github.com:octo-org/hello-world.git"]);
    let wf = write(&dir, "wf.yml", workflow);
    git(&["add", "wf.yml"]);
    git(&["commit", "-q", "-m", "init"]);
    (dir, wf)
}

// The fields and variables GitHub documents for the `github` context and the default
// environment (docs.github.com/actions/writing-workflows/choosing-what-your-workflow-does/
// accessing-contextual-information-about-workflow-runs#github-context).
#[test]
fn a_local_run_gets_the_github_context_from_the_checkout_and_the_flags() {
    let workflow = r#"on:
  push:
  workflow_dispatch:
    inputs:
      level:
        type: choice
        options: [low, high]
jobs:
  show:
    runs-on: host
    steps:
      - run: |
          echo "sha=${{ github.sha }}"
          echo "ref=${{ github.ref }} name=${{ github.ref_name }}"
          echo "repo=${{ github.repository }} owner=${{ github.repository_owner }}"
          echo "actor=${{ github.actor }} event=${{ github.event_name }} job=${{ github.job }}"
          echo "payload=${{ github.event.sender.login }} input=${{ inputs.level }} var=${{ vars.REGION }}"
          echo "secret=${{ secrets.TOKEN }} other=${{ secrets.FROM_FILE }}"
"#;
    let (dir, wf) = git_repo(workflow);
    let head = Command::new("git").arg("-C").arg(dir.path()).args(["rev-parse", "HEAD"]).output().expect("git");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    let event = write(&dir, "event.json", r#"{"sender": {"login": "payload-user"}}"#);
    let secrets = write(&dir, "secrets.env", "# secrets\nFROM_FILE=\"file value\"\nTOKEN=overridden\n");
    let out = solstice(&[
        "run", "--host", &wf, "--event", "workflow_dispatch", "-e", &event, "--actor", "someone",
        "--input", "level=high", "--var", "REGION=eu", "--secrets-file", &secrets, "-s", "TOKEN=t0ps3cret",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        format!("sha={head}"),
        "ref=refs/heads/topic name=topic".to_owned(),
        "repo=octo-org/hello-world owner=octo-org".to_owned(),
        "actor=someone event=workflow_dispatch job=show".to_owned(),
        "payload=payload-user input=high var=eu".to_owned(),
        "secret=*** other=***".to_owned(),
    ] {
        assert!(text.contains(&expected), "missing `{expected}` in:\n{text}");
    }
    assert!(!text.contains("t0ps3cret") && !text.contains("file value"), "a secret was printed:\n{text}");

    // Without --actor, the checkout's git user; without --event, push.
    let out = solstice(&["run", "--host", &wf]);
    let text = stdout(&out);
    assert!(text.contains("actor=Committer Name event=push"), "{text}");
}

#[test]
fn job_and_matrix_flags_choose_what_runs() {
    let workflow = r#"on: push
jobs:
  prepare:
    runs-on: host
    outputs:
      list: ${{ steps.l.outputs.list }}
    steps:
      - id: l
        run: echo 'list=["a","b","c"]' >> "$GITHUB_OUTPUT"
  other:
    runs-on: host
    steps:
      - run: echo other ran
  build:
    needs: prepare
    runs-on: host
    strategy:
      matrix:
        letter: ${{ fromJSON(needs.prepare.outputs.list) }}
    steps:
      - run: echo "built ${{ matrix.letter }}"
"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = write(&dir, "wf.yml", workflow);
    let out = solstice(&["run", "--host", &wf, "-j", "build", "--matrix", "letter:b", "--matrix", "letter:c"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("│ built b") && text.contains("│ built c"), "{text}");
    assert!(!text.contains("built a") && !text.contains("other ran"), "{text}");

    let out = solstice(&["run", "--host", &wf, "--job", "missing"]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
}

// GitHub's docs (`on.workflow_dispatch.inputs`; the `inputs` context) and REST API ("Create a
// workflow dispatch event", HTTP 422 "Unexpected inputs provided"): `inputs` keeps the
// declared types, with defaults filled in, while `github.event.inputs` holds strings; an
// undeclared input, a missing required one or a `choice` outside its options is refused,
// naming the input.
#[test]
fn dispatch_inputs_are_typed_defaulted_and_checked_against_the_declarations() {
    let workflow = r#"on:
  workflow_dispatch:
    inputs:
      name:
        required: true
      debug:
        type: boolean
      retries:
        type: number
        default: 2
      level:
        type: choice
        options: [low, high]
        default: low
jobs:
  show:
    runs-on: host
    steps:
      - run: |
          echo "name=${{ inputs.name }} debug=${{ inputs.debug }} retries=${{ inputs.retries }} level=${{ inputs.level }}"
          echo "typed=${{ inputs.debug == true }} event=${{ github.event.inputs.debug == 'true' }} name=${{ github.event_name }}"
"#;
    let (dir, wf) = git_repo(workflow);
    let _keep = &dir;
    let out = solstice(&["run", "--host", &wf, "--input", "name=n", "--input", "debug=true"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("name=n debug=true retries=2 level=low"), "{text}");
    assert!(text.contains("typed=true event=true name=workflow_dispatch"), "without --event, a dispatch-only workflow is dispatched:\n{text}");
    for (args, named) in [
        (vec!["--input", "name=n", "--input", "colour=red"], "colour"),
        (vec!["--input", "debug=false"], "'name'"),
        (vec!["--input", "name=n", "--input", "level=mid"], "'level'"),
        (vec!["--input", "name=n", "--input", "debug=maybe"], "'debug'"),
    ] {
        let mut command = vec!["run", "--host", wf.as_str()];
        command.extend(args.iter().copied());
        let out = solstice(&command);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(3), "{args:?} must be refused (a usage error):\n{}\n{stderr}", stdout(&out));
        assert!(stderr.contains(named), "{args:?}: the error names {named}:\n{stderr}");
    }
}


// With --forgejo, a local run follows Forgejo's runner where it differs from GitHub's:
// its jobs get `GITEA_ACTIONS` and `FORGEJO_ACTIONS` (forgejo/runner `NewRunner`), the
// instance's API is under `/api/v1` (Forgejo's API docs), and Forgejo documents `forge`
// as another name of the `github` context. Without it, none of the Forgejo variables.
#[test]
fn forgejo_mode_sets_forgejo_runner_variables_and_urls() {
    let workflow = r#"on: push
jobs:
  show:
    runs-on: host
    steps:
      - run: |
          echo "gitea=${GITEA_ACTIONS:-unset} forgejo=${FORGEJO_ACTIONS:-unset}"
          echo "server=${{ github.server_url }} api=${{ github.api_url }} env-server=$GITHUB_SERVER_URL"
          echo "forge=${{ forge.repository }}"
"#;
    let (dir, wf) = git_repo(workflow);
    let git = |args: &[&str]| Command::new("git").arg("-C").arg(dir.path()).args(args).output().expect("git");
    git(&["remote", "set-url", "origin", "git@code.example:team/tool.git"]);
    let out = solstice(&["run", "--host", "--forgejo", &wf]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        "gitea=true forgejo=true",
        "server=https://code.example api=https://code.example/api/v1 env-server=https://code.example",
        "forge=team/tool",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    let out = solstice(&["run", "--host", &wf]);
    let text = stdout(&out);
    assert!(text.contains("gitea=unset forgejo=unset"), "{text}");
    assert!(text.contains("api=https://code.example/api/v3"), "GitHub Enterprise's API path without --forgejo:\n{text}");
}

/// Runs `solstice` with a standard output whose reader is already gone, as after
/// `solstice … | head` once `head` has its lines: every write fails with EPIPE.
fn solstice_into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_solstice"))
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run solstice")
}

/// Issue #16 item 19: `solstice workflow plan … | head` panicked on the broken pipe.
/// Every subcommand that prints now exits 0 without a word, as ripgrep does
/// (crates/core/main.rs treats `BrokenPipe` as success); `run` keeps its job's result.
#[test]
fn issue_16_a_closed_stdout_is_a_quiet_success() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let dir = tempfile::tempdir().expect("tempdir");
    let hello = format!("{root}/examples/workflows/hello.yml");
    let config = format!("{root}/docs/deploy/solstice.toml");
    let cache = dir.path().to_string_lossy().into_owned();
    let store = format!("sqlite://{}/state.db", dir.path().display());
    let commands: [&[&str]; 6] = [
        &["workflow", "plan", &hello],
        &["workflow", "eval", "format('{0}', 'x')"],
        &["config", "check", &config],
        &["image", "list", "--cache-dir", &cache],
        &["vm", "list", "--store", &store],
        &["run", "--host", &hello],
    ];
    for args in commands {
        let out = solstice_into_closed_pipe(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}: {err}");
    }
}

/// The `solstice-vms-*` run directories under `tmp`.
fn run_dirs(tmp: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir(tmp)
        .expect("read tmp")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("solstice-vms-")))
        .collect();
    dirs.sort();
    dirs
}

/// Issue #16 item 17: a `solstice run` killed by SIGKILL left its machine's directory
/// (the overlay, and the seed with the guest's SSH host key) in the temporary directory
/// for good, where `serve` reaps its own leftovers when it starts. The next `solstice run`
/// now removes it, and leaves the directory of a run that is still going alone.
#[test]
fn issue_16_a_killed_runs_machine_files_are_reaped_by_the_next_run() {
    use std::io::BufRead as _;

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let sleepy = write(&dir, "sleep.yml", "on: push\njobs:\n  nap:\n    runs-on: tiny-linux\n    steps:\n      - run: echo napping; sleep 600\n");
    let hello = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/workflows/hello.yml");
    let quick_run = || {
        Command::new(env!("CARGO_BIN_EXE_solstice")).args(["run", "--host", hello]).env("TMPDIR", tmp.path()).output().expect("run")
    };

    let mut sleeper = Command::new(env!("CARGO_BIN_EXE_solstice"))
        .args(["run", &sleepy])
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let piped = sleeper.stdout.take().expect("stdout");
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(piped).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let mut output = String::new();
    while !output.contains("│ napping") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) => output += &format!("{line}\n"),
            Err(_) => {
                let _ = sleeper.kill();
                panic!("the job never started in its VM:\n{output}");
            }
        }
    }
    let leftover = run_dirs(tmp.path());
    assert_eq!(leftover.len(), 1, "{leftover:?}");
    let has_seed = std::fs::read_dir(&leftover[0])
        .expect("read run dir")
        .filter_map(Result::ok)
        .any(|machine| machine.path().join("seed.iso").exists());
    assert!(has_seed, "the machine's seed is in {}", leftover[0].display());

    // A run that starts while the VM run is alive leaves its directory alone.
    let out = quick_run();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(leftover[0].exists(), "a live run's files were removed");
    assert_eq!(sleeper.try_wait().expect("try_wait"), None, "the live run was disturbed");

    sleeper.kill().expect("SIGKILL");
    let _ = sleeper.wait();
    assert!(leftover[0].exists(), "SIGKILL leaves the directory behind");

    // The next run reaps it, and works.
    let out = quick_run();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("✓ job success"), "{text}");
    assert_eq!(run_dirs(tmp.path()), Vec::<std::path::PathBuf>::new(), "the killed run's files are gone");
}
