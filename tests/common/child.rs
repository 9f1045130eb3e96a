//! Child processes of the crash tests: the test binary re-run as a child, its stdout read line
//! by line on a thread so that every wait for a line has a deadline, and its exit checked for
//! "aborted at this crash point" rather than "failed somehow".

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use super::STEP_TIMEOUT;

/// Lines of a child's output, read on a thread. A line cut short by the child's death (no
/// final newline) is dropped: it was never a complete acknowledgement.
pub struct Lines {
    rx: Receiver<String>,
}

/// Why [`Lines::next_before`] returned no line.
#[derive(Debug, PartialEq, Eq)]
pub enum NoLine {
    /// The child closed its output (it exited).
    Closed,
    /// The deadline passed first.
    Timeout,
}

impl Lines {
    /// Starts reading `out`.
    pub fn new(out: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) if buf.last() != Some(&b'\n') => return,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned();
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Lines { rx }
    }

    /// Reads the stdout of `child` (which must have been spawned with piped stdout).
    pub fn of(child: &mut Child) -> Lines {
        Lines::new(child.stdout.take().expect("child stdout is piped"))
    }

    /// The next line, or why there is none before `deadline`.
    pub fn next_before(&self, deadline: Instant) -> Result<String, NoLine> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(l) => Ok(l),
            Err(RecvTimeoutError::Timeout) => Err(NoLine::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(NoLine::Closed),
        }
    }

    /// The next line, `None` once the child closed its output; panics naming `what` when
    /// nothing comes within [`STEP_TIMEOUT`].
    pub fn next(&self, what: &str) -> Option<String> {
        match self.next_before(Instant::now() + STEP_TIMEOUT) {
            Ok(l) => Some(l),
            Err(NoLine::Closed) => None,
            Err(NoLine::Timeout) => panic!("{what}: no output from the child in {STEP_TIMEOUT:?}"),
        }
    }

    /// Every remaining line until the child closes its output (bounded per line).
    pub fn rest(&self, what: &str) -> Vec<String> {
        std::iter::from_fn(|| self.next(what)).collect()
    }
}

/// Waits (bounded by [`STEP_TIMEOUT`]) for `child` to exit; kills it and panics on timeout.
pub fn wait_child(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: the child did not exit within {STEP_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGABRT, the signal `std::process::abort` raises.
pub const SIGABRT: i32 = 6;

/// Asserts that the child died of `abort()` (not a panic's exit code, not an error exit) and
/// that its stderr holds `marker`, the line the crash hook prints just before aborting.
pub fn assert_aborted_at(status: ExitStatus, stderr: &str, marker: &str, what: &str) {
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "{what}: expected death by SIGABRT at the crash point, got {status}; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(marker),
        "{what}: the child aborted but not at the crash point (no {marker:?}); stderr:\n{stderr}"
    );
}

/// A child process killed (SIGKILL) and reaped when dropped, so a failing test leaves no
/// child behind.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}
