//! The protocol's message types, generated from `proto/` by prost (binary codec) and
//! pbjson (canonical proto3 JSON codec).
//!
//! Field names and numbers are Forgejo's (`runner.v1`, `ping.v1`); well-known types
//! (`Struct`, `Timestamp`) come from [`pbjson_types`].

/// `ping.v1`: the unauthenticated liveness service.
pub mod ping {
    /// Version 1.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/ping.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/ping.v1.serde.rs"));
    }
}

/// `runner.v1`: registration, task fetch, state and log upload.
pub mod runner {
    /// Version 1.
    #[allow(missing_docs, clippy::all, clippy::pedantic)]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/runner.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/runner.v1.serde.rs"));
    }
}

pub use pbjson_types::{ListValue, Struct, Timestamp, Value};
