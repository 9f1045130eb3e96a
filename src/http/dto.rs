//! The JSON shapes of the API, with their OpenAPI schemas.
//!
//! Owns every request and response body type and the conversions between them and the engine's
//! types (keys and values as UTF-8 text with a `*_base64` twin for bytes that are not UTF-8).
//! Holds no HTTP semantics: handlers in `kv.rs` and `admin.rs` decide what to send.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::{MAX_TTL_SECS, check_ttl};
use super::keys::{b64, unb64};
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

/// One entry of an `mget` request: a plain string key, or an object with `key` / `key_base64`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum MgetKey {
    /// A UTF-8 key.
    Text(String),
    /// A key given as `{"key": ...}` or `{"key_base64": ...}`.
    Ref(KeyArg),
}

/// A key in a request body: exactly one of `key` and `key_base64`, neither `null`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyArg {
    /// The key as UTF-8 text.
    #[serde(default, deserialize_with = "present")]
    pub key: Option<String>,
    /// The key's bytes in standard base64.
    #[serde(default, deserialize_with = "present")]
    pub key_base64: Option<String>,
}

impl KeyArg {
    /// The key's bytes.
    ///
    /// # Errors
    /// 400 unless exactly one of `key` and `key_base64` is given, or on bad base64.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ApiError> {
        KeyRef {
            key: self.key.clone(),
            key_base64: self.key_base64.clone(),
        }
        .to_bytes()
    }
}

/// A field that may be left out but, when given, is not `null` (the document says so).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Standard base64 with padding, as the `*_base64` fields take it.
pub const BASE64_PATTERN: &str = "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";

/// The schema of a key given as text.
fn key_text_schema() -> serde_json::Value {
    serde_json::json!({"type": "string", "minLength": 1, "description": "The key as UTF-8 text."})
}

/// The schema of a key given as base64.
fn key_b64_schema() -> serde_json::Value {
    serde_json::json!({"type": "string", "minLength": 4, "pattern": BASE64_PATTERN,
        "description": "The key's bytes in standard base64 (non-empty)."})
}

/// A hand-written schema (the combinations of fields serde accepts cannot be derived).
fn schema_of(v: serde_json::Value) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    match serde_json::from_value(v) {
        Ok(s) => utoipa::openapi::RefOr::T(s),
        Err(_) => utoipa::openapi::RefOr::T(utoipa::openapi::Schema::default()),
    }
}

impl utoipa::PartialSchema for MgetKey {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        schema_of(serde_json::json!({
            "description": "One key of an `mget` request: a non-empty string, or an object with exactly one of `key` and `key_base64`.",
            "oneOf": [
                key_text_schema(),
                {"type": "object", "required": ["key"], "additionalProperties": false,
                 "properties": {"key": key_text_schema()}},
                {"type": "object", "required": ["key_base64"], "additionalProperties": false,
                 "properties": {"key_base64": key_b64_schema()}},
            ]
        }))
    }
}

impl ToSchema for MgetKey {}

/// `POST /mget` request.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MgetRequest {
    /// Keys to read, answered in this order. At most `max_batch_ops` of them.
    pub keys: Vec<MgetKey>,
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

/// One operation of `POST /batch`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchOpDto {
    /// `put` or `delete`.
    pub op: OpKind,
    /// The key as UTF-8 text (or use `key_base64`).
    #[serde(default, deserialize_with = "present")]
    pub key: Option<String>,
    /// The key's bytes in standard base64.
    #[serde(default, deserialize_with = "present")]
    pub key_base64: Option<String>,
    /// For `put`: the value as UTF-8 text (or use `value_base64`).
    #[serde(default, deserialize_with = "present")]
    pub value: Option<String>,
    /// For `put`: the value's bytes in standard base64.
    #[serde(default, deserialize_with = "present")]
    pub value_base64: Option<String>,
    /// For `put`: seconds until the value expires, 1 to [`MAX_TTL_SECS`]. JSON Schema's
    /// `integer` includes `12625.0`, so a whole number written as a float is taken too.
    #[serde(default, deserialize_with = "ttl_secs")]
    pub ttl: Option<u64>,
}

fn ttl_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error as _;
    let n = serde_json::Number::deserialize(d)?;
    let whole = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= MAX_TTL_SECS as f64)
            .map(|f| f as u64)
    });
    match whole {
        Some(s) => check_ttl(s).map(Some).map_err(D::Error::custom),
        None if n.as_f64().is_some_and(|f| f > MAX_TTL_SECS as f64) => Err(D::Error::custom(
            format!("`ttl` is {n} s, the limit is {MAX_TTL_SECS} s (100 years)"),
        )),
        None => Err(D::Error::custom(
            "`ttl` must be a whole number of seconds >= 1",
        )),
    }
}

impl utoipa::PartialSchema for BatchOpDto {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        let ttl = serde_json::json!({"type": "integer", "minimum": 1, "maximum": MAX_TTL_SECS,
            "description": "Seconds until the value expires (at most 100 years)."});
        let value =
            serde_json::json!({"type": "string", "description": "The value as UTF-8 text."});
        let value_b64 = serde_json::json!({"type": "string", "pattern": BASE64_PATTERN,
            "description": "The value's bytes in standard base64."});
        let mut variants = Vec::new();
        for (kname, kschema) in [("key", key_text_schema()), ("key_base64", key_b64_schema())] {
            for (vname, vschema) in [("value", &value), ("value_base64", &value_b64)] {
                variants.push(serde_json::json!({
                    "type": "object", "title": format!("put by {kname} with {vname}"),
                    "additionalProperties": false, "required": ["op", kname, vname],
                    "properties": {"op": {"type": "string", "enum": ["put"]},
                        kname: kschema.clone(), vname: vschema.clone(), "ttl": ttl.clone()}
                }));
            }
            variants.push(serde_json::json!({
                "type": "object", "title": format!("delete by {kname}"),
                "additionalProperties": false, "required": ["op", kname],
                "properties": {"op": {"type": "string", "enum": ["delete"]}, kname: kschema}
            }));
        }
        schema_of(serde_json::json!({
            "description": "One operation of `POST /batch`: a `put` with exactly one of `key` / `key_base64` and exactly one of `value` / `value_base64` (and an optional `ttl`), or a `delete` with exactly one of `key` / `key_base64`.",
            "oneOf": variants,
        }))
    }
}

impl ToSchema for BatchOpDto {}

/// `POST /batch` request: applied all-or-nothing, also across a crash.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The operations, applied in order. At most `max_batch_ops` of them.
    pub ops: Vec<BatchOpDto>,
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
            last_version: s.last_version.0,
            merge: merge_status(&s.jobs),
            snapshot: snapshot_status(&s.jobs, kept),
            files: s.files.iter().map(FileStatsDto::from).collect(),
        }
    }
}
