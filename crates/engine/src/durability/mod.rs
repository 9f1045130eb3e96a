//! The durability core both engines write through.
//!
//! - [`commit`]: group commit. Writers append to their engine's buffer, then wait for a log
//!   sequence number (LSN) to become durable, either blocking ([`GroupCommit::wait`]) or by
//!   awaiting a [`Ticket`]. One leader at a time writes everyone's buffered records with one
//!   write and one fdatasync, makes them visible to readers, and wakes every waiter it covered.
//!   Blocking waiters lead themselves; tickets are led by one committer thread per engine, so
//!   no thread is parked per waiting write.
//! - [`poison`]: fail-stop after a failed write or fsync.
//! - [`append`]: the append buffer over a log file: positional writes, preallocation, cutting
//!   back a write a full disk stopped half way, trimming.
//! - [`pending`]: writes appended but not yet durable, kept in log order until they are
//!   published to readers.
//!
//! File I/O goes through [`crate::fs`], so the fault seam reaches every call; crash points
//! are [`crate::crash_point`].

pub mod append;
pub mod commit;
pub mod pending;
pub mod poison;

pub use append::AppendFile;
pub use commit::{Flusher, GroupCommit, Ticket};
pub use pending::PendingQueue;
pub use poison::Poison;
