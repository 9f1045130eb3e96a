//! A small blocking HTTP client for the client subcommands: HTTP/1.1 or HTTP/2, plain TCP or
//! TLS, one keep-alive connection reused across the requests of one invocation.
//!
//! Owns [`Base`] (a parsed `--url`), [`HttpVersion`], [`Wire`], [`Request`] and [`Response`].
//! It is hyper's client connection on a current-thread tokio runtime, so `https://` goes
//! through the same rustls (ring) stack as the server ([`super::tls`]). Over TLS the version
//! is chosen by ALPN (h2 preferred unless `--http-version 1.1`); over plain TCP it is HTTP/1.1
//! unless `--http-version 2` asks for h2c with prior knowledge. Transport failures are a [`WireError`]
//! that says what went wrong in the words an operator needs: no answer in time, nobody
//! listening, a certificate not trusted, or a port that speaks TLS to a plain `http://` URL
//! (recognised by the first byte it sent back: a TLS record, 0x15 alert or 0x16 handshake).

use std::cell::RefCell;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::{AUTHORIZATION, HOST, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub(crate) use super::sniff::{NOTHING, Sniff, speaks_tls};

/// Longest wait for the TCP connection (and the TLS handshake) to be made.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A server's base URL: `http://` or `https://`, a host, a port, and an optional path prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Base {
    /// TLS on.
    pub https: bool,
    /// The host as written (`[::1]` keeps its brackets).
    pub host: String,
    /// The port (80 / 443 when not written).
    pub port: u16,
    /// The URL without a trailing `/`; request URLs are built on it.
    pub url: String,
}

impl Base {
    /// Parses `--url`.
    ///
    /// # Errors
    /// A message for a usage error: no scheme (`127.0.0.1:8080`), a scheme other than http or
    /// https, no host, or a URL that does not parse.
    pub fn parse(url: &str) -> Result<Base, String> {
        let trimmed = url.trim_end_matches('/');
        if !trimmed.contains("://") {
            return Err(format!(
                "--url `{url}` has no scheme: write http://{trimmed} (or https://{trimmed} for TLS)"
            ));
        }
        let uri: Uri = trimmed
            .parse()
            .map_err(|e| format!("--url `{url}` is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            other => {
                return Err(format!(
                    "--url `{url}`: scheme `{}` is not supported; use http:// or https://",
                    other.unwrap_or("")
                ));
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("--url `{url}` has no host"))?
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        Ok(Base {
            https,
            host,
            port,
            url: trimmed.to_owned(),
        })
    }

    /// `host:port`, for the `Host` header and for connecting.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The HTTP version the client speaks (`--http-version`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HttpVersion {
    /// https://: HTTP/2 when the server offers it (ALPN), else HTTP/1.1; http://: HTTP/1.1
    #[default]
    Auto,
    /// HTTP/1.1 only
    #[value(name = "1.1")]
    Http1,
    /// HTTP/2 only: ALPN h2 on https://, prior knowledge (h2c) on http://
    #[value(name = "2")]
    Http2,
}

impl HttpVersion {
    /// The ALPN protocols to offer over TLS, most preferred first.
    pub fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            HttpVersion::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            HttpVersion::Http1 => vec![b"http/1.1".to_vec()],
            HttpVersion::Http2 => vec![b"h2".to_vec()],
        }
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// No complete answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// The TCP connection could not be made.
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    /// The TLS handshake failed (certificate not trusted, wrong name, ...).
    #[error(
        "TLS handshake failed: {0} (is --ca-cert the CA that signed the server's certificate?)"
    )]
    Tls(io::Error),
    /// An `https://` URL on a port that answers plain HTTP.
    #[error("this port does not speak TLS: use http:// (the server answered in plain HTTP)")]
    NotTls,
    /// `--http-version 2` on an `https://` server that did not choose h2.
    #[error("the server does not offer HTTP/2 over TLS (ALPN h2): drop --http-version 2")]
    NoH2,
    /// `--http-version 2` on an `http://` server that did not answer in HTTP/2.
    #[error(
        "no HTTP/2 answer to prior knowledge (h2c): {0} (is HTTP/2 enabled on the server? \
         drop --http-version 2)"
    )]
    NoH2c(String),
    /// A plain `http://` URL on a port that answers with TLS.
    #[error("this port speaks TLS: use https:// (and --ca-cert FILE for a private CA)")]
    SpeaksTls,
    /// The request could not be built (a header value with control bytes, a bad path).
    #[error("bad request: {0}")]
    Build(String),
    /// The HTTP exchange failed.
    #[error("request failed: {0}")]
    Http(String),
}

/// One request: method, URL (on the [`Base`]), headers, body.
#[derive(Debug)]
pub struct Request {
    method: Method,
    url: String,
    headers: HeaderMap,
    body: Bytes,
    bad: Option<String>,
}

impl Request {
    /// A request with no headers and an empty body.
    pub fn new(method: Method, url: &str) -> Self {
        Request {
            method,
            url: url.to_owned(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            bad: None,
        }
    }

    /// Adds a header; a value that is not a valid header value fails the request at send.
    pub fn header(mut self, name: HeaderName, value: impl AsRef<str>) -> Self {
        match HeaderValue::from_str(value.as_ref()) {
            Ok(v) => {
                self.headers.append(name, v);
            }
            Err(_) => {
                self.bad
                    .get_or_insert_with(|| format!("the value of header {name} is not valid"));
            }
        }
        self
    }

    /// Adds `Authorization: Bearer <token>` (marked sensitive).
    pub fn bearer_auth(self, token: &str) -> Self {
        let mut r = self.header(AUTHORIZATION, format!("Bearer {token}"));
        if let Some(v) = r.headers.get_mut(AUTHORIZATION) {
            v.set_sensitive(true);
        }
        r
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

/// A whole answer: status, headers, body (read before [`Wire::send`] returns).
#[derive(Debug)]
pub struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Response {
    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body.
    pub fn bytes(self) -> Bytes {
        self.body
    }

    /// The body as text (lossy).
    pub fn text(self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One connection's request sender, of the version it speaks.
enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    async fn ready(&mut self) -> Result<(), hyper::Error> {
        match self {
            Sender::H1(s) => s.ready().await,
            Sender::H2(s) => s.ready().await,
        }
    }

    async fn send(
        &mut self,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error> {
        match self {
            Sender::H1(s) => s.send_request(req).await,
            Sender::H2(s) => s.send_request(req).await,
        }
    }
}

/// A client for one server.
pub struct Wire {
    rt: tokio::runtime::Runtime,
    base: Base,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    http: HttpVersion,
    timeout: Option<Duration>,
    idle: RefCell<Option<Sender>>,
    /// The first byte the server sent on the current plain connection ([`NOTHING`] if none).
    first: Arc<AtomicU16>,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire").field("base", &self.base).finish()
    }
}

impl Wire {
    /// A client for `base` speaking `http`; `ca` is the `--ca-cert` file and `identity` the
    /// client certificate (https only); `timeout` bounds each request from connecting to the
    /// last byte of the answer (`None` = no bound).
    ///
    /// # Errors
    /// A message: the runtime cannot start, or the TLS roots cannot be loaded.
    pub fn new(
        base: Base,
        ca: Option<&Path>,
        identity: Option<super::tls::Identity<'_>>,
        http: HttpVersion,
        timeout: Option<Duration>,
    ) -> Result<Self, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting the client runtime: {e}"))?;
        let tls = if base.https {
            Some((
                super::tls::connector(ca, identity, http.alpn())?,
                super::tls::server_name(&base.host)?,
            ))
        } else {
            None
        };
        Ok(Wire {
            rt,
            base,
            tls,
            http,
            timeout,
            idle: RefCell::new(None),
            first: Arc::new(AtomicU16::new(NOTHING)),
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &Base {
        &self.base
    }

    /// Sends `req` and reads the whole answer.
    ///
    /// # Errors
    /// See [`WireError`].
    pub fn send(&self, req: Request) -> Result<Response, WireError> {
        let fut = self.exchange(req);
        self.rt.block_on(async {
            match self.timeout {
                Some(t) => tokio::time::timeout(t, fut)
                    .await
                    .map_err(|_| WireError::Timeout)?,
                None => fut.await,
            }
        })
    }

    /// Sends `req` and, when the answer is a success, hands its body to `chunk` piece by
    /// piece as it arrives (no timeout: a stream such as `GET /watch` lasts as long as the
    /// server keeps it open) until the server ends it or `chunk` returns false. A failure
    /// answer is read whole and returned as the [`Response`].
    ///
    /// # Errors
    /// See [`WireError`].
    pub fn stream(
        &self,
        req: Request,
        mut chunk: impl FnMut(&[u8]) -> bool,
    ) -> Result<Response, WireError> {
        self.rt.block_on(async {
            let (parts, mut body) = self.open(req).await?;
            if !parts.status.is_success() {
                let body = body
                    .collect()
                    .await
                    .map_err(|e| self.classify(&e))?
                    .to_bytes();
                return Ok(Response {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                });
            }
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| self.classify(&e))?;
                if let Some(data) = frame.data_ref()
                    && !chunk(data)
                {
                    break;
                }
            }
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body: Bytes::new(),
            })
        })
    }

    /// Sends `req` and returns the answer's head and its body, unread.
    async fn open(
        &self,
        req: Request,
    ) -> Result<(hyper::http::response::Parts, hyper::body::Incoming), WireError> {
        if let Some(bad) = req.bad {
            return Err(WireError::Build(bad));
        }
        let uri: Uri = req
            .url
            .parse()
            .map_err(|e| WireError::Build(format!("{}: {e}", req.url)))?;
        let idle = self.idle.borrow_mut().take();
        let mut sender = match idle {
            Some(s) if !s.is_closed() => s,
            _ => self.connect().await?,
        };
        if sender.ready().await.is_err() {
            sender = self.connect().await?;
            sender.ready().await.map_err(|e| self.classify(&e))?;
        }
        // HTTP/1.1 sends the path and a Host header; HTTP/2 the absolute URI, from which
        // hyper takes `:scheme` and `:authority`.
        let builder = match sender {
            Sender::H1(_) => {
                let target = uri
                    .path_and_query()
                    .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
                hyper::Request::builder().uri(target)
            }
            Sender::H2(_) => hyper::Request::builder()
                .uri(uri)
                .version(hyper::Version::HTTP_2),
        };
        let mut builder = builder.method(req.method);
        if let Some(h) = builder.headers_mut() {
            *h = req.headers;
            if matches!(sender, Sender::H1(_))
                && let Ok(v) = HeaderValue::from_str(&self.base.authority())
            {
                h.insert(HOST, v);
            }
        }
        let request = builder
            .body(Full::new(req.body))
            .map_err(|e| WireError::Build(e.to_string()))?;
        let resp = sender.send(request).await.map_err(|e| self.classify(&e))?;
        let (parts, body) = resp.into_parts();
        *self.idle.borrow_mut() = Some(sender);
        Ok((parts, body))
    }

    async fn exchange(&self, req: Request) -> Result<Response, WireError> {
        let (parts, body) = self.open(req).await?;
        let body = body
            .collect()
            .await
            .map_err(|e| self.classify(&e))?
            .to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// A hyper failure, said better when the server answered in TLS to plain HTTP.
    fn classify(&self, e: &hyper::Error) -> WireError {
        if self.tls.is_none() && speaks_tls(&self.first) {
            return WireError::SpeaksTls;
        }
        if self.tls.is_none() && self.http == HttpVersion::Http2 {
            return WireError::NoH2c(error_chain(e));
        }
        WireError::Http(error_chain(e))
    }

    async fn connect(&self) -> Result<Sender, WireError> {
        let addr = (
            self.base.host.trim_start_matches('[').trim_end_matches(']'),
            self.base.port,
        );
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| WireError::Timeout)?
            .map_err(WireError::Connect)?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => {
                self.first.store(NOTHING, Ordering::Relaxed);
                let io = Sniff::sharing(tcp, Arc::clone(&self.first));
                let h2 = self.http == HttpVersion::Http2;
                handshake(io, h2).await.map_err(|e| self.classify(&e))
            }
            Some((connector, name)) => {
                let tls =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                        .await
                        .map_err(|_| WireError::Timeout)?
                        .map_err(|e| {
                            if is_not_tls(&e) {
                                WireError::NotTls
                            } else if self.http == HttpVersion::Http2 && refused_alpn(&e) {
                                WireError::NoH2
                            } else {
                                WireError::Tls(e)
                            }
                        })?;
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                if self.http == HttpVersion::Http2 && !h2 {
                    return Err(WireError::NoH2);
                }
                handshake(tls, h2)
                    .await
                    .map_err(|e| WireError::Http(error_chain(&e)))
            }
        }
    }
}

/// Whether a TLS handshake failed because the peer's bytes were not TLS at all.
fn is_not_tls(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .is_some_and(|r| matches!(r, rustls::Error::InvalidMessage(_)))
}

/// Whether a TLS handshake failed because the server speaks none of the ALPN protocols offered.
fn refused_alpn(e: &io::Error) -> bool {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .is_some_and(|r| {
            matches!(
                r,
                rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)
            )
        })
}

/// Starts HTTP/2 (`h2`) or HTTP/1.1 on `io`; the connection runs on a task that ends when the
/// sender is dropped or the server closes the connection.
async fn handshake<S>(io: S, h2: bool) -> Result<Sender, hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if h2 {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        return Ok(Sender::H2(sender));
    }
    let (sender, conn) = http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Sender::H1(sender))
}

/// The error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        // Some errors repeat their source's text; say it once.
        if !s.ends_with(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_parse_and_a_missing_scheme_is_named() {
        let b = Base::parse("https://localhost:8443/").ok();
        assert_eq!(
            b.map(|b| (b.https, b.host, b.port, b.url)),
            Some((
                true,
                "localhost".into(),
                8443,
                "https://localhost:8443".into()
            ))
        );
        assert_eq!(Base::parse("http://h").map(|b| b.port), Ok(80));
        assert_eq!(Base::parse("https://h").map(|b| b.port), Ok(443));
        let e = Base::parse("127.0.0.1:8080").err().unwrap_or_default();
        assert!(
            e.contains("no scheme") && e.contains("http://127.0.0.1:8080"),
            "{e}"
        );
        let e = Base::parse("ftp://h:1").err().unwrap_or_default();
        assert!(e.contains("ftp"), "{e}");
    }
}
