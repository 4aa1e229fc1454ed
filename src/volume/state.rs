//! The per-volume record kept under `--state-dir`, so a restarted driver
//! finds every published volume again and resumes its refresh schedule
//! without waiting for kubelet.
//!
//! One JSON file per volume, mode 0600, in a 0700 directory that is expected
//! to be on tmpfs (`/run`). It holds what refreshing needs: the volume's
//! attributes (minus kubelet's token attribute), its Vault token, the newest
//! service-account token, and lease ids with their deadlines. It never holds
//! rendered files or secret data. Files are replaced by rename, so a crash
//! leaves the old record or the new one.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use url::Url;
use zeroize::Zeroize;

use super::spec::{SpecDefaults, normalise_addr};
use super::{Error, VolumeId};
use crate::render::SecretRequest;
use crate::vault::LeaseId;

/// Format version of a record; a record of another version is discarded
/// (and its volume cleaned up) rather than misread.
pub const RECORD_VERSION: u32 = 1;

/// How far a publish got, so a crash mid-publish can be undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The mount may exist but the publish did not finish: clean up.
    Publishing,
    /// Fully published and managed.
    Published,
}

/// A Vault token as persisted.
#[derive(Clone, Serialize, Deserialize, Zeroize)]
pub struct StoredToken {
    /// The token itself.
    pub token: String,
    /// Unix milliseconds when it expires.
    pub expires_at_ms: u64,
    /// The TTL asked for on renewal.
    pub requested_ttl_secs: u64,
    /// Whether it can be renewed.
    pub renewable: bool,
    /// Renewal no longer extends it: log in again before it expires.
    pub exhausted: bool,
    /// Unix milliseconds of the next renewal or re-login.
    pub due_ms: u64,
}

/// A service-account token as persisted.
#[derive(Clone, Serialize, Deserialize, Zeroize)]
pub struct StoredIdentity {
    /// The JWT.
    pub jwt: String,
    /// Unix milliseconds when it expires.
    pub expires_at_ms: u64,
}

/// One secret's lease bookkeeping (never its data).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSecret {
    /// The `secret` call.
    pub request: SecretRequest,
    /// Its lease, if leased.
    pub lease_id: Option<LeaseId>,
    /// What happens when it is due.
    pub action: StoredAction,
    /// Increment asked for on renewal, in seconds.
    pub increment_secs: u64,
    /// Unix milliseconds when its lease or certificate ends, if it does.
    pub expires_at_ms: Option<u64>,
    /// Unix milliseconds when it is next due.
    pub due_ms: u64,
}

/// What a secret's next deadline does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredAction {
    /// Renew the lease.
    Renew,
    /// Fetch a fresh secret.
    Refetch,
}

/// Everything persisted about one volume.
#[derive(Clone, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// The CSI volume id.
    pub volume_id: String,
    /// Where the tmpfs is mounted.
    pub target_path: PathBuf,
    /// Whether the pod sees it read-only.
    pub readonly: bool,
    /// The pod's fsGroup, if kubelet passed one.
    pub fs_group: Option<u32>,
    /// The SELinux label the volume's tmpfs was mounted with, if any
    /// (absent in records of earlier releases: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selinux_context: Option<crate::storage::selinux::Label>,
    /// The Vault address the volume was published with, where its token
    /// and leases live (absent in records of earlier releases: the
    /// attributes and the current flags decide). See
    /// [`VolumeRecord::spec_defaults`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_addr: Option<String>,
    /// The publish fingerprint (see `spec::fingerprint`).
    pub fingerprint: String,
    /// The volume attributes without kubelet's token attribute.
    pub attributes: BTreeMap<String, String>,
    /// How far the publish got.
    pub phase: Phase,
    /// The newest service-account token.
    pub identity: Option<StoredIdentity>,
    /// The volume's Vault token.
    pub token: Option<StoredToken>,
    /// Lease bookkeeping per secret.
    pub secrets: Vec<StoredSecret>,
}

impl VolumeRecord {
    /// The defaults this record's attributes are read with after a restart.
    /// A volume stays with the Vault it was published with, where its token
    /// and leases live, while the flags still allow that address, even when
    /// `--vault-addr` has changed since: re-reading the attributes with the
    /// new default would send its token to another server. A record of an
    /// earlier release, which names no address, follows the current flags.
    ///
    /// Errs with the recorded address when the flags no longer allow it:
    /// nothing of the volume's may be sent there any more.
    pub fn spec_defaults(&self, current: &SpecDefaults) -> Result<SpecDefaults, String> {
        let Some(recorded) = &self.vault_addr else {
            return Ok(current.clone());
        };
        let url = Url::parse(recorded).map_err(|_| recorded.clone())?;
        let wanted = normalise_addr(&url);
        if current
            .allowed_vault_addrs
            .iter()
            .any(|allowed| normalise_addr(allowed) == wanted)
        {
            Ok(SpecDefaults {
                vault_addr: Some(url),
                ..current.clone()
            })
        } else {
            Err(recorded.clone())
        }
    }
}

impl std::fmt::Debug for VolumeRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeRecord")
            .field("volume_id", &self.volume_id)
            .field("target_path", &self.target_path)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl Drop for VolumeRecord {
    fn drop(&mut self) {
        if let Some(t) = self.token.as_mut() {
            t.zeroize();
        }
        if let Some(i) = self.identity.as_mut() {
            i.zeroize();
        }
    }
}

/// Reads and writes records in one directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// Creates (0700) and opens the state directory.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let volumes = dir.join("volumes");
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&volumes)
            .map_err(|source| state_err(&volumes, source))?;
        for d in [dir, volumes.as_path()] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o700))
                .map_err(|source| state_err(d, source))?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join("volumes").join(format!("{id}.json"))
    }

    /// Writes `record` atomically (temp file, 0600, rename).
    pub fn save(&self, record: &VolumeRecord) -> Result<(), Error> {
        let path = self.path(&record.volume_id);
        let tmp = path.with_extension("json.tmp");
        let mut bytes =
            serde_json::to_vec(record).map_err(|e| state_err(&path, io::Error::other(e)))?;
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                .open(&tmp)?;
            // No fsync: the directory is tmpfs (it does not outlive a reboot
            // anyway), and rename alone is atomic against a process crash.
            file.write_all(&bytes)?;
            fs::rename(&tmp, &path)
        })();
        bytes.zeroize();
        result.map_err(|source| state_err(&path, source))
    }

    /// Deletes a volume's record; a missing one is fine.
    pub fn remove(&self, id: &VolumeId) -> Result<(), Error> {
        let path = self.path(id.as_str());
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(state_err(&path, source)),
        }
    }

    /// Loads one record, if present and readable.
    pub fn load(&self, id: &VolumeId) -> Option<VolumeRecord> {
        let path = self.path(id.as_str());
        let bytes = fs::read(&path).ok()?;
        parse_record(&path, &bytes)
    }

    /// Every readable record. Unreadable ones are logged and removed so
    /// they cannot block a volume forever.
    pub fn load_all(&self) -> Result<Vec<VolumeRecord>, Error> {
        let dir = self.dir.join("volumes");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|source| state_err(&dir, source))? {
            let entry = entry.map_err(|source| state_err(&dir, source))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                let _ = fs::remove_file(&path);
                continue;
            }
            let Ok(bytes) = fs::read(&path) else { continue };
            match parse_record(&path, &bytes) {
                Some(record) => out.push(record),
                None => {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        Ok(out)
    }
}

fn parse_record(path: &Path, bytes: &[u8]) -> Option<VolumeRecord> {
    match serde_json::from_slice::<VolumeRecord>(bytes) {
        Ok(record) if record.version == RECORD_VERSION => Some(record),
        Ok(_) | Err(_) => {
            tracing::warn!(path = %path.display(), "Discarding an unreadable volume record");
            None
        }
    }
}

fn state_err(path: &Path, source: io::Error) -> Error {
    Error::State {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use url::Url;

    use super::{SpecDefaults, VolumeRecord};

    /// A record as a release before the Vault address was recorded wrote it.
    const OLD_RECORD: &str = r#"{"version":1,"volume_id":"csi-1","target_path":"/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount","readonly":true,"fs_group":null,"fingerprint":"f","attributes":{"roleName":"example"},"phase":"published","identity":null,"token":null,"secrets":[]}"#;

    fn defaults(vault_addr: &str, allowed: &[&str]) -> SpecDefaults {
        let vault_addr = Url::parse(vault_addr).unwrap();
        let mut allowed: Vec<Url> = allowed.iter().map(|a| Url::parse(a).unwrap()).collect();
        allowed.push(vault_addr.clone());
        SpecDefaults {
            vault_addr: Some(vault_addr),
            allowed_vault_addrs: allowed,
            static_refresh_interval: Duration::from_secs(300),
        }
    }

    #[test]
    fn records_without_an_address_load_and_follow_the_flags() {
        let record: VolumeRecord = serde_json::from_str(OLD_RECORD).unwrap();
        assert_eq!(record.vault_addr, None);
        let current = defaults("http://new:8200", &[]);
        let used = record.spec_defaults(&current).unwrap();
        assert_eq!(used.vault_addr, current.vault_addr);
    }

    #[test]
    fn a_recorded_address_wins_while_allowed_and_is_refused_once_not() {
        let mut record: VolumeRecord = serde_json::from_str(OLD_RECORD).unwrap();
        record.vault_addr = Some("http://old:8200/".to_owned());
        let text = serde_json::to_string(&record).unwrap();
        let record: VolumeRecord = serde_json::from_str(&text).unwrap();

        let kept = defaults("http://new:8200", &["http://old:8200"]);
        let used = record.spec_defaults(&kept).unwrap();
        assert_eq!(used.vault_addr.unwrap().as_str(), "http://old:8200/");

        let dropped = defaults("http://new:8200", &[]);
        assert_eq!(
            record.spec_defaults(&dropped).unwrap_err(),
            "http://old:8200/"
        );
    }
}
