//! The release build of the benchmarks, and where cargo put their executables.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;

/// A target to build: a criterion or plain-program benchmark (`[[bench]]`, built by
/// `cargo bench --no-run` with the bench profile, which is the release profile), or a
/// binary (built with `--release`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Bench { package: &'static str, name: &'static str },
    Bin { package: &'static str, name: &'static str },
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Self::Bench { name, .. } | Self::Bin { name, .. } => name,
        }
    }
}

/// Builds `targets` in release mode, at most two cargo invocations (benches, binaries),
/// and returns each target's executable by name.
///
/// # Errors
///
/// Cargo cannot be started, the build fails, or cargo names no executable for a target.
pub fn build(root: &Path, targets: &[Target]) -> anyhow::Result<HashMap<String, PathBuf>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = root.join("Cargo.toml");
    let mut executables = HashMap::new();
    let benches: Vec<_> = targets.iter().filter_map(|t| matches!(t, Target::Bench { .. }).then_some(*t)).collect();
    let bins: Vec<_> = targets.iter().filter_map(|t| matches!(t, Target::Bin { .. }).then_some(*t)).collect();
    for (group, first_args) in [(&benches, ["bench", "--no-run"]), (&bins, ["build", "--release"])] {
        if group.is_empty() {
            continue;
        }
        let mut command = Command::new(&cargo);
        command.args(first_args).arg("--manifest-path").arg(&manifest).arg("--message-format=json-render-diagnostics");
        for target in group.iter() {
            match target {
                Target::Bench { package, name } => command.args(["-p", package, "--bench", name]),
                Target::Bin { package, name } => command.args(["-p", package, "--bin", name]),
            };
        }
        eprintln!("solstice-bench: cargo {}", first_args.join(" "));
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", cargo.to_string_lossy()))?;
        let stdout = child.stdout.take().context("cargo's stdout")?;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.context("reading cargo's messages")?;
            if let Some((name, path)) = executable(&line) {
                executables.insert(name, path);
            }
        }
        let status = child.wait().context("waiting for cargo")?;
        anyhow::ensure!(status.success(), "cargo {} failed ({status})", first_args.join(" "));
    }
    for target in targets {
        anyhow::ensure!(executables.contains_key(target.name()), "cargo built no executable named {}", target.name());
    }
    Ok(executables)
}

/// The target name and executable of a `compiler-artifact` message of cargo's JSON output.
fn executable(line: &str) -> Option<(String, PathBuf)> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    let path = message.get("executable")?.as_str()?;
    let name = message.get("target")?.get("name")?.as_str()?;
    Some((name.to_owned(), PathBuf::from(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_artifact_message_with_an_executable_names_its_target() {
        let line = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/solstice-workflow#0.1.0","target":{"kind":["bench"],"crate_types":["bin"],"name":"plan","src_path":"/w/solstice-workflow/benches/plan.rs"},"profile":{"opt_level":"3"},"features":[],"filenames":["/t/release/deps/plan-0123abcd"],"executable":"/t/release/deps/plan-0123abcd","fresh":true}"#;
        assert_eq!(executable(line), Some(("plan".to_owned(), PathBuf::from("/t/release/deps/plan-0123abcd"))));
    }

    #[test]
    fn libraries_and_other_messages_are_not_executables() {
        let library = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"serde"},"executable":null}"#;
        assert_eq!(executable(library), None);
        assert_eq!(executable(r#"{"reason":"build-finished","success":true}"#), None);
        assert_eq!(executable("   Compiling serde v1.0.229"), None);
    }
}
