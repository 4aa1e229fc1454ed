//! The tmpfs that holds one volume's files, mounted directly on kubelet's
//! `target_path`, and the safe handling of that path.
//!
//! Mounting on the target itself (rather than bind-mounting a driver-owned
//! directory) means the files live in the host's mount table and survive a
//! driver restart untouched. The target is opened with `O_PATH|O_NOFOLLOW`
//! and the mount is made through `/proc/self/fd/N`, so a symlink swapped in
//! after validation can never redirect the mount elsewhere.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::statfs::{TMPFS_MAGIC, statfs};

use super::Error;

/// Flags every volume mount carries: nothing on it can be executed, be a
/// device or gain privileges.
const SAFE_FLAGS: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Size and ownership of a volume's tmpfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TmpfsOptions {
    /// Hard size limit of the filesystem, in bytes.
    pub size_bytes: u64,
    /// Limit on files, directories and links.
    pub inodes: u64,
    /// Mode of the volume's root directory.
    pub mode: u32,
    /// Group owning the root directory (the pod's fsGroup), if any.
    pub gid: Option<u32>,
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

/// Creates `target` (kubelet only creates its parent), refusing anything that
/// is not a plain directory on the way, and mounts a fresh tmpfs on it.
pub fn mount_tmpfs(target: &Path, options: TmpfsOptions) -> Result<(), Error> {
    match fs::DirBuilder::new().mode(0o750).create(target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(io_err("create the target directory", target, source)),
    }
    let dir = open_dir_nofollow(target)?;
    let data = format!(
        "size={},nr_inodes={},mode={:o},uid=0,gid={}",
        options.size_bytes,
        options.inodes,
        options.mode,
        options.gid.unwrap_or(0)
    );
    mount(
        Some("tmpfs"),
        &fd_path(&dir),
        Some("tmpfs"),
        SAFE_FLAGS,
        Some(data.as_str()),
    )
    .map_err(|errno| Error::Mount {
        action: "mount tmpfs on",
        path: target.to_path_buf(),
        errno,
    })
}

/// Makes the pod's view of `target` read-only. The tmpfs itself stays
/// writable through other mounts of it, which is how refreshes still land.
pub fn remount_read_only(target: &Path) -> Result<(), Error> {
    let dir = open_dir_nofollow(target)?;
    mount(
        None::<&str>,
        &fd_path(&dir),
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | SAFE_FLAGS,
        None::<&str>,
    )
    .map_err(|errno| Error::Mount {
        action: "remount read-only",
        path: target.to_path_buf(),
        errno,
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
        match fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(scratch)
        {
            Ok(()) => {}
            Err(source) => return Err(io_err("create the scratch directory", scratch, source)),
        }
        // A leftover from a crash would otherwise stack a second bind.
        while is_mount_point(scratch)? {
            umount2(scratch, MntFlags::MNT_DETACH).map_err(|errno| Error::Mount {
                action: "detach stale view",
                path: scratch.to_path_buf(),
                errno,
            })?;
        }
        let source = open_dir_nofollow(target)?;
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
        if let Err(errno) = umount2(&self.path, MntFlags::MNT_DETACH) {
            tracing::warn!(path = %self.path.display(), %errno, "Could not unmount a writable view");
        }
        let _ = fs::remove_dir(&self.path);
    }
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
