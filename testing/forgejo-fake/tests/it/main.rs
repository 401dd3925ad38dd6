//! Wire-level tests of the fake Forgejo server, with a plain HTTP client.
