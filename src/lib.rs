//! hoardhaven: a persistent key-value store served over HTTP/JSON.
//!
//! # Layout
//!
//! Two floors: the storage library is its own crate, `hoardhaven-engine` (`crates/engine/`, no
//! HTTP, no async runtime, no CLI), re-exported here as [`engine`]; this crate is the server on
//! top of it.
//!
//! - [`engine`] (= `hoardhaven_engine`): the [`Engine`] trait and the types that cross it;
//!   [`engine::open`] picks one of [`engine::bitcask`] (append-only data files, keydir, merge,
//!   hint files, snapshots; on-disk format in `docs/format.md`) and [`engine::memory`]
//!   (Redis-style table, background snapshots, append-only log).
//! - [`error`] (= `hoardhaven_engine::error`): the engines' error enum ([`Error`]) and [`Result`].
//! - [`http`]: the HTTP/JSON service: `router(state)`, handlers, problem+json errors, limits,
//!   OpenAPI document, Prometheus metrics.
//! - [`config`]: typed settings layered from defaults, TOML file, `HOARDHAVEN_*` environment and
//!   flags; validation naming the bad setting.
//! - [`exec`]: where engine calls run (inline, tokio's blocking pool, or a dedicated pool).
//! - [`server`]: bind, open the engine, serve, graceful stop, final sync.
//! - [`transport`]: the accept loop: TCP, optional TLS, HTTP/1.1 with a header-read timeout
//!   and a cap on the request head, HTTP/2 (ALPN h2 and h2c prior knowledge) with the same
//!   limits. [`tls`]: rustls (ring) and the reloadable certificate.
//!   [`reload`]: certificate and token reload on SIGHUP or file change.
//! - [`logging`]: the `tracing` subscriber; a failed log write is dropped, never fatal.
//! - [`telemetry`]: OpenTelemetry spans (requests, engine calls, jobs) exported over OTLP when
//!   an endpoint is configured; W3C `traceparent` honoured.
//! - [`shutdown`]: the stop latch triggered by SIGTERM / Ctrl-C.
//! - [`cli`]: the command line (`serve`, the default subcommand; `bench`).
//! - [`loadgen`]: the load tool behind `hoardhaven bench` (an HTTP client; no storage code).
//!
//! Engines are synchronous libraries with no HTTP in them; the service wraps them.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod exec;
pub mod http;
pub mod loadgen;
pub mod logging;
pub mod reload;
pub mod resp;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod transport;

pub use hoardhaven_engine as engine;
pub use hoardhaven_engine::error;

pub use engine::{Engine, EngineKind, EngineOptions, SyncPolicy};
pub use error::{Error, Result};
