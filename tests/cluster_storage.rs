//! openraft's own storage test suite (`openraft::testing::Suite`) against the on-disk Raft log
//! and the engine state machine, for both engines; plus the log's recovery rules.

use std::sync::Mutex;

use hoardhaven::EngineKind;
use hoardhaven::cluster::log_store::LogStore;
use hoardhaven::cluster::state_machine::StateMachine;
use hoardhaven::cluster::types::{StorageError, TypeConfig};
use hoardhaven::engine::EngineOptions;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{AnyError, StorageIOError};

struct Builder {
    kind: EngineKind,
    dirs: Mutex<Vec<tempfile::TempDir>>,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, ()> for Builder {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError> {
        let err = |e: String| StorageError::IO {
            source: StorageIOError::write(AnyError::error(e)),
        };
        let tmp = tempfile::tempdir().map_err(|e| err(e.to_string()))?;
        let log = LogStore::open(&tmp.path().join("raft")).map_err(|e| err(e.to_string()))?;
        let opts = EngineOptions {
            kind: self.kind,
            dir: tmp.path().join("unused"),
            ..EngineOptions::default()
        };
        let sm = StateMachine::open(tmp.path(), &opts).map_err(|e| err(e.to_string()))?;
        self.dirs.lock().expect("lock").push(tmp);
        Ok(((), log, sm))
    }
}

#[test]
fn openraft_suite_bitcask() {
    Suite::test_all(Builder {
        kind: EngineKind::Bitcask,
        dirs: Mutex::new(Vec::new()),
    })
    .expect("openraft storage suite");
}

#[test]
fn openraft_suite_memory() {
    Suite::test_all(Builder {
        kind: EngineKind::Memory,
        dirs: Mutex::new(Vec::new()),
    })
    .expect("openraft storage suite");
}

/// A group of puts from different clients (one Raft entry) is applied in order as one batch,
/// each put with its own answer; a key put earlier in the group is not "created" again; a
/// group holding anything but unconditional puts is refused whole, changing nothing.
#[tokio::test]
async fn a_group_of_puts_is_applied_in_order_with_an_answer_each() {
    use hoardhaven::cluster::types::{Command, Cond, Entry, Outcome};
    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, EntryPayload, LogId};
    for kind in [EngineKind::Bitcask, EngineKind::Memory] {
        let tmp = tempfile::tempdir().expect("tmp");
        let opts = EngineOptions {
            kind,
            dir: tmp.path().join("unused"),
            ..EngineOptions::default()
        };
        let mut sm = StateMachine::open(tmp.path(), &opts).expect("open");
        let put = |k: &str, v: &str, cond: Cond| Command::Put {
            key: k.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
            expires_at: None,
            cond,
        };
        let entry = |index: u64, cmd: Command| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(cmd),
        };
        let group = Command::Group(vec![
            put("a", "1", Cond::None),
            put("b", "2", Cond::None),
            put("a", "3", Cond::None),
        ]);
        let out = sm.apply(vec![entry(1, group)]).await.expect("apply");
        let Some(Outcome::Group(answers)) = out.first() else {
            panic!("{kind:?}: {out:?}");
        };
        let created: Vec<bool> = answers
            .iter()
            .map(|o| o.as_written().expect("a put").created)
            .collect();
        assert_eq!(created, [true, true, false], "{kind:?}: {answers:?}");
        let versions: Vec<u64> = answers
            .iter()
            .map(|o| o.as_written().expect("a put").version.0)
            .collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        let engine = sm.engine();
        let a = engine.get(b"a").expect("get").expect("a");
        assert_eq!((&a.bytes[..], a.meta.version.0), (&b"3"[..], versions[2]));
        // A conditional put inside a group refuses the group: nothing of it is applied.
        let bad = Command::Group(vec![
            put("b", "x", Cond::None),
            put("c", "y", Cond::IfAbsent),
        ]);
        let out = sm.apply(vec![entry(2, bad)]).await.expect("apply");
        assert!(
            matches!(out.first(), Some(Outcome::Invalid { .. })),
            "{kind:?}: {out:?}"
        );
        let engine = sm.engine();
        assert_eq!(&engine.get(b"b").expect("get").expect("b").bytes[..], b"2");
        assert!(engine.get(b"c").expect("get").is_none());
    }
}

/// A snapshot is written in version order and installed reading one record at a time, each
/// key with the value and version it had on the leader; a file in key order (written before
/// that order) still installs, sorted in memory; a file cut short installs nothing.
#[tokio::test]
async fn a_snapshot_installs_in_version_order_with_every_version() {
    use hoardhaven::cluster::snapshot::{self, Record};
    use hoardhaven::cluster::types::{Command, Cond, Entry};
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use openraft::{CommittedLeaderId, EntryPayload, LogId};
    use tokio::io::AsyncWriteExt;
    for kind in [EngineKind::Bitcask, EngineKind::Memory] {
        let open = |dir: &std::path::Path| {
            let opts = EngineOptions {
                kind,
                dir: dir.join("unused"),
                ..EngineOptions::default()
            };
            StateMachine::open(dir, &opts).expect("open")
        };
        let leader_dir = tempfile::tempdir().expect("tmp");
        let mut leader = open(leader_dir.path());
        // A node that applies the same entries later numbers them alike (the memory engine's
        // counter once started from each node's clock).
        let other_dir = tempfile::tempdir().expect("tmp");
        let mut other = None;
        // Key order (a, m, z) is not version order (z, m, a).
        for (i, key) in ["z", "a", "m", "a"].iter().enumerate() {
            let cmd = Command::Put {
                key: key.as_bytes().to_vec(),
                value: format!("{key}{i}").into_bytes(),
                expires_at: None,
                cond: Cond::None,
            };
            let e = Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), i as u64 + 1),
                payload: EntryPayload::Normal(cmd),
            };
            leader.apply(vec![e.clone()]).await.expect("apply");
            let o = other.get_or_insert_with(|| {
                // Opened on a later millisecond than the leader (a clock-based start differs).
                std::thread::sleep(std::time::Duration::from_millis(2));
                open(other_dir.path())
            });
            o.apply(vec![e]).await.expect("apply");
        }
        let other = other.expect("other node");
        let version = |sm: &StateMachine, key: &[u8]| {
            let v = sm.engine().get(key).expect("get").expect("key");
            v.meta.version
        };
        for key in [&b"a"[..], b"m", b"z"] {
            assert_eq!(
                version(&other, key),
                version(&leader, key),
                "{kind:?}: versions differ between nodes"
            );
        }
        let snap = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        let file = leader_dir.path().join("snapshots").join("current.snap");
        let (_, mut reader) = snapshot::Reader::open(&file).expect("open snapshot");
        let mut sent: Vec<Record> = Vec::new();
        while let Some(r) = reader.next_record().expect("record") {
            sent.push(r);
        }
        let versions: Vec<u64> = sent.iter().map(|r| r.version).collect();
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "{kind:?}: records not in version order: {versions:?}"
        );
        assert_eq!(sent.len(), 3, "{kind:?}");
        let bytes = std::fs::read(&file).expect("read");
        // An old file: the same records in key order.
        let old = leader_dir.path().join("key-order.snap");
        let mut w = snapshot::Writer::create(&old, &snap.meta).expect("create");
        let mut by_key = sent.clone();
        by_key.sort_by(|a, b| a.key.cmp(&b.key));
        for r in by_key {
            w.push(r).expect("push");
        }
        w.finish().expect("finish");
        let old_bytes = std::fs::read(&old).expect("read");
        for (what, body) in [("version order", &bytes), ("key order", &old_bytes)] {
            let dir = tempfile::tempdir().expect("tmp");
            let mut follower = open(dir.path());
            let mut rx = follower.begin_receiving_snapshot().await.expect("begin");
            rx.write_all(body).await.expect("write");
            follower
                .install_snapshot(&snap.meta, rx)
                .await
                .unwrap_or_else(|e| panic!("{kind:?}, {what}: {e}"));
            let (engine, source) = (follower.engine(), leader.engine());
            for key in [&b"a"[..], b"m", b"z"] {
                let got = engine.get(key).expect("get").expect("key installed");
                let want = source.get(key).expect("get").expect("key");
                assert_eq!(
                    (&got.bytes[..], got.meta.version),
                    (&want.bytes[..], want.meta.version),
                    "{kind:?}, {what}: {}",
                    String::from_utf8_lossy(key)
                );
            }
        }
        // Cut short (no end frame): refused, nothing installed.
        let dir = tempfile::tempdir().expect("tmp");
        let mut follower = open(dir.path());
        let mut rx = follower.begin_receiving_snapshot().await.expect("begin");
        rx.write_all(&bytes[..bytes.len() - 6])
            .await
            .expect("write");
        assert!(
            follower.install_snapshot(&snap.meta, rx).await.is_err(),
            "{kind:?}: a file without its end frame was installed"
        );
        assert!(
            follower.engine().get(b"a").expect("get").is_none(),
            "{kind:?}"
        );
        assert!(!dir.path().join("sm.new").exists(), "{kind:?}");
    }
}
