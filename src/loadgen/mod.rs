//! The load tool behind `hoardhaven bench` (like redis-benchmark beside redis-server).
//!
//! Drives a running server over HTTP/1.1 with N concurrent keep-alive connections: a key space,
//! a read/write mix, a value size, a duration or a request count. Every run starts with the
//! server's cheapest route (`GET /healthz`, or etcd's `GET /health`) as the ceiling, then runs
//! the chosen tests and reports each one's throughput, latency percentiles (p50, p90, p99,
//! p99.9, max) and ratio to that ceiling, as a table and optionally as JSON.
//!
//! It also speaks etcd's v3 HTTP JSON gateway, so etcd is measured by the same tool.
//!
//! - [`workload`]: keys, operation mix, request construction per target.
//! - [`driver`]: connections, workers, timing of one phase.
//! - [`report`]: percentiles, ratios, text and JSON.
//!
//! No storage code here: the tool talks to a server like any other client.

pub mod driver;
pub mod report;
pub mod workload;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::client::tls as client_tls;
use crate::cli::client::wire::{Base, HttpVersion};
use crate::cli::exit::{self, Exit};
use driver::{Dialer, KeyOrder, Live, Phase};
pub use report::{Report, TestResult};
pub use workload::{Target, Test, Workload};

/// Flags of `hoardhaven bench`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Base URL of the server: http://HOST:PORT or https://HOST:PORT.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Send `Authorization: Bearer <TOKEN>` with every request.
    #[arg(long, env = "HOARDHAVEN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Trust only the CA certificates in this PEM file for https:// (default: the system's).
    #[arg(long, env = "HOARDHAVEN_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// The server's API: hoardhaven, or etcd's v3 HTTP JSON gateway.
    #[arg(long, value_enum, default_value_t = Target::Hoardhaven)]
    pub target: Target,
    /// Concurrent connections (one request in flight on each).
    #[arg(short = 'c', long, default_value_t = 50)]
    pub connections: usize,
    /// Tests to run after the healthz baseline, comma-separated: `-t get,put` (or `-t get -t put`).
    #[arg(
        short = 't',
        long = "tests",
        value_enum,
        value_delimiter = ',',
        default_value = "get,put,mixed"
    )]
    pub tests: Vec<Test>,
    /// Number of distinct keys.
    #[arg(short = 'k', long, default_value_t = 10_000)]
    pub keys: u64,
    /// Key length in bytes.
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Value length in bytes for puts.
    #[arg(short = 'd', long, default_value_t = 100)]
    pub value_size: usize,
    /// Fraction of reads in the `mixed` test.
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// How long each test runs: `10s`, `500ms`, or plain seconds.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Requests per test (instead of a duration).
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Split each test into this many slices, the tests taking turns (fairer ratios on a
    /// machine with changing background load).
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Unmeasured warm-up before each test.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Do not write every key once before get/mixed tests.
    #[arg(long)]
    pub no_preload: bool,
    /// Skip the healthz baseline (no ratios then).
    #[arg(long)]
    pub no_baseline: bool,
    /// Also write the report as JSON to this file (`-` for standard output).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A label copied into the JSON report.
    #[arg(long)]
    pub label: Option<String>,
    /// Client runtime threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar (it is also hidden when standard error is not a terminal).
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

impl Default for BenchArgs {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: BenchArgs,
        }
        // Parsing no arguments yields the declared defaults; it cannot fail.
        Wrapper::try_parse_from(["bench"])
            .map(|w| w.args)
            .unwrap_or_else(|e| unreachable!("default bench flags: {e}"))
    }
}

/// Parses `10s`, `250ms`, `2m` or plain seconds (`1.5`).
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("expected a duration like `10s`, `500ms`, `2m` or `1.5`, got `{s}`");
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    if !v.is_finite() || v < 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// Runs `hoardhaven bench`: measures, prints the table, writes JSON if asked.
///
/// # Errors
/// Bad flags, an unreachable server, or a file that cannot be written.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = args.threads {
        rt.worker_threads(t.max(1));
    }
    let rt = rt
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let report = rt.block_on(measure(&args))?;
    let json_to_stdout = args.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    // Not print!: it panics on a closed stdout. A closed pipe is a quiet exit 0.
    if json_to_stdout {
        crate::logging::line(report.to_text().trim_end_matches('\n'));
    } else {
        exit::stdout(report.to_text().as_bytes())?;
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        if json_to_stdout {
            exit::stdout(format!("{json}\n").as_bytes())?;
        } else {
            std::fs::write(path, json + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Checks `--url` (and `--ca-cert` for https) and returns how to reach the server and the
/// `host:port` for the `Host` header.
///
/// # Errors
/// A usage error ([`exit::USAGE`]) for a URL without http:// or https://, a local one
/// ([`exit::LOCAL`]) for a CA file that cannot be used.
fn dialer(args: &BenchArgs) -> anyhow::Result<(Dialer, String)> {
    let base = Base::parse(&args.url).map_err(|m| Exit::new(exit::USAGE, m))?;
    let host = base.host.trim_start_matches('[').trim_end_matches(']');
    let mut d = Dialer::plain(format!("{host}:{}", base.port));
    if base.https {
        let connector =
            client_tls::connector(args.ca_cert.as_deref(), None, HttpVersion::Http1.alpn())
                .map_err(Exit::local)?;
        let name = client_tls::server_name(&base.host).map_err(|m| Exit::new(exit::USAGE, m))?;
        d.tls = Some((connector, name));
    }
    Ok((d, base.authority()))
}

/// Runs the baseline, the preload and every test; returns the report.
///
/// # Errors
/// As [`run`].
pub async fn measure(args: &BenchArgs) -> anyhow::Result<Report> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.read_ratio) {
        bail!("--read-ratio must be between 0 and 1");
    }
    let (dialer, authority) = dialer(args)?;
    let addr = Arc::new(dialer);
    let wl = Workload::new(
        args.target,
        authority,
        args.keys,
        args.key_size,
        args.value_size,
        args.read_ratio,
    )
    .with_token(args.token.as_deref())
    .map_err(|m| Exit::new(exit::USAGE, m))?;
    let wl = Arc::new(wl);
    let mut tests = Vec::new();
    if !args.no_baseline {
        tests.push(Test::Healthz);
    }
    tests.extend(args.tests.iter().copied().filter(|t| *t != Test::Healthz));
    let needs_data = tests
        .iter()
        .any(|t| matches!(t, Test::Get | Test::Mixed | Test::List));
    if needs_data && !args.no_preload {
        let phase = Phase {
            test: Test::Put,
            connections: args.connections,
            duration: Duration::MAX,
            requests: None,
            order: KeyOrder::EachOnce,
        };
        let o = run_with_progress(args, &wl, &addr, phase, "preload", Some(args.keys)).await?;
        if o.errors > 0 {
            let (code, last) = o.last_error.unwrap_or((1, "unknown".into()));
            return Err(Exit::new(
                code,
                format!(
                    "{} of {} preload puts failed (last: {last})",
                    o.errors, args.keys
                ),
            )
            .into());
        }
    }
    // With `--rounds R` each test runs R slices of duration/R (requests/R), the tests taking
    // turns, so that background load on a shared machine falls on all of them alike.
    let rounds = args.rounds.max(1);
    let mut acc: Vec<Option<driver::Outcome>> = tests.iter().map(|_| None).collect();
    for round in 0..rounds {
        for (slot, test) in acc.iter_mut().zip(&tests) {
            let phase = Phase {
                test: *test,
                connections: args.connections,
                duration: args.duration / rounds,
                requests: args.requests.map(|n| (n / u64::from(rounds)).max(1)),
                order: KeyOrder::Random,
            };
            if round == 0 && !args.warmup.is_zero() {
                let warm = Phase {
                    duration: args.warmup,
                    requests: None,
                    ..phase.clone()
                };
                run_with_progress(args, &wl, &addr, warm, "warm-up", None).await?;
            }
            let total = phase.requests;
            let o = run_with_progress(args, &wl, &addr, phase, test.name(), total).await?;
            match slot {
                None => *slot = Some(o),
                Some(a) => {
                    a.hist
                        .add(&o.hist)
                        .map_err(|e| anyhow!("merging histograms: {e}"))?;
                    a.errors += o.errors;
                    a.elapsed += o.elapsed;
                }
            }
        }
    }
    let results = acc
        .iter()
        .zip(&tests)
        .filter_map(|(o, t)| {
            o.as_ref()
                .map(|o| TestResult::new(t.name(), &o.hist, o.errors, o.elapsed))
        })
        .collect();
    let mut report = Report {
        label: args.label.clone(),
        target: args.target,
        url: args.url.clone(),
        connections: args.connections,
        keys: args.keys,
        key_size: args.key_size,
        value_size: args.value_size,
        read_ratio: args.read_ratio,
        results,
    };
    report.compute_ratios();
    Ok(report)
}

async fn run_with_progress(
    args: &BenchArgs,
    wl: &Arc<Workload>,
    addr: &Arc<Dialer>,
    phase: Phase,
    name: &str,
    total: Option<u64>,
) -> anyhow::Result<driver::Outcome> {
    let live = Arc::new(Live::default());
    let show = !args.quiet && std::io::stderr().is_terminal();
    let pb = match (show, total) {
        (false, _) => ProgressBar::hidden(),
        (true, Some(n)) => ProgressBar::new(n),
        (true, None) => ProgressBar::new(phase.duration.as_millis().min(u64::MAX as u128) as u64),
    };
    let template = if total.is_some() {
        "{prefix:>8} [{bar:30}] {pos}/{len} {msg}"
    } else {
        "{prefix:>8} [{bar:30}] {elapsed_precise} {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(name.to_string());
    let ticker = {
        let (pb, live) = (pb.clone(), live.clone());
        let counted = total.is_some();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let done = live.done.load(Ordering::Relaxed);
                let secs = start.elapsed().as_secs_f64().max(1e-3);
                pb.set_position(if counted {
                    done
                } else {
                    start.elapsed().as_millis() as u64
                });
                pb.set_message(format!("{:.0} req/s", done as f64 / secs));
            }
        })
    };
    let out = driver::run_phase(wl.clone(), addr.clone(), phase, 0x5eed, live).await;
    ticker.abort();
    pb.finish_and_clear();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn defaults_and_authority() -> anyhow::Result<()> {
        let a = BenchArgs::default();
        assert_eq!(a.connections, 50);
        assert_eq!(dialer(&a)?.1, "127.0.0.1:8080");
        let b = BenchArgs {
            url: "127.0.0.1:1".into(),
            ..BenchArgs::default()
        };
        let e = dialer(&b).err().map(|e| crate::cli::exit::code_of(&e));
        assert_eq!(e, Some(exit::USAGE));
        Ok(())
    }
}
