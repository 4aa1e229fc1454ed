//! A volume's root: the one seam between the volume core and how a
//! volume's files are held on the node. Storage owns everything about
//! mounts and writes behind it, the first write and the private mount
//! directory included.
//!
//! The core asks the same things of every volume whatever it is made of:
//! [check](VolumeRoots::check_target) a target, [prepare](VolumeRoots::prepare)
//! it and [write](Prepared::write) the first files, [seal](Prepared::seal) it,
//! [update](VolumeRoots::update) and [read](VolumeRoots::read) it later,
//! [remove](VolumeRoots::remove) it, and [recognise](VolumeRoots::is_root) it
//! after a restart. Implementations:
//!
//! * [`TmpfsRoots`] (production): a tmpfs per volume, staged in the driver's
//!   private mount directory, sealed read-only before it is attached, and
//!   updated through a private writable view.
//! * [`PlainDirectories`] (`--insecure-plain-directories`, and the test
//!   suite when it runs without root): a plain directory at the target,
//!   written in place. Files land on the node's disk and `readOnly` is not
//!   enforced; never for production.
//! * [`super::memory::MemoryRoots`] (the volume core's unit tests): files
//!   in a map.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::tmpfs::{self, StagedTmpfs, TmpfsOptions, WritableView};
use super::{AtomicWriter, Error, Payload, RelativePath, WriteOptions, WriteOutcome};
use crate::secret::Secret;

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

/// How the node holds volumes' files: the volume core's port to mounts and
/// writes. Every method may block (mounts, file system calls): call them
/// off the async workers where it matters.
pub trait VolumeRoots: Send + Sync + std::fmt::Debug {
    /// What the roots are made of.
    fn kind(&self) -> RootKind;

    /// Called once before any volume is touched (a tmpfs root makes its
    /// private mount directory and clears what an earlier run left there).
    fn open(&self) -> Result<(), Error>;

    /// Called once when the driver stops; volumes stay for their pods.
    fn close(&self);

    /// Refuses a `target` the driver must never touch: outside kubelet's
    /// `pods/` directory, or reached through a symlink or a non-directory.
    /// Called before anything else happens to a target (publish, restore).
    fn check_target(&self, target: &Path) -> Result<(), Error>;

    /// Makes `target` ready for volume `id`'s first files: write them with
    /// [`Prepared::write`], then [`Prepared::seal`]. A target that already
    /// holds a root of this kind (left by an earlier run, perhaps still
    /// used by a container) is written in place rather than replaced, so
    /// the container sees the new files.
    fn prepare(
        &self,
        target: &Path,
        id: &str,
        options: &RootOptions,
    ) -> Result<Box<dyn Prepared>, Error>;

    /// Writes `payload` into the sealed root at `target`, atomically; a
    /// payload equal to what is there writes nothing.
    fn update(
        &self,
        target: &Path,
        id: &str,
        payload: &Payload,
        options: WriteOptions,
    ) -> Result<WriteOutcome, Error>;

    /// The current bytes of one file of the root at `target` (at most
    /// `limit`), read without following any link.
    fn read(
        &self,
        target: &Path,
        file: &RelativePath,
        limit: u64,
    ) -> Result<Option<Secret<Vec<u8>>>, Error>;

    /// Removes the root at `target` and the directory; a missing target is
    /// fine (unpublish is idempotent).
    fn remove(&self, target: &Path) -> Result<(), Error>;

    /// True when `target` holds a root of this kind.
    fn is_root(&self, target: &Path) -> Result<bool, Error>;

    /// Bytes the root's files take in memory (0 for a plain directory,
    /// whose files are on disk).
    fn bytes_used(&self, target: &Path) -> u64;
}

/// A target made ready for its first files by [`VolumeRoots::prepare`].
/// Dropped unsealed, whatever was staged goes away (a failed publish leaves
/// nothing).
pub trait Prepared: Send + std::fmt::Debug {
    /// True when the target already held a root (an earlier run's), which
    /// is adopted in place.
    fn is_existing(&self) -> bool;

    /// Writes the first file set.
    fn write(&mut self, payload: &Payload, options: WriteOptions) -> Result<WriteOutcome, Error>;

    /// Makes the written root the pod's: a staged tmpfs is sealed
    /// read-only and attached at `target`; a root written in place is
    /// already there. Returns what is left to release (a staging mount),
    /// which need not delay the pod.
    fn seal(self: Box<Self>, target: &Path) -> Result<Leftover, Error>;
}

/// What sealing a root left behind (a staging mount), released when
/// dropped: the caller may drop it after answering the pod.
#[derive(Default)]
pub struct Leftover(Option<StagedTmpfs>);

impl std::fmt::Debug for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Leftover(staging)"
        } else {
            "Leftover(none)"
        })
    }
}

impl Leftover {
    /// Whether there is anything to release.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

/// A tmpfs per volume (see [`tmpfs`]).
#[derive(Debug)]
pub struct TmpfsRoots {
    /// Kubelet's `pods/` directory: every target lies below it.
    pods_dir: PathBuf,
    /// The driver's private mount directory (`<state-dir>/mounts`).
    private_dir: PathBuf,
    /// Size limit of each volume's tmpfs.
    size_bytes: u64,
    /// Inode limit of each volume's tmpfs.
    inodes: u64,
}

impl TmpfsRoots {
    /// Volumes of `size_bytes` and `inodes` below `pods_dir`, staged in
    /// `private_dir`.
    pub fn new(pods_dir: PathBuf, private_dir: PathBuf, size_bytes: u64, inodes: u64) -> Self {
        Self {
            pods_dir,
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

/// A new tmpfs, filled while staged in the private mount directory.
#[derive(Debug)]
struct StagedRoot(StagedTmpfs);

impl Prepared for StagedRoot {
    fn is_existing(&self) -> bool {
        false
    }

    fn write(&mut self, payload: &Payload, options: WriteOptions) -> Result<WriteOutcome, Error> {
        AtomicWriter::new(self.0.path()).write(payload, options)
    }

    fn seal(self: Box<Self>, target: &Path) -> Result<Leftover, Error> {
        self.0.attach(target).map(|staging| Leftover(Some(staging)))
    }
}

/// A tmpfs an earlier run left at the target, adopted in place: written
/// through a private writable view.
#[derive(Debug)]
struct AdoptedTmpfs {
    target: PathBuf,
    view_at: PathBuf,
}

impl Prepared for AdoptedTmpfs {
    fn is_existing(&self) -> bool {
        true
    }

    fn write(&mut self, payload: &Payload, options: WriteOptions) -> Result<WriteOutcome, Error> {
        write_through_view(&self.target, &self.view_at, payload, options)
    }

    fn seal(self: Box<Self>, _target: &Path) -> Result<Leftover, Error> {
        Ok(Leftover::default())
    }
}

/// Writes a sealed tmpfs: nothing when it already holds `payload`, else
/// through a private writable bind of the same tmpfs, opened only for the
/// write (the pod's view is read-only in every namespace).
fn write_through_view(
    target: &Path,
    view_at: &Path,
    payload: &Payload,
    options: WriteOptions,
) -> Result<WriteOutcome, Error> {
    if AtomicWriter::new(target).is_current(payload)? {
        return Ok(WriteOutcome::Unchanged);
    }
    let view = WritableView::open(target, view_at)?;
    AtomicWriter::new(view.path()).write(payload, options)
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

    fn check_target(&self, target: &Path) -> Result<(), Error> {
        tmpfs::check_target(&self.pods_dir, target)
    }

    fn prepare(
        &self,
        target: &Path,
        id: &str,
        options: &RootOptions,
    ) -> Result<Box<dyn Prepared>, Error> {
        if tmpfs::is_tmpfs_mount(target)? {
            return Ok(Box::new(AdoptedTmpfs {
                target: target.to_path_buf(),
                view_at: self.scratch("view", id),
            }));
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
        Ok(Box::new(StagedRoot(staged)))
    }

    fn update(
        &self,
        target: &Path,
        id: &str,
        payload: &Payload,
        options: WriteOptions,
    ) -> Result<WriteOutcome, Error> {
        write_through_view(target, &self.scratch("view", id), payload, options)
    }

    fn read(
        &self,
        target: &Path,
        file: &RelativePath,
        limit: u64,
    ) -> Result<Option<Secret<Vec<u8>>>, Error> {
        AtomicWriter::new(target).read(file, limit)
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
#[derive(Debug)]
pub struct PlainDirectories {
    /// Kubelet's `pods/` directory: every target lies below it.
    pods_dir: PathBuf,
}

impl PlainDirectories {
    /// Directories below `pods_dir`.
    pub fn new(pods_dir: PathBuf) -> Self {
        Self { pods_dir }
    }
}

/// A plain directory at the target, written in place.
#[derive(Debug)]
struct InPlace {
    at: PathBuf,
    existing: bool,
}

impl Prepared for InPlace {
    fn is_existing(&self) -> bool {
        self.existing
    }

    fn write(&mut self, payload: &Payload, options: WriteOptions) -> Result<WriteOutcome, Error> {
        AtomicWriter::new(&self.at).write(payload, options)
    }

    fn seal(self: Box<Self>, _target: &Path) -> Result<Leftover, Error> {
        Ok(Leftover::default())
    }
}

impl VolumeRoots for PlainDirectories {
    fn kind(&self) -> RootKind {
        RootKind::PlainDirectory
    }

    fn open(&self) -> Result<(), Error> {
        Ok(())
    }

    fn close(&self) {}

    fn check_target(&self, target: &Path) -> Result<(), Error> {
        tmpfs::check_target(&self.pods_dir, target)
    }

    fn prepare(
        &self,
        target: &Path,
        _id: &str,
        _options: &RootOptions,
    ) -> Result<Box<dyn Prepared>, Error> {
        let existing = self.is_root(target)?;
        fs::create_dir_all(target).map_err(|source| Error::Io {
            action: "create the target directory",
            path: target.to_path_buf(),
            source,
        })?;
        Ok(Box::new(InPlace {
            at: target.to_path_buf(),
            existing,
        }))
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

    fn read(
        &self,
        target: &Path,
        file: &RelativePath,
        limit: u64,
    ) -> Result<Option<Secret<Vec<u8>>>, Error> {
        AtomicWriter::new(target).read(file, limit)
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
        let roots = PlainDirectories::new(dir.clone());
        let opts = RootOptions {
            mode: 0o555,
            gid: None,
            selinux_context: None,
        };
        assert!(!roots.is_root(&target).unwrap());
        roots.check_target(&target).unwrap();
        let mut prepared = roots.prepare(&target, "v", &opts).unwrap();
        assert!(!prepared.is_existing());
        prepared.write(&payload("one"), options()).unwrap();
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
        let file = RelativePath::parse("a.txt").unwrap();
        let read = roots.read(&target, &file, 1024).unwrap().unwrap();
        assert_eq!(read.expose(), b"two");
        roots.remove(&target).unwrap();
        assert!(!target.exists());
        roots.remove(&target).unwrap();
        let _ = fs::remove_dir_all(&dir);
    }

    /// An update racing an unpublish (which does not wait for a refresh)
    /// finds the target no longer a tmpfs: it writes nothing there, so no
    /// secret lands on the node's disk under kubelet's directory.
    #[test]
    fn an_update_never_writes_through_a_target_that_lost_its_tmpfs() {
        if !nix::unistd::geteuid().is_root() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI=true runs as root: mounts are needed"
            );
            eprintln!("skipping: needs root (tmpfs mounts)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("vcd-race-{}", rand::random::<u64>()));
        let (pods, private) = (dir.join("pods"), dir.join("private"));
        let target = pods.join("uid/volumes/kubernetes.io~csi/v/mount");
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        let roots = TmpfsRoots::new(pods.clone(), private, 1 << 20, 64);
        roots.open().unwrap();
        let opts = RootOptions {
            mode: 0o555,
            gid: None,
            selinux_context: None,
        };
        let mut prepared = roots.prepare(&target, "v", &opts).unwrap();
        prepared.write(&payload("one"), options()).unwrap();
        prepared.seal(&target).unwrap();
        assert!(roots.is_root(&target).unwrap());
        // The unpublish's unmount, before the refresh's write.
        nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH).unwrap();
        let refused = roots.update(&target, "v", &payload("two"), options());
        assert!(
            matches!(refused, Err(Error::UnsafeTarget { .. })),
            "{refused:?}"
        );
        assert_eq!(
            fs::read_dir(&target).unwrap().count(),
            0,
            "nothing written to the node's disk"
        );
        roots.close();
        let _ = fs::remove_dir_all(&dir);
    }
}
