//! QEMU end-to-end tests: real guests, real SSH. Run with `cargo test -p solstice-e2e`.
//!
//! Each test boots its own machine (under TCG that takes 15–30 s on two cores), so the
//! suite keeps to a few tests that each check a lot, and they run in parallel.

mod debug_ssh;
mod egress;
mod isolation;
mod job;
mod masking;
