//! Arbitrary operation sequences against a `BTreeMap` model (redb's fuzz_redb, for both
//! engines): puts, deletes, conditional writes, batches, merges, snapshots and reopens. After
//! every step every read must agree with the model.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use bytes::Bytes;
use hoardhaven_engine::{
    self, BatchOp, Engine, EngineKind, EngineOptions, Precondition, PutOptions, SyncPolicy,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    Put { key: u8, len: u8 },
    Delete { key: u8 },
    CreateOnly { key: u8 },
    Batch { ops: Vec<(u8, bool)> },
    Merge,
    Snapshot,
    Reopen,
}

#[derive(Arbitrary, Debug)]
struct Case {
    memory: bool,
    ops: Vec<Op>,
}

fn key(k: u8) -> Vec<u8> {
    format!("key{}", k % 32).into_bytes()
}

fn open(kind: EngineKind, dir: &std::path::Path) -> std::sync::Arc<dyn Engine> {
    let mut o = EngineOptions {
        kind,
        dir: dir.to_path_buf(),
        sync: SyncPolicy::Never,
        ..EngineOptions::default()
    };
    o.bitcask.max_file_size = 4096;
    o.bitcask.merge.check_interval = None;
    o.memory.save_points = Vec::new();
    hoardhaven_engine::open(&o).expect("open")
}

fuzz_target!(|case: Case| {
    if case.ops.len() > 64 {
        return;
    }
    let kind = if case.memory { EngineKind::Memory } else { EngineKind::Bitcask };
    let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let dir = tempfile::Builder::new().prefix("hh-fuzz-").tempdir_in(base).expect("tempdir");
    let mut e = open(kind, dir.path());
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (n, op) in case.ops.iter().enumerate() {
        let value = |len: u8| vec![b'a' + (n % 26) as u8; usize::from(len) * 7];
        match op {
            Op::Put { key: k, len } => {
                e.put(&key(*k), Bytes::from(value(*len)), PutOptions::default()).expect("put");
                model.insert(key(*k), value(*len));
            }
            Op::Delete { key: k } => {
                let r = e.delete(&key(*k), Precondition::None).expect("delete");
                assert_eq!(r.is_some(), model.remove(&key(*k)).is_some());
            }
            Op::CreateOnly { key: k } => {
                let opts = PutOptions { precondition: Precondition::IfAbsent, ..PutOptions::default() };
                let r = e.put(&key(*k), Bytes::from(value(3)), opts);
                assert_eq!(r.is_ok(), !model.contains_key(&key(*k)));
                if r.is_ok() {
                    model.insert(key(*k), value(3));
                }
            }
            Op::Batch { ops } => {
                let batch: Vec<_> = ops
                    .iter()
                    .take(16)
                    .map(|(k, put)| {
                        if *put {
                            BatchOp::Put { key: key(*k), value: Bytes::from(value(2)), expires_at: None }
                        } else {
                            BatchOp::Delete { key: key(*k) }
                        }
                    })
                    .collect();
                e.apply_batch(batch.clone()).expect("batch");
                for op in batch {
                    match op {
                        BatchOp::Put { key, value, .. } => model.insert(key, value.to_vec()),
                        BatchOp::Delete { key } => model.remove(&key),
                    };
                }
            }
            Op::Merge => {
                e.merge().expect("merge");
            }
            Op::Snapshot => {
                e.snapshot().expect("snapshot");
            }
            Op::Reopen => {
                e.close().expect("close");
                drop(e);
                e = open(kind, dir.path());
            }
        }
        for k in 0..32u8 {
            let got = e.get(&key(k)).expect("get").map(|v| v.bytes.to_vec());
            assert_eq!(got.as_ref(), model.get(&key(k)), "after {op:?}");
        }
    }
});
