//! `solstice-forgejo-runner` (being built under issue #6).
fn main() {}
