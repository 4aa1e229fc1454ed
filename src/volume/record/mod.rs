//! The persisted form of a volume ([`VolumeRecord`]): its format and every
//! earlier one ([`migrate`]), the conversions to and from the live volume
//! (`convert.rs`), and where records are kept (`store.rs`). A restarted
//! driver finds every published volume again, resumes its refresh schedule
//! without waiting for kubelet, and re-renders from the Vault answers it
//! already had: a restart costs Vault nothing. Records only convert and
//! persist: they never compile templates or talk to Vault.
//!
//! One JSON document per volume, mode 0600, in a 0700 directory on tmpfs
//! (`/run`, the same trust domain as the volumes' own tmpfs). It holds the
//! volume's attributes (minus kubelet's token attribute), its Vault token,
//! the newest service-account token, and per secret its lease, deadlines
//! and the Vault answer the files were rendered from. Records are replaced
//! whole and atomically, and only when they changed.
//!
//! **Formats.** [`RECORD_VERSION`] is written; every earlier version is
//! read and migrated forward, so an upgrade never forgets a volume. A
//! record that cannot be read (damaged, or written by a newer release) is
//! never deleted and its volume never unmounted: it is reported as
//! [`Unreadable`], keeping what can be salvaged (the Vault token, to revoke
//! it once the volume is adopted again).

mod convert;
mod store;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;
use zeroize::{Zeroize, Zeroizing};

pub use store::FileStore;
#[cfg(test)]
pub use store::MemoryStore;

use super::spec::{SpecDefaults, normalise_addr};
use crate::secret::Secret;
use crate::vault::{LeaseId, SecretRequest};

/// Format version written. Version 1 (no Vault answers) and 2 (no
/// adoption phase) are migrated.
pub const RECORD_VERSION: u32 = 3;

/// How far a publish got, so a crash mid-publish can be undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// A new volume whose publish did not finish: clean up (unmount, revoke).
    Publishing,
    /// A publish adopting a volume that was already serving its pod (its
    /// record could not be read): whatever happens, the volume stays
    /// mounted, and the tokens it held are revoked only once its files are
    /// replaced.
    Adopting,
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
    /// A batch token (format 3; earlier: service).
    #[serde(default)]
    pub batch: bool,
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
pub struct StoredSecret<'a> {
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
    /// Borrowed from the live volume when written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Cow<'a, str>>,
}

impl std::fmt::Debug for StoredSecret<'_> {
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

/// A token an adopting publish must revoke once the volume's files are
/// replaced (format 3).
#[derive(Clone, Serialize, Deserialize, Zeroize)]
pub struct StoredSalvage {
    /// The token.
    pub token: String,
    /// The Vault address it lives at, if recorded.
    pub vault_addr: Option<String>,
    /// The attributes of the volume it was obtained for.
    #[zeroize(skip)]
    pub attributes: BTreeMap<String, String>,
}

/// Everything persisted about one volume.
#[derive(Clone, Serialize, Deserialize)]
pub struct VolumeRecord<'a> {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// The CSI volume id.
    pub volume_id: String,
    /// Where the volume is mounted.
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
    pub secrets: Vec<StoredSecret<'a>>,
    /// Tokens an adopting publish revokes once the files are replaced
    /// (format 3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub salvaged: Vec<StoredSalvage>,
}

impl std::fmt::Debug for VolumeRecord<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeRecord")
            .field("volume_id", &self.volume_id)
            .field("target_path", &self.target_path)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

impl Drop for VolumeRecord<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.token.as_mut() {
            t.zeroize();
        }
        if let Some(i) = self.identity.as_mut() {
            i.zeroize();
        }
        for s in &mut self.secrets {
            if let Some(Cow::Owned(answer)) = s.answer.as_mut() {
                answer.zeroize();
            }
        }
        self.salvaged.zeroize();
    }
}

impl VolumeRecord<'_> {
    /// The same record, owning everything it borrowed.
    pub fn into_owned(mut self) -> VolumeRecord<'static> {
        let secrets = std::mem::take(&mut self.secrets)
            .into_iter()
            .map(|s| StoredSecret {
                request: s.request,
                lease_id: s.lease_id,
                action: s.action,
                increment_secs: s.increment_secs,
                expires_at_ms: s.expires_at_ms,
                due_ms: s.due_ms,
                answer: s.answer.map(|a| Cow::Owned(a.into_owned())),
            })
            .collect();
        VolumeRecord {
            version: self.version,
            volume_id: std::mem::take(&mut self.volume_id),
            target_path: std::mem::take(&mut self.target_path),
            readonly: self.readonly,
            fs_group: self.fs_group,
            selinux_context: self.selinux_context.take(),
            vault_addr: self.vault_addr.take(),
            fingerprint: std::mem::take(&mut self.fingerprint),
            attributes: std::mem::take(&mut self.attributes),
            phase: self.phase,
            identity: self.identity.take(),
            token: self.token.take(),
            secrets,
            salvaged: std::mem::take(&mut self.salvaged),
        }
    }

    /// The record's bytes, as they are stored.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        // Serialising plain data into a Vec cannot fail.
        Zeroizing::new(serde_json::to_vec(self).expect("a record serialises"))
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

/// Reads a record's bytes, migrating earlier formats.
pub fn decode(bytes: &[u8]) -> Result<VolumeRecord<'static>, String> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("it is not JSON ({e})"))?;
    migrate(value)
}

/// Brings a record of any version this release knows up to
/// [`RECORD_VERSION`], one step per version, so a release reads every
/// earlier release's records. Errs (naming the version) for a newer or
/// unknown format.
pub fn migrate(mut value: Value) -> Result<VolumeRecord<'static>, String> {
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
    // 2 → 3: the `adopting` phase, `salvaged` tokens and `token.batch`
    // (absent: none, and a service token). Nothing else changed, so each
    // step only moves the version on.
    value["version"] = Value::from(RECORD_VERSION);
    serde_json::from_value(value).map_err(|e| format!("it does not match its format: {e}"))
}

/// A record the store could not read. Its volume is left as it is (mounted,
/// serving its pod); the next publish of the volume adopts it and revokes
/// the salvaged tokens.
pub struct Unreadable {
    /// The volume, from the record's name.
    pub volume_id: String,
    /// Why it could not be read or resumed.
    pub reason: String,
    /// The target the record names, when it could be read: an adopted
    /// volume's target stays bound to its id.
    pub target: Option<PathBuf>,
    /// The Vault tokens it held and where they live, when the file was JSON
    /// enough to find them.
    pub salvaged: Vec<SalvagedToken>,
}

/// A Vault token a volume held before the driver lost track of it, and
/// where it lives.
#[derive(Clone)]
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

impl From<&StoredSalvage> for SalvagedToken {
    fn from(stored: &StoredSalvage) -> Self {
        Self {
            token: Secret::new(stored.token.clone()),
            vault_addr: stored.vault_addr.clone(),
            attributes: stored.attributes.clone(),
        }
    }
}

impl std::fmt::Debug for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unreadable")
            .field("volume_id", &self.volume_id)
            .field("reason", &self.reason)
            .field("salvaged", &self.salvaged.len())
            .finish_non_exhaustive()
    }
}

/// Every record of the store, read.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Records read (and migrated).
    pub records: Vec<VolumeRecord<'static>>,
    /// Records that could not be read; nothing was deleted.
    pub unreadable: Vec<Unreadable>,
}

impl Loaded {
    /// Reads every `(volume id, bytes)` a store listed.
    pub fn read(listed: super::ports::Listed) -> Self {
        let mut loaded = Self::default();
        for (volume_id, bytes) in listed {
            match decode(&bytes) {
                Ok(record) => loaded.records.push(record),
                Err(reason) => loaded.unreadable.push(Unreadable {
                    volume_id,
                    salvaged: salvage(&bytes).into_iter().collect(),
                    target: salvage_target(&bytes),
                    reason,
                }),
            }
        }
        loaded
    }
}

/// The target path from a record that does not parse as a whole, when it
/// is JSON with a `target_path`: the volume's target stays bound to it, so
/// no other volume id publishes or unpublishes there. Only a path passing
/// a publish's checks is bound (`restore`).
fn salvage_target(bytes: &[u8]) -> Option<PathBuf> {
    #[derive(Deserialize)]
    struct Target {
        target_path: PathBuf,
    }
    serde_json::from_slice::<Target>(bytes)
        .ok()
        .map(|t| t.target_path)
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

fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn from_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(SystemTime::UNIX_EPOCH)
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
        let record = decode(OLD_RECORD.as_bytes()).unwrap();
        assert_eq!(record.vault_addr, None);
        assert_eq!(record.version, RECORD_VERSION);
        let current = defaults("http://new:8200", &[]);
        let used = record.spec_defaults(&current).unwrap();
        assert_eq!(used.vault_addr, current.vault_addr);
    }

    #[test]
    fn a_recorded_address_wins_while_allowed_and_is_refused_once_not() {
        let mut record = decode(OLD_RECORD.as_bytes()).unwrap();
        record.vault_addr = Some("http://old:8200/".to_owned());
        let record = decode(&record.encode()).unwrap();

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
        let record = decode(v1_with_token.as_bytes()).unwrap();
        assert_eq!(record.version, RECORD_VERSION);
        assert_eq!(record.token.as_ref().unwrap().token, "hvs.old");
        assert!(!record.token.as_ref().unwrap().batch);
        assert!(record.salvaged.is_empty());

        let newer = v1_with_token.replace(r#""version":1"#, r#""version":9"#);
        let reason = decode(newer.as_bytes()).unwrap_err();
        assert!(reason.contains("version 9"), "{reason}");
        let salvaged = salvage(newer.as_bytes()).unwrap();
        assert_eq!(salvaged.token.expose(), "hvs.old");
        assert_eq!(salvaged.attributes.get("roleName").unwrap(), "example");

        let truncated = &v1_with_token[..v1_with_token.len() / 2];
        assert!(
            decode(truncated.as_bytes())
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(salvage(truncated.as_bytes()).is_none());

        let loaded = Loaded::read(vec![
            (
                "csi-1".to_owned(),
                Zeroizing::new(v1_with_token.into_bytes()),
            ),
            ("csi-2".to_owned(), Zeroizing::new(newer.into_bytes())),
        ]);
        assert_eq!(loaded.records.len(), 1);
        assert_eq!(loaded.unreadable.len(), 1);
        assert_eq!(loaded.unreadable[0].volume_id, "csi-2");
        assert_eq!(loaded.unreadable[0].salvaged.len(), 1);
    }

    /// An answer is stored as Vault's JSON text and read back byte for
    /// byte, whatever it holds.
    #[test]
    fn answers_round_trip_exactly() {
        let mut record = decode(OLD_RECORD.as_bytes()).unwrap();
        let answer = "{\"data\":{\"q\":\"\\\"\\u0001é\",\"n\":1.50}}";
        record.secrets.push(StoredSecret {
            request: SecretRequest::new("secret/data/x", &serde_json::Map::new()).unwrap(),
            lease_id: None,
            action: StoredAction::Refetch,
            increment_secs: 0,
            expires_at_ms: None,
            due_ms: 0,
            answer: Some(Cow::Borrowed(answer)),
        });
        let back = decode(&record.encode()).unwrap();
        assert_eq!(back.secrets[0].answer.as_deref(), Some(answer));
    }
}
