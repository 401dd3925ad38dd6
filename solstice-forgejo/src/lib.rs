//! A native Forgejo Actions runner.
//!
//! `solstice-forgejo` speaks Forgejo's `runner.v1` Connect protocol and implements
//! [`solstice_core::JobSource`] on it. It is being built under issue #6.
