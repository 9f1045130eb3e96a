//! Bearer-token authentication with three roles.
//!
//! Owns [`Role`] (`read` < `write` < `admin`), [`TokenSet`] (the known tokens, kept only as
//! SHA-256 digests and compared in constant time), [`Auth`] (the live set, reloadable from its
//! file, plus which operational endpoints are public) and the [`require`] middleware that
//! decides, per request, which role the method and path need. It does not map refusals to
//! HTTP (that is [`super::error`]) and never logs, stores or echoes a token: only its digest
//! lives in memory, and the `Authorization` header is marked sensitive by the router.
//!
//! Token lists (the `auth.tokens` setting and the token file) are entries `role:token` or
//! `role:sha256:<64 hex digits>`, separated by commas or newlines; in the file, blank lines and
//! lines starting with `#` are skipped.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::RwLock;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// Shortest plain token accepted (a guessable token is no protection).
pub const MIN_TOKEN_LEN: usize = 16;

/// What a token may do. Ordered: each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// GET and HEAD of keys, listing, `POST /mget`.
    Read,
    /// `read` plus PUT, DELETE and `POST /batch`.
    Write,
    /// Everything, including `/admin/*`.
    Admin,
}

impl Role {
    /// Its name, as in token lists and messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role `{other}` (expected read, write or admin)"
            )),
        }
    }
}

/// The known tokens, as SHA-256 digests with their roles.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TokenSet {
    entries: Vec<([u8; 32], Role)>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Digests are not secrets in the strict sense, but nothing about tokens is printed.
        write!(f, "TokenSet({} tokens)", self.entries.len())
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn from_hex(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let (hi, lo) = (pair.first().copied()?, pair.get(1).copied()?);
        *o = (nibble(hi)? << 4) | nibble(lo)?;
    }
    Some(out)
}

/// The lowercase hex SHA-256 of a token, as written in a token file (`role:sha256:<hex>`).
pub fn token_digest_hex(token: &str) -> String {
    sha256(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl TokenSet {
    /// Parses a list of `role:token` / `role:sha256:<hex>` entries separated by commas or
    /// newlines (blank entries and `#` comment lines skipped). `origin` names the source in
    /// errors; an error never quotes a token.
    ///
    /// # Errors
    /// An entry without a role, an unknown role, a bad digest, or a plain token that is
    /// shorter than [`MIN_TOKEN_LEN`] or holds spaces or control characters.
    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        let mut set = TokenSet::default();
        let lines = text.lines().enumerate();
        for (line_no, line) in lines {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            for entry in line.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let at = format!("{origin}, line {}", line_no + 1);
                let (role, secret) = entry
                    .split_once(':')
                    .ok_or_else(|| format!("{at}: expected `role:token`"))?;
                let role: Role = role.parse().map_err(|e| format!("{at}: {e}"))?;
                let digest = match secret.strip_prefix("sha256:") {
                    Some(hex) => from_hex(hex.trim())
                        .ok_or_else(|| format!("{at}: a sha256 entry needs 64 hex digits"))?,
                    None => {
                        if secret.len() < MIN_TOKEN_LEN {
                            return Err(format!(
                                "{at}: a token must be at least {MIN_TOKEN_LEN} characters"
                            ));
                        }
                        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
                            return Err(format!(
                                "{at}: a token may hold only visible ASCII characters"
                            ));
                        }
                        sha256(secret.as_bytes())
                    }
                };
                set.entries.push((digest, role));
            }
        }
        Ok(set)
    }

    /// Reads and parses a token file.
    ///
    /// # Errors
    /// The file cannot be read, or an entry is malformed (see [`TokenSet::parse`]).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        TokenSet::parse(&text, &path.display().to_string())
    }

    /// Adds every token of `other`.
    pub fn extend(&mut self, other: TokenSet) {
        self.entries.extend(other.entries);
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no token is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The role of `token`, if it is known (the highest, should it be listed twice).
    ///
    /// The presented token is hashed, then compared with every digest in constant time; all
    /// entries are always visited, so the time taken tells nothing about which one matched.
    pub fn role_of(&self, token: &[u8]) -> Option<Role> {
        let presented = sha256(token);
        let mut best: Option<Role> = None;
        for (digest, role) in &self.entries {
            let hit: bool = digest.ct_eq(&presented).into();
            if hit && best.is_none_or(|b| *role > b) {
                best = Some(*role);
            }
        }
        best
    }
}

/// Validated authentication settings.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// Tokens given inline (`auth.tokens`).
    pub tokens: TokenSet,
    /// The token file (`auth.token_file`), re-read on SIGHUP.
    pub token_file: Option<PathBuf>,
    /// `/metrics` answers without a token.
    pub metrics_open: bool,
    /// `/openapi.json` and `/docs` answer without a token.
    pub docs_open: bool,
}

impl AuthConfig {
    /// True when any token source is configured: authentication is then on, even should
    /// every source turn out empty (which refuses everyone rather than letting everyone in).
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || self.token_file.is_some()
    }

    /// Every token, the file read now.
    ///
    /// # Errors
    /// The file cannot be read or is malformed.
    pub fn all_tokens(&self) -> Result<TokenSet, String> {
        let mut set = self.tokens.clone();
        if let Some(f) = &self.token_file {
            set.extend(TokenSet::load(f)?);
        }
        Ok(set)
    }
}

/// What a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No token (probes; metrics and docs when configured public).
    Open,
    /// A token with at least this role.
    Needs(Role),
}

/// The live authentication state shared by the middleware and the reloader.
#[derive(Debug)]
pub struct Auth {
    config: AuthConfig,
    current: RwLock<Arc<TokenSet>>,
}

impl Auth {
    /// Loads every token source.
    ///
    /// # Errors
    /// The token file cannot be read or is malformed.
    pub fn new(config: AuthConfig) -> Result<Self, String> {
        let set = config.all_tokens()?;
        Ok(Auth {
            config,
            current: RwLock::new(Arc::new(set)),
        })
    }

    /// Re-reads the token file; on failure the tokens in use stay. Returns the token count.
    ///
    /// # Errors
    /// The file cannot be read or is malformed.
    pub fn reload(&self) -> Result<usize, String> {
        let set = self.config.all_tokens()?;
        let n = set.len();
        *self.current.write() = Arc::new(set);
        Ok(n)
    }

    /// The role `method` on `path` needs.
    pub fn access(&self, method: &Method, path: &str) -> Access {
        access(
            method,
            path,
            self.config.metrics_open,
            self.config.docs_open,
        )
    }

    /// The role of a presented token.
    pub fn role_of(&self, token: &[u8]) -> Option<Role> {
        let set = Arc::clone(&self.current.read());
        set.role_of(token)
    }
}

/// The role a request needs: probes are open; `/metrics`, `/openapi.json` and `/docs` as
/// configured (else `read`); `/admin/*` needs `admin`; `POST /batch` and any method but GET
/// and HEAD on `/kv` need `write`; everything else (reads, listing, `POST /mget`, unknown
/// paths) needs `read`.
pub fn access(method: &Method, path: &str, metrics_open: bool, docs_open: bool) -> Access {
    let read_only = method == Method::GET || method == Method::HEAD;
    match path {
        "/healthz" | "/readyz" => Access::Open,
        "/metrics" if metrics_open => Access::Open,
        "/openapi.json" | "/docs" if docs_open => Access::Open,
        p if docs_open && p.starts_with("/docs/") => Access::Open,
        p if p == "/admin" || p.starts_with("/admin/") => Access::Needs(Role::Admin),
        p if p == "/cluster" || p.starts_with("/cluster/") => Access::Needs(Role::Admin),
        "/batch" => Access::Needs(Role::Write),
        "/mget" => Access::Needs(Role::Read),
        p if (p == "/kv" || p.starts_with("/kv/")) && !read_only => Access::Needs(Role::Write),
        _ => Access::Needs(Role::Read),
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(req: &Request) -> Option<&[u8]> {
    let v = req.headers().get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Middleware: lets the request through when its token's role suffices, else 401 / 403.
pub async fn require(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let needed = match auth.access(req.method(), req.uri().path()) {
        Access::Open => return next.run(req).await,
        Access::Needs(role) => role,
    };
    let presented = bearer(&req);
    let has_header = req.headers().contains_key(header::AUTHORIZATION);
    match presented.and_then(|t| auth.role_of(t)) {
        Some(role) if role >= needed => next.run(req).await,
        Some(role) => ApiError::Forbidden {
            needed: needed.name(),
            has: role.name(),
        }
        .into_response(),
        None => ApiError::Unauthorized {
            invalid: has_header,
        }
        .into_response(),
    }
}

/// Writes the bearer scheme and each operation's role into the OpenAPI document.
///
/// Roles are given as the scopes of the `bearer` requirement (OpenAPI 3.1 allows role names
/// there for non-OAuth schemes); open endpoints get an empty requirement list. When the server
/// has no tokens (`enforced` false), each requirement also lists `{}`: no token is needed.
pub struct SecurityDoc {
    /// The server has tokens configured.
    pub enforced: bool,
    /// `/metrics` needs no token.
    pub metrics_open: bool,
    /// `/openapi.json` and `/docs` need no token.
    pub docs_open: bool,
}

impl utoipa::Modify for SecurityDoc {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
        };
        let scheme = Http::builder()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "A token from `auth.tokens` or `auth.token_file`, sent as \
    `Authorization: Bearer <token>`, when the server has tokens configured (otherwise no token is \
    needed, and the server listens on loopback only unless `allow_unauthenticated_remote` is set). \
    Roles, given as the scopes of each operation's requirement: `read` (GET/HEAD of keys, listing, \
    mget), `write` (read + PUT, DELETE, batch), `admin` (everything, `/admin/*`). 401 with \
    `WWW-Authenticate: Bearer` when the token is missing or unknown, 403 when its role is too small.",
            ))
            .build();
        doc.components
            .get_or_insert_with(Default::default)
            .security_schemes
            .insert("bearer".into(), SecurityScheme::Http(scheme).into());
        for (path, item) in doc.paths.paths.iter_mut() {
            let ops = [
                (Method::GET, &mut item.get),
                (Method::PUT, &mut item.put),
                (Method::POST, &mut item.post),
                (Method::DELETE, &mut item.delete),
                (Method::HEAD, &mut item.head),
                (Method::PATCH, &mut item.patch),
                (Method::OPTIONS, &mut item.options),
            ];
            for (m, op) in ops {
                let Some(op) = op.as_mut() else {
                    continue;
                };
                let needs = |role: Role| SecurityRequirement::new("bearer", [role.name()]);
                op.security = Some(match access(&m, path, self.metrics_open, self.docs_open) {
                    Access::Open => Vec::new(),
                    Access::Needs(role) if self.enforced => vec![needs(role)],
                    Access::Needs(role) => vec![needs(role), SecurityRequirement::default()],
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "0123456789abcdef-token";

    #[test]
    fn plain_and_hashed_tokens_have_their_roles() {
        let text = format!(
            "# comment\nread:{T}\n\nadmin:sha256:{}, write:{T}-w\n",
            token_digest_hex("the-admin-token-123")
        );
        let set = TokenSet::parse(&text, "test").expect("parse");
        assert_eq!(set.len(), 3);
        assert_eq!(set.role_of(T.as_bytes()), Some(Role::Read));
        assert_eq!(set.role_of(format!("{T}-w").as_bytes()), Some(Role::Write));
        assert_eq!(set.role_of(b"the-admin-token-123"), Some(Role::Admin));
        assert_eq!(set.role_of(b"0123456789abcdef-toke"), None);
        assert_eq!(set.role_of(b""), None);
    }

    #[test]
    fn bad_entries_are_refused_without_quoting_the_token() {
        for bad in [
            "reader:0123456789abcdef",
            "0123456789abcdef",
            "read:short",
            "read:sha256:abcd",
            "read:0123456789abcdef with space",
        ] {
            let e = TokenSet::parse(bad, "test").expect_err(bad);
            assert!(!e.contains("0123456789abcdef"), "{e}");
        }
    }

    #[test]
    fn routes_need_the_documented_roles() {
        let g = Method::GET;
        let cases = [
            (&g, "/healthz", Access::Open),
            (&g, "/metrics", Access::Needs(Role::Read)),
            (&g, "/docs/", Access::Needs(Role::Read)),
            (&g, "/kv/a", Access::Needs(Role::Read)),
            (&Method::HEAD, "/kv/a", Access::Needs(Role::Read)),
            (&g, "/kv", Access::Needs(Role::Read)),
            (&Method::PUT, "/kv/a", Access::Needs(Role::Write)),
            (&Method::DELETE, "/kv/a", Access::Needs(Role::Write)),
            (&Method::POST, "/mget", Access::Needs(Role::Read)),
            (&Method::POST, "/batch", Access::Needs(Role::Write)),
            (&g, "/admin/stats", Access::Needs(Role::Admin)),
            (&Method::POST, "/admin/merge", Access::Needs(Role::Admin)),
            (&g, "/nowhere", Access::Needs(Role::Read)),
        ];
        for (m, p, want) in cases {
            assert_eq!(access(m, p, false, false), want, "{m} {p}");
        }
        assert_eq!(access(&g, "/metrics", true, false), Access::Open);
        assert_eq!(access(&g, "/docs/x.js", false, true), Access::Open);
        assert_eq!(access(&g, "/openapi.json", false, true), Access::Open);
    }
}
