//! A volume's root: the one seam between the volume manager and how a
//! volume's files are held on the node.
//!
//! The manager asks the same five things of every volume whatever it is
//! made of: [prepare](VolumeRoots::prepare) a target for its first files,
//! [seal](Prepared::seal) it, [update](VolumeRoots::update) it later,
//! [remove](VolumeRoots::remove) it, and [recognise](VolumeRoots::is_root)
//! it after a restart. Two implementations answer:
//!
//! * [`TmpfsRoots`] (production): a tmpfs per volume, staged in the driver's
//!   private mount directory, sealed read-only before it is attached, and
//!   updated through a private writable view.
//! * [`PlainDirectories`] (`--insecure-plain-directories`, and the test
//!   suite when it runs without root): a plain directory at the target,
//!   written in place. Files land on the node's disk and `readOnly` is not
//!   enforced; never for production.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::tmpfs::{self, StagedTmpfs, TmpfsOptions, WritableView};
use super::{AtomicWriter, Error, Payload, WriteOptions, WriteOutcome};

/// What a volume's root is made of, for logs and the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    /// A tmpfs mount per volume.
    Tmpfs,
    /// A plain directory on the node's disk.
    PlainDirectory,
}

impl std::fmt::Display for RootKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tmpfs => "tmpfs",
            Self::PlainDirectory => "plain directory",
        })
    }
}

/// Ownership and label of one volume's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootOptions {
    /// Mode of the root directory.
    pub mode: u32,
    /// Group owning the root directory (the pod's fsGroup), if any.
    pub gid: Option<u32>,
    /// The SELinux label of every file (`context=`), if any.
    pub selinux_context: Option<super::selinux::Context>,
}

/// How the node holds volumes' files. Every method may block (mounts,
/// file system calls): call them off the async workers where it matters.
pub trait VolumeRoots: Send + Sync + std::fmt::Debug {
    /// What the roots are made of.
    fn kind(&self) -> RootKind;

    /// Called once before any volume is touched (a tmpfs root makes its
    /// private mount directory and clears what an earlier run left there).
    fn open(&self) -> Result<(), Error>;

    /// Called once when the driver stops; volumes stay for their pods.
    fn close(&self);

    /// Makes `target` ready for volume `id`'s first files. A target that
    /// already holds a root of this kind (left by an earlier run, perhaps
    /// still used by a container) is updated in place rather than
    /// replaced, so the container sees the new files.
    fn prepare(&self, target: &Path, id: &str, options: &RootOptions) -> Result<Prepared, Error>;

    /// Writes `payload` into the sealed root at `target`, atomically; a
    /// payload equal to what is there writes nothing.
    fn update(
        &self,
        target: &Path,
        id: &str,
        payload: &Payload,
        options: WriteOptions,
    ) -> Result<WriteOutcome, Error>;

    /// Removes the root at `target` and the directory; a missing target is
    /// fine (unpublish is idempotent).
    fn remove(&self, target: &Path) -> Result<(), Error>;

    /// True when `target` holds a root of this kind.
    fn is_root(&self, target: &Path) -> Result<bool, Error>;

    /// Bytes the root's files take in memory (0 for a plain directory,
    /// whose files are on disk).
    fn bytes_used(&self, target: &Path) -> u64;
}

/// A target made ready for its first files by [`VolumeRoots::prepare`]:
/// write at [`Prepared::path`], then [`Prepared::seal`]. Dropped unsealed,
/// whatever was staged goes away (a failed publish leaves nothing).
#[derive(Debug)]
pub struct Prepared {
    write_at: PathBuf,
    staged: Option<StagedTmpfs>,
    update: bool,
}

impl Prepared {
    /// Where the first files are written.
    pub fn path(&self) -> &Path {
        &self.write_at
    }

    /// True when the target already held a root, which is then written
    /// with [`VolumeRoots::update`] instead of at [`Prepared::path`].
    pub fn is_existing(&self) -> bool {
        self.update
    }

    /// Makes the written root the pod's: a staged tmpfs is sealed
    /// read-only and attached at `target`; a root written in place is
    /// already there.
    pub fn seal(self, target: &Path) -> Result<(), Error> {
        match self.staged {
            Some(staged) => staged.attach(target),
            None => Ok(()),
        }
    }
}

/// A tmpfs per volume (see [`tmpfs`]).
#[derive(Debug)]
pub struct TmpfsRoots {
    /// The driver's private mount directory (`<state-dir>/mounts`).
    private_dir: PathBuf,
    /// Size limit of each volume's tmpfs.
    size_bytes: u64,
    /// Inode limit of each volume's tmpfs.
    inodes: u64,
}

impl TmpfsRoots {
    /// Volumes of `size_bytes` and `inodes`, staged in `private_dir`.
    pub fn new(private_dir: PathBuf, size_bytes: u64, inodes: u64) -> Self {
        Self {
            private_dir,
            size_bytes,
            inodes,
        }
    }

    /// A scratch mount point in the private mount directory, one per
    /// volume and use.
    fn scratch(&self, use_: &str, id: &str) -> PathBuf {
        self.private_dir.join(format!("{use_}-{id}"))
    }
}

impl VolumeRoots for TmpfsRoots {
    fn kind(&self) -> RootKind {
        RootKind::Tmpfs
    }

    fn open(&self) -> Result<(), Error> {
        tmpfs::private_mount_dir(&self.private_dir)
    }

    fn close(&self) {
        tmpfs::release_private_mount_dir(&self.private_dir);
    }

    fn prepare(&self, target: &Path, id: &str, options: &RootOptions) -> Result<Prepared, Error> {
        if tmpfs::is_tmpfs_mount(target)? {
            return Ok(Prepared {
                write_at: target.to_path_buf(),
                staged: None,
                update: true,
            });
        }
        tmpfs::create_target(target)?;
        let staged = StagedTmpfs::mount(
            &self.scratch("stage", id),
            &TmpfsOptions {
                size_bytes: self.size_bytes,
                inodes: self.inodes,
                mode: options.mode,
                gid: options.gid,
                selinux_context: options.selinux_context.clone(),
            },
        )?;
        Ok(Prepared {
            write_at: staged.path().to_path_buf(),
            staged: Some(staged),
            update: false,
        })
    }

    fn update(
        &self,
        target: &Path,
        id: &str,
        payload: &Payload,
        options: WriteOptions,
    ) -> Result<WriteOutcome, Error> {
        if AtomicWriter::new(target).is_current(payload)? {
            return Ok(WriteOutcome::Unchanged);
        }
        // The pod's view is read-only in every namespace; the driver writes
        // through a private writable bind of the same tmpfs, opened only
        // when the files change.
        let view = WritableView::open(target, &self.scratch("view", id))?;
        AtomicWriter::new(view.path()).write(payload, options)
    }

    fn remove(&self, target: &Path) -> Result<(), Error> {
        tmpfs::unmount_and_remove(target)
    }

    fn is_root(&self, target: &Path) -> Result<bool, Error> {
        tmpfs::is_tmpfs_mount(target)
    }

    fn bytes_used(&self, target: &Path) -> u64 {
        tmpfs::bytes_used(target)
    }
}

/// A plain directory per volume, written in place (`--insecure-plain-directories`).
#[derive(Debug, Default)]
pub struct PlainDirectories;

impl VolumeRoots for PlainDirectories {
    fn kind(&self) -> RootKind {
        RootKind::PlainDirectory
    }

    fn open(&self) -> Result<(), Error> {
        Ok(())
    }

    fn close(&self) {}

    fn prepare(&self, target: &Path, _id: &str, _options: &RootOptions) -> Result<Prepared, Error> {
        let existing = self.is_root(target)?;
        fs::create_dir_all(target).map_err(|source| Error::Io {
            action: "create the target directory",
            path: target.to_path_buf(),
            source,
        })?;
        Ok(Prepared {
            write_at: target.to_path_buf(),
            staged: None,
            update: existing,
        })
    }

    fn update(
        &self,
        target: &Path,
        _id: &str,
        payload: &Payload,
        options: WriteOptions,
    ) -> Result<WriteOutcome, Error> {
        AtomicWriter::new(target).write(payload, options)
    }

    fn remove(&self, target: &Path) -> Result<(), Error> {
        match super::remove_tree(target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Io {
                action: "remove the target directory",
                path: target.to_path_buf(),
                source,
            }),
        }
    }

    /// A directory holding the atomic writer's `..data` link.
    fn is_root(&self, target: &Path) -> Result<bool, Error> {
        Ok(target.join("..data").symlink_metadata().is_ok())
    }

    fn bytes_used(&self, _target: &Path) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::secret::Secret;
    use crate::storage::{FileContent, RelativePath};

    fn payload(text: &str) -> Payload {
        let mut files = BTreeMap::new();
        files.insert(
            RelativePath::parse("a.txt").unwrap(),
            FileContent {
                bytes: Secret::new(text.as_bytes().to_vec()),
                mode: 0o444,
            },
        );
        files.into_iter().collect()
    }

    fn options() -> WriteOptions {
        WriteOptions {
            gid: None,
            dir_mode: 0o555,
            max_bytes: 1 << 20,
        }
    }

    /// The plain-directory root keeps the seam's contract without root:
    /// prepare, write, seal, recognise, update, remove.
    #[test]
    fn plain_directories_keep_the_roots_contract() {
        let dir = std::env::temp_dir().join(format!("vcd-root-{}", std::process::id()));
        let target = dir.join("target");
        let roots = PlainDirectories;
        let opts = RootOptions {
            mode: 0o555,
            gid: None,
            selinux_context: None,
        };
        assert!(!roots.is_root(&target).unwrap());
        let prepared = roots.prepare(&target, "v", &opts).unwrap();
        assert!(!prepared.is_existing());
        AtomicWriter::new(prepared.path())
            .write(&payload("one"), options())
            .unwrap();
        prepared.seal(&target).unwrap();
        assert!(roots.is_root(&target).unwrap());
        assert!(roots.prepare(&target, "v", &opts).unwrap().is_existing());
        assert_eq!(
            roots
                .update(&target, "v", &payload("two"), options())
                .unwrap(),
            WriteOutcome::Replaced
        );
        assert_eq!(fs::read_to_string(target.join("a.txt")).unwrap(), "two");
        roots.remove(&target).unwrap();
        assert!(!target.exists());
        roots.remove(&target).unwrap();
        let _ = fs::remove_dir_all(&dir);
    }
}
