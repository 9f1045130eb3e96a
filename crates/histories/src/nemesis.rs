//! Faults, and the system they are injected into.
//!
//! [`Cluster`] is what a test harness provides: the nodes' client URLs and the means to kill,
//! restart, pause and resume a node, and the links a partition can cut. A single node is a
//! cluster of one (its client link through a [`Proxy`]); the Raft cluster plugs in by
//! implementing the same trait (nodes, the leader as the favoured target, peer links through
//! proxies), and every nemesis then works on it unchanged.
//!
//! A [`Nemesis`] strikes once per call: it injects one fault, holds it for a random time,
//! heals it, and records both in the history. Each nemesis is bounded in time: the holds are
//! short and every step of the harness is bounded.

use std::sync::Arc;
use std::time::Duration;

use crate::history::{Draft, F, Kind, NEMESIS, Recorder};
use crate::proxy::Proxy;

/// A fault that could not be injected or healed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {why}")]
pub struct FaultError {
    /// The step that failed.
    pub what: String,
    /// Why.
    pub why: String,
}

impl FaultError {
    /// A fault error.
    pub fn new(what: impl Into<String>, why: impl std::fmt::Display) -> FaultError {
        FaultError {
            what: what.into(),
            why: why.to_string(),
        }
    }
}

/// A cuttable link and what it joins.
#[derive(Clone)]
pub struct Link {
    /// `client->n0`, `n1->n2`, ...
    pub name: String,
    /// The proxy carrying it.
    pub proxy: Arc<Proxy>,
}

/// The system under test, as clients and nemeses see it.
// The harness and the nemeses are generic, never `dyn`: async methods are fine here.
#[allow(async_fn_in_trait)]
pub trait Cluster {
    /// One URL per node (through its client link when it has one), where clients send requests.
    fn client_urls(&self) -> Vec<String>;

    /// How many nodes.
    fn nodes(&self) -> usize;

    /// The node a fault should favour (a cluster's leader); `None` when there is none.
    async fn favoured(&mut self) -> Option<usize> {
        None
    }

    /// SIGKILL, and wait for the process to be gone.
    async fn kill(&mut self, node: usize) -> Result<String, FaultError>;

    /// Start a killed node again over its data directory, on its address; wait until ready.
    async fn restart(&mut self, node: usize) -> Result<String, FaultError>;

    /// SIGSTOP.
    async fn pause(&mut self, node: usize) -> Result<String, FaultError>;

    /// SIGCONT.
    async fn resume(&mut self, node: usize) -> Result<String, FaultError>;

    /// The links a partition may cut.
    fn links(&self) -> Vec<Link>;
}

/// Something that injects faults.
#[allow(async_fn_in_trait)]
pub trait Nemesis {
    /// Its name in reports.
    fn name(&self) -> &'static str;

    /// Injects one fault, holds it, heals it; records both. Returns the faults injected.
    async fn strike<C: Cluster>(
        &mut self,
        cluster: &mut C,
        rec: &Recorder,
        rng: &mut fastrand::Rng,
    ) -> Result<u64, FaultError>;
}

fn note(rec: &Recorder, f: F, what: String) {
    let mut d = Draft::new(NEMESIS, Kind::Info, f, "");
    d.error = Some(what);
    rec.record(d);
}

fn hold(rng: &mut fastrand::Rng, min_ms: u64, max_ms: u64) -> Duration {
    Duration::from_millis(rng.u64(min_ms..=max_ms))
}

/// Picks a node: the favoured one half of the time, else any.
async fn target<C: Cluster>(cluster: &mut C, rng: &mut fastrand::Rng) -> usize {
    match cluster.favoured().await {
        Some(n) if rng.bool() => n,
        _ => rng.usize(0..cluster.nodes().max(1)),
    }
}

/// Injects nothing (the baseline run).
#[derive(Debug, Default)]
pub struct NoFaults;

impl Nemesis for NoFaults {
    fn name(&self) -> &'static str {
        "none"
    }
    async fn strike<C: Cluster>(
        &mut self,
        _: &mut C,
        _: &Recorder,
        rng: &mut fastrand::Rng,
    ) -> Result<u64, FaultError> {
        tokio::time::sleep(hold(rng, 100, 500)).await;
        Ok(0)
    }
}

/// `kill -9` of a node, then a restart after a short random downtime.
#[derive(Debug, Default)]
pub struct Kill;

impl Nemesis for Kill {
    fn name(&self) -> &'static str {
        "kill"
    }
    async fn strike<C: Cluster>(
        &mut self,
        cluster: &mut C,
        rec: &Recorder,
        rng: &mut fastrand::Rng,
    ) -> Result<u64, FaultError> {
        let node = target(cluster, rng).await;
        let what = cluster.kill(node).await?;
        note(rec, F::Kill, what);
        tokio::time::sleep(hold(rng, 0, 200)).await;
        let what = cluster.restart(node).await?;
        note(rec, F::Restart, what);
        Ok(1)
    }
}

/// SIGSTOP of a node for up to 1.5 s (past the clients' timeout), then SIGCONT.
#[derive(Debug, Default)]
pub struct Pause;

impl Nemesis for Pause {
    fn name(&self) -> &'static str {
        "pause"
    }
    async fn strike<C: Cluster>(
        &mut self,
        cluster: &mut C,
        rec: &Recorder,
        rng: &mut fastrand::Rng,
    ) -> Result<u64, FaultError> {
        let node = target(cluster, rng).await;
        let what = cluster.pause(node).await?;
        note(rec, F::Pause, what);
        tokio::time::sleep(hold(rng, 50, 1500)).await;
        let what = cluster.resume(node).await?;
        note(rec, F::Resume, what);
        Ok(1)
    }
}

/// Cuts a random non-empty subset of the links for up to a second, then heals them.
#[derive(Debug, Default)]
pub struct Partition;

impl Nemesis for Partition {
    fn name(&self) -> &'static str {
        "partition"
    }
    async fn strike<C: Cluster>(
        &mut self,
        cluster: &mut C,
        rec: &Recorder,
        rng: &mut fastrand::Rng,
    ) -> Result<u64, FaultError> {
        let links = cluster.links();
        if links.is_empty() {
            return Err(FaultError::new(
                "partition",
                "the cluster has no cuttable link",
            ));
        }
        let mut cut: Vec<&Link> = links.iter().filter(|_| rng.bool()).collect();
        if cut.is_empty() {
            cut.push(&links[rng.usize(0..links.len())]);
        }
        for l in &cut {
            l.proxy.cut();
        }
        let names: Vec<&str> = cut.iter().map(|l| l.name.as_str()).collect();
        note(rec, F::Cut, names.join(" "));
        tokio::time::sleep(hold(rng, 50, 1000)).await;
        for l in &cut {
            l.proxy
                .heal()
                .await
                .map_err(|e| FaultError::new(format!("heal {}", l.name), e))?;
        }
        note(rec, F::Heal, names.join(" "));
        Ok(1)
    }
}

/// The nemeses by name, for the command line and the script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NemesisKind {
    /// [`NoFaults`].
    None,
    /// [`Kill`].
    Kill,
    /// [`Pause`].
    Pause,
    /// [`Partition`].
    Partition,
}

impl NemesisKind {
    /// Every nemesis that injects faults.
    pub const FAULTS: [NemesisKind; 3] = [
        NemesisKind::Kill,
        NemesisKind::Pause,
        NemesisKind::Partition,
    ];

    /// Parses `none`, `kill`, `pause`, `partition`.
    pub fn parse(s: &str) -> Option<NemesisKind> {
        Some(match s {
            "none" => NemesisKind::None,
            "kill" => NemesisKind::Kill,
            "pause" => NemesisKind::Pause,
            "partition" => NemesisKind::Partition,
            _ => return None,
        })
    }

    /// The name [`NemesisKind::parse`] reads.
    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::None => "none",
            NemesisKind::Kill => "kill",
            NemesisKind::Pause => "pause",
            NemesisKind::Partition => "partition",
        }
    }
}

impl Nemesis for NemesisKind {
    fn name(&self) -> &'static str {
        NemesisKind::name(*self)
    }
    async fn strike<C: Cluster>(
        &mut self,
        cluster: &mut C,
        rec: &Recorder,
        rng: &mut fastrand::Rng,
    ) -> Result<u64, FaultError> {
        match self {
            NemesisKind::None => NoFaults.strike(cluster, rec, rng).await,
            NemesisKind::Kill => Kill.strike(cluster, rec, rng).await,
            NemesisKind::Pause => Pause.strike(cluster, rec, rng).await,
            NemesisKind::Partition => Partition.strike(cluster, rec, rng).await,
        }
    }
}
