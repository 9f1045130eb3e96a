//! The command line end to end (assert_cmd): client subcommands against the real server on a
//! loopback port, offline tools over real data directories, exit statuses, completions.
//!
//! Every command runs with a bounded timeout; no test depends on timing.

mod common;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use common::{STEP_TIMEOUT, Server, data_files};

/// The binary with a clean environment and a bounded run time.
fn hh() -> Command {
    let mut c = Command::new(common::binary());
    for (k, _) in std::env::vars() {
        if k.starts_with("HOARDHAVEN_") {
            c.env_remove(k);
        }
    }
    c.env_remove("RUST_LOG").timeout(STEP_TIMEOUT);
    c
}

/// Runs a client subcommand against `s`; returns (status, stdout, stderr).
fn client(s: &Server, args: &[&str], stdin: Option<&[u8]>) -> (i32, Vec<u8>, String) {
    let mut c = hh();
    c.arg(args[0]).args(["--url", &s.base]).args(&args[1..]);
    if let Some(i) = stdin {
        c.write_stdin(i.to_vec());
    }
    run(&mut c)
}

fn run(c: &mut Command) -> (i32, Vec<u8>, String) {
    let out = c.output().expect("run hoardhaven");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn offline(args: &[&str], dir: &Path) -> (i32, Vec<u8>, String) {
    run(hh().args(args).arg("--data-dir").arg(dir))
}

fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("not JSON ({e}): {}", lossy(b)))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_subcommands_and_exit_codes() {
    for engine in common::ENGINES {
        let s = Server::start(engine, &[]).await;
        // put from an argument, a file and stdin; get raw.
        assert_eq!(client(&s, &["put", "a/b c", "v1"], None).0, 0);
        let f = s.scratch.path().join("value.bin");
        std::fs::write(&f, [0u8, 1, 0xFF]).expect("write");
        let file_arg = f.to_str().expect("utf-8 path");
        assert_eq!(client(&s, &["put", "bin", "--file", file_arg], None).0, 0);
        assert_eq!(
            client(&s, &["put", "in%", "--ttl", "300"], Some(b"from stdin")).0,
            0
        );
        let (code, out, err) = client(&s, &["get", "a/b c"], None);
        assert_eq!((code, out.as_slice()), (0, &b"v1"[..]), "{err}");
        assert_eq!(client(&s, &["get", "bin"], None).1, vec![0u8, 1, 0xFF]);
        assert_eq!(client(&s, &["get", "in%"], None).1, b"from stdin");
        // The key went over the wire percent-encoded: the server sees `a/b c` exactly.
        let r = s
            .client
            .get(s.url("/kv/a%2Fb%20c"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.bytes().await.expect("body").as_ref(), b"v1");
        // --json
        let (code, out, _) = client(&s, &["get", "--json", "bin"], None);
        assert_eq!(code, 0);
        let doc = json(&out);
        assert_eq!(doc["value_base64"], "AAH/");
        assert!(doc["etag"].is_string());
        let doc = json(&client(&s, &["get", "--json", "in%"], None).1);
        assert!(
            doc["ttl"].as_u64().is_some_and(|t| t > 0 && t <= 301),
            "{doc}"
        );
        // Not found: exit 1.
        let (code, out, err) = client(&s, &["get", "missing"], None);
        assert_eq!(code, 1, "{err}");
        assert!(out.is_empty() && err.contains("not found"), "{err}");
        // Conditional writes: 412 is exit 3.
        assert_eq!(client(&s, &["put", "bin", "x", "--if-absent"], None).0, 3);
        let etag = json(&client(&s, &["put", "cas", "1", "--json"], None).1)["etag"]
            .as_str()
            .expect("etag")
            .to_owned();
        assert_eq!(
            client(&s, &["put", "cas", "2", "--if-match", &etag], None).0,
            0
        );
        assert_eq!(
            client(&s, &["put", "cas", "3", "--if-match", &etag], None).0,
            3
        );
        // list, raw and JSON, with a prefix and a limit.
        let (code, out, _) = client(&s, &["list"], None);
        assert_eq!(code, 0);
        assert_eq!(lossy(&out), "a/b c\nbin\ncas\nin%\n");
        assert_eq!(client(&s, &["list", "--prefix", "b"], None).1, b"bin\n");
        assert_eq!(
            client(&s, &["list", "--limit", "2"], None).1,
            b"a/b c\nbin\n"
        );
        let doc = json(&client(&s, &["list", "--json", "--prefix", "c"], None).1);
        assert_eq!(doc["keys"], serde_json::json!([{"key": "cas"}]));
        // batch from stdin and from a file.
        let ops = br#"{"ops":[{"op":"put","key":"k1","value":"x"},{"op":"delete","key":"cas"}]}"#;
        let (code, out, err) = client(&s, &["batch"], Some(ops));
        assert_eq!(
            (code, lossy(&out)),
            (0, "applied 2 operations\n".into()),
            "{err}"
        );
        let bf = s.scratch.path().join("batch.json");
        std::fs::write(
            &bf,
            br#"{"ops":[{"op":"put","key":"k2","value_base64":"/w=="}]}"#,
        )
        .expect("write");
        let (code, out, _) = client(&s, &["batch", "--json", bf.to_str().expect("utf-8")], None);
        assert_eq!(code, 0);
        assert_eq!(json(&out)["results"][0]["created"], true);
        assert_eq!(client(&s, &["get", "k2"], None).1, vec![0xFF]);
        assert_eq!(client(&s, &["get", "cas"], None).0, 1);
        // A malformed batch is refused by the server: exit 4; not JSON at all: local, exit 7.
        assert_eq!(
            client(&s, &["batch"], Some(br#"{"ops":[{"op":"nope"}]}"#)).0,
            4
        );
        assert_eq!(client(&s, &["batch"], Some(b"not json")).0, 7);
        // del: 0 then 1.
        assert_eq!(client(&s, &["del", "k1"], None).0, 0);
        assert_eq!(client(&s, &["del", "k1"], None).0, 1);
        // merge, snapshot, stats.
        let (code, out, err) = client(&s, &["merge", "--wait"], None);
        assert_eq!(code, 0, "{err}");
        assert!(lossy(&out).starts_with("merge done"), "{}", lossy(&out));
        let doc = json(&client(&s, &["snapshot", "--wait", "--json"], None).1);
        assert_eq!(doc["state"], "done", "{doc}");
        let doc = json(&client(&s, &["merge", "--status", "--json"], None).1);
        assert!(doc["completed"].as_u64().is_some_and(|n| n >= 1), "{doc}");
        let (code, out, _) = client(&s, &["stats"], None);
        assert_eq!(code, 0);
        assert!(
            lossy(&out).contains(&format!("engine: {engine}")),
            "{}",
            lossy(&out)
        );
        let doc = json(&client(&s, &["stats", "--json"], None).1);
        assert_eq!(doc["keys"], 4, "{doc}");
        // Usage errors: exit 2.
        assert_eq!(client(&s, &["get"], None).0, 2);
        let (code, out, err) = client(&s, &["list", "--limit", "0"], None);
        assert_eq!((code, out.is_empty()), (2, true), "{err}");
        assert!(err.contains("--limit"), "{err}");
        assert_eq!(client(&s, &["put", "k", "v", "--ttl", "0"], None).0, 2);
    }
}

#[test]
fn unreachable_server_is_exit_6_and_token_flag_is_accepted() {
    // A loopback port that was just free: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let (code, _, err) = run(hh().args(["get", "--url", &url, "--token", "secret", "k"]));
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("cannot connect") || err.contains("request failed"),
        "{err}"
    );
}

#[test]
fn a_url_without_scheme_is_a_usage_error_and_bench_unreachable_is_6() {
    let (code, _, err) = run(hh().args(["get", "--url", "127.0.0.1:8080", "k"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no scheme") && err.contains("http://127.0.0.1:8080"),
        "{err}"
    );
    let (code, _, err) = run(hh().args(["bench", "--url", "127.0.0.1:8080", "-q"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no scheme"), "{err}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let (code, _, err) = run(hh().args(["bench", "--url", &url, "-n", "10", "-c", "1", "-q"]));
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_sends_the_token_and_names_a_401() {
    let tokens = "admin:admin-token-0123456789abcdef";
    let s = Server::start("memory", &["--auth-tokens", tokens]).await;
    let bench = |extra: &[&str]| {
        let mut c = hh();
        c.args([
            "bench", "--url", &s.base, "-c", "2", "-k", "10", "-n", "20", "-q",
        ])
        .args(extra);
        run(&mut c)
    };
    let (code, _, err) = bench(&[]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("401") && err.contains("token"), "{err}");
    assert!(!err.contains("in a row"), "{err}");
    let (code, out, err) = bench(&["--token", "admin-token-0123456789abcdef"]);
    assert_eq!(code, 0, "{err}");
    assert!(lossy(&out).contains("put"), "{}", lossy(&out));
    let (code, _, err) = run(hh()
        .args([
            "bench", "--url", &s.base, "-c", "1", "-k", "5", "-n", "5", "-q",
        ])
        .env("HOARDHAVEN_TOKEN", "admin-token-0123456789abcdef"));
    assert_eq!(code, 0, "{err}");
    // The client subcommands say 401 with the same hint.
    let (code, _, err) = client(&s, &["get", "k"], None);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("401") && err.contains("--token"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_tests_are_comma_separated_in_help_and_parsing() {
    let (code, out, _) = run(hh().args(["bench", "--help"]));
    assert_eq!(code, 0);
    let help = lossy(&out);
    assert!(
        help.contains("comma-separated") && help.contains("[default: get,put,mixed]"),
        "{help}"
    );
    let s = Server::start("memory", &[]).await;
    let (code, out, err) = run(hh().args([
        "bench", "--url", &s.base, "-t", "put,get", "-c", "1", "-k", "5", "-n", "5", "-q",
    ]));
    assert_eq!(code, 0, "{err}");
    let table = lossy(&out);
    assert!(
        table.contains("put") && table.contains("get") && !table.contains("mixed"),
        "{table}"
    );
}

#[test]
fn completions_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = run(hh().args(["completions", shell]));
        assert_eq!(code, 0, "{err}");
        let text = lossy(&out);
        assert!(
            text.contains("hoardhaven") && text.contains("export"),
            "{shell}"
        );
    }
    assert_eq!(run(hh().args(["completions", "nosuchshell"])).0, 2);
}

/// Runs the binary with its stdout a pipe whose reader is already gone (`| head` that has
/// read enough); returns (status, stderr).
fn with_closed_stdout(args: &[&str]) -> (i32, String) {
    use std::io::Read;
    let mut c = std::process::Command::new(common::binary());
    c.args(args)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("HOARDHAVEN_") {
            c.env_remove(k);
        }
    }
    let mut child = c.spawn().expect("spawn");
    drop(child.stdout.take());
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait().expect("wait");
    (status.code().unwrap_or(-1), err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_pipe_is_a_quiet_exit_0() {
    let (code, err) = with_closed_stdout(&["completions", "bash"]);
    assert_eq!((code, err.as_str()), (0, ""));
    let s = Server::start("memory", &[]).await;
    assert_eq!(client(&s, &["put", "k", "value"], None).0, 0);
    for args in [
        vec!["get", "--url", &s.base, "k"],
        vec!["list", "--url", &s.base],
        vec!["stats", "--url", &s.base],
        vec![
            "bench", "--url", &s.base, "-c", "1", "-k", "5", "-n", "5", "-q",
        ],
    ] {
        let (code, err) = with_closed_stdout(&args);
        assert_eq!((code, err.as_str()), (0, ""), "{args:?}");
    }
}

/// A JSON-lines file with text, binary and expiring values (and one already expired).
fn sample_lines() -> String {
    let far = 4_102_444_800_000u64; // 2100-01-01
    [
        r#"{"key":"text","value":"héllo"}"#.to_owned(),
        r#"{"key_base64":"AP8=","value_base64":"/wAB"}"#.to_owned(),
        format!(r#"{{"key":"exp","value":"soon","expires_at_ms":{far}}}"#),
        r#"{"key":"ttl","value":"t","ttl":3600}"#.to_owned(),
        r#"{"key":"gone","value":"old","expires_at_ms":1000}"#.to_owned(),
        String::new(),
    ]
    .join("\n")
}

fn export_lines(dir: &Path, engine: &str) -> Vec<serde_json::Value> {
    let (code, out, err) = offline(&["export", "--engine", engine], dir);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("export"), "progress lines on stderr: {err}");
    lossy(&out).lines().map(|l| json(l.as_bytes())).collect()
}

#[test]
fn export_import_round_trip_keeps_bytes_and_expiry() {
    for kind in common::ENGINES {
        let engine = &*kind.to_string();
        let tmp = tempfile::tempdir().expect("tempdir");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        let src = tmp.path().join("in.jsonl");
        std::fs::write(&src, sample_lines()).expect("write");
        let (code, out, err) = offline(
            &["import", "--engine", engine, src.to_str().expect("utf-8")],
            &a,
        );
        assert_eq!(code, 0, "{err}");
        assert!(lossy(&out).contains("imported 4 keys"), "{}", lossy(&out));
        let first = export_lines(&a, engine);
        assert_eq!(first.len(), 4, "{first:?}");
        let by_key = |k: &str| {
            first
                .iter()
                .find(|l| l["key"] == k)
                .unwrap_or_else(|| panic!("{k} missing"))
        };
        assert_eq!(by_key("text")["value"], "héllo");
        assert_eq!(by_key("exp")["expires_at_ms"], 4_102_444_800_000u64);
        assert!(by_key("ttl")["expires_at_ms"].as_u64().is_some());
        assert!(
            first
                .iter()
                .any(|l| l["key_base64"] == "AP8=" && l["value_base64"] == "/wAB")
        );
        // Round trip through a file into another directory, via stdin.
        let dump: String = first.iter().map(|l| format!("{l}\n")).collect();
        let (code, _, err) = run(hh()
            .args(["import", "--engine", engine, "--data-dir"])
            .arg(&b)
            .write_stdin(dump));
        assert_eq!(code, 0, "{err}");
        assert_eq!(export_lines(&b, engine), first);
        // A malformed line stops the import, naming the line.
        let (code, _, err) = run(hh()
            .args(["import", "--engine", engine, "--data-dir"])
            .arg(&b)
            .write_stdin("{\"key\":\"x\",\"value\":\"y\"}\n{\"key\":1}\n"));
        assert_eq!(code, 7);
        assert!(err.contains("line 2"), "{err}");
    }
}

/// Imports `n` keys of `size`-byte values into `dir` (bitcask) with `hoardhaven import`.
fn import_keys(dir: &Path, n: usize, size: usize, tag: char) {
    let v: String = std::iter::repeat_n(tag, size).collect();
    let lines: String = (0..n)
        .map(|i| format!("{{\"key\":\"key{i:05}\",\"value\":\"{v}\"}}\n"))
        .collect();
    let (code, _, err) = run(hh()
        .arg("import")
        .arg("--data-dir")
        .arg(dir)
        .write_stdin(lines));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn compact_shrinks_a_directory_and_info_reports() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("d");
    import_keys(&dir, 200, 1000, 'a');
    import_keys(&dir, 200, 1000, 'b'); // every key overwritten: half the bytes are dead
    let before = common::dir_size(&dir);
    let (code, out, err) = offline(&["compact"], &dir);
    assert_eq!(code, 0, "{err}");
    assert!(lossy(&out).contains("compacted"), "{}", lossy(&out));
    let after = common::dir_size(&dir);
    assert!(after < before * 2 / 3, "{before} -> {after}");
    let (code, out, _) = offline(&["info", "--json"], &dir);
    assert_eq!(code, 0);
    let doc = json(&out);
    assert_eq!(doc["keys"], 200);
    assert_eq!(doc["engine"], "bitcask");
    let lines = export_lines(&dir, "bitcask");
    assert!(
        lines
            .iter()
            .all(|l| l["value"].as_str().is_some_and(|v| v.starts_with('b')))
    );
    assert_eq!(offline(&["check"], &dir).0, 0);
}

#[test]
fn check_finds_a_flipped_bit_and_refuses_to_cut_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("d");
    import_keys(&dir, 50, 100, 'x');
    assert_eq!(offline(&["compact"], &dir).0, 0); // a sealed merge output with a hint
    let (code, out, err) = offline(&["check"], &dir);
    assert_eq!(code, 0, "{}{err}", lossy(&out));
    assert!(lossy(&out).contains("hint ok"), "{}", lossy(&out));
    let sealed = data_files(&dir)
        .into_iter()
        .find(|p| !p.to_string_lossy().ends_with("-00000.data"))
        .expect("a merge output");
    let mut bytes = std::fs::read(&sealed).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&sealed, &bytes).expect("write");
    let (code, out, _) = offline(&["check"], &dir);
    let text = lossy(&out);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("PROBLEM") && text.contains("not repairable"),
        "{text}"
    );
    let doc = json(&offline(&["check", "--json"], &dir).1);
    assert_eq!(doc["clean"], false);
    assert_eq!(doc["problems"][0]["fix"]["action"], "refuse", "{doc}");
    // --repair leaves acknowledged data alone: still exit 1, file unchanged.
    assert_eq!(offline(&["check", "--repair"], &dir).0, 1);
    assert_eq!(std::fs::read(&sealed).expect("read"), bytes);
}

#[test]
fn check_reports_a_torn_tail_and_repair_cuts_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("d");
    import_keys(&dir, 20, 10, 'y');
    let last = data_files(&dir).pop().expect("a data file");
    let good_len = std::fs::metadata(&last).expect("stat").len();
    // A crash mid-append: half a record header of garbage after the last record.
    let mut bytes = std::fs::read(&last).expect("read");
    bytes.extend_from_slice(&[0xAB; 17]);
    std::fs::write(&last, &bytes).expect("write");
    let (code, out, _) = offline(&["check"], &dir);
    let text = lossy(&out);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("torn tail") && text.contains("--repair cuts"),
        "{text}"
    );
    let (code, out, _) = offline(&["check", "--repair"], &dir);
    assert_eq!(code, 0, "{}", lossy(&out));
    assert!(lossy(&out).contains("repaired"), "{}", lossy(&out));
    assert_eq!(std::fs::metadata(&last).expect("stat").len(), good_len);
    assert_eq!(offline(&["check"], &dir).0, 0);
    assert_eq!(export_lines(&dir, "bitcask").len(), 20);
}

#[test]
fn check_of_a_memory_store_opens_it_and_refuses_repair() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("m");
    let (code, _, err) = run(hh()
        .args(["import", "--engine", "memory", "--data-dir"])
        .arg(&dir)
        .write_stdin("{\"key\":\"a\",\"value\":\"b\"}\n"));
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = offline(&["check"], &dir);
    assert_eq!(code, 0, "{err}");
    assert!(lossy(&out).contains("memory"), "{}", lossy(&out));
    assert_eq!(offline(&["check", "--repair"], &dir).0, 2);
    assert_eq!(offline(&["info"], &dir).0, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_tools_refuse_a_directory_in_use() {
    let s = Server::start("bitcask", &[]).await;
    let dump = s.scratch.path().join("in.jsonl");
    std::fs::write(&dump, "{\"key\":\"a\",\"value\":\"b\"}\n").expect("write");
    let dump = dump.to_str().expect("utf-8").to_owned();
    for args in [
        vec!["check"],
        vec!["check", "--repair"],
        vec!["export"],
        vec!["import", dump.as_str()],
        vec!["compact"],
        vec!["info"],
    ] {
        let (code, _, err) = offline(&args, &s.data_dir);
        assert_eq!(code, 8, "{args:?}: {err}");
        assert!(err.contains("in use"), "{err}");
    }
    // A directory that does not exist is a local error, and is not created.
    let missing = s.scratch.path().join("nope");
    assert_eq!(offline(&["info"], &missing).0, 7);
    assert!(!missing.exists());
}

/// A server over HTTPS with a self-signed certificate for `localhost` and `127.0.0.1`; returns
/// it (killed on drop), its `https://` base URL and the certificate's path (the CA to trust).
struct TlsServer {
    child: std::process::Child,
    base: String,
    cert: PathBuf,
    _scratch: tempfile::TempDir,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_server(extra: &[&str]) -> TlsServer {
    let scratch = tempfile::tempdir().expect("tempdir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("rcgen");
    let cert = scratch.path().join("server.crt");
    let key = scratch.path().join("server.key");
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    let port_file = scratch.path().join("port");
    let mut cmd = std::process::Command::new(common::binary());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--engine", "memory"])
        .arg("--data-dir")
        .arg(scratch.path().join("data"))
        .arg("--port-file")
        .arg(&port_file)
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .args(extra)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("HOARDHAVEN_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().expect("spawn");
    let deadline = std::time::Instant::now() + STEP_TIMEOUT;
    let addr: std::net::SocketAddr = loop {
        if let Ok(s) = std::fs::read_to_string(&port_file)
            && let Ok(a) = s.trim().parse()
        {
            break a;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("TLS server exited early: {st}");
        }
        assert!(std::time::Instant::now() < deadline, "no port file");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let s = TlsServer {
        child,
        base: format!("https://localhost:{}", addr.port()),
        cert,
        _scratch: scratch,
    };
    // Ready once a read of an absent key is "not found" (503 while the engine opens).
    let ca = s.cert.to_str().expect("utf-8").to_owned();
    loop {
        let (code, _, err) = run(hh().args(["get", "--url", &s.base, "--ca-cert", &ca, "nope"]));
        if code == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not ready: {err}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    s
}

/// A loopback port answering every connection with a plain HTTP 400 (as a plain server does
/// to a TLS ClientHello); returns its `https://` URL and the listener's thread.
fn tls_plain_port() -> (String, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("https://127.0.0.1:{}", l.local_addr().expect("addr").port());
    let t = std::thread::spawn(move || {
        if let Ok((mut c, _)) = l.accept() {
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    (url, t)
}

#[test]
fn the_client_speaks_tls_with_a_ca_file() {
    let s = tls_server(&[]);
    let ca = s.cert.to_str().expect("utf-8");
    let with_ca = |args: &[&str]| run(hh().args(args).args(["--url", &s.base, "--ca-cert", ca]));
    let (code, _, err) = with_ca(&["put", "k", "over tls"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = with_ca(&["get", "k"]);
    assert_eq!((code, lossy(&out)), (0, "over tls".into()), "{err}");
    // The CA from the environment; an IP address in the URL matches the certificate's IP.
    let by_ip = s.base.replace("localhost", "127.0.0.1");
    let (code, out, err) = run(hh()
        .args(["get", "--url", &by_ip, "k"])
        .env("HOARDHAVEN_CA_CERT", ca));
    assert_eq!((code, lossy(&out)), (0, "over tls".into()), "{err}");
    // Not trusted without the CA: unreachable (6), saying why.
    let (code, _, err) = run(hh().args(["get", "--url", &s.base, "k"]));
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("TLS") && err.contains("--ca-cert"), "{err}");
    // Plain HTTP to the TLS port: said so.
    let plain = s.base.replace("https://", "http://");
    let (code, _, err) = run(hh().args(["get", "--url", &plain, "k"]));
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("this port speaks TLS"), "{err}");
    let (code, _, err) = run(hh().args(["bench", "--url", &plain, "-c", "1", "-n", "5", "-q"]));
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("this port speaks TLS"), "{err}");
    // https:// to a plain HTTP port: said so.
    let plain_server = tls_plain_port();
    let (code, _, err) = run(hh().args(["get", "--url", &plain_server.0, "--ca-cert", ca, "k"]));
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("does not speak TLS"), "{err}");
    drop(plain_server);
    // bench over TLS.
    let (code, out, err) = run(hh().args([
        "bench",
        "--url",
        &s.base,
        "--ca-cert",
        ca,
        "-c",
        "2",
        "-k",
        "10",
        "-n",
        "20",
        "-q",
    ]));
    assert_eq!(code, 0, "{err}");
    assert!(lossy(&out).contains("get"), "{}", lossy(&out));
}

#[test]
fn the_client_speaks_http2_by_alpn_or_prior_knowledge() {
    // Over TLS: h2 when the server offers it; `--http-version 2` refuses a server that does
    // not, so a success with it is a real HTTP/2 exchange.
    let h2 = tls_server(&[]);
    let h1 = tls_server(&["--http2-enabled", "false"]);
    for (s, offers_h2) in [(&h2, true), (&h1, false)] {
        let ca = s.cert.to_str().expect("utf-8");
        let call = |version: &str, args: &[&str]| {
            run(hh().args(args).args([
                "--url",
                &s.base,
                "--ca-cert",
                ca,
                "--http-version",
                version,
            ]))
        };
        for version in ["auto", "1.1"] {
            let (code, _, err) = call(version, &["put", "k", version]);
            assert_eq!(code, 0, "{version}: {err}");
            let (code, out, err) = call(version, &["get", "k"]);
            assert_eq!((code, lossy(&out)), (0, version.into()), "{err}");
        }
        let (code, out, err) = call("2", &["get", "k"]);
        if offers_h2 {
            assert_eq!((code, lossy(&out)), (0, "1.1".into()), "{err}");
        } else {
            assert_eq!(code, 6, "{err}");
            assert!(err.contains("does not offer HTTP/2"), "{err}");
        }
    }
    drop((h2, h1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_speaks_h2c_with_prior_knowledge() {
    let on = Server::start("memory", &[]).await;
    let off = Server::start("memory", &["--http2-enabled", "false"]).await;
    let (code, _, err) = client(&on, &["put", "--http-version", "2", "k", "h2c"], None);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = client(&on, &["get", "--http-version", "2", "k"], None);
    assert_eq!((code, lossy(&out)), (0, "h2c".into()), "{err}");
    // A server with HTTP/2 off answers the preface in HTTP/1.1: unreachable (6), saying why.
    let (code, _, err) = client(&off, &["get", "--http-version", "2", "k"], None);
    assert_eq!(code, 6, "{err}");
    assert!(
        err.contains("prior knowledge") && err.contains("HTTP/2"),
        "{err}"
    );
    let (code, _, err) = client(&off, &["get", "k"], None);
    assert_eq!(code, 1, "auto is HTTP/1.1 on http://: {err}");
}

/// A TLS port that requires a client certificate signed by its own CA (as a proxy doing mTLS
/// in front of hoardhaven would) and answers `GET` with `200 mtls-ok`; returns its `https://`
/// URL, the CA file, a client certificate and key signed by that CA, and the scratch dir.
fn mtls_port() -> (String, PathBuf, PathBuf, PathBuf, tempfile::TempDir) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::pem::PemObject;
    use std::io::{Read, Write};
    use std::sync::Arc;
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().expect("key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().expect("key");
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&server_key, &issuer)
        .expect("server cert");
    let client_key = KeyPair::generate().expect("key");
    let client_cert = CertificateParams::new(vec!["client".to_string()])
        .expect("params")
        .signed_by(&client_key, &issuer)
        .expect("client cert");
    let write = |name: &str, pem: String| {
        let p = scratch.path().join(name);
        std::fs::write(&p, pem).expect("write");
        p
    };
    let ca = write("ca.pem", ca_cert.pem());
    let cert = write("client.pem", client_cert.pem());
    let key = write("client.key", client_key.serialize_pem());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .expect("verifier");
    let server_key =
        rustls::pki_types::PrivateKeyDer::from_pem_slice(server_key.serialize_pem().as_bytes())
            .expect("server key");
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![server_cert.der().clone()], server_key)
            .expect("server config"),
    );
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("https://127.0.0.1:{}", l.local_addr().expect("addr").port());
    std::thread::spawn(move || {
        for tcp in l.incoming().flatten() {
            let Ok(conn) = rustls::ServerConnection::new(Arc::clone(&config)) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 4096];
            // The handshake runs inside the first read; it fails without a client certificate.
            if tls.read(&mut buf).is_ok() {
                let _ = tls.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nmtls-ok",
                );
                let _ = tls.flush();
            }
        }
    });
    (url, ca, cert, key, scratch)
}

#[test]
fn the_client_presents_a_client_certificate_when_asked() {
    let (url, ca, cert, key, _scratch) = mtls_port();
    let path = |p: &PathBuf| p.to_str().expect("utf-8").to_owned();
    let (ca, cert, key) = (path(&ca), path(&cert), path(&key));
    let (code, out, err) = run(hh().args([
        "get",
        "--url",
        &url,
        "--ca-cert",
        &ca,
        "--client-cert",
        &cert,
        "--client-key",
        &key,
        "k",
    ]));
    assert_eq!((code, lossy(&out)), (0, "mtls-ok".into()), "{err}");
    // Without it the handshake is refused: unreachable (6), not a panic.
    let (code, _, err) = run(hh().args(["get", "--url", &url, "--ca-cert", &ca, "k"]));
    assert_eq!(code, 6, "{err}");
    // One without the other is a usage error; a missing key file is named.
    let (code, _, err) = run(hh().args(["get", "--url", &url, "--client-cert", &cert, "k"]));
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(hh().args([
        "get",
        "--url",
        &url,
        "--ca-cert",
        &ca,
        "--client-cert",
        &cert,
        "--client-key",
        "/nonexistent/client.key",
        "k",
    ]));
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("--client-key"), "{err}");
}
