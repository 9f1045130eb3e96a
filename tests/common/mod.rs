//! The one helper module of the integration tests, included by each test file with
//! `mod common;`:
//!
//! - [`child`]: crash-test children, their output read with deadlines, and death at a crash
//!   point checked by signal and marker;
//! - [`server`]: the real `hoardhaven` binary on an ephemeral loopback port (HTTP, CLI,
//!   security suites);
//! - [`store`]: opening engines with test options, `put`/`get`/`fill`, dumps, diffs and
//!   directory helpers (engine-level suites);
//! - [`workload`]: the deterministic workload of the reliability suites, with a model of what
//!   was acknowledged and what is in doubt.
//!
//! [`ENGINES`] is the one list of engines every suite runs against. Every wait here is bounded
//! by [`STEP_TIMEOUT`] and polls for an event; none depends on how fast the machine is.
#![allow(dead_code, unused_imports)]

pub mod child;
pub mod server;
pub mod store;
pub mod workload;

pub use child::*;
pub use server::*;
pub use store::*;
pub use workload::*;

use hoardhaven::engine::EngineKind;

/// Every engine, for the suites that run against each.
pub const ENGINES: [EngineKind; 2] = [EngineKind::Bitcask, EngineKind::Memory];
