//! TLS between peers: three real `hoardhaven` nodes with certificates from one test CA serve
//! their peer listeners over TLS when the server has TLS; a write through a follower (forwarded
//! to the leader) and a linearizable read through another follower (read index asked of the
//! leader) both cross it. A node that does not trust the cluster's CA cannot join and exits
//! saying why; a clear-text call to a TLS peer listener reaches no Raft code.
//!
//! Every request to the client API goes through the `hoardhaven` CLI (`--ca-cert`), as a user's
//! would: the test's HTTP client has no TLS.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{Entry, free_port, node_flags};
use common::server::{STEP_TIMEOUT, binary, serve_command, wait_port_file};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA that signs node certificates for `127.0.0.1` and `localhost`.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("ca");
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, cert.pem()).expect("write ca");
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate and key for a node, as PEM files in `dir`.
    fn node_cert(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("params")
            .signed_by(&key, &self.issuer)
            .expect("node cert");
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write cert");
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        (c, k)
    }
}

/// A node process (killed on drop), its client URL and its stderr log.
struct Node {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts node `id` with TLS (`cert`, `key`), trusting `peer_ca` for its peers, its peer
/// listener on `peer`, entering as `entry`; returns once its port file names its address.
fn start(dir: &Path, id: u64, peer: u16, entry: &Entry, tls: (&Path, &Path, &Path)) -> Node {
    let (cert, key, peer_ca) = tls;
    let scratch = dir.join(format!("n{id}"));
    std::fs::create_dir_all(&scratch).expect("scratch");
    let port_file = scratch.join("port");
    let log = scratch.join("stderr.log");
    let mut cmd = serve_command("bitcask", &scratch.join("data"), &port_file);
    cmd.args(node_flags(
        id,
        peer,
        Some(&format!("https://127.0.0.1:{peer}")),
        entry,
    ))
    .arg("--tls-cert-file")
    .arg(cert)
    .arg("--tls-key-file")
    .arg(key)
    .arg("--peer-ca-file")
    .arg(peer_ca)
    .stderr(std::fs::File::create(&log).expect("log"));
    let mut child = cmd.spawn().expect("spawn node");
    let addr = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
        .block_on(wait_port_file(&mut child, &port_file, &log));
    Node {
        child,
        url: format!("https://127.0.0.1:{}", addr.port()),
        log,
    }
}

/// Runs the CLI against `node` trusting `ca`: exit code, stdout, stderr.
fn cli(node: &Node, ca: &Path, args: &[&str]) -> (i32, String, String) {
    let rest = if args[0] == "cluster" { 2 } else { 1 };
    let out = Command::new(binary())
        .args(&args[..rest])
        .args(["--url", &node.url])
        .arg("--ca-cert")
        .arg(ca)
        .args(&args[rest..])
        .env_remove("RUST_LOG")
        .env_remove("HOARDHAVEN_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run the CLI");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `cluster status` of `node` as JSON, once it answers.
fn status(node: &Node, ca: &Path) -> Option<serde_json::Value> {
    let (code, out, _) = cli(node, ca, &["cluster", "status", "--json"]);
    if code != 0 {
        return None;
    }
    serde_json::from_str(&out).ok()
}

/// Polls `done` on `node`'s status until it holds (bounded).
fn wait_status(node: &Node, ca: &Path, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        if let Some(s) = status(node, ca)
            && done(&s)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen within {STEP_TIMEOUT:?}: {:?}\n{}",
            cli(node, ca, &["cluster", "status", "--json"]),
            node.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn voters(s: &serde_json::Value) -> usize {
    s["voters"].as_array().map_or(0, Vec::len)
}

#[test]
fn peers_speak_tls_and_refuse_a_node_that_does_not_trust_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "cluster");
    let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for (i, &peer) in peers.iter().enumerate() {
        let id = i as u64 + 1;
        let (cert, key) = ca.node_cert(dir.path(), &format!("node{id}"));
        let entry = match i {
            0 => Entry::Init,
            _ => Entry::Join(format!("https://127.0.0.1:{}", peers[0])),
        };
        let node = start(dir.path(), id, peer, &entry, (&cert, &key, &ca.pem));
        if i == 0 {
            wait_status(&node, &ca.pem, "node 1 leads", |s| s["state"] == "leader");
        }
        nodes.push(node);
    }
    wait_status(&nodes[0], &ca.pem, "three voters", |s| voters(s) == 3);

    // Node 1 leads (the others joined it); a write through node 3 is forwarded to it over
    // TLS, and a linearizable read through node 2 asks it for the read index over TLS.
    let (code, out, err) = cli(&nodes[2], &ca.pem, &["put", "tls-key", "over-tls"]);
    assert_eq!(code, 0, "put through a follower: {out}{err}");
    let (code, out, err) = cli(&nodes[1], &ca.pem, &["get", "tls-key"]);
    assert_eq!(code, 0, "linearizable get through a follower: {err}");
    assert_eq!(out, "over-tls");
    for n in &nodes {
        assert!(
            !n.stderr().contains("TLS failed"),
            "a peer call failed its TLS handshake:\n{}",
            n.stderr()
        );
    }

    // A clear-text call to a TLS peer listener gets no Raft answer.
    let plain = reqwest::blocking::Client::builder()
        .timeout(STEP_TIMEOUT)
        .build()
        .expect("client");
    let r = plain
        .post(format!("http://127.0.0.1:{}/raft/vote", peers[0]))
        .header(
            "authorization",
            format!("Bearer {}", common::cluster::SECRET),
        )
        .body(Vec::new())
        .send();
    assert!(
        r.as_ref().map_or(true, |r| r.status() != 200),
        "a clear-text peer call was answered: {:?}",
        r.map(|r| r.status())
    );

    // A node trusting another CA refuses node 1's certificate: it exits non-zero saying so,
    // and the cluster is unchanged.
    let rogue_ca = Ca::new(dir.path(), "rogue");
    let (cert, key) = rogue_ca.node_cert(dir.path(), "node4");
    let mut rogue = start(
        dir.path(),
        4,
        free_port(),
        &Entry::Join(format!("https://127.0.0.1:{}", peers[0])),
        (&cert, &key, &rogue_ca.pem),
    );
    let deadline = Instant::now() + STEP_TIMEOUT;
    let exit = loop {
        if let Some(st) = rogue.child.try_wait().expect("wait") {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "a node that does not trust the cluster's CA is still running:\n{}",
            rogue.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!exit.success(), "{}", rogue.stderr());
    let said = rogue.stderr();
    assert!(
        said.contains("TLS failed") && said.contains("certificate"),
        "{said}"
    );
    let s = status(&nodes[0], &ca.pem).expect("status");
    assert_eq!(voters(&s), 3, "{s}");
    assert!(s["learners"].as_array().is_none_or(Vec::is_empty), "{s}");
    let (code, out, _) = cli(&nodes[0], &ca.pem, &["get", "tls-key"]);
    assert_eq!((code, out.as_str()), (0, "over-tls"));
}
