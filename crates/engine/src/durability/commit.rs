//! Group commit: many writers, one write and one fdatasync per round.
//!
//! Every engine numbers what it appends with a log sequence number (LSN; bitcask uses record
//! sequence numbers, the memory engine byte offsets): appending returns the LSN a write must
//! wait for. A writer then either blocks in [`GroupCommit::wait`] or awaits a [`Ticket`].
//!
//! One leader at a time runs the engine's [`Flusher`]: it writes everyone's buffered records
//! (one `write`), fdatasyncs once, publishes what became durable to readers, and returns the
//! LSN now durable; then every waiter at or below it is released. A blocking waiter that finds
//! no leader leads itself (no thread hop for one writer). Tickets are led by the engine's one
//! committer thread ([`GroupCommit::spawn_committer`]), woken when a ticket is first polled,
//! so 1,000 awaited writes park no thread and share one fdatasync.
//!
//! A failed write or fsync poisons the engine (the flusher does that): its leader gets the I/O
//! error, every other waiter and every later write [`Error::Poisoned`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::Poison;
use crate::error::{Error, Result};

/// What a leader runs: the engine's flush + fdatasync + publish.
pub trait Flusher: Send + Sync {
    /// Writes every buffered record, fdatasyncs, makes what became durable visible to readers,
    /// and returns the LSN now durable. Poisons the engine on a failed write or fsync.
    ///
    /// # Errors
    /// The I/O error.
    fn flush_and_sync(&self) -> Result<u64>;
}

#[derive(Default)]
struct State {
    durable: u64,
    leading: bool,
    /// Highest LSN a ticket waits for.
    wanted: u64,
    wakers: Vec<(u64, Waker)>,
    stop: bool,
    /// The error of the first failed round, told to every ticket it left waiting.
    failure: Option<Error>,
}

/// A copy of a round's error for each waiter it failed (I/O errors are not `Clone`): a full
/// disk stays a full disk, an I/O error keeps its kind and message.
fn copy_error(e: &Error) -> Error {
    match e {
        Error::DiskFull { context } => Error::DiskFull {
            context: context.clone(),
        },
        Error::Io { context, cause } => Error::Io {
            context: context.clone(),
            cause: std::io::Error::new(cause.kind(), cause.to_string()),
        },
        other => Error::Poisoned(other.to_string()),
    }
}

/// Shared state of group commit for one engine.
pub struct GroupCommit {
    state: Mutex<State>,
    cv: Condvar,
    poison: Arc<Poison>,
    flusher: OnceLock<Weak<dyn Flusher>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("durable", &self.durable())
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Everything up to `durable` is durable (after recovery); failures poison `poison`.
    pub fn new(durable: u64, poison: Arc<Poison>) -> Arc<Self> {
        Arc::new(GroupCommit {
            state: Mutex::new(State {
                durable,
                ..State::default()
            }),
            cv: Condvar::new(),
            poison,
            flusher: OnceLock::new(),
        })
    }

    /// Sets what leaders run (once, right after the engine's shared state exists).
    pub fn set_flusher(&self, flusher: Weak<dyn Flusher>) {
        let _ = self.flusher.set(flusher);
    }

    /// The LSN durable now.
    pub fn durable(&self) -> u64 {
        self.state.lock().durable
    }

    /// Notes that everything up to `lsn` is durable (a sync outside a leader, such as the
    /// one sealing a file) and releases its waiters.
    pub fn mark_durable(&self, lsn: u64) {
        let mut st = self.state.lock();
        if lsn > st.durable {
            st.durable = lsn;
        }
        self.release(&mut st, false);
    }

    /// Wakes the tickets now durable (all of them when `all`) and the blocking waiters.
    fn release(&self, st: &mut State, all: bool) {
        let durable = st.durable;
        st.wakers.retain(|(lsn, w)| {
            let done = all || *lsn <= durable;
            if done {
                w.wake_by_ref();
            }
            !done
        });
        self.cv.notify_all();
    }

    /// Runs one round as leader; `st.leading` must be false.
    fn lead<'a>(&'a self, mut st: MutexGuard<'a, State>) -> (MutexGuard<'a, State>, Result<u64>) {
        st.leading = true;
        drop(st);
        let r = match self.flusher.get().and_then(Weak::upgrade) {
            Some(f) => f.flush_and_sync(),
            None => Err(Error::Closed),
        };
        if let Err(e) = &r
            && !self.poison.is_set()
        {
            // Fail-stop on any failed round (flushers poison I/O failures themselves), so no
            // one leads the same failing round again and again.
            self.poison.poison(e);
        }
        let mut st = self.state.lock();
        st.leading = false;
        if let Ok(upto) = r
            && upto > st.durable
        {
            st.durable = upto;
        }
        if let Err(e) = &r
            && st.failure.is_none()
        {
            st.failure = Some(copy_error(e));
        }
        let failed = self.poison.is_set();
        self.release(&mut st, failed);
        (st, r)
    }

    /// Blocks until everything up to `lsn` is durable, leading a round when no one else is.
    ///
    /// # Errors
    /// The I/O error of the round this caller led, or [`Error::Poisoned`].
    pub fn wait(&self, lsn: u64) -> Result<()> {
        let mut st = self.state.lock();
        loop {
            if st.durable >= lsn {
                return Ok(());
            }
            self.poison.check()?;
            if st.leading {
                self.cv.wait(&mut st);
                continue;
            }
            let (g, r) = self.lead(st);
            st = g;
            r?;
        }
    }

    /// Makes everything appended so far durable now, waiting for a round in flight first
    /// (`sync`, `close`, a snapshot's cut). Returns the LSN durable.
    ///
    /// # Errors
    /// The I/O error, or [`Error::Poisoned`].
    pub fn sync_now(&self) -> Result<u64> {
        let mut st = self.state.lock();
        while st.leading {
            self.cv.wait(&mut st);
        }
        self.poison.check()?;
        let (_st, r) = self.lead(st);
        r
    }

    /// A ticket for `lsn`: a future that resolves once it is durable.
    pub fn ticket(self: &Arc<Self>, lsn: u64) -> Ticket {
        Ticket {
            commit: Some((Arc::clone(self), lsn)),
        }
    }

    /// Starts the thread that leads rounds for tickets. It holds no strong reference to the
    /// engine; [`GroupCommit::stop`] ends it.
    ///
    /// # Errors
    /// When the thread cannot be spawned.
    pub fn spawn_committer(self: &Arc<Self>, name: &str) -> Result<JoinHandle<()>> {
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || me.committer())
            .map_err(|e| Error::io("spawning the committer thread", e))
    }

    fn committer(&self) {
        let mut st = self.state.lock();
        loop {
            if st.stop {
                return;
            }
            if st.wanted > st.durable && !st.leading && !self.poison.is_set() {
                let (g, _) = self.lead(st);
                st = g;
                continue;
            }
            self.cv.wait(&mut st);
        }
    }

    /// Stops the committer thread; tickets not yet durable resolve to [`Error::Closed`].
    pub fn stop(&self) {
        let mut st = self.state.lock();
        st.stop = true;
        self.release(&mut st, true);
    }
}

/// A write appended and waiting to be durable. Await it (async callers: no thread is
/// parked), or [`Ticket::wait`] for it (blocking callers). A ticket of a write that needs no
/// fsync (sync policy `never` or an interval) is ready at once.
#[must_use = "the write is not durable until its ticket resolves"]
#[derive(Debug)]
pub struct Ticket {
    commit: Option<(Arc<GroupCommit>, u64)>,
}

impl Ticket {
    /// A ticket with nothing to wait for.
    pub fn ready() -> Self {
        Ticket { commit: None }
    }

    /// True when nothing is left to wait for.
    pub fn is_ready(&self) -> bool {
        self.commit
            .as_ref()
            .is_none_or(|(c, lsn)| c.durable() >= *lsn)
    }

    /// Blocks until the write is durable (leading a round when no one else is).
    ///
    /// # Errors
    /// The I/O error of the round, [`Error::Poisoned`].
    pub fn wait(self) -> Result<()> {
        match self.commit {
            Some((c, lsn)) => c.wait(lsn),
            None => Ok(()),
        }
    }
}

impl Future for Ticket {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some((c, lsn)) = &self.commit else {
            return Poll::Ready(Ok(()));
        };
        let lsn = *lsn;
        let mut st = c.state.lock();
        if st.durable >= lsn {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = &st.failure {
            return Poll::Ready(Err(copy_error(e)));
        }
        if let Err(e) = c.poison.check() {
            return Poll::Ready(Err(e));
        }
        if st.stop {
            return Poll::Ready(Err(Error::Closed));
        }
        match st
            .wakers
            .iter_mut()
            .find(|(l, w)| *l == lsn && w.will_wake(cx.waker()))
        {
            Some(_) => {}
            None => st.wakers.push((lsn, cx.waker().clone())),
        }
        if lsn > st.wanted {
            st.wanted = lsn;
        }
        if !st.leading {
            c.cv.notify_all();
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Counter {
        appended: AtomicU64,
        rounds: AtomicU64,
    }

    impl Flusher for Counter {
        fn flush_and_sync(&self) -> Result<u64> {
            self.rounds.fetch_add(1, Ordering::SeqCst);
            Ok(self.appended.load(Ordering::SeqCst))
        }
    }

    fn setup() -> (Arc<GroupCommit>, Arc<Counter>) {
        let c = GroupCommit::new(0, Arc::new(Poison::new()));
        let f = Arc::new(Counter {
            appended: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
        });
        let weak: Weak<dyn Flusher> = Arc::downgrade(&(f.clone() as Arc<dyn Flusher>));
        c.set_flusher(weak);
        (c, f)
    }

    #[test]
    fn blocking_wait_leads_and_returns() {
        let (c, f) = setup();
        f.appended.store(3, Ordering::SeqCst);
        c.wait(2).expect("durable");
        assert_eq!(c.durable(), 3);
        c.wait(3).expect("already durable");
        assert_eq!(f.rounds.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn tickets_are_resolved_by_the_committer_thread() {
        let (c, f) = setup();
        let t = c.spawn_committer("test-committer").expect("spawn");
        f.appended.store(10, Ordering::SeqCst);
        let tickets: Vec<_> = (1..=10).map(|l| c.ticket(l)).collect();
        // A minimal executor: block on each future with a thread-parking waker.
        for ticket in tickets {
            block_on(ticket).expect("durable");
        }
        assert!(f.rounds.load(Ordering::SeqCst) >= 1);
        c.stop();
        t.join().expect("join");
        assert!(matches!(block_on(c.ticket(11)), Err(Error::Closed)));
    }

    #[test]
    fn poison_fails_waiters() {
        let (c, _f) = setup();
        c.poison.poison(&Error::Closed);
        assert!(matches!(c.wait(1), Err(Error::Poisoned(_))));
        assert!(matches!(block_on(c.ticket(1)), Err(Error::Poisoned(_))));
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }
}
