//! The fuzz targets' seed corpus, `fuzz/seeds/<target>/`: small valid inputs written by the
//! engines themselves (bitcask data and hint files and single records, memory-engine logs,
//! snapshots, manifests and single log records) and RESP requests, so that a short CI fuzzing run starts from
//! real formats instead of an empty corpus. `scripts/fuzz.sh` copies them into a scratch
//! corpus; the committed seeds never grow.
//!
//! This test checks that every committed seed is still valid for today's decoders and that
//! the set of seeds is the one [`generate`] makes: a format change makes it fail, and
//! `HOARDHAVEN_WRITE_SEEDS=1 cargo test --test fuzz_seeds` writes them afresh.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::{memory_opts, open_bitcask, open_memory, put};
use hoardhaven::engine::bitcask::{hint, record, scan};
use hoardhaven::engine::memory::{MemoryOptions, decode};
use hoardhaven::engine::{BatchOp, Engine, Precondition, PutOptions, SyncPolicy, UnixMillis};

/// `fuzz/seeds`.
fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds")
}

/// Target -> file name -> bytes.
type Seeds = BTreeMap<&'static str, BTreeMap<String, Vec<u8>>>;

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("ls")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn name(p: &Path) -> String {
    p.file_name().expect("name").to_string_lossy().into_owned()
}

/// A write of every kind: puts, an overwrite, a key with an expiry, a delete, a batch.
fn write_some(e: &dyn Engine, round: u8) {
    for i in 0..6u8 {
        put(
            e,
            &format!("key{i}"),
            &vec![b'a' + i + round; 20 + usize::from(i) * 9],
        );
    }
    e.put(
        b"ttl",
        Bytes::from_static(b"expires"),
        PutOptions {
            expires_at: Some(UnixMillis(4_102_444_800_000)),
            ..PutOptions::default()
        },
    )
    .expect("put with expiry");
    e.delete(b"key1", Precondition::None).expect("delete");
    e.apply_batch(vec![
        BatchOp::Put {
            key: b"b1".to_vec(),
            value: Bytes::from(vec![round; 12]),
            expires_at: None,
        },
        BatchOp::Delete {
            key: b"key2".to_vec(),
        },
    ])
    .expect("batch");
}

/// Makes the seeds from real stores.
fn generate() -> Seeds {
    let mut out = Seeds::new();
    // Bitcask: the smallest files (4 KiB), written until one is sealed (with its hint).
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let e = open_bitcask(dir.path(), SyncPolicy::Never, 4096);
        let mut round = 0;
        while common::data_files(dir.path()).len() < 2 {
            write_some(&e, round);
            round += 1;
            assert!(round < 100, "no rotation");
        }
        write_some(&e, round);
        e.close().expect("close");
    }
    let b = out.entry("decode_bitcask").or_default();
    let data: Vec<PathBuf> = common::data_files(dir.path());
    assert!(data.len() >= 2, "no sealed data file: {data:?}");
    let first = std::fs::read(&data[0]).expect("read");
    b.insert("sealed.data".into(), first.clone());
    b.insert(
        "last.data".into(),
        std::fs::read(data.last().expect("a file")).expect("read"),
    );
    let hints = common::files_with_ext(dir.path(), "hint");
    b.insert(
        "sealed.hint".into(),
        std::fs::read(&hints[0]).expect("read hint"),
    );
    // The first record of the first file (after its 32-byte header), and the file's first
    // batch envelope.
    let mut pos = 32;
    while pos < first.len() {
        let r = record::decode(&first[pos..]).expect("a record");
        let len = r.header.record_len() as usize;
        let label = match r.header.kind {
            record::Kind::Batch => "batch.rec",
            _ => "record.rec",
        };
        b.entry(label.to_string())
            .or_insert_with(|| first[pos..pos + len].to_vec());
        pos += len;
    }
    assert!(b.contains_key("batch.rec"), "no batch in the first file");

    // Memory engine: a store's first log (sequence 1, as the fuzz target names it), and from
    // another store a snapshot and the manifest naming it.
    let o = MemoryOptions { ..memory_opts() };
    let m = out.entry("decode_memory").or_default();
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let e = open_memory(dir.path(), SyncPolicy::Never, &o);
        write_some(&e, 0);
        write_some(&e, 1);
        drop(e); // no close: close would write a snapshot and start a new log
    }
    let logs = common::files_with_ext(dir.path(), "hha");
    assert_eq!(logs.len(), 1, "{logs:?}");
    let log = std::fs::read(&logs[0]).expect("read log");
    m.insert("first.hha".into(), log.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let e = open_memory(dir.path(), SyncPolicy::Never, &o);
        write_some(&e, 0);
        e.snapshot().expect("snapshot");
    }
    let snaps = common::files_with_ext(dir.path(), "hhs");
    m.insert(
        "base.hhs".into(),
        std::fs::read(&snaps[0]).expect("read snapshot"),
    );
    m.insert(
        "MANIFEST".into(),
        std::fs::read(dir.path().join("MANIFEST")).expect("read manifest"),
    );
    // The log's first record (after its 24-byte header).
    let (_, n) = decode::log_record(&log[24..]).expect("a log record");
    m.insert("record.rec".into(), log[24..24 + n].to_vec());

    // ops_model: `arbitrary` reads any bytes; a few patterns with both engine flags.
    let o = out.entry("ops_model").or_default();
    for (i, seed) in [
        (0u8..64).collect::<Vec<u8>>(),
        (0u8..64).map(|b| b.wrapping_mul(37) | 1).collect(),
        std::iter::repeat_n([1u8, 0, 3, 5, 4, 6], 12)
            .flatten()
            .collect(),
        std::iter::repeat_n([0u8, 2, 9, 1, 200, 5, 6], 10)
            .flatten()
            .collect(),
    ]
    .into_iter()
    .enumerate()
    {
        o.insert(format!("pattern-{i}"), seed);
    }

    // resp_parse: requests as clients send them (multibulk, pipelined, inline, binary values).
    let r = out.entry("resp_parse").or_default();
    r.insert(
        "get.resp".into(),
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec(),
    );
    r.insert(
        "pipeline.resp".into(),
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\n\x00!\r\n*1\r\n$5\r\nMULTI\r\n*1\r\n$4\r\nEXEC\r\n"
            .to_vec(),
    );
    r.insert(
        "inline.resp".into(),
        b"PING\r\nSET k \"a b\\n\" 'c d'\r\n\r\n".to_vec(),
    );
    out
}

/// Checks one committed seed with the decoder its target fuzzes.
fn check_seed(target: &str, path: &Path) {
    let n = name(path);
    let bytes = std::fs::read(path).expect("read seed");
    assert!(!bytes.is_empty(), "{target}/{n} is empty");
    let scratch = tempfile::tempdir().expect("tempdir");
    match (target, n.rsplit('.').next().unwrap_or("")) {
        ("decode_bitcask", "data") => {
            let p = scratch.path().join("0000000001-00000.data");
            std::fs::write(&p, &bytes).expect("write");
            let end =
                scan::scan(&p, false, |_| Ok(())).unwrap_or_else(|e| panic!("{target}/{n}: {e}"));
            assert_eq!(end.valid_len, bytes.len() as u64, "{target}/{n}: not whole");
        }
        ("decode_bitcask", "hint") => {
            let p = scratch.path().join("0000000001-00000.hint");
            std::fs::write(&p, &bytes).expect("write");
            let mut entries = 0;
            let h = hint::load(&p, |_| {
                entries += 1;
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{target}/{n}: {e}"));
            assert!(h.is_some() && entries > 0, "{target}/{n}: hint not loaded");
        }
        ("decode_bitcask", "rec") => {
            let r = record::decode(&bytes).unwrap_or_else(|e| panic!("{target}/{n}: {e}"));
            assert_eq!(r.header.record_len(), bytes.len() as u64, "{target}/{n}");
        }
        ("decode_memory", "hha") => {
            let p = scratch.path().join("log-0000000000000001.hha");
            std::fs::write(&p, &bytes).expect("write");
            let records = decode::log_file(&p, 1).unwrap_or_else(|e| panic!("{target}/{n}: {e}"));
            assert!(records > 0, "{target}/{n}: no records");
        }
        ("decode_memory", "hhs") => {
            let p = scratch.path().join("snap-0000000000000001.hhs");
            std::fs::write(&p, &bytes).expect("write");
            let keys = decode::snapshot_file(&p).unwrap_or_else(|e| panic!("{target}/{n}: {e}"));
            assert!(keys > 0, "{target}/{n}: no keys");
        }
        ("decode_memory", "MANIFEST") => {
            std::fs::write(scratch.path().join("MANIFEST"), &bytes).expect("write");
            let m =
                decode::manifest_in(scratch.path()).unwrap_or_else(|e| panic!("{target}/{n}: {e}"));
            assert!(m.is_some(), "{target}/{n}: no manifest");
        }
        ("decode_memory", "rec") => {
            let (_, len) =
                decode::log_record(&bytes).unwrap_or_else(|e| panic!("{target}/{n}: {e}"));
            assert_eq!(len, bytes.len(), "{target}/{n}");
        }
        ("ops_model", _) => {}
        ("resp_parse", "resp") => {
            let limits = hoardhaven_resp_proto::ParseLimits::default();
            let (mut at, mut commands) = (0, 0);
            while at < bytes.len() {
                let (_, used) = hoardhaven_resp_proto::parse::parse(&bytes[at..], &limits)
                    .unwrap_or_else(|e| panic!("{target}/{n}: {e}"))
                    .unwrap_or_else(|| panic!("{target}/{n}: incomplete at {at}"));
                at += used;
                commands += 1;
            }
            assert!(commands > 0, "{target}/{n}: no command");
        }
        _ => panic!("{target}/{n}: no check for this seed"),
    }
}

#[test]
fn the_fuzz_seed_corpus_is_present_and_valid() {
    let root = seeds_dir();
    let generated = generate();
    if std::env::var_os("HOARDHAVEN_WRITE_SEEDS").is_some() {
        for (target, seeds) in &generated {
            let d = root.join(target);
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).expect("mkdir");
            for (n, bytes) in seeds {
                std::fs::write(d.join(n), bytes).expect("write seed");
            }
        }
    }
    for (target, seeds) in &generated {
        let d = root.join(target);
        assert!(
            d.is_dir(),
            "{} is missing: run HOARDHAVEN_WRITE_SEEDS=1 cargo test --test fuzz_seeds",
            d.display()
        );
        let committed: Vec<String> = files(&d).iter().map(|p| name(p)).collect();
        let want: Vec<String> = seeds.keys().cloned().collect();
        assert_eq!(
            committed, want,
            "{target}: the committed seeds differ from the generated set \
             (HOARDHAVEN_WRITE_SEEDS=1 cargo test --test fuzz_seeds writes them)"
        );
        for p in files(&d) {
            check_seed(target, &p);
        }
    }
    // Every fuzz target has seeds.
    let targets: Vec<String> =
        files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets"))
            .iter()
            .map(|p| name(p).trim_end_matches(".rs").to_string())
            .collect();
    let seeded: Vec<String> = generated.keys().map(|t| t.to_string()).collect();
    assert_eq!(targets, seeded, "fuzz targets without seeds");
}
