//! One CSI operation per volume at a time, as the CSI spec recommends: a
//! second concurrent call for the same volume is answered `ABORTED` so the
//! caller retries instead of racing the first.
//!
//! Guards are owned (they hold the set by `Arc`), so an operation that
//! outlives the gRPC call that started it (kubelet cancelled the call, or
//! its deadline passed) keeps the volume claimed until it really ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Error, VolumeId};

/// What an operation in flight is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operation {
    /// A publish (new or republish).
    Publish,
    /// An unpublish: the target is already gone, the Vault clean-up may
    /// still be waiting behind a refresh.
    Unpublish,
}

/// The set of volumes with a CSI operation in flight.
#[derive(Debug, Default)]
pub(super) struct OperationGuards {
    busy: Mutex<HashMap<VolumeId, Operation>>,
}

/// Held for the duration of one operation; releases the volume on drop.
#[derive(Debug)]
pub(super) struct OperationGuard {
    guards: Arc<OperationGuards>,
    volume: VolumeId,
}

impl OperationGuards {
    /// Claims `volume` for `operation`, or fails with `OperationPending`.
    pub fn begin(
        self: &Arc<Self>,
        volume: &VolumeId,
        operation: Operation,
    ) -> Result<OperationGuard, Error> {
        let mut busy = self.busy.lock().expect("guard set poisoned");
        if busy.contains_key(volume) {
            return Err(Error::OperationPending {
                volume_id: volume.to_string(),
            });
        }
        busy.insert(volume.clone(), operation);
        Ok(OperationGuard {
            guards: Arc::clone(self),
            volume: volume.clone(),
        })
    }

    /// The operation in flight on `volume`, if any.
    pub fn running(&self, volume: &VolumeId) -> Option<Operation> {
        self.busy
            .lock()
            .expect("guard set poisoned")
            .get(volume)
            .copied()
    }
}

impl Drop for OperationGuard {
    fn drop(&mut self) {
        self.guards
            .busy
            .lock()
            .expect("guard set poisoned")
            .remove(&self.volume);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_operation_is_refused_until_the_first_ends() {
        let guards = Arc::new(OperationGuards::default());
        let id = VolumeId::parse("csi-1").unwrap();
        let first = guards.begin(&id, Operation::Publish).unwrap();
        assert!(matches!(
            guards.begin(&id, Operation::Unpublish),
            Err(Error::OperationPending { .. })
        ));
        assert_eq!(guards.running(&id), Some(Operation::Publish));
        assert!(
            guards
                .begin(&VolumeId::parse("csi-2").unwrap(), Operation::Publish)
                .is_ok()
        );
        drop(first);
        assert_eq!(guards.running(&id), None);
        assert!(guards.begin(&id, Operation::Unpublish).is_ok());
    }
}
