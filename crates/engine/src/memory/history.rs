//! The change history watchers read from the append-only logs, for versions older than the
//! ring.
//!
//! Owns [`LogHistory`], the memory engine's [`HistorySource`]. The logs from the manifest's
//! `first_log` on hold every write after the base snapshot's cut; a snapshot or log rewrite
//! makes a new base and deletes the logs before it, dropping that history. So the floor is
//! one below the lowest version in the logs (or the current version when they hold none).
//! Expired keys swept by the maintenance thread are logged as deletes, so they appear as
//! `delete` changes here.
//!
//! Writes on different shards can be appended to the log out of version order, and the
//! log's buffer lags the table: a read first notes the current version, flushes the buffer
//! (no fsync) and then keeps only versions up to the noted one, so what it returns has no
//! hole. Each read parses the logs whole (they are bounded by the rewrite thresholds).

use std::sync::Weak;

use bytes::Bytes;

use super::Inner;
use super::aof::{LogOp, log_name, read_log_with};
use crate::Version;
use crate::changes::{Change, ChangeKind, HistorySource};
use crate::error::{Error, Result};

/// Reads history from the logs of a memory engine (weakly held: no cycle).
pub(super) struct LogHistory {
    inner: Weak<Inner>,
}

impl LogHistory {
    pub(super) fn new(inner: Weak<Inner>) -> Self {
        LogHistory { inner }
    }

    /// Every change in the logs with a version in `(after, upto]`, sorted, and the lowest
    /// version the logs hold.
    fn scan(
        &self,
        after: Version,
        value_cap: usize,
    ) -> Result<(Vec<Change>, Option<u64>, Version)> {
        let inner = self.inner.upgrade().ok_or(Error::Closed)?;
        let upto = inner.changes.current();
        if let Some(log) = &inner.log {
            log.flush(false)?;
        }
        let (first, last) = {
            let f = inner.files.lock();
            (f.manifest.first_log, f.log_seq)
        };
        let mut out = Vec::new();
        let mut lowest: Option<u64> = None;
        for seq in first..=last {
            let path = inner.dir.join(log_name(seq));
            if !path.exists() {
                continue;
            }
            read_log_with(&path, seq, seq == last, false, |op| {
                let v = op.version();
                lowest = Some(lowest.map_or(v, |l| l.min(v)));
                if v <= after.0 || v > upto.0 {
                    return;
                }
                let version = Version(v);
                out.push(match *op {
                    LogOp::Put { key, value, .. } => Change {
                        version,
                        kind: ChangeKind::Put,
                        key: Bytes::copy_from_slice(key),
                        value: (value.len() <= value_cap).then(|| Bytes::copy_from_slice(value)),
                        value_len: value.len() as u64,
                        batch: version,
                    },
                    LogOp::Delete { key, .. } => Change::removal(version, ChangeKind::Delete, key),
                });
            })?;
        }
        out.sort_by_key(|c| c.version);
        Ok((out, lowest, upto))
    }
}

fn floor(lowest: Option<u64>, upto: Version) -> Version {
    lowest.map_or(upto, |l| Version(l.saturating_sub(1)))
}

impl HistorySource for LogHistory {
    fn floor(&self) -> Result<Version> {
        let (_, lowest, upto) = self.scan(Version(u64::MAX), 0)?;
        Ok(floor(lowest, upto))
    }

    fn read_after(
        &self,
        after: Version,
        limit: usize,
        value_cap: usize,
    ) -> Result<Option<Vec<Change>>> {
        let (mut out, lowest, upto) = self.scan(after, value_cap)?;
        if after < floor(lowest, upto) {
            return Ok(None);
        }
        out.truncate(limit.max(1));
        Ok(Some(out))
    }
}
