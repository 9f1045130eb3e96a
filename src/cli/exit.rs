//! Exit statuses of the client and offline subcommands, and the error that carries one.
//!
//! Scripts branch on these numbers, so they are fixed here in one place and listed in the
//! README. `main` turns an error into its status with [`code_of`]: an [`Exit`] carries its
//! own; a bad setting of `serve` (file, environment or flag) is a usage error; a data
//! directory locked by another process is [`LOCKED`]; anything else is 1.

use std::fmt;

/// Done: found, written, deleted, started, clean.
pub const OK: u8 = 0;
/// The key is absent (`get`, `del`), or `check` found problems it did not repair.
pub const NOT_FOUND: u8 = 1;
/// Bad command line (clap's own status for usage errors).
pub const USAGE: u8 = 2;
/// A precondition failed (412) or the job is already running (409).
pub const CONFLICT: u8 = 3;
/// The server refused the request (any other 4xx: bad input, too large, unauthorized).
pub const REFUSED: u8 = 4;
/// The server failed or is unavailable (5xx, 503 while starting or shedding load).
pub const SERVER: u8 = 5;
/// The server could not be reached (connection refused, timeout, bad URL).
pub const UNREACHABLE: u8 = 6;
/// A local failure: unreadable input file, malformed JSON lines, I/O or corrupt data offline.
pub const LOCAL: u8 = 7;
/// The data directory is in use by another process (a running server).
pub const LOCKED: u8 = 8;

/// An error with the exit status it should end the process with.
#[derive(Debug)]
pub struct Exit {
    /// The status.
    pub code: u8,
    /// One line for stderr; empty when everything was already printed.
    pub message: String,
}

impl Exit {
    /// An error with `code` and `message`.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Exit {
            code,
            message: message.into(),
        }
    }

    /// A local failure ([`LOCAL`]).
    pub fn local(message: impl Into<String>) -> Self {
        Exit::new(LOCAL, message)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// Writes `bytes` to stdout and flushes.
///
/// # Errors
/// A closed pipe (`hoardhaven list | head`) is an [`Exit`] with status [`OK`] and no message:
/// the reader has what it wanted, so the command stops quietly with 0 (not 141, the shell's
/// status for death by SIGPIPE, so `set -o pipefail` scripts do not fail over `| head`). Any
/// other write error is [`LOCAL`].
pub fn stdout(bytes: &[u8]) -> Result<(), Exit> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    match o.write_all(bytes).and_then(|()| o.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Exit::new(OK, "")),
        Err(e) => Err(Exit::local(format!("writing stdout: {e}"))),
    }
}

/// The exit status for an error: the [`Exit`] code when there is one; [`USAGE`] for a setting
/// that fails to parse or validate (`config::SettingError`, `config::LoadError`, the `config`
/// crate's `ConfigError`); [`LOCKED`] for a data directory in use; else 1.
pub fn code_of(e: &anyhow::Error) -> u8 {
    if let Some(x) = e.downcast_ref::<Exit>() {
        return x.code;
    }
    if e.downcast_ref::<crate::config::SettingError>().is_some()
        || e.downcast_ref::<crate::config::LoadError>().is_some()
        || e.downcast_ref::<::config::ConfigError>().is_some()
    {
        return USAGE;
    }
    if let Some(crate::Error::Locked(_)) = e.downcast_ref::<crate::Error>() {
        return LOCKED;
    }
    1
}

/// Maps an engine error met offline: a locked directory gets [`LOCKED`], everything else
/// [`LOCAL`].
pub fn from_engine(e: crate::Error, doing: &str) -> Exit {
    match e {
        crate::Error::Locked(dir) => Exit::new(
            LOCKED,
            format!(
                "{doing}: data directory {} is in use by another process (stop the server first)",
                dir.display()
            ),
        ),
        other => Exit::local(format!("{doing}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn setting_errors_are_usage_errors_even_under_context() {
        let file = ::config::ConfigError::NotFound("listen".into());
        let e = Err::<(), _>(file).context("reading the configuration");
        assert_eq!(e.map_err(|e| code_of(&e)), Err(USAGE));
        let exit = anyhow::Error::new(Exit::new(CONFLICT, "x"));
        assert_eq!(code_of(&exit), CONFLICT);
        assert_eq!(code_of(&anyhow::anyhow!("other")), 1);
        let unknown =
            anyhow::Error::new(crate::config::LoadError::UnknownEnv("HOARDHAVEN_X".into()));
        assert_eq!(code_of(&unknown), USAGE);
    }
}
