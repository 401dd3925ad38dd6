//! Integration tests of the Forgejo runner against the fake Forgejo server.
