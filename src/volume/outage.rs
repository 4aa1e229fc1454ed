//! After an outage (Vault unreachable, sealed), volumes whose lease or
//! certificate ended meanwhile must be fetched again as soon as Vault
//! answers, not when their backoff happens to run out. [`Outages`] keeps
//! the volumes waiting on each Vault address and one watch per address
//! (the secret source's `answering`, a cheap unauthenticated probe); when
//! it resolves, every waiting volume is refreshed at once. What is then
//! due is the plan's business: anything past its end is due whatever its
//! backoff says.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ports::SecretSource;
use super::spec::VolumeId;
use crate::refresh::RefreshScheduler;
use crate::vault::Endpoint;

/// Volumes waiting for their Vault to answer again, by address.
#[derive(Debug)]
pub(super) struct Outages {
    waiting: Mutex<HashMap<String, HashSet<VolumeId>>>,
    vault: Arc<dyn SecretSource>,
    scheduler: RefreshScheduler<VolumeId>,
    tracker: TaskTracker,
    stopping: CancellationToken,
}

impl Outages {
    pub fn new(
        vault: Arc<dyn SecretSource>,
        scheduler: RefreshScheduler<VolumeId>,
        tracker: TaskTracker,
        stopping: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            waiting: Mutex::new(HashMap::new()),
            vault,
            scheduler,
            tracker,
            stopping,
        })
    }

    /// Refreshes `id` as soon as the Vault at `at` answers again. The first
    /// volume waiting on an address starts its watch.
    pub fn wait(self: &Arc<Self>, at: &Endpoint, id: VolumeId) {
        let address = at.address.to_string();
        let first = {
            let mut waiting = self.waiting.lock().expect("outage map poisoned");
            // An address has an entry exactly while its watch runs.
            let first = !waiting.contains_key(&address);
            waiting.entry(address.clone()).or_default().insert(id);
            first
        };
        if !first {
            return;
        }
        let outages = Arc::clone(self);
        let probe_at = Endpoint {
            address: at.address.clone(),
            namespace: None,
        };
        self.tracker.spawn(async move {
            tokio::select! {
                () = outages.vault.answering(&probe_at) => {}
                () = outages.stopping.cancelled() => return,
            }
            let ids = outages
                .waiting
                .lock()
                .expect("outage map poisoned")
                .remove(&address)
                .unwrap_or_default();
            tracing::info!(vault.addr = %address, volumes = ids.len(), "Vault answers again; refreshing the volumes that waited for it");
            let now = Instant::now();
            for id in ids {
                outages.scheduler.schedule(id, now);
            }
        });
    }

    /// Forgets an unpublished volume.
    pub fn forget(&self, id: &VolumeId) {
        for ids in self
            .waiting
            .lock()
            .expect("outage map poisoned")
            .values_mut()
        {
            ids.remove(id);
        }
    }
}
