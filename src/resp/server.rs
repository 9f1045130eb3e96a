//! Connection and server commands: PING, ECHO, HELLO, AUTH, QUIT, RESET, SELECT, CLIENT, INFO,
//! COMMAND, CONFIG, BGSAVE / SAVE, BGREWRITEAOF, LASTSAVE, TIME.
//!
//! Owns [`run`] for its group. AUTH checks a token exactly as the HTTP bearer check does
//! (`AUTH token`, or `AUTH user token` with the user ignored) and gives the connection that
//! token's role. BGSAVE starts the engine's snapshot job and BGREWRITEAOF its merge (bitcask)
//! or log rewrite (memory); both answer at once, as Redis does.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::session::{CmdResult, DATABASES, Session, Shared, int_arg, text, unix_secs};
use super::spec::{self, COMMANDS};
use crate::engine::{EngineKind, Error as EngineError};
use hoardhaven_resp_proto::parse::Args;
use hoardhaven_resp_proto::reply::{Proto, Reply};

/// Runs the connection or server command `name`.
pub fn run(s: &mut Session, shared: &Shared, name: &str, args: &Args) -> CmdResult {
    Ok(match name {
        "ping" => match args.len() {
            1 => Reply::Simple("PONG"),
            2 => Reply::Bulk(args[1].clone()),
            _ => Reply::err("wrong number of arguments for 'ping' command"),
        },
        "echo" => Reply::Bulk(args[1].clone()),
        "hello" => hello(s, shared, args),
        "auth" => match args.len() {
            2 => auth(s, shared, &args[1]),
            3 => auth(s, shared, &args[2]),
            _ => Reply::err("syntax error"),
        },
        "quit" => {
            s.quit = true;
            Reply::OK
        }
        "reset" => {
            s.proto = Proto::Resp2;
            s.db = 0;
            s.multi = None;
            s.watched.clear();
            s.name.clear();
            s.token = None;
            s.update_info(shared, |c| {
                c.resp = 2;
                c.db = 0;
                c.name.clear();
            });
            if shared.auth.is_some() {
                s.role = None;
            }
            Reply::Simple("RESET")
        }
        "select" => match int_arg(&args[1]) {
            Ok(n) if (0..i64::from(DATABASES)).contains(&n) => {
                s.db = u32::try_from(n).unwrap_or(0);
                let db = s.db;
                s.update_info(shared, |c| c.db = db);
                Reply::OK
            }
            Ok(_) => Reply::err("DB index is out of range"),
            Err(r) => r,
        },
        "client" => client(s, shared, args),
        "info" => info(shared, args),
        "command" => command(args),
        "config" => config(shared, args),
        "bgsave" => match shared.engine.start_snapshot() {
            Ok(_) => {
                shared.last_save.store(unix_secs(), Ordering::Relaxed);
                Reply::Simple("Background saving started")
            }
            Err(EngineError::Busy(_)) => Reply::err("Background save already in progress"),
            Err(e) => return Err(e),
        },
        "save" => {
            shared.engine.snapshot()?;
            shared.last_save.store(unix_secs(), Ordering::Relaxed);
            Reply::OK
        }
        "bgrewriteaof" => match shared.engine.start_merge() {
            Ok(_) => Reply::Simple("Background append only file rewriting started"),
            Err(EngineError::Busy(_)) => {
                Reply::err("Background append only file rewriting already in progress")
            }
            Err(e) => return Err(e),
        },
        "readonly" => {
            s.stale_reads = true;
            Reply::OK
        }
        "readwrite" => {
            s.stale_reads = false;
            Reply::OK
        }
        "lastsave" => {
            Reply::Int(i64::try_from(shared.last_save.load(Ordering::Relaxed)).unwrap_or(0))
        }
        "time" => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            Reply::Array(vec![
                Reply::bulk(now.as_secs().to_string()),
                Reply::bulk(now.subsec_micros().to_string()),
            ])
        }
        other => Reply::err(format!("'{other}' is not a server command")),
    })
}

fn auth(s: &mut Session, shared: &Shared, token: &Bytes) -> Reply {
    let Some(a) = &shared.auth else {
        return Reply::err(
            "AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        );
    };
    match a.role_of(token) {
        Some(role) => {
            s.role = Some(role);
            s.token = Some(token.clone());
            Reply::OK
        }
        None => {
            Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
        }
    }
}

fn hello(s: &mut Session, shared: &Shared, args: &Args) -> Reply {
    let mut i = 1;
    let mut proto = s.proto;
    if let Some(v) = args.get(1) {
        match text(v).as_ref() {
            "2" => proto = Proto::Resp2,
            "3" => proto = Proto::Resp3,
            _ => {
                return Reply::Error("NOPROTO unsupported protocol version".into());
            }
        }
        i = 2;
    }
    let mut name = None;
    while i < args.len() {
        match text(&args[i]).to_ascii_uppercase().as_str() {
            "AUTH" if i + 2 < args.len() => {
                let r = auth(s, shared, &args[i + 2]);
                if r.is_error() {
                    return r;
                }
                i += 3;
            }
            "SETNAME" if i + 1 < args.len() => {
                if !valid_name(&args[i + 1]) {
                    return bad_name();
                }
                name = Some(args[i + 1].clone());
                i += 2;
            }
            _ => return Reply::err("syntax error in HELLO"),
        }
    }
    if s.role.is_none() {
        return Reply::Error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into());
    }
    if let Some(n) = name {
        set_name(s, shared, &n);
    }
    s.proto = proto;
    let resp = if proto == Proto::Resp3 { 3 } else { 2 };
    s.update_info(shared, |c| c.resp = resp);
    let b = |t: &str| Reply::bulk(t.to_owned());
    Reply::Map(vec![
        (b("server"), b("redis")),
        (b("version"), b("7.2.0")),
        (
            b("proto"),
            Reply::Int(if proto == Proto::Resp3 { 3 } else { 2 }),
        ),
        (b("id"), Reply::Int(i64::try_from(s.id).unwrap_or(0))),
        (b("mode"), b("standalone")),
        (b("role"), b("master")),
        (b("modules"), Reply::Array(Vec::new())),
    ])
}

/// Client names and library infos: printable ASCII without spaces (as Redis), so they cannot
/// forge rows of CLIENT LIST.
fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|b| (b'!'..=b'~').contains(b))
}

fn bad_name() -> Reply {
    Reply::err("Client names cannot contain spaces, newlines or special characters.")
}

fn set_name(s: &mut Session, shared: &Shared, name: &Bytes) {
    s.name = text(name).into_owned();
    if let Some(c) = shared.clients.lock().get_mut(&s.id) {
        c.name = s.name.clone();
    }
}

fn client(s: &mut Session, shared: &Shared, args: &Args) -> Reply {
    match text(&args[1]).to_ascii_uppercase().as_str() {
        "SETNAME" if args.len() == 3 => {
            if args[2].iter().any(|b| *b == b' ' || *b == b'\n') {
                return Reply::err(
                    "Client names cannot contain spaces, newlines or special characters.",
                );
            }
            set_name(s, shared, &args[2]);
            Reply::OK
        }
        "GETNAME" => {
            if s.name.is_empty() {
                Reply::Nil
            } else {
                Reply::bulk(s.name.clone())
            }
        }
        "ID" => Reply::Int(i64::try_from(s.id).unwrap_or(0)),
        "SETINFO" if args.len() == 4 => {
            if !valid_name(&args[3]) {
                return Reply::err(
                    "lib-name and lib-ver cannot contain spaces, newlines or special characters.",
                );
            }
            let value = text(&args[3]).into_owned();
            match text(&args[2]).to_ascii_lowercase().as_str() {
                "lib-name" => s.update_info(shared, |c| c.lib_name = value),
                "lib-ver" => s.update_info(shared, |c| c.lib_ver = value),
                other => {
                    return Reply::err(format!("Unrecognized option '{other}'"));
                }
            }
            Reply::OK
        }
        "LIST" | "INFO" => {
            let clients = shared.clients.lock();
            let mut out = String::new();
            for (id, c) in clients.iter() {
                if text(&args[1]).eq_ignore_ascii_case("INFO") && *id != s.id {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "id={id} addr={} laddr={} name={} age={} idle=0 flags=N db={} sub=0 psub=0 \
                     multi=-1 watch=0 cmd=client user=default resp={} lib-name={} lib-ver={}",
                    c.peer,
                    shared.addr,
                    c.name,
                    c.since.elapsed().as_secs(),
                    c.db,
                    c.resp,
                    c.lib_name,
                    c.lib_ver
                );
            }
            Reply::bulk(out)
        }
        "NO-EVICT" | "NO-TOUCH" => Reply::OK,
        other => Reply::err(format!(
            "unknown subcommand '{}'. Try CLIENT HELP.",
            other.to_ascii_lowercase()
        )),
    }
}

fn info(shared: &Shared, args: &Args) -> Reply {
    let want: Vec<String> = args[1..]
        .iter()
        .map(|a| text(a).to_ascii_lowercase())
        .collect();
    let show = |section: &str| {
        want.is_empty()
            || want
                .iter()
                .any(|w| w == section || w == "all" || w == "everything" || w == "default")
    };
    let stats = shared.engine.stats().ok();
    let mut out = String::new();
    if show("server") {
        let _ = write!(
            out,
            "# Server\r\nredis_version:7.2.0\r\nhoardhaven_version:{}\r\nredis_mode:standalone\r\n\
             os:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            shared.addr.port(),
            shared.started.elapsed().as_secs()
        );
    }
    if show("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\n\r\n",
            shared.clients.lock().len()
        );
    }
    if show("memory") {
        let used = stats.as_ref().map_or(0, |s| s.live_bytes + s.index_bytes);
        let _ = write!(
            out,
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:{:.2}M\r\nmaxmemory:0\r\n\
             maxmemory_policy:noeviction\r\n\r\n",
            used as f64 / (1024.0 * 1024.0)
        );
    }
    if show("persistence") {
        let aof = stats
            .as_ref()
            .is_some_and(|s| s.engine == EngineKind::Bitcask)
            || shared.engine.kind() == EngineKind::Bitcask;
        let _ = write!(
            out,
            "# Persistence\r\nloading:0\r\nrdb_last_save_time:{}\r\naof_enabled:{}\r\n\
             hoardhaven_engine:{}\r\nhoardhaven_sync:{}\r\n\r\n",
            shared.last_save.load(Ordering::Relaxed),
            u8::from(aof),
            shared.engine.kind(),
            stats
                .as_ref()
                .map_or_else(String::new, |s| s.sync.to_string()),
        );
    }
    if show("stats") {
        let _ = write!(
            out,
            "# Stats\r\ntotal_commands_processed:{}\r\n\r\n",
            shared.commands.load(Ordering::Relaxed)
        );
    }
    if show("keyspace") {
        let _ = write!(
            out,
            "# Keyspace\r\ndb0:keys={},expires=0,avg_ttl=0\r\n",
            stats.as_ref().map_or(0, |s| s.keys)
        );
    }
    Reply::bulk(out)
}

fn command_info(s: &spec::Spec) -> Reply {
    let mut flags = vec![Reply::Simple(if s.write { "write" } else { "readonly" })];
    if !s.write {
        flags.push(Reply::Simple("fast"));
    }
    Reply::Array(vec![
        Reply::bulk(s.label),
        Reply::Int(i64::from(s.arity)),
        Reply::Array(flags),
        Reply::Int(i64::from(s.first_key)),
        Reply::Int(i64::from(s.last_key)),
        Reply::Int(i64::from(s.step)),
    ])
}

fn command(args: &Args) -> Reply {
    let Some(sub) = args.get(1) else {
        return Reply::Array(COMMANDS.iter().map(command_info).collect());
    };
    match text(sub).to_ascii_uppercase().as_str() {
        "COUNT" => Reply::Int(COMMANDS.len() as i64),
        "INFO" => {
            if args.len() == 2 {
                return Reply::Array(COMMANDS.iter().map(command_info).collect());
            }
            Reply::Array(
                args[2..]
                    .iter()
                    .map(|n| {
                        spec::lookup(&text(n).to_ascii_uppercase()).map_or(Reply::Nil, command_info)
                    })
                    .collect(),
            )
        }
        "DOCS" => {
            let names: Vec<&spec::Spec> = if args.len() == 2 {
                COMMANDS.iter().collect()
            } else {
                args[2..]
                    .iter()
                    .filter_map(|n| spec::lookup(&text(n).to_ascii_uppercase()))
                    .collect()
            };
            Reply::Map(
                names
                    .into_iter()
                    .map(|s| {
                        (
                            Reply::bulk(s.label),
                            Reply::Map(vec![
                                (
                                    Reply::bulk("summary"),
                                    Reply::bulk(format!("hoardhaven {}", s.label)),
                                ),
                                (Reply::bulk("since"), Reply::bulk("1.0.0")),
                                (Reply::bulk("group"), Reply::bulk("string")),
                            ]),
                        )
                    })
                    .collect(),
            )
        }
        other => Reply::err(format!(
            "unknown subcommand '{}'. Try COMMAND HELP.",
            other.to_ascii_lowercase()
        )),
    }
}

fn config(shared: &Shared, args: &Args) -> Reply {
    match text(&args[1]).to_ascii_uppercase().as_str() {
        "GET" if args.len() < 3 => Reply::err("wrong number of arguments for 'config|get' command"),
        "GET" => {
            let sync = shared
                .engine
                .stats()
                .map(|s| s.sync.to_string())
                .unwrap_or_default();
            let appendfsync = match sync.as_str() {
                "always" => "always",
                "never" => "no",
                _ => "everysec",
            };
            let known: [(&str, String); 6] = [
                ("save", String::new()),
                ("appendonly", "yes".into()),
                ("appendfsync", appendfsync.into()),
                ("databases", DATABASES.to_string()),
                ("maxmemory", "0".into()),
                ("maxmemory-policy", "noeviction".into()),
            ];
            let mut pairs = Vec::new();
            for pattern in &args[2..] {
                for (k, v) in &known {
                    if super::glob::matches(
                        &text(pattern).to_ascii_lowercase().into_bytes(),
                        k.as_bytes(),
                    ) {
                        pairs.push((Reply::bulk(k.to_string()), Reply::bulk(v.clone())));
                    }
                }
            }
            Reply::Map(pairs)
        }
        "SET" => Reply::err(
            "CONFIG SET is not supported: hoardhaven is configured by its settings (flags, environment, TOML file)",
        ),
        "RESETSTAT" => Reply::OK,
        other => Reply::err(format!(
            "unknown subcommand '{}'. Try CONFIG HELP.",
            other.to_ascii_lowercase()
        )),
    }
}
