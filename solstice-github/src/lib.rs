//! A native GitHub Actions self-hosted runner.
//!
//! `solstice-github` speaks the Actions runner protocol (registration, OAuth, sessions,
//! broker, run and results services) and implements [`solstice_core::JobSource`] on it.
//! It is being built under issue #7.
