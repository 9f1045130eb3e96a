//! Background threads of the memory engine, each with a shutdown path.
//!
//! Owns: the log flusher (hands buffered records to the OS every flush interval and fsyncs
//! every `d` under `SyncPolicy::Every(d)`; not started under `Always`, where writers sync
//! themselves), and the maintenance thread (active expiry sweep, save points, log-growth
//! rewrites). Both wait on the engine's stop condition variable, so `close` wakes and joins
//! them at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Inner;
use super::aof::LogOp;
use super::checkpoint::{self, Kind};
use crate::changes::{Change, ChangeKind};
use crate::error::{Error, Result};
use crate::{SyncPolicy, UnixMillis, Version};

/// Starts the engine's threads.
pub(crate) fn spawn(inner: &Arc<Inner>) -> Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::new();
    let spawn = |name: &str, f: fn(&Inner)| {
        let inner = inner.clone();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || f(&inner))
            .map_err(|e| Error::io(format!("starting thread {name}"), e))
    };
    if inner.log.is_some() && inner.sync != SyncPolicy::Always {
        threads.push(spawn("hh-mem-flush", flusher)?);
    }
    threads.push(spawn("hh-mem-maint", maintenance)?);
    Ok(threads)
}

/// Sleeps up to `d`; returns true when the engine is stopping.
fn sleep(inner: &Inner, d: Duration) -> bool {
    let mut stop = inner.stopping.lock();
    if !*stop {
        inner.stop_cv.wait_for(&mut stop, d);
    }
    *stop
}

fn flusher(inner: &Inner) {
    let Some(log) = &inner.log else { return };
    let mut last_sync = Instant::now();
    while !sleep(inner, inner.opts.flush_interval) {
        let sync = matches!(inner.sync, SyncPolicy::Every(d) if last_sync.elapsed() >= d);
        match log.flush(sync) {
            Ok(_) if sync => last_sync = Instant::now(),
            Ok(_) => {}
            // The log is poisoned now and says so on every write; nothing more to flush.
            Err(_) => return,
        }
    }
}

fn maintenance(inner: &Inner) {
    while !sleep(inner, inner.opts.sweep_interval) {
        sweep(inner);
        if let Some(kind) = due(inner) {
            // Busy (a snapshot requested through the API is running) is fine: try later.
            let _ = checkpoint::run(inner, kind, false);
        }
    }
}

/// Active expiry: removes expired keys shard by shard (lazy expiry on read already hides them).
/// Each swept key is logged as a delete (not waited for) and published as an `expire` change
/// with a version of its own, as a write would be.
fn sweep(inner: &Inner) {
    let now = UnixMillis::now().0;
    let t = &inner.table;
    for s in t.shards() {
        if s.read().count_expired(now) == 0 {
            continue;
        }
        let _cut = inner.cut.read();
        let writable = inner.check_writable().is_ok();
        let mut g = s.write();
        let mut keys: Vec<Vec<u8>> = Vec::new();
        if writable {
            g.for_each(|e| {
                if e.expired(now) {
                    keys.push(e.key.to_vec());
                }
            });
        }
        Arc::make_mut(&mut g).sweep_expired(t.hasher(), now);
        if keys.is_empty() {
            continue;
        }
        let first = inner.next_versions(keys.len() as u64);
        let ops: Vec<LogOp<'_>> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| LogOp::Delete {
                version: first + i as u64,
                key,
            })
            .collect();
        // Not staged: the keys are already gone from the table (expired), so nothing waits.
        // On a full disk the deletes are not logged: replay drops expired keys anyway.
        if let Ok(reserved) = inner.log_reserve(&ops) {
            let _ = inner.log_append(&ops, None, reserved);
        }
        inner.changes.publish(
            keys.iter()
                .enumerate()
                .map(|(i, k)| Change::removal(Version(first + i as u64), ChangeKind::Expire, k))
                .collect(),
        );
    }
}

/// Which checkpoint is due, if any: a save point, or the log's growth since the last rewrite.
fn due(inner: &Inner) -> Option<Kind> {
    let since = inner.last_save.lock().elapsed();
    let dirty = inner.dirty.load(Ordering::Acquire);
    let save = inner
        .opts
        .save_points
        .iter()
        .any(|p| dirty >= p.changes.max(1) && since >= p.after);
    if save {
        return Some(Kind::Snapshot);
    }
    let log = inner.log.as_ref()?;
    let growth = log
        .appended()
        .wrapping_sub(inner.log_base_lsn.load(Ordering::Acquire));
    let base = inner.files.lock().base_bytes;
    let grown = growth >= inner.opts.rewrite_min_bytes
        && growth.saturating_mul(100) >= base.saturating_mul(inner.opts.rewrite_growth_percent);
    grown.then_some(Kind::Merge)
}
