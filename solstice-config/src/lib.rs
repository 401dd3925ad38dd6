//! Configuration files of the Solstice CI services: a TOML file, then environment
//! overrides, then checks that serde cannot express, with every error placed where the
//! value came from (`file:line:column`, or the environment variable).
//!
//! # Why a crate of its own
//! Every Solstice CI program loads its configuration the same way, so the loader and
//! the one schema, [`ServiceConfig`], live here once instead of one copy per
//! `main.rs`. It is not a module of `solstice-core`: the libraries take plain `*Config`
//! data and never read files or the environment (see `STYLE.md`, "Configuration is
//! data"), while this crate exists only to be called by binaries (through
//! `solstice-service`). It depends on nothing but serde and toml.
//!
//! One vocabulary: the orchestrator, both runners and `solstice serve` read the same
//! keys ([`ServiceConfig`]); a [`Program`] says which sections it reads, checks them
//! ([`Program::check`]) and fills in its own defaults. Durations are written the same
//! way everywhere ([`duration`]). The environment overrides follow one rule
//! ([`SERVICE_ENV`]): `SOLSTICE_` and the key's path upper-cased, dots as underscores.
//!
//! # Overview
//! - [`load`] reads a file (or none: every key then has its default), deserializes it
//!   into any `serde` type, and applies the [`EnvOverride`]s a binary declares;
//!   [`parse`] does the same for text already in memory, without overrides.
//! - The result is a [`Loaded`]: the value plus where each key came from, so
//!   [`Loaded::check`] turns a [`BadValue`] found by a check into an error at the right
//!   place.
//! - Every failure is a [`ConfigError`] whose message names the file, line and column,
//!   or the variable.
//!
//! ```
//! use serde::Deserialize;
//! use solstice_config::{BadValue, EnvOverride, load_str};
//!
//! #[derive(Debug, Default, Deserialize)]
//! #[serde(deny_unknown_fields, default)]
//! struct Config {
//!     capacity: usize,
//! }
//!
//! const ENV: &[EnvOverride] = &[EnvOverride::toml("MY_CAPACITY", "capacity")];
//! let check = |c: &Config| if c.capacity == 0 { Err(BadValue::new("capacity", "must be at least 1")) } else { Ok(()) };
//!
//! let loaded = load_str::<Config>("capacity = 2\n", "my.toml", ENV, |_| None)?.check(check)?;
//! assert_eq!(loaded.value().capacity, 2);
//!
//! let err = load_str::<Config>("\ncapacity = 0\n", "my.toml", ENV, |_| None)?.check(check).unwrap_err();
//! assert_eq!(err.to_string(), "my.toml:2:12: capacity: must be at least 1");
//!
//! let err = load_str::<Config>("capacity = 2\n", "my.toml", ENV, |v| (v == "MY_CAPACITY").then(|| "many".into())).unwrap_err();
//! assert!(err.to_string().starts_with("environment variable MY_CAPACITY: "));
//! # Ok::<(), solstice_config::ConfigError>(())
//! ```
#![warn(missing_docs)]

mod cache;
pub mod duration;
mod load;
mod logging;
mod service;

pub use cache::default_cache_dir;
pub use logging::{LogFormat, UnknownLogFormat, init_logging};
pub use load::{BadValue, ConfigError, EnvOverride, EnvValue, Loaded, load, load_str, parse};
pub use service::{
    DebugSshConfig, EngineConfig, ForgejoConfig, GithubConfig, LogConfig, MetricsConfig, Program, QueueConfig, SERVICE_ENV,
    ServiceConfig, StoreConfig, VmLimitsConfig,
};
