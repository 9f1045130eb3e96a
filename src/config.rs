//! Typed settings of the server, each declared exactly once.
//!
//! Owns [`Settings`]: one struct whose fields are the settings. Its clap attributes give each
//! one its flag, its `HOARDHAVEN_*` environment variable and its default; the TOML file uses the
//! clap argument ids (`sync`, `bitcask.max_file_size`) as keys. [`layered`] applies the layers
//! (defaults < TOML file < environment < flags), [`Settings::validate`] turns the result into a
//! [`ServeConfig`] of checked values or an error naming the bad setting, and the rest of the
//! program only ever sees [`ServeConfig`]. `.env.example` and README.md's configuration table
//! are checked against this one declaration by the tests at the bottom of this file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, FromArgMatches, ValueEnum};
use config::{Config, File, FileFormat};

use crate::engine::bitcask::{BitcaskOptions, MergePolicy, ReadMode};
use crate::engine::compression::{Algorithm as CompressionAlgorithm, Compression};
use crate::engine::memory::{MemoryOptions, SavePoint};
use crate::engine::{EngineKind, EngineOptions, MAX_KEY_LEN, SyncPolicy};
use crate::exec::ExecMode;
use crate::http::auth::{AuthConfig, TokenSet};
use crate::http::watch::WatchOptions;
use crate::http::{HeadLimits, Limits};
use crate::telemetry::OtelConfig;
use crate::tls::TlsConfig;
use crate::transport::Http2Limits;

/// Prefix of the environment variables (`HOARDHAVEN_LISTEN`, `HOARDHAVEN_BITCASK__...`).
pub const ENV_PREFIX: &str = "HOARDHAVEN";

/// Every setting of `hoardhaven serve`: flag, environment variable and default in one place.
///
/// A setting's TOML key is its clap id (the field name, or `section.field` inside a section);
/// its environment variable is `HOARDHAVEN_` + the key in capitals with `__` for the dot.
#[derive(Clone, Debug, Args)]
pub struct Settings {
    /// Address to listen on (`host:port`; port 0 picks a free one)
    #[arg(long, env = "HOARDHAVEN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Also serve the Redis protocol (RESP2/RESP3) on this `host:port`; unset = off (docs/redis.md)
    #[arg(long, env = "HOARDHAVEN_RESP_LISTEN")]
    pub resp_listen: Option<String>,
    /// Data directory (created if missing; one process at a time)
    #[arg(long, env = "HOARDHAVEN_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Storage engine: `bitcask` or `memory`
    #[arg(long, env = "HOARDHAVEN_ENGINE", default_value_t = EngineKind::Bitcask)]
    pub engine: EngineKind,
    /// When a write is durable: `always`, `never`, or an interval like `100ms` (background fsync)
    #[arg(long, env = "HOARDHAVEN_SYNC", default_value_t = SyncPolicy::Always)]
    pub sync: SyncPolicy,
    /// Memory engine: the append-only log `on`, or `off` (snapshots only)
    #[arg(long, env = "HOARDHAVEN_AOF", value_enum, default_value_t = Aof::On)]
    pub aof: Aof,
    /// Value compression of new records (bitcask data files, the memory engine's log): `none` or `lz4`
    #[arg(long, env = "HOARDHAVEN_COMPRESSION", value_name = "CODEC",
          default_value_t = Compression::default().algorithm)]
    pub compression: CompressionAlgorithm,
    /// Values shorter than this many bytes are stored as they are
    #[arg(long, env = "HOARDHAVEN_COMPRESSION_MIN_BYTES", value_name = "BYTES",
          default_value_t = Compression::default().min_bytes)]
    pub compression_min_bytes: usize,
    /// TOML configuration file; its keys are these settings' names (`[bitcask]` etc. for sections)
    #[arg(long, env = "HOARDHAVEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format
    #[arg(long, env = "HOARDHAVEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `hoardhaven=debug,tower_http=debug` (RUST_LOG wins when set)
    #[arg(long, env = "HOARDHAVEN_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Write the bound address to this file once listening (useful with port 0)
    #[arg(long, env = "HOARDHAVEN_PORT_FILE")]
    pub port_file: Option<PathBuf>,
    /// Longest key in bytes after percent-decoding (414 in a path, 413 in a JSON body)
    #[arg(long, env = "HOARDHAVEN_MAX_KEY_BYTES", default_value_t = Limits::default().max_key_bytes)]
    pub max_key_bytes: usize,
    /// Longest value in bytes (413)
    #[arg(long, env = "HOARDHAVEN_MAX_VALUE_BYTES", default_value_t = Limits::default().max_value_bytes)]
    pub max_value_bytes: usize,
    /// Most operations per /batch and keys per /mget (413)
    #[arg(long, env = "HOARDHAVEN_MAX_BATCH_OPS", default_value_t = Limits::default().max_batch_ops)]
    pub max_batch_ops: usize,
    /// Largest JSON request body in bytes (413)
    #[arg(long, env = "HOARDHAVEN_MAX_BODY_BYTES", default_value_t = Limits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Most keys per listing page (a larger `limit` is refused)
    #[arg(long, env = "HOARDHAVEN_MAX_LIST_LIMIT", default_value_t = Limits::default().max_list_limit)]
    pub max_list_limit: usize,
    /// Requests in flight on data and admin routes before shedding with 503 (probes never shed)
    #[arg(long, env = "HOARDHAVEN_MAX_IN_FLIGHT", default_value_t = Limits::default().max_in_flight)]
    pub max_in_flight: usize,
    /// Where engine reads run: `inline`, `blocking` (tokio's pool) or `pool` (a dedicated pool)
    #[arg(long, env = "HOARDHAVEN_EXEC_READS", default_value_t = ExecMode::Inline)]
    pub exec_reads: ExecMode,
    /// Where blocking engine writes run (the fsync before a refused precondition is answered; key writes append inline and await their group commit): `inline`, `blocking` or `pool`
    #[arg(long, env = "HOARDHAVEN_EXEC_WRITES", default_value_t = ExecMode::Pool)]
    pub exec_writes: ExecMode,
    /// Threads of the dedicated engine pool
    #[arg(long, env = "HOARDHAVEN_POOL_THREADS", default_value_t = 64)]
    pub pool_threads: usize,
    /// Seconds to let in-flight requests finish at SIGTERM / Ctrl-C before closing anyway
    #[arg(long, env = "HOARDHAVEN_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Bitcask engine settings (`[bitcask]`).
    #[command(flatten, next_help_heading = "Bitcask engine")]
    pub bitcask: BitcaskSettings,
    /// Memory engine settings (`[memory]`).
    #[command(flatten, next_help_heading = "Memory engine")]
    pub memory: MemorySettings,
    /// Security and overload settings.
    #[command(
        flatten,
        next_help_heading = "Security and overload (docs/security.md)"
    )]
    pub guard: GuardSettings,
    /// Authentication settings (`[auth]`).
    #[command(flatten, next_help_heading = "Authentication")]
    pub auth: AuthSettings,
    /// TLS settings (`[tls]`).
    #[command(flatten, next_help_heading = "TLS")]
    pub tls: TlsSettings,
    /// HTTP/2 settings (`[http2]`).
    #[command(flatten, next_help_heading = "HTTP/2")]
    pub http2: Http2Settings,
    /// OpenTelemetry trace export (`[otel]`).
    #[command(
        flatten,
        next_help_heading = "OpenTelemetry traces (docs/operations.md)"
    )]
    pub otel: OtelSettings,
    /// Watch settings (`[watch]`).
    #[command(flatten, next_help_heading = "Watch (docs/watch.md)")]
    pub watch: WatchSettings,
    /// Cluster settings (top-level keys; docs/cluster.md).
    #[command(flatten, next_help_heading = "Cluster (docs/cluster.md)")]
    pub cluster: ClusterSettings,
}

/// Settings of a clustered node. Top-level keys (no section): grouped here only for `--help`.
/// With no `node_id` the server is a single node, exactly as without clustering.
#[derive(Clone, Debug, Args)]
pub struct ClusterSettings {
    /// This node's id in a Raft cluster (unique, never reused); unset = single node
    #[arg(long, env = "HOARDHAVEN_NODE_ID")]
    pub node_id: Option<u64>,
    /// Address of the peer listener serving /raft/* to other nodes (required with --node-id)
    #[arg(long, env = "HOARDHAVEN_PEER_LISTEN")]
    pub peer_listen: Option<String>,
    /// URL other nodes reach this node's peer listener at; default http(s)://<peer-listen>
    #[arg(long, env = "HOARDHAVEN_PEER_URL")]
    pub peer_url: Option<String>,
    /// PEM file of the CAs trusted for peers' certificates (with TLS); default the system's store
    #[arg(long, env = "HOARDHAVEN_PEER_CA_FILE")]
    pub peer_ca_file: Option<PathBuf>,
    /// URL clients reach this node's API at (sent in X-Hoardhaven-Leader); default http(s)://<listen>
    #[arg(long, env = "HOARDHAVEN_API_URL")]
    pub api_url: Option<String>,
    /// Make this node a one-voter cluster on first start (ignored once initialized)
    #[arg(long, env = "HOARDHAVEN_CLUSTER_INIT", action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub cluster_init: bool,
    /// Join the cluster through this member's peer URL on first start
    #[arg(long, env = "HOARDHAVEN_JOIN")]
    pub join: Option<String>,
    /// Secret every /raft/* call must carry (required when tokens are configured)
    #[arg(long, env = "HOARDHAVEN_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Milliseconds a write or linearizable read waits for a quorum before 503
    #[arg(long, env = "HOARDHAVEN_CLUSTER_TIMEOUT_MS", default_value_t = 5000)]
    pub cluster_timeout_ms: u64,
    /// Raft heartbeat in milliseconds (elections time out after 6-12 heartbeats)
    #[arg(long, env = "HOARDHAVEN_RAFT_HEARTBEAT_MS", default_value_t = 100)]
    pub raft_heartbeat_ms: u64,
    /// Log entries applied since the last Raft snapshot that trigger the next one
    #[arg(long, env = "HOARDHAVEN_RAFT_SNAPSHOT_EVERY", default_value_t = 100000)]
    pub raft_snapshot_every: u64,
}

/// The validated cluster settings.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Node id.
    pub node_id: u64,
    /// Peer listener.
    pub peer_listen: SocketAddr,
    /// Peer URL.
    pub peer_url: String,
    /// API URL; `None` = `http(s)://` and the bound listen address.
    pub api_url: Option<String>,
    /// Initialize.
    pub init: bool,
    /// Join through.
    pub join: Option<String>,
    /// Secret.
    pub secret: Option<String>,
    /// Quorum timeout.
    pub timeout: Duration,
    /// Heartbeat.
    pub heartbeat: Duration,
    /// Snapshot trigger.
    pub snapshot_every: u64,
    /// CAs trusted for peers' certificates; `None` = the system's store. Only with TLS.
    pub peer_ca_file: Option<PathBuf>,
}

impl ClusterSettings {
    fn validate(
        &self,
        listen: SocketAddr,
        security: &SecurityConfig,
    ) -> Result<Option<ClusterConfig>, SettingError> {
        let Some(node_id) = self.node_id else {
            for (set, name) in [
                (self.peer_listen.is_some(), "peer_listen"),
                (self.peer_ca_file.is_some(), "peer_ca_file"),
                (self.cluster_init, "cluster_init"),
                (self.join.is_some(), "join"),
            ] {
                if set {
                    return Err(bad(
                        name,
                        "needs node_id (a cluster node); unset it for a single node",
                    ));
                }
            }
            return Ok(None);
        };
        let peer = self
            .peer_listen
            .as_deref()
            .ok_or_else(|| bad("peer_listen", "required with node_id"))?;
        let peer_listen = resolve(peer).map_err(|r| bad("peer_listen", r))?;
        if peer_listen == listen {
            return Err(bad("peer_listen", "must differ from listen"));
        }
        if self.cluster_init && self.join.is_some() {
            return Err(bad("join", "give either cluster_init or join, not both"));
        }
        let secret = self.cluster_secret.clone().filter(|s| !s.is_empty());
        if security.auth.enabled() && secret.is_none() {
            return Err(bad(
                "cluster_secret",
                "required when tokens are configured (peers must prove they belong)",
            ));
        }
        if !security.auth.enabled()
            && secret.is_none()
            && !peer_listen.ip().to_canonical().is_loopback()
            && !security.allow_unauthenticated_remote
        {
            return Err(bad(
                "cluster_secret",
                "required when peer_listen is not a loopback address (or allow_unauthenticated_remote)",
            ));
        }
        if self.raft_heartbeat_ms == 0 || self.raft_heartbeat_ms > 10_000 {
            return Err(bad("raft_heartbeat_ms", "must be between 1 and 10000"));
        }
        if self.cluster_timeout_ms < 100 {
            return Err(bad("cluster_timeout_ms", "must be at least 100"));
        }
        // With TLS the peer listener serves it too, so every peer URL is https://.
        let scheme = if security.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let peer_url = self
            .peer_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{peer_listen}"));
        let join = self.join.clone().filter(|j| !j.is_empty());
        for (name, url) in [("peer_url", Some(&peer_url)), ("join", join.as_ref())] {
            if let Some(u) = url
                && !u.starts_with(&format!("{scheme}://"))
            {
                return Err(bad(
                    name,
                    if security.tls.is_some() {
                        "must be an https:// URL: with tls.cert_file set, peers speak TLS"
                    } else {
                        "must be an http:// URL: peers speak TLS only when tls.cert_file and tls.key_file are set"
                    },
                ));
            }
        }
        let peer_ca_file = self.peer_ca_file.clone();
        if let Some(f) = &peer_ca_file {
            if security.tls.is_none() {
                return Err(bad(
                    "peer_ca_file",
                    "needs tls.cert_file and tls.key_file (peers speak TLS only then)",
                ));
            }
            crate::tls::trust_roots(Some(f), "peer_ca_file").map_err(|r| bad("peer_ca_file", r))?;
        }
        Ok(Some(ClusterConfig {
            node_id,
            peer_listen,
            peer_url,
            api_url: self.api_url.clone().filter(|u| !u.is_empty()),
            init: self.cluster_init,
            join,
            secret,
            timeout: Duration::from_millis(self.cluster_timeout_ms),
            heartbeat: Duration::from_millis(self.raft_heartbeat_ms),
            snapshot_every: self.raft_snapshot_every.max(1),
            peer_ca_file,
        }))
    }
}

/// Settings of `GET /watch` and blocking reads (`[watch]`, `HOARDHAVEN_WATCH__*`).
#[derive(Clone, Debug, Args)]
pub struct WatchSettings {
    /// Most watchers at once; more get 503 with Retry-After
    #[arg(id = "watch.max_watchers", long = "watch-max-watchers", value_name = "N",
          env = "HOARDHAVEN_WATCH__MAX_WATCHERS", default_value_t = WatchOptions::default().max_watchers)]
    pub max_watchers: usize,
    /// Events buffered per watcher before it counts as slow
    #[arg(id = "watch.buffer_events", long = "watch-buffer-events", value_name = "N",
          env = "HOARDHAVEN_WATCH__BUFFER_EVENTS", default_value_t = WatchOptions::default().buffer_events)]
    pub buffer_events: usize,
    /// Seconds between progress events to an idle watcher
    #[arg(id = "watch.progress_secs", long = "watch-progress-secs", value_name = "SECS",
          env = "HOARDHAVEN_WATCH__PROGRESS_SECS", default_value_t = WatchOptions::default().progress.as_secs())]
    pub progress_secs: u64,
    /// Recent changes kept in memory for watchers (older ones come from the data files or log)
    #[arg(id = "watch.history_events", long = "watch-history-events", value_name = "N",
          env = "HOARDHAVEN_WATCH__HISTORY_EVENTS", default_value_t = WatchOptions::default().history_events)]
    pub history_events: usize,
    /// Largest value sent with values=true (and kept in memory with a change)
    #[arg(id = "watch.value_cap_bytes", long = "watch-value-cap-bytes", value_name = "BYTES",
          env = "HOARDHAVEN_WATCH__VALUE_CAP_BYTES", default_value_t = WatchOptions::default().value_cap)]
    pub value_cap_bytes: usize,
    /// Longest wait of a blocking read (GET /kv/{key}?wait=)
    #[arg(id = "watch.max_wait_secs", long = "watch-max-wait-secs", value_name = "SECS",
          env = "HOARDHAVEN_WATCH__MAX_WAIT_SECS", default_value_t = WatchOptions::default().max_wait.as_secs())]
    pub max_wait_secs: u64,
}

impl WatchSettings {
    fn validate(&self) -> Result<WatchOptions, SettingError> {
        let secs = |name: &str, v: u64| {
            range(name, usize::try_from(v).unwrap_or(usize::MAX), 86_400)
                .and_then(|v| {
                    if v == 0 {
                        Err(bad(name, "must be at least 1"))
                    } else {
                        Ok(v)
                    }
                })
                .map(|v| Duration::from_secs(v as u64))
        };
        let at_least_one = |name: &str, v: usize, max: usize| {
            range(name, v, max).and_then(|v| {
                if v == 0 {
                    Err(bad(name, "must be at least 1"))
                } else {
                    Ok(v)
                }
            })
        };
        Ok(WatchOptions {
            max_watchers: at_least_one("watch.max_watchers", self.max_watchers, 1_000_000)?,
            buffer_events: at_least_one("watch.buffer_events", self.buffer_events, 1_000_000)?,
            progress: secs("watch.progress_secs", self.progress_secs)?,
            history_events: at_least_one("watch.history_events", self.history_events, 100_000_000)?,
            value_cap: range("watch.value_cap_bytes", self.value_cap_bytes, 1 << 30)?,
            max_wait: secs("watch.max_wait_secs", self.max_wait_secs)?,
        })
    }
}

/// Settings that protect the server from misuse: protected mode, head limits, timeouts, CORS.
/// Top-level keys (no section): they are grouped here only for `--help`.
#[derive(Clone, Debug, Args)]
pub struct GuardSettings {
    /// Serve a non-loopback address with no tokens configured (protected mode off)
    #[arg(long, env = "HOARDHAVEN_ALLOW_UNAUTHENTICATED_REMOTE", action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub allow_unauthenticated_remote: bool,
    /// Longest request target (path and query) in bytes (414); at least 3 x max-key-bytes + 64
    #[arg(long, env = "HOARDHAVEN_MAX_URI_BYTES", default_value_t = HeadLimits::default().max_uri_bytes)]
    pub max_uri_bytes: usize,
    /// Most bytes of request header fields (431)
    #[arg(long, env = "HOARDHAVEN_MAX_HEADER_BYTES", default_value_t = HeadLimits::default().max_header_bytes)]
    pub max_header_bytes: usize,
    /// Seconds to answer a request, body read included (408); 0 = no limit; POST /admin/* exempt
    #[arg(long, env = "HOARDHAVEN_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Seconds to receive a request head or finish a TLS handshake; also the keep-alive idle limit
    #[arg(
        long,
        env = "HOARDHAVEN_HEADER_READ_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub header_read_timeout_secs: u64,
    /// Origins allowed by CORS, comma-separated (`*` = any); empty = CORS off
    #[arg(long, env = "HOARDHAVEN_CORS_ORIGINS", default_value = "")]
    pub cors_origins: String,
}

/// Settings of the bitcask engine (`[bitcask]`, `HOARDHAVEN_BITCASK__*`).
#[derive(Clone, Debug, Args)]
pub struct BitcaskSettings {
    /// Rotate the active data file past this many bytes
    #[arg(id = "bitcask.max_file_size", long = "bitcask-max-file-size", value_name = "BYTES",
          env = "HOARDHAVEN_BITCASK__MAX_FILE_SIZE", default_value_t = BitcaskOptions::default().max_file_size)]
    pub max_file_size: u64,
    /// How data files are read: `mmap` (sealed files and the written part of the active
    /// file; values served as slices of the map) or `pread`
    #[arg(id = "bitcask.read_mode", long = "bitcask-read-mode", value_name = "MODE",
          env = "HOARDHAVEN_BITCASK__READ_MODE", default_value_t = ReadMode::Mmap)]
    pub read_mode: ReadMode,
    /// Automatic merge when this share of sealed bytes is dead (0.0-1.0)...
    #[arg(id = "bitcask.merge_min_fragmentation", long = "bitcask-merge-min-fragmentation",
          value_name = "SHARE", env = "HOARDHAVEN_BITCASK__MERGE_MIN_FRAGMENTATION",
          default_value_t = MergePolicy::default().min_fragmentation)]
    pub merge_min_fragmentation: f64,
    /// ...and at least this many bytes are dead
    #[arg(id = "bitcask.merge_min_dead_bytes", long = "bitcask-merge-min-dead-bytes",
          value_name = "BYTES", env = "HOARDHAVEN_BITCASK__MERGE_MIN_DEAD_BYTES",
          default_value_t = MergePolicy::default().min_dead_bytes)]
    pub merge_min_dead_bytes: u64,
    /// Seconds between merge-policy checks; 0 = merge only on POST /admin/merge
    #[arg(id = "bitcask.merge_interval_secs", long = "bitcask-merge-interval-secs",
          value_name = "SECS", env = "HOARDHAVEN_BITCASK__MERGE_INTERVAL_SECS",
          default_value_t = MergePolicy::default().check_interval.map_or(0, |d| d.as_secs()))]
    pub merge_interval_secs: u64,
    /// Automatic merges only between these UTC hours, e.g. `2-5`; empty = any time
    #[arg(
        id = "bitcask.merge_window",
        long = "bitcask-merge-window",
        value_name = "HOURS",
        env = "HOARDHAVEN_BITCASK__MERGE_WINDOW",
        default_value = ""
    )]
    pub merge_window: String,
    /// Snapshots kept in <data-dir>/snapshots
    #[arg(id = "bitcask.snapshots_kept", long = "bitcask-snapshots-kept", value_name = "N",
          env = "HOARDHAVEN_BITCASK__SNAPSHOTS_KEPT", default_value_t = BitcaskOptions::default().snapshots_kept)]
    pub snapshots_kept: usize,
}

/// Settings of the memory engine (`[memory]`, `HOARDHAVEN_MEMORY__*`); `aof` is top-level.
#[derive(Clone, Debug, Args)]
pub struct MemorySettings {
    /// Table shards (rounded up to a power of two): more = less lock contention, shorter pauses
    #[arg(id = "memory.shards", long = "memory-shards", value_name = "N",
          env = "HOARDHAVEN_MEMORY__SHARDS", default_value_t = MemoryOptions::default().shards)]
    pub shards: usize,
    /// Background snapshots: `secs:changes` pairs, comma-separated (Redis's `save`); empty = on demand only
    #[arg(id = "memory.save_points", long = "memory-save-points", value_name = "LIST",
          env = "HOARDHAVEN_MEMORY__SAVE_POINTS",
          default_value_t = SavePoints(MemoryOptions::default().save_points))]
    pub save_points: SavePoints,
    /// Snapshots kept on disk (at least 1)
    #[arg(id = "memory.snapshots_kept", long = "memory-snapshots-kept", value_name = "N",
          env = "HOARDHAVEN_MEMORY__SNAPSHOTS_KEPT", default_value_t = MemoryOptions::default().snapshots_kept)]
    pub snapshots_kept: usize,
    /// Rewrite the log when it has grown by this percent of the base snapshot's size...
    #[arg(id = "memory.rewrite_growth_percent", long = "memory-rewrite-growth-percent",
          value_name = "PERCENT", env = "HOARDHAVEN_MEMORY__REWRITE_GROWTH_PERCENT",
          default_value_t = MemoryOptions::default().rewrite_growth_percent)]
    pub rewrite_growth_percent: u64,
    /// ...and is at least this many bytes
    #[arg(id = "memory.rewrite_min_bytes", long = "memory-rewrite-min-bytes", value_name = "BYTES",
          env = "HOARDHAVEN_MEMORY__REWRITE_MIN_BYTES",
          default_value_t = MemoryOptions::default().rewrite_min_bytes)]
    pub rewrite_min_bytes: u64,
    /// Milliseconds between hand-offs of buffered log records to the OS when sync is not `always`
    #[arg(id = "memory.flush_interval_ms", long = "memory-flush-interval-ms", value_name = "MS",
          env = "HOARDHAVEN_MEMORY__FLUSH_INTERVAL_MS",
          default_value_t = millis(MemoryOptions::default().flush_interval))]
    pub flush_interval_ms: u64,
    /// Milliseconds between checks of expired keys and of the save points
    #[arg(id = "memory.sweep_interval_ms", long = "memory-sweep-interval-ms", value_name = "MS",
          env = "HOARDHAVEN_MEMORY__SWEEP_INTERVAL_MS",
          default_value_t = millis(MemoryOptions::default().sweep_interval))]
    pub sweep_interval_ms: u64,
}

/// Settings of bearer-token authentication (`[auth]`). Any token source turns it on.
#[derive(Clone, Debug, Args)]
pub struct AuthSettings {
    /// Tokens `role:token` or `role:sha256:<hex>`, comma-separated (prefer --auth-token-file:
    /// flags and environment can be read by other local users)
    #[arg(
        id = "auth.tokens",
        long = "auth-tokens",
        value_name = "TOKENS",
        env = "HOARDHAVEN_AUTH__TOKENS",
        hide_env_values = true,
        default_value = ""
    )]
    pub tokens: String,
    /// File of tokens, one `role:token` or `role:sha256:<hex>` per line; re-read on SIGHUP
    #[arg(
        id = "auth.token_file",
        long = "auth-token-file",
        value_name = "FILE",
        env = "HOARDHAVEN_AUTH__TOKEN_FILE"
    )]
    pub token_file: Option<PathBuf>,
    /// /metrics answers without a token
    #[arg(id = "auth.metrics_open", long = "auth-metrics-open", env = "HOARDHAVEN_AUTH__METRICS_OPEN",
          action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub metrics_open: bool,
    /// /openapi.json and /docs answer without a token
    #[arg(id = "auth.docs_open", long = "auth-docs-open", env = "HOARDHAVEN_AUTH__DOCS_OPEN",
          action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub docs_open: bool,
}

/// Settings of TLS (`[tls]`). Both files set = HTTPS only; neither = plain HTTP.
#[derive(Clone, Debug, Args)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first; with --tls-key-file serves HTTPS only
    #[arg(
        id = "tls.cert_file",
        long = "tls-cert-file",
        value_name = "FILE",
        env = "HOARDHAVEN_TLS__CERT_FILE"
    )]
    pub cert_file: Option<PathBuf>,
    /// PEM private key
    #[arg(
        id = "tls.key_file",
        long = "tls-key-file",
        value_name = "FILE",
        env = "HOARDHAVEN_TLS__KEY_FILE"
    )]
    pub key_file: Option<PathBuf>,
    /// Seconds between checks of the files for change (reload); 0 = reload on SIGHUP only
    #[arg(
        id = "tls.reload_interval_secs",
        long = "tls-reload-interval-secs",
        value_name = "SECS",
        env = "HOARDHAVEN_TLS__RELOAD_INTERVAL_SECS",
        default_value_t = 10
    )]
    pub reload_interval_secs: u64,
}

/// Settings of HTTP/2 (`[http2]`): h2 over TLS (ALPN) and h2c with prior knowledge.
#[derive(Clone, Debug, Args)]
pub struct Http2Settings {
    /// Serve HTTP/2 beside HTTP/1.1 on the same listener (TLS: ALPN h2; clear text: prior knowledge)
    #[arg(id = "http2.enabled", long = "http2-enabled", value_name = "BOOL",
          env = "HOARDHAVEN_HTTP2__ENABLED", action = ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", default_value_t = true)]
    pub enabled: bool,
    /// Streams one HTTP/2 connection may have open at once
    #[arg(id = "http2.max_concurrent_streams", long = "http2-max-concurrent-streams",
          value_name = "N", env = "HOARDHAVEN_HTTP2__MAX_CONCURRENT_STREAMS",
          default_value_t = Http2Limits::default().max_concurrent_streams)]
    pub max_concurrent_streams: u32,
    /// HTTP/2 flow-control window of each stream in bytes (65535 to 2147483647)
    #[arg(id = "http2.stream_window_bytes", long = "http2-stream-window-bytes",
          value_name = "BYTES", env = "HOARDHAVEN_HTTP2__STREAM_WINDOW_BYTES",
          default_value_t = Http2Limits::default().stream_window_bytes)]
    pub stream_window_bytes: u32,
    /// HTTP/2 flow-control window of each connection in bytes (65535 to 2147483647)
    #[arg(id = "http2.connection_window_bytes", long = "http2-connection-window-bytes",
          value_name = "BYTES", env = "HOARDHAVEN_HTTP2__CONNECTION_WINDOW_BYTES",
          default_value_t = Http2Limits::default().connection_window_bytes)]
    pub connection_window_bytes: u32,
}

impl Http2Settings {
    fn validate(&self) -> Result<Option<Http2Limits>, SettingError> {
        if !self.enabled {
            return Ok(None);
        }
        // RFC 9113 §6.9.1-2: a window is at most 2^31-1; below the default 65535 a client
        // would stall on its first large body.
        let window = |name: &str, v: u32| {
            if (65_535..=0x7fff_ffff).contains(&v) {
                Ok(v)
            } else {
                Err(bad(
                    name,
                    format!("must be between 65535 and 2147483647, got {v}"),
                ))
            }
        };
        let streams = self.max_concurrent_streams;
        if !(1..=100_000).contains(&streams) {
            return Err(bad(
                "http2.max_concurrent_streams",
                format!("must be between 1 and 100000, got {streams}"),
            ));
        }
        Ok(Some(Http2Limits {
            max_concurrent_streams: streams,
            stream_window_bytes: window("http2.stream_window_bytes", self.stream_window_bytes)?,
            connection_window_bytes: window(
                "http2.connection_window_bytes",
                self.connection_window_bytes,
            )?,
        }))
    }
}

/// Settings of trace export (`[otel]`): off unless an endpoint is given.
#[derive(Clone, Debug, Args)]
pub struct OtelSettings {
    /// OTLP/HTTP collector base URL (e.g. http://127.0.0.1:4318); spans go to <URL>/v1/traces; unset = off
    #[arg(
        id = "otel.endpoint",
        long = "otel-endpoint",
        value_name = "URL",
        env = "HOARDHAVEN_OTEL__ENDPOINT"
    )]
    pub endpoint: Option<String>,
    /// The `service.name` resource attribute of exported spans
    #[arg(
        id = "otel.service_name",
        long = "otel-service-name",
        value_name = "NAME",
        env = "HOARDHAVEN_OTEL__SERVICE_NAME",
        default_value = "hoardhaven"
    )]
    pub service_name: String,
    /// Fraction of new traces sampled (0.0 to 1.0); a sampled incoming traceparent is always kept
    #[arg(
        id = "otel.sample_ratio",
        long = "otel-sample-ratio",
        value_name = "RATIO",
        env = "HOARDHAVEN_OTEL__SAMPLE_RATIO",
        default_value_t = 1.0
    )]
    pub sample_ratio: f64,
}

impl OtelSettings {
    fn validate(&self) -> Result<Option<OtelConfig>, SettingError> {
        let Some(endpoint) = self
            .endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
        else {
            return Ok(None);
        };
        let endpoint =
            crate::telemetry::traces_url(endpoint).map_err(|r| bad("otel.endpoint", r))?;
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(bad("otel.sample_ratio", "must be between 0.0 and 1.0"));
        }
        if self.service_name.trim().is_empty() {
            return Err(bad("otel.service_name", "must not be empty"));
        }
        Ok(Some(OtelConfig {
            traces_url: endpoint,
            service_name: self.service_name.trim().to_owned(),
            sample_ratio: self.sample_ratio,
        }))
    }
}

/// The memory engine's append-only log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Aof {
    /// Every write is logged (durability as `sync` says).
    #[value(alias = "true")]
    On,
    /// Snapshots only (Redis's default): writes since the last snapshot are lost on a crash.
    #[value(alias = "false")]
    Off,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Save points as written in a setting: `secs:changes` pairs, comma-separated (`60:1,300:100`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavePoints(pub Vec<SavePoint>);

impl FromStr for SavePoints {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut points = Vec::new();
        for part in s.split([',', ' ']).map(str::trim).filter(|p| !p.is_empty()) {
            let parsed = part
                .split_once(':')
                .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse().ok()?)));
            let Some((secs, changes)) = parsed.filter(|(secs, _)| *secs > 0) else {
                return Err(format!(
                    "expected `secs:changes` pairs like `60:1,300:100` (secs > 0), got `{part}`"
                ));
            };
            points.push(SavePoint {
                after: Duration::from_secs(secs),
                changes,
            });
        }
        Ok(SavePoints(points))
    }
}

impl fmt::Display for SavePoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{}:{}", p.after.as_secs(), p.changes)?;
        }
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl BitcaskSettings {
    fn validate(&self) -> Result<BitcaskOptions, SettingError> {
        let window = match self.merge_window.trim() {
            "" => None,
            w => {
                let parsed = w
                    .split_once('-')
                    .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
                Some(parsed.ok_or_else(|| {
                    bad(
                        "bitcask.merge_window",
                        format!("expected UTC hours like `2-5`, got `{w}`"),
                    )
                })?)
            }
        };
        let opts = BitcaskOptions {
            max_file_size: self.max_file_size,
            read_mode: self.read_mode,
            merge: MergePolicy {
                min_fragmentation: self.merge_min_fragmentation,
                min_dead_bytes: self.merge_min_dead_bytes,
                check_interval: (self.merge_interval_secs > 0)
                    .then(|| Duration::from_secs(self.merge_interval_secs)),
                window,
            },
            snapshots_kept: self.snapshots_kept,
            ..BitcaskOptions::default()
        };
        opts.validate().map_err(|e| engine_setting("bitcask", e))?;
        Ok(opts)
    }
}

impl MemorySettings {
    fn validate(&self, aof: Aof) -> Result<MemoryOptions, SettingError> {
        let opts = MemoryOptions {
            aof: aof == Aof::On,
            shards: self.shards,
            save_points: self.save_points.0.clone(),
            snapshots_kept: self.snapshots_kept,
            rewrite_growth_percent: self.rewrite_growth_percent,
            rewrite_min_bytes: self.rewrite_min_bytes,
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            sweep_interval: Duration::from_millis(self.sweep_interval_ms),
            ..MemoryOptions::default()
        };
        opts.validate().map_err(|e| engine_setting("memory", e))?;
        Ok(opts)
    }
}

/// Names an engine's own validation error by the setting the user wrote.
fn engine_setting(section: &str, e: crate::Error) -> SettingError {
    match e {
        crate::Error::InvalidConfig { name, reason } => {
            let field = name.strip_prefix(&format!("{section}.")).unwrap_or(&name);
            let field = match field {
                "merge.min_fragmentation" => "merge_min_fragmentation",
                "merge.window" => "merge_window",
                "merge.check_interval" => "merge_interval_secs",
                "flush_interval" => "flush_interval_ms",
                "sweep_interval" => "sweep_interval_ms",
                other => other,
            };
            bad(&format!("{section}.{field}"), reason)
        }
        other => bad(section, other.to_string()),
    }
}

impl AuthSettings {
    fn validate(&self) -> Result<AuthConfig, SettingError> {
        let tokens =
            TokenSet::parse(&self.tokens, "auth.tokens").map_err(|r| bad("auth.tokens", r))?;
        if let Some(f) = &self.token_file {
            let set = TokenSet::load(f).map_err(|r| bad("auth.token_file", r))?;
            if set.is_empty() {
                return Err(bad(
                    "auth.token_file",
                    format!("{} holds no tokens", f.display()),
                ));
            }
        }
        Ok(AuthConfig {
            tokens,
            token_file: self.token_file.clone(),
            metrics_open: self.metrics_open,
            docs_open: self.docs_open,
        })
    }
}

impl TlsSettings {
    fn validate(&self) -> Result<Option<TlsConfig>, SettingError> {
        let cfg = match (&self.cert_file, &self.key_file) {
            (None, None) => return Ok(None),
            (Some(_), None) => return Err(bad("tls.key_file", "needed with tls.cert_file")),
            (None, Some(_)) => return Err(bad("tls.cert_file", "needed with tls.key_file")),
            (Some(c), Some(k)) => TlsConfig {
                cert_file: c.clone(),
                key_file: k.clone(),
                reload_interval: (self.reload_interval_secs > 0)
                    .then(|| Duration::from_secs(self.reload_interval_secs)),
            },
        };
        crate::tls::load(&cfg).map_err(|e| bad("tls.cert_file", format!("{e:#}")))?;
        Ok(Some(cfg))
    }
}

/// Validated security and overload settings.
#[derive(Clone, Debug)]
pub struct SecurityConfig {
    /// Bearer tokens and public endpoints.
    pub auth: AuthConfig,
    /// TLS, when configured.
    pub tls: Option<TlsConfig>,
    /// Protected mode is off.
    pub allow_unauthenticated_remote: bool,
    /// Limits on the request head.
    pub head: HeadLimits,
    /// Longest time to answer a request; `None` = no limit.
    pub request_timeout: Option<Duration>,
    /// Longest time to receive a request head or finish a TLS handshake.
    pub header_read_timeout: Duration,
    /// CORS origins; empty = off.
    pub cors_origins: Vec<String>,
}

/// The validated, typed configuration of `hoardhaven serve`.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where the Redis protocol listener listens, when on.
    pub resp_listen: Option<SocketAddr>,
    /// How to open the engine.
    pub engine: EngineOptions,
    /// Memory engine: keep the append-only log.
    pub aof: bool,
    /// Request limits.
    pub limits: Limits,
    /// Where engine reads run.
    pub exec_reads: ExecMode,
    /// Where engine writes run.
    pub exec_writes: ExecMode,
    /// Dedicated pool size.
    pub pool_threads: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// Watch settings.
    pub watch: WatchOptions,
    /// File to write the bound address to.
    pub port_file: Option<PathBuf>,
    /// Longest wait for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
    /// Authentication, TLS, head limits, timeouts, CORS.
    pub security: SecurityConfig,
    /// HTTP/2 limits; `None` = HTTP/1.1 only.
    pub http2: Option<Http2Limits>,
    /// Trace export; `None` = off.
    pub otel: Option<OtelConfig>,
    /// Cluster settings; `None` = a single node.
    pub cluster: Option<ClusterConfig>,
}

/// A setting that failed validation; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `{name}` (flag --{flag}, env {env}): {reason}")]
pub struct SettingError {
    name: String,
    flag: String,
    env: String,
    reason: String,
}

/// Why the settings could not be read: every variant is a usage error of the operator.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The TOML file could not be read or parsed.
    #[error("configuration file {}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong (the parser's message; not a chained source, which `{:#}` would
        /// print a second time).
        reason: String,
    },
    /// The TOML file names a setting that does not exist.
    #[error("configuration file {}: unknown setting `{key}` (see .env.example)", path.display())]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key as written (`section.key` inside a section).
        key: String,
    },
    /// A value in the TOML file is not valid for its setting.
    #[error("configuration file {}: `{key}`: {message}", path.display())]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The key as written.
        key: String,
        /// clap's message about the value.
        message: String,
    },
    /// A `HOARDHAVEN_*` variable that is no setting (a typo would otherwise be ignored).
    #[error("unknown environment variable {0} (see .env.example for the settings)")]
    UnknownEnv(String),
    /// A setting's value failed validation.
    #[error(transparent)]
    Setting(#[from] SettingError),
}

fn bad(name: &str, reason: impl Into<String>) -> SettingError {
    SettingError {
        name: name.into(),
        flag: name.replace(['_', '.'], "-"),
        env: format!(
            "{ENV_PREFIX}_{}",
            name.to_ascii_uppercase().replace('.', "__")
        ),
        reason: reason.into(),
    }
}

fn range(name: &str, v: usize, max: usize) -> Result<usize, SettingError> {
    if v == 0 || v > max {
        return Err(bad(name, format!("must be between 1 and {max}, got {v}")));
    }
    Ok(v)
}

impl Settings {
    /// The compression setting both engines write with.
    fn compression(&self) -> Compression {
        Compression {
            algorithm: self.compression,
            min_bytes: self.compression_min_bytes,
        }
    }

    /// Checks every setting and converts them to typed values.
    ///
    /// # Errors
    /// The first bad setting, named, with the reason.
    pub fn validate(&self) -> Result<ServeConfig, SettingError> {
        let listen = resolve(&self.listen).map_err(|r| bad("listen", r))?;
        let resp_listen = match &self.resp_listen {
            Some(a) if !a.trim().is_empty() => Some(resolve(a).map_err(|r| bad("resp_listen", r))?),
            _ => None,
        };
        let kind = self.engine;
        if self.data_dir.as_os_str().is_empty() {
            return Err(bad("data_dir", "must not be empty"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| bad("log_level", e.to_string()))?;
        let limits = Limits {
            max_key_bytes: range("max_key_bytes", self.max_key_bytes, MAX_KEY_LEN)?,
            max_value_bytes: range(
                "max_value_bytes",
                self.max_value_bytes,
                kind.max_value_len().min(isize::MAX as usize),
            )?,
            max_batch_ops: range("max_batch_ops", self.max_batch_ops, 1_000_000)?,
            max_body_bytes: range("max_body_bytes", self.max_body_bytes, 1 << 32)?,
            max_list_limit: range("max_list_limit", self.max_list_limit, 1_000_000)?,
            max_in_flight: range("max_in_flight", self.max_in_flight, 1_000_000)?,
        };
        let pool_threads = range("pool_threads", self.pool_threads, 4096)?;
        let engine = EngineOptions {
            kind,
            dir: self.data_dir.clone(),
            sync: self.sync,
            bitcask: BitcaskOptions {
                compression: self.compression(),
                ..self.bitcask.validate()?
            },
            memory: MemoryOptions {
                compression: self.compression(),
                ..self.memory.validate(self.aof)?
            },
        };
        let security = self
            .guard
            .validate(listen, &limits, &self.auth, &self.tls)?;
        if let Some(r) = resp_listen {
            protected_mode(&security, r, "resp_listen")?;
        }
        let cluster = self.cluster.validate(listen, &security)?;
        Ok(ServeConfig {
            cluster,
            listen,
            resp_listen,
            engine,
            aof: self.aof == Aof::On,
            limits,
            exec_reads: self.exec_reads,
            exec_writes: self.exec_writes,
            pool_threads,
            log_format: self.log_format,
            log_level: self.log_level.clone(),
            watch: self.watch.validate()?,
            port_file: self.port_file.clone(),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            security,
            http2: self.http2.validate()?,
            otel: self.otel.validate()?,
        })
    }
}

impl GuardSettings {
    fn validate(
        &self,
        listen: SocketAddr,
        limits: &Limits,
        auth: &AuthSettings,
        tls: &TlsSettings,
    ) -> Result<SecurityConfig, SettingError> {
        let auth = auth.validate()?;

        check_protected(
            auth.enabled(),
            self.allow_unauthenticated_remote,
            listen,
            "listen",
        )?;
        // A key in the path may be percent-encoded (3 bytes per byte) after `/kv/`.
        let min_uri = 3 * limits.max_key_bytes + 64;
        let max_uri_bytes = range("max_uri_bytes", self.max_uri_bytes, 1 << 20)?;
        if max_uri_bytes < min_uri {
            return Err(bad(
                "max_uri_bytes",
                format!("must be at least {min_uri} to fit a percent-encoded key of max_key_bytes"),
            ));
        }
        let max_header_bytes = range("max_header_bytes", self.max_header_bytes, 1 << 20)?;
        if max_header_bytes < 1024 {
            return Err(bad("max_header_bytes", "must be at least 1024"));
        }
        let header_read = range(
            "header_read_timeout_secs",
            usize::try_from(self.header_read_timeout_secs).unwrap_or(usize::MAX),
            3600,
        )?;
        let request_timeout = match self.request_timeout_secs {
            0 => None,
            s if s > 86_400 => {
                return Err(bad(
                    "request_timeout_secs",
                    format!("must be between 0 (none) and 86400, got {s}"),
                ));
            }
            s => Some(Duration::from_secs(s)),
        };
        let cors_origins: Vec<String> = self
            .cors_origins
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_owned)
            .collect();
        crate::http::guard::cors(&cors_origins).map_err(|r| bad("cors_origins", r))?;
        Ok(SecurityConfig {
            auth,
            tls: tls.validate()?,
            allow_unauthenticated_remote: self.allow_unauthenticated_remote,
            head: HeadLimits {
                max_uri_bytes,
                max_header_bytes,
            },
            request_timeout,
            header_read_timeout: Duration::from_secs(header_read as u64),
            cors_origins,
        })
    }
}

/// Protected mode: with no tokens, a non-loopback address needs allow_unauthenticated_remote.
fn check_protected(
    auth: bool,
    allowed: bool,
    addr: SocketAddr,
    setting: &str,
) -> Result<(), SettingError> {
    if !auth && !allowed && !addr.ip().to_canonical().is_loopback() {
        return Err(bad(
            setting,
            format!(
                "protected mode: {addr} is not a loopback address and no auth tokens are \
                 configured; set auth tokens (--auth-token-file or --auth-tokens) or pass \
                 --allow-unauthenticated-remote to serve without authentication"
            ),
        ));
    }
    Ok(())
}

fn protected_mode(
    sec: &SecurityConfig,
    addr: SocketAddr,
    setting: &str,
) -> Result<(), SettingError> {
    check_protected(
        sec.auth.enabled(),
        sec.allow_unauthenticated_remote,
        addr,
        setting,
    )
}

fn resolve(listen: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = listen.trim().parse::<SocketAddr>() {
        return Ok(a);
    }
    listen
        .trim()
        .to_socket_addrs()
        .map_err(|e| format!("`{listen}` is not host:port ({e})"))?
        .next()
        .ok_or_else(|| format!("`{listen}` resolves to no address"))
}

/// The clap command of the settings alone (what `hoardhaven serve` parses).
pub fn command() -> clap::Command {
    Settings::augment_args(clap::Command::new("serve").no_binary_name(true))
}

/// Applies the TOML file (when `settings.config` names one) under the environment and flags:
/// `matches` are what clap parsed for `settings`, so every setting whose value came from its
/// default (and only those) takes the file's value. Then checks the environment for
/// `HOARDHAVEN_*` variables that are no setting.
///
/// # Errors
/// An unreadable file, an unknown key, a bad value (named with the file), or an unknown
/// environment variable.
pub fn layered(mut settings: Settings, matches: &ArgMatches) -> Result<Settings, LoadError> {
    let cmd = command();
    // vars_os: a non-UTF-8 variable elsewhere in the environment must not panic here.
    check_env(
        &cmd,
        std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()),
    )?;
    let Some(path) = settings.config.clone() else {
        return Ok(settings);
    };
    let mut file_args = Vec::new();
    for (key, value) in read_file(&path)? {
        if key == "config" {
            return Err(LoadError::BadValue {
                path: path.clone(),
                key,
                message: "`config` cannot be set inside the configuration file".into(),
            });
        }
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id().as_str() == key && key != "config")
            .ok_or_else(|| LoadError::UnknownKey {
                path: path.clone(),
                key: key.clone(),
            })?;
        let from_default = matches!(
            matches.value_source(&key),
            None | Some(ValueSource::DefaultValue)
        );
        if from_default {
            let flag = format!("--{}={value}", arg.get_long().unwrap_or(key.as_str()));
            file_args.push((key, flag));
        }
    }
    // Parse only the file's values, with no defaults and no environment, so that updating
    // `settings` from them touches exactly the settings the file gives.
    let bare = cmd.mut_args(|a| a.default_value(None).env(None));
    for (key, arg) in &file_args {
        let m = bare
            .clone()
            .try_get_matches_from([arg])
            .map_err(|e| LoadError::BadValue {
                path: path.clone(),
                key: key.clone(),
                message: first_line(&e.to_string()),
            })?;
        settings
            .update_from_arg_matches(&m)
            .map_err(|e| LoadError::BadValue {
                path: path.clone(),
                key: key.clone(),
                message: first_line(&e.to_string()),
            })?;
    }
    Ok(settings)
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned()
}

/// The file's settings as `(key, value)`, `section.key` for keys inside a section.
fn read_file(path: &Path) -> Result<BTreeMap<String, String>, LoadError> {
    let file_err = |e: config::ConfigError| LoadError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    if let Err(e) = std::fs::metadata(path) {
        return Err(LoadError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        });
    }
    let table = Config::builder()
        .add_source(File::from(path).format(FileFormat::Toml).required(true))
        .build()
        .and_then(|c| c.try_deserialize::<config::Map<String, config::Value>>())
        .map_err(file_err)?;
    let mut out = BTreeMap::new();
    for (key, value) in table {
        match value.kind {
            config::ValueKind::Table(section) => {
                for (k, v) in section {
                    let key = format!("{key}.{k}");
                    out.insert(key, v.into_string().map_err(file_err)?);
                }
            }
            _ => {
                out.insert(key, value.into_string().map_err(file_err)?);
            }
        }
    }
    Ok(out)
}

/// `HOARDHAVEN_*` variables that are not server settings: read by the client subcommands
/// (`HOARDHAVEN_TOKEN`, `HOARDHAVEN_URL`, `HOARDHAVEN_CA_CERT`), the test suites and scripts
/// (`HOARDHAVEN_REQUIRE_TOOLS`, crash injection, soak and fuzz knobs). One environment can hold
/// them and still start a server, which refuses any other unknown `HOARDHAVEN_*` variable.
const CLIENT_ONLY_ENV: &[&str] = &[
    "HOARDHAVEN_TOKEN",
    "HOARDHAVEN_URL",
    "HOARDHAVEN_CA_CERT",
    "HOARDHAVEN_REQUIRE_TOOLS",
    "HOARDHAVEN_CRASH_AT",
    "HOARDHAVEN_TEST_SYNC_DELAY_MS",
    "HOARDHAVEN_SOAK_OUT",
    "HOARDHAVEN_SOAK_SECS",
    "HOARDHAVEN_ST_REPORT",
    "HOARDHAVEN_FUZZ_NO_INSTALL",
];

fn check_env(cmd: &clap::Command, vars: impl Iterator<Item = String>) -> Result<(), LoadError> {
    let prefix = format!("{ENV_PREFIX}_");
    for var in vars.filter(|v| v.starts_with(&prefix)) {
        let known = CLIENT_ONLY_ENV.contains(&var.as_str())
            || cmd
                .get_arguments()
                .any(|a| a.get_env().is_some_and(|e| e == var.as_str()));
        if !known {
            return Err(LoadError::UnknownEnv(var));
        }
    }
    Ok(())
}

/// Parses `args` (flags only, no program name) as `hoardhaven serve` does, environment included,
/// and applies the configuration file. For tests and embedders; the binary goes through
/// [`crate::cli`].
///
/// # Errors
/// A bad flag (clap's message), or what [`layered`] refuses.
pub fn parse<I, T>(args: I) -> Result<Settings, anyhow::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let m = command().try_get_matches_from(args)?;
    let s = Settings::from_arg_matches(&m)?;
    Ok(layered(s, &m)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings command with the process environment ignored, so a developer's shell
    /// cannot change what the tests see.
    fn clean() -> clap::Command {
        command().mut_args(|a| a.env(None))
    }

    fn parse_clean(args: &[&str]) -> (Settings, ArgMatches) {
        let m = clean().try_get_matches_from(args).expect("flags parse");
        (Settings::from_arg_matches(&m).expect("settings"), m)
    }

    fn defaults() -> Settings {
        parse_clean(&[]).0
    }

    #[test]
    fn defaults_validate() {
        let c = defaults().validate().expect("defaults are valid");
        assert_eq!(c.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(c.engine.kind, EngineKind::Bitcask);
        assert_eq!(c.engine.sync, SyncPolicy::Always);
        assert_eq!(c.limits, Limits::default());
        // The server reads data files through maps (measured faster); the library keeps pread.
        assert_eq!(
            c.engine.bitcask,
            BitcaskOptions {
                read_mode: ReadMode::Mmap,
                ..BitcaskOptions::default()
            }
        );
        assert_eq!(c.engine.memory, MemoryOptions::default());
    }

    #[test]
    fn typed_flags_parse_and_refuse() {
        let (s, _) = parse_clean(&[
            "--engine",
            "memory",
            "--sync",
            "100ms",
            "--aof",
            "off",
            "--exec-reads",
            "pool",
            "--memory-save-points",
            "900:1,300:10",
            "--auth-metrics-open",
        ]);
        assert_eq!(s.engine, EngineKind::Memory);
        assert_eq!(s.sync, SyncPolicy::Every(Duration::from_millis(100)));
        assert_eq!(s.aof, Aof::Off);
        assert_eq!(s.exec_reads, ExecMode::Pool);
        assert_eq!(s.memory.save_points.to_string(), "900:1,300:10");
        assert!(s.auth.metrics_open);
        let c = s.validate().expect("valid");
        assert!(!c.engine.memory.aof);
        assert_eq!(c.engine.memory.save_points.len(), 2);
        for bad in [
            ["--engine", "rocks"],
            ["--sync", "sometimes"],
            ["--aof", "maybe"],
            ["--log-format", "xml"],
            ["--memory-save-points", "60"],
            ["--bitcask-read-mode", "fast"],
        ] {
            let e = clean().try_get_matches_from(bad).expect_err(bad[0]);
            assert!(e.to_string().contains(bad[0]), "{e}");
        }
    }

    #[test]
    fn peer_urls_follow_tls_and_a_peer_ca_needs_it() {
        let scratch = tempfile::tempdir().expect("tempdir");
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("rcgen");
        let (cert, key) = (scratch.path().join("c.pem"), scratch.path().join("k.pem"));
        std::fs::write(&cert, ck.cert.pem()).expect("cert");
        std::fs::write(&key, ck.signing_key.serialize_pem()).expect("key");
        let node = |tls: bool| {
            let mut s = defaults();
            s.cluster.node_id = Some(1);
            s.cluster.peer_listen = Some("127.0.0.1:9090".into());
            if tls {
                s.tls.cert_file = Some(cert.clone());
                s.tls.key_file = Some(key.clone());
            }
            s
        };
        let peer_url = |s: Settings| s.validate().map(|c| c.cluster.map(|c| c.peer_url));
        assert_eq!(
            peer_url(node(false)).expect("plain"),
            Some("http://127.0.0.1:9090".into())
        );
        assert_eq!(
            peer_url(node(true)).expect("tls"),
            Some("https://127.0.0.1:9090".into())
        );
        type Case = (&'static str, bool, fn(&mut Settings));
        let cases: [Case; 5] = [
            ("peer_url", true, |s| {
                s.cluster.peer_url = Some("http://127.0.0.1:9090".into())
            }),
            ("join", true, |s| {
                s.cluster.join = Some("http://127.0.0.1:9091".into())
            }),
            ("peer_url", false, |s| {
                s.cluster.peer_url = Some("https://127.0.0.1:9090".into())
            }),
            ("peer_ca_file", false, |s| {
                s.cluster.peer_ca_file = Some("ca.pem".into())
            }),
            ("peer_ca_file", true, |s| {
                s.cluster.peer_ca_file = Some("/nonexistent/ca.pem".into())
            }),
        ];
        for (name, tls, f) in cases {
            let mut s = node(tls);
            f(&mut s);
            let e = s.validate().expect_err(name).to_string();
            assert!(e.contains(&format!("`{name}`")), "{name} (tls {tls}): {e}");
        }
    }

    #[test]
    fn bad_settings_are_named() {
        type Case = (&'static str, fn(&mut Settings));
        let cases: [Case; 9] = [
            ("listen", |s| s.listen = "0.0.0.0:0".into()),
            ("auth.tokens", |s| s.auth.tokens = "read:short".into()),
            ("tls.key_file", |s| s.tls.cert_file = Some("c.pem".into())),
            ("max_uri_bytes", |s| s.guard.max_uri_bytes = 100),
            ("memory.shards", |s| s.memory.shards = 0),
            ("memory.flush_interval_ms", |s| {
                s.memory.flush_interval_ms = 0
            }),
            ("listen", |s| s.listen = "nowhere".into()),
            ("max_key_bytes", |s| s.max_key_bytes = 0),
            ("bitcask.merge_window", |s| {
                s.bitcask.merge_window = "x".into()
            }),
        ];
        for (name, f) in cases {
            let mut s = defaults();
            f(&mut s);
            let e = s.validate().expect_err(name).to_string();
            assert!(e.contains(&format!("`{name}`")), "{e}");
            let flag = format!("--{}", name.replace(['_', '.'], "-"));
            assert!(
                command()
                    .get_arguments()
                    .any(|a| a.get_long() == Some(flag.trim_start_matches('-'))),
                "the error names flag {flag}, which must exist"
            );
        }
    }

    #[test]
    fn protected_mode_has_two_ways_out() {
        let mut s = defaults();
        s.listen = "0.0.0.0:0".into();
        let e = s.validate().expect_err("protected").to_string();
        assert!(e.contains("protected mode"), "{e}");
        s.guard.allow_unauthenticated_remote = true;
        s.validate().expect("explicitly allowed");
        s.guard.allow_unauthenticated_remote = false;
        s.auth.tokens = "read:0123456789abcdef0123".into();
        let c = s.validate().expect("tokens configured");
        assert!(c.security.auth.enabled());
        assert!(!format!("{c:?}").contains("0123456789abcdef0123"));
    }

    #[test]
    fn file_sits_under_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("h.toml");
        std::fs::write(
            &f,
            "sync = \"never\"\nmax_key_bytes = 77\nlisten = \"127.0.0.1:1\"\n\
             allow_unauthenticated_remote = true\n\
             [bitcask]\nmax_file_size = 4096\n[memory]\nsave_points = \"\"\n",
        )
        .expect("write");
        let path = f.display().to_string();
        let (s, m) = parse_clean(&["--config", &path, "--listen", "127.0.0.1:2"]);
        let s = layered(s, &m).expect("layered");
        assert_eq!(s.sync, SyncPolicy::Never);
        assert_eq!(s.max_key_bytes, 77);
        assert_eq!(s.listen, "127.0.0.1:2", "the flag wins over the file");
        assert!(s.guard.allow_unauthenticated_remote);
        assert_eq!(s.bitcask.max_file_size, 4096);
        assert!(s.memory.save_points.0.is_empty());
        assert_eq!(
            s.engine,
            EngineKind::Bitcask,
            "untouched settings keep defaults"
        );
    }

    #[test]
    fn file_errors_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("h.toml");
        let path = f.display().to_string();
        for (text, key) in [
            ("no_such_setting = 1\n", "no_such_setting"),
            ("[bitcask]\nshards = 3\n", "bitcask.shards"),
            ("config = \"x.toml\"\n", "config"),
            ("sync = \"sometimes\"\n", "sync"),
            ("[memory]\nshards = \"many\"\n", "memory.shards"),
        ] {
            std::fs::write(&f, text).expect("write");
            let (s, m) = parse_clean(&["--config", &path]);
            let e = layered(s, &m).expect_err(key).to_string();
            assert!(e.contains(&format!("`{key}`")) && e.contains(&path), "{e}");
        }
        std::fs::write(&f, "sync = [\n").expect("write");
        let (s, m) = parse_clean(&["--config", &path]);
        let e = layered(s, &m).expect_err("malformed").to_string();
        assert!(e.contains(&path), "{e}");
    }

    #[test]
    fn help_names_every_environment_variable() {
        let help = command().render_long_help().to_string();
        for r in rows() {
            assert!(
                help.contains(&format!("[env: {}", r.env)),
                "{} missing from --help",
                r.env
            );
        }
    }

    #[test]
    fn unknown_environment_variables_are_refused() {
        let cmd = command();
        let vars = |v: &[&str]| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .into_iter()
        };
        check_env(&cmd, vars(&["HOARDHAVEN_SYNC", "HOARDHAVEN_TOKEN", "PATH"])).expect("known");
        check_env(&cmd, vars(&["HOARDHAVEN_BITCASK__MAX_FILE_SIZE"])).expect("section");
        let e = check_env(&cmd, vars(&["HOARDHAVEN_SYNCC"])).expect_err("typo");
        assert!(e.to_string().contains("HOARDHAVEN_SYNCC"), "{e}");
    }

    /// One row per setting: flag, environment variable, default, meaning.
    struct Row {
        flag: String,
        env: String,
        default: String,
        help: String,
    }

    fn rows() -> Vec<Row> {
        command()
            .get_arguments()
            .filter_map(|a| {
                let env = a.get_env()?.to_string_lossy().into_owned();
                let default = a
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(",");
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                Some(Row {
                    flag: format!("--{}", a.get_long()?),
                    env,
                    default,
                    help: help.lines().next().unwrap_or_default().to_owned(),
                })
            })
            .collect()
    }

    #[test]
    fn env_example_lists_every_setting_with_its_default() {
        let mut listed = BTreeMap::new();
        for line in include_str!("../.env.example").lines() {
            let commented = line.starts_with('#');
            let Some((name, value)) = line
                .trim_start_matches(['#', ' '])
                .strip_prefix("HOARDHAVEN_")
                .and_then(|l| l.split_once('='))
            else {
                continue;
            };
            listed.insert(format!("HOARDHAVEN_{name}"), (commented, value.to_owned()));
        }
        for r in rows() {
            let (commented, value) = listed
                .remove(&r.env)
                .unwrap_or_else(|| panic!(".env.example lacks {}", r.env));
            if !commented {
                assert_eq!(value, r.default, "{}", r.env);
            }
        }
        assert!(
            listed.is_empty(),
            ".env.example lists unknown settings: {listed:?}"
        );
    }

    #[test]
    fn readme_table_is_the_settings() {
        let mut want =
            String::from("| flag | environment | default | meaning |\n|---|---|---|---|\n");
        for r in rows() {
            let default = match r.default.as_str() {
                "" => "none".to_owned(),
                d => format!("`{d}`"),
            };
            want.push_str(&format!(
                "| `{}` | `{}` | {default} | {} |\n",
                r.flag,
                r.env,
                r.help.replace('|', "\\|")
            ));
        }
        let readme = include_str!("../README.md");
        let start = readme
            .find("| flag | environment | default | meaning |")
            .expect("README has the configuration table");
        let table: String = readme[start..]
            .lines()
            .take_while(|l| l.starts_with('|'))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(
            table == want,
            "README.md's configuration table differs from the settings; paste this:\n{want}"
        );
    }
}
