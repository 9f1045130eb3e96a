//! `GET /watch`: the change feed as Server-Sent Events, and the hub that also wakes blocking
//! reads (`GET /kv/{key}?wait=&version=`).
//!
//! Owns [`WatchOptions`], [`WatchHub`] (the watcher cap, the stop latch, the "version moved"
//! signal fed by the engine's [`ChangeLog`]) and the watcher task: it reads the engine's ring
//! (or, for a resume older than the ring, the history on disk) from its cursor on, filters by
//! prefix, and hands events to the response through a bounded channel.
//!
//! Event format (docs/watch.md): `id:` the version, `event:` `put` | `delete` | `expire`, data
//! a JSON object with `key` (or `key_base64`), `version`, and with `values=true` the value
//! (`value` or `value_base64`, or `value_omitted: true` over the cap). `progress` events carry
//! the current version (`id:` too) every `watch_progress_secs` while idle; a final `error`
//! event says why the server ended a watch (slow consumer, history gone), `end` on shutdown.
//!
//! A slow consumer is one whose unsent changes fell out of the ring while it was live: it
//! gets the `error` event and is closed, so one stuck client never holds more than the
//! bounded channel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, Problem};
use super::extract::Query;
use super::state::AppState;
use crate::engine::changes::{Change, ChangeKind, ChangeLog, History, RingRead};
use crate::engine::{Engine, KeyRange, Version};

/// The header carrying the store's current version on listings and watches.
pub const X_VERSION: HeaderName = HeaderName::from_static("x-hoardhaven-version");
/// Changes read from the ring or the disk per step.
const PAGE: usize = 512;

/// Metric: watchers connected now.
pub const WATCHERS_ACTIVE: &str = "hoardhaven_watchers_active";
/// Metric: change and progress events sent to watchers.
pub const WATCH_EVENTS: &str = "hoardhaven_watch_events_sent_total";
/// Metric: watchers closed for not keeping up.
pub const WATCH_SLOW_CUT: &str = "hoardhaven_watch_slow_consumers_cut_total";

/// Watch settings (see `src/config.rs` for their flags and defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    /// Most watchers at once; more get 503 with `Retry-After`.
    pub max_watchers: usize,
    /// Events buffered per watcher between its task and its connection.
    pub buffer_events: usize,
    /// How often an idle watcher gets a `progress` event.
    pub progress: Duration,
    /// Changes the engine's ring keeps for watchers.
    pub history_events: usize,
    /// Largest value sent with `values=true` (and kept in the ring).
    pub value_cap: usize,
    /// Longest `wait` a blocking read may ask for.
    pub max_wait: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            max_watchers: 10_000,
            buffer_events: 1024,
            progress: Duration::from_secs(10),
            history_events: 16_384,
            value_cap: 16 * 1024,
            max_wait: Duration::from_secs(300),
        }
    }
}

/// Shared by every watcher and blocking read; lives in [`AppState`].
#[derive(Debug)]
pub struct WatchHub {
    opts: Mutex<WatchOptions>,
    active: AtomicUsize,
    stop: watch::Sender<bool>,
    moved: watch::Sender<u64>,
    attached: OnceLock<()>,
}

impl Default for WatchHub {
    fn default() -> Self {
        WatchHub {
            opts: Mutex::new(WatchOptions::default()),
            active: AtomicUsize::new(0),
            stop: watch::channel(false).0,
            moved: watch::channel(0).0,
            attached: OnceLock::new(),
        }
    }
}

/// A watcher slot, released on drop.
struct Slot(AppState);

impl Drop for Slot {
    fn drop(&mut self) {
        let n = self.0.watch().active.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!(WATCHERS_ACTIVE).set(n as f64);
    }
}

impl WatchHub {
    /// Sets the options (before the engine is attached for the ring settings to apply).
    pub fn configure(&self, opts: WatchOptions) {
        *self.opts.lock() = opts;
    }

    /// The options in force.
    pub fn options(&self) -> WatchOptions {
        *self.opts.lock()
    }

    /// Sizes the engine's ring and listens to it (once).
    pub fn attach(&self, engine: &dyn Engine) {
        let Some(changes) = engine.changes() else {
            return;
        };
        if self.attached.set(()).is_err() {
            return;
        }
        let o = self.options();
        changes.configure(o.history_events, o.value_cap);
        let moved = self.moved.clone();
        moved.send_replace(changes.current().0);
        changes.subscribe(Arc::new(move |v: Version| {
            moved.send_replace(v.0);
        }));
    }

    /// Ends every watch and blocking read (server stopping).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// A receiver that changes whenever the store's current version moves.
    pub fn moved(&self) -> watch::Receiver<u64> {
        self.moved.subscribe()
    }

    /// A receiver of the stop latch.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Watchers connected now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

/// True for requests that may legitimately outlive the request timeout: `GET /watch` and a
/// blocking read (`GET /kv/...?...wait=...`).
pub fn is_long_poll(method: &Method, uri: &Uri) -> bool {
    if method != Method::GET {
        return false;
    }
    let path = uri.path();
    path == "/watch"
        || (path.starts_with("/kv/")
            && uri
                .query()
                .is_some_and(|q| q.split('&').any(|p| p.starts_with("wait="))))
}

/// `?prefix=&start=&end=&since=&values=&progress=` of `GET /watch`.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WatchQuery {
    /// Only keys starting with these bytes (percent-encoded; `+` is a space). Default: all.
    #[param(value_type = Option<String>)]
    #[serde(default, deserialize_with = "super::extract::bytes_param")]
    pub prefix: Option<Vec<u8>>,
    /// Only keys at or after these bytes (inclusive, percent-encoded), as in `GET /kv`.
    #[param(value_type = Option<String>)]
    #[serde(default, deserialize_with = "super::extract::bytes_param")]
    pub start: Option<Vec<u8>>,
    /// Only keys before these bytes (exclusive, percent-encoded), as in `GET /kv`.
    #[param(value_type = Option<String>)]
    #[serde(default, deserialize_with = "super::extract::bytes_param")]
    pub end: Option<Vec<u8>>,
    /// Send changes with versions above this one (exclusive; `Last-Event-ID` wins when both
    /// are given). Default: the current version (only changes from now on).
    #[serde(default, deserialize_with = "super::extract::int64_param")]
    pub since: Option<u64>,
    /// Include values (up to `watch_value_cap_bytes`; larger ones say `value_omitted`).
    pub values: Option<bool>,
    /// Seconds between progress events while idle (default `watch_progress_secs`, min 1).
    #[serde(default, deserialize_with = "super::extract::int64_param")]
    pub progress: Option<u64>,
}

/// The JSON data of a `put`, `delete` or `expire` event.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ChangeEvent {
    /// The key as UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The key's bytes in standard base64, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    /// The change's version (also the event's `id:`).
    pub version: u64,
    /// With `values=true`, a put's value as UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// With `values=true`, a put's value in base64 when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    /// With `values=true`: the value is over `watch_value_cap_bytes` and left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_omitted: Option<bool>,
    /// A put's value length in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_len: Option<u64>,
}

/// The JSON data of a `progress` or `end` event.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ProgressEvent {
    /// Every change up to this version has been sent.
    pub version: u64,
}

fn change_event(c: &Change, values: bool) -> Event {
    let (key, key_base64) = match std::str::from_utf8(&c.key) {
        Ok(s) => (Some(s.to_owned()), None),
        Err(_) => (None, Some(STANDARD.encode(&c.key))),
    };
    let mut data = ChangeEvent {
        key,
        key_base64,
        version: c.version.0,
        value: None,
        value_base64: None,
        value_omitted: None,
        value_len: (c.kind == ChangeKind::Put).then_some(c.value_len),
    };
    if values && c.kind == ChangeKind::Put {
        match &c.value {
            Some(v) => match std::str::from_utf8(v) {
                Ok(s) => data.value = Some(s.to_owned()),
                Err(_) => data.value_base64 = Some(STANDARD.encode(v)),
            },
            None => data.value_omitted = Some(true),
        }
    }
    Event::default()
        .id(c.version.0.to_string())
        .event(c.kind.name())
        .data(serde_json::to_string(&data).unwrap_or_default())
}

fn progress_event(name: &str, v: Version) -> Event {
    Event::default()
        .id(v.0.to_string())
        .event(name)
        .data(serde_json::to_string(&ProgressEvent { version: v.0 }).unwrap_or_default())
}

fn error_event(slug: &str, detail: String, oldest: Option<Version>, current: Version) -> Event {
    let p = Problem {
        kind: format!("urn:hoardhaven:problem:{slug}"),
        title: "Watch ended".into(),
        status: 410,
        detail: Some(detail),
        oldest_version: oldest.map(|v| v.0),
        current_version: Some(current.0),
    };
    Event::default()
        .event("error")
        .data(serde_json::to_string(&p).unwrap_or_default())
}

/// Streams changes as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/watch",
    tag = "watch",
    params(
        WatchQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this version (exclusive): the `id:` of the last event received."),
    ),
    responses(
        (status = 200, description = "`text/event-stream`, one event per change in version order. \
            `id:` is the version; `event:` is `put`, `delete` or `expire` with `ChangeEvent` JSON data; \
            the changes of one batch arrive together, in order. `progress` events (`ProgressEvent` data, \
            `id:` the current version) come every `progress` seconds while idle. The stream ends with an \
            `error` event (`Problem` data: `slow-consumer` when the client fell behind the history kept, \
            `history-gone`) or, when the server stops, an `end` event.",
            content_type = "text/event-stream", body = serde_json::Value,
            headers(("X-Hoardhaven-Version" = u64, description = "The current version when the watch started."))),
        (status = 400, description = "Malformed parameter or Last-Event-ID.", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "`since` / `Last-Event-ID` is older than the history kept (type `history-gone`): `oldest_version` and `current_version` say where to re-list and resume.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Starting or stopping, or every watcher slot taken (`too-many-watchers`, with `Retry-After`).", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn watch(
    State(state): State<AppState>,
    Query(q): Query<WatchQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let engine = state.engine_handle().ok_or(ApiError::NotReady)?;
    let Some(changes) = engine.changes() else {
        return Err(ApiError::BadRequest(
            "this engine publishes no change feed".into(),
        ));
    };
    let last_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest("Last-Event-ID must be a version number".into())
                })?,
        ),
    };
    let hub = state.watch();
    let opts = hub.options();
    let current = changes.current();
    let start = Version(last_id.or(q.since).unwrap_or(current.0));
    let slot = admit(&state, opts.max_watchers)?;
    // A resume older than the ring: the first page comes from disk, and 410 when it is gone.
    let mut backlog = Vec::new();
    if start < changes.ring_floor() {
        let e = Arc::clone(&engine);
        let h = tokio::task::spawn_blocking(move || {
            e.changes()
                .map(|c| c.history(start, PAGE))
                .unwrap_or(Ok(History::Changes(Vec::new())))
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
        match h {
            History::Gone { oldest, current } => {
                return Err(ApiError::HistoryGone { oldest, current });
            }
            History::Changes(v) => backlog = v,
        }
    }
    let (tx, rx) = mpsc::channel::<Event>(opts.buffer_events.max(1));
    let last: Arc<Mutex<Option<Event>>> = Arc::new(Mutex::new(None));
    let watcher = Watcher {
        engine,
        cursor: start,
        prefix: q.prefix.unwrap_or_default(),
        start: q.start,
        end: q.end,
        values: q.values.unwrap_or(false),
        tx,
        stop: hub.stopping(),
        moved: hub.moved(),
        progress: q
            .progress
            .map_or(opts.progress, |s| Duration::from_secs(s.max(1))),
        live: false,
        last: Arc::clone(&last),
    };
    tokio::spawn(watcher.run(backlog, slot));
    let stream = futures_util::stream::unfold((rx, last), |(mut rx, last)| async move {
        match rx.recv().await {
            Some(ev) => Some((Ok::<_, std::convert::Infallible>(ev), (rx, last))),
            None => {
                let ev = last.lock().take()?;
                Some((Ok(ev), (rx, last)))
            }
        }
    });
    let mut resp = Sse::new(stream).into_response();
    if let Ok(v) = HeaderValue::from_str(&current.0.to_string()) {
        resp.headers_mut().insert(X_VERSION, v);
    }
    Ok(resp)
}

fn admit(state: &AppState, max: usize) -> Result<Slot, ApiError> {
    let hub = state.watch();
    let taken = hub
        .active
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        });
    match taken {
        Ok(n) => {
            metrics::gauge!(WATCHERS_ACTIVE).set((n + 1) as f64);
            Ok(Slot(state.clone()))
        }
        Err(_) => Err(ApiError::TooManyWatchers { max }),
    }
}

/// Why a watcher stopped.
enum End {
    /// The client went away.
    ClientGone,
    /// The server is stopping.
    Shutdown,
    /// The client fell behind the ring while live.
    Slow,
    /// The history the client needs is gone.
    Gone { oldest: Version, current: Version },
}

struct Watcher {
    engine: Arc<dyn Engine>,
    cursor: Version,
    prefix: Vec<u8>,
    /// Inclusive lower bound on keys (`start=`).
    start: Option<Vec<u8>>,
    /// Exclusive upper bound on keys (`end=`).
    end: Option<Vec<u8>>,
    values: bool,
    tx: mpsc::Sender<Event>,
    stop: watch::Receiver<bool>,
    moved: watch::Receiver<u64>,
    progress: Duration,
    /// Caught up with the ring once: falling behind it now means too slow.
    live: bool,
    last: Arc<Mutex<Option<Event>>>,
}

impl Watcher {
    async fn run(mut self, backlog: Vec<Arc<Change>>, slot: Slot) {
        let end = self.serve(backlog).await;
        let current = self.changes().map_or(self.cursor, ChangeLog::current);
        let last = match end {
            End::ClientGone => None,
            End::Shutdown => Some(progress_event("end", self.cursor)),
            End::Slow => {
                metrics::counter!(WATCH_SLOW_CUT).increment(1);
                Some(error_event(
                    "slow-consumer",
                    format!(
                        "the watcher fell behind the change history kept; resume with \
                         Last-Event-ID {} (or re-list)",
                        self.cursor.0
                    ),
                    None,
                    current,
                ))
            }
            End::Gone { oldest, current } => Some(error_event(
                "history-gone",
                "the change history no longer reaches back to the watcher's version; re-list"
                    .into(),
                Some(oldest),
                current,
            )),
        };
        *self.last.lock() = last;
        drop(self);
        drop(slot);
    }

    fn changes(&self) -> Option<&ChangeLog> {
        self.engine.changes()
    }

    fn matches(&self, c: &Change) -> bool {
        KeyRange {
            prefix: &self.prefix,
            start: self.start.as_deref(),
            end: self.end.as_deref(),
        }
        .contains(&c.key)
    }

    async fn deliver(&mut self, changes: &[Arc<Change>]) -> Result<(), End> {
        for c in changes {
            if self.matches(c) {
                self.send(change_event(c, self.values)).await?;
            }
            self.cursor = c.version;
        }
        Ok(())
    }

    async fn serve(&mut self, backlog: Vec<Arc<Change>>) -> End {
        if let Err(e) = self.deliver(&backlog).await {
            return e;
        }
        let mut tick = tokio::time::interval(self.progress);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            if let Err(e) = self.drain().await {
                return e;
            }
            let woke = tokio::select! {
                r = self.moved.changed() => if r.is_err() { Wake::Stop } else { Wake::Moved },
                _ = tick.tick() => Wake::Tick,
                _ = self.stop.wait_for(|s| *s) => Wake::Stop,
                () = self.tx.closed() => return End::ClientGone,
            };
            match woke {
                Wake::Moved => {}
                Wake::Stop => return End::Shutdown,
                Wake::Tick => {
                    let ev = progress_event("progress", self.cursor);
                    if let Err(e) = self.send(ev).await {
                        return e;
                    }
                }
            }
        }
    }

    /// Sends every change after the cursor, from the ring or (catching up) from disk.
    async fn drain(&mut self) -> Result<(), End> {
        loop {
            let Some(changes) = self.changes() else {
                return Err(End::Shutdown);
            };
            match changes.read_after(self.cursor, PAGE) {
                RingRead::Changes(v, _) if v.is_empty() => {
                    self.live = true;
                    return Ok(());
                }
                RingRead::Changes(v, _) => self.deliver(&v).await?,
                RingRead::Behind { .. } if self.live => return Err(End::Slow),
                RingRead::Behind { floor } => {
                    let e = Arc::clone(&self.engine);
                    let after = self.cursor;
                    let h = tokio::task::spawn_blocking(move || {
                        e.changes().map(|c| c.history(after, PAGE))
                    })
                    .await;
                    match h {
                        Ok(Some(Ok(History::Changes(v)))) if !v.is_empty() => {
                            self.deliver(&v).await?;
                        }
                        Ok(Some(Ok(History::Gone { oldest, current }))) => {
                            return Err(End::Gone { oldest, current });
                        }
                        Ok(Some(Ok(History::Changes(_)))) => {
                            // The disk has nothing newer yet the ring starts above us.
                            return Err(End::Gone {
                                oldest: floor,
                                current: changes_current(&self.engine),
                            });
                        }
                        Ok(Some(Err(e))) => {
                            tracing::warn!(error = %e, "reading the change history failed");
                            return Err(End::Gone {
                                oldest: floor,
                                current: changes_current(&self.engine),
                            });
                        }
                        _ => return Err(End::Shutdown),
                    }
                }
            }
        }
    }

    /// Queues one event; waits while the buffer is full, and gives up on a live client whose
    /// next change fell out of the ring meanwhile.
    async fn send(&mut self, ev: Event) -> Result<(), End> {
        let ev = match self.tx.try_send(ev) {
            Ok(()) => {
                metrics::counter!(WATCH_EVENTS).increment(1);
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(End::ClientGone),
            Err(mpsc::error::TrySendError::Full(ev)) => ev,
        };
        loop {
            let woke = tokio::select! {
                permit = self.tx.reserve() => {
                    let Ok(permit) = permit else { return Err(End::ClientGone) };
                    permit.send(ev);
                    metrics::counter!(WATCH_EVENTS).increment(1);
                    return Ok(());
                }
                r = self.moved.changed() => if r.is_err() { Wake::Stop } else { Wake::Moved },
                _ = self.stop.wait_for(|s| *s) => Wake::Stop,
            };
            if matches!(woke, Wake::Stop) {
                return Err(End::Shutdown);
            }
            let behind = self.changes().is_some_and(|c| c.ring_floor() > self.cursor);
            if self.live && behind {
                return Err(End::Slow);
            }
        }
    }
}

/// What woke a waiting watcher.
enum Wake {
    Moved,
    Tick,
    Stop,
}

fn changes_current(engine: &Arc<dyn Engine>) -> Version {
    engine.changes().map_or(Version(0), ChangeLog::current)
}
