//! One CSI operation per volume at a time, as the CSI spec recommends: a
//! second concurrent call for the same volume is answered `ABORTED` so the
//! caller retries instead of racing the first.

use std::collections::HashSet;
use std::sync::Mutex;

use super::{Error, VolumeId};

/// The set of volumes with a CSI operation in flight.
#[derive(Debug, Default)]
pub(super) struct OperationGuards {
    busy: Mutex<HashSet<VolumeId>>,
}

/// Held for the duration of one operation; releases the volume on drop.
#[derive(Debug)]
pub(super) struct OperationGuard<'a> {
    guards: &'a OperationGuards,
    volume: VolumeId,
}

impl OperationGuards {
    /// Claims `volume`, or fails with `OperationPending`.
    pub fn begin(&self, volume: &VolumeId) -> Result<OperationGuard<'_>, Error> {
        let mut busy = self.busy.lock().expect("guard set poisoned");
        if !busy.insert(volume.clone()) {
            return Err(Error::OperationPending {
                volume_id: volume.to_string(),
            });
        }
        Ok(OperationGuard {
            guards: self,
            volume: volume.clone(),
        })
    }
}

impl Drop for OperationGuard<'_> {
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
        let guards = OperationGuards::default();
        let id = VolumeId::parse("csi-1").unwrap();
        let first = guards.begin(&id).unwrap();
        assert!(matches!(
            guards.begin(&id),
            Err(Error::OperationPending { .. })
        ));
        assert!(guards.begin(&VolumeId::parse("csi-2").unwrap()).is_ok());
        drop(first);
        assert!(guards.begin(&id).is_ok());
    }
}
