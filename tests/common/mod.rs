//! The one helper module of the integration tests, included by each test file with
//! `mod common;`:
//!
//! - [`child`]: crash-test children, their output read with deadlines, and death at a crash
//!   point checked by signal and marker;
//! - [`cluster`]: Raft nodes (peer ports, the flags that start, join and restart one);
//! - [`listing`]: key ranges paged with a cursor, checked against a `BTreeMap` (model tests);
//! - [`server`]: the real `hoardhaven` binary on an ephemeral loopback port (HTTP, CLI,
//!   security suites);
//! - [`smallfs`]: a small tmpfs mounted by the disk-full tests, and filling it;
//! - [`store`]: opening engines with test options, `put`/`get`/`fill`, dumps, diffs and
//!   directory helpers (engine-level suites);
//! - [`tools`]: external checkers (promtool, openapi-spec-validator), skipped when absent
//!   unless required;
//! - [`workload`]: the deterministic workload of the reliability suites, with a model of what
//!   was acknowledged and what is in doubt.
//!
//! [`ENGINES`] is the one list of engines every suite runs against. Every wait here is bounded
//! by [`STEP_TIMEOUT`] and polls for an event; none depends on how fast the machine is.
#![allow(dead_code, unused_imports)]

pub mod child;
pub mod cluster;
pub mod listing;
pub mod server;
pub mod smallfs;
pub mod store;
pub mod tools;
pub mod workload;

pub use child::*;
pub use server::*;
pub use smallfs::*;
pub use store::*;
pub use workload::*;

use hoardhaven::engine::EngineKind;

/// Every engine, for the suites that run against each.
pub const ENGINES: [EngineKind; 2] = [EngineKind::Bitcask, EngineKind::Memory];

/// True when `HOARDHAVEN_REQUIRE_TOOLS` is set and not empty (as CI sets it): a missing tool,
/// mount or privilege then fails the test instead of skipping it.
pub fn tools_required() -> bool {
    std::env::var_os("HOARDHAVEN_REQUIRE_TOOLS").is_some_and(|v| !v.is_empty())
}

/// Skips a check that needs something this machine lacks: prints `SKIPPED: {what}`, or panics
/// when [`tools_required`] (a skipped check must not pass silently in CI).
pub fn skip_unless_required(what: &str) {
    assert!(
        !tools_required(),
        "{what}; required because HOARDHAVEN_REQUIRE_TOOLS is set"
    );
    eprintln!("SKIPPED: {what}");
}
