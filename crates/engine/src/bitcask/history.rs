//! The change history watchers read from the data files, for versions older than the ring.
//!
//! Owns [`DiskHistory`], the bitcask [`HistorySource`]. Appended data files (minor number 0)
//! hold every put and tombstone in sequence order, so they are the history. A merge replaces
//! its inputs with outputs (minor numbers 1..) that keep only live records: the history
//! below a merge's seal point is gone once the outputs exist. So the floor is the highest
//! `base_seq - 1` among merge outputs (0 when no merge ever ran), and a read scans the
//! appended files from the one that may hold `after + 1` on. Expiries appear as the
//! tombstones written when the key was found expired (as `delete` changes).
//!
//! Reads scan whole files with the recovery scanner (checksums checked, torn tail of the
//! active file ignored), so a resume from far back costs a sequential read of the files that
//! follow it.

use std::sync::{Arc, Weak};

use bytes::Bytes;

use super::Inner;
use super::data_file::{DATA_MAGIC, DataFile, FILE_HEADER_LEN, FileHeader};
use super::record::{HEADER_LEN, Kind};
use super::scan;
use crate::Version;
use crate::changes::{Change, ChangeKind, HistorySource};
use crate::error::{Error, Result};

/// Reads history from the data files of a bitcask engine (weakly held: no cycle).
pub(super) struct DiskHistory {
    inner: Weak<Inner>,
}

impl DiskHistory {
    pub(super) fn new(inner: Weak<Inner>) -> Self {
        DiskHistory { inner }
    }

    fn inner(&self) -> Result<Arc<Inner>> {
        self.inner.upgrade().ok_or(Error::Closed)
    }
}

/// Every data file in the table with its header, in id order.
fn files_with_headers(inner: &Inner) -> Result<Vec<(Arc<DataFile>, FileHeader)>> {
    let mut files: Vec<Arc<DataFile>> = inner.files.read().values().cloned().collect();
    files.sort_by_key(|f| f.id);
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let head = match f.read_at(0, FILE_HEADER_LEN) {
            Ok(h) => h,
            // Retired by a merge meanwhile.
            Err(_) if !f.path.exists() => continue,
            Err(e) => return Err(e),
        };
        let h = FileHeader::decode(&head, DATA_MAGIC, &f.path)?;
        out.push((f, h));
    }
    Ok(out)
}

fn floor_of(files: &[(Arc<DataFile>, FileHeader)]) -> Version {
    Version(
        files
            .iter()
            .filter(|(f, _)| f.id.minor > 0)
            .map(|(_, h)| h.base_seq.saturating_sub(1))
            .max()
            .unwrap_or(0),
    )
}

impl HistorySource for DiskHistory {
    fn floor(&self) -> Result<Version> {
        Ok(floor_of(&files_with_headers(&*self.inner()?)?))
    }

    fn read_after(
        &self,
        after: Version,
        limit: usize,
        value_cap: usize,
    ) -> Result<Option<Vec<Change>>> {
        let inner = self.inner()?;
        let files = files_with_headers(&inner)?;
        if after < floor_of(&files) {
            return Ok(None);
        }
        let appended: Vec<_> = files.iter().filter(|(f, _)| f.id.minor == 0).collect();
        let active = inner.active_no.load(std::sync::atomic::Ordering::Acquire);
        let active_path = inner.file(active).map(|f| f.path.clone());
        let mut out: Vec<Change> = Vec::new();
        let mut full = false;
        for (i, (f, _)) in appended.iter().enumerate() {
            // Skip a file when the next one starts at or below `after + 1`: all its records
            // are at most `after`.
            if appended
                .get(i + 1)
                .is_some_and(|(_, next)| next.base_seq <= after.0 + 1)
            {
                continue;
            }
            let torn_ok = active_path.as_ref() == Some(&f.path);
            let scanned = scan::scan(&f.path, torn_ok, |item| {
                let seq = item.header.seq;
                if seq <= after.0 {
                    return Ok(());
                }
                if full {
                    return Err(Error::Busy("history page full"));
                }
                let version = Version(seq);
                let change = match item.header.kind {
                    Kind::Put => {
                        let start = HEADER_LEN + item.key.len();
                        let stored = &item.raw[start.min(item.raw.len())..];
                        let unpacked;
                        let value = if item.header.codec == crate::compression::Codec::Raw {
                            stored
                        } else {
                            unpacked = crate::compression::unpack(
                                item.header.codec,
                                stored,
                                super::MAX_VALUE_LEN,
                            )
                            .map_err(|reason| Error::corrupted(&f.path, item.offset, reason))?;
                            &unpacked[..]
                        };
                        Change {
                            version,
                            kind: ChangeKind::Put,
                            key: Bytes::copy_from_slice(item.key),
                            value: (value.len() <= value_cap)
                                .then(|| Bytes::copy_from_slice(value)),
                            value_len: value.len() as u64,
                            batch: version,
                        }
                    }
                    _ => Change::removal(version, ChangeKind::Delete, item.key),
                };
                out.push(change);
                if out.len() >= limit.max(1) {
                    full = true;
                }
                Ok(())
            });
            match scanned {
                Ok(_) => {}
                Err(Error::Busy(_)) if full => break,
                // Retired by a merge while read: the history may be gone now.
                Err(_) if !f.path.exists() => {
                    if after < floor_of(&files_with_headers(&inner)?) {
                        return Ok(None);
                    }
                    break;
                }
                Err(e) => return Err(e),
            }
            if full {
                break;
            }
        }
        out.sort_by_key(|c| c.version);
        Ok(Some(out))
    }
}
