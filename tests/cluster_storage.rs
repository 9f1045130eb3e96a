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
