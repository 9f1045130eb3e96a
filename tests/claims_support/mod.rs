//! Helpers shared by the claim tests (`group_commit`, `power_loss`, `torn_reads`,
//! `consistent_cut`, `batch_kill`, `write_errors_http`, `crash_points`): opening either engine
//! with test settings, self-checking values, the seed of a run (for `fastrand::Rng::with_seed`), and waiting on a condition.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hoardhaven::engine::bitcask::BitcaskOptions;
use hoardhaven::engine::memory::MemoryOptions;
use hoardhaven::engine::{Engine, EngineKind, EngineOptions, SyncPolicy};

/// Both engines.
pub const ENGINES: [EngineKind; 2] = [EngineKind::Bitcask, EngineKind::Memory];

/// Longest wait for any event; only a hang or a bug reaches it.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Options for `kind` over `dir`: no background merges or snapshots (tests run them), small
/// bitcask files so rotation and merges have work.
pub fn options(kind: EngineKind, dir: &Path, sync: SyncPolicy) -> EngineOptions {
    let mut bitcask = BitcaskOptions {
        max_file_size: 16 * 1024,
        ..BitcaskOptions::default()
    };
    bitcask.merge.check_interval = None;
    let memory = MemoryOptions {
        save_points: Vec::new(),
        ..MemoryOptions::default()
    };
    EngineOptions {
        kind,
        dir: dir.to_path_buf(),
        sync,
        bitcask,
        memory,
    }
}

/// Opens `kind` over `dir` with [`options`].
pub fn open(kind: EngineKind, dir: &Path, sync: SyncPolicy) -> Arc<dyn Engine> {
    hoardhaven::engine::open(&options(kind, dir, sync))
        .unwrap_or_else(|e| panic!("{kind}: open {}: {e}", dir.display()))
}

/// A value that proves itself: `key|seq|padding|crc32c(all before)`.
pub fn value(key: &[u8], seq: u64, pad: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + pad + 32);
    v.extend_from_slice(key);
    v.push(b'|');
    v.extend_from_slice(seq.to_string().as_bytes());
    v.push(b'|');
    v.extend(std::iter::repeat_n(b'a' + (seq % 26) as u8, pad));
    v.push(b'|');
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(format!("{crc:08x}").as_bytes());
    v
}

/// The sequence number of a value made by [`value`] for `key`, or why it is not one.
pub fn check(key: &[u8], v: &[u8]) -> Result<u64, String> {
    let show = || String::from_utf8_lossy(v).into_owned();
    if v.len() < 9 {
        return Err(format!("too short: {:?}", show()));
    }
    let (body, crc) = v.split_at(v.len() - 8);
    let want = format!("{:08x}", crc32c::crc32c(body));
    if crc != want.as_bytes() {
        return Err(format!("checksum mismatch: {:?}", show()));
    }
    let rest = body
        .strip_prefix(key)
        .and_then(|r| r.strip_prefix(b"|"))
        .ok_or_else(|| format!("holds another key: {:?}", show()))?;
    let end = rest.iter().position(|&b| b == b'|').ok_or("no seq")?;
    std::str::from_utf8(&rest[..end])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad seq: {:?}", show()))
}

/// A seed from `HH_SEED` or the clock (printed, so a failure can be replayed).
pub fn seed(test: &str) -> u64 {
    let s = std::env::var("HH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("{test}: HH_SEED={s}");
    s
}

/// Waits until `cond` holds: re-checks it after each short pause; panics with `what` only if
/// it never comes (an event, not a time budget).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
