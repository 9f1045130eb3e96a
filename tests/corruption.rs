//! Corruption of every kind of file, for both engines: bit flips and truncations at
//! pseudo-random offsets (a fixed seed, so a failure can be replayed) of bitcask data files
//! (sealed and active) and hint files, and of the memory engine's snapshot, log and manifest.
//!
//! For each case, on a copy of a store whose history (every write, in order) is known: opening
//! either refuses with a clear error (`Corrupted` / `UnsupportedFormat`), or succeeds, and then
//! the store holds exactly the state after some prefix of the history (the damage was a tail
//! that could be cut: the newest writes are gone, nothing else), except keys whose read fails
//! with `Corrupted`; never other bytes, never a key that vanished or rolled back alone. A
//! read that meets a damaged record counts it in `Stats.corrupt_records`.
//!
//! Per kind of file (docs/reliability.md): a damaged hint never stops start-up (the data file
//! is scanned, so the full state is there); damage to a memory snapshot or manifest is always
//! refused (neither can be cut); a sealed data file opens whole or is refused, never cut; the
//! last data file and the log either refuse or open to a prefix, and both outcomes occur.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::{State, copy_dir, open, scratch};
use hoardhaven::Error;
use hoardhaven::engine::{EngineKind, Precondition, PutOptions, SyncPolicy};

/// Every acknowledged write in order: a key and its new value (`None` = deleted).
type History = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// What the store holds after each prefix of `h`: `states(h)[n]` is the state after `n` writes.
fn states(h: &History) -> Vec<State> {
    let mut out = vec![State::new()];
    let mut cur = State::new();
    for (k, v) in h {
        match v {
            Some(v) => cur.insert(k.clone(), v.clone()),
            None => cur.remove(k),
        };
        out.push(cur.clone());
    }
    out
}

/// Builds a store with every kind of file and returns its history.
fn build(kind: EngineKind, dir: &Path) -> History {
    let mut h: History = Vec::new();
    let e = open(kind, dir, SyncPolicy::Always).expect("open");
    let put = |h: &mut History, i: u32, round: u32| {
        let k = format!("key-{i:03}").into_bytes();
        let mut v = format!("r{round}-{i}-").into_bytes();
        v.resize(30 + (i as usize * 13) % 300, b'0' + (i % 10) as u8);
        e.put(&k, Bytes::from(v.clone()), PutOptions::default())
            .expect("put");
        h.push((k, Some(v)));
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
        h.push((k, None));
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

#[derive(Clone, Debug, Default)]
struct Tally {
    cases: u64,
    refused: u64,
    opened: u64,
    read_errors: u64,
    counted: u64,
}

/// Opens the damaged copy and checks it: refused clearly, or exactly a prefix of the history
/// (keys whose read fails `Corrupted` aside). Returns the prefix length when it opened.
fn check_case(
    kind: EngineKind,
    dir: &Path,
    all: &[State],
    label: &str,
    t: &mut Tally,
) -> Option<usize> {
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
            return None;
        }
    };
    t.opened += 1;
    let keys: BTreeSet<&Vec<u8>> = all.iter().flat_map(|s| s.keys()).collect();
    let mut got = State::new();
    let mut unreadable = BTreeSet::new();
    for k in &keys {
        match e.get(k) {
            Ok(Some(v)) => {
                got.insert(k.to_vec(), v.bytes.to_vec());
            }
            Ok(None) => {}
            Err(err) => {
                assert!(matches!(err, Error::Corrupted { .. }), "{label}: {err}");
                unreadable.insert(k.to_vec());
            }
        }
    }
    let errors = unreadable.len() as u64;
    // The newest prefix the readable keys agree with.
    let agrees = |s: &State| {
        keys.iter()
            .filter(|k| !unreadable.contains(**k))
            .all(|k| s.get(*k) == got.get(*k))
    };
    let Some(prefix) = (0..all.len()).rev().find(|&n| agrees(&all[n])) else {
        let last = all.last().expect("states");
        panic!(
            "{label}: opened to a state that is no prefix of the history \
             (against the final state: {})",
            common::diff(last, &got)
        );
    };
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
    // Listing never fails and lists exactly the prefix's keys (unreadable ones may be listed).
    let page = e.list(b"", None, 10_000).expect("list");
    let listed: BTreeSet<Vec<u8>> = page.keys.into_iter().collect();
    for k in &listed {
        assert!(
            all[prefix].contains_key(k) || unreadable.contains(k),
            "{label}: listed {} that the store does not hold",
            String::from_utf8_lossy(k)
        );
    }
    for k in all[prefix].keys() {
        assert!(
            listed.contains(k) || unreadable.contains(k),
            "{label}: {} holds a value but is not listed",
            String::from_utf8_lossy(k)
        );
    }
    let _ = e.close();
    Some(prefix)
}

/// Damages every file `per_file` times; returns the tally of each kind of file.
fn damage_every_file(kind: EngineKind, seed: u64, per_file: u32) -> BTreeMap<&'static str, Tally> {
    let pristine = scratch();
    let hist = build(kind, pristine.path());
    let all = states(&hist);
    let whole = Some(all.len() - 1);
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
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
    for (label, path) in &files {
        let name = path.file_name().expect("name").to_owned();
        let len = std::fs::metadata(path).expect("meta").len();
        for case in 0..per_file {
            let copy = scratch();
            copy_dir(pristine.path(), copy.path());
            let target = copy.path().join(&name);
            let mut bytes = std::fs::read(&target).expect("read");
            let what = if case % 4 == 3 {
                let cut = rng.u64(..len);
                bytes.truncate(cut as usize);
                format!("{label} {name:?} cut at {cut} of {len}")
            } else {
                let at = rng.u64(..len) as usize;
                let bit = rng.u64(..8);
                bytes[at] ^= 1 << bit;
                format!("{label} {name:?} bit {bit} of byte {at} of {len}")
            };
            std::fs::write(&target, &bytes).expect("write");
            let t = tallies.entry(label).or_default();
            let opened = check_case(kind, copy.path(), &all, &what, t);
            match *label {
                // A damaged hint is ignored: the data file is scanned, the full state is there.
                "bitcask hint" => assert_eq!(
                    opened, whole,
                    "{what}: a damaged hint must neither lose nor refuse anything"
                ),
                // Neither can be cut back to a valid prefix: always refused.
                "memory snapshot" | "memory manifest" => assert_eq!(
                    opened, None,
                    "{what}: opened (to prefix {opened:?}) instead of refusing"
                ),
                // Not the tail a crash tears: opens whole (damage is then found on read) or is
                // refused, never cut.
                "bitcask sealed data" => assert!(
                    opened.is_none() || opened == whole,
                    "{what}: a sealed file was cut (prefix {opened:?})"
                ),
                _ => {}
            }
        }
    }
    eprintln!("{kind}: {} files, {tallies:#?}", files.len());
    tallies
}

/// The kinds of file a crash can tear saw both outcomes: refused, and cut and opened.
fn assert_both_outcomes(tallies: &BTreeMap<&'static str, Tally>, kinds: &[&str]) {
    for k in kinds {
        let t = tallies
            .get(k)
            .unwrap_or_else(|| panic!("{k} never damaged"));
        assert!(
            t.refused > 0 && t.opened > 0,
            "{k}: expected both refusals and cut-and-open cases: {t:?}"
        );
    }
}

#[test]
fn bitcask_bit_flips_and_truncations_never_serve_wrong_bytes() {
    let t = damage_every_file(EngineKind::Bitcask, 0x9e37_79b9_7f4a_7c15, 24);
    assert_both_outcomes(&t, &["bitcask active data"]);
}

#[test]
fn memory_bit_flips_and_truncations_never_serve_wrong_bytes() {
    let t = damage_every_file(EngineKind::Memory, 0x2545_f491_4f6c_dd1d, 80);
    assert_both_outcomes(&t, &["memory log"]);
}

/// A sealed bitcask file damaged after start-up read its hint (so the scan did not see it):
/// the read fails its checksum, is refused and counted, and the other keys still read.
#[test]
fn damage_found_on_read_is_refused_and_counted() {
    let dir = scratch();
    let hist = build(EngineKind::Bitcask, dir.path());
    let last = states(&hist).pop().expect("final state");
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
    let keys: BTreeSet<&Vec<u8>> = hist.iter().map(|(k, _)| k).collect();
    for k in keys {
        match e.get(k) {
            Ok(v) => assert_eq!(
                v.map(|v| v.bytes.to_vec()).as_ref(),
                last.get(k),
                "{} is not its last value",
                String::from_utf8_lossy(k)
            ),
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
