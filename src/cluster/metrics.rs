//! The cluster's Prometheus metrics: term, leader changes, commit and apply index, replication
//! lag per follower, snapshots sent, built and installed, rounds of read confirmation.
//!
//! Owns the metric names and their descriptions; [`watch`] follows openraft's metrics channel
//! and records them (the `metrics` facade is a no-op when no recorder is installed).

use super::types::{NodeId, Raft};

/// Describes every cluster metric (called once at start).
pub fn describe() {
    metrics::describe_gauge!("hoardhaven_raft_term", "Current Raft term of this node");
    metrics::describe_gauge!(
        "hoardhaven_raft_is_leader",
        "1 when this node is the leader"
    );
    metrics::describe_counter!(
        "hoardhaven_raft_leader_changes_total",
        "Times this node saw the leader change"
    );
    metrics::describe_gauge!(
        "hoardhaven_raft_commit_index",
        "Highest log index known committed"
    );
    metrics::describe_gauge!(
        "hoardhaven_raft_applied_index",
        "Highest log index applied to the engine"
    );
    metrics::describe_gauge!(
        "hoardhaven_raft_last_log_index",
        "Highest log index in this node's log"
    );
    metrics::describe_gauge!(
        "hoardhaven_raft_replication_lag_entries",
        "Leader only: entries a member's log is behind the leader's, per member"
    );
    metrics::describe_counter!(
        "hoardhaven_raft_snapshots_built_total",
        "Snapshots built by this node"
    );
    metrics::describe_counter!(
        "hoardhaven_raft_snapshots_installed_total",
        "Snapshots received from a leader and installed"
    );
    metrics::describe_counter!(
        "hoardhaven_raft_snapshots_sent_total",
        "Snapshot chunks sent to followers"
    );
    metrics::describe_counter!(
        "hoardhaven_raft_read_rounds_total",
        "Leader only: leadership confirmations for linearizable reads (one per round, \
         whatever the number of reads it answers)"
    );
    metrics::describe_counter!(
        "hoardhaven_raft_read_index_total",
        "Leader only: linearizable reads (and followers' read-index requests) answered by a round"
    );
    metrics::describe_gauge!(
        "hoardhaven_raft_reads_waiting",
        "Leader only: linearizable reads waiting for a leadership confirmation (queued or in \
         the round running)"
    );
}

/// A round of leadership confirmation answered `reads` reads; `waiting` are left.
pub fn read_round(reads: usize, waiting: usize) {
    metrics::counter!("hoardhaven_raft_read_rounds_total").increment(1);
    metrics::counter!("hoardhaven_raft_read_index_total").increment(reads as u64);
    reads_waiting(waiting);
}

/// `waiting` reads wait for a leadership confirmation.
pub fn reads_waiting(waiting: usize) {
    metrics::gauge!("hoardhaven_raft_reads_waiting").set(waiting as f64);
}

/// A snapshot was built.
pub fn snapshot_built() {
    metrics::counter!("hoardhaven_raft_snapshots_built_total").increment(1);
}

/// A snapshot was installed.
pub fn snapshot_installed() {
    metrics::counter!("hoardhaven_raft_snapshots_installed_total").increment(1);
}

/// A snapshot chunk was sent.
pub fn snapshot_chunk_sent() {
    metrics::counter!("hoardhaven_raft_snapshots_sent_total").increment(1);
}

/// Follows the Raft metrics until the node stops.
pub async fn watch(raft: Raft) {
    let mut rx = raft.metrics();
    let mut leader: Option<NodeId> = None;
    loop {
        let m = rx.borrow_and_update().clone();
        metrics::gauge!("hoardhaven_raft_term").set(m.current_term as f64);
        metrics::gauge!("hoardhaven_raft_is_leader").set(if m.current_leader == Some(m.id) {
            1.0
        } else {
            0.0
        });
        if m.current_leader != leader {
            if m.current_leader.is_some() {
                metrics::counter!("hoardhaven_raft_leader_changes_total").increment(1);
            }
            leader = m.current_leader;
        }
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        metrics::gauge!("hoardhaven_raft_applied_index").set(applied as f64);
        metrics::gauge!("hoardhaven_raft_last_log_index").set(m.last_log_index.unwrap_or(0) as f64);
        if let Some(rep) = &m.replication {
            let last = m.last_log_index.unwrap_or(0);
            let mut committed = Vec::new();
            for (id, matched) in rep {
                let at = matched.map(|l| l.index).unwrap_or(0);
                committed.push(at);
                metrics::gauge!("hoardhaven_raft_replication_lag_entries", "node" => id.to_string())
                    .set(last.saturating_sub(at) as f64);
            }
            // The commit index is the median match index (the quorum's).
            committed.sort_unstable();
            if let Some(c) = committed
                .get(committed.len().saturating_sub(1) / 2)
                .copied()
            {
                let c = committed
                    .len()
                    .checked_sub(committed.len() / 2 + 1)
                    .and_then(|i| committed.get(i))
                    .copied()
                    .unwrap_or(c);
                metrics::gauge!("hoardhaven_raft_commit_index").set(c as f64);
            }
        } else {
            metrics::gauge!("hoardhaven_raft_commit_index").set(applied as f64);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
