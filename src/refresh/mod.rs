//! Refresh: one scheduler task for every volume on the node.
//!
//! The [`RefreshScheduler`] keeps a deadline queue (a `BTreeSet` ordered by
//! `tokio::time::Instant`) and sleeps until the earliest deadline; nothing
//! polls, so 1,000 volumes with hour-long leases cost nothing between
//! deadlines. When a volume is due it is handed to a [`Refresher`] (the
//! volume manager) on a tracked task, at most [`Slots::total`] at a time
//! and at most [`Slots::per_namespace`] of one pod namespace, so one
//! tenant's slow or numerous volumes cannot take every slot; the refresher
//! answers with the volume's next deadline.
//!
//! The scheduler knows nothing of Vault, volumes or flags: *when* a volume
//! is due is its refresher's answer, computed from [`crate::timing`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::timing::fairness;

/// What the scheduler can key deadlines by (the volume manager uses its
/// volume ids). The scheduler knows nothing else about what it schedules.
pub trait Key: Clone + Ord + std::hash::Hash + Send + Sync + 'static {}

impl<K: Clone + Ord + std::hash::Hash + Send + Sync + 'static> Key for K {}

/// Something that can refresh one item and say when it is next due.
pub trait Refresher<K: Key>: Send + Sync + 'static {
    /// Refreshes `item`; returns its next deadline, or `None` when it needs
    /// no more refreshes (unpublished, or `refresh: "false"`).
    fn refresh(&self, item: K) -> impl Future<Output = Option<Instant>> + Send;

    /// The tenant (pod namespace) `item` belongs to, whose refreshes share
    /// [`Slots::per_namespace`] slots. `None`: not capped.
    fn namespace(&self, item: &K) -> impl Future<Output = Option<String>> + Send {
        let _ = item;
        std::future::ready(None)
    }
}

/// How many refreshes run at once: on the whole node, and of one pod
/// namespace, so one tenant's slow or numerous volumes cannot take every
/// slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    /// Refreshes running at once on the node (at least one).
    pub total: usize,
    /// Refreshes of one pod namespace running at once (see
    /// [`fairness::namespace_slots`]).
    pub per_namespace: usize,
}

impl Default for Slots {
    /// The flags' defaults: 64 slots, 8 per namespace.
    fn default() -> Self {
        Self {
            total: 64,
            per_namespace: 8,
        }
    }
}

enum Command<K> {
    Schedule(K, Instant),
    Cancel(K),
    Done(K, Option<Instant>),
}

/// The handle volumes use to (re)schedule and cancel refreshes. Cheap to
/// clone; every call is a non-blocking channel send.
#[derive(Debug)]
pub struct RefreshScheduler<K> {
    tx: mpsc::UnboundedSender<Command<K>>,
}

impl<K> Clone for RefreshScheduler<K> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<K> std::fmt::Debug for Command<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

/// The scheduler's task half, run once with [`SchedulerTask::run`].
#[derive(Debug)]
pub struct SchedulerTask<K> {
    rx: mpsc::UnboundedReceiver<Command<K>>,
    tx: mpsc::UnboundedSender<Command<K>>,
    slots: Slots,
}

impl<K: Key> RefreshScheduler<K> {
    /// Creates the handle and the task that serves it, with `slots`.
    pub fn new(slots: Slots) -> (Self, SchedulerTask<K>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx: tx.clone() }, SchedulerTask { rx, tx, slots })
    }

    /// Makes `item` due at `at`, replacing any earlier deadline. An item
    /// being refreshed right now is refreshed again at `at` if that is
    /// sooner than what the running refresh will ask for.
    pub fn schedule(&self, item: K, at: Instant) {
        let _ = self.tx.send(Command::Schedule(item, at));
    }

    /// Stops refreshing `item` (unpublish).
    pub fn cancel(&self, item: K) {
        let _ = self.tx.send(Command::Cancel(item));
    }
}

/// The deadline queue. It owns every rule about an item's lifecycle:
/// waiting (one deadline each), running (at most once at a time; deadlines
/// asked for meanwhile are kept as pending), cancelled while running (its
/// refresher's answer is dropped).
#[derive(Debug)]
struct Queue<K> {
    by_time: BTreeSet<(Instant, K)>,
    deadline: HashMap<K, Instant>,
    running: HashSet<K>,
    /// Deadlines asked for while an item was running.
    pending: HashMap<K, Instant>,
    /// Items cancelled while running: their refresh's answer is ignored.
    cancelled: HashSet<K>,
}

impl<K: Key> Default for Queue<K> {
    fn default() -> Self {
        Self {
            by_time: BTreeSet::new(),
            deadline: HashMap::new(),
            running: HashSet::new(),
            pending: HashMap::new(),
            cancelled: HashSet::new(),
        }
    }
}

impl<K: Key> Queue<K> {
    /// Makes `item` due at `at`: replaces its deadline, or, while it runs,
    /// keeps the sooner of the pending deadlines. Revives a cancelled item.
    fn schedule(&mut self, item: K, at: Instant) {
        self.cancelled.remove(&item);
        if self.running.contains(&item) {
            let slot = self.pending.entry(item).or_insert(at);
            *slot = (*slot).min(at);
            return;
        }
        if let Some(old) = self.deadline.insert(item.clone(), at) {
            self.by_time.remove(&(old, item.clone()));
        }
        self.by_time.insert((at, item));
    }

    /// Forgets `item`; if it is running, what its refresh answers is
    /// dropped.
    fn cancel(&mut self, item: &K) {
        if let Some(old) = self.deadline.remove(item) {
            self.by_time.remove(&(old, item.clone()));
        }
        self.pending.remove(item);
        if self.running.contains(item) {
            self.cancelled.insert(item.clone());
        }
    }

    /// A refresh of `item` ended, asking for `next`: it is due again at the
    /// sooner of `next` and what was asked for while it ran, unless it was
    /// cancelled meanwhile.
    fn done(&mut self, item: K, next: Option<Instant>) {
        self.running.remove(&item);
        let pending = self.pending.remove(&item);
        if self.cancelled.remove(&item) {
            return;
        }
        let at = match (next, pending) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = at {
            self.schedule(item, at);
        }
    }

    /// The earliest deadline.
    fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Takes every item due at `now`, marking them running.
    fn pop_due(&mut self, now: Instant) -> Vec<K> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.by_time.first() {
            if *at > now {
                break;
            }
            let (_, item) = self.by_time.pop_first().expect("checked non-empty");
            self.deadline.remove(&item);
            self.running.insert(item.clone());
            due.push(item);
        }
        due
    }
}

impl<K: Key> SchedulerTask<K> {
    /// Runs until `shutdown` fires; refreshes already running finish on
    /// `tracker`.
    pub async fn run<R: Refresher<K>>(
        mut self,
        refresher: Arc<R>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        let total = self.slots.total.max(1);
        let permits = Arc::new(Semaphore::new(total));
        let slots = Arc::new(NamespaceSlots::new(fairness::namespace_slots(
            total,
            self.slots.per_namespace,
        )));
        let mut queue = Queue::default();
        loop {
            let next = queue.next();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                command = self.rx.recv() => match command {
                    Some(Command::Schedule(item, at)) => queue.schedule(item, at),
                    Some(Command::Cancel(item)) => queue.cancel(&item),
                    Some(Command::Done(item, next)) => queue.done(item, next),
                    None => break,
                },
                () = sleep_until(next), if next.is_some() => {
                    for item in queue.pop_due(Instant::now()) {
                        let refresher = Arc::clone(&refresher);
                        let permits = Arc::clone(&permits);
                        let slots = Arc::clone(&slots);
                        let tx = self.tx.clone();
                        let stop = shutdown.clone();
                        tracker.spawn(async move {
                            let acquire = async {
                                // The namespace's slot first: a tenant's
                                // queued refreshes wait on their own slots,
                                // never on the node's.
                                let slot = match refresher.namespace(&item).await {
                                    Some(namespace) => Some(slots.acquire(namespace).await),
                                    None => None,
                                };
                                let permit = Arc::clone(&permits)
                                    .acquire_owned()
                                    .await
                                    .expect("the refresh semaphore is never closed");
                                (slot, permit)
                            };
                            let held = tokio::select! {
                                biased;
                                () = stop.cancelled() => return,
                                held = acquire => held,
                            };
                            let next = refresher.refresh(item.clone()).await;
                            drop(held);
                            let _ = tx.send(Command::Done(item, next));
                        });
                    }
                }
            }
        }
    }
}

/// One semaphore of [`Slots::per_namespace`] permits per pod namespace.
struct NamespaceSlots {
    per_namespace: usize,
    by_namespace: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Semaphores nobody holds or waits for are forgotten once there are this
/// many namespaces.
const PRUNE_ABOVE: usize = 256;

impl NamespaceSlots {
    fn new(per_namespace: usize) -> Self {
        Self {
            per_namespace,
            by_namespace: Mutex::new(HashMap::new()),
        }
    }

    async fn acquire(&self, namespace: String) -> OwnedSemaphorePermit {
        let semaphore = {
            let mut map = self.by_namespace.lock().expect("slot map poisoned");
            if map.len() > PRUNE_ABOVE {
                map.retain(|_, s| Arc::strong_count(s) > 1);
            }
            Arc::clone(
                map.entry(namespace)
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_namespace))),
            )
        };
        semaphore
            .acquire_owned()
            .await
            .expect("namespace semaphores are never closed")
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
