//! Choosing and opening an engine from typed options.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use super::{Engine, SyncPolicy, bitcask, memory};
use crate::error::Result;

/// Which engine serves the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EngineKind {
    /// Log-structured data files with an in-memory keydir.
    #[default]
    Bitcask,
    /// Redis-style in-memory table with snapshots and an append-only log.
    Memory,
}

impl FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "bitcask" => Ok(EngineKind::Bitcask),
            "memory" => Ok(EngineKind::Memory),
            other => Err(format!("expected `bitcask` or `memory`, got `{other}`")),
        }
    }
}

impl EngineKind {
    /// Longest value this engine stores: bitcask [`bitcask::MAX_VALUE_LEN`], memory
    /// [`memory::MAX_VALUE_LEN`].
    pub const fn max_value_len(self) -> usize {
        match self {
            EngineKind::Bitcask => bitcask::MAX_VALUE_LEN,
            EngineKind::Memory => memory::MAX_VALUE_LEN,
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EngineKind::Bitcask => "bitcask",
            EngineKind::Memory => "memory",
        })
    }
}

/// Everything needed to open an engine.
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// Which engine.
    pub kind: EngineKind,
    /// The data directory (created if missing, locked while open).
    pub dir: PathBuf,
    /// When writes are made durable.
    pub sync: SyncPolicy,
    /// Bitcask-specific settings.
    pub bitcask: bitcask::BitcaskOptions,
    /// Memory-engine-specific settings.
    pub memory: memory::MemoryOptions,
}

/// Opens (recovering if needed) the engine the options name.
///
/// # Errors
/// Lock, format, corruption and I/O errors of the chosen engine.
pub fn open(opts: &EngineOptions) -> Result<Arc<dyn Engine>> {
    Ok(match opts.kind {
        EngineKind::Bitcask => {
            Arc::new(bitcask::Bitcask::open(&opts.dir, opts.sync, &opts.bitcask)?)
        }
        EngineKind::Memory => Arc::new(memory::MemoryEngine::open(
            &opts.dir,
            opts.sync,
            &opts.memory,
        )?),
    })
}
