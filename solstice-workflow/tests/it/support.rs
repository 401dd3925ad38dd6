//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// GitHub's conformance data, vendored in `tests/conformance/github-actions` (its README names the source commit).
/// It is read from there only, so a plain clone passes. A missing directory fails the test rather than skipping it:
/// conformance must never be skipped silently. The published crate leaves the data out (see `exclude` in
/// Cargo.toml), so these tests run from the repository.
pub fn conformance_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/github-actions");
    assert!(
        dir.is_dir(),
        "GitHub conformance data not found at {}; it is part of the repository, not of the published crate",
        dir.display()
    );
    dir
}

/// Compares JSON values treating all numbers as f64 (the conformance data writes `1` and
/// `1.0` interchangeably).
pub fn json_equal(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}
