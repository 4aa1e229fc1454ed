//! Refresh: one scheduler task for every volume on the node.
//!
//! The [`RefreshScheduler`] keeps a deadline queue (a `BTreeSet` ordered by
//! `tokio::time::Instant`) and sleeps until the earliest deadline; nothing
//! polls, so 1,000 volumes with hour-long leases cost nothing between
//! deadlines. When a volume is due it is handed to a [`Refresher`] (the
//! volume manager) on a tracked task, at most `max_concurrent` at a time;
//! the refresher answers with the volume's next deadline. *When* things are
//! due is decided by the pure functions in [`policy`].

pub mod policy;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::volume::VolumeId;

/// Something that can refresh one volume and say when it is next due.
pub trait Refresher: Send + Sync + 'static {
    /// Refreshes `volume`; returns its next deadline, or `None` when it needs
    /// no more refreshes (unpublished, or `refresh: "false"`).
    fn refresh(&self, volume: VolumeId) -> impl Future<Output = Option<Instant>> + Send;
}

enum Command {
    Schedule(VolumeId, Instant),
    Cancel(VolumeId),
    Done(VolumeId, Option<Instant>),
}

/// The handle volumes use to (re)schedule and cancel refreshes. Cheap to
/// clone; every call is a non-blocking channel send.
#[derive(Clone, Debug)]
pub struct RefreshScheduler {
    tx: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

/// The scheduler's task half, run once with [`SchedulerTask::run`].
#[derive(Debug)]
pub struct SchedulerTask {
    rx: mpsc::UnboundedReceiver<Command>,
    tx: mpsc::UnboundedSender<Command>,
}

impl RefreshScheduler {
    /// Creates the handle and the task that serves it.
    pub fn new() -> (Self, SchedulerTask) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx: tx.clone() }, SchedulerTask { rx, tx })
    }

    /// Makes `volume` due at `at`, replacing any earlier deadline. A volume
    /// being refreshed right now is refreshed again at `at` if that is
    /// sooner than what the running refresh will ask for.
    pub fn schedule(&self, volume: VolumeId, at: Instant) {
        let _ = self.tx.send(Command::Schedule(volume, at));
    }

    /// Stops refreshing `volume` (unpublish).
    pub fn cancel(&self, volume: VolumeId) {
        let _ = self.tx.send(Command::Cancel(volume));
    }
}

#[derive(Default)]
struct Queue {
    by_time: BTreeSet<(Instant, VolumeId)>,
    deadline: HashMap<VolumeId, Instant>,
    running: HashSet<VolumeId>,
    /// Deadlines asked for while a volume was running.
    pending: HashMap<VolumeId, Instant>,
}

impl Queue {
    fn insert(&mut self, volume: VolumeId, at: Instant) {
        if self.running.contains(&volume) {
            let slot = self.pending.entry(volume).or_insert(at);
            *slot = (*slot).min(at);
            return;
        }
        if let Some(old) = self.deadline.insert(volume.clone(), at) {
            self.by_time.remove(&(old, volume.clone()));
        }
        self.by_time.insert((at, volume));
    }

    fn remove(&mut self, volume: &VolumeId) {
        if let Some(old) = self.deadline.remove(volume) {
            self.by_time.remove(&(old, volume.clone()));
        }
        self.pending.remove(volume);
    }

    fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    fn pop_due(&mut self, now: Instant) -> Vec<VolumeId> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.by_time.first() {
            if *at > now {
                break;
            }
            let (_, volume) = self.by_time.pop_first().expect("checked non-empty");
            self.deadline.remove(&volume);
            self.running.insert(volume.clone());
            due.push(volume);
        }
        due
    }
}

impl SchedulerTask {
    /// Runs until `shutdown` fires; refreshes already running finish on
    /// `tracker`.
    pub async fn run<R: Refresher>(
        mut self,
        refresher: Arc<R>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
        max_concurrent: usize,
    ) {
        let permits = Arc::new(Semaphore::new(max_concurrent.max(1)));
        let mut queue = Queue::default();
        let mut cancelled: HashSet<VolumeId> = HashSet::new();
        loop {
            let next = queue.next();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                command = self.rx.recv() => match command {
                    Some(Command::Schedule(volume, at)) => {
                        cancelled.remove(&volume);
                        queue.insert(volume, at);
                    }
                    Some(Command::Cancel(volume)) => {
                        queue.remove(&volume);
                        if queue.running.contains(&volume) {
                            cancelled.insert(volume);
                        }
                    }
                    Some(Command::Done(volume, next)) => {
                        queue.running.remove(&volume);
                        let pending = queue.pending.remove(&volume);
                        if cancelled.remove(&volume) {
                            continue;
                        }
                        let at = match (next, pending) {
                            (Some(a), Some(b)) => Some(a.min(b)),
                            (a, b) => a.or(b),
                        };
                        if let Some(at) = at {
                            queue.insert(volume, at);
                        }
                    }
                    None => break,
                },
                () = sleep_until(next), if next.is_some() => {
                    for volume in queue.pop_due(Instant::now()) {
                        let refresher = Arc::clone(&refresher);
                        let permits = Arc::clone(&permits);
                        let tx = self.tx.clone();
                        let stop = shutdown.clone();
                        tracker.spawn(async move {
                            let next = tokio::select! {
                                biased;
                                () = stop.cancelled() => return,
                                permit = permits.acquire_owned() => {
                                    let _permit = permit;
                                    refresher.refresh(volume.clone()).await
                                }
                            };
                            let _ = tx.send(Command::Done(volume, next));
                        });
                    }
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
