//! What a load-tool worker sends: the key space, the operation mix, and the HTTP requests for
//! each target (hoardhaven's own API, or etcd's v3 HTTP JSON gateway).
//!
//! Owns request construction only; connections, timing and reporting live in the sibling
//! modules. Keys are ASCII (`k` and zero-padded digits), so no percent-encoding is needed and
//! every target sees byte-identical keys.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request};

/// Which server the tool drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// hoardhaven: `GET`/`PUT /kv/{key}`, baseline `GET /healthz`.
    Hoardhaven,
    /// etcd's gRPC gateway: `POST /v3/kv/range` and `/v3/kv/put` with base64 keys, baseline
    /// `GET /health`.
    Etcd,
}

/// One kind of request a test sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// The server's cheapest route (the ceiling every result is compared to).
    Health,
    /// Read one key.
    Get,
    /// Write one key.
    Put,
    /// List one page of keys by prefix.
    List,
}

impl Op {
    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Op::Health => "a health check",
            Op::Get => "a get",
            Op::Put => "a put",
            Op::List => "a listing",
        }
    }
}

/// A test of a run: which operations it sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Test {
    /// `GET /healthz` only (always run first, as the baseline).
    Healthz,
    /// Reads of preloaded keys.
    Get,
    /// Writes (overwrites across the key space).
    Put,
    /// Reads and writes mixed by `--read-ratio`.
    Mixed,
    /// Pages of [`LIST_PAGE`] preloaded keys by prefix (`GET /kv?prefix=&limit=`; etcd: a
    /// range with `range_end` and `limit`).
    List,
}

/// Keys per listed page: a listing's prefix is a key without its last two digits, which
/// covers 100 consecutive keys.
pub const LIST_PAGE: u64 = 100;

impl Test {
    /// The name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Test::Healthz => "healthz",
            Test::Get => "get",
            Test::Put => "put",
            Test::Mixed => "mixed",
            Test::List => "list",
        }
    }
}

/// A small, fast, deterministic generator (xorshift64*), one per worker: no shared state.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `seed` (any value; zero is remapped).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A uniform float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Everything a worker needs to build requests; cheap to clone.
#[derive(Clone, Debug)]
pub struct Workload {
    /// The target's API flavour.
    pub target: Target,
    /// `host:port` for the `Host` header.
    pub authority: String,
    /// Number of distinct keys.
    pub keys: u64,
    /// Length of every key in bytes (at least the digits needed, see [`Workload::key`]).
    pub key_size: usize,
    /// The value written by puts.
    pub value: Bytes,
    /// The value, base64-encoded once (etcd's gateway wants base64).
    value_b64: String,
    /// Fraction of reads in the `mixed` test.
    pub read_ratio: f64,
    /// `Authorization: Bearer <token>` sent with every request, when set.
    pub auth: Option<hyper::header::HeaderValue>,
}

impl Workload {
    /// Builds a workload; `value_size` bytes of printable filler are written by every put.
    pub fn new(
        target: Target,
        authority: String,
        keys: u64,
        key_size: usize,
        value_size: usize,
        read_ratio: f64,
    ) -> Self {
        let mut rng = Rng::new(42);
        let value: Vec<u8> = (0..value_size)
            .map(|_| b'a' + (rng.next_u64() % 26) as u8)
            .collect();
        let value_b64 = B64.encode(&value);
        Workload {
            target,
            authority,
            keys: keys.max(1),
            key_size,
            value: Bytes::from(value),
            value_b64,
            read_ratio,
            auth: None,
        }
    }

    /// Sends `Authorization: Bearer <token>` with every request (a token that is not a valid
    /// header value is refused).
    ///
    /// # Errors
    /// When the token holds bytes a header cannot carry.
    pub fn with_token(mut self, token: Option<&str>) -> Result<Self, String> {
        self.auth = match token.filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => {
                let mut v = hyper::header::HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| "--token holds bytes an HTTP header cannot carry".to_owned())?;
                v.set_sensitive(true);
                Some(v)
            }
        };
        Ok(self)
    }

    /// The `i`-th key: `k` then `i` zero-padded to `key_size - 1` digits (longer if needed).
    pub fn key(&self, i: u64) -> String {
        let width = self.key_size.saturating_sub(1);
        format!("k{i:0width$}")
    }

    /// The prefix shared by key `i` and its 99 neighbours: the key without its last two
    /// digits (see [`LIST_PAGE`]).
    pub fn list_prefix(&self, i: u64) -> String {
        let mut k = self.key(i);
        k.truncate(k.len().saturating_sub(2).max(1));
        k
    }

    /// Picks the operation for the next request of `test`.
    pub fn pick(&self, test: Test, rng: &mut Rng) -> Op {
        match test {
            Test::Healthz => Op::Health,
            Test::Get => Op::Get,
            Test::Put => Op::Put,
            Test::List => Op::List,
            Test::Mixed => {
                if rng.next_f64() < self.read_ratio {
                    Op::Get
                } else {
                    Op::Put
                }
            }
        }
    }

    /// The request for `op` on key number `i`.
    ///
    /// # Errors
    /// Only if the request cannot be assembled (a malformed authority).
    pub fn request(&self, op: Op, i: u64) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
        let mut b = Request::builder().header(hyper::header::HOST, &self.authority);
        if let Some(a) = &self.auth {
            b = b.header(hyper::header::AUTHORIZATION, a.clone());
        }
        match (self.target, op) {
            (Target::Hoardhaven, Op::Health) => b
                .method(Method::GET)
                .uri("/healthz")
                .body(Full::new(Bytes::new())),
            (Target::Hoardhaven, Op::Get) => b
                .method(Method::GET)
                .uri(format!("/kv/{}", self.key(i)))
                .body(Full::new(Bytes::new())),
            (Target::Hoardhaven, Op::Put) => b
                .method(Method::PUT)
                .uri(format!("/kv/{}", self.key(i)))
                .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
                .body(Full::new(self.value.clone())),
            (Target::Hoardhaven, Op::List) => b
                .method(Method::GET)
                .uri(format!(
                    "/kv?prefix={}&limit={LIST_PAGE}",
                    self.list_prefix(i)
                ))
                .body(Full::new(Bytes::new())),
            (Target::Etcd, Op::List) => {
                // etcd's prefix range: [prefix, prefix with its last byte + 1).
                let prefix = self.list_prefix(i);
                let mut end = prefix.clone().into_bytes();
                if let Some(last) = end.last_mut() {
                    *last += 1;
                }
                let body = format!(
                    r#"{{"key":"{}","range_end":"{}","limit":{LIST_PAGE},"keys_only":true}}"#,
                    B64.encode(&prefix),
                    B64.encode(&end)
                );
                b.method(Method::POST)
                    .uri("/v3/kv/range")
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body)))
            }
            (Target::Etcd, Op::Health) => b
                .method(Method::GET)
                .uri("/health")
                .body(Full::new(Bytes::new())),
            (Target::Etcd, Op::Get) => {
                let body = format!(r#"{{"key":"{}"}}"#, B64.encode(self.key(i)));
                b.method(Method::POST)
                    .uri("/v3/kv/range")
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body)))
            }
            (Target::Etcd, Op::Put) => {
                let body = format!(
                    r#"{{"key":"{}","value":"{}"}}"#,
                    B64.encode(self.key(i)),
                    self.value_b64
                );
                b.method(Method::POST)
                    .uri("/v3/kv/put")
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(body)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wl(target: Target) -> Workload {
        Workload::new(target, "127.0.0.1:1".into(), 1000, 16, 100, 0.9)
    }

    #[test]
    fn keys_have_the_requested_length() {
        let w = wl(Target::Hoardhaven);
        assert_eq!(w.key(0), "k000000000000000");
        assert_eq!(w.key(999).len(), 16);
        assert_eq!(w.value.len(), 100);
    }

    #[test]
    fn a_listing_prefix_covers_a_page_of_keys() -> Result<(), Box<dyn std::error::Error>> {
        let w = wl(Target::Hoardhaven);
        let p = w.list_prefix(234);
        assert_eq!(p, "k0000000000002");
        let covered = (0..w.keys).filter(|&i| w.key(i).starts_with(&p)).count() as u64;
        assert_eq!(covered, LIST_PAGE);
        let r = w.request(Op::List, 234)?;
        assert_eq!(r.uri().query(), Some("prefix=k0000000000002&limit=100"));
        let e = wl(Target::Etcd).request(Op::List, 1234)?;
        assert_eq!(e.uri().path(), "/v3/kv/range");
        Ok(())
    }

    #[test]
    fn mixed_respects_the_ratio_roughly() {
        let w = wl(Target::Hoardhaven);
        let mut rng = Rng::new(7);
        let reads = (0..10_000)
            .filter(|_| w.pick(Test::Mixed, &mut rng) == Op::Get)
            .count();
        assert!((8_500..9_500).contains(&reads), "{reads}");
    }

    #[test]
    fn etcd_requests_carry_base64_keys() -> Result<(), Box<dyn std::error::Error>> {
        let w = wl(Target::Etcd);
        let r = w.request(Op::Put, 5)?;
        assert_eq!(r.uri().path(), "/v3/kv/put");
        let r = w.request(Op::Get, 5)?;
        assert_eq!(r.method(), Method::POST);
        let h = wl(Target::Hoardhaven).request(Op::Get, 5)?;
        assert_eq!(h.uri().path(), "/kv/k000000000000005");
        Ok(())
    }
}
