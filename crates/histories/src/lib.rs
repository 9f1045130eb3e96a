//! Jepsen-style consistency testing for hoardhaven: concurrent clients record a history of
//! reads, writes and compare-and-sets while a nemesis injects faults; a checker then decides
//! whether some order of those operations, respecting real time, is a valid history of a
//! compare-and-set register per key (linearizability).
//!
//! # Layout
//! - [`history`]: the events (invoke / ok / fail / info) as JSON lines, and their pairing into
//!   operations; what each outcome means to the checker is decided there.
//! - [`model`]: the compare-and-set register the history is held to.
//! - [`wgl`]: the search (Wing-Gong with Lowe's memoisation, as porcupine and Knossos), generic
//!   over a model.
//! - [`check`]: per-key checking of a whole history, and the smallest window with no valid
//!   order when there is a violation.
//! - [`client`]: the HTTP clients that record the history.
//! - [`proxy`]: a TCP proxy that can be cut and healed (partitions).
//! - [`nemesis`]: the [`nemesis::Cluster`] a harness provides (one node today, the Raft cluster
//!   later) and the nemeses (kill -9, SIGSTOP, partition).
//! - [`run`]: one bounded run and its summary.
//!
//! The library starts no server itself: the harness (tests/consistency.rs) owns the processes.

pub mod check;
pub mod client;
pub mod history;
pub mod model;
pub mod nemesis;
pub mod proxy;
pub mod run;
pub mod wgl;
