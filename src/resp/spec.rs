//! The command table: every command hoardhaven answers over RESP, with its arity, the role it
//! needs and the module that runs it. COMMAND, COMMAND COUNT / INFO / DOCS read it too.

use crate::http::auth::Role;

/// Which module runs a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// [`super::strings`].
    Strings,
    /// [`super::keys`].
    Keys,
    /// [`super::server`]: connection and server commands.
    Server,
    /// [`super::txn`]: MULTI, EXEC, DISCARD, WATCH, UNWATCH.
    Txn,
}

/// One command.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Lower-case name, as COMMAND and metrics show it.
    pub label: &'static str,
    /// Redis's arity: `n` exactly n arguments (name included), `-n` at least n.
    pub arity: i32,
    /// Role needed.
    pub role: Role,
    /// Answered before AUTH (AUTH, HELLO, PING, QUIT, RESET).
    pub no_auth: bool,
    /// Runs at once inside MULTI instead of being queued.
    pub in_multi_direct: bool,
    /// Module.
    pub group: Group,
    /// Writes data (COMMAND's `write` flag; runs off the async threads).
    pub write: bool,
    /// Position of the first key argument, 0 = none (COMMAND INFO).
    pub first_key: i32,
    /// Position of the last key argument, -1 = the last argument.
    pub last_key: i32,
    /// Step between keys.
    pub step: i32,
}

impl Spec {
    /// Whether `n` arguments (name included) fit the arity.
    pub fn arity_ok(&self, n: usize) -> bool {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let a = i64::from(self.arity);
        if a >= 0 { n == a } else { n >= -a }
    }
}

const fn c(label: &'static str, arity: i32, role: Role, group: Group) -> Spec {
    Spec {
        label,
        arity,
        role,
        no_auth: false,
        in_multi_direct: false,
        group,
        write: false,
        first_key: 0,
        last_key: 0,
        step: 0,
    }
}

const fn keys(mut s: Spec, first: i32, last: i32, step: i32) -> Spec {
    s.first_key = first;
    s.last_key = last;
    s.step = step;
    s
}

const fn w(mut s: Spec) -> Spec {
    s.write = true;
    s
}

const fn open(mut s: Spec) -> Spec {
    s.no_auth = true;
    s
}

const fn direct(mut s: Spec) -> Spec {
    s.in_multi_direct = true;
    s
}

use Group::{Keys as K, Server as S, Strings as T, Txn as X};
use Role::{Admin as A, Read as R, Write as W};

/// Every command.
pub const COMMANDS: &[Spec] = &[
    // connection
    open(c("ping", -1, R, S)),
    c("echo", 2, R, S),
    direct(open(c("hello", -1, R, S))),
    direct(open(c("auth", -2, R, S))),
    direct(open(c("quit", -1, R, S))),
    direct(open(c("reset", 1, R, S))),
    c("select", 2, R, S),
    c("client", -2, R, S),
    c("readonly", 1, R, S),
    c("readwrite", 1, R, S),
    // strings
    keys(c("get", 2, R, T), 1, 1, 1),
    w(keys(c("set", -3, W, T), 1, 1, 1)),
    w(keys(c("setnx", 3, W, T), 1, 1, 1)),
    w(keys(c("setex", 4, W, T), 1, 1, 1)),
    w(keys(c("psetex", 4, W, T), 1, 1, 1)),
    w(keys(c("getdel", 2, W, T), 1, 1, 1)),
    w(keys(c("getex", -2, W, T), 1, 1, 1)),
    w(keys(c("getset", 3, W, T), 1, 1, 1)),
    keys(c("mget", -2, R, T), 1, -1, 1),
    w(keys(c("mset", -3, W, T), 1, -1, 2)),
    w(keys(c("msetnx", -3, W, T), 1, -1, 2)),
    w(keys(c("append", 3, W, T), 1, 1, 1)),
    keys(c("strlen", 2, R, T), 1, 1, 1),
    keys(c("getrange", 4, R, T), 1, 1, 1),
    keys(c("substr", 4, R, T), 1, 1, 1),
    w(keys(c("setrange", 4, W, T), 1, 1, 1)),
    w(keys(c("incr", 2, W, T), 1, 1, 1)),
    w(keys(c("decr", 2, W, T), 1, 1, 1)),
    w(keys(c("incrby", 3, W, T), 1, 1, 1)),
    w(keys(c("decrby", 3, W, T), 1, 1, 1)),
    w(keys(c("incrbyfloat", 3, W, T), 1, 1, 1)),
    // keys
    w(keys(c("del", -2, W, K), 1, -1, 1)),
    w(keys(c("unlink", -2, W, K), 1, -1, 1)),
    keys(c("exists", -2, R, K), 1, -1, 1),
    keys(c("type", 2, R, K), 1, 1, 1),
    w(keys(c("expire", -3, W, K), 1, 1, 1)),
    w(keys(c("pexpire", -3, W, K), 1, 1, 1)),
    w(keys(c("expireat", -3, W, K), 1, 1, 1)),
    w(keys(c("pexpireat", -3, W, K), 1, 1, 1)),
    keys(c("expiretime", 2, R, K), 1, 1, 1),
    keys(c("pexpiretime", 2, R, K), 1, 1, 1),
    keys(c("ttl", 2, R, K), 1, 1, 1),
    keys(c("pttl", 2, R, K), 1, 1, 1),
    w(keys(c("persist", 2, W, K), 1, 1, 1)),
    c("keys", 2, R, K),
    c("scan", -2, R, K),
    c("dbsize", 1, R, K),
    w(c("flushdb", -1, W, K)),
    w(c("flushall", -1, A, K)),
    c("randomkey", 1, R, K),
    w(keys(c("rename", 3, W, K), 1, 2, 1)),
    w(keys(c("renamenx", 3, W, K), 1, 2, 1)),
    // transactions
    direct(c("multi", 1, R, X)),
    direct(c("exec", 1, R, X)),
    direct(c("discard", 1, R, X)),
    direct(keys(c("watch", -2, R, X), 1, -1, 1)),
    direct(c("unwatch", 1, R, X)),
    // server
    c("info", -1, R, S),
    c("command", -1, R, S),
    c("config", -2, R, S),
    w(c("bgsave", -1, A, S)),
    w(c("save", 1, A, S)),
    w(c("bgrewriteaof", 1, A, S)),
    c("lastsave", 1, R, S),
    c("time", 1, R, S),
];

/// Commands of data types hoardhaven does not have: their error says so.
pub const OTHER_TYPES: &[&str] = &[
    "LPUSH",
    "RPUSH",
    "LPOP",
    "RPOP",
    "LRANGE",
    "LLEN",
    "LINDEX",
    "LSET",
    "LREM",
    "BLPOP",
    "BRPOP",
    "SADD",
    "SREM",
    "SMEMBERS",
    "SISMEMBER",
    "SCARD",
    "SPOP",
    "SINTER",
    "SUNION",
    "HSET",
    "HGET",
    "HDEL",
    "HGETALL",
    "HMSET",
    "HMGET",
    "HINCRBY",
    "HKEYS",
    "HVALS",
    "HLEN",
    "HEXISTS",
    "ZADD",
    "ZRANGE",
    "ZREM",
    "ZSCORE",
    "ZCARD",
    "ZINCRBY",
    "ZRANK",
    "XADD",
    "XRANGE",
    "XREAD",
    "PFADD",
    "PFCOUNT",
    "SETBIT",
    "GETBIT",
    "BITCOUNT",
    "GEOADD",
];

/// The command named `upper` (any case), if hoardhaven has it.
pub fn lookup(upper: &str) -> Option<&'static Spec> {
    lookup_bytes(upper.as_bytes()).map(|(_, s)| s)
}

/// The command named `name` (any case) and its index in [`COMMANDS`]: a hash lookup, no
/// allocation (it runs once per command).
pub fn lookup_bytes(name: &[u8]) -> Option<(usize, &'static Spec)> {
    static INDEX: std::sync::LazyLock<std::collections::HashMap<&'static str, usize>> =
        std::sync::LazyLock::new(|| {
            COMMANDS
                .iter()
                .enumerate()
                .map(|(i, s)| (s.label, i))
                .collect()
        });
    if name.len() > 16 {
        return None;
    }
    let mut buf = [0u8; 16];
    let lower = &mut buf[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    let i = *INDEX.get(std::str::from_utf8(lower).ok()?)?;
    Some((i, &COMMANDS[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_lower_case() {
        let mut seen = std::collections::HashSet::new();
        for s in COMMANDS {
            assert!(seen.insert(s.label), "{} twice", s.label);
            assert_eq!(s.label, s.label.to_ascii_lowercase());
        }
        assert!(lookup("GET").is_some() && lookup("LPUSH").is_none());
        assert!(lookup("SET").is_some_and(|s| s.arity_ok(3) && s.arity_ok(9) && !s.arity_ok(2)));
    }
}
