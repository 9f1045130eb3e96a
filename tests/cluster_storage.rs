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
