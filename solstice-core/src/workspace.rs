//! Keeping a step's paths inside the job's directories: checkout `path:` and
//! `working-directory` are resolved against the workspace and refused when they land
//! outside it, as `actions/checkout` refuses its `path` input.

use crate::{ExecError, Machine};

/// Resolves `path` against the absolute directory `base` as Node's `path.resolve` does,
/// which `actions/checkout` uses (`src/input-helper.ts`): an absolute `path` replaces
/// `base`, `.` and empty components go, `..` removes the component before it (never
/// above `/`), and no symbolic link is followed. Paths are POSIX (the host's and every
/// guest's).
pub fn resolve_path(base: &str, path: &str) -> String {
    let start = if path.starts_with('/') { "" } else { base };
    let mut parts: Vec<&str> = Vec::new();
    for part in start.split('/').chain(path.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Whether the resolved path `path` is `root` or lies below it (`/a/bc` is not below
/// `/a/b`): `actions/checkout`'s test, `(path + sep).startsWith(root + sep)`.
pub fn is_within(path: &str, root: &str) -> bool {
    let root = root.trim_end_matches('/');
    path == root || path.strip_prefix(root).is_some_and(|rest| rest.starts_with('/'))
}

/// Where a checkout with `path:` puts the repository in `machine`: the workspace, or
/// `path` resolved against it.
///
/// # Errors
/// [`ExecError::OutsideWorkspace`] ("Repository path '…' is not under '…'", the message
/// of `actions/checkout`) when `path` resolves outside the workspace.
pub fn checkout_dir(machine: &Machine, path: &str) -> Result<String, ExecError> {
    let workspace = resolve_path("/", &machine.workspace);
    let dir = resolve_path(&workspace, path);
    if is_within(&dir, &workspace) {
        Ok(dir)
    } else {
        Err(ExecError::OutsideWorkspace { what: "Repository path", path: dir, workspace })
    }
}

/// The directories of `machine` a step may run in: its workspace, `runner.temp` and
/// `runner.tool_cache` (directories the job owns and that go with it).
pub fn job_dirs(machine: &Machine) -> Vec<String> {
    [&machine.workspace, &machine.runner.temp, &machine.runner.tool_cache]
        .into_iter()
        .filter(|dir| !dir.is_empty())
        .map(|dir| resolve_path("/", dir))
        .collect()
}

/// The directory a step with `working-directory: dir` runs in: the workspace when `dir`
/// is `None` or empty, else `dir` resolved against the workspace. Nothing is refused: an
/// executor whose machine goes with the job (a VM) may run a step anywhere in it, as
/// GitHub's runners do.
pub fn resolve_working_dir(machine: &Machine, dir: Option<&str>) -> String {
    let workspace = resolve_path("/", &machine.workspace);
    match dir.filter(|d| !d.is_empty()) {
        Some(dir) => resolve_path(&workspace, dir),
        None => workspace,
    }
}

/// [`resolve_working_dir`], refused outside the job's own directories: for executors
/// whose machine outlives the job (the host), where a directory made elsewhere would stay.
///
/// # Errors
/// [`ExecError::OutsideWorkspace`] when `dir` resolves outside the workspace,
/// `runner.temp` and `runner.tool_cache` ([`job_dirs`]).
pub fn working_dir(machine: &Machine, dir: Option<&str>) -> Result<String, ExecError> {
    let resolved = resolve_working_dir(machine, dir);
    if job_dirs(machine).iter().any(|root| is_within(&resolved, root)) {
        Ok(resolved)
    } else {
        Err(ExecError::OutsideWorkspace { what: "Working directory", path: resolved, workspace: resolve_path("/", &machine.workspace) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MachineAccess, RunnerInfo};

    fn machine() -> Machine {
        Machine {
            id: "m".into(),
            label: "host".into(),
            workspace: "/j/work/".into(),
            access: MachineAccess::Local,
            runner: RunnerInfo {
                os: "Linux".into(),
                arch: "X64".into(),
                name: "m".into(),
                temp: "/j/temp".into(),
                tool_cache: "/j/tool".into(),
            },
            env: Default::default(),
        }
    }

    /// Node's `path.resolve('/w', p)` for each `p`, as `actions/checkout` computes its
    /// repository path.
    #[test]
    fn paths_resolve_as_node_resolves_them() {
        for (path, resolved) in [
            ("", "/w"),
            (".", "/w"),
            ("a/./b//c/", "/w/a/b/c"),
            ("a/../b", "/w/b"),
            ("..", "/"),
            ("../../../../etc", "/etc"),
            ("/abs/x", "/abs/x"),
            ("/w/../w/in", "/w/in"),
        ] {
            assert_eq!(resolve_path("/w", path), resolved, "{path:?}");
        }
        assert!(is_within("/w", "/w") && is_within("/w/x", "/w/") && !is_within("/wx", "/w") && !is_within("/", "/w"));
    }

    /// Issue 16, item 8: `actions/checkout` refuses a `path` outside the workspace with
    /// "Repository path '<resolved>' is not under '<workspace>'" (`src/input-helper.ts`).
    #[test]
    fn issue_16_a_checkout_path_outside_the_workspace_is_refused_with_checkouts_message() {
        let machine = machine();
        assert_eq!(checkout_dir(&machine, "").expect("workspace"), "/j/work");
        assert_eq!(checkout_dir(&machine, "sub/../repo").expect("inside"), "/j/work/repo");
        assert_eq!(checkout_dir(&machine, "/j/work/abs").expect("absolute inside"), "/j/work/abs");
        for (path, resolved) in [("../../..", "/"), ("../temp", "/j/temp"), ("/etc", "/etc"), ("x/../../work2", "/j/work2")] {
            let error = checkout_dir(&machine, path).expect_err(path);
            assert_eq!(error.to_string(), format!("Repository path '{resolved}' is not under '/j/work'"));
        }
    }

    #[test]
    fn issue_16_a_working_directory_outside_the_jobs_directories_is_refused() {
        let machine = machine();
        assert_eq!(working_dir(&machine, None).expect("default"), "/j/work");
        assert_eq!(working_dir(&machine, Some("src")).expect("relative"), "/j/work/src");
        assert_eq!(working_dir(&machine, Some("/j/temp/x")).expect("runner.temp"), "/j/temp/x");
        assert_eq!(working_dir(&machine, Some("../tool")).expect("runner.tool_cache"), "/j/tool");
        for dir in ["../../..", "/etc", "..", "../work-other"] {
            let error = working_dir(&machine, Some(dir)).expect_err(dir);
            assert!(error.to_string().starts_with("Working directory '/"), "{error}");
            assert!(error.to_string().ends_with("' is not under '/j/work'"), "{error}");
        }
    }
}
