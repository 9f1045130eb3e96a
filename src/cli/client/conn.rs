//! The HTTP side of the client subcommands: URL building, the bearer token, TLS trust, and the
//! mapping of responses and transport failures to exit statuses.
//!
//! Owns [`ConnArgs`] and [`Conn`]: one blocking client per invocation ([`super::wire`]; a CLI
//! makes one or a few requests, so blocking calls are simpler and cost nothing measurable).
//! Keys are byte strings: every byte outside the URL's unreserved set is percent-encoded, so
//! `a/b`, spaces, `%` and non-UTF-8 bytes all reach the server as the same bytes.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use hyper::{Method, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};

use super::wire::{Base, HttpVersion, Request, Response, Wire, WireError};
use crate::cli::exit::{self, Exit};

/// Bytes left as they are in a key path segment: RFC 3986 unreserved characters.
const KEY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Connection flags shared by every client subcommand.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Server URL: http://HOST:PORT or https://HOST:PORT
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Send `Authorization: Bearer <TOKEN>`
    #[arg(long, env = "HOARDHAVEN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Trust only the CA certificates in this PEM file for https:// (default: the system's)
    #[arg(long, env = "HOARDHAVEN_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM certificate to present when the server, or a proxy in front of it, asks for a client certificate (https://)
    #[arg(long, env = "HOARDHAVEN_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert
    #[arg(long, env = "HOARDHAVEN_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// HTTP version: auto (h2 over https:// when offered, else 1.1), 1.1, or 2 (h2c with prior knowledge on http://)
    #[arg(long, value_enum, default_value_t, env = "HOARDHAVEN_HTTP_VERSION")]
    pub http_version: HttpVersion,
    /// Print JSON instead of raw output
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for an answer (0 = no limit; jobs run with --wait ignore it)
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

/// A connection to one server.
#[derive(Debug)]
pub struct Conn {
    wire: Wire,
    token: Option<String>,
}

/// Percent-encodes a key for `/kv/{key}` and query strings.
pub fn encode_key(key: &[u8]) -> String {
    percent_encode(key, KEY_SET).to_string()
}

impl Conn {
    /// A client for `args.url`; `long` disables the answer timeout (jobs with `--wait`).
    ///
    /// # Errors
    /// [`exit::USAGE`] for a URL without `http://` / `https://`; [`exit::LOCAL`] when the
    /// `--ca-cert` file cannot be used.
    pub fn new(args: &ConnArgs, long: bool) -> Result<Self, Exit> {
        let base = Base::parse(&args.url).map_err(|m| Exit::new(exit::USAGE, m))?;
        let timeout = (!long && args.timeout > 0).then(|| Duration::from_secs(args.timeout));
        let identity = match (&args.client_cert, &args.client_key) {
            (Some(cert), Some(key)) => Some(super::tls::Identity { cert, key }),
            _ => None,
        };
        let wire = Wire::new(
            base,
            args.ca_cert.as_deref(),
            identity,
            args.http_version,
            timeout,
        )
        .map_err(Exit::local)?;
        Ok(Conn {
            wire,
            token: args.token.clone().filter(|t| !t.is_empty()),
        })
    }

    /// The URL of the single-key route for `key`.
    pub fn key_url(&self, key: &[u8]) -> String {
        format!("{}/kv/{}", self.wire.base().url, encode_key(key))
    }

    /// The URL of `path` (starting with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.wire.base().url, path)
    }

    /// A request with the bearer token attached when one was given.
    pub fn request(&self, method: Method, url: &str) -> Request {
        let r = Request::new(method, url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends `req`; transport failures become [`exit::UNREACHABLE`].
    ///
    /// # Errors
    /// When the server cannot be reached or does not answer in time.
    pub fn send(&self, req: Request) -> Result<Response, Exit> {
        self.wire.send(req).map_err(|e| {
            let code = match e {
                WireError::Build(_) => exit::USAGE,
                _ => exit::UNREACHABLE,
            };
            Exit::new(code, format!("{}: {e}", self.wire.base().url))
        })
    }
}

impl Conn {
    /// Sends `req` and streams a success answer's body to `chunk` (see [`Wire::stream`]).
    ///
    /// # Errors
    /// When the server cannot be reached or the stream breaks.
    pub fn stream(&self, req: Request, chunk: impl FnMut(&[u8]) -> bool) -> Result<Response, Exit> {
        self.wire
            .stream(req, chunk)
            .map_err(|e| Exit::new(exit::UNREACHABLE, format!("{}: {e}", self.wire.base().url)))
    }
}

/// Turns a non-success response into an [`Exit`] with the status's code and the problem
/// document's detail (RFC 9457) when the server sent one.
pub fn failure(resp: Response) -> Exit {
    let status = resp.status();
    let body = resp.text();
    let detail = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("detail")
                .or_else(|| v.get("title"))
                .and_then(|d| d.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| body.trim().chars().take(200).collect());
    let code = match status {
        StatusCode::NOT_FOUND => exit::NOT_FOUND,
        StatusCode::PRECONDITION_FAILED | StatusCode::CONFLICT => exit::CONFLICT,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => exit::REFUSED,
        s if s.is_client_error() => exit::REFUSED,
        _ => exit::SERVER,
    };
    let mut message = format!("server answered {status}");
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(&detail);
    }
    if status == StatusCode::UNAUTHORIZED {
        message.push_str(" (check the token: --token or HOARDHAVEN_TOKEN)");
    }
    Exit::new(code, message)
}

/// A success response's body (already read by [`Conn::send`]).
pub fn body(resp: Response) -> bytes::Bytes {
    resp.bytes()
}

/// Reads a success response's body as JSON.
///
/// # Errors
/// [`exit::SERVER`] when it is not JSON.
pub fn json(resp: Response) -> Result<serde_json::Value, Exit> {
    let b = body(resp);
    serde_json::from_slice(&b).map_err(|e| {
        Exit::new(
            exit::SERVER,
            format!("the server's answer is not JSON: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_byte_by_byte() {
        assert_eq!(encode_key(b"a/b c"), "a%2Fb%20c");
        assert_eq!(encode_key(b"x-y_z.~"), "x-y_z.~");
        assert_eq!(encode_key(&[0xFF, b'%']), "%FF%25");
        assert_eq!(encode_key("é".as_bytes()), "%C3%A9");
    }
}
