//! Refresh: one scheduler task for every volume on the node.
//!
//! The [`RefreshScheduler`] keeps a deadline queue (a `BTreeSet` ordered by
//! `tokio::time::Instant`) and sleeps until the earliest deadline; nothing
//! polls, so 1,000 volumes with hour-long leases cost nothing between
//! deadlines. When a volume is due it is handed to a [`Refresher`] (the
//! volume manager) on a tracked task, at most `max_concurrent` at a time
//! and at most [`Fairness::per_namespace`] of one pod namespace, so one
//! tenant's slow or numerous volumes cannot take every slot; the refresher
//! answers with the volume's next deadline. *When* things are due is
//! decided by the pure functions in [`policy`].
//!
//! The [`Fairness`] settings travel with the scheduler handle to the
//! refresher: the per-refresh deadline, the floor for re-read intervals and
//! the node's Vault request [`Governor`].

pub mod policy;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::FairnessConfig;
use crate::vault::{BudgetSettings, Governor};
use crate::volume::VolumeId;

/// Something that can refresh one volume and say when it is next due.
pub trait Refresher: Send + Sync + 'static {
    /// Refreshes `volume`; returns its next deadline, or `None` when it needs
    /// no more refreshes (unpublished, or `refresh: "false"`).
    fn refresh(&self, volume: VolumeId) -> impl Future<Output = Option<Instant>> + Send;

    /// The tenant (pod namespace) `volume` belongs to, whose refreshes share
    /// [`Fairness::per_namespace`] slots. `None`: not capped.
    fn namespace(&self, volume: &VolumeId) -> impl Future<Output = Option<String>> + Send {
        let _ = volume;
        std::future::ready(None)
    }
}

/// What keeps one tenant from starving the others' refreshes or spending
/// the node's Vault budget.
#[derive(Debug)]
pub struct Fairness {
    /// Longest time one refresh of one volume may take; after it the
    /// refresh gives up, keeps the files and is retried with backoff.
    pub refresh_timeout: Duration,
    /// Most refreshes of one pod namespace running at once.
    pub per_namespace: usize,
    /// Floor for static re-read intervals (`staticSecretRefreshInterval`).
    pub min_interval: Duration,
    /// Per-namespace Vault request budgets and Vault's pushback.
    pub governor: Governor,
}

impl Fairness {
    /// The settings the flags ask for. Budget waits are bounded by the Vault
    /// request timeout: waiting longer than a request may take is refused.
    /// A refresh is allowed at least a second.
    pub fn from_config(config: &FairnessConfig, request_timeout: Duration) -> Self {
        Self {
            refresh_timeout: config.refresh_timeout.max(Duration::from_secs(1)),
            per_namespace: config.max_concurrent_refreshes_per_namespace,
            min_interval: config.min_refresh_interval,
            governor: Governor::new(BudgetSettings {
                rate: config.namespace_vault_rate,
                burst: config.namespace_vault_burst,
                max_wait: request_timeout,
            }),
        }
    }
}

impl Default for Fairness {
    fn default() -> Self {
        Self::from_config(&FairnessConfig::default(), Duration::from_secs(30))
    }
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
    fairness: Arc<Fairness>,
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
    fairness: Arc<Fairness>,
}

impl RefreshScheduler {
    /// Creates the handle and the task that serves it, with the default
    /// [`Fairness`].
    pub fn new() -> (Self, SchedulerTask) {
        Self::with_fairness(Fairness::default())
    }

    /// Creates the handle and the task that serves it.
    pub fn with_fairness(fairness: Fairness) -> (Self, SchedulerTask) {
        let (tx, rx) = mpsc::unbounded_channel();
        let fairness = Arc::new(fairness);
        (
            Self {
                tx: tx.clone(),
                fairness: Arc::clone(&fairness),
            },
            SchedulerTask { rx, tx, fairness },
        )
    }

    /// The fairness settings refreshes run under.
    pub fn fairness(&self) -> &Fairness {
        &self.fairness
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
        let max_concurrent = max_concurrent.max(1);
        let permits = Arc::new(Semaphore::new(max_concurrent));
        let slots = Arc::new(NamespaceSlots::new(policy::namespace_slots(
            max_concurrent,
            self.fairness.per_namespace,
        )));
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
                        let slots = Arc::clone(&slots);
                        let tx = self.tx.clone();
                        let stop = shutdown.clone();
                        tracker.spawn(async move {
                            let acquire = async {
                                // The namespace's slot first: a tenant's
                                // queued refreshes wait on their own slots,
                                // never on the node's.
                                let slot = match refresher.namespace(&volume).await {
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
                            let next = refresher.refresh(volume.clone()).await;
                            drop(held);
                            let _ = tx.send(Command::Done(volume, next));
                        });
                    }
                }
            }
        }
    }
}

/// One semaphore of [`Fairness::per_namespace`] permits per pod namespace.
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
