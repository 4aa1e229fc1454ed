//! The persisted form of a volume ([`VolumeRecord`], kept under
//! `--state-dir` by the [`StateStore`]) and every conversion between it and
//! the in-memory [`LiveVolume`]. A restarted driver finds every published
//! volume again, resumes its refresh schedule without waiting for kubelet,
//! and re-renders from the Vault answers it already had: a restart costs
//! Vault nothing.
//!
//! One JSON file per volume, mode 0600, in a 0700 directory on tmpfs
//! (`/run`, the same trust domain as the volumes' own tmpfs). It holds the
//! volume's attributes (minus kubelet's token attribute), its Vault token,
//! the newest service-account token, and per secret its lease, deadlines
//! and the Vault answer the files were rendered from. Files are replaced by
//! rename, so a crash leaves the old record or the new one.
//!
//! **Formats.** [`RECORD_VERSION`] is written; every earlier version is
//! read and migrated forward ([`migrate`]), so an upgrade never forgets a
//! volume. A record that cannot be read (damaged, or written by a newer
//! release) is never deleted and its volume never unmounted: the store
//! reports it as [`Unreadable`], keeping what can be salvaged (the Vault
//! token, to revoke it once the volume is adopted again).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;
use zeroize::Zeroize;

use super::live::{self, LiveSecret, LiveVolume, Session};
use super::memory::Charge;
use super::pipeline::Pipeline;
use super::spec::{self, SpecDefaults, TargetPath, normalise_addr};
use super::{Error, VolumeId};
use crate::metrics::VolumeLabels;
use crate::secret::Secret;
use crate::storage::selinux;
use crate::timing::Step;
use crate::vault::{LeaseId, SecretRequest, ServiceAccountToken};

/// Format version written. Version 1 (no Vault answers) is migrated.
pub const RECORD_VERSION: u32 = 2;

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

/// One secret: its lease bookkeeping and the answer it was rendered from.
#[derive(Clone, Serialize, Deserialize)]
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
    /// Vault's answer (the JSON body) the files were rendered from, so a
    /// restarted driver re-renders without asking again (version 2+;
    /// absent in version 1 records: fetched again when first needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSecret")
            .field("request", &self.request)
            .field("answer", &self.answer.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
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
    /// Lease bookkeeping and answers per secret.
    pub secrets: Vec<StoredSecret>,
}

impl VolumeRecord {
    /// The record of `volume` as it stands.
    pub(super) fn of(id: &VolumeId, volume: &LiveVolume, phase: Phase) -> Self {
        Self {
            version: RECORD_VERSION,
            volume_id: id.to_string(),
            target_path: volume.target.as_path().to_path_buf(),
            readonly: volume.readonly,
            fs_group: volume.fs_group,
            // Only a label the request asked for is the volume's own; the
            // node's default is applied again from the flags after a restart.
            selinux_context: volume
                .selinux_context
                .as_ref()
                .filter(|c| c.required)
                .map(|c| c.label.clone()),
            vault_addr: Some(volume.spec.vault_addr.to_string()),
            fingerprint: volume.fingerprint.clone(),
            attributes: volume.attributes.clone(),
            phase,
            identity: volume.identity.as_ref().map(|i| StoredIdentity {
                jwt: i.jwt().expose().clone(),
                expires_at_ms: to_ms(i.expires_at()),
            }),
            token: volume.session.as_ref().map(|s| StoredToken {
                token: s.token.expose().clone(),
                expires_at_ms: to_ms(live::wall_clock(s.expires_at)),
                requested_ttl_secs: s.requested_ttl.as_secs(),
                renewable: s.renewable,
                exhausted: s.exhausted,
                due_ms: to_ms(live::wall_clock(s.due)),
            }),
            secrets: volume
                .secrets
                .iter()
                .map(|t| StoredSecret {
                    request: t.request.clone(),
                    lease_id: t.lease_id.clone(),
                    action: match t.step {
                        Step::Renew => StoredAction::Renew,
                        Step::Refetch => StoredAction::Refetch,
                    },
                    increment_secs: t.increment.as_secs(),
                    expires_at_ms: t.expires_at.map(|e| to_ms(live::wall_clock(e))),
                    due_ms: to_ms(live::wall_clock(t.due)),
                    // Vault's answers are JSON, hence UTF-8; one that is
                    // not is simply fetched again after a restart.
                    answer: t
                        .answer
                        .as_ref()
                        .and_then(|a| String::from_utf8(a.expose().clone()).ok()),
                })
                .collect(),
        }
    }

    /// The service-account token, as the live volume holds it.
    pub(super) fn live_identity(&self) -> Option<ServiceAccountToken> {
        self.identity.as_ref().map(|stored| {
            ServiceAccountToken::from_parts(
                Secret::new(stored.jwt.clone()),
                from_ms(stored.expires_at_ms),
            )
        })
    }

    /// The Vault token, as the live volume holds it.
    pub(super) fn live_session(&self) -> Option<Session> {
        self.token.as_ref().map(session_of)
    }

    /// The secrets, as the live volume holds them: with their answers, so
    /// the next render needs no fetch of what is not due.
    pub(super) fn live_secrets(&self) -> Vec<LiveSecret> {
        self.secrets
            .iter()
            .map(|stored| LiveSecret {
                request: stored.request.clone(),
                answer: stored
                    .answer
                    .as_ref()
                    .map(|a| Secret::new(a.as_bytes().to_vec())),
                lease_id: stored.lease_id.clone(),
                step: match stored.action {
                    StoredAction::Renew => Step::Renew,
                    StoredAction::Refetch => Step::Refetch,
                },
                increment: Duration::from_secs(stored.increment_secs),
                expires_at: stored.expires_at_ms.map(|ms| live::monotonic(from_ms(ms))),
                due: live::monotonic(from_ms(stored.due_ms)),
                failures: 0,
            })
            .collect()
    }

    /// The live volume this record describes, at its checked `target`:
    /// attributes read again (with the Vault address it was published
    /// with), templates compiled, token, identity and secrets with their
    /// answers and deadlines. `defaults` are this record's
    /// ([`VolumeRecord::spec_defaults`]); `node_context` is the node's
    /// SELinux default, applied when the request named none.
    pub(super) async fn to_live(
        &self,
        work: &Pipeline,
        target: TargetPath,
        defaults: &SpecDefaults,
        node_context: Option<selinux::Context>,
        memory: Charge,
    ) -> Result<LiveVolume, Error> {
        let context: HashMap<String, String> = self.attributes.clone().into_iter().collect();
        let (spec, pod) = spec::parse_attributes(&context, defaults)?;
        let templates = work.compile(&spec.templates).await?;
        Ok(LiveVolume {
            target,
            readonly: self.readonly,
            fs_group: self.fs_group,
            selinux_context: self
                .selinux_context
                .clone()
                .map(selinux::Context::required)
                .or(node_context),
            fingerprint: self.fingerprint.clone(),
            attributes: self.attributes.clone(),
            client: work.client_for(&spec),
            labels: VolumeLabels {
                pod_namespace: pod.namespace.clone(),
                pod_name: pod.name.clone(),
                volume_id: self.volume_id.clone(),
            },
            spec,
            pod,
            templates,
            identity: self.live_identity(),
            session: self.live_session(),
            secrets: self.live_secrets(),
            token_failures: 0,
            token_retry_at: None,
            degraded: false,
            memory,
        })
    }

    /// The Vault token this record holds, with where it lives, for a
    /// volume that cannot be resumed from it: revoked once the volume's
    /// next publish adopts it.
    pub(super) fn salvaged_token(&self) -> Option<SalvagedToken> {
        self.token.as_ref().map(|t| SalvagedToken {
            token: Secret::new(t.token.clone()),
            vault_addr: self.vault_addr.clone(),
            attributes: self.attributes.clone(),
        })
    }

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
        defaults_for(self.vault_addr.as_deref(), current)
    }
}

fn defaults_for(recorded: Option<&str>, current: &SpecDefaults) -> Result<SpecDefaults, String> {
    let Some(recorded) = recorded else {
        return Ok(current.clone());
    };
    let url = Url::parse(recorded).map_err(|_| recorded.to_owned())?;
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
        Err(recorded.to_owned())
    }
}

fn session_of(stored: &StoredToken) -> Session {
    Session {
        token: Secret::new(stored.token.clone()),
        expires_at: live::monotonic(from_ms(stored.expires_at_ms)),
        requested_ttl: Duration::from_secs(stored.requested_ttl_secs),
        renewable: stored.renewable,
        exhausted: stored.exhausted,
        due: live::monotonic(from_ms(stored.due_ms)),
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
        for s in &mut self.secrets {
            s.answer.zeroize();
        }
    }
}

/// Brings a record of any version this release knows up to
/// [`RECORD_VERSION`], one step per version, so a release reads every
/// earlier release's records. Errs (naming the version) for a newer or
/// unknown format.
pub fn migrate(mut value: Value) -> Result<VolumeRecord, String> {
    let version = value
        .get("version")
        .and_then(Value::as_u64)
        .ok_or_else(|| "it has no version".to_owned())?;
    if version == 0 || version > u64::from(RECORD_VERSION) {
        return Err(format!(
            "it is in format version {version}, which this release ({RECORD_VERSION}) does not know: written by a newer release?"
        ));
    }
    // 1 → 2: secrets gained `answer` (absent: fetched again when needed).
    // Nothing else changed, so the step only moves the version on.
    if version == 1 {
        value["version"] = Value::from(2);
    }
    serde_json::from_value(value).map_err(|e| format!("it does not match its format: {e}"))
}

/// A record the store could not read. Its volume is left as it is (mounted,
/// serving its pod); the next publish of the volume adopts it and revokes
/// the salvaged token.
pub struct Unreadable {
    /// The volume, from the file name.
    pub volume_id: String,
    /// Why it could not be read.
    pub reason: String,
    /// The Vault token and the address it belongs to, when the file was
    /// JSON enough to find them.
    pub salvaged: Option<SalvagedToken>,
}

/// What an unreadable record still says about its Vault token.
pub struct SalvagedToken {
    /// The token.
    pub token: Secret<String>,
    /// The Vault address recorded with it, if any.
    pub vault_addr: Option<String>,
    /// The volume's attributes, if readable (for its Vault namespace and,
    /// in records without an address, its `vaultAddress`).
    pub attributes: BTreeMap<String, String>,
}

impl SalvagedToken {
    /// The defaults to read the salvaged attributes with; errs with the
    /// address when the flags no longer allow it.
    pub fn spec_defaults(&self, current: &SpecDefaults) -> Result<SpecDefaults, String> {
        defaults_for(self.vault_addr.as_deref(), current)
    }
}

impl std::fmt::Debug for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unreadable")
            .field("volume_id", &self.volume_id)
            .field("reason", &self.reason)
            .field("salvaged", &self.salvaged.is_some())
            .finish()
    }
}

/// What [`StateStore::load_all`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Records read (and migrated).
    pub records: Vec<VolumeRecord>,
    /// Records that could not be read; nothing was deleted.
    pub unreadable: Vec<Unreadable>,
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
        let mut bytes = fs::read(&path).ok()?;
        let record = read_record(&bytes).ok();
        bytes.zeroize();
        record
    }

    /// Every record, read and migrated; those that cannot be read are
    /// reported (with what could be salvaged) and left in place, never
    /// deleted: the volume they describe may be serving a pod.
    pub fn load_all(&self) -> Result<Loaded, Error> {
        let dir = self.dir.join("volumes");
        let mut loaded = Loaded::default();
        for entry in fs::read_dir(&dir).map_err(|source| state_err(&dir, source))? {
            let entry = entry.map_err(|source| state_err(&dir, source))?;
            let path = entry.path();
            let Some(volume_id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_owned)
            else {
                // A temp file a crash left behind: the rename never
                // happened, so the record it was to replace is current.
                let _ = fs::remove_file(&path);
                continue;
            };
            let Ok(mut bytes) = fs::read(&path) else {
                continue;
            };
            match read_record(&bytes) {
                Ok(record) => loaded.records.push(record),
                Err(reason) => loaded.unreadable.push(Unreadable {
                    volume_id,
                    salvaged: salvage(&bytes),
                    reason,
                }),
            }
            bytes.zeroize();
        }
        Ok(loaded)
    }
}

fn read_record(bytes: &[u8]) -> Result<VolumeRecord, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("it is not JSON ({e})"))?;
    migrate(value)
}

/// The Vault token (and where it lives) from a record that does not parse
/// as a whole: a newer format, or a damaged file that is still JSON.
fn salvage(bytes: &[u8]) -> Option<SalvagedToken> {
    let mut value: Value = serde_json::from_slice(bytes).ok()?;
    let token = value
        .pointer_mut("/token/token")
        .map(Value::take)
        .and_then(|v| match v {
            Value::String(s) => Some(s),
            _ => None,
        })?;
    let vault_addr = value
        .get("vault_addr")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let attributes = value
        .get("attributes")
        .and_then(|a| serde_json::from_value(a.clone()).ok())
        .unwrap_or_default();
    Some(SalvagedToken {
        token: Secret::new(token),
        vault_addr,
        attributes,
    })
}

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(SystemTime::UNIX_EPOCH)
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

    use super::*;

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
        let record = read_record(OLD_RECORD.as_bytes()).unwrap();
        assert_eq!(record.vault_addr, None);
        assert_eq!(record.version, RECORD_VERSION);
        let current = defaults("http://new:8200", &[]);
        let used = record.spec_defaults(&current).unwrap();
        assert_eq!(used.vault_addr, current.vault_addr);
    }

    #[test]
    fn a_recorded_address_wins_while_allowed_and_is_refused_once_not() {
        let mut record = read_record(OLD_RECORD.as_bytes()).unwrap();
        record.vault_addr = Some("http://old:8200/".to_owned());
        let text = serde_json::to_string(&record).unwrap();
        let record = read_record(text.as_bytes()).unwrap();

        let kept = defaults("http://new:8200", &["http://old:8200"]);
        let used = record.spec_defaults(&kept).unwrap();
        assert_eq!(used.vault_addr.unwrap().as_str(), "http://old:8200/");

        let dropped = defaults("http://new:8200", &[]);
        assert_eq!(
            record.spec_defaults(&dropped).unwrap_err(),
            "http://old:8200/"
        );
    }

    /// Every earlier format is read; a newer or broken one is refused with
    /// a reason, and the token is salvaged wherever the file is JSON.
    #[test]
    fn formats_migrate_forward_and_unreadable_records_keep_their_token() {
        let v1_with_token = OLD_RECORD.replace(
            r#""token":null"#,
            r#""token":{"token":"hvs.old","expires_at_ms":1,"requested_ttl_secs":60,"renewable":true,"exhausted":false,"due_ms":1}"#,
        );
        let record = read_record(v1_with_token.as_bytes()).unwrap();
        assert_eq!(record.version, 2);
        assert_eq!(record.token.as_ref().unwrap().token, "hvs.old");

        let newer = v1_with_token.replace(r#""version":1"#, r#""version":9"#);
        let reason = read_record(newer.as_bytes()).unwrap_err();
        assert!(reason.contains("version 9"), "{reason}");
        let salvaged = salvage(newer.as_bytes()).unwrap();
        assert_eq!(salvaged.token.expose(), "hvs.old");
        assert_eq!(salvaged.attributes.get("roleName").unwrap(), "example");

        let truncated = &v1_with_token[..v1_with_token.len() / 2];
        assert!(
            read_record(truncated.as_bytes())
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(salvage(truncated.as_bytes()).is_none());
    }

    /// The store never deletes a record it cannot read.
    #[test]
    fn load_all_reports_unreadable_records_and_keeps_them() {
        let dir = std::env::temp_dir().join(format!("vcd-record-{}", std::process::id()));
        let store = StateStore::open(&dir).unwrap();
        let volumes = dir.join("volumes");
        fs::write(volumes.join("csi-1.json"), OLD_RECORD).unwrap();
        fs::write(volumes.join("csi-2.json"), &OLD_RECORD[..40]).unwrap();
        fs::write(volumes.join("csi-3.json.tmp"), "partial").unwrap();
        let loaded = store.load_all().unwrap();
        assert_eq!(loaded.records.len(), 1);
        assert_eq!(loaded.unreadable.len(), 1);
        assert_eq!(loaded.unreadable[0].volume_id, "csi-2");
        assert!(volumes.join("csi-2.json").exists(), "never deleted");
        assert!(!volumes.join("csi-3.json.tmp").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
