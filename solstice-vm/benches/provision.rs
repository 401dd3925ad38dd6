//! Provisioning overhead benchmark (written below).
fn main() {}
