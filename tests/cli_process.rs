//! The process as an operator sees it: stderr that goes away, start-up that fails, signals.
//!
//! Each test runs the real binary; every wait is bounded by [`common::STEP_TIMEOUT`] (a hang
//! detector, not a timing threshold).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::STEP_TIMEOUT;

/// `hoardhaven serve` on a free loopback port with a port file, stdout discarded; stderr as
/// the caller says.
fn serve(scratch: &Path, data_dir: &Path, stderr: Stdio, extra: &[&str]) -> Child {
    common::serve_command("bitcask", data_dir, &scratch.join("port"))
        .args(extra)
        .stderr(stderr)
        .spawn()
        .expect("spawn hoardhaven")
}

/// Waits (bounded) for the port file; panics if the process exits first.
async fn wait_port(child: &mut Child, scratch: &Path) -> SocketAddr {
    common::server::wait_port_file(child, &scratch.join("port"), &scratch.join("stderr.log")).await
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -TERM failed");
}

/// Waits (bounded) until `/readyz` answers 200.
async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Requests (which log at debug level), then SIGTERM: the exit must be 0.
async fn serve_then_stop(mut child: Child, addr: SocketAddr) {
    let client = common::client();
    let base = format!("http://{addr}");
    wait_ready(&client, &base).await;
    for i in 0..20 {
        let r = client
            .put(format!("{base}/kv/k{i}"))
            .body("v")
            .send()
            .await
            .expect("put");
        assert!(r.status().is_success(), "{}", r.status());
        let r = client
            .get(format!("{base}/kv/nope"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 404);
    }
    sigterm(&child);
    let status = common::wait_exit(&mut child).await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_closed_before_start_up_neither_kills_nor_deafens_the_server() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let data = scratch.path().join("data");
    // debug: every request logs, so the server writes into the closed pipe again and again.
    let mut child = serve(
        scratch.path(),
        &data,
        Stdio::piped(),
        &["--log-level", "debug"],
    );
    // The reader goes away at once, before the start-up lines are written.
    drop(child.stderr.take());
    let addr = wait_port(&mut child, scratch.path()).await;
    serve_then_stop(child, addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_closed_after_start_up_does_not_make_sigterm_ignored() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let data = scratch.path().join("data");
    // Default log level: requests log nothing, the first line after start-up is SIGTERM's.
    let mut child = serve(scratch.path(), &data, Stdio::piped(), &[]);
    let stderr = child.stderr.take().expect("stderr pipe");
    // Like `2>&1 | head -3`: read the start-up lines up to "ready", then close the pipe.
    tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("ready") => break,
                Some(Ok(_)) => {}
                other => panic!("stderr ended before `ready`: {other:?}"),
            }
        }
    })
    .await
    .expect("reader");
    let addr = wait_port(&mut child, scratch.path()).await;
    serve_then_stop(child, addr).await;
}

/// Start-up that fails says why and never claims to be listening.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_is_not_logged_before_start_up_fails() {
    let scratch = tempfile::tempdir().expect("tempdir");
    // The data directory is a file.
    let file = scratch.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let file = file.to_str().expect("utf-8").to_owned();
    let (status, err) = common::run_to_exit(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", &file],
        &[],
    )
    .await;
    assert!(!status.success(), "{status}: {err}");
    assert!(!err.contains("listening on"), "{err}");
    // The cause is said once (it was `File exists (os error 17): File exists (os error 17)`).
    let last = err.lines().last().unwrap_or_default();
    assert_eq!(last.matches("os error").count(), 1, "{err}");
    // The data directory is locked by a running server.
    let s = common::Server::start("bitcask", &[]).await;
    let dir = s.data_dir.to_str().expect("utf-8").to_owned();
    let (status, err) = common::run_to_exit(
        &["serve", "--listen", "127.0.0.1:0", "--data-dir", &dir],
        &[],
    )
    .await;
    assert_eq!(status.code(), Some(8), "locked is exit 8: {err}");
    assert!(err.contains("in use") || err.contains("lock"), "{err}");
    assert!(!err.contains("listening on"), "{err}");
    // A start-up that succeeds does say it.
    assert!(
        s.stderr().contains("listening on http://"),
        "{}",
        s.stderr()
    );
}

/// Bad settings, from a flag, the environment or the file, are usage errors (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_usage_errors() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let data = scratch.path().join("d");
    let data = data.to_str().expect("utf-8");
    let bad_toml = scratch.path().join("bad.toml");
    std::fs::write(&bad_toml, "engine = [unclosed\n").expect("write");
    let bad_toml = bad_toml.to_str().expect("utf-8");
    let missing = scratch.path().join("missing.toml");
    let missing = missing.to_str().expect("utf-8");
    type Env<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(Vec<&str>, Env)> = vec![
        (vec!["--engine", "nope"], vec![]),
        (vec!["--sync", "sometimes"], vec![]),
        (vec![], vec![("HOARDHAVEN_MAX_KEY_BYTES", "zero")]),
        (vec!["--config", bad_toml], vec![]),
        (vec!["--config", missing], vec![]),
    ];
    for (flags, env) in cases {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", data];
        args.extend(flags.iter().copied());
        let (status, err) = common::run_to_exit(&args, &env).await;
        assert_eq!(status.code(), Some(2), "{flags:?} {env:?}: {err}");
        assert!(!err.is_empty(), "{flags:?}: says why");
    }
    // `serve` is the default subcommand and takes its flags without being named: the value is
    // what is refused, not the flag.
    let (status, err) = common::run_to_exit(&["--engine", "rocks", "--data-dir", data], &[]).await;
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("invalid value 'rocks'") && !err.contains("unexpected argument"),
        "{err}"
    );
}
