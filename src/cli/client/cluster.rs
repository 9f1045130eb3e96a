//! `hoardhaven cluster init|status|add|promote|remove`: the `/cluster` routes from the shell.
//!
//! Owns the flags of the cluster subcommands and what they print (the JSON document with
//! `--json`, short lines otherwise). Any node accepts them; it forwards changes to the leader.

use clap::{Args, Subcommand};
use hyper::Method;
use hyper::header::CONTENT_TYPE;
use serde_json::{Value as Json, json};

use super::conn::{self, Conn, ConnArgs, failure};
use super::{out, out_json};
use crate::cli::exit::Exit;

/// Flags of `cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    cmd: ClusterCommand,
}

/// The cluster subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Leader, term, voters, learners, log indexes and lag per node
    Status(Plain),
    /// Make the server a one-voter cluster (it must run with --node-id)
    Init(Plain),
    /// Add a learner: its id, peer URL and API URL (returns once it caught up)
    Add(AddArgs),
    /// Make a learner a voter
    Promote(IdArgs),
    /// Remove a voter or learner (the last voter cannot be removed)
    Remove(IdArgs),
}

/// Only the connection flags.
#[derive(Debug, Args)]
pub struct Plain {
    #[command(flatten)]
    conn: ConnArgs,
}

/// Flags of `cluster add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The new node's id
    node_id: u64,
    /// Its peer URL (where its --peer-listen is reached)
    peer_url: String,
    /// Its client API URL
    api_url: String,
}

/// Flags of `cluster promote|remove`.
#[derive(Debug, Args)]
pub struct IdArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// The node id
    node_id: u64,
}

fn call(a: &ConnArgs, method: Method, path: &str, body: Option<Json>) -> Result<Json, Exit> {
    // Membership changes wait for the cluster: no client-side timeout shorter than theirs.
    let c = Conn::new(a, true)?;
    let mut req = c.request(method, &c.url(path));
    if let Some(b) = body {
        req = req
            .header(CONTENT_TYPE, "application/json")
            .body(b.to_string().into_bytes());
    }
    let resp = c.send(req)?;
    if !resp.status().is_success() {
        return Err(failure(resp));
    }
    conn::json(resp)
}

/// Runs a cluster subcommand.
///
/// # Errors
/// The server's refusal or an unreachable server, as an exit status.
pub fn run(a: &ClusterArgs) -> Result<(), Exit> {
    let (conn, doc) = match &a.cmd {
        ClusterCommand::Status(p) => (&p.conn, call(&p.conn, Method::GET, "/cluster", None)?),
        ClusterCommand::Init(p) => (&p.conn, call(&p.conn, Method::POST, "/cluster/init", None)?),
        ClusterCommand::Add(x) => (
            &x.conn,
            call(
                &x.conn,
                Method::POST,
                "/cluster/learners",
                Some(json!({"node_id": x.node_id, "peer_url": x.peer_url, "api_url": x.api_url})),
            )?,
        ),
        ClusterCommand::Promote(x) => (
            &x.conn,
            call(
                &x.conn,
                Method::POST,
                &format!("/cluster/voters/{}", x.node_id),
                None,
            )?,
        ),
        ClusterCommand::Remove(x) => (
            &x.conn,
            call(
                &x.conn,
                Method::DELETE,
                &format!("/cluster/members/{}", x.node_id),
                None,
            )?,
        ),
    };
    if conn.json {
        return out_json(&doc);
    }
    if let Some(r) = doc["result"].as_str() {
        return out(format!("{r}\n").as_bytes());
    }
    out(status_lines(&doc).as_bytes())
}

/// The status document as lines.
pub fn status_lines(doc: &Json) -> String {
    let mut s = String::new();
    for k in [
        "node_id",
        "state",
        "term",
        "last_log_index",
        "commit_index",
        "applied_index",
        "snapshot_index",
    ] {
        s.push_str(&format!("{k}: {}\n", doc[k]));
    }
    s.push_str(&format!(
        "leader: {}\n",
        doc["leader"]["node_id"]
            .as_u64()
            .map_or("none".into(), |i| format!(
                "{i} {}",
                doc["leader"]["api_url"].as_str().unwrap_or("")
            ))
    ));
    for (role, list) in [("voter", &doc["voters"]), ("learner", &doc["learners"])] {
        for m in list.as_array().into_iter().flatten() {
            s.push_str(&format!(
                "{role} {} peer={} api={} lag={}\n",
                m["node_id"],
                m["peer_url"].as_str().unwrap_or(""),
                m["api_url"].as_str().unwrap_or(""),
                m["lag"]
            ));
        }
    }
    s
}
