//! What one endless output line costs the runner (issue 16, item 12): a step prints 10,
//! 20, 40 and 100 MB without a newline, read in 16 KiB chunks as the host executor reads
//! a pipe, through [`LogSink::send_chunk`] to a reader that drains the channel. Before
//! the fix the unfinished line was searched again on every chunk (10 MB took 13.6 s, 40 MB
//! 209 s); the goal is linear time and under 64 MiB of memory at 100 MB.
//!
//! Before criterion's own figures, one pass per size prints the time, the time per MB
//! (equal ratios mean linear) and the peak resident memory of the process during that
//! pass (Linux's `VmHWM`, reset between passes through `/proc/self/clear_refs`).

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use solstice_core::{LogSink, LogStream, MAX_LINE_BYTES};

/// The sizes of the line, in MB.
const SIZES_MB: [usize; 4] = [10, 20, 40, 100];
/// The read size of the host executor's pipe reader.
const CHUNK: usize = 16 * 1024;

/// Pushes a `bytes`-long line without newline through a sink; returns the bytes received.
fn push_line(runtime: &tokio::runtime::Runtime, bytes: usize) -> usize {
    runtime.block_on(async {
        let (sink, mut rx) = LogSink::channel(64);
        let reader = tokio::spawn(async move {
            let mut received = 0;
            while let Some(line) = rx.recv().await {
                assert!(line.line.len() <= MAX_LINE_BYTES);
                received += line.line.len();
            }
            received
        });
        let chunk = vec![b'x'; CHUNK];
        let mut pending = Vec::new();
        let mut sent = 0;
        while sent < bytes {
            let n = CHUNK.min(bytes - sent);
            sink.send_chunk(LogStream::Stdout, &mut pending, &chunk[..n]).await;
            sent += n;
        }
        sink.flush(LogStream::Stdout, &mut pending).await;
        drop(sink);
        reader.await.expect("reader")
    })
}

/// The process's peak resident memory in KiB, if Linux says.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn reset_peak_rss() {
    // "5" resets the peak resident set size (Documentation/filesystems/proc.rst).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    println!("{:>8} {:>10} {:>12} {:>14}", "line MB", "time s", "ms per MB", "peak RSS MiB");
    for mb in SIZES_MB {
        reset_peak_rss();
        let started = Instant::now();
        let received = push_line(&runtime, mb * 1_000_000);
        let elapsed = started.elapsed();
        // The figure means nothing if bytes were lost on the way.
        assert_eq!(received, mb * 1_000_000, "{mb} MB line");
        let peak = peak_rss_kib().map_or("?".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0));
        println!("{mb:>8} {:>10.3} {:>12.2} {peak:>14}", elapsed.as_secs_f64(), elapsed.as_secs_f64() * 1000.0 / mb as f64);
    }
    let mut group = c.benchmark_group("long_line");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    for mb in SIZES_MB {
        group.bench_function(format!("{mb}_mb_without_newline"), |b| b.iter(|| push_line(&runtime, mb * 1_000_000)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
