//! The JSON shapes of the API, with their OpenAPI schemas.
//!
//! Owns every response body type and the conversions between them and the engine's types
//! (keys and values as UTF-8 text with a `*_base64` twin for bytes that are not UTF-8), and
//! re-exports the request bodies of `requests.rs`. Holds no HTTP semantics: handlers in
//! `kv.rs`, `bulk.rs` and `admin.rs` decide what to send.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::keys::{b64, unb64};
pub use super::requests::{BatchOpDto, BatchRequest, KeyArg, MgetKey, MgetRequest};
use crate::engine::{
    FileStats, JobState, JobStatus, MergeReport, SnapshotInfo, SnapshotReport, Stats,
};

/// Raw value bytes, as sent in `PUT /kv/{key}` and answered by `GET` (documentation type).
#[derive(Clone, Debug, ToSchema)]
#[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
pub struct RawValue(pub Vec<u8>);

/// A key in a JSON body or answer: `key` when the bytes are UTF-8, `key_base64` otherwise.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct KeyRef {
    /// The key as UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "users/42")]
    pub key: Option<String>,
    /// The key's bytes in standard base64, used when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
}

impl KeyRef {
    /// Describes raw key bytes: text when UTF-8, base64 otherwise.
    pub fn from_bytes(key: &[u8]) -> Self {
        match std::str::from_utf8(key) {
            Ok(s) => KeyRef {
                key: Some(s.to_owned()),
                key_base64: None,
            },
            Err(_) => KeyRef {
                key: None,
                key_base64: Some(b64(key)),
            },
        }
    }

    /// The key's bytes.
    ///
    /// # Errors
    /// 400 unless exactly one of `key` and `key_base64` is given, or on bad base64.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ApiError> {
        match (&self.key, &self.key_base64) {
            (Some(k), None) => Ok(k.as_bytes().to_vec()),
            (None, Some(b)) => unb64(b, "key_base64"),
            _ => Err(ApiError::BadRequest(
                "give exactly one of `key` and `key_base64`".into(),
            )),
        }
    }
}

/// One value of an `mget` answer.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MgetValue {
    /// The key, as given.
    #[serde(flatten)]
    pub key: KeyRef,
    /// Whether a live value exists.
    pub found: bool,
    /// The value as UTF-8 text; `null` when absent or when the bytes are not UTF-8.
    pub value: Option<String>,
    /// The value in standard base64 when it is present and not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    /// The value's ETag when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// `POST /mget` answer: every requested key gets an entry, found or not.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"values": [
    {"key": "a", "found": true, "value": "1", "etag": "\"7\""},
    {"key": "c", "found": false, "value": null}
]}))]
pub struct MgetResponse {
    /// One entry per requested key, in request order.
    pub values: Vec<MgetValue>,
}

/// The operation kind of a batch entry.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// Store a value.
    Put,
    /// Remove a key (no error when absent).
    Delete,
}

/// Result of one batch operation.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchOpResult {
    /// The operation kind.
    pub op: OpKind,
    /// The ETag written by the operation (for deletes, the tombstone's).
    pub etag: String,
    /// For `put`: true when the key was absent (or expired) before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    /// For `delete`: true when the key existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
}

/// `POST /batch` answer.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    /// One result per operation, in request order.
    pub results: Vec<BatchOpResult>,
}

/// `GET /kv` answer: one page of keys in ascending byte order.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ListResponse {
    /// Keys of this page.
    pub keys: Vec<KeyRef>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Answer of `/healthz` and `/readyz`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` (`/healthz`), `ready`, or `damaged` (`/readyz`: serving, but a read met a record
    /// failing its checksum since start; see `corrupt_reads`).
    #[schema(example = "ready")]
    pub status: String,
    /// `/readyz`: reads answered `corrupted` since start (absent when 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt_reads: Option<u64>,
}

/// The state of a background job.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobStateKind {
    /// Never ran since the server started.
    Idle,
    /// Running now.
    Running,
    /// Finished; `report` holds the result.
    Done,
    /// Failed; `error` says why.
    Failed,
}

/// Result of a finished merge (bitcask) or log rewrite (memory).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MergeReportDto {
    /// Start, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// Duration in seconds.
    pub duration_seconds: f64,
    /// Files read.
    pub files_merged: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Disk bytes freed.
    pub bytes_reclaimed: u64,
    /// Live records carried over.
    pub records_kept: u64,
    /// Records dropped.
    pub records_dropped: u64,
}

/// Result of a finished snapshot.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SnapshotReportDto {
    /// Start, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// Duration in seconds.
    pub duration_seconds: f64,
    /// Where the snapshot is (a directory for bitcask, a file for memory).
    pub path: String,
    /// Keys in it.
    pub keys: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Highest version it contains.
    pub version: u64,
}

/// Progress of a running job.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, ToSchema)]
pub struct ProgressDto {
    /// Bytes done.
    pub done: u64,
    /// Bytes in all.
    pub total: u64,
}

/// What every job status document carries.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobCommon {
    /// The state.
    pub state: JobStateKind,
    /// Start of the current or last run, milliseconds since the Unix epoch.
    pub started_at_ms: Option<u64>,
    /// Progress while running.
    pub progress: Option<ProgressDto>,
    /// The failure when failed.
    pub error: Option<String>,
    /// Runs finished since the server started.
    pub completed: u64,
}

/// Status document of the merge job (`/admin/merge`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MergeStatus {
    /// State, start, progress, error.
    #[serde(flatten)]
    pub job: JobCommon,
    /// The result when done.
    pub report: Option<MergeReportDto>,
}

/// A snapshot kept on disk.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SnapshotInfoDto {
    /// Its path.
    pub path: String,
    /// Bytes on disk.
    pub bytes: u64,
    /// When it was taken, milliseconds since the Unix epoch.
    pub taken_at_ms: u64,
}

/// Status document of the snapshot job and the snapshots kept (`/admin/snapshot`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SnapshotStatus {
    /// State, start, progress, error.
    #[serde(flatten)]
    pub job: JobCommon,
    /// The result when done.
    pub report: Option<SnapshotReportDto>,
    /// Snapshots kept on disk, oldest first.
    pub snapshots: Vec<SnapshotInfoDto>,
}

/// One file of the store.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FileStatsDto {
    /// File name in the data directory.
    pub name: String,
    /// Bytes on disk.
    pub total_bytes: u64,
    /// Bytes of live records.
    pub live_bytes: u64,
    /// Bytes of dead records.
    pub dead_bytes: u64,
    /// Whether it is the file being appended to.
    pub active: bool,
}

/// `GET /admin/stats` answer.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct StatsDto {
    /// `bitcask` or `memory`.
    pub engine: String,
    /// Live keys.
    pub keys: u64,
    /// Bytes of live records.
    pub live_bytes: u64,
    /// Bytes of dead records.
    pub dead_bytes: u64,
    /// Bytes of the engine's files on disk.
    pub disk_bytes: u64,
    /// Data files (bitcask) or log + snapshot files (memory).
    pub data_files: u64,
    /// `dead / (live + dead)`.
    pub fragmentation: f64,
    /// Bytes of the in-memory index.
    pub index_bytes: u64,
    /// The sync policy: `always`, `never` or `<N>ms`.
    pub sync: String,
    /// Bytes appended since the server started.
    pub bytes_written: u64,
    /// Corrupt records found since the server started (torn tails cut at start-up, and
    /// damaged records met by reads).
    pub corrupt_records: u64,
    /// Requests answered `corrupted` since the server started: a stored record failed its
    /// checksum when read. Non-zero means the store is damaged (see `damaged`).
    pub corrupt_reads: u64,
    /// True once a read met damaged data: restore the damaged keys (docs/operations.md).
    pub damaged: bool,
    /// Where the Redis protocol listener listens (`host:port`), when `resp_listen` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resp_listen: Option<String>,
    /// Highest version written.
    pub last_version: u64,
    /// Current or last merge.
    pub merge: MergeStatus,
    /// Current or last snapshot, and the snapshots kept.
    pub snapshot: SnapshotStatus,
    /// Per-file detail.
    pub files: Vec<FileStatsDto>,
}

impl From<&MergeReport> for MergeReportDto {
    fn from(r: &MergeReport) -> Self {
        MergeReportDto {
            started_at_ms: r.started_at.0,
            duration_seconds: r.duration.as_secs_f64(),
            files_merged: r.files_merged,
            bytes_read: r.bytes_read,
            bytes_written: r.bytes_written,
            bytes_reclaimed: r.bytes_reclaimed,
            records_kept: r.records_kept,
            records_dropped: r.records_dropped,
        }
    }
}

impl From<&SnapshotReport> for SnapshotReportDto {
    fn from(r: &SnapshotReport) -> Self {
        SnapshotReportDto {
            started_at_ms: r.started_at.0,
            duration_seconds: r.duration.as_secs_f64(),
            path: r.path.display().to_string(),
            keys: r.keys,
            bytes: r.bytes,
            version: r.version.0,
        }
    }
}

impl From<&SnapshotInfo> for SnapshotInfoDto {
    fn from(s: &SnapshotInfo) -> Self {
        SnapshotInfoDto {
            path: s.path.display().to_string(),
            bytes: s.bytes,
            taken_at_ms: s.taken_at.0,
        }
    }
}

impl From<&FileStats> for FileStatsDto {
    fn from(f: &FileStats) -> Self {
        FileStatsDto {
            name: f.name.clone(),
            total_bytes: f.total_bytes,
            live_bytes: f.live_bytes,
            dead_bytes: f.dead_bytes,
            active: f.active,
        }
    }
}

/// The common part of a job document, and the report when done.
fn job_parts<R: Clone>(state: &JobState<R>, completed: u64) -> (JobCommon, Option<R>) {
    let mut doc = JobCommon {
        state: JobStateKind::Idle,
        started_at_ms: None,
        progress: None,
        error: None,
        completed,
    };
    let mut report = None;
    match state {
        JobState::Idle => {}
        JobState::Running {
            started_at,
            progress,
        } => {
            doc.state = JobStateKind::Running;
            doc.started_at_ms = Some(started_at.0);
            doc.progress = Some(ProgressDto {
                done: progress.done,
                total: progress.total,
            });
        }
        JobState::Done(r) => {
            doc.state = JobStateKind::Done;
            report = Some(r.clone());
        }
        JobState::Failed { started_at, error } => {
            doc.state = JobStateKind::Failed;
            doc.started_at_ms = Some(started_at.0);
            doc.error = Some(error.clone());
        }
    }
    (doc, report)
}

/// The merge status document of a [`JobStatus`].
pub fn merge_status(j: &JobStatus) -> MergeStatus {
    let (mut job, report) = job_parts(&j.merge, j.merges_completed);
    if let Some(r) = &report {
        job.started_at_ms = Some(r.started_at.0);
    }
    MergeStatus {
        job,
        report: report.as_ref().map(MergeReportDto::from),
    }
}

/// The snapshot status document of a [`JobStatus`] and the snapshots kept.
pub fn snapshot_status(j: &JobStatus, kept: &[SnapshotInfo]) -> SnapshotStatus {
    let (mut job, report) = job_parts(&j.snapshot, j.snapshots_completed);
    if let Some(r) = &report {
        job.started_at_ms = Some(r.started_at.0);
    }
    SnapshotStatus {
        job,
        report: report.as_ref().map(SnapshotReportDto::from),
        snapshots: kept.iter().map(SnapshotInfoDto::from).collect(),
    }
}

impl StatsDto {
    /// Adds what the server counted: reads that met damaged data since start.
    pub fn with_corrupt_reads(mut self, n: u64) -> Self {
        self.corrupt_reads = n;
        self.damaged = n > 0;
        self
    }

    /// Adds the Redis protocol listener's address.
    pub fn with_resp_listen(mut self, addr: Option<std::net::SocketAddr>) -> Self {
        self.resp_listen = addr.map(|a| a.to_string());
        self
    }

    /// Builds the stats document from the engine's stats and its list of snapshots.
    pub fn new(s: &Stats, kept: &[SnapshotInfo]) -> Self {
        StatsDto {
            engine: s.engine.to_string(),
            keys: s.keys,
            live_bytes: s.live_bytes,
            dead_bytes: s.dead_bytes,
            disk_bytes: s.disk_bytes,
            data_files: s.data_files,
            fragmentation: s.fragmentation,
            index_bytes: s.index_bytes,
            sync: s.sync.to_string(),
            bytes_written: s.bytes_written,
            corrupt_records: s.corrupt_records,
            corrupt_reads: 0,
            damaged: false,
            resp_listen: None,
            last_version: s.last_version.0,
            merge: merge_status(&s.jobs),
            snapshot: snapshot_status(&s.jobs, kept),
            files: s.files.iter().map(FileStatsDto::from).collect(),
        }
    }
}
