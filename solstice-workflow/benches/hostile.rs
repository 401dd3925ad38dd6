//! Hostile workflow files (issue 16, item 15): how reading and planning grow with the number of
//! keys. A reader linear in its input takes the same time per key at every size, so the figure
//! to watch is the ratio of the time per key at each size to the time per key at the smallest:
//! near 1 is linear, growing with the size is not (before the fix, 5k/10k/20k `env` keys took
//! 0.21/0.63/2.24 s, a ratio of 2.7 at 20k).
//!
//! `cargo bench -p solstice-workflow --bench hostile [-- --json FILE]`
//!
//! * YAML: a workflow whose `env:` has 5k, 10k, 20k and 100k keys, one per line, read with
//!   GitHub's limits lifted (100k keys exceed its 10 MiB memory limit) and planned; then the
//!   100k-key file with GitHub's limits, which is refused, and how long refusing takes.
//! * KDL: one line of 5k, 10k, 20k and 60k `env` nodes (60k is what fits in 1 MiB).
//!
//! Each figure is the median of five runs. `--json FILE` hands the figures to the harness in
//! `benches/` (`scripts/bench`).

use std::time::{Duration, Instant};

use solstice_bench::Figures;
use solstice_workflow::{PlanOptions, ReadLimits, parse_workflow_with_limits, plan_kdl_workflow, plan_parsed, plan_workflow};

const RUNS: usize = 5;

/// A key for `i` that YAML reads as a plain string: a letter, then three base-36 digits.
fn key(i: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let letter = char::from(b'a' + (i / (36 * 36 * 36)) as u8);
    let d = |n: usize| char::from(DIGITS[n % 36]);
    format!("{letter}{}{}{}", d(i / (36 * 36)), d(i / 36), d(i))
}

fn yaml_env(n: usize) -> String {
    let mut text = String::from("on: push\nenv:\n");
    for i in 0..n {
        text.push_str("  ");
        text.push_str(&key(i));
        text.push_str(": v\n");
    }
    text.push_str("jobs:\n  a:\n    runs-on: linux\n    steps:\n      - run: echo\n");
    text
}

fn kdl_env(n: usize) -> String {
    let mut text = String::from("on \"push\"; job \"a\" { runs-on \"linux\"; steps { run \"echo\"; }; }; ");
    for i in 0..n {
        text.push_str("env ");
        text.push_str(&key(i));
        text.push_str("=\"v\"; ");
    }
    text
}

/// The median time of `RUNS` runs of `work`, which must succeed with `expected` keys.
fn median(mut work: impl FnMut() -> usize, expected: usize) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let keys = work();
            let elapsed = start.elapsed();
            assert_eq!(keys, expected, "the workflow must plan with every key");
            elapsed
        })
        .collect();
    times.sort();
    times[RUNS / 2]
}

fn report(figures: &mut Figures, format: &str, sizes: &[usize], mut time: impl FnMut(usize) -> Duration) {
    let mut first_per_key = None;
    for &n in sizes {
        let t = time(n);
        let per_key = t.as_secs_f64() / n as f64;
        let ratio = per_key / *first_per_key.get_or_insert(per_key);
        println!("{format} {n:>7} keys: {:>9.1} ms, {:>6.2} µs per key, per-key ratio to {} keys {ratio:.2}", t.as_secs_f64() * 1e3, per_key * 1e6, sizes[0]);
        figures.number(&format!("{format}_{n}_keys_s"), t.as_secs_f64()).expect("figures file");
        figures.number(&format!("{format}_{n}_keys_per_key_ratio"), ratio).expect("figures file");
    }
}

fn main() {
    let json = Figures::path_from_args(std::env::args().skip(1));
    let mut figures = Figures::new(json).expect("figures file");
    let options = PlanOptions::new();
    let unlimited = ReadLimits::new().max_file_size(usize::MAX).max_result_size(usize::MAX);
    report(&mut figures, "yaml", &[5_000, 10_000, 20_000, 100_000], |n| {
        let text = yaml_env(n);
        median(
            || {
                let workflow = parse_workflow_with_limits(&text, "wide.yml", &unlimited).expect("reads");
                plan_parsed(&workflow, "wide.yml", &options).expect("plans").jobs[0].env.len()
            },
            n,
        )
    });
    let text = yaml_env(100_000);
    let refused = median(|| plan_workflow(&text, "wide.yml", &options).map_or(0, |p| p.jobs.len()), 0);
    println!("yaml  100000 keys with GitHub's limits ({} bytes): refused (Maximum object size exceeded) in {:.1} ms", text.len(), refused.as_secs_f64() * 1e3);
    figures.number("yaml_100000_keys_refused_s", refused.as_secs_f64()).expect("figures file");
    report(&mut figures, "kdl", &[5_000, 10_000, 20_000, 60_000], |n| {
        let text = kdl_env(n);
        assert!(text.len() <= 1024 * 1024, "{} bytes", text.len());
        median(|| plan_kdl_workflow(&text, "line.kdl", &options).expect("plans").jobs[0].env.len(), n)
    });
}
