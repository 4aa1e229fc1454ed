//! What a publish request asks for, validated: the volume id, the target
//! path, and the pod's `volumeAttributes` turned into a [`VolumeSpec`].
//!
//! Every attribute is checked here, before anything touches Vault or the
//! filesystem, and every refusal names the key and says what to write
//! instead. Unknown keys are refused so a typo never silently does nothing.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use url::Url;

use super::Error;
use crate::signal::{AppSignal, Signal};
use crate::storage::{RelativePath, check_disjoint};
use crate::vault::TOKENS_KEY;

/// Longest volume id accepted. Kubelet's are `csi-` + 64 hex digits.
pub const MAX_VOLUME_ID_BYTES: usize = 128;
/// Most files (templates plus `tokenFile`) one volume may hold.
pub const MAX_FILES_PER_VOLUME: usize = 64;
/// Shortest `staticSecretRefreshInterval` accepted.
pub const MIN_STATIC_INTERVAL: Duration = Duration::from_secs(1);
/// Most attributes one volume may have: a template per file, the known
/// keys and kubelet's. More can only be padding, held for nothing.
pub const MAX_ATTRIBUTES: usize = MAX_FILES_PER_VOLUME + 32;
/// Most bytes of attributes (keys and values) one volume may have: what
/// etcd lets a whole pod object weigh (`--max-request-bytes`, 1.5 MiB), so
/// no real pod is refused.
pub const MAX_ATTRIBUTE_BYTES: usize = 1536 * 1024;
/// Largest value of an attribute that is not a template or kubelet's
/// token attribute: names, addresses, modes and durations are short.
pub const MAX_SHORT_VALUE_BYTES: usize = 4096;
/// Largest value of kubelet's token attribute (one JWT per audience).
const MAX_TOKENS_VALUE_BYTES: usize = 64 * 1024;

/// Refuses, before anything else reads them, attributes the driver would
/// hold for nothing or hold at a cost their size does not show: too many
/// keys, too many bytes, a short attribute with a long value, and control
/// characters other than tab and newline (which JSON escapes to six bytes
/// each in the volume's record).
pub fn check_attribute_sizes<H: std::hash::BuildHasher>(
    context: &HashMap<String, String, H>,
) -> Result<(), Error> {
    if context.len() > MAX_ATTRIBUTES {
        return Err(Error::InvalidAttribute {
            key: "(all)".to_owned(),
            reason: format!(
                "the volume has {} attributes; at most {MAX_ATTRIBUTES} are allowed (one template per file, at most {MAX_FILES_PER_VOLUME})",
                context.len()
            ),
        });
    }
    let total: usize = context.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_ATTRIBUTE_BYTES {
        return Err(Error::InvalidAttribute {
            key: "(all)".to_owned(),
            reason: format!(
                "the attributes take {total} bytes; at most {MAX_ATTRIBUTE_BYTES} are allowed"
            ),
        });
    }
    for (key, value) in context {
        let limit = if key.starts_with(TEMPLATE_PREFIX) {
            usize::MAX
        } else if key == TOKENS_KEY {
            MAX_TOKENS_VALUE_BYTES
        } else {
            MAX_SHORT_VALUE_BYTES
        };
        let bad = |reason: String| Error::InvalidAttribute {
            key: shown_key(key),
            reason,
        };
        if value.len() > limit {
            return Err(bad(format!(
                "its value is {} bytes; at most {limit} are allowed",
                value.len()
            )));
        }
        // A NUL in a key is left to the checks that name it (a template's
        // file path refuses it, any other key is unknown).
        if let Some(c) = key
            .chars()
            .filter(|c| *c != '\0')
            .chain(value.chars())
            .find(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        {
            return Err(bad(format!(
                "it holds the control character U+{:04X}; only tab and newline are allowed",
                u32::from(c)
            )));
        }
    }
    Ok(())
}

/// An attribute's name as an error shows it: at most 64 bytes.
fn shown_key(key: &str) -> String {
    let mut end = key.len().min(64);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    if end < key.len() {
        format!("{}…", &key[..end])
    } else {
        key.to_owned()
    }
}

/// Every volume attribute a pod spec may set, in the order the docs list
/// them (`template.<file>` stands for every `template.` key). The unit
/// tests check it against [`parse_attributes`]' own keys and the
/// unknown-attribute message; the attribute reference in the docs is
/// checked against it (`tests/docs_reference.rs`).
pub const ATTRIBUTES: &[&str] = &[
    "roleName",
    "vaultAddress",
    "vaultAuthMountPath",
    "vaultNamespace",
    "audience",
    "fileMode",
    "refresh",
    "tokenFile",
    "staticSecretRefreshInterval",
    "signal",
    "signalProcess",
    "template.<file>",
];

const TEMPLATE_PREFIX: &str = "template.";
const KUBELET_PREFIX: &str = "csi.storage.k8s.io/";
const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
const SERVICE_ACCOUNT: &str = "csi.storage.k8s.io/serviceAccount.name";
const EPHEMERAL: &str = "csi.storage.k8s.io/ephemeral";

/// The CSI volume id. Validated because it names the driver's state file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VolumeId(String);

impl VolumeId {
    /// Accepts 1 to 128 bytes without `/`, NUL, or a leading `.`.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let reason = if raw.is_empty() {
            Some("it is empty")
        } else if raw.len() > MAX_VOLUME_ID_BYTES {
            Some("it is longer than 128 bytes")
        } else if raw.contains('/') || raw.contains('\0') {
            Some("it contains `/` or NUL")
        } else if raw.starts_with('.') {
            Some("it starts with `.`")
        } else if raw.chars().any(char::is_control) {
            Some("it contains control characters")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidVolumeId {
                reason: reason.to_owned(),
            }),
            None => Ok(Self(raw.to_owned())),
        }
    }

    /// The id as kubelet sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where kubelet wants the volume: an absolute path inside
/// `<kubelet-dir>/pods/`, lexically clean. (Symlinks on the way are checked
/// when the path is used; see [`crate::storage::tmpfs`].)
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TargetPath {
    path: PathBuf,
    /// The directory under `pods/`: the pod's UID, as kubelet chose it.
    pod_uid: String,
}

impl TargetPath {
    /// Checks `raw` lexically against the kubelet pods directory.
    pub fn parse(raw: &str, kubelet_dir: &Path) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidTargetPath {
            path: raw.escape_debug().to_string(),
            reason: reason.to_owned(),
        };
        if raw.contains('\0') {
            return Err(invalid("it contains NUL"));
        }
        let path = Path::new(raw);
        if !path.is_absolute() {
            return Err(invalid("it is not absolute"));
        }
        if path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
            || raw.split('/').any(|e| e == "." || e == "..")
        {
            return Err(invalid("it contains `.` or `..`"));
        }
        let pods = kubelet_dir.join("pods");
        let Ok(rest) = path.strip_prefix(&pods) else {
            return Err(invalid(&format!(
                "it is not under {} (set --kubelet-dir if kubelet uses another root)",
                pods.display()
            )));
        };
        if rest.components().count() < 2 {
            return Err(invalid("it is not inside a pod's directory"));
        }
        let pod_uid = match rest.components().next() {
            Some(Component::Normal(uid)) => uid.to_string_lossy().into_owned(),
            _ => return Err(invalid("it is not inside a pod's directory")),
        };
        Ok(Self {
            path: path.to_path_buf(),
            pod_uid,
        })
    }

    /// The path.
    pub fn as_path(&self) -> &Path {
        &self.path
    }

    /// The UID of the pod the volume belongs to: the directory kubelet made
    /// under `pods/`, which no pod spec can choose (unlike the
    /// `csi.storage.k8s.io/pod.uid` attribute, this is what kubelet mounts
    /// into the pod).
    pub fn pod_uid(&self) -> &str {
        &self.pod_uid
    }
}

/// The pod a volume belongs to, from kubelet's `podInfoOnMount` keys. Used
/// for log lines and metric labels only; identity comes from the token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// Service account name.
    pub service_account: String,
}

/// Defaults and limits the driver applies to every volume.
#[derive(Clone, Debug)]
pub struct SpecDefaults {
    /// `--vault-addr`: used when a volume names no `vaultAddress`.
    pub vault_addr: Option<Url>,
    /// Addresses a volume may name (always includes `--vault-addr`).
    pub allowed_vault_addrs: Vec<Url>,
    /// Default `staticSecretRefreshInterval`.
    pub static_refresh_interval: Duration,
}

/// A volume's validated attributes.
#[derive(Clone, Debug)]
pub struct VolumeSpec {
    /// `roleName`: the Vault role to log in as.
    pub role: String,
    /// The Vault server.
    pub vault_addr: Url,
    /// Auth mount path without `auth/` (`kubernetes`, `jwt`, …).
    pub auth_mount: String,
    /// `vaultNamespace`, sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// Which service-account token to log in with.
    pub audience: String,
    /// `template.<path>` → source.
    pub templates: Vec<(RelativePath, String)>,
    /// `fileMode`, if set.
    pub file_mode: Option<u32>,
    /// `refresh`: false renders once and never again.
    pub refresh: bool,
    /// `tokenFile`: where to also write the volume's Vault token.
    pub token_file: Option<RelativePath>,
    /// `staticSecretRefreshInterval`.
    pub static_interval: Duration,
    /// `signal` and `signalProcess`: what to tell the pod's app after each
    /// refresh that changed the files.
    pub signal: Option<AppSignal>,
}

/// Splits kubelet's `volume_context` into the pod info and the spec,
/// refusing anything unknown or malformed.
#[allow(clippy::too_many_lines)] // one arm per attribute reads best as one table
pub fn parse_attributes<H: std::hash::BuildHasher>(
    context: &HashMap<String, String, H>,
    defaults: &SpecDefaults,
) -> Result<(VolumeSpec, PodInfo), Error> {
    let mut pod = PodInfo::default();
    let mut role = None;
    let mut vault_addr = None;
    let mut auth_mount = "kubernetes".to_owned();
    let mut namespace = None;
    let mut audience = "vault".to_owned();
    let mut templates = Vec::new();
    let mut file_mode = None;
    let mut refresh = true;
    let mut token_file = None;
    let mut static_interval = defaults.static_refresh_interval;
    let mut signal = None;
    let mut signal_process = None;

    let mut keys: Vec<&String> = context.keys().collect();
    keys.sort();
    for key in keys {
        let value = &context[key];
        let bad = |reason: String| Error::InvalidAttribute {
            key: key.clone(),
            reason,
        };
        match key.as_str() {
            POD_NAME => pod.name.clone_from(value),
            POD_NAMESPACE => pod.namespace.clone_from(value),
            POD_UID => pod.uid.clone_from(value),
            SERVICE_ACCOUNT => pod.service_account.clone_from(value),
            EPHEMERAL => {
                if value != "true" {
                    return Err(Error::NotEphemeral);
                }
            }
            TOKENS_KEY => {}
            k if k.starts_with(KUBELET_PREFIX) => {}
            "roleName" => {
                if value.trim().is_empty() {
                    return Err(bad(
                        "it is empty; name the Vault role to log in as".to_owned()
                    ));
                }
                role = Some(value.clone());
            }
            "vaultAddress" => vault_addr = Some(parse_vault_addr(value, defaults).map_err(bad)?),
            "vaultAuthMountPath" => auth_mount = parse_mount(value).map_err(bad)?,
            "vaultNamespace" => {
                if !value.is_empty() {
                    if !value.chars().all(|c| c.is_ascii_graphic()) {
                        return Err(bad("it must be printable ASCII without spaces".to_owned()));
                    }
                    namespace = Some(value.clone());
                }
            }
            "audience" => audience.clone_from(value),
            "fileMode" => file_mode = Some(parse_mode(value).map_err(bad)?),
            "refresh" => {
                refresh = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("use \"true\" or \"false\"".to_owned())),
                };
            }
            "tokenFile" => {
                token_file = Some(RelativePath::parse(value).map_err(|e| bad(e.to_string()))?);
            }
            "staticSecretRefreshInterval" => {
                let interval = go_duration::parse(value).map_err(bad)?;
                if interval < MIN_STATIC_INTERVAL {
                    return Err(bad("it must be at least 1s".to_owned()));
                }
                static_interval = interval;
            }
            "signal" => {
                signal = Some(Signal::parse(value).map_err(|e| bad(e.to_string()))?);
            }
            "signalProcess" => signal_process = Some(value.as_str()),
            k if k.starts_with(TEMPLATE_PREFIX) => {
                let path = RelativePath::parse(&k[TEMPLATE_PREFIX.len()..])
                    .map_err(|e| bad(e.to_string()))?;
                templates.push((path, value.clone()));
            }
            _ => return Err(Error::UnknownAttribute { key: key.clone() }),
        }
    }

    let role = role.ok_or(Error::MissingAttribute { key: "roleName" })?;
    let signal = match (signal, signal_process) {
        (Some(signal), Some(process)) => {
            Some(
                AppSignal::new(signal, process).map_err(|e| Error::InvalidAttribute {
                    key: "signalProcess".to_owned(),
                    reason: e.to_string(),
                })?,
            )
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(Error::InvalidAttribute {
                key: "signal".to_owned(),
                reason: "it needs signalProcess: the name of the process to signal, such as nginx"
                    .to_owned(),
            });
        }
        (None, Some(_)) => {
            return Err(Error::InvalidAttribute {
                key: "signalProcess".to_owned(),
                reason: "it needs signal: the signal to send, such as SIGHUP".to_owned(),
            });
        }
    };
    if templates.is_empty() {
        return Err(Error::MissingAttribute {
            key: "template.<file>",
        });
    }
    let file_count = templates.len() + usize::from(token_file.is_some());
    if file_count > MAX_FILES_PER_VOLUME {
        return Err(Error::InvalidAttribute {
            key: "template.*".to_owned(),
            reason: format!(
                "{file_count} files requested; at most {MAX_FILES_PER_VOLUME} per volume"
            ),
        });
    }
    check_disjoint(templates.iter().map(|(p, _)| p).chain(token_file.iter())).map_err(|e| {
        Error::InvalidAttribute {
            key: "template.*".to_owned(),
            reason: e.to_string(),
        }
    })?;
    let Some(vault_addr) = vault_addr.or_else(|| defaults.vault_addr.clone()) else {
        return Err(Error::MissingAttribute {
            key: "vaultAddress",
        });
    };
    Ok((
        VolumeSpec {
            role,
            vault_addr,
            auth_mount,
            namespace,
            audience,
            templates,
            file_mode,
            refresh,
            token_file,
            static_interval,
            signal,
        },
        pod,
    ))
}

/// A digest of everything that defines a volume except the rotating token,
/// so a republish can be told apart from a conflicting publish.
pub fn fingerprint<H: std::hash::BuildHasher>(
    context: &HashMap<String, String, H>,
    readonly: bool,
    mount_group: &str,
) -> String {
    let sorted: BTreeMap<&String, &String> = context
        .iter()
        .filter(|(k, _)| k.as_str() != TOKENS_KEY)
        .collect();
    let mut hasher = Sha256::new();
    for (k, v) in sorted {
        hasher.update((k.len() as u64).to_le_bytes());
        hasher.update(k.as_bytes());
        hasher.update((v.len() as u64).to_le_bytes());
        hasher.update(v.as_bytes());
    }
    hasher.update([u8::from(readonly)]);
    hasher.update(mount_group.as_bytes());
    let digest = hasher.finalize();
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Normalises a Vault address for comparison: scheme, host, port, path
/// without a trailing `/`.
pub fn normalise_addr(url: &Url) -> String {
    let port = url.port_or_known_default().unwrap_or(0);
    format!(
        "{}://{}:{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        port,
        url.path().trim_end_matches('/')
    )
}

fn parse_vault_addr(value: &str, defaults: &SpecDefaults) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("it is not a URL ({e})"))?;
    let wanted = normalise_addr(&url);
    let allowed: Vec<String> = defaults
        .allowed_vault_addrs
        .iter()
        .map(normalise_addr)
        .collect();
    if allowed.contains(&wanted) {
        Ok(url)
    } else {
        Err(format!(
            "{value} is not an allowed Vault address; the driver allows {allowed:?} (operators add more with --allowed-vault-addrs)"
        ))
    }
}

fn parse_mount(value: &str) -> Result<String, String> {
    let trimmed = value.trim_matches('/');
    let mount = trimmed.strip_prefix("auth/").unwrap_or(trimmed);
    let ok = !mount.is_empty()
        && mount
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
        && mount
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok {
        Ok(mount.to_owned())
    } else {
        Err("use an auth mount path such as `kubernetes` or `auth/kubernetes`".to_owned())
    }
}

fn parse_mode(value: &str) -> Result<u32, String> {
    let digits = value.strip_prefix("0o").unwrap_or(value);
    let mode =
        u32::from_str_radix(digits, 8).map_err(|_| "use an octal mode such as 0440".to_owned())?;
    if mode > 0o777 {
        return Err("only permission bits (at most 0777) are allowed; setuid, setgid and sticky are refused".to_owned());
    }
    Ok(mode)
}

#[cfg(test)]
mod tests;
