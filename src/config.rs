//! Typed settings of the server: defaults, then a TOML file, then `HOARDHAVEN_*` environment
//! variables, then command-line flags, each layer overriding the one before.
//!
//! Owns [`Settings`] (the raw layered form, one field per setting, as in `.env.example`),
//! [`load`] (the layering, through the `config` crate) and [`Settings::validate`], which turns
//! them into a [`ServeConfig`] of typed values or an error naming the bad setting. The rest of
//! the program only ever sees [`ServeConfig`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

use crate::engine::bitcask::{BitcaskOptions, MergePolicy, ReadMode};
use crate::engine::memory::MemoryOptions;
use crate::engine::{EngineKind, EngineOptions, MAX_KEY_LEN, SyncPolicy};
use crate::http::auth::{AuthConfig, TokenSet};
use crate::http::{ExecMode, HeadLimits, Limits};
use crate::tls::TlsConfig;

/// Prefix of the environment variables (`HOARDHAVEN_LISTEN`, `HOARDHAVEN_BITCASK__...`).
pub const ENV_PREFIX: &str = "HOARDHAVEN";

/// Every setting, as layered from defaults, file, environment and flags.
///
/// Names are the TOML keys; environment variables are `HOARDHAVEN_` + the name in capitals,
/// with `__` between a section and its key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on, `host:port`; port 0 picks a free one.
    pub listen: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// `bitcask` or `memory`.
    pub engine: String,
    /// `always`, `never` or an interval such as `100ms`.
    pub sync: String,
    /// Memory engine: `on` keeps the append-only log, `off` relies on snapshots only.
    pub aof: String,
    /// `human` or `json`.
    pub log_format: String,
    /// A `tracing` filter such as `info` or `hoardhaven=debug` (`RUST_LOG` wins when set).
    pub log_level: String,
    /// When set, the bound address is written to this file once listening (for port 0).
    pub port_file: Option<PathBuf>,
    /// The TOML file read (only settable by flag or `HOARDHAVEN_CONFIG`).
    pub config: Option<PathBuf>,
    /// Longest key in bytes.
    pub max_key_bytes: usize,
    /// Longest value in bytes.
    pub max_value_bytes: usize,
    /// Most operations per `/batch` and keys per `/mget`.
    pub max_batch_ops: usize,
    /// Largest JSON body in bytes.
    pub max_body_bytes: usize,
    /// Most keys per listing page.
    pub max_list_limit: usize,
    /// Most requests in flight on data and admin routes before shedding with 503.
    pub max_in_flight: usize,
    /// Where engine reads run: `inline`, `blocking` or `pool`.
    pub exec_reads: String,
    /// Where engine writes run: `inline`, `blocking` or `pool`.
    pub exec_writes: String,
    /// Threads of the dedicated pool (when an `exec_*` setting is `pool`).
    pub pool_threads: usize,
    /// Seconds to wait for in-flight requests at shutdown before closing anyway.
    pub shutdown_grace_secs: u64,
    /// Bitcask engine settings (`[bitcask]`, `HOARDHAVEN_BITCASK__*`).
    pub bitcask: BitcaskSettings,
    /// Protected mode off: listen on a non-loopback address even with no tokens configured.
    pub allow_unauthenticated_remote: bool,
    /// Longest request target (path and query) in bytes (414).
    pub max_uri_bytes: usize,
    /// Most bytes of request header fields (431).
    pub max_header_bytes: usize,
    /// Seconds to answer a request, body read included (408); 0 = no limit.
    pub request_timeout_secs: u64,
    /// Seconds to receive a request head or finish a TLS handshake; also how long a
    /// keep-alive connection may sit idle.
    pub header_read_timeout_secs: u64,
    /// Origins allowed by CORS, comma-separated (`*` = any); empty = CORS off.
    pub cors_origins: String,
    /// Authentication settings (`[auth]`, `HOARDHAVEN_AUTH__*`).
    pub auth: AuthSettings,
    /// TLS settings (`[tls]`, `HOARDHAVEN_TLS__*`).
    pub tls: TlsSettings,
}

/// Settings of bearer-token authentication. Any token source turns authentication on.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Tokens, `role:token` or `role:sha256:<hex>`, comma-separated (prefer `token_file`:
    /// flags and environment can be seen by other local users).
    pub tokens: String,
    /// A file of tokens, one `role:token` or `role:sha256:<hex>` per line; re-read on SIGHUP.
    pub token_file: Option<PathBuf>,
    /// `/metrics` answers without a token.
    pub metrics_open: bool,
    /// `/openapi.json` and `/docs` answer without a token.
    pub docs_open: bool,
}

/// Settings of TLS. Both files set = HTTPS only; neither = plain HTTP.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM private key.
    pub key_file: Option<PathBuf>,
    /// Seconds between checks of the files for change (reload); 0 = reload on SIGHUP only.
    pub reload_interval_secs: u64,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            cert_file: None,
            key_file: None,
            reload_interval_secs: 10,
        }
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

/// Settings of the bitcask engine.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BitcaskSettings {
    /// Rotate the active data file past this many bytes.
    pub max_file_size: u64,
    /// How sealed files are read: `pread` or `mmap`.
    pub read_mode: String,
    /// Merge automatically when dead bytes reach this share of the sealed files (0.0-1.0)...
    pub merge_min_fragmentation: f64,
    /// ...and at least this many bytes are dead.
    pub merge_min_dead_bytes: u64,
    /// Seconds between checks of the merge policy; 0 = merge only on request.
    pub merge_interval_secs: u64,
    /// Start automatic merges only between these UTC hours, e.g. `2-5`; empty = any time.
    pub merge_window: String,
    /// Snapshots kept in `<data_dir>/snapshots`.
    pub snapshots_kept: usize,
}

impl Default for BitcaskSettings {
    fn default() -> Self {
        let o = BitcaskOptions::default();
        BitcaskSettings {
            max_file_size: o.max_file_size,
            read_mode: "pread".into(),
            merge_min_fragmentation: o.merge.min_fragmentation,
            merge_min_dead_bytes: o.merge.min_dead_bytes,
            merge_interval_secs: o.merge.check_interval.map_or(0, |d| d.as_secs()),
            merge_window: String::new(),
            snapshots_kept: o.snapshots_kept,
        }
    }
}

impl BitcaskSettings {
    fn validate(&self) -> Result<BitcaskOptions, SettingError> {
        let read_mode: ReadMode = self
            .read_mode
            .parse()
            .map_err(|r: String| bad("bitcask.read_mode", r))?;
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
            read_mode,
            merge: MergePolicy {
                min_fragmentation: self.merge_min_fragmentation,
                min_dead_bytes: self.merge_min_dead_bytes,
                check_interval: (self.merge_interval_secs > 0)
                    .then(|| Duration::from_secs(self.merge_interval_secs)),
                window,
            },
            snapshots_kept: self.snapshots_kept,
        };
        opts.validate().map_err(|e| match e {
            crate::Error::InvalidConfig { name, reason } => {
                let name = match name.as_str() {
                    "merge.min_fragmentation" => "merge_min_fragmentation".to_owned(),
                    "merge.window" => "merge_window".to_owned(),
                    "merge.check_interval" => "merge_interval_secs".to_owned(),
                    other => other.to_owned(),
                };
                bad(&format!("bitcask.{name}"), reason)
            }
            other => bad("bitcask", other.to_string()),
        })?;
        Ok(opts)
    }
}

impl Default for Settings {
    fn default() -> Self {
        let l = Limits::default();
        Settings {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            engine: "bitcask".into(),
            sync: "always".into(),
            aof: "on".into(),
            log_format: "human".into(),
            log_level: "info".into(),
            port_file: None,
            config: None,
            max_key_bytes: l.max_key_bytes,
            max_value_bytes: l.max_value_bytes,
            max_batch_ops: l.max_batch_ops,
            max_body_bytes: l.max_body_bytes,
            max_list_limit: l.max_list_limit,
            max_in_flight: l.max_in_flight,
            exec_reads: "inline".into(),
            exec_writes: "pool".into(),
            pool_threads: 64,
            shutdown_grace_secs: 30,
            bitcask: BitcaskSettings::default(),
            allow_unauthenticated_remote: false,
            max_uri_bytes: HeadLimits::default().max_uri_bytes,
            max_header_bytes: HeadLimits::default().max_header_bytes,
            request_timeout_secs: 30,
            header_read_timeout_secs: 10,
            cors_origins: String::new(),
            auth: AuthSettings::default(),
            tls: TlsSettings::default(),
        }
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// The validated, typed configuration of `hoardhaven serve`.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: SocketAddr,
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
    /// File to write the bound address to.
    pub port_file: Option<PathBuf>,
    /// Longest wait for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
    /// Authentication, TLS, head limits, timeouts, CORS.
    pub security: SecurityConfig,
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
    /// Checks every setting and converts them to typed values.
    ///
    /// # Errors
    /// The first bad setting, named, with the reason.
    pub fn validate(&self) -> Result<ServeConfig, SettingError> {
        let listen = resolve(&self.listen).map_err(|r| bad("listen", r))?;
        let kind: EngineKind = self.engine.parse().map_err(|r: String| bad("engine", r))?;
        let sync: SyncPolicy = self.sync.parse().map_err(|r: String| bad("sync", r))?;
        let aof = match self.aof.trim() {
            "on" | "true" => true,
            "off" | "false" => false,
            other => return Err(bad("aof", format!("expected `on` or `off`, got `{other}`"))),
        };
        if self.data_dir.as_os_str().is_empty() {
            return Err(bad("data_dir", "must not be empty"));
        }
        let log_format = match self.log_format.trim() {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => {
                return Err(bad(
                    "log_format",
                    format!("expected `human` or `json`, got `{other}`"),
                ));
            }
        };
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
        let exec_reads = self
            .exec_reads
            .parse()
            .map_err(|r: String| bad("exec_reads", r))?;
        let exec_writes = self
            .exec_writes
            .parse()
            .map_err(|r: String| bad("exec_writes", r))?;
        let pool_threads = range("pool_threads", self.pool_threads, 4096)?;
        let engine = EngineOptions {
            kind,
            dir: self.data_dir.clone(),
            sync,
            bitcask: self.bitcask.validate()?,
            memory: MemoryOptions {
                aof,
                ..MemoryOptions::default()
            },
        };
        let security = self.validate_security(listen, &limits)?;
        Ok(ServeConfig {
            listen,
            engine,
            aof,
            limits,
            exec_reads,
            exec_writes,
            pool_threads,
            log_format,
            log_level: self.log_level.clone(),
            port_file: self.port_file.clone(),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            security,
        })
    }

    fn validate_security(
        &self,
        listen: SocketAddr,
        limits: &Limits,
    ) -> Result<SecurityConfig, SettingError> {
        let auth = self.auth.validate()?;
        if !auth.enabled()
            && !listen.ip().to_canonical().is_loopback()
            && !self.allow_unauthenticated_remote
        {
            return Err(bad(
                "listen",
                format!(
                    "protected mode: {listen} is not a loopback address and no auth tokens are \
                     configured; set auth tokens (--auth-token-file or --auth-tokens) or pass \
                     --allow-unauthenticated-remote to serve without authentication"
                ),
            ));
        }
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
            tls: self.tls.validate()?,
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

/// Layers defaults, the TOML file (if any), the environment and the flag overrides.
///
/// `overrides` are `(setting, value)` pairs from the command line, applied last.
///
/// # Errors
/// An unreadable or malformed file, an unknown setting, or a value of the wrong type; the
/// `config` crate's message names the key and where it came from.
pub fn load(
    file: Option<&Path>,
    overrides: &[(&str, config::Value)],
) -> Result<Settings, config::ConfigError> {
    let mut b = Config::builder().add_source(Config::try_from(&Settings::default())?);
    if let Some(f) = file {
        b = b.add_source(File::from(f).format(FileFormat::Toml).required(true));
    }
    b = b.add_source(
        Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(server_env())),
    );
    for (k, v) in overrides {
        b = b.set_override(*k, v.clone())?;
    }
    b.build()?.try_deserialize()
}

/// `HOARDHAVEN_*` variables that are not server settings: read by the client subcommands
/// (`HOARDHAVEN_TOKEN`), the test suites and scripts (`HOARDHAVEN_REQUIRE_TOOLS`, crash
/// injection, soak and fuzz knobs). They are left out so that one environment can hold them and
/// still start a server, whose loader refuses unknown settings.
const CLIENT_ONLY_ENV: &[&str] = &[
    "HOARDHAVEN_TOKEN",
    "HOARDHAVEN_URL",
    "HOARDHAVEN_REQUIRE_TOOLS",
    "HOARDHAVEN_CRASH_AT",
    "HOARDHAVEN_SOAK_OUT",
    "HOARDHAVEN_SOAK_SECS",
    "HOARDHAVEN_ST_REPORT",
    "HOARDHAVEN_FUZZ_NO_INSTALL",
];

/// The process environment minus the client-only variables.
fn server_env() -> config::Map<String, String> {
    std::env::vars()
        .filter(|(k, _)| !CLIENT_ONLY_ENV.contains(&k.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = Settings::default().validate().expect("defaults are valid");
        assert_eq!(c.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(c.engine.kind, EngineKind::Bitcask);
        assert_eq!(c.engine.sync, SyncPolicy::Always);
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn bad_settings_are_named() {
        type Case = (&'static str, fn(&mut Settings));
        let cases: [Case; 9] = [
            ("listen", |s| s.listen = "0.0.0.0:0".into()),
            ("auth.tokens", |s| s.auth.tokens = "read:short".into()),
            ("tls.key_file", |s| s.tls.cert_file = Some("c.pem".into())),
            ("max_uri_bytes", |s| s.max_uri_bytes = 100),
            ("sync", |s| s.sync = "sometimes".into()),
            ("engine", |s| s.engine = "rocks".into()),
            ("listen", |s| s.listen = "nowhere".into()),
            ("max_key_bytes", |s| s.max_key_bytes = 0),
            ("log_format", |s| s.log_format = "xml".into()),
        ];
        for (name, f) in cases {
            let mut s = Settings::default();
            f(&mut s);
            let e = s.validate().expect_err(name).to_string();
            assert!(e.contains(&format!("`{name}`")), "{e}");
        }
    }

    #[test]
    fn protected_mode_has_two_ways_out() {
        let mut s = Settings {
            listen: "0.0.0.0:0".into(),
            ..Settings::default()
        };
        let e = s.validate().expect_err("protected").to_string();
        assert!(e.contains("protected mode"), "{e}");
        s.allow_unauthenticated_remote = true;
        s.validate().expect("explicitly allowed");
        s.allow_unauthenticated_remote = false;
        s.auth.tokens = "read:0123456789abcdef0123".into();
        let c = s.validate().expect("tokens configured");
        assert!(c.security.auth.enabled());
        assert!(!format!("{c:?}").contains("0123456789abcdef0123"));
    }

    #[test]
    fn file_then_overrides() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("h.toml");
        std::fs::write(
            &f,
            "sync = \"never\"\nmax_key_bytes = 77\nlisten = \"127.0.0.1:1\"\n",
        )
        .expect("write");
        let s = load(Some(&f), &[("listen", "127.0.0.1:2".into())]).expect("load");
        assert_eq!(s.sync, "never");
        assert_eq!(s.max_key_bytes, 77);
        assert_eq!(s.listen, "127.0.0.1:2");
        std::fs::write(&f, "no_such_setting = 1\n").expect("write");
        let e = load(Some(&f), &[]).expect_err("unknown key").to_string();
        assert!(e.contains("no_such_setting"), "{e}");
    }

    #[test]
    fn env_example_lists_every_setting_with_its_default() {
        let defaults = Config::try_from(&Settings::default()).expect("defaults");
        let tree = serde_json::to_value(Settings::default()).expect("json");
        let mut all = std::collections::BTreeSet::new();
        for (k, v) in tree.as_object().expect("object") {
            match v.as_object() {
                Some(section) => all.extend(section.keys().map(|s| format!("{k}.{s}"))),
                None => {
                    all.insert(k.clone());
                }
            }
        }
        let mut listed = std::collections::BTreeSet::new();
        for line in include_str!("../.env.example").lines() {
            let commented = line.starts_with('#');
            let Some((name, value)) = line
                .trim_start_matches(['#', ' '])
                .strip_prefix("HOARDHAVEN_")
                .and_then(|l| l.split_once('='))
            else {
                continue;
            };
            let key = name.to_ascii_lowercase().replace("__", ".");
            if !commented {
                let default = defaults.get_string(&key).expect("known setting");
                assert_eq!(default, value, "{key}");
            }
            listed.insert(key);
        }
        assert_eq!(listed, all, ".env.example lists every setting");
    }
}
