//! Test harness: the real `hoardhaven` binary on an ephemeral loopback port.
//!
//! [`Server::start`] runs `hoardhaven serve --listen 127.0.0.1:0 --port-file F` over a
//! temporary data directory, reads the bound address from the port file (written atomically
//! once listening), then waits for `/readyz`. Every wait is bounded; the process is killed when
//! the [`Server`] is dropped. Its stderr goes to a file, read back for error-message checks.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tempfile::TempDir;

/// Longest wait for any start-up or stop step. Generous: only a hang or a bug reaches it.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

/// A running server process.
pub struct Server {
    child: Option<Child>,
    /// Bound address.
    pub addr: SocketAddr,
    /// `http://addr`.
    pub base: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Scratch directory (port file, stderr log); also holds the data directory when the test
    /// did not give one.
    pub scratch: TempDir,
    /// An HTTP client with a per-request timeout.
    pub client: reqwest::Client,
}

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_hoardhaven")
}

/// A client with bounded requests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(STEP_TIMEOUT)
        .build()
        .expect("reqwest client")
}

impl Server {
    /// Starts a server with `engine` over a fresh data directory, with extra flags.
    pub async fn start(engine: impl Display, extra: &[&str]) -> Server {
        let scratch = tempfile::tempdir().expect("tempdir");
        let data_dir = scratch.path().join("data");
        Self::start_with(scratch, data_dir, engine, extra, &[]).await
    }

    /// Starts a server over an existing data directory.
    pub async fn start_in(data_dir: &Path, engine: impl Display, extra: &[&str]) -> Server {
        let scratch = tempfile::tempdir().expect("tempdir");
        Self::start_with(scratch, data_dir.to_path_buf(), engine, extra, &[]).await
    }

    /// Starts a server with environment variables set.
    pub async fn start_with(
        scratch: TempDir,
        data_dir: PathBuf,
        engine: impl Display,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let engine = engine.to_string();
        let mut child = spawn(scratch.path(), &data_dir, &engine, extra, env);
        let port_file = scratch.path().join("port");
        let stderr_log = scratch.path().join("stderr.log");
        let addr = wait_port_file(&mut child, &port_file, &stderr_log).await;
        wait_ready(&mut child, addr, scratch.path()).await;
        Server {
            child: Some(child),
            addr,
            base: format!("http://{addr}"),
            data_dir,
            scratch,
            client: client(),
        }
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The process id (for tests that signal the server: SIGKILL, SIGSTOP, SIGCONT).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `sig` (`-STOP`, `-CONT`, ...) to the server with `kill(1)`.
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().expect("running").to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// The value of the unlabelled series `name` in `/metrics` (0 before it is first set).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// What the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_stderr(self.scratch.path())
    }

    /// Sends SIGTERM and waits (bounded) for the exit status. The data directory stays.
    pub async fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        wait_exit(&mut child).await
    }

    /// Sends SIGKILL (kill -9: no shutdown, no flush) and waits (bounded) for the exit. The
    /// data directory stays.
    pub async fn kill(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        wait_exit(&mut child).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `hoardhaven serve --engine ENGINE` on a free loopback port, writing its address to
/// `port_file`, with a clean environment (no `HOARDHAVEN_*` from the caller's shell, no
/// `RUST_LOG`) and stdin and stdout closed. The caller adds flags, stderr and spawns it: every
/// suite that starts the real server starts it through here.
pub fn serve_command(engine: &str, data_dir: &Path, port_file: &Path) -> Command {
    let mut cmd = Command::new(binary());
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--engine", engine])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--port-file")
        .arg(port_file)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("HOARDHAVEN_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// The address a `hoardhaven serve --port-file` child wrote to `port_file` (written
/// atomically once listening), waited for (bounded). A child that exits first fails the test
/// at once with what it wrote to `stderr_log` (empty if there is no such file).
pub async fn wait_port_file(child: &mut Child, port_file: &Path, stderr_log: &Path) -> SocketAddr {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        if let Ok(s) = std::fs::read_to_string(port_file)
            && let Ok(a) = s.trim().parse()
        {
            return a;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "server exited early with {status}: {}",
                std::fs::read_to_string(stderr_log).unwrap_or_default()
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no port file after {STEP_TIMEOUT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `/readyz` on `addr` until 200 (bounded). A server that exits first (a peer port
/// taken, a bad flag after the client listener bound) fails the test at once with its stderr,
/// rather than after [`STEP_TIMEOUT`] of polling a dead address.
async fn wait_ready(child: &mut Child, addr: SocketAddr, scratch: &Path) {
    let client = client();
    let url = format!("http://{addr}/readyz");
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        if let Ok(r) = client.get(&url).send().await
            && r.status() == 200
        {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "server exited before ready with {status}: {}",
                read_stderr(scratch)
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready after {STEP_TIMEOUT:?}: {}",
            read_stderr(scratch)
        );
        tokio::time::sleep(POLL).await;
    }
}

fn spawn(
    scratch: &Path,
    data_dir: &Path,
    engine: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Child {
    let stderr = std::fs::File::create(scratch.join("stderr.log")).expect("stderr log");
    let mut cmd = serve_command(engine, data_dir, &scratch.join("port"));
    cmd.args(extra).stderr(stderr);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn hoardhaven")
}

fn read_stderr(scratch: &Path) -> String {
    std::fs::read_to_string(scratch.join("stderr.log")).unwrap_or_default()
}

/// Waits (bounded) for a child to exit.
pub async fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("process did not exit within {STEP_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs the binary to completion with these arguments and environment (bounded); returns the
/// exit status and stderr.
pub async fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let log = scratch.path().join("stderr.log");
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"));
    for (k, _) in std::env::vars() {
        if k.starts_with("HOARDHAVEN_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let status = wait_exit(&mut child).await;
    (status, std::fs::read_to_string(&log).unwrap_or_default())
}

/// Percent-encodes every byte that is not alphanumeric (for keys in paths).
pub fn enc(key: &[u8]) -> String {
    key.iter()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (*b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
