//! Where the server's log lines go, and why a log line can never hurt the server.
//!
//! Owns [`init`] (the `tracing` subscriber: human or JSON lines on stderr, plus the
//! OpenTelemetry layer of [`crate::telemetry`] when traces are exported) and [`QuietStderr`],
//! its writer. Logging is best effort: when stderr is a pipe whose reader went away
//! (`hoardhaven serve 2>&1 | head -3`), a full disk, or anything else that makes a write fail,
//! the line is dropped and the server goes on. `tracing-subscriber` would otherwise report
//! the failed write with `eprintln!`, which panics on a closed stderr and takes down the task
//! that logged: the signal task (so SIGTERM was ignored) or start-up (exit 101, no message).

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, Registry};

use crate::config::LogFormat;
use crate::telemetry::Telemetry;

/// Set once a write to stderr failed with a broken pipe: the reader is gone for good, so later
/// lines are dropped without a system call.
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

/// A stderr writer that never fails: a write that cannot be done is dropped.
#[derive(Clone, Copy, Debug, Default)]
pub struct QuietStderr;

impl Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if STDERR_CLOSED.load(Ordering::Relaxed) {
            return Ok(buf.len());
        }
        match io::stderr().write_all(buf) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                STDERR_CLOSED.store(true, Ordering::Relaxed);
            }
            // Any other failure (EAGAIN, EIO, ENOSPC): this line is lost, the next may pass.
            _ => {}
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// Writes one line to stderr, dropping it if stderr cannot take it (for `main`'s last word
/// and other places that would use `eprintln!`, which panics on a closed stderr).
pub fn line(msg: &str) {
    let mut w = QuietStderr;
    let _ = writeln!(w, "{msg}");
}

/// Installs the global subscriber: `RUST_LOG` wins over `level`; a second call does nothing.
/// With `telemetry`, its layer is added beside the log lines, each with its own filter (the
/// log level does not decide which spans are exported).
pub fn init(format: LogFormat, level: &str, telemetry: Option<&Telemetry>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if let Some(t) = telemetry {
        let fmt = tracing_subscriber::fmt::layer()
            .with_ansi(io::stderr().is_terminal())
            .log_internal_errors(false)
            .with_writer(|| QuietStderr);
        let fmt: Box<dyn Layer<Registry> + Send + Sync> = match format {
            LogFormat::Human => Box::new(fmt),
            LogFormat::Json => Box::new(fmt.json()),
        };
        let _ = tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .with(t.layer())
            .try_init();
        return;
    }
    // No export: one global filter, so spans it disables cost nothing.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(io::stderr().is_terminal())
        .log_internal_errors(false)
        .with_writer(|| QuietStderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_always_report_success() {
        let mut w = QuietStderr;
        assert_eq!(w.write(b"logging test line\n").ok(), Some(18));
        assert!(w.flush().is_ok());
    }
}
