//! The tmpfs that holds one volume's files, mounted directly on kubelet's
//! `target_path`, and the safe handling of that path.
//!
//! Mounting on the target itself (rather than bind-mounting a driver-owned
//! directory) means the files live in the host's mount table and survive a
//! driver restart untouched. The target is opened with `O_PATH|O_NOFOLLOW`
//! and the mount is made through `/proc/self/fd/N`, so a symlink swapped in
//! after validation can never redirect the mount elsewhere.
//!
//! ## Read-only across mount namespaces
//!
//! On a node the driver runs in its own mount namespace and kubelet's
//! `pods/` directory is shared with the host (`mountPropagation:
//! Bidirectional`): a mount the driver makes under it propagates to the host
//! as a *copy*, with the flags it had when it was attached, and that copy is
//! what kubelet binds into the pod. A later read-only remount changes only
//! the driver's own copy (remounts do not propagate). So a volume is never
//! attached writable and then sealed: its tmpfs is mounted in the driver's
//! [private mount directory](private_mount_dir), filled, made read-only
//! there, and only then bind-mounted onto the target ([`StagedTmpfs`]). Every
//! copy of the target (the driver's, the host's, the pod's) is read-only
//! from its first instant. Later writes go through a [`WritableView`], a
//! bind of the same tmpfs in the private directory, which never propagates.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::statfs::{TMPFS_MAGIC, fstatfs, statfs};

use super::Error;

/// Flags every volume mount carries: nothing on it can be executed, be a
/// device or gain privileges.
const SAFE_FLAGS: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Size, ownership and label of a volume's tmpfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsOptions {
    /// Hard size limit of the filesystem, in bytes.
    pub size_bytes: u64,
    /// Limit on files, directories and links.
    pub inodes: u64,
    /// Mode of the volume's root directory.
    pub mode: u32,
    /// Group owning the root directory (the pod's fsGroup), if any.
    pub gid: Option<u32>,
    /// The SELinux label of every file (`context=`), if any.
    pub selinux_context: Option<super::selinux::Context>,
}

/// Checks, before anything else happens, that every path element between
/// `base` (kubelet's `pods/` directory) and `target` is a real directory (no
/// symlink, no regular file), that the parent exists (kubelet creates it),
/// and that `target` itself is absent or a directory, never a symlink.
pub fn check_target(base: &Path, target: &Path) -> Result<(), Error> {
    let unsafe_target = |reason: String| Error::UnsafeTarget {
        path: target.to_path_buf(),
        reason,
    };
    let rest = target
        .strip_prefix(base)
        .map_err(|_| unsafe_target(format!("it is not under {}", base.display())))?;
    let mut cursor = base.to_path_buf();
    let parts: Vec<_> = rest.components().collect();
    for (i, part) in parts.iter().enumerate() {
        cursor.push(part);
        let last = i + 1 == parts.len();
        match fs::symlink_metadata(&cursor) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(unsafe_target(format!(
                    "{} is a symlink, which is never followed",
                    cursor.display()
                )));
            }
            Ok(meta) if !meta.is_dir() => {
                return Err(unsafe_target(format!(
                    "{} is not a directory",
                    cursor.display()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && last => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(unsafe_target(format!(
                    "{} does not exist; kubelet creates the target's parent before publishing",
                    cursor.display()
                )));
            }
            Err(source) => return Err(io_err("inspect", &cursor, source)),
        }
    }
    Ok(())
}

/// Creates `target` if needed (kubelet only creates its parent), refusing
/// anything that is not a plain directory on the way.
pub fn create_target(target: &Path) -> Result<(), Error> {
    match fs::DirBuilder::new().mode(0o750).create(target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(io_err("create the target directory", target, source)),
    }
    open_dir_nofollow(target).map(drop)
}

/// Makes `dir` (created `0700` if missing) a mount point of its own with
/// private propagation, so that mounts the driver makes below it (staged
/// volumes, writable views) are never copied into any other mount namespace,
/// whatever the propagation of the file system it lives on, and clears what
/// an earlier run left below it. Call it once at start-up.
pub fn private_mount_dir(dir: &Path) -> Result<(), Error> {
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
        .map_err(|source| io_err("create the private mount directory", dir, source))?;
    let dir = fs::canonicalize(dir).map_err(|source| io_err("resolve", dir, source))?;
    let mount_err = |action, errno| Error::Mount {
        action,
        path: dir.clone(),
        errno,
    };
    if !is_listed_mount_point(&dir)? {
        mount(
            Some(&dir),
            &dir,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| mount_err("bind onto itself", e))?;
    }
    mount(
        None::<&str>,
        &dir,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| mount_err("make private", e))?;
    // Staged volumes and views an earlier run in this namespace left behind
    // (a crash mid-publish): nothing refers to them any more.
    let entries = fs::read_dir(&dir).map_err(|source| io_err("list", &dir, source))?;
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            release_scratch(&entry.path());
        }
    }
    Ok(())
}

/// Undoes [`private_mount_dir`] when the driver stops: detaches the
/// directory's own bind and anything still below it. Volumes are not below
/// it (they live at their targets), so they stay.
pub fn release_private_mount_dir(dir: &Path) {
    if let Ok(dir) = fs::canonicalize(dir)
        && is_listed_mount_point(&dir).unwrap_or(false)
        && let Err(errno) = umount2(&dir, MntFlags::MNT_DETACH)
    {
        tracing::warn!(path = %dir.display(), %errno, "Could not unmount the private mount directory");
    }
}

/// A volume's new tmpfs while its first files are written: mounted in the
/// driver's [private mount directory](private_mount_dir), where no pod and no
/// other mount namespace can see it. [`StagedTmpfs::attach`] seals it
/// read-only and only then binds it onto the target. Dropping it unattached
/// unmounts it (a failed publish leaves nothing behind).
#[derive(Debug)]
pub struct StagedTmpfs {
    path: PathBuf,
}

impl StagedTmpfs {
    /// Mounts a fresh tmpfs at `staging` (a path inside the private mount
    /// directory; created if missing, a leftover mount there is detached).
    ///
    /// A kernel that refuses the SELinux `context=` option (SELinux not
    /// enabled, or a policy without the label) gets the mount without it:
    /// silently for `--selinux-context=auto` (logged once), with a warning
    /// for a label asked for explicitly. The volume still works wherever no
    /// relabel is asked for (a host without SELinux, or `readOnly: true`).
    pub fn mount(staging: &Path, options: &TmpfsOptions) -> Result<Self, Error> {
        prepare_scratch(staging)?;
        let data = format!(
            "size={},nr_inodes={},mode={:o},uid=0,gid={}",
            options.size_bytes,
            options.inodes,
            options.mode,
            options.gid.unwrap_or(0)
        );
        let attempt = |data: &str| {
            mount(
                Some("tmpfs"),
                staging,
                Some("tmpfs"),
                SAFE_FLAGS,
                Some(data),
            )
        };
        let mounted = match &options.selinux_context {
            Some(context) if context.worth_trying() => {
                let label = &context.label;
                match attempt(&format!("{data},context=\"{label}\"")) {
                    Err(Errno::EINVAL) => {
                        if context.required {
                            tracing::warn!(
                                %label,
                                "The kernel refused the SELinux context= mount option; mounting the volume without a label. On an SELinux-enforcing node a volume without readOnly: true then fails to start its container: check --selinux-context or the volume's mount flags"
                            );
                        } else if context.refused() {
                            tracing::info!(
                                "SELinux is not enabled on this node (the kernel refused a context= mount option): volumes are not labelled"
                            );
                        }
                        attempt(&data)
                    }
                    other => other,
                }
            }
            _ => attempt(&data),
        };
        mounted.map_err(|errno| Error::Mount {
            action: "mount tmpfs on",
            path: staging.to_path_buf(),
            errno,
        })?;
        Ok(Self {
            path: staging.to_path_buf(),
        })
    }

    /// Where to write the first files.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the staged mount read-only, then binds it onto `target` (opened
    /// `O_PATH|O_NOFOLLOW`, so a swapped-in symlink is never followed). The
    /// bind inherits the read-only flag, and so does every copy propagated
    /// from it. The staging mount is left for the caller to remove (with
    /// [`StagedTmpfs::release`], or by dropping it), off the pod's way.
    pub fn attach(self, target: &Path) -> Result<Self, Error> {
        let seal = || {
            mount(
                None::<&str>,
                &self.path,
                None::<&str>,
                MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | SAFE_FLAGS,
                None::<&str>,
            )
        };
        // A remount read-only is refused with EBUSY while any file of the
        // mount is open for writing: a process forked at the instant the
        // writer had one open holds a copy until it execs. That passes in
        // microseconds; the writer itself has closed every file.
        let mut sealed = seal();
        for pause_ms in [1, 5, 20, 50, 100] {
            if sealed != Err(Errno::EBUSY) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(pause_ms));
            sealed = seal();
        }
        sealed.map_err(|errno| Error::Mount {
            action: "seal read-only",
            path: self.path.clone(),
            errno,
        })?;
        let dir = open_dir_nofollow(target)?;
        mount(
            Some(&self.path),
            &fd_path(&dir),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|errno| Error::Mount {
            action: "attach the sealed volume at",
            path: target.to_path_buf(),
            errno,
        })?;
        Ok(self)
    }

    /// Removes the staging mount (the target keeps the tmpfs).
    pub fn release(self) {
        drop(self);
    }
}

impl Drop for StagedTmpfs {
    fn drop(&mut self) {
        release_scratch(&self.path);
    }
}

/// Bytes the file system at `path` has in use (0 when it cannot be read):
/// for a volume's tmpfs, the pages its files take.
pub fn bytes_used(path: &Path) -> u64 {
    nix::sys::statvfs::statvfs(path).map_or(0, |stats| {
        (stats.blocks() - stats.blocks_free()) * stats.fragment_size()
    })
}

/// True when `path` is the root of a tmpfs mount (a volume this driver
/// mounted). A missing path is not a mount.
pub fn is_tmpfs_mount(path: &Path) -> Result<bool, Error> {
    if !is_mount_point(path)? {
        return Ok(false);
    }
    let fs_info = statfs(path).map_err(|errno| Error::Mount {
        action: "statfs",
        path: path.to_path_buf(),
        errno,
    })?;
    Ok(fs_info.filesystem_type() == TMPFS_MAGIC)
}

/// Unmounts whatever is mounted on `target` (if anything) and removes the
/// directory. Missing targets are fine: unpublish must be idempotent.
pub fn unmount_and_remove(target: &Path) -> Result<(), Error> {
    // A stacked mount (a publish retried on top of an old one) needs one
    // unmount per layer; bounded so a surprise cannot loop forever.
    for _ in 0..8 {
        if !is_mount_point(target)? {
            break;
        }
        match umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => {}
            Err(Errno::EBUSY) => {
                umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW).map_err(
                    |errno| Error::Mount {
                        action: "detach",
                        path: target.to_path_buf(),
                        errno,
                    },
                )?;
            }
            Err(errno) => {
                return Err(Error::Mount {
                    action: "unmount",
                    path: target.to_path_buf(),
                    errno,
                });
            }
        }
    }
    match fs::symlink_metadata(target) {
        Ok(meta) if meta.is_dir() => match fs::remove_dir(target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(io_err("remove the target directory", target, source)),
        },
        Ok(_) => Err(Error::UnsafeTarget {
            path: target.to_path_buf(),
            reason: "it is not a directory; remove it by hand".to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io_err("inspect", target, source)),
    }
}

/// True when something is mounted on `path` (its device differs from its
/// parent's). Symlinks are never followed.
pub fn is_mount_point(path: &Path) -> Result<bool, Error> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(io_err("inspect", path, source)),
    };
    if !meta.is_dir() {
        return Ok(false);
    }
    let parent = path.parent().unwrap_or(path);
    let parent_meta = fs::metadata(parent).map_err(|e| io_err("inspect", parent, e))?;
    Ok(meta.dev() != parent_meta.dev() || meta.ino() == parent_meta.ino())
}

/// A temporary writable mount of a read-only volume, in a private scratch
/// directory. Dropping it unmounts it. This is how the driver refreshes a
/// `readOnly: true` volume without ever making the pod's view writable.
#[derive(Debug)]
pub struct WritableView {
    path: PathBuf,
}

impl WritableView {
    /// Bind-mounts `target` at `scratch` and makes that one mount writable.
    pub fn open(target: &Path, scratch: &Path) -> Result<Self, Error> {
        let source = open_dir_nofollow(target)?;
        // The target may have been unmounted since the caller looked (an
        // unpublish does not wait for a refresh): then what is there is
        // kubelet's own directory, and writing through it would put the
        // volume's files on the node's disk.
        let is_tmpfs = fstatfs(&source).is_ok_and(|fs| fs.filesystem_type() == TMPFS_MAGIC);
        let parent_dev = target
            .parent()
            .and_then(|p| fs::metadata(p).ok())
            .map(|m| m.dev());
        let is_root = source.metadata().is_ok_and(|m| Some(m.dev()) != parent_dev);
        if !is_tmpfs || !is_root {
            return Err(Error::UnsafeTarget {
                path: target.to_path_buf(),
                reason: "the volume's tmpfs is no longer mounted there (unpublished meanwhile?); nothing is written".to_owned(),
            });
        }
        prepare_scratch(scratch)?;
        let mount_err = |action, errno| Error::Mount {
            action,
            path: scratch.to_path_buf(),
            errno,
        };
        mount(
            Some(&fd_path(&source)),
            scratch,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| mount_err("bind", e))?;
        let view = Self {
            path: scratch.to_path_buf(),
        };
        mount(
            None::<&str>,
            scratch,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | SAFE_FLAGS,
            None::<&str>,
        )
        .map_err(|e| mount_err("remount writable", e))?;
        Ok(view)
    }

    /// Where to write through this view.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WritableView {
    fn drop(&mut self) {
        release_scratch(&self.path);
    }
}

/// Creates a scratch mount point in the private mount directory, detaching
/// whatever a crash left mounted there (it would otherwise stack).
fn prepare_scratch(scratch: &Path) -> Result<(), Error> {
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(scratch)
        .map_err(|source| io_err("create the scratch directory", scratch, source))?;
    while is_mount_point(scratch)? {
        umount2(scratch, MntFlags::MNT_DETACH).map_err(|errno| Error::Mount {
            action: "detach a stale mount at",
            path: scratch.to_path_buf(),
            errno,
        })?;
    }
    Ok(())
}

/// Unmounts a scratch mount point and removes it; failures are logged (the
/// next use of the same scratch path detaches a leftover).
fn release_scratch(scratch: &Path) {
    if let Err(errno) = umount2(scratch, MntFlags::MNT_DETACH) {
        tracing::warn!(path = %scratch.display(), %errno, "Could not unmount a private scratch mount");
    }
    let _ = fs::remove_dir(scratch);
}

/// True when `path` (canonical) is listed as a mount point in this
/// namespace's `/proc/self/mountinfo`. Unlike [`is_mount_point`] this also
/// sees a directory bind-mounted onto itself.
fn is_listed_mount_point(path: &Path) -> Result<bool, Error> {
    let table = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|source| io_err("read", Path::new("/proc/self/mountinfo"), source))?;
    Ok(table.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|point| Path::new(&unescape_mountinfo(point)) == path)
    }))
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn open_dir_nofollow(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .custom_flags(
            (OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).bits(),
        )
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(Errno::ELOOP as i32)
                || source.raw_os_error() == Some(Errno::ENOTDIR as i32)
            {
                Error::UnsafeTarget {
                    path: path.to_path_buf(),
                    reason: "it is a symlink or not a directory".to_owned(),
                }
            } else {
                io_err("open", path, source)
            }
        })
}

fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

fn io_err(action: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
