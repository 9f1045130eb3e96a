//! Client subcommands: `get`, `put`, `del`, `list`, `batch`, `merge`, `snapshot`, `stats`,
//! `watch`.
//!
//! Owns their flags and what they print; the HTTP plumbing (URLs, token, error mapping) is in
//! [`conn`]. Output is raw by default (a value's bytes, one key per line, `name: value` lines)
//! and JSON with `--json`. Exit statuses are those of [`crate::cli::exit`]: 0 done, 1 not
//! found, 2 usage, 3 conflict, 4 refused, 5 server error, 6 unreachable, 7 local error.
//!
//! Keys are taken from the command line as raw bytes (on Unix an argument may hold any byte but
//! NUL), so `hoardhaven get $'\xff'` reads the key 0xFF.

pub mod cluster;
pub mod conn;
mod sniff;
pub mod tls;
pub mod wire;

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use hyper::Method;
use hyper::header::{CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use serde_json::{Value as Json, json};

use crate::cli::exit::{self, Exit};
use conn::{Conn, ConnArgs, body, encode_key, failure};

/// The client subcommands (flattened into the top-level command list).
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Print a key's value (exit 1 when absent)
    Get(GetArgs),
    /// Store a value: from the argument, --file, or stdin
    Put(PutArgs),
    /// Delete a key (exit 1 when absent)
    Del(DelArgs),
    /// List keys, optionally under a prefix
    List(ListArgs),
    /// Apply an atomic batch given as JSON ({"ops":[...]}) from a file or stdin
    Batch(BatchArgs),
    /// Start a merge (bitcask) or log rewrite (memory) on the server
    Merge(JobArgs),
    /// Take a snapshot on the server
    Snapshot(JobArgs),
    /// Print the server's statistics
    Stats(StatsArgs),
    /// Cluster membership: status, init, add, promote, remove (docs/cluster.md)
    Cluster(cluster::ClusterArgs),
    /// Follow changes under a prefix, one line per change: `VERSION EVENT KEY [VALUE]`
    Watch(WatchArgs),
}

/// Flags of `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Only keys starting with these bytes (default: every key)
    #[arg(default_value = "")]
    prefix: OsString,
    /// Start after this version (exclusive); default: from now on
    #[arg(long)]
    since: Option<u64>,
    /// Print values too (text, or `base64:...` when not UTF-8)
    #[arg(long)]
    values: bool,
    /// Also print progress events (`VERSION progress`)
    #[arg(long)]
    progress: bool,
}

/// Flags of `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The key (any bytes)
    key: OsString,
}

/// Flags of `put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The key (any bytes)
    key: OsString,
    /// The value; omit it (and --file) to read stdin
    #[arg(conflicts_with = "file")]
    value: Option<OsString>,
    /// Read the value from this file (`-` = stdin)
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// Seconds until the value expires
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    ttl: Option<u64>,
    /// Write only if the current version has this ETag (compare-and-set)
    #[arg(long, conflicts_with = "if_absent")]
    if_match: Option<String>,
    /// Write only if the key is absent (create only)
    #[arg(long)]
    if_absent: bool,
}

/// Flags of `del`.
#[derive(Debug, Args)]
pub struct DelArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The key (any bytes)
    key: OsString,
    /// Delete only if the current version has this ETag
    #[arg(long)]
    if_match: Option<String>,
}

/// Flags of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Only keys starting with these bytes
    #[arg(long, default_value = "")]
    prefix: OsString,
    /// Only keys at or after these bytes
    #[arg(long)]
    start: Option<OsString>,
    /// Only keys before these bytes (exclusive)
    #[arg(long)]
    end: Option<OsString>,
    /// Stop after this many keys, at least 1 (default: all)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
}

/// Flags of `batch`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// JSON file with {"ops":[...]}; `-` or nothing = stdin
    file: Option<PathBuf>,
}

/// Flags of `merge` and `snapshot`.
#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Run to the end and print the result (no answer timeout)
    #[arg(long, conflicts_with = "status")]
    wait: bool,
    /// Only show the state of the current or last run
    #[arg(long)]
    status: bool,
}

/// Flags of `stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    conn: ConnArgs,
}

/// Runs a client subcommand.
///
/// # Errors
/// An [`Exit`] carrying the status to end with.
pub fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Get(a) => get(&a),
        ClientCommand::Put(a) => put(&a),
        ClientCommand::Del(a) => del(&a),
        ClientCommand::List(a) => list(&a),
        ClientCommand::Batch(a) => batch(&a),
        ClientCommand::Merge(a) => job(&a, "merge"),
        ClientCommand::Snapshot(a) => job(&a, "snapshot"),
        ClientCommand::Stats(a) => stats(&a),
        ClientCommand::Cluster(a) => cluster::run(&a),
        ClientCommand::Watch(a) => watch(&a),
    }
    .map_err(anyhow::Error::new)
}

fn bytes_of(s: &OsStr) -> &[u8] {
    s.as_bytes()
}

/// Writes to stdout; a closed pipe (`| head`) stops the command quietly with status 0.
pub(crate) fn out(bytes: &[u8]) -> Result<(), Exit> {
    exit::stdout(bytes)
}

pub(crate) fn out_json(v: &Json) -> Result<(), Exit> {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    out(s.as_bytes())
}

/// `{"key": ..}` or `{"key_base64": ..}`, and the same for values.
fn text_or_b64(name: &str, bytes: &[u8]) -> (String, Json) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (name.to_owned(), Json::from(s)),
        Err(_) => (format!("{name}_base64"), Json::from(STANDARD.encode(bytes))),
    }
}

fn get(a: &GetArgs) -> Result<(), Exit> {
    let c = Conn::new(&a.conn, false)?;
    let key = bytes_of(&a.key);
    let resp = c.send(c.request(Method::GET, &c.key_url(key)))?;
    if !resp.status().is_success() {
        return Err(not_found_named(failure(resp), key));
    }
    let etag = header(&resp, ETAG.as_str());
    let ttl = header(&resp, "x-ttl").and_then(|t| t.parse::<u64>().ok());
    let value = body(resp);
    if !a.conn.json {
        return out(&value);
    }
    let mut doc = serde_json::Map::new();
    let (k, v) = text_or_b64("key", key);
    doc.insert(k, v);
    let (k, v) = text_or_b64("value", &value);
    doc.insert(k, v);
    doc.insert("etag".into(), etag.map_or(Json::Null, Json::from));
    doc.insert("ttl".into(), ttl.map_or(Json::Null, Json::from));
    out_json(&Json::Object(doc))
}

fn header(resp: &wire::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A 404 for a key: "not found: KEY" (exit 1) rather than the server's wording.
fn not_found_named(e: Exit, key: &[u8]) -> Exit {
    if e.code == exit::NOT_FOUND {
        Exit::new(
            exit::NOT_FOUND,
            format!("not found: {}", String::from_utf8_lossy(key)),
        )
    } else {
        e
    }
}

fn read_input(file: Option<&PathBuf>) -> Result<Vec<u8>, Exit> {
    match file {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::read(p).map_err(|e| Exit::local(format!("reading {}: {e}", p.display())))
        }
        _ => {
            let mut v = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut v)
                .map_err(|e| Exit::local(format!("reading stdin: {e}")))?;
            Ok(v)
        }
    }
}

/// An ETag as the server wants it: quoted.
fn quoted(etag: &str) -> String {
    if etag.starts_with('"') || etag.starts_with("W/") || etag == "*" {
        etag.to_owned()
    } else {
        format!("\"{etag}\"")
    }
}

fn put(a: &PutArgs) -> Result<(), Exit> {
    let c = Conn::new(&a.conn, false)?;
    let key = bytes_of(&a.key);
    let value = match &a.value {
        Some(v) => bytes_of(v).to_vec(),
        None => read_input(a.file.as_ref())?,
    };
    let mut url = c.key_url(key);
    if let Some(t) = a.ttl {
        url.push_str(&format!("?ttl={t}"));
    }
    let mut req = c
        .request(Method::PUT, &url)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(value);
    if let Some(m) = &a.if_match {
        req = req.header(IF_MATCH, quoted(m));
    }
    if a.if_absent {
        req = req.header(IF_NONE_MATCH, "*");
    }
    let resp = c.send(req)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(failure(resp));
    }
    if a.conn.json {
        let (k, v) = text_or_b64("key", key);
        let mut doc = serde_json::Map::new();
        doc.insert(k, v);
        doc.insert("created".into(), Json::from(status.as_u16() == 201));
        doc.insert(
            "etag".into(),
            header(&resp, ETAG.as_str()).map_or(Json::Null, Json::from),
        );
        return out_json(&Json::Object(doc));
    }
    Ok(())
}

fn del(a: &DelArgs) -> Result<(), Exit> {
    let c = Conn::new(&a.conn, false)?;
    let key = bytes_of(&a.key);
    let mut req = c.request(Method::DELETE, &c.key_url(key));
    if let Some(m) = &a.if_match {
        req = req.header(IF_MATCH, quoted(m));
    }
    let resp = c.send(req)?;
    if !resp.status().is_success() {
        return Err(not_found_named(failure(resp), key));
    }
    if a.conn.json {
        let (k, v) = text_or_b64("key", key);
        return out_json(&json!({ k: v, "deleted": true }));
    }
    Ok(())
}

fn list(a: &ListArgs) -> Result<(), Exit> {
    let c = Conn::new(&a.conn, false)?;
    let mut range = format!("prefix={}", encode_key(bytes_of(&a.prefix)));
    for (name, bound) in [("start", &a.start), ("end", &a.end)] {
        if let Some(b) = bound {
            range.push_str(&format!("&{name}={}", encode_key(bytes_of(b))));
        }
    }
    let mut left = a.limit.unwrap_or(u64::MAX);
    let mut cursor: Option<String> = None;
    let mut all = Vec::new();
    while left > 0 {
        let page = left.min(1000);
        let mut url = c.url(&format!("/kv?{range}&limit={page}"));
        if let Some(cur) = &cursor {
            url.push_str(&format!("&cursor={}", encode_key(cur.as_bytes())));
        }
        let resp = c.send(c.request(Method::GET, &url))?;
        if !resp.status().is_success() {
            return Err(failure(resp));
        }
        let doc = conn::json(resp)?;
        let keys = doc["keys"].as_array().cloned().unwrap_or_default();
        left = left.saturating_sub(keys.len() as u64);
        for k in keys {
            if a.conn.json {
                all.push(k);
            } else {
                let mut line = key_bytes(&k)?;
                line.push(b'\n');
                out(&line)?;
            }
        }
        cursor = doc["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    if a.conn.json {
        return out_json(&json!({ "keys": all }));
    }
    Ok(())
}

/// `watch`: `GET /watch` as Server-Sent Events, printed one line per event (JSON lines with
/// `--json`). Ends with status 0 when the server ends the stream cleanly (shutdown), 5 after
/// an `error` event (slow consumer, history gone: the message says where to resume).
fn watch(a: &WatchArgs) -> Result<(), Exit> {
    let c = Conn::new(&a.conn, true)?;
    let mut url = c.url(&format!(
        "/watch?prefix={}&values={}",
        encode_key(bytes_of(&a.prefix)),
        a.values
    ));
    if let Some(v) = a.since {
        url.push_str(&format!("&since={v}"));
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut failed: Option<Exit> = None;
    let mut printed: Result<(), Exit> = Ok(());
    let json = a.conn.json;
    let resp = c.stream(c.request(Method::GET, &url), |chunk| {
        pending.extend_from_slice(chunk);
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = pending.drain(..end + 2).collect();
            let (event, data) = sse_fields(&block);
            let Some(data) = data else { continue };
            if event == "error" {
                let detail = data["detail"]
                    .as_str()
                    .unwrap_or("the server ended the watch");
                failed = Some(Exit::new(exit::SERVER, detail.to_owned()));
                return false;
            }
            if event == "progress" && !a.progress {
                continue;
            }
            printed = if json {
                let mut doc = data.clone();
                if let Some(o) = doc.as_object_mut() {
                    o.insert("event".into(), Json::from(event.clone()));
                }
                let mut line = serde_json::to_vec(&doc).unwrap_or_default();
                line.push(b'\n');
                out(&line)
            } else {
                out(&watch_line(&event, &data))
            };
            if printed.is_err() {
                return false;
            }
        }
        true
    })?;
    if !resp.status().is_success() {
        return Err(failure(resp));
    }
    printed?;
    failed.map_or(Ok(()), Err)
}

/// The `event:` name and the JSON `data:` of one SSE block.
fn sse_fields(block: &[u8]) -> (String, Option<Json>) {
    let text = String::from_utf8_lossy(block);
    let mut event = "message".to_owned();
    let mut data = String::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    (event, serde_json::from_str(&data).ok())
}

/// `VERSION EVENT KEY [VALUE]` (a non-UTF-8 key or value as `base64:...`).
fn watch_line(event: &str, d: &Json) -> Vec<u8> {
    let version = d["version"].as_u64().unwrap_or(0);
    let mut line = format!("{version} {event}");
    if let Some(k) = d["key"].as_str() {
        line.push_str(&format!(" {k}"));
    } else if let Some(k) = d["key_base64"].as_str() {
        line.push_str(&format!(" base64:{k}"));
    }
    if let Some(v) = d["value"].as_str() {
        line.push_str(&format!(" {v}"));
    } else if let Some(v) = d["value_base64"].as_str() {
        line.push_str(&format!(" base64:{v}"));
    } else if d["value_omitted"].as_bool() == Some(true) {
        line.push_str(" (value omitted)");
    }
    line.push('\n');
    line.into_bytes()
}

/// The bytes of a `{"key": ..}` / `{"key_base64": ..}` object.
fn key_bytes(k: &Json) -> Result<Vec<u8>, Exit> {
    if let Some(s) = k["key"].as_str() {
        return Ok(s.as_bytes().to_vec());
    }
    k["key_base64"]
        .as_str()
        .and_then(|b| STANDARD.decode(b).ok())
        .ok_or_else(|| Exit::new(exit::SERVER, format!("unexpected key in listing: {k}")))
}

fn batch(a: &BatchArgs) -> Result<(), Exit> {
    let c = Conn::new(&a.conn, false)?;
    let doc = read_input(a.file.as_ref())?;
    let ops = serde_json::from_slice::<Json>(&doc)
        .map_err(|e| Exit::local(format!("the batch is not JSON: {e}")))?;
    let n = ops["ops"].as_array().map_or(0, Vec::len);
    let req = c
        .request(Method::POST, &c.url("/batch"))
        .header(CONTENT_TYPE, "application/json")
        .body(doc);
    let resp = c.send(req)?;
    if !resp.status().is_success() {
        return Err(failure(resp));
    }
    let result = conn::json(resp)?;
    if a.conn.json {
        return out_json(&result);
    }
    out(format!("applied {n} operations\n").as_bytes())
}

fn job(a: &JobArgs, what: &str) -> Result<(), Exit> {
    let c = Conn::new(&a.conn, a.wait)?;
    let path = format!("/admin/{what}");
    let req = if a.status {
        c.request(Method::GET, &c.url(&path))
    } else if a.wait {
        c.request(Method::POST, &c.url(&format!("{path}?wait=true")))
    } else {
        c.request(Method::POST, &c.url(&path))
    };
    let resp = c.send(req)?;
    if !resp.status().is_success() {
        return Err(failure(resp));
    }
    let doc = conn::json(resp)?;
    if a.conn.json {
        return out_json(&doc);
    }
    out(job_line(what, &doc).as_bytes())
}

/// One line about a job's state: `merge done: 3 files, 1048576 bytes reclaimed in 0.120 s`.
fn job_line(what: &str, doc: &Json) -> String {
    let state = doc["state"].as_str().unwrap_or("unknown");
    let r = &doc["report"];
    let mut line = format!("{what} {state}");
    if state == "done" && r.is_object() {
        let secs = r["duration_seconds"].as_f64().unwrap_or(0.0);
        if what == "merge" {
            line.push_str(&format!(
                ": {} files merged, {} bytes reclaimed, {} records kept in {secs:.3} s",
                r["files_merged"], r["bytes_reclaimed"], r["records_kept"]
            ));
        } else {
            line.push_str(&format!(
                ": {} keys, {} bytes at {} in {secs:.3} s",
                r["keys"],
                r["bytes"],
                r["path"].as_str().unwrap_or("?")
            ));
        }
    } else if let Some(p) = doc["progress"].as_object() {
        line.push_str(&format!(
            ": {} of {} bytes",
            p.get("done").unwrap_or(&Json::Null),
            p.get("total").unwrap_or(&Json::Null)
        ));
    } else if let Some(e) = doc["error"].as_str() {
        line.push_str(&format!(": {e}"));
    }
    line.push('\n');
    line
}

fn stats(a: &StatsArgs) -> Result<(), Exit> {
    let c = Conn::new(&a.conn, false)?;
    let resp = c.send(c.request(Method::GET, &c.url("/admin/stats")))?;
    if !resp.status().is_success() {
        return Err(failure(resp));
    }
    let doc = conn::json(resp)?;
    if a.conn.json {
        return out_json(&doc);
    }
    out(stats_lines(&doc).as_bytes())
}

/// `name: value` lines for the scalar fields of a stats document, then the jobs.
pub fn stats_lines(doc: &Json) -> String {
    let mut s = String::new();
    if let Some(m) = doc.as_object() {
        for (k, v) in m {
            match v {
                Json::String(t) => s.push_str(&format!("{k}: {t}\n")),
                Json::Number(_) | Json::Bool(_) => s.push_str(&format!("{k}: {v}\n")),
                _ => {}
            }
        }
        for job in ["merge", "snapshot"] {
            if m.contains_key(job) {
                s.push_str(&job_line(job, &doc[job]));
            }
        }
        if let Some(files) = doc["files"].as_array() {
            for f in files {
                s.push_str(&format!(
                    "file {}: {} bytes, {} live, {} dead{}\n",
                    f["name"].as_str().unwrap_or("?"),
                    f["total_bytes"],
                    f["live_bytes"],
                    f["dead_bytes"],
                    if f["active"].as_bool() == Some(true) {
                        " (active)"
                    } else {
                        ""
                    }
                ));
            }
        }
    }
    s
}
