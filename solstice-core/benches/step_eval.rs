//! What evaluating a step's expressions when it runs costs the engine: the same 20-step
//! job through the real engine (fake machine and executor, so nothing else is timed),
//! once with expressions in every step's name, `env`, `if:`, `working-directory` and
//! script against a 32 KB event payload, once with none. The difference divided by 20 is
//! the cost per step (the goal is under 1 ms, issue 15).

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use solstice_core::testing::{CountingHypervisor, ScriptedExecutor};
use solstice_core::{Engine, JobRequest, StepCommand};

/// Steps per job.
const STEPS: usize = 20;

/// A push event of about 32 KB, as GitHub sends for a push of many commits.
fn event_payload() -> Value {
    let commits: Vec<Value> = (0..60)
        .map(|i| {
            json!({
                "id": format!("{i:040x}"),
                "message": format!("commit {i}: {}", "a long commit message line ".repeat(12)),
                "author": { "name": "Octo Cat", "email": "octo@example.com", "username": "octocat" },
                "added": [format!("src/file{i}.rs")], "removed": [], "modified": ["Cargo.toml", "README.md"],
            })
        })
        .collect();
    json!({ "ref": "refs/heads/main", "commits": commits, "repository": { "full_name": "octo/demo", "private": false } })
}

fn job(with_expressions: bool) -> JobRequest {
    let steps = (0..STEPS)
        .map(|i| {
            if !with_expressions {
                let mut step = StepCommand::run(format!("step {i}"), format!("output v=1.{i}\necho done"));
                step.id = Some(format!("s{i}"));
                return step;
            }
            let previous = i.saturating_sub(1);
            let mut step = StepCommand::run(
                format!("step {i} on ${{{{ runner.os }}}} for ${{{{ github.repository }}}}"),
                format!("output v=1.{i}\necho ${{{{ steps.s{previous}.outputs.v }}}} in ${{{{ github.workspace }}}} ${{{{ matrix.os }}}}"),
            );
            step.id = Some(format!("s{i}"));
            step.condition = Some("github.ref == 'refs/heads/main' && !cancelled()".into());
            step.working_directory = Some("${{ github.workspace }}/build".into());
            step.env.insert("VERSION".into(), format!("${{{{ steps.s{previous}.outputs.v }}}}"));
            step.env.insert("TARGET".into(), "${{ matrix.os }}-${{ runner.arch }}".into());
            step.env.insert("COMMITS".into(), "${{ github.event.commits[0].author.name }}".into());
            step
        })
        .collect();
    let mut job = JobRequest::new("bench", vec!["fake".into()], steps);
    job.contexts.insert(
        "github".into(),
        json!({ "repository": "octo/demo", "ref": "refs/heads/main", "sha": "0123abcd", "event": event_payload() }),
    );
    job.contexts.insert("matrix".into(), json!({ "os": "omnios" }));
    if with_expressions {
        job.env.insert("BUILD".into(), "${{ github.workspace }}/out".into());
    }
    job
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let engine = Engine::builder()
        .hypervisor(CountingHypervisor::new())
        .executor(ScriptedExecutor::new())
        .build()
        .expect("engine");
    for (id, with_expressions) in [("job_20_steps_without_expressions", false), ("job_20_steps_evaluated_at_run_time", true)] {
        let job = job(with_expressions);
        // The job must really succeed and really evaluate, or the figure means nothing.
        let (result, _) = runtime.block_on(engine.run_job_collect(job.clone()));
        assert_eq!(result, solstice_core::JobResult::Success, "{id}");
        c.bench_function(id, |b| b.iter(|| runtime.block_on(engine.run_job_collect(std::hint::black_box(job.clone())))));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
