//! Soak: a mixed workload on both engines for a set time, with merges and snapshots running
//! beside it, then: every acknowledged write reads back (after a reopen too), and memory
//! (RSS) and disk stayed bounded.
//!
//! `cargo test` runs the short form (`HOARDHAVEN_SOAK_SECS`, default 2 s per engine);
//! `scripts/soak.sh` runs the long one in release mode and writes the memory and disk curves
//! as CSV (`HOARDHAVEN_SOAK_OUT=dir`). The key space is fixed, so the data set is bounded and
//! RSS and disk must level off: disk (each inode once) may not pass 8x the live bytes plus
//! 32 MiB nor double from the first half of the run to its end, and RSS at the end may not pass twice the highest RSS seen in the
//! first quarter plus 64 MiB (a leak grows without bound; a working set does not).

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{ENGINES, open, scratch, tree_bytes};
use hoardhaven::engine::{BatchOp, EngineKind, Precondition, PutOptions, SyncPolicy};

const THREADS: u64 = 3;
const KEYS_PER_THREAD: u64 = 4000;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn value(t: u64, i: u64, n: u64) -> Vec<u8> {
    let mut v = format!("t{t}-i{i}-n{n}-").into_bytes();
    v.resize(64 + ((i * 31 + n) % 400) as usize, b'a' + (n % 26) as u8);
    v
}

/// One thread's writes: each thread owns its keys, so its model is exact.
fn writer(
    e: &Arc<dyn hoardhaven::Engine>,
    t: u64,
    stop: &AtomicBool,
) -> HashMap<u64, Option<Vec<u8>>> {
    let mut model: HashMap<u64, Option<Vec<u8>>> = HashMap::new();
    let key = |i: u64| format!("t{t}-k{i:05}").into_bytes();
    let mut n = 0u64;
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ t;
    while !stop.load(Ordering::Acquire) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = x % KEYS_PER_THREAD;
        n += 1;
        match x % 10 {
            0 => {
                if e.delete(&key(i), Precondition::None).is_ok() {
                    model.insert(i, None);
                }
            }
            1 => {
                let ops: Vec<_> = (0..4)
                    .map(|j| {
                        let i = (i + j * 7) % KEYS_PER_THREAD;
                        BatchOp::Put {
                            key: key(i),
                            value: Bytes::from(value(t, i, n)),
                            expires_at: None,
                        }
                    })
                    .collect();
                e.apply_batch(ops).expect("batch");
                for j in 0..4 {
                    let i = (i + j * 7) % KEYS_PER_THREAD;
                    model.insert(i, Some(value(t, i, n)));
                }
            }
            2 | 3 => {
                let got = e.get(&key(i)).expect("get").map(|v| v.bytes.to_vec());
                if let Some(want) = model.get(&i) {
                    assert_eq!(&got, want, "read during the soak");
                }
            }
            _ => {
                e.put(&key(i), Bytes::from(value(t, i, n)), PutOptions::default())
                    .expect("put");
                model.insert(i, Some(value(t, i, n)));
            }
        }
    }
    model
}

fn soak(kind: EngineKind, secs: u64, out: Option<&Path>) {
    let dir = scratch();
    let sync = SyncPolicy::Every(Duration::from_millis(20));
    let e = open(kind, dir.path(), sync).expect("open");
    let stop = Arc::new(AtomicBool::new(false));
    let merges = Arc::new(AtomicU64::new(0));
    let snapshots = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (e, stop) = (e.clone(), stop.clone());
            std::thread::spawn(move || writer(&e, t, &stop))
        })
        .collect();
    // Merges and snapshots beside the writes; the jobs are the test's own (no background
    // policy runs), so any error is a failure, returned from the thread.
    let jobs = {
        let (e, stop) = (e.clone(), stop.clone());
        let (merges, snapshots) = (merges.clone(), snapshots.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(200));
                if n % 3 == 2 {
                    e.snapshot().map_err(|err| format!("snapshot: {err}"))?;
                    snapshots.fetch_add(1, Ordering::Release);
                } else {
                    e.merge().map_err(|err| format!("merge: {err}"))?;
                    merges.fetch_add(1, Ordering::Release);
                }
                n += 1;
            }
            Ok(())
        })
    };
    let started = Instant::now();
    let mut curve = Vec::new();
    // Run for `secs`, and on until at least two merges and a snapshot have finished beside the
    // writes (a loaded machine may need longer); bounded.
    let jobs_ran = || merges.load(Ordering::Acquire) >= 2 && snapshots.load(Ordering::Acquire) >= 1;
    let bound = Duration::from_secs(secs) + common::STEP_TIMEOUT;
    while started.elapsed() < Duration::from_secs(secs) || !jobs_ran() {
        if jobs.is_finished() {
            break; // it failed: its error is reported below
        }
        assert!(
            started.elapsed() < bound,
            "{kind}: after {:?} only {} merges and {} snapshots had finished",
            started.elapsed(),
            merges.load(Ordering::Acquire),
            snapshots.load(Ordering::Acquire),
        );
        std::thread::sleep(Duration::from_millis(250));
        curve.push((
            started.elapsed().as_secs_f64(),
            rss_bytes(),
            tree_bytes(dir.path()),
        ));
    }
    stop.store(true, Ordering::Release);
    let models: Vec<_> = writers
        .into_iter()
        .map(|w| w.join().expect("writer"))
        .collect();
    if let Err(err) = jobs.join().expect("jobs") {
        panic!("{kind}: a job failed during the soak: {err}");
    }
    assert!(jobs_ran(), "{kind}: the job thread stopped early");
    let stats = e.stats().expect("stats");
    e.close().expect("close");
    drop(e);
    if let Some(out) = out {
        let mut csv = String::from("seconds,rss_bytes,disk_bytes\n");
        for (s, r, d) in &curve {
            csv.push_str(&format!("{s:.2},{r},{d}\n"));
        }
        std::fs::write(out.join(format!("soak-{kind}.csv")), csv).expect("write curve");
    }
    // Every acknowledged write reads back after a reopen.
    let e = open(kind, dir.path(), sync).expect("reopen");
    let mut checked = 0u64;
    for (t, model) in models.iter().enumerate() {
        for (i, want) in model {
            let key = format!("t{t}-k{i:05}").into_bytes();
            let got = e.get(&key).expect("get").map(|v| v.bytes.to_vec());
            assert_eq!(&got, want, "{kind}: t{t}-k{i:05} after reopen");
            checked += 1;
        }
    }
    // Bounded disk and memory.
    let disk_end = curve.last().map_or(0, |c| c.2);
    let disk_max = curve.iter().map(|c| c.2).max().unwrap_or(0);
    let half = (curve.len() / 2).max(1);
    let disk_first_half = curve[..half].iter().map(|c| c.2).max().unwrap_or(0);
    let live = stats.live_bytes.max(1);
    let slack = 32 << 20;
    // Dead records wait for the next merge and snapshots keep old files: a few times the live
    // bytes, and no growth from the first half of the run to its end.
    assert!(
        disk_end <= 8 * live + slack,
        "{kind}: disk {disk_end} bytes for {live} live bytes"
    );
    assert!(
        disk_end <= 2 * disk_first_half + (16 << 20),
        "{kind}: disk grew from {disk_first_half} to {disk_end}"
    );
    let quarter = (curve.len() / 4).max(1);
    let rss_early = curve[..quarter].iter().map(|c| c.1).max().unwrap_or(0);
    let rss_end = curve.last().map_or(0, |c| c.1);
    assert!(
        rss_end <= 2 * rss_early + (64 << 20),
        "{kind}: RSS grew from {rss_early} to {rss_end}"
    );
    eprintln!(
        "soak {kind}: {secs} s, {checked} keys checked, {} merges, {} snapshots, disk end {} KiB (max {} KiB, live {} KiB), RSS early {} MiB end {} MiB",
        merges.load(Ordering::Relaxed),
        snapshots.load(Ordering::Relaxed),
        disk_end >> 10,
        disk_max >> 10,
        live >> 10,
        rss_early >> 20,
        rss_end >> 20
    );
}

#[test]
fn soak_both_engines() {
    let secs = std::env::var("HOARDHAVEN_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let out = std::env::var("HOARDHAVEN_SOAK_OUT").ok();
    if let Some(o) = &out {
        std::fs::create_dir_all(o).expect("out dir");
    }
    for kind in ENGINES {
        soak(kind, secs, out.as_deref().map(Path::new));
    }
}
