//! The KDL dialect: every `tests/fixtures/*.kdl` planned and compared with a reviewed insta
//! snapshot, the examples of `docs/workflow-kdl.md` planned, and the dialect's rules checked
//! one by one with the expected plan spelled out.

use solstice_workflow::{PlanOptions, StepKind, WorkflowErrorKind, WorkflowFormat, plan_any, plan_kdl_workflow};

fn fixtures(extension: &str) -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

#[test]
fn kdl_fixture_plans_match_snapshots() {
    let files = fixtures("kdl");
    assert!(files.len() >= 10, "the KDL corpus must hold at least 10 workflows");
    for file in files {
        let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        let source = std::fs::read_to_string(&file).expect("readable");
        let display = format!("{name}.kdl");
        let rendered = match plan_any(&source, &display, &PlanOptions::new()) {
            Ok(plan) => serde_json::to_string_pretty(&plan).expect("serializable"),
            Err(errors) => format!("ERRORS\n{errors}"),
        };
        let expect_error = name.starts_with("error-");
        assert_eq!(rendered.starts_with("ERRORS"), expect_error, "{display}: {rendered}");
        insta::assert_snapshot!(name, rendered);
    }
}

/// Every ```kdl block of the dialect's documentation is a complete workflow that plans.
#[test]
fn docs_examples_plan() {
    let doc_path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/workflow-kdl.md");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/workflow-kdl.md");
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, line) in doc.lines().enumerate() {
        match &mut current {
            None if line.trim_end() == "```kdl" => current = Some((index + 2, String::new())),
            Some((start, text)) if line.trim_end() == "```" => {
                blocks.push((*start, std::mem::take(text)));
                current = None;
            }
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "an unclosed ```kdl block");
    assert!(blocks.len() >= 6, "found only {} kdl examples", blocks.len());
    for (line, block) in blocks {
        let name = format!("workflow-kdl.md:{line}");
        if let Err(errors) = plan_kdl_workflow(&block, &name, &PlanOptions::new()) {
            panic!("the example at docs/{name} does not plan:\n{errors}");
        }
    }
}

fn plan(source: &str) -> solstice_workflow::WorkflowPlan {
    match plan_kdl_workflow(source, "w.kdl", &PlanOptions::new()) {
        Ok(plan) => plan,
        Err(errors) => panic!("{errors}"),
    }
}

fn errors(source: &str) -> Vec<(usize, usize, WorkflowErrorKind, String)> {
    let errors = plan_kdl_workflow(source, "w.kdl", &PlanOptions::new()).expect_err("should fail");
    errors.errors().iter().map(|e| (e.line, e.column, e.kind, e.message.clone())).collect()
}

#[test]
fn fan_out_plans_one_job_per_image_named_like_a_matrix() {
    let plan = plan(
        r#"
job "build" {
    runs-on "omnios-r151056" "openindiana-hipster" "tiny-linux"
    steps { run "echo ${{ matrix.runs-on }}" }
}
"#,
    );
    let names: Vec<&str> = plan.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["build (omnios-r151056)", "build (openindiana-hipster)", "build (tiny-linux)"]);
    assert_eq!(plan.jobs[1].runs_on, ["openindiana-hipster"]);
    // Scripts are evaluated when the step runs, against the job's contexts.
    let script = plan.jobs[2].steps[0].run.as_deref().expect("a run step");
    assert_eq!(solstice_workflow::interpolate(script, &plan.jobs[2].contexts).expect("evaluates"), "echo tiny-linux");
    assert_eq!(plan.jobs[2].contexts["strategy"]["job-total"], 3);
}

#[test]
fn setup_follows_the_os_family_and_the_runner_can_declare_families() {
    let source = r#"
setup os="illumos" { run "pfexec pkg install gcc13" }
setup { run "uname -a" }
job "build" {
    runs-on "omnios-r151056" "big-box" "tiny-linux"
    setup os="linux" { run "apk add gcc" id="apk" }
    steps { run "make" }
}
"#;
    let plan = plan(source);
    let runs = |i: usize| -> Vec<String> { plan.jobs[i].steps.iter().map(|s| s.run.clone().unwrap_or_default()).collect() };
    assert_eq!(runs(0), ["pfexec pkg install gcc13", "uname -a", "make"]);
    assert_eq!(runs(1), ["uname -a", "make"]);
    assert_eq!(runs(2), ["uname -a", "apk add gcc", "make"]);
    let ids: Vec<&str> = plan.jobs[2].steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["__setup_2", "apk", "__run"]);
    let declared = plan_kdl_workflow(source, "w.kdl", &PlanOptions::new().os_family("big-box", "illumos")).expect("plans");
    assert_eq!(declared.jobs[1].steps.len(), 3);
    assert_eq!(declared.jobs[1].steps[0].run.as_deref(), Some("pfexec pkg install gcc13"));
}

#[test]
fn steps_carry_their_properties() {
    let plan = plan(
        r#"
defaults shell="sh"
job "j" {
    runs-on "omnios"
    env A="1"
    steps {
        checkout path="src" fetch-depth=0 submodules=#true name="Get sources"
        run "make" id="m" shell="bash" working-directory="src" timeout-minutes=5 continue-on-error=#true if="github.ref == 'refs/heads/main'" {
            env B=2 C=#true
        }
        run "plain"
    }
}
"#,
    );
    let steps = &plan.jobs[0].steps;
    assert_eq!(steps[0].kind, StepKind::Checkout);
    assert_eq!(steps[0].name, "Get sources");
    let checkout = steps[0].checkout.as_ref().expect("checkout inputs");
    assert_eq!((checkout.path.as_deref(), checkout.fetch_depth), (Some("src"), 0));
    assert_eq!(steps[1].id, "m");
    assert_eq!(steps[1].shell.as_deref(), Some("bash --noprofile --norc -eo pipefail {0}"));
    assert_eq!(steps[1].working_directory.as_deref(), Some("src"));
    assert_eq!((steps[1].timeout_minutes, steps[1].continue_on_error), (Some(5), true));
    assert_eq!(steps[1].condition, "success() && (github.ref == 'refs/heads/main')");
    // The step's own env; the job's lies under it when the step runs.
    assert_eq!(serde_json::Value::Object(steps[1].env.clone()), serde_json::json!({"B": "2", "C": "true"}));
    assert_eq!(serde_json::Value::Object(plan.jobs[0].env.clone()), serde_json::json!({"A": "1"}));
    assert_eq!(steps[2].shell.as_deref(), Some("sh -e {0}"));
    assert_eq!(steps[2].name, "Run plain");
}

#[test]
fn errors_name_line_and_column() {
    // KDL 2.0 booleans are #true/#false.
    let e = errors("job \"j\" {\n  runs-on \"x\"\n  continue-on-error true\n  steps { run \"a\" }\n}\n");
    assert_eq!((e[0].0, e[0].1, e[0].2), (3, 21, WorkflowErrorKind::Kdl), "{e:?}");
    // Unknown nodes and properties, at the node or property.
    let e = errors("job \"j\" {\n  runs-on \"x\"\n  colour \"red\"\n  steps { run \"a\" shel=\"sh\" }\n}\n");
    assert_eq!((e[0].0, e[0].1), (3, 3), "{e:?}");
    assert!(e[0].3.contains("unknown node 'colour'"), "{e:?}");
    assert_eq!((e[1].0, e[1].1), (4, 19), "{e:?}");
    // Missing runs-on, at the job.
    let e = errors("\n  job \"j\" { steps { run \"a\" } }\n");
    assert_eq!((e[0].0, e[0].1), (2, 3), "{e:?}");
    // A need on an unknown job, at the need; columns count characters, not bytes.
    let e = errors("job \"é\" {\n  runs-on \"x\"\n  steps { run \"a\" }\n}\njob \"b\" {\n  runs-on \"x\"\n  needs \"é\" \"zz\"\n  steps { run \"a\" }\n}\n");
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].3.contains("invalid"), "{e:?}");
    assert_eq!((e[1].0, e[1].1), (7, 13), "{e:?}");
    // Planner errors keep the KDL positions.
    let e = errors("job \"j\" {\n  runs-on \"x\"\n  timeout-minutes \"${{ vars.T }}\"\n  steps { run \"a\" }\n}\n");
    assert_eq!((e[0].0, e[0].1, e[0].2), (3, 19, WorkflowErrorKind::Expression), "{e:?}");
}

#[test]
fn plan_any_picks_the_format_from_the_extension() {
    let yaml = "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: make\n";
    let kdl = "job \"a\" {\n  runs-on \"x\"\n  steps { run \"make\" }\n}\n";
    let options = PlanOptions::new();
    let from_yaml = plan_any(yaml, "ci.yaml", &options).expect("yaml");
    let from_kdl = plan_any(kdl, ".solstice/workflow.KDL", &options).expect("kdl");
    assert_eq!(from_yaml.jobs, from_kdl.jobs);
    let e = plan_any(kdl, "workflow.txt", &options).expect_err("unknown extension");
    assert_eq!((e.errors()[0].line, e.errors()[0].column), (0, 0));
    assert_eq!(WorkflowFormat::from_file_name("dir.kdl/ci"), None);
}
