//! Integration tests of the Forgejo runner against the fake Forgejo server.
#![allow(clippy::unwrap_used)]

mod client;
mod debug_ssh;
mod e2e;
mod masking;
mod support;
mod wire;
