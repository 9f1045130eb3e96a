//! Corruption of every kind of file, for both engines: bit flips and truncations at
//! pseudo-random offsets (a fixed seed, so a failure can be replayed) of bitcask data files
//! (sealed and active) and hint files, and of the memory engine's snapshot, log and manifest.
//!
//! For each case, on a copy of a store whose history is known: opening either refuses with a
//! clear error naming the damaged file (`Corrupted` / `UnsupportedFormat`), or succeeds; then
//! every key reads back as a value it really had at some point of its history (the damage
//! was cut off: a torn tail), or as an error, never as other bytes. A read that meets a
//! damaged record counts it in `Stats.corrupt_records`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::{copy_dir, open, scratch};
use hoardhaven::Error;
use hoardhaven::engine::{EngineKind, Precondition, PutOptions, SyncPolicy};

/// Every value each key ever had (`None` = absent), in order.
type History = BTreeMap<Vec<u8>, Vec<Option<Vec<u8>>>>;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Builds a store with every kind of file and returns its history.
fn build(kind: EngineKind, dir: &Path) -> History {
    let mut h: History = BTreeMap::new();
    let e = open(kind, dir, SyncPolicy::Always).expect("open");
    let put = |h: &mut History, i: u32, round: u32| {
        let k = format!("key-{i:03}").into_bytes();
        let mut v = format!("r{round}-{i}-").into_bytes();
        v.resize(30 + (i as usize * 13) % 300, b'0' + (i % 10) as u8);
        e.put(&k, Bytes::from(v.clone()), PutOptions::default())
            .expect("put");
        h.entry(k).or_insert_with(|| vec![None]).push(Some(v));
    };
    for i in 0..60 {
        put(&mut h, i, 0);
    }
    for i in (0..60).step_by(3) {
        put(&mut h, i, 1);
    }
    // Memory: the base snapshot; bitcask: files sealed (hints are written on rotation).
    e.snapshot().expect("snapshot");
    for i in (0..60).step_by(7) {
        let k = format!("key-{i:03}").into_bytes();
        e.delete(&k, Precondition::None).expect("delete");
        h.entry(k).or_default().push(None);
    }
    for i in 60..80 {
        put(&mut h, i, 2);
    }
    e.close().expect("close");
    h
}

/// The files to damage, named by kind.
fn targets(kind: EngineKind, dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("ls")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    let last_data = names
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "data"))
        .max()
        .cloned();
    for p in names {
        let n = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let label = match kind {
            EngineKind::Bitcask if n.ends_with(".hint") => "bitcask hint",
            EngineKind::Bitcask if Some(&p) == last_data.as_ref() => "bitcask active data",
            EngineKind::Bitcask if n.ends_with(".data") => "bitcask sealed data",
            EngineKind::Memory if n.ends_with(".hhs") => "memory snapshot",
            EngineKind::Memory if n.ends_with(".hha") => "memory log",
            EngineKind::Memory if n == "MANIFEST" => "memory manifest",
            _ => continue,
        };
        out.push((label, p));
    }
    out
}

#[derive(Debug, Default)]
struct Tally {
    cases: u64,
    refused: u64,
    opened: u64,
    read_errors: u64,
    counted: u64,
}

fn check_case(kind: EngineKind, dir: &Path, hist: &History, label: &str, t: &mut Tally) {
    t.cases += 1;
    let e = match open(kind, dir, SyncPolicy::Always) {
        Ok(e) => e,
        Err(err) => {
            assert!(
                matches!(
                    err,
                    Error::Corrupted { .. } | Error::UnsupportedFormat { .. }
                ),
                "{label}: refused with an unclear error: {err}"
            );
            t.refused += 1;
            return;
        }
    };
    t.opened += 1;
    let mut errors = 0;
    for (k, values) in hist {
        match e.get(k) {
            Ok(got) => {
                let got = got.map(|v| v.bytes.to_vec());
                assert!(
                    values.contains(&got),
                    "{label}: {} read as bytes it never held: {:?}",
                    String::from_utf8_lossy(k),
                    got.map(|g| String::from_utf8_lossy(&g).into_owned())
                );
            }
            Err(err) => {
                assert!(matches!(err, Error::Corrupted { .. }), "{label}: {err}");
                errors += 1;
            }
        }
    }
    let stats = e.stats().expect("stats");
    if errors > 0 {
        t.read_errors += errors;
        assert!(
            stats.corrupt_records >= errors,
            "{label}: {errors} corrupt reads but stats count {}",
            stats.corrupt_records
        );
    }
    if stats.corrupt_records > 0 {
        t.counted += 1;
    }
    // Listing never fails or lists garbage keys.
    let page = e.list(b"", None, 10_000).expect("list");
    for k in page.keys {
        assert!(hist.contains_key(&k), "{label}: listed a key never written");
    }
    let _ = e.close();
}

fn damage_every_file(kind: EngineKind, seed: u64, per_file: u32) -> Tally {
    let pristine = scratch();
    let hist = build(kind, pristine.path());
    let files = targets(kind, pristine.path());
    let kinds: std::collections::BTreeSet<_> = files.iter().map(|(l, _)| *l).collect();
    let want: &[&str] = match kind {
        EngineKind::Bitcask => &["bitcask active data", "bitcask hint", "bitcask sealed data"],
        _ => &["memory log", "memory manifest", "memory snapshot"],
    };
    for w in want {
        assert!(
            kinds.contains(w),
            "{kind}: the store has no {w} file: {files:?}"
        );
    }
    let mut rng = Rng(seed);
    let mut t = Tally::default();
    for (label, path) in &files {
        let name = path.file_name().expect("name").to_owned();
        let len = std::fs::metadata(path).expect("meta").len();
        for case in 0..per_file {
            let copy = scratch();
            copy_dir(pristine.path(), copy.path());
            let target = copy.path().join(&name);
            let mut bytes = std::fs::read(&target).expect("read");
            let what = if case % 4 == 3 {
                let cut = rng.below(len);
                bytes.truncate(cut as usize);
                format!("{label} {name:?} cut at {cut} of {len}")
            } else {
                let at = rng.below(len) as usize;
                let bit = rng.below(8);
                bytes[at] ^= 1 << bit;
                format!("{label} {name:?} bit {bit} of byte {at} of {len}")
            };
            std::fs::write(&target, &bytes).expect("write");
            check_case(kind, copy.path(), &hist, &what, &mut t);
        }
    }
    eprintln!("{kind}: {} files, {t:?}", files.len());
    t
}

#[test]
fn bitcask_bit_flips_and_truncations_never_serve_wrong_bytes() {
    let t = damage_every_file(EngineKind::Bitcask, 0x9e37_79b9_7f4a_7c15, 24);
    assert!(t.refused > 0 && t.opened > 0, "{t:?}");
}

#[test]
fn memory_bit_flips_and_truncations_never_serve_wrong_bytes() {
    let t = damage_every_file(EngineKind::Memory, 0x2545_f491_4f6c_dd1d, 80);
    assert!(t.refused > 0 && t.opened > 0, "{t:?}");
}

/// A sealed bitcask file damaged after start-up read its hint (so the scan did not see it):
/// the read fails its checksum, is refused and counted, and the other keys still read.
#[test]
fn damage_found_on_read_is_refused_and_counted() {
    let dir = scratch();
    let hist = build(EngineKind::Bitcask, dir.path());
    let e = open(EngineKind::Bitcask, dir.path(), SyncPolicy::Always).expect("open");
    let sealed = targets(EngineKind::Bitcask, dir.path())
        .into_iter()
        .find(|(l, _)| *l == "bitcask sealed data")
        .expect("a sealed file")
        .1;
    let mut bytes = std::fs::read(&sealed).expect("read");
    for i in (40..bytes.len()).step_by(50) {
        bytes[i] ^= 0x20;
    }
    std::fs::write(&sealed, &bytes).expect("write");
    let mut t = Tally::default();
    let mut errors = 0;
    for (k, values) in &hist {
        match e.get(k) {
            Ok(v) => assert!(values.contains(&v.map(|v| v.bytes.to_vec()))),
            Err(Error::Corrupted { file, .. }) => {
                assert_eq!(file, sealed);
                errors += 1;
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(errors > 0, "the damaged records were never read");
    assert_eq!(e.stats().expect("stats").corrupt_records, errors);
    t.read_errors = errors;
    eprintln!("read-time damage: {t:?}");
}
