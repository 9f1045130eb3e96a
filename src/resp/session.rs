//! One RESP connection's state and the dispatch of its commands.
//!
//! Owns [`Shared`] (what every connection shares: the engine, tokens, limits, the client
//! registry) and [`Session`] (protocol version, selected database, authenticated role, client
//! name, the MULTI queue and WATCHed versions, SCAN cursors). [`Session::execute`] checks a
//! command's arity and role and hands it to the module of its group: [`super::strings`],
//! [`super::keys`], [`super::server`] or [`super::txn`].
//!
//! Databases: `SELECT 0` is the key space HTTP serves. `SELECT n` (1-15) is the same store
//! with every key stored under the prefix `\xFF\xFEdb<n>:`, so the databases never see each
//! other's keys; over HTTP they are visible under that prefix (docs/redis.md).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;

use super::overlay::Overlay;
use super::spec::{self, Group};
use crate::engine::{Engine, Error as EngineError, Version};
use crate::http::Limits;
use crate::http::auth::{Auth, Role};
use hoardhaven_resp_proto::parse::Args;
use hoardhaven_resp_proto::reply::{Proto, Reply};

/// Key prefix of database `n >= 1` (database 0 has none).
pub const DB_PREFIX: &[u8] = b"\xFF\xFEdb";

/// Number of databases (`SELECT 0` .. `SELECT 15`, as Redis's default).
pub const DATABASES: u32 = 16;

/// What every connection shares.
pub struct Shared {
    /// The open engine.
    pub engine: Arc<dyn Engine>,
    /// Tokens, when authentication is on.
    pub auth: Option<Arc<Auth>>,
    /// Key, value and batch limits (as on HTTP).
    pub limits: Limits,
    /// Whether a write waits for fdatasync before it is acknowledged (`sync=always`).
    pub durable_writes: bool,
    /// The RESP listener's address.
    pub addr: SocketAddr,
    /// When the server started.
    pub started: Instant,
    /// Serializes the transactions that cannot be one engine batch (docs/redis.md). Only
    /// EXEC takes it, and nothing EXEC runs takes it again.
    pub txn: Mutex<()>,
    /// Connected clients, by id: address and name.
    pub clients: Mutex<HashMap<u64, ClientInfo>>,
    /// Next client id.
    pub next_id: AtomicU64,
    /// Unix seconds of the last snapshot started by BGSAVE / SAVE (or start-up).
    pub last_save: AtomicU64,
    /// Commands served since start.
    pub commands: AtomicU64,
    /// Metric handles per command (index in the command table; the last is `unknown`),
    /// registered once: a labelled `counter!` per call costs a registry lookup.
    pub metrics: Vec<CommandMetrics>,
    /// SCAN cursors of every connection (a client library may continue a scan on another
    /// pooled connection).
    pub cursors: Mutex<Cursors>,
    /// On a cluster node: the node, whose read barrier makes reads linearizable.
    pub cluster: Option<Arc<crate::cluster::node::Node>>,
}

/// The metric series of one command.
#[derive(Debug)]
pub struct CommandMetrics {
    /// `hoardhaven_resp_commands_total{command}`.
    pub calls: metrics::Counter,
    /// `hoardhaven_resp_errors_total{command}`.
    pub errors: metrics::Counter,
    /// `hoardhaven_resp_command_duration_seconds{command}`.
    pub duration: metrics::Histogram,
}

impl CommandMetrics {
    fn new(label: &'static str) -> Self {
        CommandMetrics {
            calls: metrics::counter!("hoardhaven_resp_commands_total", "command" => label),
            errors: metrics::counter!("hoardhaven_resp_errors_total", "command" => label),
            duration: metrics::histogram!("hoardhaven_resp_command_duration_seconds", "command" => label),
        }
    }
}

/// Open SCAN cursors: random ids naming where a scan stands, oldest dropped past a bound.
#[derive(Debug, Default)]
pub struct Cursors {
    by_id: HashMap<u64, (u32, Vec<u8>)>,
    order: std::collections::VecDeque<u64>,
}

/// Most open SCAN cursors kept (an abandoned scan costs one entry until it ages out).
const MAX_CURSORS: usize = 100_000;

impl Cursors {
    /// Records that a scan of database `db` stopped after the stored key `last`; returns the
    /// cursor to hand out (never 0, which means "done").
    pub fn open(&mut self, db: u32, last: Vec<u8>) -> u64 {
        let mut id = 0;
        while id == 0 || self.by_id.contains_key(&id) {
            id = random_u63();
        }
        if self.order.len() >= MAX_CURSORS
            && let Some(old) = self.order.pop_front()
        {
            self.by_id.remove(&old);
        }
        self.by_id.insert(id, (db, last));
        self.order.push_back(id);
        id
    }

    /// Takes the position of cursor `id` if it was opened for database `db`.
    pub fn take(&mut self, id: u64, db: u32) -> Option<Vec<u8>> {
        match self.by_id.get(&id) {
            Some((d, _)) if *d == db => self.by_id.remove(&id).map(|(_, k)| k),
            _ => None,
        }
    }
}

/// A random number below 2^63 (cursors are signed in some clients).
pub fn random_u63() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() >> 1
}

/// A connected client, for CLIENT LIST and INFO.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    /// Peer address.
    pub peer: SocketAddr,
    /// Name given by CLIENT SETNAME / HELLO SETNAME.
    pub name: String,
    /// When it connected.
    pub since: Instant,
    /// Its selected database.
    pub db: u32,
    /// Protocol version (2 or 3).
    pub resp: u8,
    /// CLIENT SETINFO lib-name.
    pub lib_name: String,
    /// CLIENT SETINFO lib-ver.
    pub lib_ver: String,
}

/// A MULTI in progress.
#[derive(Debug, Default)]
pub struct Multi {
    /// Queued commands.
    pub queued: Vec<Args>,
    /// A queued command was refused (unknown or wrong arity): EXEC aborts.
    pub poisoned: bool,
}

/// One connection.
#[derive(Debug)]
pub struct Session {
    /// Client id (CLIENT ID).
    pub id: u64,
    /// Protocol version.
    pub proto: Proto,
    /// Selected database.
    pub db: u32,
    /// The role authenticated, `None` before AUTH when authentication is on.
    pub role: Option<Role>,
    /// The token AUTH accepted: its role is looked up again before every command, so a token
    /// removed from the token file (SIGHUP) stops working on open connections too.
    pub token: Option<Bytes>,
    /// CLIENT SETNAME.
    pub name: String,
    /// MULTI in progress.
    pub multi: Option<Multi>,
    /// WATCHed keys (stored form) with the version seen.
    pub watched: Vec<(Vec<u8>, Option<Version>)>,
    /// QUIT was sent: close after the reply.
    pub quit: bool,
    /// During EXEC of an optimistic transaction: the overlay its commands run against.
    pub txn_view: Option<Arc<Overlay>>,
    /// READONLY was sent: on a cluster node, reads serve the local copy (no read barrier),
    /// as Redis Cluster's replicas do; READWRITE turns it off.
    pub stale_reads: bool,
}

/// The store a command reads and writes: the engine, or during EXEC the transaction's
/// [`Overlay`]. Dereferences to the [`Engine`] either way.
pub enum Kv<'a> {
    /// The shared engine.
    Engine(&'a dyn Engine),
    /// A transaction's private view.
    Txn(Arc<Overlay>),
}

impl std::ops::Deref for Kv<'_> {
    type Target = dyn Engine;
    fn deref(&self) -> &Self::Target {
        match self {
            Kv::Engine(e) => *e,
            Kv::Txn(o) => &**o,
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("engine", &self.engine.kind())
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Shared state over an open engine.
    pub fn new(
        engine: Arc<dyn Engine>,
        auth: Option<Arc<Auth>>,
        limits: Limits,
        addr: SocketAddr,
    ) -> Self {
        let durable_writes = engine
            .stats()
            .map_or(true, |s| s.sync == crate::engine::SyncPolicy::Always);
        Shared {
            engine,
            auth,
            limits,
            durable_writes,
            addr,
            started: Instant::now(),
            txn: Mutex::new(()),
            clients: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            last_save: AtomicU64::new(unix_secs()),
            commands: AtomicU64::new(0),
            cursors: Mutex::new(Cursors::default()),
            cluster: None,
            metrics: spec::COMMANDS
                .iter()
                .map(|c| c.label)
                .chain(["unknown"])
                .map(CommandMetrics::new)
                .collect(),
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Session {
    /// A new connection's session; registered in `shared.clients` until [`Session::leave`].
    pub fn join(shared: &Shared, peer: SocketAddr) -> Self {
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        shared.clients.lock().insert(
            id,
            ClientInfo {
                peer,
                name: String::new(),
                since: Instant::now(),
                db: 0,
                resp: 2,
                lib_name: String::new(),
                lib_ver: String::new(),
            },
        );
        Session {
            id,
            proto: Proto::Resp2,
            db: 0,
            role: if shared.auth.is_some() {
                None
            } else {
                Some(Role::Admin)
            },
            token: None,
            name: String::new(),
            multi: None,
            watched: Vec::new(),
            quit: false,
            txn_view: None,
            stale_reads: false,
        }
    }

    /// Updates this client's row in the registry.
    pub fn update_info(&self, shared: &Shared, f: impl FnOnce(&mut ClientInfo)) {
        if let Some(c) = shared.clients.lock().get_mut(&self.id) {
            f(c);
        }
    }

    /// What this session's commands read and write (see [`Kv`]).
    pub fn kv<'a>(&self, shared: &'a Shared) -> Kv<'a> {
        match &self.txn_view {
            Some(o) => Kv::Txn(Arc::clone(o)),
            None => Kv::Engine(&*shared.engine),
        }
    }

    /// The stored form of a client's key in the selected database.
    pub fn key(&self, k: &[u8]) -> Vec<u8> {
        stored_key(self.db, k)
    }

    /// The client's form of a stored key of the selected database.
    pub fn user_key<'a>(&self, stored: &'a [u8]) -> &'a [u8] {
        let prefix = db_prefix(self.db);
        stored.get(prefix.len()..).unwrap_or_default()
    }

    /// Whether a stored key belongs to the selected database (database 0 excludes the others).
    pub fn owns(&self, stored: &[u8]) -> bool {
        self.db != 0 || !stored.starts_with(DB_PREFIX)
    }

    /// Runs one command and returns its reply.
    pub fn execute(&mut self, shared: &Shared, args: Args) -> Reply {
        shared.commands.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let found = spec::lookup_bytes(&args[0]);
        let reply = self.dispatch(shared, found.map(|(_, s)| s), args);
        let m = &shared.metrics[found.map_or(spec::COMMANDS.len(), |(i, _)| i)];
        m.calls.increment(1);
        m.duration.record(started.elapsed().as_secs_f64());
        if reply.is_error() {
            m.errors.increment(1);
        }
        reply
    }

    /// Runs pipelined plain `SET key value` commands (no options; see `conn.rs`) as ONE engine
    /// batch, so a pipeline of durable writes costs one fdatasync instead of one each, as
    /// Redis's one fsync per event-loop turn. Each command is still authorized, size-checked,
    /// counted and answered on its own; outside MULTI only. Falls back to one by one when any
    /// of them would not simply answer OK.
    pub fn execute_sets(&mut self, shared: &Shared, sets: Vec<Args>) -> Vec<Reply> {
        let (replies, ticket) = self.execute_sets_deferred(shared, sets);
        match ticket.wait() {
            Ok(()) => replies,
            Err(e) => vec![engine_error(e); replies.len()],
        }
    }

    /// [`Session::execute_sets`] without waiting for durability: the replies hold once the
    /// returned ticket resolves (the connection awaits it before answering; on its error every
    /// reply becomes that error).
    pub fn execute_sets_deferred(
        &mut self,
        shared: &Shared,
        sets: Vec<Args>,
    ) -> (Vec<Reply>, crate::engine::Ticket) {
        let ready = crate::engine::Ticket::ready;
        let Some((idx, spec)) = spec::lookup_bytes(b"set") else {
            let replies = sets.into_iter().map(|a| self.execute(shared, a)).collect();
            return (replies, ready());
        };
        self.refresh_role(shared);
        let allowed = self.multi.is_none() && self.role.is_some_and(|r| r >= spec.role);
        let sized = sets
            .iter()
            .all(|a| super::strings::check_sizes(shared, &a[1], Some(&a[2])).is_ok());
        if !allowed || !sized {
            let replies = sets.into_iter().map(|a| self.execute(shared, a)).collect();
            return (replies, ready());
        }
        let started = Instant::now();
        let n = sets.len();
        let ops = sets
            .into_iter()
            .map(|a| crate::engine::BatchOp::Put {
                key: self.key(&a[1]),
                value: a[2].clone(),
                expires_at: None,
            })
            .collect();
        shared.commands.fetch_add(n as u64, Ordering::Relaxed);
        let m = &shared.metrics[idx];
        m.calls.increment(n as u64);
        let (reply, ticket) = match shared.engine.apply_batch_checked_deferred(&[], ops) {
            Ok((_, ticket)) => (Reply::OK, ticket),
            Err(e) => {
                m.errors.increment(n as u64);
                (engine_error(e), ready())
            }
        };
        let each = started.elapsed().as_secs_f64() / n as f64;
        for _ in 0..n {
            m.duration.record(each);
        }
        (vec![reply; n], ticket)
    }

    /// Looks the token's role up again (a token removed by SIGHUP stops working).
    fn refresh_role(&mut self, shared: &Shared) {
        if let (Some(auth), Some(token)) = (&shared.auth, &self.token) {
            self.role = auth.role_of(token);
            if self.role.is_none() {
                self.token = None;
            }
        }
    }

    fn dispatch(
        &mut self,
        shared: &Shared,
        spec: Option<&'static spec::Spec>,
        args: Args,
    ) -> Reply {
        let Some(spec) = spec else {
            if let Some(m) = &mut self.multi {
                m.poisoned = true;
            }
            let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
            return unknown_command(&name, &args);
        };
        if !spec.arity_ok(args.len()) {
            if spec.label == "exec" {
                // As Redis: a refused EXEC discards the transaction.
                self.multi = None;
                self.watched.clear();
                return Reply::Error(
                    "EXECABORT Transaction discarded because of previous errors: wrong \
                     number of arguments for 'exec' command"
                        .into(),
                );
            }
            if let Some(m) = &mut self.multi {
                m.poisoned = true;
            }
            return Reply::err(format!(
                "wrong number of arguments for '{}' command",
                spec.label
            ));
        }
        self.refresh_role(shared);
        if self.multi.is_some() && matches!(spec.label, "auth" | "hello") {
            if let Some(m) = &mut self.multi {
                m.poisoned = true;
            }
            return Reply::err(format!(
                "{} inside MULTI is not allowed",
                spec.label.to_ascii_uppercase()
            ));
        }
        let refused = match self.role {
            None if !spec.no_auth => Some(Reply::Error("NOAUTH Authentication required.".into())),
            Some(role) if role < spec.role => Some(Reply::Error(format!(
                "NOPERM this token's role ({}) may not run '{}' (needs {})",
                role.name(),
                spec.label,
                spec.role.name()
            ))),
            _ => None,
        };
        if let Some(r) = refused {
            // As Redis: a refused command inside MULTI makes EXEC abort.
            if let Some(m) = &mut self.multi {
                m.poisoned = true;
            }
            return r;
        }
        if self.multi.is_some() && !spec.in_multi_direct {
            if let Some(m) = &mut self.multi {
                m.queued.push(args);
            }
            return Reply::Simple("QUEUED");
        }
        let reply = match spec.group {
            Group::Strings => super::strings::run(self, shared, spec.label, &args),
            Group::Keys => super::keys::run(self, shared, spec.label, &args),
            Group::Server => super::server::run(self, shared, spec.label, &args),
            Group::Txn => super::txn::run(self, shared, spec.label, &args),
        };
        reply.unwrap_or_else(engine_error)
    }
}

/// The stored form of key `k` in database `db`.
pub fn stored_key(db: u32, k: &[u8]) -> Vec<u8> {
    let prefix = db_prefix(db);
    let mut out = Vec::with_capacity(prefix.len() + k.len());
    out.extend_from_slice(&prefix);
    out.extend_from_slice(k);
    out
}

/// The key prefix of database `db` (empty for 0).
pub fn db_prefix(db: u32) -> Vec<u8> {
    if db == 0 {
        Vec::new()
    } else {
        [DB_PREFIX, db.to_string().as_bytes(), b":"].concat()
    }
}

fn unknown_command(name: &str, args: &Args) -> Reply {
    let rest: Vec<String> = args[1..]
        .iter()
        .take(8)
        .map(|a| format!("'{}'", String::from_utf8_lossy(a)))
        .collect();
    let hint = if spec::OTHER_TYPES.contains(&name) {
        " (hoardhaven stores strings only: no lists, sets, hashes or sorted sets)"
    } else {
        ""
    };
    Reply::err(format!(
        "unknown command '{}', with args beginning with: {}{hint}",
        name.to_ascii_lowercase(),
        rest.join(" ")
    ))
}

/// A command's failure: a reply ready to send, or an engine error to translate.
pub type CmdResult = Result<Reply, EngineError>;

/// The one place engine errors become RESP errors.
pub fn engine_error(e: EngineError) -> Reply {
    match e {
        EngineError::DiskFull { .. } => Reply::Error(format!(
            "ERR {e} (OOM-style refusal: writes fail, reads work)"
        )),
        EngineError::Poisoned(_) => Reply::Error(format!("MISCONF {e}")),
        EngineError::Busy(what) => {
            Reply::err(format!("a background {what} is already in progress"))
        }
        EngineError::KeyTooLarge { .. } | EngineError::ValueTooLarge { .. } => {
            Reply::err(format!("{e}"))
        }
        EngineError::EmptyKey => Reply::err("empty keys are not supported by hoardhaven"),
        EngineError::PreconditionFailed { .. } => Reply::err("the key changed concurrently; retry"),
        // Redis Cluster's words: TRYAGAIN is safe to retry (nothing applied), CLUSTERDOWN
        // leaves the outcome unknown.
        EngineError::NotApplied(_) => Reply::Error(format!("TRYAGAIN {e}")),
        EngineError::Unavailable(_) => Reply::Error(format!("CLUSTERDOWN {e}")),
        other => Reply::err(other),
    }
}

/// Bytes of an argument as text (for numbers and options).
pub fn text(b: &Bytes) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// An integer argument as Redis's `string2ll` reads it (no `+`, no leading zeros, no spaces),
/// or Redis's error text.
pub fn int_arg(b: &Bytes) -> Result<i64, Reply> {
    strict_int(b).ok_or_else(|| Reply::err("value is not an integer or out of range"))
}

/// `string2ll`: an optional `-`, then digits without leading zeros (`0` itself allowed).
pub fn strict_int(b: &[u8]) -> Option<i64> {
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    let canonical = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits == b"0" || digits[0] != b'0')
        && !(b.starts_with(b"-") && digits == b"0");
    if !canonical || b.len() > 20 {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}
