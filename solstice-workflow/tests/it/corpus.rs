//! The fixture corpus: every `tests/fixtures/*.yml` is planned and its plan (or its errors)
//! compared with a reviewed insta snapshot in `tests/it/snapshots/`.

use solstice_workflow::{PlanOptions, plan_workflow};

#[test]
fn fixture_plans_match_snapshots() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "the corpus must hold at least 30 workflows");
    for file in files {
        let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        let source = std::fs::read_to_string(&file).expect("readable");
        let display = format!("{name}.yml");
        let rendered = match plan_workflow(&source, &display, &PlanOptions::new()) {
            Ok(plan) => serde_json::to_string_pretty(&plan).expect("serializable"),
            Err(errors) => format!("ERRORS\n{errors}"),
        };
        insta::assert_snapshot!(name, rendered);
    }
}
