//! A fake Forgejo server for tests (being built under issue #6).
#![warn(missing_docs)]
