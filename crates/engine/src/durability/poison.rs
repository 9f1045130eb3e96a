//! Fail-stop: once a write or fsync of a log has failed, the engine refuses every write until
//! it is reopened.
//!
//! After a failed fsync Linux may drop the dirty pages it could not write and report success
//! for the next fsync, so retrying and acknowledging could acknowledge lost writes (see the
//! failed-fsync model in [`crate::fault`]). Reads go on.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// The poisoned state of one engine.
#[derive(Debug, Default)]
pub struct Poison {
    set: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Poison {
    /// Not poisoned.
    pub fn new() -> Self {
        Poison::default()
    }

    /// Poisons with `e` as the reason (the first reason is kept).
    pub fn poison(&self, e: &Error) {
        let mut r = self.reason.lock();
        if r.is_none() {
            tracing::error!(error = %e, "engine poisoned: refusing writes until reopened");
            *r = Some(e.to_string());
        }
        self.set.store(true, Ordering::Release);
    }

    /// Marks the engine as refusing writes for `reason` without logging an error (a
    /// read-only open).
    pub fn refuse(&self, reason: String) {
        *self.reason.lock() = Some(reason);
        self.set.store(true, Ordering::Release);
    }

    /// True once poisoned.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// `Err(Poisoned)` once poisoned.
    ///
    /// # Errors
    /// [`Error::Poisoned`] with the reason.
    pub fn check(&self) -> Result<()> {
        if self.is_set() {
            return Err(Error::Poisoned(
                self.reason.lock().clone().unwrap_or_default(),
            ));
        }
        Ok(())
    }
}
