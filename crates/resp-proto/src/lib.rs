//! The Redis serialization protocol (RESP2 and RESP3) as hoardhaven's RESP listener speaks it.
//!
//! Owns the wire format only, with no I/O, so that it can be fuzzed on its own (the
//! `resp_parse` target in `fuzz/`): [`parse`] turns request bytes into commands under caps
//! that bound memory, [`reply`] encodes replies for either protocol version.

pub mod parse;
pub mod reply;

pub use parse::{Args, ParseLimits, ProtocolError};
pub use reply::{Proto, Reply};
