//! The scratch folder everything lives in (laid out like a node: kubelet's
//! `pods/`, the driver's state and socket, the dev server's home and log),
//! how volumes are stored there, and proof that nothing is left behind.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use nix::mount::{MntFlags, MsFlags};

/// The scratch folder: `<temp_dir>/vault-csi-quickstart-<random>`, mode 0700
/// (it holds Vault tokens).
pub struct Scratch {
    pub root: PathBuf,
}

impl Scratch {
    /// Creates a fresh folder under [`std::env::temp_dir`].
    pub fn create() -> anyhow::Result<Self> {
        let root =
            std::env::temp_dir().join(format!("vault-csi-quickstart-{}", crate::random_hex(6)));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&root)
            .with_context(|| format!("cannot create the scratch folder {}", root.display()))?;
        Ok(Self { root })
    }

    /// Kubelet's root directory (`--kubelet-dir`).
    pub fn kubelet_dir(&self) -> PathBuf {
        self.root.join("kubelet")
    }

    /// The driver's `--state-dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    /// The driver's CSI socket.
    pub fn socket(&self) -> PathBuf {
        self.root.join("csi/csi.sock")
    }

    /// Detaches anything still mounted below the root (there should be
    /// nothing), removes the folder, and checks both. Returns the mounts it
    /// had to detach so the caller can report them.
    pub fn remove(&self) -> anyhow::Result<Vec<PathBuf>> {
        let leftover = mounts_under(&self.root);
        for mount in leftover.iter().rev() {
            let _ = nix::mount::umount2(mount, MntFlags::MNT_DETACH);
        }
        if let Err(first) = std::fs::remove_dir_all(&self.root)
            && first.kind() != std::io::ErrorKind::NotFound
        {
            // Read-only directories (e.g. a plain-folder volume) would
            // stop an unprivileged removal: make them writable, retry.
            make_writable(&self.root);
            std::fs::remove_dir_all(&self.root).with_context(|| {
                format!("cannot remove the scratch folder {}", self.root.display())
            })?;
        }
        let still = mounts_under(&self.root);
        if !still.is_empty() {
            bail!("still mounted under {}: {still:?}", self.root.display());
        }
        if self.root.symlink_metadata().is_ok() {
            bail!("{} still exists", self.root.display());
        }
        Ok(leftover)
    }
}

fn make_writable(dir: &Path) {
    let Ok(meta) = dir.symlink_metadata() else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mut perms = meta.permissions();
    perms.set_mode(perms.mode() | 0o700);
    let _ = std::fs::set_permissions(dir, perms);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            make_writable(&entry.path());
        }
    }
}

/// How the volume is stored.
pub enum Storage {
    /// The driver mounts a tmpfs at the target (root with mount rights).
    Tmpfs,
    /// `--insecure-plain-directories`: a plain folder on disk.
    PlainFolder {
        /// Why not tmpfs.
        reason: String,
    },
}

impl Storage {
    /// Tmpfs when this process may mount one (root, and a probe mount
    /// inside the scratch folder succeeds), else a plain folder.
    pub fn detect(scratch: &Scratch) -> Self {
        if !nix::unistd::geteuid().is_root() {
            return Self::PlainFolder {
                reason: "not running as root, so no tmpfs can be mounted".to_owned(),
            };
        }
        match probe_tmpfs(&scratch.root.join("tmpfs-probe")) {
            Ok(()) => Self::Tmpfs,
            Err(e) => Self::PlainFolder {
                reason: format!("running as root, but mounting a tmpfs here fails: {e}"),
            },
        }
    }

    /// Whether the driver runs with `--insecure-plain-directories`.
    pub fn plain(&self) -> bool {
        matches!(self, Self::PlainFolder { .. })
    }
}

/// Mounts and unmounts a tiny tmpfs at `dir` (created and removed).
fn probe_tmpfs(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir(dir)?;
    let mounted = nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=4k"),
    );
    if mounted.is_ok() {
        nix::mount::umount2(dir, MntFlags::MNT_DETACH)?;
    }
    std::fs::remove_dir(dir)?;
    Ok(mounted?)
}

/// Mount points at or below `root`, from `/proc/self/mountinfo`.
pub fn mounts_under(root: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|mount| mount.starts_with(root))
        .collect()
}

/// The filesystem type mounted at exactly `path`, if it is a mount point
/// (the last matching line wins, as the topmost mount).
pub fn fs_type_at(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let mount_point = PathBuf::from(unescape_mountinfo(fields.get(4)?));
        if mount_point != path {
            return None;
        }
        let dash = fields.iter().position(|f| *f == "-")?;
        fields.get(dash + 1).map(|t| (*t).to_owned())
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for `\`).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = if bytes[i] == b'\\' {
            bytes
                .get(i + 1..i + 4)
                .filter(|digits| digits.iter().all(|d| (b'0'..=b'7').contains(d)))
                .and_then(|digits| std::str::from_utf8(digits).ok())
                .and_then(|digits| u8::from_str_radix(digits, 8).ok())
        } else {
            None
        };
        if let Some(value) = escaped {
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
