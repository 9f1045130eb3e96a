//! Bitcask recovery: torn tails are cut, damage elsewhere is refused or reported, never served.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

mod common;

use bytes::Bytes;
use common::{bitcask_opts, check_filled, data_files, value};
use hoardhaven::Error;
use hoardhaven::engine::bitcask::Bitcask;
use hoardhaven::engine::{Engine, PutOptions, SyncPolicy};

const FILE_SIZE: u64 = 16 * 1024;

fn open(dir: &Path) -> hoardhaven::Result<Bitcask> {
    Bitcask::open(dir, SyncPolicy::Never, &bitcask_opts(FILE_SIZE))
}

fn fill(dir: &Path, n: usize) {
    let e = open(dir).expect("open");
    common::fill(&e, n);
    e.close().expect("close");
}

/// Offsets of the records in a data file (after its 32-byte header).
fn record_offsets(path: &Path) -> Vec<u64> {
    let b = fs::read(path).expect("read");
    let mut pos = 32usize;
    let mut out = Vec::new();
    while pos + 36 <= b.len() {
        let klen = u16::from_le_bytes([b[pos + 6], b[pos + 7]]) as usize;
        let vlen = u32::from_le_bytes([b[pos + 8], b[pos + 9], b[pos + 10], b[pos + 11]]) as usize;
        out.push(pos as u64);
        pos += 36 + klen + vlen;
    }
    out
}

#[test]
fn torn_tails_are_cut_and_everything_before_is_kept() {
    type Damage = Box<dyn Fn(&Path)>;
    let tails: Vec<(&str, Damage)> = vec![
        ("garbage", Box::new(|p: &Path| append(p, &[0xA5; 77]))),
        ("zeros", Box::new(|p: &Path| append(p, &[0u8; 200]))),
        (
            "short header",
            Box::new(|p: &Path| append(p, &[1, 2, 3, 4, 1, 1])),
        ),
        (
            "half a record",
            Box::new(|p: &Path| {
                let mut rec = Vec::new();
                // A plausible header claiming more bytes than follow.
                rec.extend_from_slice(&[0, 0, 0, 0, 1, 1, 3, 0, 100, 0, 0, 0]);
                rec.extend_from_slice(&[0u8; 24]);
                rec.extend_from_slice(b"abc");
                append(p, &rec)
            }),
        ),
    ];
    for (name, damage) in tails {
        let dir = tempfile::tempdir().expect("tempdir");
        fill(dir.path(), 300);
        let last = data_files(dir.path()).pop().expect("a data file");
        let good_len = fs::metadata(&last).expect("stat").len();
        damage(&last);
        let e = open(dir.path()).unwrap_or_else(|err| panic!("{name}: {err}"));
        check_filled(&e, 300);
        assert_eq!(
            fs::metadata(&last).expect("stat").len(),
            good_len,
            "{name}: tail cut"
        );
        e.put(
            b"after",
            Bytes::from_static(b"crash"),
            PutOptions::default(),
        )
        .expect("put");
        e.close().expect("close");
        let e = open(dir.path()).expect("reopen");
        check_filled(&e, 300);
        assert_eq!(
            e.get(b"after").expect("get").map(|v| v.bytes),
            Some(Bytes::from_static(b"crash"))
        );
    }
}

#[test]
fn a_record_cut_in_the_middle_is_dropped_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    fill(dir.path(), 50);
    let last = data_files(dir.path()).pop().expect("file");
    let len = fs::metadata(&last).expect("stat").len();
    OpenOptions::new()
        .write(true)
        .open(&last)
        .and_then(|f| f.set_len(len - 3))
        .expect("truncate");
    let e = open(dir.path()).expect("open");
    check_filled(&e, 49);
    assert_eq!(e.get(b"key49").expect("get"), None);
}

fn append(p: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .append(true)
        .open(p)
        .and_then(|mut f| f.write_all(bytes))
        .expect("append");
}

fn flip(p: &Path, at: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .expect("open");
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).expect("read");
    b[0] ^= 0x10;
    f.write_all_at(&b, at).expect("write");
}

#[test]
fn damage_in_the_middle_is_refused_with_file_and_offset() {
    // In a sealed file, and in the middle of the last file (valid records after it).
    for which in ["sealed", "last"] {
        let dir = tempfile::tempdir().expect("tempdir");
        fill(dir.path(), 400);
        let files = data_files(dir.path());
        assert!(files.len() >= 2, "rotation happened");
        let victim = if which == "sealed" {
            files[0].clone()
        } else {
            files[files.len() - 1].clone()
        };
        let offs = record_offsets(&victim);
        let at = offs[offs.len() / 2];
        flip(&victim, at + 40);
        // Hints would hide data damage at start-up; take them away to force the scan.
        for h in fs::read_dir(dir.path()).expect("dir").flatten() {
            if h.path().extension().is_some_and(|x| x == "hint") {
                fs::remove_file(h.path()).expect("rm hint");
            }
        }
        match open(dir.path()) {
            Err(Error::Corrupted { file, offset, .. }) => {
                assert_eq!(file, victim, "{which}");
                assert_eq!(offset, at, "{which}");
            }
            other => panic!("{which}: expected Corrupted, got {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn a_record_failing_its_checksum_is_never_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    fill(dir.path(), 400);
    let e = open(dir.path()).expect("open");
    // key5 lives in the first (sealed) file; flip a byte of its value on disk.
    let first = data_files(dir.path())[0].clone();
    let offs = record_offsets(&first);
    flip(&first, offs[5] + 36 + 4 + 2);
    match e.get(b"key5") {
        Err(Error::Corrupted { file, .. }) => assert_eq!(file, first),
        other => panic!("expected Corrupted, got {other:?}"),
    }
    assert!(e.head(b"key5").is_err());
    assert_eq!(e.stats().expect("stats").corrupt_records, 2);
    // Other keys still read fine.
    assert_eq!(
        e.get(b"key6").expect("get").map(|v| v.bytes.to_vec()),
        Some(value(6))
    );
}

#[test]
fn damaged_hints_fall_back_to_scanning() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let e = open(dir.path()).expect("open");
        for i in 0..400 {
            e.put(
                format!("key{i}").as_bytes(),
                Bytes::from(value(i)),
                PutOptions::default(),
            )
            .expect("put");
        }
        for i in 0..100 {
            e.delete(format!("key{i}").as_bytes(), Default::default())
                .expect("delete");
        }
        e.merge().expect("merge");
        e.close().expect("close");
    }
    let hints: Vec<_> = fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "hint"))
        .collect();
    assert!(!hints.is_empty(), "merge wrote hint files");
    for h in &hints {
        let len = fs::metadata(h).expect("stat").len();
        flip(h, len / 2);
    }
    let e = open(dir.path()).expect("open");
    for i in 0..400 {
        let got = e
            .get(format!("key{i}").as_bytes())
            .expect("get")
            .map(|v| v.bytes.to_vec());
        assert_eq!(got, (i >= 100).then(|| value(i)), "key{i}");
    }
}

#[test]
fn hints_and_scans_rebuild_the_same_keydir() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let e = open(dir.path()).expect("open");
        for round in 0..3 {
            for i in 0..300 {
                e.put(
                    format!("k{i}").as_bytes(),
                    Bytes::from(format!("{round}{i}")),
                    PutOptions::default(),
                )
                .expect("put");
            }
            for i in (0..300).step_by(7) {
                e.delete(format!("k{i}").as_bytes(), Default::default())
                    .expect("delete");
            }
        }
        e.merge().expect("merge");
        for i in 0..50 {
            e.put(
                format!("n{i}").as_bytes(),
                Bytes::from_static(b"new"),
                PutOptions::default(),
            )
            .expect("put");
        }
        e.close().expect("close");
    }
    let read_all = |e: &Bitcask| {
        let keys = e.list(b"", None, 10_000).expect("list").keys;
        keys.into_iter()
            .map(|k| {
                let v = e.get(&k).expect("get").expect("present");
                (k, v.bytes, v.meta.version)
            })
            .collect::<Vec<_>>()
    };
    let with_hints = read_all(&open(dir.path()).expect("open"));
    for h in fs::read_dir(dir.path()).expect("dir").flatten() {
        if h.path().extension().is_some_and(|x| x == "hint") {
            fs::remove_file(h.path()).expect("rm");
        }
    }
    let scanned = read_all(&open(dir.path()).expect("open"));
    assert_eq!(with_hints, scanned);
    assert_eq!(with_hints.len(), 300 - 43 + 50);
}

#[test]
fn a_sealed_file_cut_below_its_header_is_refused_not_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    fill(dir.path(), 2000);
    let files = data_files(dir.path());
    assert!(files.len() >= 3, "several files: {files:?}");
    // The first sealed file, with or without its hint: its records were acknowledged once.
    for keep_hint in [true, false] {
        let copy = tempfile::tempdir().expect("tempdir");
        common::copy_dir(dir.path(), copy.path());
        let sealed = copy.path().join(files[0].file_name().expect("name"));
        fs::write(&sealed, b"HHDF").expect("cut below the header");
        if !keep_hint {
            let _ = fs::remove_file(sealed.with_extension("hint"));
        }
        match open(copy.path()) {
            Err(Error::Corrupted { file, .. }) => assert_eq!(file, sealed),
            Err(other) => panic!("expected a corruption error, got {other}"),
            Ok(_) => {
                panic!("a sealed file cut short was dropped silently (hint kept: {keep_hint})")
            }
        }
    }
}

#[test]
fn empty_and_leftover_files_do_not_block_start_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    fill(dir.path(), 10);
    fs::write(dir.path().join("LOCK"), b"").expect("lock");
    fs::write(dir.path().join("0000000099-00000.data"), b"").expect("empty data file");
    fs::write(
        dir.path().join("0000000001-00001.data.merging"),
        b"half a merge",
    )
    .expect("merging");
    fs::write(dir.path().join("0000000001-00000.hint.tmp"), b"half a hint").expect("hint tmp");
    let e = open(dir.path()).expect("open");
    check_filled(&e, 10);
    assert!(!dir.path().join("0000000001-00001.data.merging").exists());
    assert!(!dir.path().join("0000000099-00000.data").exists());
}

#[test]
fn a_newer_format_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    fill(dir.path(), 10);
    let first = data_files(dir.path())[0].clone();
    let mut b = fs::read(&first).expect("read");
    b[8] = 9;
    let crc = crc32c::crc32c(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    fs::write(&first, &b).expect("write");
    match open(dir.path()) {
        Err(e @ Error::UnsupportedFormat { found: 9, .. }) => {
            assert!(e.to_string().contains("format version 9"), "{e}");
        }
        other => panic!("expected UnsupportedFormat, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn mmap_and_pread_read_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    fill(dir.path(), 500);
    let mut o = bitcask_opts(FILE_SIZE);
    o.read_mode = hoardhaven::engine::bitcask::ReadMode::Mmap;
    let e = Bitcask::open(dir.path(), SyncPolicy::Never, &o).expect("open");
    check_filled(&e, 500);
    for i in 500..800 {
        e.put(
            format!("key{i}").as_bytes(),
            Bytes::from(value(i)),
            PutOptions::default(),
        )
        .expect("put");
    }
    check_filled(&e, 800);
    e.merge().expect("merge");
    check_filled(&e, 800);
}
