//! End-to-end tests: the fake GitHub service ← `GithubSource` ← `serve_source` →
//! `MemoryQueue` → `Engine` with the host hypervisor and executor.

mod broker;
mod classic;
mod debug_ssh;
mod masking;
mod registration;
mod shutdown;
mod support;
