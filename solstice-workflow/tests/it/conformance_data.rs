//! The case files of GitHub's conformance data, shared by the conformance tests.

use std::path::PathBuf;

use crate::support::conformance_dir;

/// The files ending in `.{extension}` in the conformance directory `set` (such as `expressions`), sorted by name so
/// that every run reads, counts and reports the cases in the same order.
pub fn conformance_files(set: &str, extension: &str) -> Vec<PathBuf> {
    let dir = conformance_dir().join(set);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{set} dir {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}
