//! The bitcask engine (being written: see issue 2).

use std::path::Path;

use crate::engine::SyncPolicy;
use crate::error::{Error, Result};

/// Bitcask settings.
#[derive(Clone, Debug, Default)]
pub struct BitcaskOptions {}

/// The bitcask engine.
#[derive(Debug)]
pub struct Bitcask {}

impl Bitcask {
    /// Opens the engine.
    ///
    /// # Errors
    /// Not written yet.
    pub fn open(_dir: &Path, _sync: SyncPolicy, _opts: &BitcaskOptions) -> Result<Self> {
        Err(Error::Closed)
    }
}
impl crate::engine::Engine for Bitcask {
    fn kind(&self) -> crate::engine::EngineKind {
        crate::engine::EngineKind::Bitcask
    }
    fn get(&self, _key: &[u8]) -> Result<Option<crate::engine::Value>> {
        Err(Error::Closed)
    }
    fn head(&self, _key: &[u8]) -> Result<Option<crate::engine::Meta>> {
        Err(Error::Closed)
    }
    fn put(
        &self,
        _key: &[u8],
        _value: bytes::Bytes,
        _opts: crate::engine::PutOptions,
    ) -> Result<crate::engine::Written> {
        Err(Error::Closed)
    }
    fn delete(
        &self,
        _key: &[u8],
        _p: crate::engine::Precondition,
    ) -> Result<Option<crate::engine::Version>> {
        Err(Error::Closed)
    }
    fn apply_batch(
        &self,
        _ops: Vec<crate::engine::BatchOp>,
    ) -> Result<Vec<crate::engine::BatchResult>> {
        Err(Error::Closed)
    }
    fn list(
        &self,
        _prefix: &[u8],
        _start_after: Option<&[u8]>,
        _limit: usize,
    ) -> Result<crate::engine::ListPage> {
        Err(Error::Closed)
    }
    fn sync(&self) -> Result<()> {
        Err(Error::Closed)
    }
    fn stats(&self) -> Result<crate::engine::Stats> {
        Err(Error::Closed)
    }
    fn merge(&self) -> Result<crate::engine::MergeReport> {
        Err(Error::Closed)
    }
    fn snapshot(&self) -> Result<crate::engine::SnapshotReport> {
        Err(Error::Closed)
    }
    fn jobs(&self) -> crate::engine::JobStatus {
        Default::default()
    }
    fn snapshots(&self) -> Result<Vec<crate::engine::SnapshotInfo>> {
        Err(Error::Closed)
    }
    fn close(&self) -> Result<()> {
        Ok(())
    }
}
