//! One run: clients against a [`Cluster`] while a [`Nemesis`] strikes, then the faults healed,
//! every key read once more, and the history checked. The summary ([`RunReport`]) is what
//! `scripts/consistency.sh` writes into docs/consistency.md.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::check::{Outcome, Report, check_history};
use crate::client::{Shared, Workload, client_loop, final_reads};
use crate::history::{Event, Input, Kind, NEMESIS, Output, Recorder, pair};
use crate::nemesis::{Cluster, FaultError, Nemesis};
use crate::wgl::Budget;

/// How a run goes.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The clients.
    pub workload: Workload,
    /// How long the nemesis strikes.
    pub duration: Duration,
    /// Quiet time between strikes, in milliseconds (a random value in this range).
    pub quiet_ms: (u64, u64),
    /// The checker's budget.
    pub budget: Budget,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            workload: Workload::default(),
            duration: Duration::from_secs(10),
            quiet_ms: (100, 400),
            budget: Budget::default(),
        }
    }
}

/// Counts of completions by type.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Counts {
    /// Invocations.
    pub invoke: u64,
    /// `ok`.
    pub ok: u64,
    /// `fail`.
    pub fail: u64,
    /// `info` (unknown outcome).
    pub info: u64,
}

/// The summary of a run.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// The nemesis.
    pub nemesis: String,
    /// What ran (engine, settings), given by the harness.
    pub system: String,
    /// Wall time of the client phase, seconds.
    pub seconds: f64,
    /// Events in the history (the faults' included).
    pub events: usize,
    /// Client operations by outcome.
    pub counts: Counts,
    /// Completed (`ok`) operations per second.
    pub ok_per_sec: f64,
    /// Faults injected.
    pub faults: u64,
    /// Keys checked.
    pub keys: usize,
    /// The verdict.
    pub outcome: Outcome,
    /// Acknowledged writes a later read shows lost ([`lost_writes`]): a direct count beside
    /// the checker's verdict.
    pub lost_writes: usize,
    /// Time the checker took, seconds.
    pub check_seconds: f64,
    /// The most search steps one key took (the budget per key is `RunConfig::budget.steps`).
    pub most_search_steps: u64,
    /// The checker's report (windows of violations).
    #[serde(skip)]
    pub report: Report,
}

impl RunReport {
    /// One row of the table in docs/consistency.md.
    pub fn markdown_row(&self) -> String {
        format!(
            "| {} | {} | {:.0} | {} | {} / {} / {} | {:.0} | {} | {} | {:?} | {} | {:.1} |",
            self.nemesis,
            self.system,
            self.seconds,
            self.events,
            self.counts.ok,
            self.counts.fail,
            self.counts.info,
            self.ok_per_sec,
            self.faults,
            self.keys,
            self.outcome,
            self.lost_writes,
            self.check_seconds
        )
    }
}

/// Runs clients and nemesis, heals, reads every key, checks. `system` names what ran.
///
/// # Errors
/// A fault that could not be injected or healed (the run stops there).
pub async fn run<C: Cluster, N: Nemesis>(
    cluster: &mut C,
    nemesis: &mut N,
    cfg: &RunConfig,
    system: &str,
) -> Result<(Vec<Event>, RunReport), FaultError> {
    let recorder = Arc::new(Recorder::default());
    let shared = Arc::new(Shared {
        recorder: Arc::clone(&recorder),
        stop: AtomicBool::new(false),
        started: AtomicU64::new(0),
        max_key: AtomicU64::new(0),
    });
    let urls = cluster.client_urls();
    let mut clients = Vec::new();
    for id in 0..cfg.workload.clients {
        let url = urls[id % urls.len().max(1)].clone();
        clients.push(tokio::spawn(client_loop(
            id,
            url,
            cfg.workload.clone(),
            Arc::clone(&shared),
        )));
    }
    let started = Instant::now();
    let mut rng = fastrand::Rng::with_seed(cfg.workload.seed);
    let mut faults = 0;
    let mut error = None;
    while started.elapsed() < cfg.duration {
        let quiet = rng.u64(cfg.quiet_ms.0..=cfg.quiet_ms.1);
        tokio::time::sleep(Duration::from_millis(quiet)).await;
        if started.elapsed() >= cfg.duration {
            break;
        }
        match nemesis.strike(cluster, &recorder, &mut rng).await {
            Ok(n) => faults += n,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    // A short quiet tail: operations after the last heal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    shared.stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(e) = error {
        return Err(e);
    }
    let max_key = shared.max_key.load(Ordering::Relaxed);
    final_reads(
        &urls[0],
        max_key,
        cfg.workload.request_timeout.max(Duration::from_secs(5)),
        &recorder,
    )
    .await;
    let events = recorder.events();
    let check_started = Instant::now();
    let (events, report) = {
        let budget = cfg.budget;
        tokio::task::spawn_blocking(move || {
            let r = check_history(&events, budget);
            (events, r)
        })
        .await
        .map_err(|e| FaultError::new("checker", e))?
    };
    let check_seconds = check_started.elapsed().as_secs_f64();
    let counts = count(&events);
    let summary = RunReport {
        nemesis: nemesis.name().to_owned(),
        system: system.to_owned(),
        seconds,
        events: events.len(),
        counts,
        ok_per_sec: counts.ok as f64 / seconds.max(1e-9),
        faults,
        keys: report.keys.len(),
        outcome: report.outcome(),
        lost_writes: lost_writes(&events),
        check_seconds,
        most_search_steps: report.most_steps(),
        report,
    };
    Ok((events, summary))
}

/// Counts client completions by type.
pub fn count(events: &[Event]) -> Counts {
    let mut c = Counts::default();
    for e in events.iter().filter(|e| e.process != NEMESIS) {
        match e.kind {
            Kind::Invoke => c.invoke += 1,
            Kind::Ok => c.ok += 1,
            Kind::Fail => c.fail += 1,
            Kind::Info => c.info += 1,
        }
    }
    c
}

/// Acknowledged writes that a read shows lost: a read invoked after the write was acknowledged
/// finds the key absent (nothing deletes), or finds a value whose write had completed before
/// the acknowledged write was even invoked. The final reads after the run make this see losses
/// on keys the clients had left; a loss that a later write hides from every read is left to
/// the checker.
pub fn lost_writes(events: &[Event]) -> usize {
    let ops = pair(events);
    let mut by_key: HashMap<&str, Vec<&crate::history::Op>> = HashMap::new();
    for o in &ops {
        by_key.entry(o.key.as_str()).or_default().push(o);
    }
    let mut lost = 0;
    for ops in by_key.values() {
        // Value -> completion time of the write that wrote it (None: unknown outcome).
        let mut writer: HashMap<&str, Option<u64>> = HashMap::new();
        for o in ops {
            if let Input::Write(v) | Input::Cas { new: v, .. } = &o.input {
                writer.insert(v.as_str(), o.ret);
            }
        }
        let reads: Vec<(u64, Option<&str>)> = ops
            .iter()
            .filter_map(|o| match &o.output {
                Output::Read(v) => Some((o.call, v.as_deref())),
                _ => None,
            })
            .collect();
        lost += ops
            .iter()
            .filter(|w| matches!(w.output, Output::Written | Output::Cas(true)))
            .filter(|w| {
                let Some(acked) = w.ret else { return false };
                reads.iter().any(|&(call, v)| {
                    call > acked
                        && match v {
                            None => true,
                            Some(v) => matches!(writer.get(v), Some(Some(done)) if *done < w.call),
                        }
                })
            })
            .count();
    }
    lost
}
