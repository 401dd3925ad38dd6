//! SSH: sessions to machines and the step executor built on them.

mod executor;
mod session;

pub use executor::SshExecutor;
pub use session::{ExecOutput, SshError, SshSession};
