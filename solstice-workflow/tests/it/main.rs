//! Integration tests of solstice-workflow: one test binary with topic modules.

mod conformance_data;
mod conformance_expressions;
mod conformance_workflow_reader;
mod contexts;
mod corpus;
mod actions;
mod debug_ssh;
mod forgejo_dialect;
mod hostile;
mod insert;
mod kdl;
mod permissions;
mod pending;
mod robustness;
mod support;
mod triggers;
