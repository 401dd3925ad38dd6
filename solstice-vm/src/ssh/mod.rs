//! SSH: sessions to machines, the step executor built on them, and the ephemeral keys
//! both sides of a session use.
//!
//! [`SshExecutor`] (also at the crate root) is all an engine needs. [`SshSession`] logs in
//! to a machine by hand (for tools and tests that talk to a guest outside a job), and
//! [`SshKeyPair`] makes the keys a machine is seeded with.

mod executor;
mod session;

pub use crate::keys::{KeyError, SshKeyPair};
pub use executor::SshExecutor;
pub use session::{ExecOutput, SshError, SshSession};
