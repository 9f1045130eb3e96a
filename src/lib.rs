//! hoardhaven: a persistent key-value store served over HTTP/JSON.
//!
//! # Layout
//!
//! - [`error`]: the library's error enum ([`Error`]) and [`Result`].
//! - [`engine`]: the [`Engine`] trait and the types that cross it; [`engine::open`] picks one.
//!   - [`engine::bitcask`]: append-only data files, in-memory keydir, merge, hint files,
//!     snapshots (on-disk format in `docs/format.md`).
//!   - [`engine::memory`]: Redis-style in-memory table, background snapshots, append-only log.
//!   - [`engine::dir_lock`]: one process per data directory.
//! - [`loadgen`]: the load tool behind `hoardhaven bench` (an HTTP client; no storage code).
//!
//! Engines are synchronous libraries with no HTTP in them; the service wraps them.

pub mod engine;
pub mod error;
pub mod loadgen;

pub use engine::{Engine, EngineKind, EngineOptions, SyncPolicy};
pub use error::{Error, Result};
