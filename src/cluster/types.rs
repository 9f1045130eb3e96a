//! The Raft type configuration and the application data that travels in the log.
//!
//! Owns [`TypeConfig`] (openraft's type bundle: node ids are `u64`, a node is a [`NodeInfo`]
//! with its peer and API URLs, snapshots are files), [`Command`] (one client write as it is
//! stored in a log entry) and [`Outcome`] (what applying it answered). Everything openraft
//! names is re-exported from here under short aliases so that a move to openraft 0.10 touches
//! this module and its siblings only.

use serde::{Deserialize, Serialize};

use crate::engine::{BatchResult, Precondition, UnixMillis, Version, Written};

/// A cluster member as the membership config stores it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Base URL of the node's peer listener (`http://host:port`), where `/raft/*` is served.
    pub peer_url: String,
    /// Base URL of the node's client API, where writes are forwarded and clients are sent.
    pub api_url: String,
}

impl std::fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer={} api={}", self.peer_url, self.api_url)
    }
}

openraft::declare_raft_types!(
    /// hoardhaven's Raft types.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A node id.
pub type NodeId = u64;
/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A vote.
pub type Vote = openraft::Vote<NodeId>;
/// Membership as stored with its log id.
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
/// A storage error.
pub type StorageError = openraft::StorageError<NodeId>;

/// A precondition as it travels in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cond {
    /// Unconditional.
    None,
    /// Exactly this version.
    IfVersion(u64),
    /// Present.
    IfExists,
    /// Absent.
    IfAbsent,
}

impl From<Precondition> for Cond {
    fn from(p: Precondition) -> Self {
        match p {
            Precondition::None => Cond::None,
            Precondition::IfVersion(v) => Cond::IfVersion(v.0),
            Precondition::IfExists => Cond::IfExists,
            Precondition::IfAbsent => Cond::IfAbsent,
        }
    }
}

impl From<Cond> for Precondition {
    fn from(c: Cond) -> Self {
        match c {
            Cond::None => Precondition::None,
            Cond::IfVersion(v) => Precondition::IfVersion(Version(v)),
            Cond::IfExists => Precondition::IfExists,
            Cond::IfAbsent => Precondition::IfAbsent,
        }
    }
}

/// One operation of a replicated batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Store a value; the expiry is absolute (fixed by the node that proposed it), so every
    /// replica expires the key at the same instant.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// Expiry in Unix milliseconds.
        expires_at: Option<u64>,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

/// A client write as the log carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A single put with its precondition.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// Expiry in Unix milliseconds.
        expires_at: Option<u64>,
        /// Condition.
        cond: Cond,
    },
    /// A single delete with its precondition.
    Delete {
        /// The key.
        key: Vec<u8>,
        /// Condition.
        cond: Cond,
    },
    /// An atomic batch, applied only if every check holds.
    Batch {
        /// Conditions checked atomically with the batch.
        checks: Vec<(Vec<u8>, Cond)>,
        /// Operations in order.
        ops: Vec<Op>,
    },
    /// Unconditional puts of different clients that arrived together
    /// ([`super::proposer`]), applied in order as one engine batch, each with its own
    /// answer. Anything but an unconditional `Put` inside refuses the whole group.
    Group(Vec<Command>),
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Put { key, .. } => write!(f, "put({} key bytes)", key.len()),
            Command::Delete { key, .. } => write!(f, "delete({} key bytes)", key.len()),
            Command::Batch { ops, .. } => write!(f, "batch({} ops)", ops.len()),
            Command::Group(cmds) => write!(f, "group({} puts)", cmds.len()),
        }
    }
}

/// The answer of applying one entry. Only deterministic refusals are answers; an I/O failure
/// while applying stops the node instead (a replica must never skip an entry others applied).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Outcome {
    /// A blank or membership entry.
    #[default]
    None,
    /// A put: new version, and whether the key was created.
    Put {
        /// Version.
        version: u64,
        /// Created.
        created: bool,
    },
    /// A delete: the version of the removed value, or none when absent.
    Delete {
        /// Removed version.
        removed: Option<u64>,
    },
    /// A batch: `(version, existed_before)` per operation.
    Batch {
        /// Results in request order.
        results: Vec<(u64, bool)>,
    },
    /// A precondition did not hold; the key's current version.
    PreconditionFailed {
        /// Current version.
        current: Option<u64>,
    },
    /// The command was refused as invalid (empty or over-long key, value too large, ...).
    Invalid {
        /// Why.
        reason: String,
    },
    /// A group: one answer per put, in order.
    Group(Vec<Outcome>),
}

impl Outcome {
    /// The put result.
    pub fn written(version: Version, created: bool) -> Self {
        Outcome::Put {
            version: version.0,
            created,
        }
    }

    /// The batch result.
    pub fn batch(results: &[BatchResult]) -> Self {
        Outcome::Batch {
            results: results
                .iter()
                .map(|r| (r.version.0, r.existed_before))
                .collect(),
        }
    }

    /// Back to an engine `Written`.
    pub fn as_written(&self) -> Option<Written> {
        match self {
            Outcome::Put { version, created } => Some(Written {
                version: Version(*version),
                created: *created,
            }),
            _ => None,
        }
    }
}

/// Expiry as it travels.
pub fn expiry(at: Option<UnixMillis>) -> Option<u64> {
    at.map(|t| t.0)
}
