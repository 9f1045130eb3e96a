//! The HTTP side of the client subcommands: URL building, the bearer token, and the mapping of
//! responses and transport failures to exit statuses.
//!
//! Owns [`Conn`]: one blocking `reqwest` client per invocation (a CLI makes one or a few
//! requests, so a blocking client is simpler than a runtime and costs nothing measurable).
//! Keys are byte strings: every byte outside the URL's unreserved set is percent-encoded, so
//! `a/b`, spaces, `%` and non-UTF-8 bytes all reach the server as the same bytes.

use std::time::Duration;

use clap::Args;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};

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
    /// Server URL
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Send `Authorization: Bearer <TOKEN>`
    #[arg(long, env = "HOARDHAVEN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
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
    client: Client,
    base: String,
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
    /// [`exit::UNREACHABLE`] when the HTTP client cannot be built.
    pub fn new(args: &ConnArgs, long: bool) -> Result<Self, Exit> {
        let mut b = Client::builder().connect_timeout(Duration::from_secs(10));
        b = if long || args.timeout == 0 {
            b.timeout(None)
        } else {
            b.timeout(Duration::from_secs(args.timeout))
        };
        let client = b
            .build()
            .map_err(|e| Exit::new(exit::UNREACHABLE, format!("HTTP client: {e}")))?;
        Ok(Conn {
            client,
            base: args.url.trim_end_matches('/').to_owned(),
            token: args.token.clone().filter(|t| !t.is_empty()),
        })
    }

    /// The URL of the single-key route for `key`.
    pub fn key_url(&self, key: &[u8]) -> String {
        format!("{}/kv/{}", self.base, encode_key(key))
    }

    /// The URL of `path` (starting with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A request with the bearer token attached when one was given.
    pub fn request(&self, method: reqwest::Method, url: &str) -> RequestBuilder {
        let r = self.client.request(method, url);
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends `req`; transport failures become [`exit::UNREACHABLE`].
    ///
    /// # Errors
    /// When the server cannot be reached or does not answer in time.
    pub fn send(&self, req: RequestBuilder) -> Result<Response, Exit> {
        req.send().map_err(|e| {
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "request failed"
            };
            Exit::new(
                exit::UNREACHABLE,
                format!("{what}: {} ({})", self.base, error_chain(&e)),
            )
        })
    }
}

/// The error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Turns a non-success response into an [`Exit`] with the status's code and the problem
/// document's detail (RFC 9457) when the server sent one.
pub fn failure(resp: Response) -> Exit {
    let status = resp.status();
    let body = resp.text().unwrap_or_default();
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
        s if s.is_client_error() => exit::REFUSED,
        _ => exit::SERVER,
    };
    let mut message = format!("server answered {status}");
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(&detail);
    }
    Exit::new(code, message)
}

/// Reads a success response's body.
///
/// # Errors
/// [`exit::UNREACHABLE`] when the body cannot be read.
pub fn body(resp: Response) -> Result<bytes::Bytes, Exit> {
    resp.bytes()
        .map_err(|e| Exit::new(exit::UNREACHABLE, format!("reading the answer: {e}")))
}

/// Reads a success response's body as JSON.
///
/// # Errors
/// [`exit::SERVER`] when it is not JSON.
pub fn json(resp: Response) -> Result<serde_json::Value, Exit> {
    let b = body(resp)?;
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
