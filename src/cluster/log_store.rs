//! The Raft log on disk: segmented append-only files, an in-memory offset index, grouped
//! fdatasyncs, and the vote and purge point saved atomically.
//!
//! # On-disk format (directory `<data-dir>/raft/`)
//!
//! - `log-<first index, 20 digits>.seg`: a segment. It starts with the 8-byte magic
//!   `HHRAFTL1`, then frames `[payload len: u32 LE][crc32c: u32 LE][payload]`, where the
//!   CRC32C covers the length bytes and the payload, and the payload is one log entry encoded
//!   with postcard. A segment is appended to until it passes [`SEGMENT_BYTES`]; then the next
//!   entry opens a new one, named by that entry's index. A frame that is short or fails its
//!   checksum at the tail of the newest segment is a torn append (never acknowledged: the
//!   callback fires only after fdatasync) and is cut off at open; anywhere else it is damage
//!   and the log refuses to open.
//! - `vote`, `purged`: small state files `[crc32c: u32 LE][postcard payload]`, replaced
//!   atomically (temp file, fsync, rename, directory fsync) before the call that saves them
//!   returns.
//! - `committed`: the commit index, a hint only. One [`COMMITTED_BYTES`]-byte record
//!   `[crc32c: u32 LE][payload len: u32 LE][postcard Option<LogId>][zeros]` (the CRC covers
//!   the length and the payload), overwritten in place with one `pwrite` and no fsync: it is
//!   saved on every commit, and three fsyncs there made up most of a lone write's latency. A
//!   record that is missing, torn or from an older format reads as "nothing known", and a
//!   value past the last entry in the log is lowered to it (every entry up to a known commit
//!   index is committed). Losing it costs a restarted node only the wait for a leader.
//!
//! Why the commit index may be lost: a leader that restarts is not restored as leader in its
//! old term (the saved vote is read back as not committed: it follows the leader it hears
//! from, or calls an election after the election timeout; calling one at once made the next
//! failover take twice as long, 4.5 s instead of 2.2 s). A
//! restored leader's read index rests on its saved commit index, so a stale one served reads
//! from before writes it had acknowledged; a leader elected in a new term first commits an
//! entry of that term, past every acknowledged write, whatever it had saved.
//!
//! Appends write the frames with `pwrite` under the state lock and hand the segment to one
//! flusher thread, which calls fdatasync once for every append that queued meanwhile (group
//! commit) and only then fires openraft's `LogFlushed` callbacks, in order. Truncate cuts the
//! segment holding the first removed entry and deletes later segments (fsynced before
//! returning). Purge records the purge point first, then deletes whole segments that lie at
//! or below it; openraft only purges what a snapshot covers.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogId, RaftLogReader, StorageIOError};
use parking_lot::{Mutex, RwLock};

use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};

/// Magic at the start of every segment.
pub const SEGMENT_MAGIC: &[u8; 8] = b"HHRAFTL1";
/// A segment is closed once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Size of the `committed` record.
pub const COMMITTED_BYTES: usize = 64;
/// Longest frame payload accepted when reading (a bound against a damaged length).
const MAX_FRAME: u32 = 256 * 1024 * 1024;

fn sio(e: StorageIOError<u64>) -> StorageError {
    StorageError::IO { source: e }
}

fn any(e: &io::Error) -> AnyError {
    AnyError::new(e)
}

/// Where an entry's frame lies.
#[derive(Clone, Copy, Debug)]
struct Loc {
    segment: u64,
    offset: u64,
    len: u32,
    log_id: LogId,
}

struct Segment {
    file: Arc<File>,
    path: PathBuf,
    len: u64,
}

struct State {
    segments: BTreeMap<u64, Segment>,
    index: BTreeMap<u64, Loc>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

struct FlushJob {
    file: Arc<File>,
    callback: LogFlushed<TypeConfig>,
}

struct Shared {
    dir: PathBuf,
    state: RwLock<State>,
    flusher: Mutex<Sender<FlushJob>>,
    /// The `committed` record, overwritten in place.
    committed_file: File,
}

/// The log store; cheap to clone (clones share one log). Also its own reader.
#[derive(Clone)]
pub struct LogStore(Arc<Shared>);

/// Encodes one frame.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("log-{first:020}.seg"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes a small state file atomically: temp file, fsync, rename, directory fsync.
pub fn write_state_file(dir: &Path, name: &str, payload: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut bytes = crc32c::crc32c(payload).to_le_bytes().to_vec();
    bytes.extend_from_slice(payload);
    {
        let f = File::create(&tmp)?;
        f.write_all_at(&bytes, 0)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Reads a state file written by [`write_state_file`]; `None` when absent.
pub fn read_state_file(dir: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let bytes = match std::fs::read(dir.join(name)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if bytes.len() < 4 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name}: shorter than its checksum"),
        ));
    }
    let (crc, payload) = bytes.split_at(4);
    let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(payload) != want {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name}: checksum mismatch"),
        ));
    }
    Ok(Some(payload.to_vec()))
}

/// Decodes exactly `bytes` as a `T`: bytes left over mean the file holds something else (a
/// lenient decode once read a saved `Option<LogId>` as a `LogId`, index 1, and a restarted
/// leader served reads from before its last acknowledged writes).
fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> io::Result<T> {
    let bad = |e: String| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"));
    let (v, rest) = postcard::take_from_bytes(bytes).map_err(|e| bad(e.to_string()))?;
    if !rest.is_empty() {
        return Err(bad(format!("{} bytes left over", rest.len())));
    }
    Ok(v)
}

fn encode<T: serde::Serialize>(v: &T) -> io::Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(|e| io::Error::other(format!("encoding: {e}")))
}

/// The `committed` record for `c` (format in the module doc).
fn committed_record(c: &Option<LogId>) -> io::Result<[u8; COMMITTED_BYTES]> {
    let payload = encode(c)?;
    let mut rec = [0u8; COMMITTED_BYTES];
    if payload.len() > COMMITTED_BYTES - 8 {
        return Err(io::Error::other("commit index record too long"));
    }
    rec[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    rec[8..8 + payload.len()].copy_from_slice(&payload);
    let crc = crc32c::crc32c(&rec[4..8 + payload.len()]);
    rec[..4].copy_from_slice(&crc.to_le_bytes());
    Ok(rec)
}

/// Reads the `committed` record: `None` when absent, torn or unreadable (a hint; warned).
fn read_committed_hint(dir: &Path) -> Option<LogId> {
    let parse = |bytes: &[u8]| -> io::Result<Option<LogId>> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_owned());
        if bytes.is_empty() {
            return Ok(None);
        }
        if bytes.len() != COMMITTED_BYTES {
            return Err(bad("not a commit index record"));
        }
        let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        if len > COMMITTED_BYTES - 8 {
            return Err(bad("length out of range"));
        }
        let crc = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if crc32c::crc32c(&bytes[4..8 + len]) != crc {
            return Err(bad("checksum mismatch"));
        }
        decode::<Option<LogId>>("committed", &bytes[8..8 + len])
    };
    let read = match std::fs::read(dir.join("committed")) {
        Ok(b) => parse(&b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    };
    read.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the saved commit index is unreadable; a leader will tell it again");
        None
    })
}

/// Scans one segment: its frames' locations, and the offset where valid frames end.
/// A scanned segment: its entries, where valid frames end, and whether a bad frame follows.
type Scan = (Vec<(Loc, Entry)>, u64, bool);

fn scan_segment(file: &File, segment: u64) -> io::Result<Scan> {
    let len = file.metadata()?.len();
    let mut magic = [0u8; 8];
    if len < 8 {
        return Ok((Vec::new(), 0, true));
    }
    file.read_exact_at(&mut magic, 0)?;
    if &magic != SEGMENT_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("segment {segment}: bad magic"),
        ));
    }
    let mut out = Vec::new();
    let mut off = 8u64;
    loop {
        if off == len {
            return Ok((out, off, false));
        }
        if off + 8 > len {
            return Ok((out, off, true));
        }
        let mut head = [0u8; 8];
        file.read_exact_at(&mut head, off)?;
        let plen = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if plen > MAX_FRAME || off + 8 + plen as u64 > len {
            return Ok((out, off, true));
        }
        let mut payload = vec![0u8; plen as usize];
        file.read_exact_at(&mut payload, off + 8)?;
        if crc32c::crc32c_append(crc32c::crc32c(&head[..4]), &payload) != crc {
            return Ok((out, off, true));
        }
        let entry: Entry = decode("log entry", &payload)?;
        let loc = Loc {
            segment,
            offset: off,
            len: plen,
            log_id: *entry.get_log_id(),
        };
        out.push((loc, entry));
        off += 8 + plen as u64;
    }
}

impl LogStore {
    /// Opens (or creates) the log in `dir`: scans every segment, cuts a torn tail of the
    /// newest one, refuses damage anywhere else, reads the vote and the purge point.
    ///
    /// # Errors
    /// I/O failures, damaged segments or state files.
    pub fn open(dir: &Path) -> io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let mut firsts = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_prefix("log-")
                .and_then(|s| s.strip_suffix(".seg"))
                && let Ok(first) = n.parse::<u64>()
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let saved: Option<Vote> = read_state_file(dir, "vote")?
            .map(|b| decode("vote", &b))
            .transpose()?;
        // Not restored as leader (see the module doc): the same vote, not committed.
        let vote = saved.map(|v| Vote::new(v.leader_id.term, v.leader_id.node_id));
        let last_purged: Option<LogId> = read_state_file(dir, "purged")?
            .map(|b| decode("purged", &b))
            .transpose()?;
        let committed = read_committed_hint(dir);
        let mut segments = BTreeMap::new();
        let mut index = BTreeMap::new();
        let count = firsts.len();
        for (i, first) in firsts.into_iter().enumerate() {
            let path = segment_path(dir, first);
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let (locs, end, torn) = scan_segment(&file, first)?;
            let mut len = file.metadata()?.len();
            if torn {
                if i + 1 != count {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "raft log segment {} is damaged at offset {end} and is not the newest",
                            path.display()
                        ),
                    ));
                }
                tracing::warn!(segment = %path.display(), offset = end, "cutting a torn tail off the raft log");
                if end < 8 {
                    file.set_len(0)?;
                    file.write_all_at(SEGMENT_MAGIC, 0)?;
                    len = 8;
                } else {
                    file.set_len(end)?;
                    len = end;
                }
                file.sync_all()?;
            }
            for (loc, _) in locs {
                // Entries rewritten after a truncate come later and replace earlier ones.
                let _ = index.split_off(&loc.log_id.index);
                index.insert(loc.log_id.index, loc);
            }
            segments.insert(
                first,
                Segment {
                    file: Arc::new(file),
                    path,
                    len,
                },
            );
        }
        if let Some(p) = last_purged {
            index = index.split_off(&(p.index + 1));
        }
        if segments.is_empty() {
            let first = last_purged.map(|p| p.index + 1).unwrap_or(0);
            let seg = new_segment(dir, first)?;
            segments.insert(first, seg);
        }
        // A commit index past the log's end (its tail lost with the page cache) is lowered
        // to the last entry: every entry up to a known commit index is committed.
        let last = index.values().next_back().map(|l| l.log_id).or(last_purged);
        let committed = match (committed, last) {
            (Some(c), Some(l)) if l.index < c.index => Some(l),
            (Some(c), Some(_)) => Some(c),
            _ => None,
        };
        let committed_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("committed"))?;
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || flusher(rx))?;
        Ok(LogStore(Arc::new(Shared {
            dir: dir.to_path_buf(),
            state: RwLock::new(State {
                segments,
                index,
                last_purged,
                vote,
                committed,
            }),
            flusher: Mutex::new(tx),
            committed_file,
        })))
    }

    fn read_entries(&self, range: (Bound<u64>, Bound<u64>)) -> io::Result<Vec<Entry>> {
        let st = self.0.state.read();
        let mut out = Vec::new();
        for loc in st.index.range(range).map(|(_, l)| *l) {
            let seg = st.segments.get(&loc.segment).ok_or_else(|| {
                io::Error::other(format!(
                    "segment {} of entry {} is gone",
                    loc.segment, loc.log_id
                ))
            })?;
            let mut buf = vec![0u8; loc.len as usize + 8];
            seg.file.read_exact_at(&mut buf, loc.offset)?;
            let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
            if crc32c::crc32c_append(crc32c::crc32c(&buf[..4]), &buf[8..]) != crc {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("raft log entry {} fails its checksum", loc.log_id),
                ));
            }
            out.push(decode("log entry", &buf[8..])?);
        }
        Ok(out)
    }

    fn append_sync(&self, entries: Vec<Entry>) -> io::Result<Arc<File>> {
        let mut st = self.0.state.write();
        for entry in entries {
            let payload = encode(&entry)?;
            let bytes = frame(&payload);
            let log_id = *entry.get_log_id();
            let (&first, active) = st
                .segments
                .last_key_value()
                .ok_or_else(|| io::Error::other("no active segment"))?;
            if active.len >= SEGMENT_BYTES {
                active.file.sync_data()?;
                let _ = first;
                let seg = new_segment(&self.0.dir, log_id.index)?;
                st.segments.insert(log_id.index, seg);
            }
            let (&seg_key, active) = st
                .segments
                .last_key_value()
                .ok_or_else(|| io::Error::other("no active segment"))?;
            let offset = active.len;
            active.file.write_all_at(&bytes, offset)?;
            if let Some(s) = st.segments.get_mut(&seg_key) {
                s.len += bytes.len() as u64;
            }
            // An append at an index replaces it and everything after (openraft truncates
            // first, so this only guards the index).
            let _ = st.index.split_off(&log_id.index);
            st.index.insert(
                log_id.index,
                Loc {
                    segment: seg_key,
                    offset,
                    len: payload.len() as u32,
                    log_id,
                },
            );
        }
        let active = st
            .segments
            .last_key_value()
            .map(|(_, s)| Arc::clone(&s.file))
            .ok_or_else(|| io::Error::other("no active segment"))?;
        Ok(active)
    }

    fn truncate_sync(&self, from: u64) -> io::Result<()> {
        let mut st = self.0.state.write();
        let Some(loc) = st.index.get(&from).copied() else {
            return Ok(());
        };
        let _ = st.index.split_off(&from);
        let later: Vec<u64> = st
            .segments
            .range((Bound::Excluded(loc.segment), Bound::Unbounded))
            .map(|(k, _)| *k)
            .collect();
        for k in later {
            if let Some(seg) = st.segments.remove(&k) {
                std::fs::remove_file(&seg.path)?;
            }
        }
        let seg = st
            .segments
            .get_mut(&loc.segment)
            .ok_or_else(|| io::Error::other("truncated segment is gone"))?;
        seg.file.set_len(loc.offset)?;
        seg.file.sync_all()?;
        seg.len = loc.offset;
        sync_dir(&self.0.dir)
    }

    fn purge_sync(&self, upto: LogId) -> io::Result<()> {
        write_state_file(&self.0.dir, "purged", &encode(&upto)?)?;
        let mut st = self.0.state.write();
        if st.last_purged.is_some_and(|p| p.index >= upto.index) {
            return Ok(());
        }
        st.last_purged = Some(upto);
        st.index = st.index.split_off(&(upto.index + 1));
        // A segment is wholly purged when the next one starts at or below upto + 1.
        let keys: Vec<u64> = st.segments.keys().copied().collect();
        let mut gone = Vec::new();
        for w in keys.windows(2) {
            if w[1] <= upto.index + 1 {
                gone.push(w[0]);
            }
        }
        for k in gone {
            if let Some(seg) = st.segments.remove(&k) {
                std::fs::remove_file(&seg.path)?;
            }
        }
        Ok(())
    }

    /// Index of the first entry still held, and of the last (for status pages).
    pub fn bounds(&self) -> (Option<u64>, Option<u64>) {
        let st = self.0.state.read();
        (
            st.index.first_key_value().map(|(k, _)| *k),
            st.index.last_key_value().map(|(k, _)| *k),
        )
    }
}

fn new_segment(dir: &Path, first: u64) -> io::Result<Segment> {
    let path = segment_path(dir, first);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    file.write_all_at(SEGMENT_MAGIC, 0)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(Segment {
        file: Arc::new(file),
        path,
        len: 8,
    })
}

/// The flusher thread: one fdatasync per distinct segment for every batch of queued appends,
/// then their callbacks, in order.
fn flusher(rx: Receiver<FlushJob>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while let Ok(more) = rx.try_recv() {
            jobs.push(more);
        }
        let mut files: Vec<Arc<File>> = Vec::new();
        for j in &jobs {
            if !files.iter().any(|f| Arc::ptr_eq(f, &j.file)) {
                files.push(Arc::clone(&j.file));
            }
        }
        let mut result = Ok(());
        for f in &files {
            if let Err(e) = hoardhaven_engine::fdatasync(f) {
                result = Err(e);
                break;
            }
        }
        for j in jobs {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            j.callback.log_io_completed(r);
        }
    }
}

fn to_bounds<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let b = to_bounds(&range);
        self.read_entries(b)
            .map_err(|e| sio(StorageIOError::read_logs(any(&e))))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let st = self.0.state.read();
        let last = st.index.last_key_value().map(|(_, l)| l.log_id);
        Ok(LogState {
            last_purged_log_id: st.last_purged,
            last_log_id: last.or(st.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let bytes = encode(vote).map_err(|e| sio(StorageIOError::write_vote(any(&e))))?;
        write_state_file(&self.0.dir, "vote", &bytes)
            .map_err(|e| sio(StorageIOError::write_vote(any(&e))))?;
        self.0.state.write().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.0.state.read().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // A hint (see the module doc): one in-place write, no fsync, on every commit.
        let rec = committed_record(&committed).map_err(|e| sio(StorageIOError::write(any(&e))))?;
        self.0
            .committed_file
            .write_all_at(&rec, 0)
            .map_err(|e| sio(StorageIOError::write(any(&e))))?;
        self.0.state.write().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.0.state.read().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let file = self
            .append_sync(entries)
            .map_err(|e| sio(StorageIOError::write_logs(any(&e))))?;
        let sent = self.0.flusher.lock().send(FlushJob { file, callback });
        if let Err(std::sync::mpsc::SendError(job)) = sent {
            job.callback
                .log_io_completed(Err(io::Error::other("the log flusher has stopped")));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.truncate_sync(log_id.index)
            .map_err(|e| sio(StorageIOError::write_logs(any(&e))))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.purge_sync(log_id)
            .map_err(|e| sio(StorageIOError::write_logs(any(&e))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::storage::RaftLogStorage;

    fn log_id(index: u64) -> LogId {
        LogId::new(openraft::CommittedLeaderId::new(3, 2), index)
    }

    fn entries(upto: u64) -> Vec<Entry> {
        (1..=upto)
            .map(|i| Entry {
                log_id: log_id(i),
                payload: openraft::EntryPayload::Blank,
            })
            .collect()
    }

    /// A restarted node reads back the commit index it saved (it re-applies up to it without
    /// waiting for a leader). Went red when the file was decoded as a `LogId` (index 1).
    #[tokio::test]
    async fn the_saved_commit_index_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut log = LogStore::open(dir.path()).expect("open");
        log.append_sync(entries(50)).expect("append");
        log.save_committed(Some(log_id(47))).await.expect("save");
        drop(log);
        let mut log = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(log.read_committed().await.expect("read"), Some(log_id(47)));
        log.save_committed(None).await.expect("save none");
        drop(log);
        let mut log = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(log.read_committed().await.expect("read"), None);
    }

    /// The commit index is a hint: past the log's end it is lowered to the last entry, and a
    /// torn or foreign record reads as unknown instead of refusing to start.
    #[tokio::test]
    async fn a_lost_or_torn_commit_index_is_only_a_hint() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut log = LogStore::open(dir.path()).expect("open");
        log.append_sync(entries(10)).expect("append");
        log.save_committed(Some(log_id(12))).await.expect("save");
        drop(log);
        let mut log = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(log.read_committed().await.expect("read"), Some(log_id(10)));
        log.save_committed(Some(log_id(9))).await.expect("save");
        drop(log);
        let path = dir.path().join("committed");
        let mut rec = std::fs::read(&path).expect("read");
        rec[9] ^= 0x40;
        std::fs::write(&path, &rec).expect("write");
        let mut log = LogStore::open(dir.path()).expect("reopen torn");
        assert_eq!(log.read_committed().await.expect("read"), None);
        drop(log);
        std::fs::write(&path, b"an older format").expect("write");
        let mut log = LogStore::open(dir.path()).expect("reopen foreign");
        assert_eq!(log.read_committed().await.expect("read"), None);
    }

    /// A leader's committed vote is read back as not committed, so openraft does not restore
    /// it as leader (whose read index would rest on the hint); it follows the leader it hears
    /// from or, after the election timeout, calls an election.
    #[tokio::test]
    async fn a_restarted_leader_is_not_restored_as_leader() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut log = LogStore::open(dir.path()).expect("open");
        log.save_vote(&Vote::new_committed(3, 2))
            .await
            .expect("vote");
        drop(log);
        let mut log = LogStore::open(dir.path()).expect("reopen");
        let vote = log.read_vote().await.expect("read").expect("a vote");
        assert_eq!(vote, Vote::new(3, 2));
        assert!(!vote.is_committed());
    }

    #[test]
    fn a_state_file_with_bytes_left_over_is_refused() {
        let bytes = encode(&Some(log_id(47))).expect("encode");
        assert!(decode::<LogId>("committed", &bytes).is_err());
        assert_eq!(
            decode::<Option<LogId>>("committed", &bytes).expect("decode"),
            Some(log_id(47))
        );
    }
}
