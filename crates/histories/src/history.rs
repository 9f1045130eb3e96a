//! The recorded history: one [`Event`] per invocation, completion or fault, as JSON lines a
//! person can read, and its pairing into [`Op`]s with a call time and (maybe) a return time.
//!
//! Owns the vocabulary of a history (Jepsen's): `invoke` when a client sends a request, then
//! exactly one of `ok` (it happened, with its result), `fail` (it certainly did not take
//! effect: refused before it was sent, a 4xx) or `info` (outcome unknown: a timeout, a reset
//! connection, a 5xx). A client process whose operation ended in `info` may still have that
//! request in flight, so it takes a new process name for its next operation (as Jepsen does).
//! The nemesis writes its faults into the same history (`process: "nemesis"`).
//!
//! What the checker makes of each event is decided here, in [`pair`], in one place.

use std::io::{BufRead, Write};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The `error` of a compare-and-set refused with 412: the checker reads it as "the current
/// value was not the expected one".
pub const PRECONDITION_FAILED: &str = "precondition failed (412)";

/// The process name of the nemesis in a history.
pub const NEMESIS: &str = "nemesis";

/// What an event says about its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The request is about to be sent.
    Invoke,
    /// It took effect; the result is in the event.
    Ok,
    /// It certainly took no effect.
    Fail,
    /// Unknown: it may have taken effect, now or later.
    Info,
}

/// The function of an event: a client operation or a nemesis action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum F {
    /// `GET /kv/{key}`: `value` is what was read, `null` for absent.
    Read,
    /// `PUT /kv/{key}` of a value written once in the whole run.
    Write,
    /// `PUT /kv/{key}` with `If-Match: etag`, where `etag` was seen with `expect`.
    Cas,
    /// SIGKILL of a node.
    Kill,
    /// A node started again over its data directory.
    Restart,
    /// SIGSTOP.
    Pause,
    /// SIGCONT.
    Resume,
    /// A link cut (connections reset, new ones refused).
    Cut,
    /// A cut link healed.
    Heal,
}

/// One line of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the history (also time order).
    pub index: u64,
    /// Nanoseconds since the run started (one monotonic clock for every client).
    pub time_ns: u64,
    /// `c3` for a client (a new name after an `info`), `nemesis` for faults.
    pub process: String,
    /// invoke / ok / fail / info.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// What was done.
    pub f: F,
    /// The key (empty for nemesis events).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// Written value, new value of a CAS, or value read (`null`: absent / not known yet).
    #[serde(default)]
    pub value: Option<String>,
    /// The value a CAS expects (the one seen with `etag`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// The ETag sent in `If-Match`, or received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Why an operation failed or is unknown; what a fault hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An event before the recorder stamps it with an index and a time.
#[derive(Clone, Debug)]
pub struct Draft {
    /// See [`Event::process`].
    pub process: String,
    /// See [`Event::kind`].
    pub kind: Kind,
    /// See [`Event::f`].
    pub f: F,
    /// See [`Event::key`].
    pub key: String,
    /// See [`Event::value`].
    pub value: Option<String>,
    /// See [`Event::expect`].
    pub expect: Option<String>,
    /// See [`Event::etag`].
    pub etag: Option<String>,
    /// See [`Event::error`].
    pub error: Option<String>,
}

impl Draft {
    /// An event with only its process, kind, function and key.
    pub fn new(process: impl Into<String>, kind: Kind, f: F, key: impl Into<String>) -> Draft {
        Draft {
            process: process.into(),
            kind,
            f,
            key: key.into(),
            value: None,
            expect: None,
            etag: None,
            error: None,
        }
    }
}

/// Collects the events of every client and of the nemesis, stamping each with its index and
/// the time on one clock, under one lock (so index order is time order).
pub struct Recorder {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
        }
    }
}

impl Recorder {
    /// Appends an event; returns its time.
    pub fn record(&self, d: Draft) -> u64 {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let time_ns = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let index = events.len() as u64;
        events.push(Event {
            index,
            time_ns,
            process: d.process,
            kind: d.kind,
            f: d.f,
            key: d.key,
            value: d.value,
            expect: d.expect,
            etag: d.etag,
            error: d.error,
        });
        time_ns
    }

    /// Nanoseconds since the recorder was made.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Writes events as JSON lines.
///
/// # Errors
/// The writer's I/O errors.
pub fn write_jsonl(events: &[Event], mut out: impl Write) -> std::io::Result<()> {
    for e in events {
        serde_json::to_writer(&mut out, e)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Reads a history written by [`write_jsonl`] (blank lines skipped).
///
/// # Errors
/// I/O errors, and a line that is not an event (with its line number).
pub fn read_jsonl(input: impl BufRead) -> std::io::Result<Vec<Event>> {
    let mut events = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let e = serde_json::from_str(&line).map_err(|err| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {}: {err}", n + 1),
            )
        })?;
        events.push(e);
    }
    Ok(events)
}

/// What an operation asked for, as the register model sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// A read.
    Read,
    /// A write of this value.
    Write(String),
    /// Set `new` if the current value is `expect`.
    Cas {
        /// The value expected.
        expect: String,
        /// The value set.
        new: String,
    },
}

/// What the operation returned, as far as it is known.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// A read returned this (`None`: absent).
    Read(Option<String>),
    /// A write was acknowledged.
    Written,
    /// A CAS was applied (`true`) or refused because the value differed (`false`).
    Cas(bool),
    /// Not known (the operation may or may not have taken effect).
    Unknown,
}

/// One operation of one key, paired from its events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// Index of the invoke event.
    pub invoke_index: u64,
    /// The process that ran it.
    pub process: String,
    /// The key.
    pub key: String,
    /// Invocation time (ns).
    pub call: u64,
    /// Completion time; `None` when the outcome is unknown (it may take effect at any time
    /// after `call`, or never).
    pub ret: Option<u64>,
    /// What was asked.
    pub input: Input,
    /// What came back.
    pub output: Output,
}

/// Pairs client events into operations, dropping those that cannot matter to the checker:
/// failed writes (they took no effect), and reads without a result (they change nothing).
/// A CAS refused with 412 is kept as an observation ("the value differed"); an invoke with no
/// completion (the run ended, or the recording was cut short) is unknown.
pub fn pair(events: &[Event]) -> Vec<Op> {
    let mut open: std::collections::HashMap<&str, &Event> = std::collections::HashMap::new();
    let mut ops = Vec::new();
    for e in events {
        if e.process == NEMESIS || !matches!(e.f, F::Read | F::Write | F::Cas) {
            continue;
        }
        if e.kind == Kind::Invoke {
            if let Some(prev) = open.insert(e.process.as_str(), e) {
                ops.extend(to_op(prev, None));
            }
            continue;
        }
        if let Some(inv) = open.remove(e.process.as_str()) {
            ops.extend(to_op(inv, Some(e)));
        }
    }
    let mut rest: Vec<&Event> = open.into_values().collect();
    rest.sort_by_key(|e| e.index);
    ops.extend(rest.into_iter().filter_map(|inv| to_op(inv, None)));
    ops.sort_by_key(|o| o.invoke_index);
    ops
}

fn to_op(inv: &Event, done: Option<&Event>) -> Option<Op> {
    let input = match inv.f {
        F::Read => Input::Read,
        F::Write => Input::Write(inv.value.clone()?),
        F::Cas => Input::Cas {
            expect: inv.expect.clone()?,
            new: inv.value.clone()?,
        },
        _ => return None,
    };
    let kind = done.map_or(Kind::Info, |d| d.kind);
    let (ret, output) = match (kind, &input) {
        (Kind::Ok, Input::Read) => (done.map(|d| d.time_ns), Output::Read(done?.value.clone())),
        (Kind::Ok, Input::Write(_)) => (done.map(|d| d.time_ns), Output::Written),
        (Kind::Ok, Input::Cas { .. }) => (done.map(|d| d.time_ns), Output::Cas(true)),
        (Kind::Fail, Input::Cas { .. })
            if done.and_then(|d| d.error.as_deref()) == Some(PRECONDITION_FAILED) =>
        {
            (done.map(|d| d.time_ns), Output::Cas(false))
        }
        (Kind::Fail, _) | (Kind::Info | Kind::Invoke, Input::Read) => return None,
        (Kind::Info | Kind::Invoke, _) => (None, Output::Unknown),
    };
    Some(Op {
        invoke_index: inv.index,
        process: inv.process.clone(),
        key: inv.key.clone(),
        call: inv.time_ns,
        ret,
        input,
        output,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(index: u64, process: &str, kind: Kind, f: F, value: Option<&str>) -> Event {
        Event {
            index,
            time_ns: index * 10,
            process: process.into(),
            kind,
            f,
            key: "k".into(),
            value: value.map(str::to_owned),
            expect: None,
            etag: None,
            error: None,
        }
    }

    #[test]
    fn jsonl_round_trips_and_reads_like_jepsen() {
        let events = vec![
            ev(0, "c0", Kind::Invoke, F::Write, Some("c0-1")),
            ev(1, "c0", Kind::Ok, F::Write, Some("c0-1")),
        ];
        let mut buf = Vec::new();
        write_jsonl(&events, &mut buf).expect("write");
        let text = String::from_utf8(buf.clone()).expect("utf8");
        assert!(
            text.starts_with(r#"{"index":0,"time_ns":0,"process":"c0","type":"invoke","f":"write","key":"k","value":"c0-1"}"#),
            "{text}"
        );
        assert_eq!(read_jsonl(&buf[..]).expect("read"), events);
    }

    #[test]
    fn pairing_drops_failed_writes_and_unanswered_reads_and_keeps_unknown_writes() {
        let mut cas_fail = ev(5, "c1", Kind::Fail, F::Cas, Some("c1-2"));
        cas_fail.error = Some(PRECONDITION_FAILED.into());
        let mut cas_inv = ev(4, "c1", Kind::Invoke, F::Cas, Some("c1-2"));
        cas_inv.expect = Some("c0-1".into());
        let events = vec![
            ev(0, "c0", Kind::Invoke, F::Write, Some("c0-1")),
            ev(1, "c0", Kind::Fail, F::Write, Some("c0-1")),
            ev(2, "c1", Kind::Invoke, F::Read, None),
            ev(3, "c1", Kind::Info, F::Read, None),
            cas_inv,
            cas_fail,
            ev(6, "c2", Kind::Invoke, F::Write, Some("c2-1")),
            ev(7, "c2", Kind::Info, F::Write, Some("c2-1")),
            ev(8, "c3", Kind::Invoke, F::Read, None),
            ev(9, "c3", Kind::Ok, F::Read, None),
        ];
        let ops = pair(&events);
        assert_eq!(ops.len(), 3, "{ops:?}");
        assert_eq!(ops[0].output, Output::Cas(false));
        assert_eq!(ops[1].ret, None);
        assert_eq!(ops[1].output, Output::Unknown);
        assert_eq!(ops[2].output, Output::Read(None));
        assert_eq!(ops[2].ret, Some(90));
    }
}
