//! Running one benchmark program: its output echoed with a prefix, its last lines kept
//! for the reason of a failure, and a time limit.

use std::collections::VecDeque;
use std::io::{BufRead, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lines of output kept to explain a failure.
const TAIL: usize = 30;

/// How a benchmark program ended.
#[derive(Debug)]
pub struct Outcome {
    /// `None` when it exited successfully; otherwise why not, with its most telling line.
    pub failure: Option<String>,
}

/// Runs `command` (labelled `label` in the echoed output) for at most `limit`. On the
/// limit its whole process group gets SIGTERM, then SIGKILL 5 s later, so that a VM it
/// started goes too.
pub fn run(label: &str, mut command: Command, limit: Duration) -> Outcome {
    eprintln!("solstice-bench: [{label}] {command:?}");
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return Outcome { failure: Some(format!("could not start: {e}")) },
    };
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL)));
    let mut readers = Vec::new();
    let streams: [Option<Box<dyn Read + Send>>; 2] = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    for stream in streams.into_iter().flatten() {
        let (tail, label) = (tail.clone(), label.to_owned());
        readers.push(std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                eprintln!("  [{label}] {line}");
                if let Ok(mut tail) = tail.lock() {
                    if tail.len() == TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
        }));
    }
    let started = Instant::now();
    let mut signalled: Option<Instant> = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        let now = Instant::now();
        match signalled {
            None if now - started > limit => {
                signal_group(child.id(), "TERM");
                signalled = Some(now);
            }
            Some(at) if now - at > Duration::from_secs(5) => {
                signal_group(child.id(), "KILL");
                signalled = Some(now + Duration::from_secs(3600));
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for reader in readers {
        let _ = reader.join();
    }
    let lines: Vec<String> = tail.lock().map(|t| t.iter().cloned().collect()).unwrap_or_default();
    let failure = match status {
        Ok(status) if status.success() && signalled.is_none() => None,
        _ if signalled.is_some() => Some(format!("stopped after the {} s time limit", limit.as_secs())),
        Ok(status) => Some(format!("failed ({status}): {}", telling_line(&lines))),
        Err(e) => Some(format!("could not be waited for: {e}")),
    };
    Outcome { failure }
}

/// Sends `signal` to the process group led by `pid` (the benchmark started it as its own group).
fn signal_group(pid: u32, signal: &str) {
    let _ = Command::new("kill").args([format!("-{signal}"), "--".to_owned(), format!("-{pid}")]).status();
}

/// The line of `lines` that best says why a program failed: the last one that mentions an
/// error or a panic, else the last non-empty one.
pub fn telling_line(lines: &[String]) -> String {
    let mentions_error = |l: &&String| {
        let lower = l.to_lowercase();
        lower.contains("error") || lower.contains("panicked")
    };
    lines
        .iter()
        .rev()
        .find(mentions_error)
        .or_else(|| lines.iter().rev().find(|l| !l.trim().is_empty()))
        .map_or_else(|| "no output".to_owned(), |l| l.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_telling_line_is_the_last_error_else_the_last_words() {
        let out = lines(&["1000 jobs", "Error: RabbitMQ is unreachable (start it with .ci/services.sh)", "", "Caused by: refused", ""]);
        assert_eq!(telling_line(&out), "Error: RabbitMQ is unreachable (start it with .ci/services.sh)");
        assert_eq!(telling_line(&lines(&["accelerator: tcg", "gave up", "  "])), "gave up");
        assert_eq!(telling_line(&[]), "no output");
    }

    #[test]
    fn a_program_that_succeeds_has_no_failure_and_one_that_fails_says_why() {
        let mut ok = Command::new("sh");
        ok.args(["-c", "echo fine"]);
        assert_eq!(run("ok", ok, Duration::from_secs(30)).failure, None);
        let mut bad = Command::new("sh");
        bad.args(["-c", "echo measuring; echo 'Error: no broker' >&2; exit 3"]);
        let failure = run("bad", bad, Duration::from_secs(30)).failure.unwrap_or_default();
        assert!(failure.starts_with("failed (exit status: 3)"), "{failure}");
        assert!(failure.ends_with("Error: no broker"), "{failure}");
    }

    #[test]
    fn a_program_over_its_time_limit_is_stopped_with_its_children() {
        let mut slow = Command::new("sh");
        slow.args(["-c", "sleep 60 & sleep 60; wait"]);
        let started = Instant::now();
        let failure = run("slow", slow, Duration::from_millis(300)).failure.unwrap_or_default();
        assert!(failure.contains("time limit"), "{failure}");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }
}
