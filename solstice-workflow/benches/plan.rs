//! Parse + translate + expand: a realistic 10-step workflow and a 256-combination matrix.

use criterion::{Criterion, criterion_group, criterion_main};
use solstice_workflow::{PlanOptions, parse_workflow, plan_parsed, plan_workflow};

const TEN_STEPS: &str = r#"
name: CI
on: [push, pull_request]
env:
  CARGO_TERM_COLOR: always
jobs:
  build:
    runs-on: omnios
    timeout-minutes: 30
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0
      - name: Toolchain
        run: rustup show
      - run: cargo fmt --check
      - run: cargo clippy --all-targets -- -D warnings
      - run: cargo build --verbose
      - run: cargo test --verbose
        env:
          RUST_BACKTRACE: 1
      - if: failure()
        run: cat target/test.log
      - if: github.ref == 'refs/heads/main'
        run: cargo doc --no-deps
      - id: version
        run: echo "version=$(cargo pkgid | cut -d# -f2)" >> "$GITHUB_OUTPUT"
      - run: echo "built ${{ steps.version.outputs.version }}"
        shell: bash
"#;

fn matrix_256() -> String {
    let a: Vec<String> = (0..16).map(|i| format!("a{i}")).collect();
    let b: Vec<String> = (0..16).map(|i| format!("b{i}")).collect();
    format!(
        "on: push\njobs:\n  m:\n    runs-on: ${{{{ matrix.a }}}}\n    strategy:\n      matrix:\n        a: [{}]\n        b: [{}]\n    steps:\n      - run: echo ${{{{ matrix.a }}}}-${{{{ matrix.b }}}}\n      - run: make test\n",
        a.join(", "),
        b.join(", ")
    )
}

fn bench(c: &mut Criterion) {
    let options = PlanOptions::new();
    c.bench_function("plan_10_step_workflow", |bench| {
        bench.iter(|| plan_workflow(std::hint::black_box(TEN_STEPS), "ci.yml", &options).map(|p| p.jobs.len()))
    });
    // The two stages apart, to see where the time of the first figure goes.
    c.bench_function("read_10_step_workflow", |bench| {
        bench.iter(|| parse_workflow(std::hint::black_box(TEN_STEPS), "ci.yml").map(|w| w.jobs.len()))
    });
    // The floor for the reader: the YAML parser's event stream alone, nothing built.
    c.bench_function("yaml_events_10_step_workflow", |bench| {
        bench.iter(|| serde_saphyr::granit_parser::Parser::new_from_str(std::hint::black_box(TEN_STEPS)).count())
    });
    let parsed = parse_workflow(TEN_STEPS, "ci.yml").expect("parses");
    c.bench_function("translate_10_step_workflow", |bench| {
        bench.iter(|| plan_parsed(std::hint::black_box(&parsed), "ci.yml", &options).map(|p| p.jobs.len()))
    });
    let big = matrix_256();
    assert_eq!(plan_workflow(&big, "m.yml", &options).map(|p| p.jobs.len()), Ok(256));
    c.bench_function("plan_256_combination_matrix", |bench| {
        bench.iter(|| plan_workflow(std::hint::black_box(&big), "m.yml", &options).map(|p| p.jobs.len()))
    });
    // Its floor too, so that the harness (benches/) has a baseline for it in the same run.
    c.bench_function("yaml_events_256_combination_matrix", |bench| {
        bench.iter(|| serde_saphyr::granit_parser::Parser::new_from_str(std::hint::black_box(&big)).count())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
