//! HTTP/2 end to end: h2c with prior knowledge and h2 over TLS (ALPN) on the same listener as
//! HTTP/1.1, with real clients (reqwest, the `h2` crate, hyper over tokio-rustls, curl), the
//! limits the server announces, and the idle guard that stands in for HTTP/1.1's header-read
//! timeout.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{STEP_TIMEOUT, Server, serve_command, skip_unless_required, wait_exit};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A reqwest client that speaks HTTP/2 from the first byte (h2c prior knowledge).
fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(STEP_TIMEOUT)
        .build()
        .expect("reqwest h2c client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_and_http1_share_the_listener() {
    for engine in common::ENGINES {
        let s = Server::start(engine, &[]).await;
        let h2 = h2c_client();
        let put = h2
            .put(s.url("/kv/greeting"))
            .body("hello over h2")
            .send()
            .await
            .expect("PUT over h2c");
        assert_eq!(put.version(), reqwest::Version::HTTP_2);
        assert!(put.status().is_success(), "{}", put.status());
        let etag = put.headers().get("etag").cloned().expect("etag");
        let get = h2.get(s.url("/kv/greeting")).send().await.expect("GET");
        assert_eq!(get.version(), reqwest::Version::HTTP_2);
        assert_eq!(get.headers().get("etag"), Some(&etag));
        assert_eq!(get.text().await.expect("body"), "hello over h2");
        // Problem documents over h2 too.
        let missing = h2.get(s.url("/kv/nope")).send().await.expect("GET");
        assert_eq!(missing.status(), 404);
        assert_eq!(
            missing.headers().get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/problem+json"[..])
        );
        // The same port still speaks HTTP/1.1.
        let h1 = s
            .client
            .get(s.url("/kv/greeting"))
            .send()
            .await
            .expect("h1");
        assert_eq!(h1.version(), reqwest::Version::HTTP_11);
        assert_eq!(h1.text().await.expect("body"), "hello over h2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_on_one_connection_all_answer() {
    let s = Server::start("bitcask", &[]).await;
    let h2 = h2c_client();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (c, url) = (h2.clone(), s.url(&format!("/kv/k{i}")));
        tasks.push(tokio::spawn(async move {
            let r = c.put(&url).body(format!("v{i}")).send().await?;
            let status = r.status();
            let r = c.get(&url).send().await?;
            Ok::<_, reqwest::Error>((status, r.text().await?))
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (status, body) = t.await.expect("task").expect("request");
        assert!(status.is_success(), "{status}");
        assert_eq!(body, format!("v{i}"));
    }
}

/// Opens an h2c connection with the `h2` crate; the server's SETTINGS are read once ready.
async fn h2_connect(
    addr: std::net::SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let send = tokio::time::timeout(STEP_TIMEOUT, send.ready())
        .await
        .expect("ready in time")
        .expect("ready");
    (send, conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_limits_are_announced_and_enforced() {
    let s = Server::start(
        "bitcask",
        &[
            "--http2-max-concurrent-streams",
            "7",
            "--max-header-bytes",
            "2048",
        ],
    )
    .await;
    let (mut send, _conn) = h2_connect(s.addr).await;
    // SETTINGS_MAX_CONCURRENT_STREAMS arrives with the server's first frame; a GET round
    // trip makes sure it was applied.
    let req = http::Request::get(format!("http://{}/healthz", s.addr))
        .body(())
        .expect("request");
    let (answer, _) = send.send_request(req, true).expect("send");
    let answer = tokio::time::timeout(STEP_TIMEOUT, answer)
        .await
        .expect("in time")
        .expect("answer");
    assert_eq!(answer.status(), 200);
    assert_eq!(send.current_max_send_streams(), 7);

    // A header block over the head limit is refused (431 or a stream error), never served.
    let big = "x".repeat(8 * 1024);
    let r = h2c_client()
        .get(s.url("/kv/a"))
        .header("x-big", big)
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 431);
    }
}

/// Reads until EOF or error; `true` when the server closed within the step timeout.
async fn closed_by_server(mut tcp: TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(STEP_TIMEOUT, read_all).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_idle_connections_are_closed() {
    let s = Server::start("bitcask", &["--header-read-timeout-secs", "1"]).await;

    // Connected, nothing sent: closed after the header-read timeout.
    let silent = TcpStream::connect(s.addr).await.expect("connect");
    assert!(
        closed_by_server(silent).await,
        "silent connection kept open"
    );

    // Half a preface, then nothing.
    let mut half = TcpStream::connect(s.addr).await.expect("connect");
    half.write_all(&b"PRI * HTTP/2.0\r\n"[..])
        .await
        .expect("write");
    assert!(closed_by_server(half).await, "half a preface kept open");

    // A whole HTTP/2 handshake and one request, then idle: GOAWAY and close.
    let (mut send, conn) = h2_connect(s.addr).await;
    let req = http::Request::get(format!("http://{}/healthz", s.addr))
        .body(())
        .expect("request");
    let (answer, _) = send.send_request(req, true).expect("send");
    let answer = answer.await.expect("answer");
    let mut body = answer.into_body();
    while let Some(chunk) = body.data().await {
        chunk.expect("chunk");
    }
    let ended = tokio::time::timeout(STEP_TIMEOUT, conn).await;
    assert!(ended.is_ok(), "idle HTTP/2 connection kept open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_h2_connection_does_not_hold_shutdown() {
    let mut s = Server::start("bitcask", &[]).await;
    let (_send, _conn) = h2_connect(s.addr).await;
    let status = s.terminate().await;
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_can_be_turned_off() {
    let s = Server::start("bitcask", &["--http2-enabled", "false"]).await;
    let r = h2c_client().get(s.url("/healthz")).send().await;
    assert!(r.is_err(), "h2c answered with HTTP/2 off: {r:?}");
    let h1 = s.client.get(s.url("/healthz")).send().await.expect("h1");
    assert_eq!(h1.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_speaks_h2c_with_prior_knowledge() {
    if !curl_has_http2() {
        return skip_unless_required("curl with HTTP/2 support not found");
    }
    let s = Server::start("memory", &[]).await;
    let put = curl(&[
        "--http2-prior-knowledge",
        "-X",
        "PUT",
        "--data-binary",
        "from curl",
        &s.url("/kv/c"),
    ]);
    assert_eq!(put.0, "2", "curl PUT: {put:?}");
    let get = curl(&["--http2-prior-knowledge", &s.url("/kv/c")]);
    assert_eq!(
        get,
        ("2".to_owned(), "200".to_owned(), "from curl".to_owned())
    );
}

// ---------------------------------------------------------------------------------------------
// TLS

/// A server with a fresh self-signed certificate for `localhost`; returns the child, its
/// address, the certificate (DER and PEM path) and the directory holding them.
async fn start_tls(
    extra: &[&str],
) -> (
    Child,
    std::net::SocketAddr,
    rustls_pki_types::CertificateDer<'static>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("rcgen");
    let (cert, key) = (dir.path().join("s.crt"), dir.path().join("s.key"));
    std::fs::write(&cert, ck.cert.pem()).expect("cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("key");
    let port = dir.path().join("port");
    let mut cmd = serve_command("bitcask", &dir.path().join("data"), &port);
    cmd.arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .args(extra)
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    let addr = loop {
        if let Ok(s) = std::fs::read_to_string(&port)
            && let Ok(a) = s.trim().parse()
        {
            break a;
        }
        assert!(child.try_wait().ok().flatten().is_none(), "server exited");
        assert!(tokio::time::Instant::now() < deadline, "no port file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    (child, addr, ck.cert.der().clone(), dir)
}

/// A TLS connection offering `alpn`; returns the stream and the protocol the server chose.
async fn tls_connect(
    addr: std::net::SocketAddr,
    trusted: &rustls_pki_types::CertificateDer<'static>,
    alpn: &[&[u8]],
) -> (tokio_rustls::client::TlsStream<TcpStream>, Option<Vec<u8>>) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).expect("root");
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio::time::timeout(
        STEP_TIMEOUT,
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    let chosen = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    (tls, chosen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_is_chosen_by_alpn() {
    let (mut child, addr, cert, _dir) = start_tls(&[]).await;

    let (tls, chosen) = tls_connect(addr, &cert, &[b"h2", b"http/1.1"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let request = |method: &str, path: &str, body: &'static [u8]| {
        hyper::Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .body(http_body_util::Full::new(Bytes::from_static(body)))
            .expect("request")
    };
    // Ready once the engine is open.
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let r = send
            .send_request(request("GET", "/readyz", b""))
            .await
            .expect("readyz");
        assert_eq!(r.version(), hyper::Version::HTTP_2);
        if r.status() == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let put = send
        .send_request(request("PUT", "/kv/tls", b"secret"))
        .await
        .expect("PUT");
    assert!(put.status().is_success(), "{}", put.status());
    let get = send
        .send_request(request("GET", "/kv/tls", b""))
        .await
        .expect("GET");
    assert_eq!(get.status(), 200);
    let body = get.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"secret");

    // A client offering only http/1.1 gets HTTP/1.1 on the same port.
    let (_tls, chosen) = tls_connect(addr, &cert, &[b"http/1.1"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"http/1.1"[..]));

    // curl negotiates h2 by ALPN and trusts the certificate given with --cacert.
    if curl_has_http2() {
        let pem = _dir.path().join("s.crt");
        let url = format!("https://localhost:{}/healthz", addr.port());
        let got = curl(&[
            "--http2",
            "--cacert",
            &pem.display().to_string(),
            "--resolve",
            &format!("localhost:{}:127.0.0.1", addr.port()),
            &url,
        ]);
        assert_eq!((got.0.as_str(), got.1.as_str()), ("2", "200"), "{got:?}");
    } else {
        skip_unless_required("curl with HTTP/2 support not found");
    }
    stop(&mut child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_offers_only_http1_when_http2_is_off() {
    let (mut child, addr, cert, _dir) = start_tls(&["--http2-enabled", "false"]).await;
    let (_tls, chosen) = tls_connect(addr, &cert, &[b"h2", b"http/1.1"]).await;
    assert_eq!(chosen.as_deref(), Some(&b"http/1.1"[..]));
    stop(&mut child).await;
}

async fn stop(child: &mut Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    assert!(wait_exit(child).await.success());
}

// ---------------------------------------------------------------------------------------------
// curl

fn curl_has_http2() -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("HTTP2"))
}

/// Runs curl with `args`; returns (HTTP version, status, body).
fn curl(args: &[&str]) -> (String, String, String) {
    let out_file = tempfile::NamedTempFile::new().expect("tempfile");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-o"])
        .arg(out_file.path())
        .args(["-w", "%{http_version} %{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    let meta = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut it = meta.split_whitespace();
    let (v, c) = (
        it.next().unwrap_or_default().to_owned(),
        it.next().unwrap_or_default().to_owned(),
    );
    let body = std::fs::read_to_string(Path::new(out_file.path())).unwrap_or_default();
    (v, c, body)
}
