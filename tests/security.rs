//! Security and overload, against the real binary on loopback: tokens and roles on every
//! route, token files with hashes and their reload, protected mode, TLS round trip and
//! certificate reload, head/body/key limits, request timeout, slowloris clients, load
//! shedding, CORS. Every wait is bounded by [`STEP_TIMEOUT`]; nothing asserts a duration.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{STEP_TIMEOUT, Server, binary, run_to_exit, wait_exit};
use reqwest::{Method, StatusCode};
use rustls_pki_types::CertificateDer;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const READ: &str = "read-token-0123456789abcdef";
const WRITE: &str = "write-token-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789abcdef";

fn tokens_flag() -> String {
    format!("read:{READ},write:{WRITE},admin:{ADMIN}")
}

async fn start_auth(extra: &[&str]) -> Server {
    let tokens = tokens_flag();
    let mut args = vec!["--auth-tokens", tokens.as_str()];
    args.extend_from_slice(extra);
    Server::start("bitcask", &args).await
}

/// Sends a raw request and reads until the server closes (bounded).
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before the whole request is written.
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(STEP_TIMEOUT, s.read_to_end(&mut out))
        .await
        .expect("server answered and closed");
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Tokens and roles

#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
enum Need {
    Open,
    Read,
    Write,
    Admin,
}

/// Every route of the API with the role it needs.
fn routes() -> Vec<(Method, &'static str, Option<Value>, Need)> {
    use serde_json::json;
    vec![
        (Method::GET, "/healthz", None, Need::Open),
        (Method::GET, "/readyz", None, Need::Open),
        (Method::GET, "/metrics", None, Need::Read),
        (Method::GET, "/openapi.json", None, Need::Read),
        (Method::GET, "/docs/", None, Need::Read),
        (Method::GET, "/kv/k", None, Need::Read),
        (Method::HEAD, "/kv/k", None, Need::Read),
        (Method::GET, "/kv?prefix=k", None, Need::Read),
        (
            Method::POST,
            "/mget",
            Some(json!({"keys": ["k"]})),
            Need::Read,
        ),
        (Method::PUT, "/kv/k", None, Need::Write),
        (Method::DELETE, "/kv/k", None, Need::Write),
        (
            Method::POST,
            "/batch",
            Some(json!({"ops": [{"op": "put", "key": "b", "value": "1"}]})),
            Need::Write,
        ),
        (Method::GET, "/admin/stats", None, Need::Admin),
        (Method::GET, "/admin/merge", None, Need::Admin),
        (Method::POST, "/admin/merge?wait=true", None, Need::Admin),
        (Method::GET, "/admin/snapshot", None, Need::Admin),
        (Method::POST, "/admin/snapshot?wait=true", None, Need::Admin),
    ]
}

async fn send(
    s: &Server,
    method: &Method,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> reqwest::Response {
    send_to(&s.client, &s.base, method, path, body, token).await
}

async fn send_to(
    client: &reqwest::Client,
    base: &str,
    method: &Method,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> reqwest::Response {
    let mut rb = client.request(method.clone(), format!("{base}{path}"));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    rb = match body {
        Some(b) => rb.json(b),
        None if *method == Method::PUT => rb.body("v"),
        None => rb,
    };
    rb.send().await.expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_under_every_role() {
    let s = start_auth(&[]).await;
    let callers: [(&str, Option<&str>, Option<Need>); 5] = [
        ("no token", None, None),
        ("unknown token", Some("not-a-known-token-0123456789"), None),
        ("read", Some(READ), Some(Need::Read)),
        ("write", Some(WRITE), Some(Need::Write)),
        ("admin", Some(ADMIN), Some(Need::Admin)),
    ];
    for (method, path, body, need) in routes() {
        for (who, token, role) in callers {
            let r = send(&s, &method, path, body.as_ref(), token).await;
            let st = r.status();
            let case = format!("{method} {path} as {who}: {st}");
            assert!(!st.is_server_error(), "{case}");
            let www = r
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap_or("").to_owned());
            match role {
                _ if need == Need::Open => {
                    assert!(st != 401 && st != 403, "{case}");
                }
                None => {
                    assert_eq!(st, StatusCode::UNAUTHORIZED, "{case}");
                    let www = www.expect("WWW-Authenticate on 401");
                    assert!(www.starts_with("Bearer"), "{case}: {www}");
                    assert_eq!(www.contains("invalid_token"), token.is_some(), "{case}");
                }
                Some(r) if r < need => {
                    assert_eq!(st, StatusCode::FORBIDDEN, "{case}");
                }
                Some(_) => assert!(st != 401 && st != 403, "{case}"),
            }
            if method != Method::HEAD && (st == 401 || st == 403) {
                let p: Value = r.json().await.expect("problem json");
                assert_eq!(p["status"], st.as_u16(), "{case}");
            }
        }
    }
    // A malformed header is a missing token, not a crash.
    for h in ["Bearer", "Basic abc", "bearer ", "Token xyz"] {
        let r = s
            .client
            .get(s.url("/kv/k"))
            .header("authorization", h)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 401, "{h}");
    }
    // The scheme name is case-insensitive.
    let r = s
        .client
        .get(s.url("/kv?prefix=k"))
        .header("authorization", format!("bearer {READ}"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_the_scheme_and_roles() {
    let s = start_auth(&[]).await;
    let doc: Value = send(&s, &Method::GET, "/openapi.json", None, Some(READ))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["paths"]["/healthz"]["get"]["security"],
        serde_json::json!([])
    );
    assert_eq!(
        doc["paths"]["/kv/{key}"]["put"]["security"][0]["bearer"][0],
        "write"
    );
    assert_eq!(
        doc["paths"]["/kv/{key}"]["get"]["security"][0]["bearer"][0],
        "read"
    );
    assert_eq!(
        doc["paths"]["/admin/stats"]["get"]["security"][0]["bearer"][0],
        "admin"
    );
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (m, op) in item.as_object().expect("item") {
            assert!(op.get("security").is_some(), "{m} {path} has no security");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_docs_can_be_public() {
    let s = start_auth(&["--auth-metrics-open", "--auth-docs-open"]).await;
    for p in ["/metrics", "/openapi.json", "/docs/"] {
        let r = send(&s, &Method::GET, p, None, None).await;
        assert_eq!(r.status(), 200, "{p}");
    }
    let r = send(&s, &Method::GET, "/kv/k", None, None).await;
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_file_with_hashes_reloads_on_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("tokens");
    let hashed = hoardhaven::http::auth::token_digest_hex(READ);
    std::fs::write(
        &file,
        format!("# read token given by its hash\nread:sha256:{hashed}\nadmin:{ADMIN}\n"),
    )
    .expect("write tokens");
    let file_arg = file.display().to_string();
    let p = Spawned::start(
        &["--listen", "127.0.0.1:0"],
        &["--auth-token-file", &file_arg],
    )
    .await;
    let (c, base) = (common::client(), p.base());
    wait_ok(&c, &format!("{base}/readyz")).await;
    let send = |m: Method, path: &'static str, t: &'static str| {
        let (c, base) = (c.clone(), base.clone());
        async move { send_to(&c, &base, &m, path, None, Some(t)).await.status() }
    };
    assert_eq!(send(Method::GET, "/kv/k", READ).await, 404);
    assert_eq!(send(Method::PUT, "/kv/k", READ).await, 403);
    assert_eq!(send(Method::PUT, "/kv/k", ADMIN).await, 201);
    assert_eq!(send(Method::PUT, "/kv/k", WRITE).await, 401);

    // Add a write token, drop the admin one, and send SIGHUP.
    std::fs::write(&file, format!("read:sha256:{hashed}\nwrite:{WRITE}\n")).expect("rewrite");
    p.signal("-HUP");
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    while send(Method::PUT, "/kv/k", WRITE).await != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "token file not reloaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(send(Method::GET, "/admin/stats", ADMIN).await, 401);

    // A broken file keeps the tokens in use.
    std::fs::write(&file, "write:short\n").expect("rewrite");
    p.signal("-HUP");
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    while !p.stderr().contains("tokens not reloaded") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reload error logged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(send(Method::PUT, "/kv/k", WRITE).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_logs_metrics_or_answers() {
    let s = start_auth(&["--log-level", "trace", "--auth-metrics-open"]).await;
    let wrong = "wrong-token-zzzzzzzzzzzzzzzzzz";
    for t in [READ, WRITE, ADMIN, wrong] {
        let r = send(&s, &Method::PUT, "/kv/k", None, Some(t)).await;
        let body = r.text().await.expect("body");
        assert!(!body.contains(t), "answer echoes the token");
        let _ = send(&s, &Method::GET, "/admin/stats", None, Some(t)).await;
    }
    let metrics = send(&s, &Method::GET, "/metrics", None, None)
        .await
        .text()
        .await
        .expect("metrics");
    let log = s.stderr();
    assert!(log.contains("request"), "the log has request lines");
    for t in [READ, WRITE, ADMIN, wrong] {
        assert!(!log.contains(t), "a token is in the log");
        assert!(!metrics.contains(t), "a token is in the metrics");
    }
}

// ---------------------------------------------------------------------------------------------
// Protected mode

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_mode_refuses_remote_listen_without_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data").display().to_string();
    let (status, err) = run_to_exit(
        &["serve", "--listen", "0.0.0.0:0", "--data-dir", &data],
        &[],
    )
    .await;
    assert!(!status.success());
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("protected mode"), "{err}");
    assert!(err.contains("--allow-unauthenticated-remote"), "{err}");
    assert!(!Path::new(&data).exists(), "nothing opened before refusing");

    // Either way out starts the server.
    let tokens = tokens_flag();
    for extra in [
        vec!["--allow-unauthenticated-remote"],
        vec!["--auth-tokens", tokens.as_str()],
    ] {
        let mut p = Spawned::start(&["--listen", "0.0.0.0:0"], &extra).await;
        let url = format!("http://127.0.0.1:{}/healthz", p.addr.port());
        let r = common::client().get(url).send().await.expect("healthz");
        assert_eq!(r.status(), 200);
        if extra.len() == 1 {
            assert!(
                p.stderr().contains("WITHOUT authentication"),
                "{}",
                p.stderr()
            );
        }
        p.stop().await;
    }
}

/// Polls `url` until it answers 200 (bounded).
async fn wait_ok(client: &reqwest::Client, url: &str) {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let r = client.get(url).send().await;
        if r.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never answered 200"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A server started by hand (for listen addresses and schemes the harness does not cover).
struct Spawned {
    child: Option<Child>,
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
}

impl Spawned {
    async fn start(listen: &[&str], extra: &[&str]) -> Spawned {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = dir.path().join("port");
        let log = std::fs::File::create(dir.path().join("stderr.log")).expect("log");
        let mut cmd = Command::new(binary());
        cmd.arg("serve")
            .args(listen)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--port-file")
            .arg(&port)
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, _) in std::env::vars() {
            if k.starts_with("HOARDHAVEN_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().expect("spawn");
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        let addr: std::net::SocketAddr = loop {
            if let Ok(s) = std::fs::read_to_string(&port)
                && let Ok(a) = s.trim().parse()
            {
                break a;
            }
            if let Ok(Some(st)) = child.try_wait() {
                let err = std::fs::read_to_string(dir.path().join("stderr.log"));
                panic!("server exited early with {st}: {err:?}");
            }
            assert!(tokio::time::Instant::now() < deadline, "no port file");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        Spawned {
            child: Some(child),
            addr,
            dir,
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let st = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(st.success());
    }

    async fn stop(&mut self) {
        self.signal("-TERM");
        let mut c = self.child.take().expect("running");
        assert!(wait_exit(&mut c).await.success());
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TLS

struct TestCert {
    der: CertificateDer<'static>,
}

fn make_cert(dir: &Path, name: &str) -> (TestCert, PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("rcgen");
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    (
        TestCert {
            der: ck.cert.der().clone(),
        },
        cert,
        key,
    )
}

fn client_config(trusted: &[&CertificateDer<'static>]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in trusted {
        roots.add((*c).clone()).expect("root");
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// One HTTPS request over a fresh connection (hyper + tokio-rustls): status and body.
async fn https(
    addr: std::net::SocketAddr,
    trusted: &[&CertificateDer<'static>],
    method: Method,
    path: &str,
    body: &'static str,
) -> Result<(u16, String), String> {
    use http_body_util::BodyExt;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(trusted)));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method.as_str())
        .uri(path)
        .header("host", "localhost")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            body.as_bytes(),
        )))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(STEP_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// The certificate the server presents now.
async fn presented(addr: std::net::SocketAddr, trusted: &[&CertificateDer<'static>]) -> Vec<u8> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(trusted)));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio::time::timeout(STEP_TIMEOUT, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let (_, conn) = tls.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .expect("peer certificate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_round_trip_and_certificate_reload() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (first, cert, key) = make_cert(certs.path(), "server");
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let mut p = Spawned::start(
        &["--listen", "127.0.0.1:0"],
        &[
            "--tls-cert-file",
            &cert_arg,
            "--tls-key-file",
            &key_arg,
            "--tls-reload-interval-secs",
            "0",
        ],
    )
    .await;
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    while https(p.addr, &[&first.der], Method::GET, "/readyz", "")
        .await
        .map(|r| r.0)
        != Ok(200)
    {
        assert!(tokio::time::Instant::now() < deadline, "not ready over TLS");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let put = https(p.addr, &[&first.der], Method::PUT, "/kv/secret", "over tls").await;
    assert_eq!(put.expect("put").0, 201);
    let got = https(p.addr, &[&first.der], Method::GET, "/kv/secret", "").await;
    assert_eq!(got.expect("get"), (200, "over tls".to_owned()));
    // A client that does not trust the certificate fails the handshake.
    let (other, _, _) = make_cert(certs.path(), "untrusted");
    assert!(
        https(p.addr, &[&other.der], Method::GET, "/healthz", "")
            .await
            .is_err()
    );

    // Plain HTTP on the TLS port gets no answer.
    let plain = common::client()
        .get(format!("http://127.0.0.1:{}/healthz", p.addr.port()))
        .send()
        .await;
    assert!(plain.is_err() || plain.is_ok_and(|r| r.status() != 200));

    // Replace the files and send SIGHUP: new handshakes present the new certificate.
    let (second, new_cert, new_key) = make_cert(certs.path(), "next");
    std::fs::rename(&new_key, &key).expect("key");
    std::fs::rename(&new_cert, &cert).expect("cert");
    assert_eq!(presented(p.addr, &[&first.der]).await, first.der.as_ref());
    p.signal("-HUP");
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    while presented(p.addr, &[&first.der, &second.der]).await != second.der.as_ref() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "certificate not reloaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let got = https(p.addr, &[&second.der], Method::GET, "/kv/secret", "").await;
    assert_eq!(got.expect("get with the new certificate").0, 200);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_certificate_reloads_when_the_files_change() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (first, cert, key) = make_cert(certs.path(), "server");
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let mut p = Spawned::start(
        &["--listen", "127.0.0.1:0"],
        &[
            "--tls-cert-file",
            &cert_arg,
            "--tls-key-file",
            &key_arg,
            "--tls-reload-interval-secs",
            "1",
        ],
    )
    .await;
    assert_eq!(presented(p.addr, &[&first.der]).await, first.der.as_ref());
    let (second, new_cert, new_key) = make_cert(certs.path(), "next");
    std::fs::rename(&new_key, &key).expect("key");
    std::fs::rename(&new_cert, &cert).expect("cert");
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    while presented(p.addr, &[&first.der, &second.der]).await != second.der.as_ref() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "certificate not reloaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    p.stop().await;
}

#[tokio::test]
async fn bad_tls_files_are_refused_at_start() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (_, cert, _) = make_cert(certs.path(), "a");
    let (_, _, other_key) = make_cert(certs.path(), "b");
    let data = certs.path().join("data").display().to_string();
    let (status, err) = run_to_exit(
        &[
            "serve",
            "--data-dir",
            &data,
            "--listen",
            "127.0.0.1:0",
            "--tls-cert-file",
            &cert.display().to_string(),
            "--tls-key-file",
            &other_key.display().to_string(),
        ],
        &[],
    )
    .await;
    assert!(!status.success());
    assert!(err.contains("does not match"), "{err}");
    assert!(err.contains("tls.cert_file"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Limits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_heads_bodies_and_keys_are_refused() {
    let s = Server::start(
        "bitcask",
        &["--max-value-bytes", "1024", "--max-body-bytes", "4096"],
    )
    .await;
    // Header fields over max_header_bytes (16 KiB): 431 problem+json from the router.
    let r = s
        .client
        .get(s.url("/kv/a"))
        .header("x-big", "a".repeat(20 * 1024))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 431);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // Far over it: refused by the HTTP layer before the router (hard cap on the head).
    let req = format!(
        "GET /kv/a HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    assert_eq!(status_of(&raw(s.addr, req.as_bytes()).await), 431);
    // Request target over max_uri_bytes (8 KiB): 414.
    let r = s
        .client
        .get(s.url(&format!("/kv?prefix={}", "p".repeat(9000))))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 414);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // Key over max_key_bytes: 414 key-too-long.
    let r = s
        .client
        .get(s.url(&format!("/kv/{}", "k".repeat(1025))))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 414);
    // Value over the limit, declared and streamed (chunked, no length): 413.
    let r = s
        .client
        .put(s.url("/kv/v"))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 413);
    let chunk = format!("400\r\n{}\r\n", "y".repeat(1024));
    let req = format!(
        "PUT /kv/v HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}{}0\r\n\r\n",
        chunk, chunk
    );
    assert_eq!(status_of(&raw(s.addr, req.as_bytes()).await), 413);
    // JSON body over max_body_bytes: 413.
    let keys: Vec<String> = (0..1000).map(|i| format!("key-{i:08}")).collect();
    let r = s
        .client
        .post(s.url("/mget"))
        .json(&serde_json::json!({ "keys": keys }))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 413);
    // The server is still fine.
    assert_eq!(
        s.client
            .get(s.url("/healthz"))
            .send()
            .await
            .expect("h")
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408() {
    let s = Server::start("bitcask", &["--request-timeout-secs", "1"]).await;
    let got = raw(
        s.addr,
        b"PUT /kv/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b",
    )
    .await;
    assert_eq!(status_of(&got), 408, "{got}");
    assert!(got.contains("request-timeout"), "{got}");
}

// ---------------------------------------------------------------------------------------------
// Slowloris

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_closed_while_others_are_served() {
    let s = Server::start("bitcask", &["--header-read-timeout-secs", "1"]).await;
    // One client dribbles a header byte at a time; another connects and says nothing.
    let mut dribbler = TcpStream::connect(s.addr).await.expect("connect");
    let mut silent = TcpStream::connect(s.addr).await.expect("connect");
    dribbler
        .write_all(b"GET /kv/a HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("start");
    let closed = Arc::new(AtomicBool::new(false));
    let dribble = {
        let closed = Arc::clone(&closed);
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
            let mut buf = [0u8; 1];
            let mut cut = false;
            for b in b"X-Slow: 1\r\n".iter().cycle() {
                if tokio::time::Instant::now() > deadline {
                    break;
                }
                if dribbler.write_all(&[*b]).await.is_err() {
                    cut = true;
                    break;
                }
                // A read that ends (EOF or reset) means the server closed the connection.
                let read = tokio::time::timeout(
                    std::time::Duration::from_millis(100),
                    dribbler.read(&mut buf),
                )
                .await;
                if matches!(read, Ok(Ok(0) | Err(_))) {
                    cut = true;
                    break;
                }
            }
            closed.store(true, Ordering::SeqCst);
            cut
        })
    };
    // Others are served meanwhile.
    let mut served = 0;
    while !closed.load(Ordering::SeqCst) {
        let r = s.client.get(s.url("/kv/a")).send().await.expect("served");
        assert_eq!(r.status(), 404);
        served += 1;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        dribble.await.expect("dribbler"),
        "the dribbling client was not closed"
    );
    assert!(served > 0);
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(STEP_TIMEOUT, silent.read(&mut buf))
        .await
        .expect("silent client closed in time");
    assert!(matches!(r, Ok(0) | Err(_)), "silent connection closed");
    // The dribbler was cut off, not answered.
    assert_eq!(
        s.client
            .get(s.url("/healthz"))
            .send()
            .await
            .expect("h")
            .status(),
        200
    );
}

// ---------------------------------------------------------------------------------------------
// Load shedding

/// Holds one in-flight slot: a PUT whose body never comes (until dropped).
async fn hold_slot(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"PUT /kv/held HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        .await
        .expect("write");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_retry_after_and_probes_answer() {
    let s = Server::start("bitcask", &["--max-in-flight", "2"]).await;
    let mut held = vec![hold_slot(s.addr).await, hold_slot(s.addr).await];
    // Both slots are taken once requests are shed (the held PUTs reach their handlers). A held
    // PUT that reaches the server while one of these GETs has the other slot is itself shed
    // (answered 503): it is sent again, or the GETs would find a free slot for ever (seen on
    // a loaded machine: "never shed", with one held PUT answered 503).
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let r = s.client.get(s.url("/kv/a")).send().await.expect("get");
        if r.status() == 503 {
            break;
        }
        for slot in &mut held {
            let mut buf = [0u8; 64];
            let answered = !matches!(
                slot.try_read(&mut buf),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            );
            if answered {
                *slot = hold_slot(s.addr).await;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never shed: {}",
            s.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // 10x the limit at once: every one shed fast, with Retry-After; probes answer.
    let burst: Vec<_> = (0..20)
        .map(|i| {
            let (c, u) = (s.client.clone(), s.url(&format!("/kv/k{i}")));
            tokio::spawn(async move { c.put(u).body("v").send().await })
        })
        .collect();
    for h in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            s.client.get(s.url(h)).send().await.expect("probe").status(),
            200,
            "{h}"
        );
    }
    for b in burst {
        let r = b.await.expect("task").expect("answer");
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        let p: Value = r.json().await.expect("problem");
        assert_eq!(p["type"], "urn:hoardhaven:problem:overloaded");
    }
    drop(held);
    // Released: served again.
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    while s
        .client
        .put(s.url("/kv/after"))
        .body("v")
        .send()
        .await
        .expect("put")
        .status()
        == 503
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slots never released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Real concurrency far above the limit: only success or 503, never another 5xx.
    let burst: Vec<_> = (0..100)
        .map(|i| {
            let (c, u) = (s.client.clone(), s.url(&format!("/kv/c{i}")));
            tokio::spawn(async move { c.put(u).body(vec![b'x'; 4096]).send().await })
        })
        .collect();
    let health = s.client.get(s.url("/healthz")).send().await.expect("probe");
    assert_eq!(health.status(), 200);
    for b in burst {
        let st = b.await.expect("task").expect("answer").status().as_u16();
        assert!(matches!(st, 200 | 201 | 503), "{st}");
    }
}

// ---------------------------------------------------------------------------------------------
// CORS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_by_default_and_answers_configured_origins() {
    let s = Server::start("bitcask", &[]).await;
    let r = s
        .client
        .get(s.url("/healthz"))
        .header("origin", "http://app.example")
        .send()
        .await
        .expect("get");
    assert!(r.headers().get("access-control-allow-origin").is_none());

    let s = start_auth(&["--cors-origins", "http://app.example"]).await;
    let r = s
        .client
        .request(Method::OPTIONS, s.url("/kv/a"))
        .header("origin", "http://app.example")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .expect("preflight");
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    let r = s
        .client
        .get(s.url("/kv/a"))
        .header("origin", "http://other.example")
        .bearer_auth(READ)
        .send()
        .await
        .expect("get");
    assert!(r.headers().get("access-control-allow-origin").is_none());
}
