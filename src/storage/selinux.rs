//! The SELinux label of a volume's tmpfs.
//!
//! On a node whose runtime enforces SELinux, kubelet asks the runtime to
//! relabel a CSI volume's files for the container (recursively, with
//! `lsetxattr`) when the volume is not `readOnly` and its file system
//! carries `seclabel`. Our volumes are read-only in every mount namespace,
//! so that relabel would fail with `EROFS` and the pod would loop in
//! `CreateContainerError`. A tmpfs mounted with `context="…"` carries one
//! fixed label for every file and no `seclabel`, so kubelet requests no
//! relabel and none is needed: the driver mounts every volume with the
//! label containers may read (`container_file_t`) when the host has
//! SELinux, whatever `readOnly` says.
//!
//! `--selinux-context` chooses: `auto` (the default: the label where the
//! kernel has SELinux enabled, nothing elsewhere), `none`, or a label. A
//! `context=` in the request's `mount_flags` (which kubelet may send in a
//! later release) wins over the flag.
//!
//! `auto` needs no view of the host's `/sys/fs/selinux`: the kernel itself
//! answers. A tmpfs mount with `context=` succeeds where SELinux is enabled
//! (enforcing or permissive) and fails with `EINVAL` where it is not, so
//! the first volume tries, and after a refusal the driver stops asking (see
//! [`Context::optional`]).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// The label container runtimes give files a container may read and
/// write (container-selinux's `container_file_t`, MCS level `s0`, which
/// every container's range dominates for reading).
pub const CONTAINER_FILE_LABEL: &str = "system_u:object_r:container_file_t:s0";

/// A checked SELinux label, safe to put inside `context="…"`.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Label(String);

impl Label {
    /// Accepts `user:role:type:level` with the characters labels use
    /// (letters, digits, `_ . : , -`), so nothing can break out of the
    /// quoted mount option.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || "_.:,-".contains(c);
        if raw.split(':').count() < 4 || !raw.chars().all(ok_char) || raw.len() > 255 {
            return Err(format!(
                "{:?} is not an SELinux label: write user:role:type:level, e.g. {CONTAINER_FILE_LABEL}",
                raw.escape_debug().to_string()
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The label.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Label {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<Label> for String {
    fn from(label: Label) -> Self {
        label.0
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `--selinux-context` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    /// Label volumes when the host has SELinux enabled.
    Auto,
    /// Never label volumes.
    Off,
    /// Always label volumes with this label.
    Label(Label),
}

impl Setting {
    /// Parses the flag's value: `auto`, `none` or a label.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "auto" => Ok(Self::Auto),
            "none" => Ok(Self::Off),
            label => Label::parse(label)
                .map(Self::Label)
                .map_err(|e| format!("--selinux-context must be auto, none or a label: {e}")),
        }
    }

    /// The context every volume is mounted with on this node, if any.
    pub fn resolve(&self) -> Option<Context> {
        match self {
            Self::Off => None,
            Self::Label(label) => Some(Context::required(label.clone())),
            Self::Auto => Some(Context::optional(Label(CONTAINER_FILE_LABEL.to_owned()))),
        }
    }
}

/// The label to mount a volume with, and whether the kernel may decline it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The label.
    pub label: Label,
    /// Asked for explicitly (a flag value or `mount_flags`): a kernel that
    /// refuses it is worth a warning every time.
    pub required: bool,
}

/// Set once a kernel refused an optional context: SELinux is not enabled
/// on this node, and it cannot become enabled without a reboot.
static KERNEL_REFUSED: AtomicBool = AtomicBool::new(false);

impl Context {
    /// A label the user asked for.
    pub fn required(label: Label) -> Self {
        Self {
            label,
            required: true,
        }
    }

    /// `--selinux-context=auto`'s label: used where the kernel has SELinux.
    pub fn optional(label: Label) -> Self {
        Self {
            label,
            required: false,
        }
    }

    /// Whether to send the option at all: an optional one is skipped once
    /// the kernel has refused it.
    pub fn worth_trying(&self) -> bool {
        self.required || !KERNEL_REFUSED.load(Ordering::Relaxed)
    }

    /// Notes that the kernel refused the option; true the first time for
    /// an optional context (log it once).
    pub fn refused(&self) -> bool {
        !self.required && !KERNEL_REFUSED.swap(true, Ordering::Relaxed)
    }
}

/// The label a request's `mount_flags` ask for. Only `context=<label>` (the
/// label optionally in double quotes) is understood; any other flag is
/// refused with the reason, never silently ignored.
pub fn context_from_mount_flags(flags: &[String]) -> Result<Option<Label>, String> {
    let mut found = None;
    for flag in flags.iter().flat_map(|f| split_options(f)) {
        let Some(value) = flag.strip_prefix("context=") else {
            return Err(format!(
                "mount flag {:?} is not supported: this driver accepts only context=<SELinux label>",
                flag.escape_debug().to_string()
            ));
        };
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if found.replace(Label::parse(value)?).is_some() {
            return Err("mount flags name more than one context=".to_owned());
        }
    }
    Ok(found)
}

/// Splits `a,b,context="x:y:z:s0:c1,c2"` at the commas outside quotes.
fn split_options(flags: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in flags.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&flags[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&flags[start..]);
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_checked() {
        for ok in [
            CONTAINER_FILE_LABEL,
            "system_u:object_r:container_file_t:s0:c1,c2",
            "system_u:object_r:svirt_sandbox_file_t:s0-s0:c0.c1023",
        ] {
            assert_eq!(Label::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "container_file_t",
            "a:b:c",
            "system_u:object_r:x_t:s0\",mode=777",
            "system_u:object_r:x_t:s0 ",
            "system_u:object_r:x_t:s0=1",
        ] {
            assert!(Label::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_flag_resolves_to_a_context() {
        let cases = [
            ("auto", Some((CONTAINER_FILE_LABEL, false))),
            ("none", None),
            (
                "system_u:object_r:my_t:s0",
                Some(("system_u:object_r:my_t:s0", true)),
            ),
        ];
        for (flag, expected) in cases {
            let resolved = Setting::parse(flag).unwrap().resolve();
            assert_eq!(
                resolved.as_ref().map(|c| (c.label.as_str(), c.required)),
                expected,
                "{flag}"
            );
        }
        assert!(
            Setting::parse("enforcing")
                .unwrap_err()
                .contains("auto, none or a label")
        );
    }

    /// Mount flags, and the label they give or a part of the refusal.
    type Case<'a> = (&'a [&'a str], Result<Option<&'a str>, &'a str>);

    #[test]
    fn mount_flags_give_a_context_or_are_refused() {
        let flags = |f: &[&str]| f.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let cases: [Case; 6] = [
            (&[], Ok(None)),
            (
                &["context=\"system_u:object_r:container_file_t:s0:c1,c2\""],
                Ok(Some("system_u:object_r:container_file_t:s0:c1,c2")),
            ),
            (
                &["context=system_u:object_r:container_file_t:s0"],
                Ok(Some(CONTAINER_FILE_LABEL)),
            ),
            (&["ro"], Err("\"ro\" is not supported")),
            (
                &["context=system_u:object_r:a_t:s0", "noatime"],
                Err("\"noatime\" is not supported"),
            ),
            (
                &["context=a:b:c_t:s0,context=a:b:d_t:s0"],
                Err("more than one"),
            ),
        ];
        for (input, expected) in cases {
            let got = context_from_mount_flags(&flags(input));
            match (got, expected) {
                (Ok(label), Ok(want)) => {
                    assert_eq!(label.as_ref().map(Label::as_str), want, "{input:?}");
                }
                (Err(message), Err(want)) => assert!(message.contains(want), "{message}"),
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
