//! A Raft cluster of real `hoardhaven` processes on loopback: writes through any node read
//! back linearizably through every node with the same ETag; the leader killed with SIGKILL
//! under write load loses no acknowledged write; without a quorum writes and linearizable
//! reads answer 503 while stale reads work; concurrent linearizable reads share one
//! leadership confirmation; bad cluster input is refused clearly.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::{self, Entry, free_port, node_flags};
use common::server::{STEP_TIMEOUT, Server, client, serve_command, wait_exit};

async fn start_node(data: &std::path::Path, id: u64, peer: u16, first: Option<u16>) -> Server {
    let entry = match first {
        None => Entry::Init,
        Some(p) => Entry::Join(format!("http://127.0.0.1:{p}")),
    };
    cluster::start_node(data, id, peer, None, &entry, &[]).await
}

async fn restart_node(data: &std::path::Path, id: u64, peer: u16) -> Server {
    cluster::start_node(data, id, peer, None, &Entry::Restart, &[]).await
}

/// Three nodes; their data directories live in the returned temporary directory (`n1`..`n3`)
/// so that a node killed by dropping its `Server` keeps its data.
async fn three() -> (Vec<Server>, Vec<u16>, tempfile::TempDir) {
    three_with(&[]).await
}

/// [`three`] with `extra` flags on every node.
async fn three_with(extra: &[&str]) -> (Vec<Server>, Vec<u16>, tempfile::TempDir) {
    let data = tempfile::tempdir().expect("tmp");
    let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let dir = |i: usize| data.path().join(format!("n{i}"));
    let first = cluster::start_node(&dir(1), 1, peers[0], None, &Entry::Init, extra).await;
    // Nodes 2 and 3 join at the same time, as nodes started together do: one membership change
    // waits for the other (it went red when the second join was refused as a conflict).
    let join = Entry::Join(format!("http://127.0.0.1:{}", peers[0]));
    let (d2, d3) = (dir(2), dir(3));
    let (second, third) = tokio::join!(
        cluster::start_node(&d2, 2, peers[1], None, &join, extra),
        cluster::start_node(&d3, 3, peers[2], None, &join, extra),
    );
    (vec![first, second, third], peers, data)
}

async fn status(s: &Server) -> serde_json::Value {
    s.client
        .get(s.url("/cluster"))
        .send()
        .await
        .expect("GET /cluster")
        .json()
        .await
        .expect("status json")
}

/// The index in `nodes` of the node every live node agrees leads (bounded wait).
async fn leader_of(nodes: &[Option<&Server>]) -> usize {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        for (i, n) in nodes.iter().enumerate() {
            if let Some(n) = n
                && let Ok(r) = n.client.get(n.url("/cluster")).send().await
                && let Ok(v) = r.json::<serde_json::Value>().await
                && v["state"] == "leader"
            {
                return i;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_through_any_node_read_linearizably_everywhere() {
    let (nodes, _, _data) = three().await;
    let st = status(&nodes[0]).await;
    assert_eq!(st["voters"].as_array().expect("voters").len(), 3, "{st}");
    for (i, n) in nodes.iter().enumerate() {
        let key = format!("k{i}");
        let r = n
            .client
            .put(n.url(&format!("/kv/{key}")))
            .body(format!("v{i}"))
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), 201, "put through node {i}");
        assert!(r.headers().contains_key("x-hoardhaven-leader"));
        let etag = r.headers()["etag"].to_str().expect("etag").to_string();
        // Read right after the ack, through every node: linearizable by default.
        for (j, m) in nodes.iter().enumerate() {
            let g = m
                .client
                .get(m.url(&format!("/kv/{key}")))
                .send()
                .await
                .expect("get");
            assert_eq!(g.status(), 200, "read of {key} through node {j}");
            assert_eq!(
                g.headers()["etag"].to_str().expect("etag"),
                etag,
                "same ETag on node {j}"
            );
            assert_eq!(g.text().await.expect("body"), format!("v{i}"));
        }
    }
    // If-Match keeps its meaning across nodes: a stale ETag is refused through another node.
    let r = nodes[1]
        .client
        .put(nodes[1].url("/kv/k0"))
        .header("if-match", "\"1\"")
        .body("x")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 412);
    // Stale reads answer from the local copy.
    let g = nodes[2]
        .client
        .get(nodes[2].url("/kv/k1?consistency=stale"))
        .send()
        .await
        .expect("get");
    assert_eq!(g.status(), 200);
    // Batches go through the log too.
    let r = nodes[2]
        .client
        .post(nodes[2].url("/batch"))
        .json(&serde_json::json!({"ops":[{"op":"put","key":"b1","value":"1"},{"op":"delete","key":"k2"}]}))
        .send()
        .await
        .expect("batch");
    assert_eq!(r.status(), 200);
    let g = nodes[0]
        .client
        .get(nodes[0].url("/kv/k2"))
        .send()
        .await
        .expect("get");
    assert_eq!(g.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_under_load_loses_no_acknowledged_write() {
    let (nodes, peers, data) = three().await;
    let refs: Vec<Option<&Server>> = nodes.iter().map(Some).collect();
    let lead = leader_of(&refs).await;
    let mut nodes: Vec<Option<Server>> = nodes.into_iter().map(Some).collect();
    let followers: Vec<String> = (0..3)
        .filter(|&i| i != lead)
        .map(|i| nodes[i].as_ref().expect("node").base.clone())
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A fifth writer sends batches of BATCH puts through a follower (forwarded to the leader),
    // so batches are in flight at the kill: each must end all present or all absent.
    let batches_sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let batches_acked = Arc::new(Mutex::new(BTreeSet::new()));
    const BATCH: usize = 5;
    let batch_writer = {
        let base = followers[0].clone();
        let (sent, acked_b, stop) = (batches_sent.clone(), batches_acked.clone(), stop.clone());
        tokio::spawn(async move {
            let c = client();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let ops: Vec<serde_json::Value> = (0..BATCH)
                    .map(|j| serde_json::json!({"op": "put", "key": format!("b{i}/{j}"), "value": "x"}))
                    .collect();
                sent.store(i + 1, std::sync::atomic::Ordering::SeqCst);
                if let Ok(r) = c
                    .post(format!("{base}/batch"))
                    .json(&serde_json::json!({ "ops": ops }))
                    .send()
                    .await
                    && r.status().is_success()
                {
                    acked_b.lock().expect("lock").insert(i);
                }
                i += 1;
            }
        })
    };
    // Four writers of single puts through the followers (forwarded to the leader).
    let load = Load::start(&followers, 4);
    load.wait_more(50, "before the kill").await;
    // SIGKILL (the Server's drop); its data directory stays in `data`.
    drop(nodes[lead].take());
    // A new leader must take writes: acknowledgements after the kill.
    load.wait_more(50, "after the leader died").await;
    let acked = load.stop().await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    batch_writer.await.expect("batch writer");
    for i in (0..3).filter(|&i| i != lead) {
        let n = nodes[i].as_ref().expect("survivor");
        assert_all_read(n, &acked, "", &format!("survivor {i}")).await;
    }
    // The old leader comes back and catches up.
    let back = restart_node(
        &data.path().join(format!("n{}", lead + 1)),
        lead as u64 + 1,
        peers[lead],
    )
    .await;
    // Linearizable reads need a known leader (503 before): wait until it has heard from one.
    wait_leader_known(&back).await;
    assert_all_read(&back, &acked, "", "the returned node").await;
    // Every batch, the ones in flight at the kill included: all of it or none of it, on
    // every node (the returned one read linearizably, like the survivors).
    let batches_acked = batches_acked.lock().expect("lock").clone();
    let sent = batches_sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(!batches_acked.is_empty(), "no batch acknowledged");
    let mut all = vec![&back];
    all.extend(nodes.iter().flatten());
    for n in all {
        for b in 0..sent {
            let page: serde_json::Value = n
                .client
                .get(n.url(&format!("/kv?prefix=b{b}%2F")))
                .send()
                .await
                .expect("list")
                .json()
                .await
                .expect("json");
            let have = page["keys"].as_array().expect("keys").len();
            if batches_acked.contains(&b) {
                assert_eq!(have, BATCH, "acknowledged batch {b} is partly missing");
            } else {
                assert!(
                    have == 0 || have == BATCH,
                    "batch {b} half applied: {have} keys"
                );
            }
        }
    }
}

/// The leader is SIGKILLed right after a run of acknowledged writes (its engine runs
/// sync=never, so its last applied writes are lost with it) and its saved commit index is
/// wiped, as a power cut may leave it (that hint is written without fsync). It restarts while
/// both followers are paused (SIGSTOP), reads are sent through it, and the followers resume.
/// Every acknowledged write must read back. A leader restored in its old term answered these
/// reads from its own stale engine (its read index rests on its saved commit index, and the
/// followers confirm its leadership in one heartbeat while its catch-up replication is still
/// backing off); it must call an election instead, and a leader of a new term commits an
/// entry past every acknowledged write before it serves a read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_leader_that_lost_its_commit_index_serves_no_stale_read() {
    let (nodes, peers, data) = three().await;
    let mut nodes: Vec<Option<Server>> = nodes.into_iter().map(Some).collect();
    for round in 0..2 {
        let refs: Vec<Option<&Server>> = nodes.iter().map(Option::as_ref).collect();
        let lead = leader_of(&refs).await;
        let n = nodes[lead].as_ref().expect("leader");
        let keys: Vec<String> = (0..40).map(|i| format!("r{round}-{i}")).collect();
        for key in &keys {
            let r = n
                .client
                .put(n.url(&format!("/kv/{key}")))
                .body(key.clone())
                .send()
                .await
                .expect("put");
            assert!(r.status().is_success(), "put {key}: {}", r.status());
        }
        let followers: Vec<usize> = (0..3).filter(|&i| i != lead).collect();
        for &f in &followers {
            nodes[f].as_ref().expect("follower").signal("-STOP");
        }
        drop(nodes[lead].take()); // SIGKILL, then wait
        let dir = data.path().join(format!("n{}", lead + 1));
        std::fs::write(dir.join("raft").join("committed"), b"").expect("wipe the hint");
        let back = Arc::new(restart_node(&dir, lead as u64 + 1, peers[lead]).await);
        // Reads in flight while the followers are paused, then the followers resume.
        let readers: Vec<_> = keys
            .iter()
            .rev()
            .take(8)
            .map(|key| {
                let (back, key) = (Arc::clone(&back), key.clone());
                tokio::spawn(async move { read_until_served(&back, &key).await })
            })
            .collect();
        // Not a wait for an event: the readers may or may not have been sent yet when the
        // followers resume, and either way every read must be fresh.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for &f in &followers {
            nodes[f].as_ref().expect("follower").signal("-CONT");
        }
        for (r, key) in readers.into_iter().zip(keys.iter().rev()) {
            let body = r.await.expect("reader");
            assert_eq!(
                body, *key,
                "round {round}: acknowledged {key} read stale through the restarted leader"
            );
        }
        for key in &keys {
            let body = read_until_served(&back, key).await;
            assert_eq!(body, *key, "round {round}: acknowledged {key} read stale");
        }
        nodes[lead] = Some(Arc::into_inner(back).expect("readers done"));
    }
}

/// A linearizable read of `key` through `s`, retried while there is no leader (503): the
/// body, or `<status>` when the answer is not 200.
async fn read_until_served(s: &Server, key: &str) -> String {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let r = s.client.get(s.url(&format!("/kv/{key}"))).send().await;
        if let Ok(g) = r {
            let code = g.status();
            let body = g.text().await.unwrap_or_default();
            if code != 503 {
                return if code == 200 {
                    body
                } else {
                    format!("<{code}>")
                };
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{key}: no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_quorum_writes_and_linearizable_reads_are_503_stale_reads_work() {
    let (nodes, _, _data) = three().await;
    let r = nodes[0]
        .client
        .put(nodes[0].url("/kv/a"))
        .body("1")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 201);
    // A follower is cut off: both others are killed, its leader among them.
    let all: Vec<Option<&Server>> = nodes.iter().map(Some).collect();
    let leader = leader_of(&all).await;
    let follower = (leader + 1) % 3;
    wait_leader_known(&nodes[follower]).await;
    // Wait until it has applied the write locally.
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let g = nodes[follower]
            .client
            .get(nodes[follower].url("/kv/a?consistency=stale"))
            .send()
            .await
            .expect("get");
        if g.status() == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut nodes = nodes;
    let alone = nodes.swap_remove(follower);
    drop(nodes); // SIGKILL the other two
    let r = alone
        .client
        .put(alone.url("/kv/b"))
        .body("2")
        .send()
        .await
        .expect("put");
    assert_eq!(
        r.status(),
        503,
        "a write without a quorum must not be acknowledged"
    );
    assert!(r.headers().contains_key("retry-after"));
    // Its leader refused every connection: the write was applied nowhere, and the problem
    // type says so (a client may retry without fear of applying it twice).
    let p: serde_json::Value = r.json().await.expect("problem");
    assert_eq!(p["type"], "urn:hoardhaven:problem:not-applied", "{p}");
    let g = alone
        .client
        .get(alone.url("/kv/a"))
        .send()
        .await
        .expect("get");
    assert_eq!(
        g.status(),
        503,
        "a linearizable read without a quorum must not answer 200"
    );
    assert!(g.headers().contains_key("retry-after"));
    let g = alone
        .client
        .get(alone.url("/kv/a?consistency=stale"))
        .send()
        .await
        .expect("get");
    assert_eq!(g.status(), 200);
    assert_eq!(g.text().await.expect("body"), "1");
}

// Concurrent linearizable reads share one leadership confirmation: with both followers
// paused, the first round waits for a quorum while the other reads queue (all of them seen
// waiting in the `reads_waiting` gauge, not by sleeping); once the followers resume, the
// queue is answered by one more round. Went red (32 rounds for 32 reads) with a round per read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_linearizable_reads_share_one_leadership_round() {
    const READS: usize = 32;
    let (nodes, _, _data) = three().await;
    let all: Vec<Option<&Server>> = nodes.iter().map(Some).collect();
    let lead = leader_of(&all).await;
    let leader = &nodes[lead];
    let r = leader
        .client
        .put(leader.url("/kv/shared"))
        .body("v")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 201);
    let rounds_before = leader.metric("hoardhaven_raft_read_rounds_total").await;
    let followers: Vec<&Server> = (0..3).filter(|&i| i != lead).map(|i| &nodes[i]).collect();
    for f in &followers {
        f.signal("-STOP");
    }
    let url = leader.url("/kv/shared");
    let readers: Vec<_> = (0..READS)
        .map(|_| {
            // A client each: one connection per read, all in flight at once.
            let (c, url) = (client(), url.clone());
            tokio::spawn(async move {
                let r = c.get(url).send().await.expect("get");
                (r.status(), r.text().await.expect("body"))
            })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    while leader.metric("hoardhaven_raft_reads_waiting").await < READS as f64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reads never queued behind the first round"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for f in &followers {
        f.signal("-CONT");
    }
    for r in readers {
        let (status, body) = r.await.expect("reader");
        assert_eq!((status.as_u16(), body.as_str()), (200, "v"));
    }
    let rounds = leader.metric("hoardhaven_raft_read_rounds_total").await - rounds_before;
    assert!(
        rounds <= 2.0,
        "{READS} concurrent reads took {rounds} leadership rounds (one for the first, one for the rest)"
    );
    assert!(
        leader.metric("hoardhaven_raft_read_index_total").await >= READS as f64,
        "every read was answered by a round"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_cluster_input_is_refused_clearly() {
    let peer = free_port();
    let data = tempfile::tempdir().expect("tmp");
    let one = start_node(data.path(), 1, peer, None).await;
    // Membership calls need a leader: wait until the one voter has elected itself.
    leader_of(&[Some(&one)]).await;
    document_names_the_cluster_routes(&one).await;
    // /raft without the secret: 401, nothing reaches Raft.
    let r = client()
        .post(format!("http://127.0.0.1:{peer}/raft/vote"))
        .body(vec![0u8; 8])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
    let r = client()
        .post(format!("http://127.0.0.1:{peer}/raft/vote"))
        .header("authorization", "Bearer wrong")
        .body(vec![0u8; 8])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
    // Removing the last voter.
    let r = one
        .client
        .delete(one.url("/cluster/members/1"))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 409, "{}", r.text().await.unwrap_or_default());
    // A node id clash.
    let r = one
        .client
        .post(one.url("/cluster/learners"))
        .json(&serde_json::json!({"node_id": 1, "peer_url": "http://127.0.0.1:1", "api_url": "http://127.0.0.1:2"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 409);
    // Joining with a wrong secret: the process exits non-zero saying why.
    let scratch = tempfile::tempdir().expect("tmp");
    let mut cmd = serve_command(
        "bitcask",
        &scratch.path().join("data"),
        &scratch.path().join("port"),
    );
    let log = scratch.path().join("stderr.log");
    cmd.args([
        "--node-id",
        "2",
        "--peer-listen",
        &format!("127.0.0.1:{}", free_port()),
        "--cluster-secret",
        "not-the-secret",
        "--join",
        &format!("http://127.0.0.1:{peer}"),
    ])
    .stderr(std::fs::File::create(&log).expect("log"));
    let mut child = cmd.spawn().expect("spawn");
    let status = wait_exit(&mut child).await;
    assert!(!status.success());
    let err = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(err.contains("cluster secret"), "{err}");
    // Nothing lost: the cluster still has one voter and serves.
    let st = status_of(&one).await;
    assert_eq!(st["voters"].as_array().expect("voters").len(), 1, "{st}");
    let r = one
        .client
        .put(one.url("/kv/x"))
        .body("1")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 201);
}

async fn status_of(s: &Server) -> serde_json::Value {
    status(s).await
}

async fn cli(args: &[&str]) -> (std::process::ExitStatus, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(common::server::binary())
            .args(&args)
            .env_remove("RUST_LOG")
            .output()
    })
    .await
    .expect("join")
    .expect("run cli");
    (
        out.status,
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

// Waits for the leader's purge before adding the learner (openraft purges lazily, so without
// the wait the learner may catch up from the log) and for the learner to apply everything
// before checking it installed a snapshot. Went red when snapshot install dropped half the
// records. Four writers keep writing through the three lasting nodes for every membership
// change (add, promote, join, remove, remove); each acknowledged write must then read back
// through each of them, linearizably and from its own copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn learner_catches_up_by_snapshot_and_membership_goes_3_5_3() {
    let data = tempfile::tempdir().expect("tmp");
    let peers: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let snap = ["--raft-snapshot-every", "50"];
    let start = |i: usize, first: Option<u16>, join: bool| {
        // Neither init nor join when not joining: added by the CLI.
        let entry = match (join, first) {
            (false, _) => Entry::Restart,
            (true, None) => Entry::Init,
            (true, Some(p)) => Entry::Join(format!("http://127.0.0.1:{p}")),
        };
        let mut f = node_flags(i as u64 + 1, peers[i], None, &entry);
        f.extend(snap.iter().map(|s| s.to_string()));
        let dir = data.path().join(format!("n{}", i + 1));
        async move {
            let refs: Vec<&str> = f.iter().map(String::as_str).collect();
            Server::start_in(&dir, "bitcask", &refs).await
        }
    };
    let mut nodes = vec![start(0, None, true).await];
    nodes.push(start(1, Some(peers[0]), true).await);
    nodes.push(start(2, Some(peers[0]), true).await);
    // Enough entries that snapshots are taken and the log is purged past the start.
    for i in 0..400 {
        let n = &nodes[i % 3];
        let r = n
            .client
            .put(n.url(&format!("/kv/s{i}")))
            .body(format!("{i}"))
            .send()
            .await
            .expect("put");
        assert!(r.status().is_success());
    }
    // openraft purges lazily (after a snapshot, once no replication needs the entries):
    // wait until the leader's log no longer starts at 1.
    wait_leader_purged(&nodes).await;
    // Load for every membership change below: four writers through the three lasting nodes.
    let load = Load::start(&nodes.iter().map(|n| n.base.clone()).collect::<Vec<_>>(), 4);
    load.wait_more(20, "before the changes").await;
    // 3 -> 4: a learner with an empty log, added through the CLI; the leader's log no longer
    // starts at 1, so it can only catch up by a snapshot.
    let four = start(3, None, false).await;
    let (ok, out) = cli(&[
        "cluster",
        "add",
        "--url",
        &nodes[1].base,
        "4",
        &format!("http://127.0.0.1:{}", peers[3]),
        &four.base,
    ])
    .await;
    assert!(ok.success(), "{out}");
    load.wait_more(20, "after adding learner 4").await;
    let (ok, out) = cli(&["cluster", "promote", "--url", &nodes[2].base, "4"]).await;
    assert!(ok.success(), "{out}");
    load.wait_more(20, "after promoting 4").await;
    // The CLI returns once the membership changed, not once node 4 caught up: wait until it
    // has applied everything committed so far, then see how it got there.
    let refs: Vec<Option<&Server>> = nodes.iter().map(Some).collect();
    let committed = status(&nodes[leader_of(&refs).await]).await["commit_index"]
        .as_u64()
        .expect("commit index");
    wait_applied(&four, committed).await;
    assert!(
        four.metric("hoardhaven_raft_snapshots_installed_total")
            .await
            > 0.0,
        "node 4 did not install a snapshot"
    );
    for i in [0usize, 1, 199, 399] {
        let g = four
            .client
            .get(four.url(&format!("/kv/s{i}")))
            .send()
            .await
            .expect("get");
        assert_eq!(g.status(), 200, "s{i} on the new node");
        assert_eq!(g.text().await.expect("body"), format!("{i}"));
    }
    // Same version on the snapshot-installed node as on the leader.
    let e0 = nodes[0]
        .client
        .get(nodes[0].url("/kv/s7"))
        .send()
        .await
        .expect("get");
    let e4 = four
        .client
        .get(four.url("/kv/s7"))
        .send()
        .await
        .expect("get");
    assert_eq!(e0.headers()["etag"], e4.headers()["etag"]);
    // 4 -> 5 by --join.
    let five = start(4, Some(peers[2]), true).await;
    wait_voters(&five, 5).await;
    load.wait_more(20, "after 5 joined").await;
    let r = five
        .client
        .put(five.url("/kv/after5"))
        .body("x")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 201);
    // 5 -> 3.
    for id in ["5", "4"] {
        let (ok, out) = cli(&["cluster", "remove", "--url", &nodes[0].base, id]).await;
        assert!(ok.success(), "remove {id}: {out}");
        load.wait_more(20, &format!("after removing {id}")).await;
    }
    wait_voters(&nodes[1], 3).await;
    // Every write acknowledged during the changes reads back through every remaining node:
    // linearizable at once, and from each node's own copy once it applied the commit index.
    let acked = load.stop().await;
    println!(
        "{} writes acknowledged during the membership changes",
        acked.len()
    );
    let refs: Vec<Option<&Server>> = nodes.iter().map(Some).collect();
    let commit = status(&nodes[leader_of(&refs).await]).await["commit_index"]
        .as_u64()
        .expect("commit index");
    for (i, n) in nodes.iter().enumerate() {
        assert_all_read(n, &acked, "", &format!("node {}", i + 1)).await;
        wait_applied(n, commit).await;
        let what = format!("node {} (stale)", i + 1);
        assert_all_read(n, &acked, "?consistency=stale", &what).await;
    }
    let (ok, out) = cli(&["cluster", "status", "--url", &nodes[1].base, "--json"]).await;
    assert!(ok.success(), "{out}");
    let st: serde_json::Value = serde_json::from_str(out.trim()).expect("status json");
    assert_eq!(st["voters"].as_array().expect("voters").len(), 3, "{st}");
    let r = nodes[2]
        .client
        .put(nodes[2].url("/kv/after3"))
        .body("y")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 201);
    let g = nodes[0]
        .client
        .get(nodes[0].url("/kv/after5"))
        .send()
        .await
        .expect("get");
    assert_eq!(g.status(), 200);
}

/// Writers putting distinct keys (value = key) through the given nodes in turn until
/// stopped, recording each acknowledged (2xx) key; 503s and broken connections (membership
/// changes, a leader's death) are not acknowledgements and are not retried.
struct Load {
    acked: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    writers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(bases: &[String], writers: usize) -> Load {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writers = (0..writers)
            .map(|w| {
                let (acked, stop, base) =
                    (acked.clone(), stop.clone(), bases[w % bases.len()].clone());
                tokio::spawn(async move {
                    let c = client();
                    let mut i = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let key = format!("load{w}-{i}");
                        i += 1;
                        if let Ok(r) = c
                            .put(format!("{base}/kv/{key}"))
                            .body(key.clone())
                            .send()
                            .await
                            && r.status().is_success()
                        {
                            acked.lock().expect("lock").push(key);
                        }
                    }
                })
            })
            .collect();
        Load {
            acked,
            stop,
            writers,
        }
    }

    /// Waits (bounded) until `n` more writes are acknowledged.
    async fn wait_more(&self, n: usize, what: &str) {
        let want = self.acked.lock().expect("lock").len() + n;
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        while self.acked.lock().expect("lock").len() < want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no writes acknowledged {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the writers; every acknowledged key.
    async fn stop(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for w in self.writers {
            w.await.expect("writer");
        }
        self.acked.lock().expect("lock").clone()
    }
}

/// Asserts every key of `keys` reads back through `n` with itself as value (`POST /mget`
/// with `query`).
async fn assert_all_read(n: &Server, keys: &[String], query: &str, what: &str) {
    for chunk in keys.chunks(500) {
        let page: serde_json::Value = n
            .client
            .post(n.url(&format!("/mget{query}")))
            .json(&serde_json::json!({ "keys": chunk }))
            .send()
            .await
            .expect("mget")
            .json()
            .await
            .expect("mget json");
        let values = page["values"].as_array().expect("values");
        assert_eq!(values.len(), chunk.len(), "{what}: {page}");
        for (key, v) in chunk.iter().zip(values) {
            assert!(
                v["found"] == true && v["value"] == key.as_str(),
                "{what}: acknowledged {key} reads {v}"
            );
        }
    }
}

/// Polls `s`'s `/cluster` status until `done` holds of it (bounded by the step timeout).
async fn wait_status(s: &Server, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let st = status(s).await;
        if done(&st) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until `s` knows which node leads.
async fn wait_leader_known(s: &Server) {
    wait_status(s, "never learned the leader", |st| {
        st["leader"]["node_id"].as_u64().is_some()
    })
    .await;
}

/// Waits (bounded) until the leader of `nodes` (node id = index + 1) has purged its log.
async fn wait_leader_purged(nodes: &[Server]) {
    let refs: Vec<Option<&Server>> = nodes.iter().map(Some).collect();
    let leader = &nodes[leader_of(&refs).await];
    wait_status(leader, "the leader never purged its log", |st| {
        st["purged_index"].as_u64().unwrap_or(0) > 0
    })
    .await;
}

/// Waits (bounded) until `s` has applied the log up to `index`.
async fn wait_applied(s: &Server, index: u64) {
    wait_status(s, &format!("never applied up to {index}"), |st| {
        st["applied_index"].as_u64().is_some_and(|a| a >= index)
    })
    .await;
}

/// Waits (bounded) until `s` sees `n` voters.
async fn wait_voters(s: &Server, n: usize) {
    wait_status(s, &format!("never saw {n} voters"), |st| {
        st["voters"].as_array().map(Vec::len) == Some(n)
    })
    .await;
}

/// The Redis protocol door on a cluster node: a SET through one node's RESP port, then a GET
/// through another node's, sees the write every time (the read barrier; a follower alone
/// applies a commit only at the next heartbeat). READONLY asks for the local copy instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resp_reads_are_linearizable_through_every_node() {
    let data = tempfile::tempdir().expect("tmp");
    let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let resp: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let entry = if i == 0 {
            Entry::Init
        } else {
            Entry::Join(format!("http://127.0.0.1:{}", peers[0]))
        };
        let mut flags = node_flags(i as u64 + 1, peers[i], None, &entry);
        flags.push("--resp-listen".into());
        flags.push(format!("127.0.0.1:{}", resp[i]));
        let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        let dir = data.path().join(format!("n{}", i + 1));
        nodes.push(Server::start_in(&dir, "bitcask", &refs).await);
    }
    let all: Vec<Option<&Server>> = nodes.iter().map(Some).collect();
    leader_of(&all).await;
    for n in &nodes {
        wait_leader_known(n).await;
    }
    let checked = tokio::task::spawn_blocking(move || {
        let conns: Vec<redis::Connection> = resp
            .iter()
            .map(|p| {
                redis::Client::open(format!("redis://127.0.0.1:{p}/"))
                    .expect("client")
                    .get_connection_with_timeout(STEP_TIMEOUT)
                    .expect("connect")
            })
            .collect();
        let mut conns = conns;
        for i in 0..60usize {
            let (w, r) = (i % 3, (i + 1) % 3);
            let _: () = redis::cmd("SET")
                .arg("k")
                .arg(i)
                .query(&mut conns[w])
                .expect("SET");
            let got: usize = redis::cmd("GET")
                .arg("k")
                .query(&mut conns[r])
                .expect("GET");
            assert_eq!(
                got,
                i,
                "GET through node {} after SET through node {}",
                r + 1,
                w + 1
            );
        }
        let _: () = redis::cmd("READONLY")
            .query(&mut conns[1])
            .expect("READONLY");
        let _: Option<usize> = redis::cmd("GET")
            .arg("k")
            .query(&mut conns[1])
            .expect("a local read");
        60
    })
    .await
    .expect("resp client");
    assert_eq!(checked, 60);
}

/// A cluster node's OpenAPI document adds the `/cluster` routes, the `consistency` parameter
/// of reads and the 503 types of writes, and still validates.
async fn document_names_the_cluster_routes(node: &Server) {
    let text = node
        .client
        .get(node.url("/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .text()
        .await
        .expect("body");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    for (p, m) in [
        ("/cluster", "get"),
        ("/cluster/init", "post"),
        ("/cluster/learners", "post"),
        ("/cluster/voters/{id}", "post"),
        ("/cluster/members/{id}", "delete"),
    ] {
        assert!(doc["paths"][p][m].is_object(), "{m} {p} documented");
    }
    for (p, m) in [
        ("/kv/{key}", "get"),
        ("/kv/{key}", "head"),
        ("/kv", "get"),
        ("/mget", "post"),
    ] {
        let params = doc["paths"][p][m]["parameters"].as_array().expect("params");
        assert!(
            params.iter().any(|x| x["name"] == "consistency"),
            "{m} {p} documents consistency"
        );
    }
    let put_503 = &doc["paths"]["/kv/{key}"]["put"]["responses"]["503"]["description"];
    assert!(
        put_503.as_str().is_some_and(|d| d.contains("not-applied")),
        "{put_503}"
    );
    // The document validates, as the single node's does (tests/http_api.rs).
    let file = node.scratch.path().join("cluster-openapi.json");
    std::fs::write(&file, &text).expect("write");
    if let Some(out) = common::tools::external(
        "openapi-spec-validator",
        std::process::Command::new("python3")
            .args(["-m", "openapi_spec_validator"])
            .arg(&file),
        None,
    ) {
        assert!(out.status.success(), "{}", common::tools::show(&out));
    }
}

/// A step of a snapshot install on a receiving node, as seen on its disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InstallPhase {
    /// `snapshots/receiving.tmp` holds chunks (not yet all of them).
    Receiving,
    /// `snapshots/received.tmp`: the complete file is copied into place.
    Copying,
    /// `sm.building/`: the engine is being rebuilt from the file.
    Building,
    /// `sm.new/`: the rebuilt engine is complete, about to replace `sm/`.
    Switching,
}

impl InstallPhase {
    /// Which of `phases` the node with data directory `dir` is in (the latest step first,
    /// since `receiving.tmp` stays once received).
    fn seen(dir: &std::path::Path, phases: &[InstallPhase]) -> Option<InstallPhase> {
        let snaps = dir.join("snapshots");
        let order = [
            (InstallPhase::Switching, dir.join("sm.new")),
            (InstallPhase::Building, dir.join("sm.building")),
            (InstallPhase::Copying, snaps.join("received.tmp")),
            (InstallPhase::Receiving, snaps.join("receiving.tmp")),
        ];
        order.into_iter().find_map(|(p, path)| {
            let there = match p {
                InstallPhase::Receiving => std::fs::metadata(&path).is_ok_and(|m| m.len() > 0),
                _ => path.exists(),
            };
            (there && phases.contains(&p)).then_some(p)
        })
    }
}

/// Restarts node `id` over `dir` as a bare child (no wait for readiness: the install may
/// start before the node says ready), polls its data directory every 2 ms and SIGKILLs it
/// the moment one of `phases` shows. Returns the phase caught, or why none was.
async fn kill_mid_install(
    dir: &std::path::Path,
    id: u64,
    peer: u16,
    extra: &[&str],
    phases: &'static [InstallPhase],
) -> Result<InstallPhase, String> {
    let scratch = tempfile::tempdir().expect("tmp");
    let mut cmd = serve_command("bitcask", dir, &scratch.path().join("port"));
    let log = scratch.path().join("stderr.log");
    let mut flags = node_flags(id, peer, None, &Entry::Restart);
    cluster::with_extra(&mut flags, extra);
    cmd.args(flags)
        .stderr(std::fs::File::create(&log).expect("log"));
    let mut child = common::child::KillOnDrop(cmd.spawn().expect("spawn"));
    let dir = dir.to_path_buf();
    let installed = dir.join("snapshots").join("current.snap");
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + STEP_TIMEOUT;
        loop {
            if let Some(p) = InstallPhase::seen(&dir, phases) {
                child.kill().expect("kill -9");
                child.wait().expect("reap");
                return Ok(p);
            }
            let stderr = || std::fs::read_to_string(&log).unwrap_or_default();
            if installed.exists() {
                return Err(format!(
                    "the snapshot was installed before any of {phases:?} was seen; stderr:\n{}",
                    stderr()
                ));
            }
            if let Some(s) = child.try_wait().expect("try_wait") {
                return Err(format!("node exited by itself with {s}: {}", stderr()));
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "no snapshot install ({phases:?}) within {STEP_TIMEOUT:?}; stderr:\n{}",
                    stderr()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    })
    .await
    .expect("watcher")
}

/// The snapshot and replication lines of `node`'s log (for a failure message).
fn snapshot_log(node: &Option<Server>) -> String {
    let log = node.as_ref().map(Server::stderr).unwrap_or_default();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("snapshot") || l.contains("replication"))
        .collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// PUTs `value` at `url` until it is acknowledged (bounded by the step timeout).
async fn put_until_acked(c: &reqwest::Client, url: &str, value: Vec<u8>) {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let r = c.put(url).body(value.clone()).send().await.expect("put");
        let code = r.status();
        if code.is_success() {
            return;
        }
        assert!(
            code == 503 && tokio::time::Instant::now() < deadline,
            "put {url}: {code} {:?}",
            r.text().await
        );
    }
}

/// The value of big key `i` (distinct per key, `BIG` bytes).
fn big_value(i: usize) -> Vec<u8> {
    const BIG: usize = 192 * 1024;
    format!("v{i:05}-")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(BIG)
        .collect()
}

/// A follower down while the leader snapshots and purges its log must catch up by a large
/// snapshot (about 23 MB, six chunks). It is SIGKILLed while it rebuilds its engine from the
/// received file (`sm.building`, or `sm.new` if caught switching): openraft has purged its
/// log by then. Restarted it must clean up, install the snapshot, apply to the leader's
/// commit index and serve every acknowledged key with the leader's value and ETag from its
/// own copy, then take writes. Went red (the node panicked at every start) without
/// `StateMachine::finish_received_snapshot`.
///
/// A kill while the chunks arrive is not part of it: in one run of nine the leader did not
/// send the snapshot again within a minute after such a kill (docs/cluster.md, "Not
/// guaranteed"), which would make the test flaky rather than say more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_killed_mid_snapshot_recovers() {
    const KEYS: usize = 120;
    // openraft 0.9 times an append out after one heartbeat; a debug build on a slow disk
    // needs longer than 100 ms for a few 192 KiB entries.
    let snap = ["--raft-snapshot-every", "150", "--raft-heartbeat-ms", "500"];
    let (nodes, peers, data) = three_with(&snap).await;
    let refs: Vec<Option<&Server>> = nodes.iter().map(Some).collect();
    let lead = leader_of(&refs).await;
    let f = (lead + 1) % 3;
    let mut nodes: Vec<Option<Server>> = nodes.into_iter().map(Some).collect();
    let fdir = data.path().join(format!("n{}", f + 1));
    let mut down = nodes[f].take().expect("follower");
    down.kill().await;
    drop(down);
    let leader = nodes[lead].as_ref().expect("leader");
    let before = status(leader).await["commit_index"]
        .as_u64()
        .expect("commit index");
    // Four writers through the leader (the two live nodes are a quorum); a 503 (the leader
    // busy snapshotting) is not an acknowledgement: put again.
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let (c, base) = (client(), leader.base.clone());
        writers.spawn(async move {
            for i in (w..KEYS).step_by(4) {
                put_until_acked(&c, &format!("{base}/kv/big{i}"), big_value(i)).await;
            }
        });
    }
    while let Some(r) = writers.join_next().await {
        r.expect("writer");
    }
    // Small writes until the leader has snapshotted past every big value and purged its log
    // past what the follower has: it can catch up only by that snapshot (about 23 MB, six
    // chunks).
    let c = client();
    let mut filler = 0;
    loop {
        let st = status(leader).await;
        if st["purged_index"].as_u64().unwrap_or(0) > before {
            break;
        }
        assert!(
            filler < 1000,
            "the leader never purged past the follower: {st}"
        );
        put_until_acked(&c, &leader.url(&format!("/kv/fill{filler}")), b"f".to_vec()).await;
        filler += 1;
    }
    assert!(
        !fdir.join("snapshots").join("receiving.tmp").exists(),
        "the follower received a snapshot before"
    );
    // Kill it while it rebuilds its engine from the received file.
    let second = kill_mid_install(
        &fdir,
        f as u64 + 1,
        peers[f],
        &snap,
        &[InstallPhase::Building, InstallPhase::Switching],
    )
    .await
    .unwrap_or_else(|e| panic!("kill: {e}\nleader: {}", snapshot_log(&nodes[lead])));
    println!("the kill caught the install in phase {second:?}");
    let back =
        cluster::start_node(&fdir, f as u64 + 1, peers[f], None, &Entry::Restart, &snap).await;
    wait_leader_known(&back).await;
    let leader = nodes[lead].as_ref().expect("leader");
    let commit = status(leader).await["commit_index"]
        .as_u64()
        .expect("commit index");
    wait_applied(&back, commit).await;
    for stale in ["sm.building", "sm.new", "sm.old"] {
        assert!(!fdir.join(stale).exists(), "{stale} left after recovery");
    }
    // Killed in `sm.new` the restart finishes the switch; otherwise it installs the snapshot
    // (the received file, or a new transfer).
    if second != InstallPhase::Switching {
        assert!(
            back.metric("hoardhaven_raft_snapshots_installed_total")
                .await
                > 0.0,
            "the restarted follower did not install a snapshot"
        );
    }
    for i in 0..KEYS {
        let key = format!("big{i}");
        let want = leader
            .client
            .get(leader.url(&format!("/kv/{key}")))
            .send()
            .await
            .expect("get");
        assert_eq!(want.status(), 200, "{key} on the leader");
        let want_etag = want.headers()["etag"].clone();
        assert_eq!(
            want.bytes().await.expect("body"),
            big_value(i),
            "{key} on the leader"
        );
        let got = back
            .client
            .get(back.url(&format!("/kv/{key}?consistency=stale")))
            .send()
            .await
            .expect("get");
        assert_eq!(got.status(), 200, "{key} missing on the recovered follower");
        assert_eq!(
            got.headers()["etag"],
            want_etag,
            "{key}: ETag differs on the follower"
        );
        assert!(
            got.bytes().await.expect("body") == big_value(i),
            "{key}: value differs on the follower"
        );
    }
    // And it takes writes (forwarded to the leader) and sees them.
    let r = back
        .client
        .put(back.url("/kv/after-recovery"))
        .body("ok")
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), 201);
    let g = back
        .client
        .get(back.url("/kv/after-recovery"))
        .send()
        .await
        .expect("get");
    assert_eq!(g.text().await.expect("body"), "ok");
}
