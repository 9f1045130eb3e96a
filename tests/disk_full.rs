//! Disk full, for both engines: through the fault seam (ENOSPC on every write from the Nth
//! on, always runs) and on a real small filesystem the test mounts itself (a tmpfs with
//! `size=`, as root; skipped with a message where mounting is not permitted).
//!
//! What must hold: the failing write gets `Error::DiskFull`; the store stays readable and
//! serves every acknowledged write; nothing refused appears after reopen.
//! - both engines take writes again as soon as space is back, without a restart: a full disk
//!   is met before a record is applied and refused cleanly (bitcask: `Writer::reserve`; the
//!   memory engine: `LogWriter::reserve`, which zero-fills its log ahead before a write draws
//!   its version or touches the table).

mod common;

use bytes::Bytes;
use common::{ENGINES, State, diff, dump, open, scratch};
use hoardhaven::Error;
use hoardhaven::engine::fault::{self, Fault, Op, Plan};
use hoardhaven::engine::{Engine, EngineKind, PutOptions, SyncPolicy};

fn value(i: u32, len: usize) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.resize(len, b'x');
    v
}

/// Writes until one is refused; returns its number and error. Acknowledged writes go into
/// `state`.
fn write_until_full(e: &dyn Engine, state: &mut State, from: u32, len: usize) -> (u32, Error) {
    let mut i = from;
    loop {
        let key = format!("k{:05}", i % 3000).into_bytes();
        let v = value(i, len);
        match e.put(&key, Bytes::from(v.clone()), PutOptions::default()) {
            Ok(_) => {
                state.insert(key, v);
            }
            Err(err) => return (i, err),
        }
        i += 1;
        assert!(i < from + 200_000, "the disk never filled up");
    }
}

fn check_readable(kind: EngineKind, e: &dyn Engine, state: &State, label: &str) {
    for (k, v) in state {
        let got = e
            .get(k)
            .unwrap_or_else(|err| panic!("{kind} {label}: read failed: {err}"));
        assert_eq!(
            got.map(|g| g.bytes.to_vec()).as_ref(),
            Some(v),
            "{kind} {label}"
        );
    }
}

fn through_the_seam(kind: EngineKind, sync: SyncPolicy) {
    let dir = scratch();
    let mut state = State::new();
    let e = open(kind, dir.path(), sync).expect("open");
    for i in 0..50 {
        let key = format!("k{i:05}").into_bytes();
        e.put(&key, Bytes::from(value(i, 200)), PutOptions::default())
            .expect("put");
        state.insert(key, value(i, 200));
    }
    let mut plan = Plan::new(dir.path(), &[Op::Write], 1);
    plan.fault = Fault::Short(28);
    plan.sticky = true;
    let armed = fault::arm(plan);
    let (refused, err) = write_until_full(&*e, &mut state, 1000, 300);
    assert!(
        matches!(err, Error::DiskFull { .. }),
        "{kind} {sync}: {err:?}"
    );
    // The refused write is refused again while full (a smaller one may still fit in space
    // the engine already holds), and the store is readable all along.
    for _ in 0..3 {
        let r = e.put(
            format!("k{:05}", refused % 3000).as_bytes(),
            Bytes::from(value(refused, 300)),
            PutOptions::default(),
        );
        assert!(
            r.is_err(),
            "{kind} {sync}: a write was accepted on a full disk"
        );
    }
    check_readable(kind, &*e, &state, "while full");
    armed.heal();
    // Space is back: writes are taken again without a restart.
    write_until_count(&*e, &mut state, 5000, 100);
    check_readable(kind, &*e, &state, "after space came back");
    drop(armed);
    let _ = e.close();
    drop(e);
    let e = open(kind, dir.path(), sync).expect("reopen");
    let got = dump(&*e).expect("dump");
    // Every acknowledged write is there; a write refused with DiskFull never appears.
    assert_eq!(got, state, "{kind} {sync}: {}", diff(&state, &got));
    write_until_count(&*e, &mut state, 9000, 10);
}

fn write_until_count(e: &dyn Engine, state: &mut State, from: u32, n: u32) {
    for i in from..from + n {
        let key = format!("k{:05}", i % 3000).into_bytes();
        e.put(&key, Bytes::from(value(i, 100)), PutOptions::default())
            .expect("a write after space came back");
        state.insert(key, value(i, 100));
    }
}

#[test]
fn bitcask_disk_full_through_the_seam_sync_always() {
    through_the_seam(EngineKind::Bitcask, SyncPolicy::Always);
}

#[test]
fn bitcask_disk_full_through_the_seam_sync_never() {
    through_the_seam(EngineKind::Bitcask, SyncPolicy::Never);
}

#[test]
fn memory_disk_full_through_the_seam_recovers_without_restart() {
    through_the_seam(EngineKind::Memory, SyncPolicy::Always);
}

#[test]
fn memory_disk_full_through_the_seam_sync_never() {
    through_the_seam(EngineKind::Memory, SyncPolicy::Never);
}

#[test]
fn a_real_full_filesystem_is_survived_by_both_engines() {
    for kind in ENGINES {
        let Some(fs) = common::SmallFs::mount("6m") else {
            return;
        };
        let data = fs.dir.join("data");
        let mut state = State::new();
        let e = open(kind, &data, SyncPolicy::Always).expect("open");
        for i in 0..20 {
            let key = format!("k{i:05}").into_bytes();
            e.put(&key, Bytes::from(value(i, 500)), PutOptions::default())
                .expect("put");
            state.insert(key, value(i, 500));
        }
        let filler = fs.fill(256 * 1024);
        let (_, err) = write_until_full(&*e, &mut state, 100, 500);
        assert!(
            matches!(err, Error::DiskFull { .. }),
            "{kind}: expected DiskFull, got {err:?}"
        );
        check_readable(kind, &*e, &state, "on a full tmpfs");
        std::fs::remove_file(&filler).expect("free space");
        // Both engines take writes again without a restart.
        write_until_count(&*e, &mut state, 5000, 200);
        check_readable(kind, &*e, &state, "after space came back");
        let _ = e.close();
        drop(e);
        let e = open(kind, &data, SyncPolicy::Always).expect("reopen after space came back");
        let got = dump(&*e).expect("dump");
        // Nothing acknowledged lost, nothing refused applied.
        assert_eq!(got, state, "{kind}: {}", diff(&state, &got));
        write_until_count(&*e, &mut state, 9000, 50);
        e.close().expect("close");
    }
}
