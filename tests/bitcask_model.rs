//! Model-based property test: random operation sequences, including reopen, merge, rotation
//! and snapshot, must leave the bitcask engine agreeing with a `BTreeMap`, in both read modes;
//! listing pages of ranges, continued by cursor between writes, agree with it too. Value
//! compression is on or off at the start and flips at every reopen, so files written with it
//! off are read with it on and the other way round; values include compressible ones.

use std::collections::BTreeMap;

mod common;

use bytes::Bytes;
use common::bitcask_opts;
use common::listing::{Pager, RangeSpec};
use hoardhaven::Error;
use hoardhaven::engine::bitcask::{Bitcask, ReadMode};
use hoardhaven::engine::compression::{Algorithm, Compression};
use hoardhaven::engine::{BatchOp, Engine, Precondition, PutOptions, SyncPolicy, Version};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Put(u8, Vec<u8>),
    Delete(u8),
    CasPut(u8, Vec<u8>),
    Batch(Vec<(u8, Option<Vec<u8>>)>),
    Reopen,
    Merge,
    Snapshot,
    /// One listing page: continues the listing in progress, else starts this range.
    Page(u8, Option<u8>, Option<u8>, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..24;
    // Random bytes (stored raw: they do not shrink) and repetitive ones (compressed).
    let val = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        (proptest::collection::vec(any::<u8>(), 1..8), 0usize..600)
            .prop_map(|(unit, n)| unit.repeat(n)),
    ];
    prop_oneof![
        6 => (key.clone(), val.clone()).prop_map(|(k, v)| Op::Put(k, v)),
        3 => key.clone().prop_map(Op::Delete),
        2 => (key.clone(), val.clone()).prop_map(|(k, v)| Op::CasPut(k, v)),
        2 => proptest::collection::vec((key, proptest::option::of(val)), 1..6).prop_map(Op::Batch),
        1 => Just(Op::Reopen),
        1 => Just(Op::Merge),
        1 => Just(Op::Snapshot),
        3 => (any::<u8>(), proptest::option::of(0u8..50), proptest::option::of(0u8..50), 1usize..6)
            .prop_map(|(p, s, e, l)| Op::Page(p, s, e, l)),
    ]
}

fn k(i: u8) -> Vec<u8> {
    format!("key/{i}").into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn bitcask_agrees_with_a_btreemap(ops in proptest::collection::vec(op(), 1..60), mmap in any::<bool>(), compress in any::<bool>()) {
        let dir = tempfile::tempdir().expect("tempdir");
        // Both read modes: sealed files read with pread, or served as slices of their maps.
        let mut o = bitcask_opts(4096);
        o.read_mode = if mmap { ReadMode::Mmap } else { ReadMode::Pread };
        let mut compress = compress;
        let open_bitcask = |p: &std::path::Path, sync, compress: bool| {
            let mut o = o.clone();
            o.compression = Compression {
                algorithm: if compress { Algorithm::Lz4 } else { Algorithm::None },
                min_bytes: 64,
            };
            Bitcask::open(p, sync, &o).expect("open")
        };
        let mut e = open_bitcask(dir.path(), SyncPolicy::Never, compress);
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        // Every version each key was written with by `Put` / `CasPut` (all but the newest are
        // stale), kept across reopen and merge.
        let mut seen: BTreeMap<Vec<u8>, Vec<Version>> = BTreeMap::new();
        let mut pager = Pager::default();
        for op in ops {
            match op {
                Op::Put(i, v) => {
                    let w = e.put(&k(i), Bytes::from(v.clone()), PutOptions::default()).expect("put");
                    prop_assert_eq!(w.created, !model.contains_key(&k(i)));
                    model.insert(k(i), v);
                    seen.entry(k(i)).or_default().push(w.version);
                }
                Op::Delete(i) => {
                    let r = e.delete(&k(i), Precondition::None).expect("delete");
                    prop_assert_eq!(r.is_some(), model.remove(&k(i)).is_some());
                }
                Op::CasPut(i, v) => {
                    let cur = e.head(&k(i)).expect("head").map(|m| m.version);
                    if let Some(ver) = cur {
                        // A stale version (an older write of this key, else one below the
                        // current) is refused and changes nothing.
                        let stale = seen.get(&k(i))
                            .and_then(|vs| vs.iter().rev().find(|x| **x != ver).copied())
                            .unwrap_or(Version(ver.0 - 1));
                        let opts = PutOptions { precondition: Precondition::IfVersion(stale), ..PutOptions::default() };
                        let r = e.put(&k(i), Bytes::from_static(b"stale write"), opts);
                        prop_assert!(
                            matches!(r, Err(Error::PreconditionFailed { .. })),
                            "key {} version {:?} (current {:?}): {:?}", i, stale, ver, r.map(|w| w.version)
                        );
                        let opts = PutOptions { precondition: Precondition::IfVersion(ver), ..PutOptions::default() };
                        let w = e.put(&k(i), Bytes::from(v.clone()), opts).expect("cas with current version");
                        prop_assert!(w.version > ver);
                        model.insert(k(i), v);
                        seen.entry(k(i)).or_default().push(w.version);
                    } else {
                        let opts = PutOptions { precondition: Precondition::IfExists, ..PutOptions::default() };
                        prop_assert!(e.put(&k(i), Bytes::from(v), opts).is_err());
                    }
                }
                Op::Batch(items) => {
                    let ops: Vec<BatchOp> = items.iter().map(|(i, v)| match v {
                        Some(v) => BatchOp::Put { key: k(*i), value: Bytes::from(v.clone()), expires_at: None },
                        None => BatchOp::Delete { key: k(*i) },
                    }).collect();
                    e.apply_batch(ops).expect("batch");
                    for (i, v) in items {
                        match v {
                            Some(v) => { model.insert(k(i), v); }
                            None => { model.remove(&k(i)); }
                        }
                    }
                }
                Op::Reopen => {
                    e.close().expect("close");
                    drop(e);
                    compress = !compress;
                    e = open_bitcask(dir.path(), SyncPolicy::Never, compress);
                }
                Op::Merge => { e.merge().expect("merge"); }
                Op::Snapshot => { e.snapshot().expect("snapshot"); }
                Op::Page(p, s, end, limit) => {
                    let spec = RangeSpec::pick(k, p, s, end);
                    if let Err(m) = pager.step(&e, spec, limit, &model) {
                        prop_assert!(false, "{}", m);
                    }
                }
            }
            for i in 0..24u8 {
                let got = e.get(&k(i)).expect("get").map(|v| v.bytes.to_vec());
                prop_assert_eq!(got.as_ref(), model.get(&k(i)), "key {}", i);
            }
        }
        let listed = e.list(b"key/", None, 1000).expect("list").keys;
        prop_assert_eq!(listed, model.keys().cloned().collect::<Vec<_>>());
    }
}
