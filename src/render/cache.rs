//! Compiled templates by their sources, bounded in bytes.
//!
//! Volumes with the same templates (the replicas of a deployment) share one
//! compiled set. Entries are weak — a set lives as long as a volume uses it
//! — except the most recently compiled ones, kept so that a pod replaced by
//! an identical one (a rollout, a restarted job) does not pay for the
//! compile again. What those kept sets hold is bounded by
//! [`MAX_CACHE_HELD_BYTES`] (each weighed by
//! [`CompiledTemplates::held_bytes`]), not by a count: one set of dense
//! templates can hold as much as thousands of ordinary ones.
//!
//! The map is keyed by a SHA-256 digest of the sources, so an entry whose
//! set is gone costs a few dozen bytes, not a copy of the sources.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};

use sha2::{Digest, Sha256};

use super::CompiledTemplates;
use crate::storage::RelativePath;

/// Most bytes (as [`CompiledTemplates::held_bytes`] counts them) the cache
/// keeps alive for sets no volume uses. A set larger than this is never
/// kept beyond its volumes.
pub const MAX_CACHE_HELD_BYTES: u64 = 4 * 1024 * 1024;

/// The cache key: a digest of every path and source, with their lengths.
pub(super) type Key = [u8; 32];

/// The key of `sources`.
pub(super) fn key(sources: &[(RelativePath, String)]) -> Key {
    let mut digest = Sha256::new();
    digest.update((sources.len() as u64).to_le_bytes());
    for (path, source) in sources {
        for part in [path.as_str(), source.as_str()] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part.as_bytes());
        }
    }
    digest.finalize().into()
}

#[derive(Default)]
pub(super) struct TemplateCache {
    entries: HashMap<Key, Weak<CompiledTemplates>>,
    /// Sweep dead entries when the map reaches this size.
    sweep_at: usize,
    /// Recently compiled sets kept alive, oldest first.
    recent: VecDeque<Arc<CompiledTemplates>>,
    /// What `recent` holds, by [`CompiledTemplates::held_bytes`].
    recent_bytes: u64,
}

impl TemplateCache {
    const MIN_SWEEP: usize = 64;

    pub(super) fn get(&self, key: &Key) -> Option<Arc<CompiledTemplates>> {
        self.entries.get(key).and_then(Weak::upgrade)
    }

    pub(super) fn insert(&mut self, key: Key, templates: &Arc<CompiledTemplates>) {
        if self.entries.len() >= self.sweep_at {
            self.entries.retain(|_, t| t.strong_count() > 0);
            self.sweep_at = (self.entries.len() * 2).max(Self::MIN_SWEEP);
        }
        self.entries.insert(key, Arc::downgrade(templates));
        let bytes = templates.held_bytes();
        if bytes > MAX_CACHE_HELD_BYTES {
            return;
        }
        self.recent.push_back(Arc::clone(templates));
        self.recent_bytes += bytes;
        while self.recent_bytes > MAX_CACHE_HELD_BYTES {
            let Some(evicted) = self.recent.pop_front() else {
                break;
            };
            self.recent_bytes -= evicted.held_bytes();
        }
    }

    /// What the kept sets hold that no volume uses (a set a volume uses is
    /// that volume's to count).
    pub(super) fn held_bytes(&self) -> u64 {
        self.recent
            .iter()
            .filter(|t| Arc::strong_count(t) == 1)
            .map(|t| t.held_bytes())
            .sum()
    }
}
