//! The render threads.
//!
//! Compiles and renders run on a few dedicated threads, never on the async
//! workers that answer kubelet: a hostile template can keep a render thread
//! busy up to its time limit, but never delays another pod's gRPC call.
//! There are [`RENDER_THREADS`] of them, more than the two hostile renders
//! a node usually meets at once, so an ordinary render rarely waits; work
//! beyond them waits in a queue of [`RENDER_QUEUE`] for at most
//! [`MAX_QUEUE_WAIT`], and is refused with [`Error::Busy`] when the queue
//! is full or the wait is over.
//!
//! The caller is answered at the work's deadline even if the work is still
//! running ([`Error::TimedOut`]). The work itself checks the same limit
//! often (see `budget`), and when the caller stops waiting (its deadline
//! passed, or its request was cancelled and the future dropped) the work
//! is marked abandoned: its next check stops it, so a thread is not held
//! long after nobody wants the result. Work that has not started by then
//! is not started at all.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use super::Error;

/// Threads that compile and render. Two: each render may parse up to
/// [`super::MAX_RENDER_DATA`] of Vault data, and the driver's memory
/// reserve (48 MiB) must hold the renders that run at once.
pub const RENDER_THREADS: usize = 2;
/// Compiles and renders that may wait for a thread.
pub const RENDER_QUEUE: usize = 64;
/// Longest a compile or render waits for a thread before it is refused.
pub const MAX_QUEUE_WAIT: Duration = Duration::from_secs(5);
/// Stack of each render thread. The template checks bound the engine's
/// recursion well below this.
const STACK_BYTES: usize = 8 * 1024 * 1024;
/// Time given past a render's limit for its own (more precise) error to
/// arrive before the caller answers for it.
const GRACE: Duration = Duration::from_millis(100);

type Job = Box<dyn FnOnce() + Send>;

/// The render threads and their queue, started on first use. Dropping it
/// lets the threads finish what they are doing and exit.
pub(super) struct Pool {
    threads: usize,
    capacity: usize,
    queue: OnceLock<SyncSender<Job>>,
}

impl Pool {
    /// The driver's pool: [`RENDER_THREADS`] threads, [`RENDER_QUEUE`]
    /// queued jobs.
    pub(super) fn new() -> Self {
        Self::sized(RENDER_THREADS, RENDER_QUEUE)
    }

    /// A pool of `threads` threads and `capacity` queued jobs; zero
    /// threads run every job inline, on the caller's thread.
    pub(super) fn sized(threads: usize, capacity: usize) -> Self {
        Self {
            threads,
            capacity,
            queue: OnceLock::new(),
        }
    }

    fn queue(&self) -> &SyncSender<Job> {
        self.queue.get_or_init(|| {
            let (queue, jobs) = sync_channel::<Job>(self.capacity);
            let jobs = Arc::new(Mutex::new(jobs));
            for i in 0..self.threads {
                let jobs = Arc::clone(&jobs);
                let spawned = std::thread::Builder::new()
                    .name(format!("render-{i}"))
                    .stack_size(STACK_BYTES)
                    .spawn(move || work(&jobs));
                // Without threads every render answers `Busy` (the queue
                // fills), which names the problem better than a panic here.
                if let Err(error) = spawned {
                    tracing::error!(%error, "Could not start a render thread");
                }
            }
            queue
        })
    }

    /// Runs `work` on a render thread and returns its result, or
    /// [`Error::TimedOut`] (naming `what` and `limit`) once it has run for
    /// `limit`, or [`Error::Busy`] when no thread takes it in time. A panic
    /// in `work` is a bug and propagates.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        limit: Duration,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        if self.threads == 0 {
            // An inline pool (tests under paused time): the work runs on
            // the caller's thread, waiting on no timer.
            return Ok(work());
        }
        let (started_tx, started) = oneshot::channel::<()>();
        let (done_tx, done) = oneshot::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        // Set when this future returns or is dropped, whatever the outcome:
        // by then nobody waits for the work.
        let _abandon = Abandon(Arc::clone(&abandoned));
        let job: Job = Box::new(move || {
            // The caller gave up waiting: do not start.
            if started_tx.send(()).is_err() {
                return;
            }
            let _watch = super::budget::abandon_on(abandoned);
            let _ = done_tx.send(catch_unwind(AssertUnwindSafe(work)));
        });
        match self.queue().try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => return Err(Error::Busy),
        }
        match tokio::time::timeout(MAX_QUEUE_WAIT, started).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return Err(Error::Busy),
        }
        match tokio::time::timeout(limit + GRACE, done).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(panic))) => std::panic::resume_unwind(panic),
            // The thread dropped the job without an answer: only a panic
            // while sending does that.
            Ok(Err(_)) => Err(Error::Busy),
            Err(_) => Err(Error::TimedOut { what, limit }),
        }
    }
}

/// Marks a job abandoned when dropped.
struct Abandon(Arc<AtomicBool>);

impl Drop for Abandon {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A render thread: runs jobs until the pool is dropped. A panicking job
/// has its panic sent to its caller; the thread goes on.
fn work(jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}
