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
//! - [`http`]: the HTTP/JSON service: `router(state)`, handlers, problem+json errors, limits,
//!   OpenAPI document, Prometheus metrics.
//! - [`config`]: typed settings layered from defaults, TOML file, `HOARDHAVEN_*` environment and
//!   flags; validation naming the bad setting.
//! - [`server`]: bind, open the engine, serve, graceful stop, final sync.
//! - [`transport`]: the accept loop: TCP, optional TLS, HTTP/1.1 with a header-read timeout
//!   and a cap on the request head. [`tls`]: rustls (ring) and the reloadable certificate.
//!   [`reload`]: certificate and token reload on SIGHUP or file change.
//! - [`shutdown`]: the stop latch triggered by SIGTERM / Ctrl-C.
//! - [`cli`]: the command line (`serve`, the default subcommand; `bench`).
//! - [`loadgen`]: the load tool behind `hoardhaven bench` (an HTTP client; no storage code).
//!
//! Engines are synchronous libraries with no HTTP in them; the service wraps them.

pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod http;
pub mod loadgen;
pub mod reload;
pub mod server;
pub mod shutdown;
pub mod tls;
pub mod transport;

pub use engine::{Engine, EngineKind, EngineOptions, SyncPolicy};
pub use error::{Error, Result};
