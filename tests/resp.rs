//! The Redis protocol door, black-box: the real binary with `--resp-listen`, driven by the
//! `redis` crate (RESP2 and RESP3) and by raw TCP for hostile input.

use std::fmt::Display;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use redis::{Commands, RedisResult, Value};

mod common;

use common::ENGINES;

/// A running server with its RESP address.
struct Server {
    child: Child,
    resp: String,
    http: String,
    _dir: Option<tempfile::TempDir>,
    data: std::path::PathBuf,
}

impl Server {
    fn start(engine: impl Display, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let mut s = Server::start_in(&data, engine, extra);
        s._dir = Some(dir);
        s
    }

    fn start_in(data: &std::path::Path, engine: impl Display, extra: &[&str]) -> Server {
        let port_file = data.with_extension("port");
        let _ = std::fs::remove_file(&port_file);
        let mut child = common::serve_command(&engine.to_string(), data, &port_file)
            .args(["--resp-listen", "127.0.0.1:0", "--log-level", "info"])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hoardhaven");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.split("Redis protocol listening on ").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_owned());
                }
            }
        });
        // The line comes once the engine is open; a generous bound for a loaded machine.
        let resp = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the server logs its RESP address");
        // The port file is written before the RESP line is logged.
        let http = std::fs::read_to_string(&port_file)
            .expect("port file")
            .trim()
            .to_owned();
        Server {
            child,
            resp,
            http,
            _dir: None,
            data: data.to_owned(),
        }
    }

    fn client(&self, resp3: bool) -> redis::Connection {
        let proto = if resp3 { "?protocol=resp3" } else { "" };
        let c = redis::Client::open(format!("redis://{}/{proto}", self.resp)).expect("client");
        c.get_connection_with_timeout(Duration::from_secs(30))
            .expect("connect")
    }

    fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(&self.resp).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        s
    }

    /// SIGKILL; returns the data directory and the scratch directory that holds it.
    fn kill9(mut self) -> (std::path::PathBuf, Option<tempfile::TempDir>) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        (self.data.clone(), self._dir.take())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn strings_keys_and_expiry_on_both_protocols() {
    for engine in ENGINES {
        let s = Server::start(engine, &["--sync", "never"]);
        for resp3 in [false, true] {
            let mut c = s.client(resp3);
            let _: () = redis::cmd("FLUSHDB").query(&mut c).expect("flushdb");
            let _: () = c.set("k", "v").expect("set");
            assert_eq!(
                c.get::<_, Option<String>>("k").expect("get"),
                Some("v".into())
            );
            assert_eq!(c.get::<_, Option<String>>("absent").expect("get"), None);
            assert_eq!(c.incr::<_, _, i64>("n", 5).expect("incrby"), 5);
            assert_eq!(c.decr::<_, _, i64>("n", 2).expect("decrby"), 3);
            let e: RedisResult<i64> = c.incr("k", 1);
            assert!(e.is_err(), "INCR of a non-integer is an error");
            assert_eq!(c.append::<_, _, i64>("k", "w").expect("append"), 2);
            assert_eq!(c.strlen::<_, i64>("k").expect("strlen"), 2);
            assert_eq!(c.getrange::<_, String>("k", 1, -1).expect("getrange"), "w");
            let old: Option<String> = redis::cmd("SET")
                .arg("k")
                .arg("x")
                .arg("GET")
                .query(&mut c)
                .expect("set get");
            assert_eq!(old.as_deref(), Some("vw"));
            let nx: Option<String> = redis::cmd("SET")
                .arg("k")
                .arg("y")
                .arg("NX")
                .query(&mut c)
                .expect("set nx");
            assert_eq!(nx, None, "NX on an existing key does nothing");
            assert_eq!(c.get::<_, String>("k").expect("get"), "x");
            let _: () = c.set_ex("t", "1", 100).expect("setex");
            let ttl: i64 = c.ttl("t").expect("ttl");
            assert!((1..=100).contains(&ttl), "{ttl}");
            assert_eq!(c.ttl::<_, i64>("k").expect("ttl"), -1);
            assert_eq!(c.ttl::<_, i64>("absent").expect("ttl"), -2);
            assert!(c.persist::<_, bool>("t").expect("persist"));
            assert_eq!(c.ttl::<_, i64>("t").expect("ttl"), -1);
            assert!(c.pexpire::<_, bool>("t", 1).expect("pexpire"));
            // Expired keys vanish: wait for the event (the key gone), bounded.
            let mut gone = false;
            for _ in 0..600 {
                if !c.exists::<_, bool>("t").expect("exists") {
                    gone = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(gone, "a key past its expiry is not served");
            let _: () = c
                .mset(&[("a1", "1"), ("a2", "2"), ("b1", "3")])
                .expect("mset");
            let got: Vec<Option<String>> = c.mget(&["a1", "zz", "a2"]).expect("mget");
            assert_eq!(got, [Some("1".into()), None, Some("2".into())]);
            let mut keys: Vec<String> = c.keys("a*").expect("keys");
            keys.sort();
            assert_eq!(keys, ["a1", "a2"]);
            let mut scanned: Vec<String> = c
                .scan_match::<_, String>("*1")
                .expect("scan")
                .collect::<RedisResult<Vec<String>>>()
                .expect("scan items");
            scanned.sort();
            assert_eq!(scanned, ["a1", "b1"]);
            assert_eq!(c.del::<_, i64>(&["a1", "a2", "zz"]).expect("del"), 2);
            let _: () = c.rename("b1", "b2").expect("rename");
            assert_eq!(c.get::<_, String>("b2").expect("get"), "3");
            assert_eq!(
                redis::cmd("TYPE")
                    .arg("b2")
                    .query::<String>(&mut c)
                    .expect("type"),
                "string"
            );
            let f: f64 = redis::cmd("INCRBYFLOAT")
                .arg("f")
                .arg("1.5")
                .query(&mut c)
                .expect("incrbyfloat");
            assert!((f - 1.5).abs() < 1e-9);
            let dbsize: i64 = redis::cmd("DBSIZE").query(&mut c).expect("dbsize");
            assert_eq!(dbsize, 4, "k n b2 f and nothing else");
            let e: RedisResult<()> = redis::cmd("LPUSH").arg("l").arg("x").query(&mut c);
            let msg = format!("{:?}", e.expect_err("lists are not supported"));
            assert!(msg.contains("strings only"), "{msg}");
            let pong: String = redis::cmd("PING").query(&mut c).expect("connection usable");
            assert_eq!(pong, "PONG");
        }
    }
}

#[test]
fn pipelining_keeps_order_and_databases_are_separate() {
    let s = Server::start("bitcask", &["--sync", "never"]);
    let stats: serde_json::Value = reqwest::blocking::get(format!("http://{}/admin/stats", s.http))
        .expect("stats")
        .json()
        .expect("json");
    assert_eq!(
        stats["resp_listen"],
        s.resp.as_str(),
        "the RESP port is in /admin/stats"
    );
    let mut c = s.client(false);
    let mut p = redis::pipe();
    for i in 0..2000 {
        p.cmd("SET").arg(format!("p{i}")).arg(i).ignore();
        p.cmd("GET").arg(format!("p{i}"));
    }
    let got: Vec<i64> = p.query(&mut c).expect("pipeline");
    assert_eq!(got, (0..2000).collect::<Vec<i64>>());
    let _: () = redis::cmd("SELECT").arg(2).query(&mut c).expect("select");
    assert_eq!(
        c.get::<_, Option<i64>>("p1").expect("get"),
        None,
        "db 2 is empty"
    );
    let _: () = c.set("p1", "db2").expect("set");
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut c).expect("dbsize");
    assert_eq!(dbsize, 1);
    let _: () = redis::cmd("SELECT").arg(0).query(&mut c).expect("select");
    assert_eq!(c.get::<_, i64>("p1").expect("get"), 1, "db 0 untouched");
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut c).expect("dbsize");
    assert_eq!(dbsize, 2000, "db 0 does not count db 2's keys");
}

#[test]
fn concurrent_incr_loses_nothing() {
    for engine in ENGINES {
        let s = Server::start(engine, &["--sync", "never"]);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let mut c = s.client(false);
                std::thread::spawn(move || {
                    for _ in 0..250 {
                        let _: i64 = c.incr("counter", 1).expect("incr");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let mut c = s.client(true);
        assert_eq!(c.get::<_, i64>("counter").expect("get"), 1000, "{engine}");
    }
}

#[test]
fn multi_exec_and_watch() {
    let s = Server::start("memory", &["--sync", "never"]);
    let mut c = s.client(false);
    let (a, b): (String, i64) = redis::pipe()
        .atomic()
        .set("x", "1")
        .ignore()
        .get("x")
        .incr("y", 2)
        .query(&mut c)
        .expect("transaction");
    assert_eq!((a.as_str(), b), ("1", 2));
    // WATCH: a change by another client between WATCH and EXEC aborts the transaction.
    let _: () = redis::cmd("WATCH").arg("x").query(&mut c).expect("watch");
    let mut other = s.client(false);
    let _: () = other.set("x", "2").expect("other writer");
    let _: () = redis::cmd("MULTI").query(&mut c).expect("multi");
    let _: () = redis::cmd("SET")
        .arg("x")
        .arg("3")
        .query(&mut c)
        .expect("queued");
    let r: Value = redis::cmd("EXEC").query(&mut c).expect("exec");
    assert_eq!(r, Value::Nil, "aborted by WATCH");
    assert_eq!(c.get::<_, String>("x").expect("get"), "2");
    // A queued error aborts the whole transaction.
    let _: () = redis::cmd("MULTI").query(&mut c).expect("multi");
    let _: () = redis::cmd("SET")
        .arg("x")
        .arg("4")
        .query(&mut c)
        .expect("queued");
    let bad: RedisResult<()> = redis::cmd("NOSUCHCOMMAND").query(&mut c);
    assert!(bad.is_err());
    let r: RedisResult<Value> = redis::cmd("EXEC").query(&mut c);
    let e = r.expect_err("execabort");
    assert!(
        format!("{e:?} {e}").contains("EXECABORT") || format!("{e}").contains("discarded"),
        "{e:?}"
    );
    assert_eq!(c.get::<_, String>("x").expect("get"), "2");
}

#[test]
fn transactions_are_all_or_nothing_across_kill_9() {
    for engine in ENGINES {
        let s = Server::start(engine, &["--sync", "always"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("moved");
        let mut c = s.client(false);
        let mut acked = 0i64;
        // Each EXEC sets ten keys to the same round number in one engine batch.
        for round in 1..=40i64 {
            let mut p = redis::pipe();
            p.atomic();
            for k in 0..10 {
                p.set(format!("t{k}"), round).ignore();
            }
            let _: () = p.query(&mut c).expect("exec");
            acked = round;
        }
        // One more transaction in flight when the process dies.
        let mut raw = s.raw();
        let mut tx = b"*1\r\n$5\r\nMULTI\r\n".to_vec();
        for k in 0..10 {
            let key = format!("t{k}");
            tx.extend_from_slice(
                format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$2\r\n99\r\n", key.len()).as_bytes(),
            );
        }
        tx.extend_from_slice(b"*1\r\n$4\r\nEXEC\r\n");
        raw.write_all(&tx).expect("send");
        let (old, _keep) = s.kill9();
        std::fs::rename(&old, &data).expect("move data");
        let s = Server::start_in(&data, engine, &["--sync", "always"]);
        let mut c = s.client(true);
        let vals: Vec<i64> = (0..10)
            .map(|k| c.get(format!("t{k}")).expect("get"))
            .collect();
        assert!(
            vals.iter().all(|v| *v == vals[0]),
            "{engine}: a transaction is applied whole or not at all: {vals:?}"
        );
        assert!(
            vals[0] == acked || vals[0] == 99,
            "{engine}: acknowledged transactions survive: {vals:?} (acked {acked})"
        );
    }
}

/// Sends `input` on a fresh connection and reads until the server closes it.
fn hostile(s: &Server, input: &[u8]) -> String {
    let mut raw = s.raw();
    let _ = raw.write_all(input);
    let mut out = Vec::new();
    let _ = raw.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn hostile_input_gets_an_error_and_a_closed_connection() {
    let s = Server::start("bitcask", &["--sync", "never"]);
    for (input, expect) in [
        (&b"*10000000\r\n"[..], "too many arguments"),
        (b"*1\r\n$2147483648\r\n", "argument of 2147483648 bytes"),
        (b"*1\r\n+OK\r\n", "expected '$'"),
        (b"*x\r\n", "invalid multibulk length"),
        (b"*1\r\n$1\r\nabc\r\n", "not terminated"),
        (b"set k \"open\r\n", "unbalanced quotes"),
    ] {
        let got = hostile(&s, input);
        assert!(
            got.starts_with("-ERR Protocol error") && got.contains(expect),
            "{:?} -> {got:?}",
            String::from_utf8_lossy(input)
        );
    }
    // An endless inline line is cut at the cap, not buffered without end.
    let mut raw = s.raw();
    let chunk = vec![b'a'; 16 * 1024];
    let mut refused = false;
    for _ in 0..64 {
        if raw.write_all(&chunk).is_err() {
            refused = true;
            break;
        }
    }
    let mut out = Vec::new();
    let _ = raw.read_to_end(&mut out);
    assert!(
        refused || String::from_utf8_lossy(&out).contains("too big inline request"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    // Inline commands (as nc and redis-benchmark send) work; the server is unharmed.
    let mut raw = s.raw();
    raw.write_all(b"PING\r\nECHO hi\r\nQUIT\r\n").expect("send");
    let mut out = String::new();
    let _ = raw.read_to_string(&mut out);
    assert_eq!(out, "+PONG\r\n$2\r\nhi\r\n+OK\r\n");
}

#[test]
fn tokens_and_roles_apply() {
    let read = "read:rrrrrrrrrrrrrrrrrrrr";
    let admin = "admin:aaaaaaaaaaaaaaaaaaaa";
    let tokens = format!("{read},{admin}");
    let s = Server::start("bitcask", &["--auth-tokens", &tokens]);
    let mut raw = s.raw();
    raw.write_all(
        b"GET k\r\nAUTH nope\r\nAUTH rrrrrrrrrrrrrrrrrrrr\r\nSET k v\r\nGET k\r\nPING\r\n",
    )
    .expect("send");
    let mut reader = BufReader::new(raw);
    let mut line = || {
        let mut l = String::new();
        reader.read_line(&mut l).expect("reply");
        l
    };
    assert!(line().starts_with("-NOAUTH"), "before AUTH");
    assert!(line().starts_with("-WRONGPASS"), "unknown token");
    assert_eq!(line(), "+OK\r\n", "read token");
    assert!(line().starts_with("-NOPERM"), "read role may not write");
    assert_eq!(line(), "$-1\r\n", "read role may read");
    assert_eq!(line(), "+PONG\r\n");
    let c = redis::Client::open(format!(
        "redis://:aaaaaaaaaaaaaaaaaaaa@{}/?protocol=resp3",
        s.resp
    ))
    .expect("client");
    let mut c = c.get_connection().expect("HELLO 3 AUTH");
    let _: () = c.set("k", "v").expect("admin writes");
}

#[test]
fn an_http_request_to_the_resp_port_runs_nothing() {
    let s = Server::start("bitcask", &["--sync", "never"]);
    // What a web page's fetch() to this port sends: the body would be a command.
    let got = hostile(
        &s,
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n\r\nSET pwned 1\r\n",
    );
    assert!(!got.contains("+OK"), "nothing ran: {got:?}");
    let mut c = s.client(false);
    assert_eq!(c.get::<_, Option<String>>("pwned").expect("get"), None);
}

#[test]
fn refusals_inside_multi_abort_and_anonymous_requests_are_small() {
    let tokens = "read:rrrrrrrrrrrrrrrrrrrr,write:wwwwwwwwwwwwwwwwwwww";
    let s = Server::start("memory", &["--auth-tokens", tokens]);
    // Before AUTH, a command may hold at most 10 arguments.
    let mut big = b"*11\r\n".to_vec();
    for _ in 0..11 {
        big.extend_from_slice(b"$1\r\nx\r\n");
    }
    let got = hostile(&s, &big);
    assert!(got.contains("too many arguments"), "{got:?}");
    // A NOPERM at queue time makes EXEC abort: nothing of the transaction is applied.
    let mut raw = s.raw();
    raw.write_all(
        b"AUTH rrrrrrrrrrrrrrrrrrrr\r\nMULTI\r\nSET a 1\r\nEXEC\r\nAUTH wwwwwwwwwwwwwwwwwwww\r\nMULTI\r\nAUTH x\r\nEXEC\r\nGET a\r\n",
    )
    .expect("send");
    let mut reader = BufReader::new(raw);
    let mut line = || {
        let mut l = String::new();
        reader.read_line(&mut l).expect("reply");
        l
    };
    assert_eq!(line(), "+OK\r\n");
    assert_eq!(line(), "+OK\r\n", "MULTI");
    assert!(line().starts_with("-NOPERM"));
    assert!(
        line().starts_with("-EXECABORT"),
        "a refused command aborts EXEC"
    );
    assert_eq!(line(), "+OK\r\n", "AUTH as writer");
    assert_eq!(line(), "+OK\r\n", "MULTI");
    assert!(line().starts_with("-ERR AUTH inside MULTI"));
    assert!(line().starts_with("-EXECABORT"));
    assert_eq!(line(), "$-1\r\n", "a was never set");
}

#[test]
fn scan_cursors_work_across_connections_and_options_follow_redis() {
    let s = Server::start("bitcask", &["--sync", "never"]);
    let mut a = s.client(false);
    for i in 0..30 {
        let _: () = a.set(format!("s{i:02}"), i).expect("set");
    }
    // A client library may continue a scan on another pooled connection.
    let (mut cursor, mut seen): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(7)
        .query(&mut a)
        .expect("scan");
    let mut b = s.client(true);
    while cursor != 0 {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(7)
            .query(&mut b)
            .expect("scan on another connection");
        seen.extend(keys);
        cursor = next;
    }
    seen.sort();
    assert_eq!(
        seen,
        (0..30).map(|i| format!("s{i:02}")).collect::<Vec<_>>()
    );
    // EXPIRE flags as Redis: XX GT together, GT LT refused, unknown options named.
    let _: () = a.set_ex("e", "v", 100).expect("setex");
    let ok: i64 = redis::cmd("EXPIRE")
        .arg("e")
        .arg(200)
        .arg("XX")
        .arg("GT")
        .query(&mut a)
        .expect("xx gt");
    assert_eq!(ok, 1);
    let e: RedisResult<i64> = redis::cmd("EXPIRE")
        .arg("e")
        .arg(5)
        .arg("GT")
        .arg("LT")
        .query(&mut a);
    assert!(format!("{:?}", e.expect_err("gt lt")).contains("GT and LT"));
    let e: RedisResult<i64> = redis::cmd("EXPIRE")
        .arg("e")
        .arg(5)
        .arg("FOO")
        .query(&mut a);
    assert!(format!("{:?}", e.expect_err("foo")).contains("Unsupported option FOO"));
    // INCRBYFLOAT prints as Redis does; integers are read as Redis reads them.
    let _: String = redis::cmd("INCRBYFLOAT")
        .arg("f")
        .arg("0.1")
        .query(&mut a)
        .expect("f");
    let f: String = redis::cmd("INCRBYFLOAT")
        .arg("f")
        .arg("0.2")
        .query(&mut a)
        .expect("f");
    assert_eq!(f, "0.3");
    let e: RedisResult<i64> = redis::cmd("INCRBY").arg("n").arg("+5").query(&mut a);
    assert!(e.is_err(), "+5 is not an integer to Redis");
}

#[test]
fn msetnx_and_rename_are_checked_batches_and_work_inside_multi() {
    for engine in ENGINES {
        let s = Server::start(engine, &["--sync", "never"]);
        let mut c = s.client(false);
        let ok: i64 = redis::cmd("MSETNX")
            .arg("m1")
            .arg("a")
            .arg("m2")
            .arg("b")
            .query(&mut c)
            .expect("msetnx");
        assert_eq!(ok, 1);
        let no: i64 = redis::cmd("MSETNX")
            .arg("m3")
            .arg("c")
            .arg("m1")
            .arg("x")
            .query(&mut c)
            .expect("msetnx");
        assert_eq!(no, 0, "m1 exists: nothing set");
        assert_eq!(c.get::<_, Option<String>>("m3").expect("get"), None);
        let nx: i64 = redis::cmd("RENAMENX")
            .arg("m1")
            .arg("m2")
            .query(&mut c)
            .expect("renamenx");
        assert_eq!(nx, 0, "the target exists");
        // Inside MULTI (a mixed transaction: RENAME reads first) they run under EXEC's lock.
        let (r, m, g): (String, i64, String) = redis::pipe()
            .atomic()
            .cmd("RENAME")
            .arg("m1")
            .arg("r1")
            .cmd("MSETNX")
            .arg("q1")
            .arg("1")
            .get("r1")
            .query(&mut c)
            .expect("transaction with RENAME and MSETNX");
        assert_eq!((r.as_str(), m, g.as_str()), ("OK", 1, "a"), "{engine}");
        assert_eq!(c.get::<_, Option<String>>("m1").expect("get"), None);
    }
}

#[test]
fn pipelined_durable_sets_are_applied_and_authorized_each() {
    let tokens = "read:rrrrrrrrrrrrrrrrrrrr,write:wwwwwwwwwwwwwwwwwwww";
    for engine in ENGINES {
        let s = Server::start(engine, &["--sync", "always", "--auth-tokens", tokens]);
        // sync=always: a run of plain SETs becomes one batch; each still answers and counts.
        let c = redis::Client::open(format!("redis://:wwwwwwwwwwwwwwwwwwww@{}/", s.resp))
            .expect("client");
        let mut c = c.get_connection().expect("connect");
        let mut p = redis::pipe();
        for i in 0..300 {
            p.cmd("SET").arg(format!("d{i}")).arg(i);
        }
        p.cmd("SET").arg("d0").arg("last").arg("XX");
        let replies: Vec<String> = p.query(&mut c).expect("pipeline");
        assert_eq!(replies.len(), 301);
        assert!(replies.iter().all(|r| r == "OK"), "{engine}");
        assert_eq!(c.get::<_, String>("d0").expect("get"), "last");
        assert_eq!(c.get::<_, i64>("d299").expect("get"), 299);
        // A read token gets NOPERM for every SET of the run, and nothing is written.
        let r = redis::Client::open(format!("redis://:rrrrrrrrrrrrrrrrrrrr@{}/", s.resp))
            .expect("client");
        let mut r = r.get_connection().expect("connect");
        let mut p = redis::pipe();
        for i in 0..5 {
            p.cmd("SET").arg(format!("ro{i}")).arg(i);
        }
        let got: RedisResult<Vec<String>> = p.query(&mut r);
        let e = got.expect_err("read role");
        assert!(
            e.code() == Some("NOPERM") || format!("{e:?} {e}").contains("NOPERM"),
            "{e:?}"
        );
        assert_eq!(
            c.get::<_, Option<String>>("ro0").expect("get"),
            None,
            "{engine}"
        );
    }
}

/// A transaction with reads and read-modify-writes is isolated: a plain writer hammering the
/// same key from another connection never lands between its commands. `GET k` then `INCR k`
/// inside one MULTI must answer n and n+1, every time, on both engines; and a transfer
/// between two keys by DECRBY/INCRBY keeps their sum for a transaction that reads both.
#[test]
fn mixed_transactions_are_isolated_from_plain_writers() {
    for engine in ENGINES {
        let s = Server::start(engine, &["--sync", "never"]);
        let mut c = s.client(true);
        let _: () = c.set("a", 1_000_000).expect("seed a");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hammer = {
            let mut c = s.client(false);
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut n = 0u64;
                // At least 200 writes, and on until the transactions are done.
                while n < 200 || !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _: i64 = c.incr("k", 1).expect("incr");
                    let _: () = redis::pipe()
                        .atomic()
                        .decr("a", 1)
                        .ignore()
                        .incr("b", 1)
                        .ignore()
                        .query(&mut c)
                        .expect("transfer");
                    n += 1;
                }
                n
            })
        };
        for i in 0..300 {
            let (seen, after): (Option<i64>, i64) = redis::pipe()
                .atomic()
                .get("k")
                .incr("k", 1)
                .query(&mut c)
                .expect("GET + INCR");
            assert_eq!(
                after,
                seen.unwrap_or(0) + 1,
                "{engine}: a write came between GET and INCR (transaction {i})"
            );
            let (a, b): (Option<i64>, Option<i64>) = redis::pipe()
                .atomic()
                .get("a")
                .get("b")
                .query(&mut c)
                .expect("read both");
            if let (Some(a), Some(b)) = (a, b) {
                assert_eq!(a + b, 1_000_000, "{engine}: a transfer seen half done");
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let writes = hammer.join().expect("hammer");
        assert!(writes >= 200, "{engine}: the other writer ran");
    }
}
