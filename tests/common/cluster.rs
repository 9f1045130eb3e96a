//! Raft cluster nodes for the cluster and consistency suites: free peer ports and the flags
//! that start, join and restart a node.

use std::path::Path;

use super::server::Server;

/// The cluster secret every test node shares.
pub const SECRET: &str = "test-cluster-secret";

/// A free loopback port for a peer listener, below the kernel's ephemeral range (32768 and
/// up on Linux): a port the kernel handed out for port 0 would be free only until the next
/// `bind(0)` or outgoing connection of a parallel test took it, before the node listened on
/// it (seen as "Address already in use"). Candidates are spread by a per-call hash so that
/// parallel tests rarely probe the same one, and a port is never handed out twice in one
/// test process: a probe finds a port free while the node given it earlier is still starting
/// (seen in CI: two tests of one binary drew the same port, and the second node's peer
/// listener failed with "Address already in use"), or while that node is down between a kill
/// and its restart on the same port.
pub fn free_port() -> u16 {
    use std::collections::BTreeSet;
    use std::hash::{BuildHasher, RandomState};
    use std::sync::{Mutex, PoisonError};
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let seed = RandomState::new();
    for attempt in 0u32..10_000 {
        let port = 20_000 + (seed.hash_one(attempt) % 12_000) as u16;
        if !handed.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

/// How a node enters the cluster on its first start.
#[derive(Clone, Debug)]
pub enum Entry {
    /// `--cluster-init`: the first node.
    Init,
    /// `--join URL`: through this member's peer URL.
    Join(String),
    /// Neither: a restart over existing data.
    Restart,
}

/// The flags of node `id` listening for peers on `peer`, reached by the others at `peer_url`
/// (its own listener, or a proxy in front of it), entering as `entry`.
pub fn node_flags(id: u64, peer: u16, peer_url: Option<&str>, entry: &Entry) -> Vec<String> {
    let mut f = vec![
        "--node-id".to_string(),
        id.to_string(),
        "--peer-listen".into(),
        format!("127.0.0.1:{peer}"),
        "--raft-heartbeat-ms".into(),
        "100".into(),
        "--cluster-secret".into(),
        SECRET.into(),
    ];
    if let Some(u) = peer_url {
        f.extend(["--peer-url".to_string(), u.to_owned()]);
    }
    match entry {
        Entry::Init => f.push("--cluster-init".into()),
        Entry::Join(url) => f.extend(["--join".to_string(), url.clone()]),
        Entry::Restart => {}
    }
    f
}

/// Starts node `id` (bitcask) over `data` with [`node_flags`] and `extra` flags.
pub async fn start_node(
    data: &Path,
    id: u64,
    peer: u16,
    peer_url: Option<&str>,
    entry: &Entry,
    extra: &[&str],
) -> Server {
    let mut flags = node_flags(id, peer, peer_url, entry);
    with_extra(&mut flags, extra);
    let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    Server::start_in(data, "bitcask", &refs).await
}

/// Adds `extra` flags to `flags`; a flag already in `flags` with a value (such as
/// `--raft-heartbeat-ms`) takes the value that follows it in `extra` instead.
pub fn with_extra(flags: &mut Vec<String>, extra: &[&str]) {
    let mut i = 0;
    while i < extra.len() {
        let at = flags.iter().position(|f| f == extra[i]);
        match (at, extra.get(i + 1)) {
            (Some(at), Some(v)) if at + 1 < flags.len() && !v.starts_with("--") => {
                flags[at + 1] = (*v).to_owned();
                i += 2;
            }
            _ => {
                flags.push(extra[i].to_owned());
                i += 1;
            }
        }
    }
}
