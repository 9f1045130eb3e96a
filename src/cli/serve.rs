//! `hoardhaven serve`: flags, configuration layering, logging, and the runtime.
//!
//! Owns the serve flags (every setting of [`crate::config::Settings`] has one), the set-up of
//! `tracing` (human or JSON), and the tokio runtime that runs [`crate::server::run`].

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::config::{self, ServeConfig};
use crate::shutdown::Shutdown;

/// Flags of `serve`; each overrides the file and the environment.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on (`host:port`; port 0 picks a free one) [default: 127.0.0.1:8080]
    #[arg(long)]
    pub listen: Option<String>,
    /// Data directory [default: ./data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Storage engine: bitcask or memory [default: bitcask]
    #[arg(long)]
    pub engine: Option<String>,
    /// When writes are durable: always, never, or an interval like 100ms [default: always]
    #[arg(long)]
    pub sync: Option<String>,
    /// Memory engine: append-only log on or off [default: on]
    #[arg(long)]
    pub aof: Option<String>,
    /// TOML configuration file (also HOARDHAVEN_CONFIG)
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Log format: human or json [default: human]
    #[arg(long)]
    pub log_format: Option<String>,
    /// Log filter, e.g. info or hoardhaven=debug; RUST_LOG wins [default: info]
    #[arg(long)]
    pub log_level: Option<String>,
    /// Write the bound address to this file once listening
    #[arg(long)]
    pub port_file: Option<PathBuf>,
    /// Longest key in bytes [default: 1024]
    #[arg(long)]
    pub max_key_bytes: Option<u64>,
    /// Longest value in bytes [default: 1048576]
    #[arg(long)]
    pub max_value_bytes: Option<u64>,
    /// Most operations per batch / keys per mget [default: 1000]
    #[arg(long)]
    pub max_batch_ops: Option<u64>,
    /// Largest JSON body in bytes [default: 8388608]
    #[arg(long)]
    pub max_body_bytes: Option<u64>,
    /// Most keys per listing page [default: 1000]
    #[arg(long)]
    pub max_list_limit: Option<u64>,
    /// Most requests in flight before shedding with 503 [default: 1024]
    #[arg(long)]
    pub max_in_flight: Option<u64>,
    /// Where engine reads run: inline, blocking or pool [default: inline]
    #[arg(long)]
    pub exec_reads: Option<String>,
    /// Where engine writes run: inline, blocking or pool [default: pool]
    #[arg(long)]
    pub exec_writes: Option<String>,
    /// Threads of the dedicated engine pool [default: 64]
    #[arg(long)]
    pub pool_threads: Option<u64>,
    /// Seconds to wait for in-flight requests at shutdown [default: 30]
    #[arg(long)]
    pub shutdown_grace_secs: Option<u64>,
    /// Bitcask: rotate data files past this many bytes [default: 268435456]
    #[arg(long)]
    pub bitcask_max_file_size: Option<u64>,
    /// Bitcask: read sealed files with pread or mmap [default: pread]
    #[arg(long)]
    pub bitcask_read_mode: Option<String>,
    /// Bitcask: automatic merge when this share of sealed bytes is dead [default: 0.5]
    #[arg(long)]
    pub bitcask_merge_min_fragmentation: Option<f64>,
    /// Bitcask: ... and at least this many bytes are dead [default: 67108864]
    #[arg(long)]
    pub bitcask_merge_min_dead_bytes: Option<u64>,
    /// Bitcask: seconds between merge-policy checks; 0 = manual merges only [default: 60]
    #[arg(long)]
    pub bitcask_merge_interval_secs: Option<u64>,
    /// Bitcask: automatic merges only between these UTC hours, e.g. 2-5 [default: any time]
    #[arg(long)]
    pub bitcask_merge_window: Option<String>,
    /// Bitcask: snapshots kept [default: 3]
    #[arg(long)]
    pub bitcask_snapshots_kept: Option<u64>,
    /// Serve a non-loopback address with no tokens configured (protected mode off) [default: false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub allow_unauthenticated_remote: Option<bool>,
    /// Longest request target (path and query) in bytes [default: 8192]
    #[arg(long)]
    pub max_uri_bytes: Option<u64>,
    /// Most bytes of request header fields [default: 16384]
    #[arg(long)]
    pub max_header_bytes: Option<u64>,
    /// Seconds to answer a request, body included; 0 = no limit [default: 30]
    #[arg(long)]
    pub request_timeout_secs: Option<u64>,
    /// Seconds to receive a request head or TLS handshake; also the keep-alive idle limit [default: 10]
    #[arg(long)]
    pub header_read_timeout_secs: Option<u64>,
    /// Origins allowed by CORS, comma-separated, `*` = any [default: none, CORS off]
    #[arg(long)]
    pub cors_origins: Option<String>,
    /// Tokens `role:token` or `role:sha256:<hex>`, comma-separated (prefer --auth-token-file) [default: none]
    #[arg(long)]
    pub auth_tokens: Option<String>,
    /// File of tokens, one `role:token` or `role:sha256:<hex>` per line; re-read on SIGHUP
    #[arg(long)]
    pub auth_token_file: Option<PathBuf>,
    /// /metrics answers without a token [default: false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub auth_metrics_open: Option<bool>,
    /// /openapi.json and /docs answer without a token [default: false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub auth_docs_open: Option<bool>,
    /// TLS certificate chain (PEM); with --tls-key-file serves HTTPS only
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long)]
    pub tls_key_file: Option<PathBuf>,
    /// Seconds between checks of the TLS files for change; 0 = SIGHUP only [default: 10]
    #[arg(long)]
    pub tls_reload_interval_secs: Option<u64>,
}

impl ServeArgs {
    /// The flags that were given, as `(setting, value)` overrides.
    fn overrides(&self) -> Vec<(&'static str, ::config::Value)> {
        let mut o: Vec<(&'static str, ::config::Value)> = Vec::new();
        let mut s = |k: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                o.push((k, v.clone().into()));
            }
        };
        s("listen", &self.listen);
        s("engine", &self.engine);
        s("sync", &self.sync);
        s("aof", &self.aof);
        s("log_format", &self.log_format);
        s("log_level", &self.log_level);
        s("exec_reads", &self.exec_reads);
        s("exec_writes", &self.exec_writes);
        s("bitcask.read_mode", &self.bitcask_read_mode);
        s("bitcask.merge_window", &self.bitcask_merge_window);
        s("cors_origins", &self.cors_origins);
        s("auth.tokens", &self.auth_tokens);
        for (k, v) in [
            (
                "allow_unauthenticated_remote",
                self.allow_unauthenticated_remote,
            ),
            ("auth.metrics_open", self.auth_metrics_open),
            ("auth.docs_open", self.auth_docs_open),
        ] {
            if let Some(v) = v {
                o.push((k, v.into()));
            }
        }
        if let Some(f) = self.bitcask_merge_min_fragmentation {
            o.push(("bitcask.merge_min_fragmentation", f.into()));
        }
        for (k, v) in [
            ("data_dir", &self.data_dir),
            ("port_file", &self.port_file),
            ("auth.token_file", &self.auth_token_file),
            ("tls.cert_file", &self.tls_cert_file),
            ("tls.key_file", &self.tls_key_file),
        ] {
            if let Some(v) = v {
                o.push((k, v.display().to_string().into()));
            }
        }
        for (k, v) in [
            ("max_key_bytes", self.max_key_bytes),
            ("max_value_bytes", self.max_value_bytes),
            ("max_batch_ops", self.max_batch_ops),
            ("max_body_bytes", self.max_body_bytes),
            ("max_list_limit", self.max_list_limit),
            ("max_in_flight", self.max_in_flight),
            ("pool_threads", self.pool_threads),
            ("shutdown_grace_secs", self.shutdown_grace_secs),
            ("bitcask.max_file_size", self.bitcask_max_file_size),
            (
                "bitcask.merge_min_dead_bytes",
                self.bitcask_merge_min_dead_bytes,
            ),
            (
                "bitcask.merge_interval_secs",
                self.bitcask_merge_interval_secs,
            ),
            ("bitcask.snapshots_kept", self.bitcask_snapshots_kept),
            ("max_uri_bytes", self.max_uri_bytes),
            ("max_header_bytes", self.max_header_bytes),
            ("request_timeout_secs", self.request_timeout_secs),
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("tls.reload_interval_secs", self.tls_reload_interval_secs),
        ] {
            if let Some(v) = v {
                o.push((k, v.into()));
            }
        }
        o
    }

    /// Layers defaults, file, environment and these flags, and validates the result.
    ///
    /// # Errors
    /// A bad file, an unknown or mistyped setting, or a setting that fails validation.
    pub fn resolve(&self) -> anyhow::Result<ServeConfig> {
        let file = self
            .config
            .clone()
            .or_else(|| std::env::var_os("HOARDHAVEN_CONFIG").map(PathBuf::from));
        let settings = config::load(file.as_deref(), &self.overrides())
            .context("reading the configuration")?;
        Ok(settings.validate()?)
    }
}

/// Runs `hoardhaven serve` to the end.
///
/// # Errors
/// Configuration, binding, opening the engine, or the final sync.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = args.resolve()?;
    crate::logging::init(cfg.log_format, &cfg.log_level);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hoardhaven")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let shutdown = Shutdown::new();
        shutdown.listen_for_signals();
        crate::server::run(cfg, shutdown).await
    })
}
