//! Replication: a Raft cluster of hoardhaven nodes on openraft 0.9.
//!
//! The only module that knows openraft (a move to 0.10 touches nothing outside it). Its parts:
//! [`types`] (the Raft type bundle and the commands the log carries), [`log_store`] (the Raft
//! log on disk), [`state_machine`] (the storage engine as the state machine) and [`snapshot`]
//! (the snapshot file between nodes), [`network`] (Raft RPCs over HTTP, client side) and
//! [`peer`] (the `/raft/*` routes on the peer listener), [`node`] (starting a node),
//! [`proposer`] (grouping concurrent puts into one entry), [`read_index`] (one leadership
//! confirmation for concurrent linearizable reads), [`facade`]
//! (the store the HTTP handlers call: an [`crate::Engine`] whose writes go through the log),
//! [`admin`] (the `/cluster` routes and the read barrier), [`openapi`] (their part of the
//! OpenAPI document), [`metrics`].

pub mod admin;
pub mod facade;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod node;
pub mod openapi;
pub mod peer;
pub mod proposer;
pub mod read_index;
pub mod snapshot;
pub mod state_machine;
pub mod types;
