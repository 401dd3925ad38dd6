//! Integration tests of solstice-core: the engine, the host runner, the memory queue
//! and the SQLite store.

mod commands;
mod debug_ssh;
mod engine;
mod host;
mod masking;
mod memory_queue;
mod orphans;
mod runtime_contexts;
mod serve;
mod service;
mod store;
mod workflow;
mod support;
