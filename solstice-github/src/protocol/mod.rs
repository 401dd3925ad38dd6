//! The wire protocol: routes, sessions, messages, job messages.

pub(crate) mod context;
pub(crate) mod job;
pub(crate) mod location;
pub(crate) mod session;
pub(crate) mod template;
pub(crate) mod websocket;
