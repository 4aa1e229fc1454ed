//! The atomic writer: replaces a volume's whole file set in one `rename(2)`,
//! the way Kubernetes updates Secret and ConfigMap volumes.
//!
//! ```text
//! <root>/index.html -> ..data/index.html      (one link per top-level name)
//! <root>/..data     -> ..2026_11_29_05_08_13.123456789.x7Kq   (swapped by rename)
//! <root>/..2026_11_29_05_08_13.123456789.x7Kq/index.html
//! ```
//!
//! Readers resolve `name -> ..data -> <timestamped dir>`. `..data` moves from
//! a complete old tree to a complete new tree in one rename, so a reader
//! never sees a missing, empty, partial or mixed set; a file opened before
//! the swap keeps its inode after the old directory is deleted. A crash at
//! any point leaves either the old set or the new one behind `..data`; the
//! next write removes any orphaned timestamped directory.
//!
//! Not safe for concurrent use on one root: the volume manager serialises
//! writes per volume.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt, fchown, lchown};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use rand::Rng;
use rand::distr::Alphanumeric;

use super::{Error, RelativePath};
use crate::secret::Secret;

const DATA_LINK: &str = "..data";
const DATA_LINK_TMP: &str = "..data_tmp";

/// One file of a volume's payload: its bytes (never logged) and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileContent {
    /// The exact bytes to write.
    pub bytes: Secret<Vec<u8>>,
    /// Permission bits, applied exactly (the umask does not apply).
    pub mode: u32,
}

/// The complete set of files a volume should hold, keyed by path.
pub type Payload = BTreeMap<RelativePath, FileContent>;

/// Ownership and limits applied to every write of one volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// Group that owns the files and directories (the pod's fsGroup), if any.
    pub gid: Option<u32>,
    /// Mode of the directories the writer creates.
    pub dir_mode: u32,
    /// Largest total payload in bytes; larger payloads are refused before
    /// anything is written, so the previous files stay.
    pub max_bytes: u64,
}

/// What a write did, so callers can count real updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The payload equals what is on disk; nothing was replaced.
    Unchanged,
    /// A new file set was swapped in.
    Replaced,
}

/// Writes payloads into one directory atomically. Holds only the root path.
#[derive(Debug, Clone)]
pub struct AtomicWriter {
    root: PathBuf,
}

impl AtomicWriter {
    /// A writer for the volume rooted at `root` (an existing directory).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory this writer manages.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes the directory hold exactly `payload`, atomically. Returns
    /// [`WriteOutcome::Unchanged`] without touching anything when the bytes
    /// and modes already match.
    pub fn write(&self, payload: &Payload, options: WriteOptions) -> Result<WriteOutcome, Error> {
        let total: u64 = payload
            .values()
            .map(|f| f.bytes.expose().len() as u64)
            .sum();
        if total > options.max_bytes {
            return Err(Error::PayloadTooLarge {
                bytes: total,
                limit: options.max_bytes,
            });
        }
        let old_dir = self.current_dir()?;
        if let Some(old) = &old_dir
            && self.matches(old, payload)?
        {
            self.link_top_level(payload)?;
            return Ok(WriteOutcome::Unchanged);
        }

        let new_name = timestamped_name();
        let new_dir = self.root.join(&new_name);
        if let Err(error) = self.fill(&new_dir, payload, options) {
            let _ = fs::remove_dir_all(&new_dir);
            return Err(error);
        }
        let tmp_link = self.root.join(DATA_LINK_TMP);
        remove_if_exists(&tmp_link)?;
        std::os::unix::fs::symlink(&new_name, &tmp_link).map_err(|e| self.io("link", e))?;
        fs::rename(&tmp_link, self.root.join(DATA_LINK)).map_err(|e| self.io("swap ..data", e))?;

        self.link_top_level(payload)?;
        self.tidy(payload, &new_name)?;
        Ok(WriteOutcome::Replaced)
    }

    /// Reads the current bytes of one file, if the volume has it. Used to
    /// rebuild a payload after a restart without re-fetching every secret.
    /// True when the directory already holds exactly `payload` (bytes,
    /// modes) with every top-level link in place, so a write would change
    /// nothing. Only reads, so it works through a read-only mount: the
    /// volume manager asks before it opens a writable view.
    pub fn is_current(&self, payload: &Payload) -> Result<bool, Error> {
        let Some(dir) = self.current_dir()? else {
            return Ok(false);
        };
        if !self.matches(&dir, payload)? {
            return Ok(false);
        }
        Ok(top_level_names(payload).into_iter().all(|name| {
            fs::read_link(self.root.join(name))
                .is_ok_and(|target| target == Path::new(DATA_LINK).join(name))
        }))
    }

    /// Only a regular file of the current set is read, of at most `limit`
    /// bytes, and never through a symlink at any depth: whatever sits in the
    /// volume cannot make the driver read a file elsewhere on the node.
    pub fn read(&self, path: &RelativePath, limit: u64) -> Result<Option<Secret<Vec<u8>>>, Error> {
        let Some(dir) = self.current_dir()? else {
            return Ok(None);
        };
        match read_beneath(&dir, path.as_str(), limit) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("read", e)),
        }
    }

    /// The timestamped directory `..data` points to. Only what this writer
    /// makes is accepted: `..data` a symlink to a sibling with a set
    /// directory's name that is itself a real directory (checked with
    /// `lstat`, so a link there is not followed). Anything else is ignored,
    /// never followed, and replaced by the next write.
    fn current_dir(&self) -> Result<Option<PathBuf>, Error> {
        let target = match fs::read_link(self.root.join(DATA_LINK)) {
            Ok(target) => target,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            // Not a symlink (EINVAL), or unreadable: not the writer's.
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EINVAL as i32) => {
                return Ok(None);
            }
            Err(e) => return Err(self.io("read ..data", e)),
        };
        let Some(name) = target.to_str().filter(|n| is_set_dir_name(n)) else {
            return Ok(None);
        };
        let dir = self.root.join(name);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => Ok(Some(dir)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("inspect the current set", e)),
        }
    }

    /// True when `dir` holds exactly the payload's files with the same bytes
    /// and modes.
    fn matches(&self, dir: &Path, payload: &Payload) -> Result<bool, Error> {
        let mut on_disk = BTreeSet::new();
        collect_files(dir, dir, &mut on_disk).map_err(|e| self.io("walk", e))?;
        if on_disk.len() != payload.len() || !payload.keys().all(|k| on_disk.contains(k.as_str())) {
            return Ok(false);
        }
        for (path, content) in payload {
            let file = dir.join(path.as_str());
            let meta = fs::symlink_metadata(&file).map_err(|e| self.io("stat", e))?;
            if !meta.is_file()
                || meta.permissions().mode() & 0o7777 != content.mode
                || meta.len() != content.bytes.expose().len() as u64
            {
                return Ok(false);
            }
            let limit = meta.len();
            // Replaced, grown or unreadable meanwhile: a write will replace
            // it (and report a real failure).
            let Ok(bytes) = read_beneath(dir, path.as_str(), limit) else {
                return Ok(false);
            };
            if bytes.expose() != content.bytes.expose() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn fill(&self, dir: &Path, payload: &Payload, options: WriteOptions) -> Result<(), Error> {
        // Without root, directories stay owner-writable while they are
        // filled and get their final mode afterwards, deepest first, so an
        // unprivileged writer (plain-directory demos) can fill read-only
        // trees too. Root writes into them anyway: they get their final
        // mode at once, which saves two `chmod`s per directory.
        let fill_mode = if nix::unistd::geteuid().is_root() {
            options.dir_mode
        } else {
            options.dir_mode | 0o700
        };
        // Only a writer that must set the final modes afterwards keeps the
        // directories it made: a path's ancestors, each a copy of the path
        // so far, would otherwise cost memory in the square of its depth.
        let keep_created = fill_mode != options.dir_mode;
        let mut created = Vec::new();
        self.make_dir(dir, fill_mode, options.gid)?;
        if keep_created {
            created.push(dir.to_path_buf());
        }
        for (path, content) in payload {
            let file = dir.join(path.as_str());
            if let Some(parent) = Path::new(path.as_str()).parent() {
                // Down from the set's directory: levels that exist are
                // passed, the first missing one and all below it are made.
                let mut cursor = dir.to_path_buf();
                let mut missing = false;
                for part in parent.components() {
                    cursor.push(part);
                    missing = missing || !cursor.exists();
                    if missing {
                        self.make_dir(&cursor, fill_mode, options.gid)?;
                        if keep_created {
                            created.push(cursor.clone());
                        }
                    }
                }
            }
            let mut handle = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(content.mode)
                .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
                .open(&file)
                .map_err(|e| self.io("create file", e))?;
            handle
                .write_all(content.bytes.expose())
                .map_err(|e| self.io("write file", e))?;
            if content.mode & umask() != 0 {
                handle
                    .set_permissions(fs::Permissions::from_mode(content.mode))
                    .map_err(|e| self.io("chmod", e))?;
            }
            if options.gid.is_some() {
                fchown(&handle, None, options.gid).map_err(|e| self.io("chown", e))?;
            }
        }
        if fill_mode != options.dir_mode {
            for d in created.iter().rev() {
                fs::set_permissions(d, fs::Permissions::from_mode(options.dir_mode))
                    .map_err(|e| self.io("chmod", e))?;
            }
        }
        Ok(())
    }

    /// Creates one directory with exactly `mode` (a `chmod` follows only
    /// when the umask would have cleared some of its bits).
    fn make_dir(&self, dir: &Path, mode: u32, gid: Option<u32>) -> Result<(), Error> {
        fs::DirBuilder::new()
            .mode(mode)
            .create(dir)
            .map_err(|e| self.io("create directory", e))?;
        if mode & umask() != 0 {
            fs::set_permissions(dir, fs::Permissions::from_mode(mode))
                .map_err(|e| self.io("chmod", e))?;
        }
        if gid.is_some() {
            lchown(dir, None, gid).map_err(|e| self.io("chown", e))?;
        }
        Ok(())
    }

    /// Creates `name -> ..data/name` for every top-level payload name that
    /// lacks one. Runs after the swap, so a new link never dangles.
    fn link_top_level(&self, payload: &Payload) -> Result<(), Error> {
        for name in top_level_names(payload) {
            let link = self.root.join(name);
            let wanted = Path::new(DATA_LINK).join(name);
            match fs::read_link(&link) {
                Ok(target) if target == wanted => continue,
                Ok(_) => remove_if_exists(&link)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => {
                    // Something that is not a link sits where a link should be;
                    // only the driver writes here, so replace it.
                    remove_path(&link).map_err(|e| self.io("replace entry", e))?;
                }
            }
            std::os::unix::fs::symlink(&wanted, &link).map_err(|e| self.io("link", e))?;
        }
        Ok(())
    }

    /// Removes, in one pass over the root, top-level links whose name left
    /// the payload and every timestamped directory except `keep` (including
    /// ones a crash left behind). Runs after the swap, so a removed name is
    /// never visible as a dangling link first.
    fn tidy(&self, payload: &Payload, keep: &str) -> Result<(), Error> {
        let names = top_level_names(payload);
        for entry in fs::read_dir(&self.root).map_err(|e| self.io("list", e))? {
            let entry = entry.map_err(|e| self.io("list", e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let stale = if name.starts_with("..") {
                is_set_dir_name(name) && name != keep
            } else {
                !names.contains(name)
            };
            if stale {
                remove_path(&entry.path()).map_err(|e| self.io("remove stale entry", e))?;
            }
        }
        Ok(())
    }

    fn io(&self, action: &'static str, source: io::Error) -> Error {
        Error::Io {
            action,
            path: self.root.clone(),
            source,
        }
    }
}

/// Reads the regular file `rel` below `dir`, opening every element with
/// `O_NOFOLLOW` relative to its parent's descriptor (so no symlink is
/// followed at any depth, on any kernel), and refusing files over `limit`
/// bytes (`EFBIG`) or that are not regular files (`EINVAL`).
fn read_beneath(dir: &Path, rel: &str, limit: u64) -> io::Result<Secret<Vec<u8>>> {
    use rustix::fs::{Mode, OFlags, openat};
    let nofollow = OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut current = fs::File::from(openat(
        rustix::fs::CWD,
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | nofollow,
        Mode::empty(),
    )?);
    let mut elements = rel.split('/').peekable();
    while let Some(element) = elements.next() {
        let flags = if elements.peek().is_some() {
            OFlags::RDONLY | OFlags::DIRECTORY | nofollow
        } else {
            OFlags::RDONLY | OFlags::NONBLOCK | nofollow
        };
        current = fs::File::from(openat(&current, element, flags, Mode::empty())?);
    }
    let meta = current.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::from_raw_os_error(
            nix::errno::Errno::EINVAL as i32,
        ));
    }
    if meta.len() > limit {
        return Err(io::Error::from_raw_os_error(
            nix::errno::Errno::EFBIG as i32,
        ));
    }
    let mut bytes = Vec::new();
    let result = io::Read::read_to_end(&mut io::Read::take(current, limit + 1), &mut bytes);
    // Wrapped before the error check, so a partial read is zeroized too.
    let bytes = Secret::new(bytes);
    result?;
    if bytes.expose().len() as u64 > limit {
        return Err(io::Error::from_raw_os_error(
            nix::errno::Errno::EFBIG as i32,
        ));
    }
    Ok(bytes)
}

/// The names the payload puts at the root: one link each.
fn top_level_names(payload: &Payload) -> BTreeSet<&str> {
    payload.keys().map(RelativePath::first_element).collect()
}

/// True for the name of a file set's timestamped directory (`..` and the
/// two links excepted): what `..data` may point to, and what a write
/// removes when it is not the new set.
fn is_set_dir_name(name: &str) -> bool {
    name.starts_with("..")
        && name != ".."
        && !name.contains('/')
        && name != DATA_LINK
        && name != DATA_LINK_TMP
}

/// The process's umask, read once (the driver never changes it): a mode it
/// would not alter needs no `chmod` after creating a file or directory.
/// Unknown, it is taken to clear everything, so every mode is set again.
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o777)
    })
}

fn timestamped_name() -> String {
    let now = time::OffsetDateTime::now_utc();
    let suffix: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(6)
        .map(char::from)
        .collect();
    format!(
        "..{:04}_{:02}_{:02}_{:02}_{:02}_{:02}.{:09}.{suffix}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.nanosecond()
    )
}

fn collect_files(base: &Path, dir: &Path, out: &mut BTreeSet<String>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            collect_files(base, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(base) {
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

fn remove_path(path: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        remove_tree(path)
    } else {
        fs::remove_file(path)
    }
}

/// Removes a directory tree the writer made. Symlinks are removed, never
/// followed (`remove_dir_all` walks by file descriptor). Without root, the
/// owner first gets write access to read-only directories; as root that is
/// not needed, and is skipped, because `chmod` by path would follow a
/// symlink swapped in meanwhile.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    fn open_up(dir: &Path) -> io::Result<()> {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                open_up(&entry.path())?;
            }
        }
        Ok(())
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            if !nix::unistd::geteuid().is_root() {
                open_up(path)?;
            }
            fs::remove_dir_all(path)
        }
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    }
}

fn remove_if_exists(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            action: "remove",
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(files: &[(&str, &str)]) -> Payload {
        files
            .iter()
            .map(|(p, c)| {
                (
                    RelativePath::parse(p).unwrap(),
                    FileContent {
                        bytes: Secret::new(c.as_bytes().to_vec()),
                        mode: 0o444,
                    },
                )
            })
            .collect()
    }

    const OPTIONS: WriteOptions = WriteOptions {
        gid: None,
        dir_mode: 0o755,
        max_bytes: 1 << 20,
    };

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("atomic-{}", rand::rng().random::<u64>()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Files and directories get exactly the requested modes, whatever the
    /// umask would have cleared (modes with group and other write bits).
    #[test]
    fn modes_are_exact() {
        let root = scratch();
        let writer = AtomicWriter::new(&root);
        let mut set = payload(&[("a.txt", "one"), ("dir/b.txt", "two")]);
        for file in set.values_mut() {
            file.mode = 0o666;
        }
        let options = WriteOptions {
            dir_mode: 0o777,
            ..OPTIONS
        };
        writer.write(&set, options).unwrap();
        let mode = |p: &str| fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("a.txt"), 0o666);
        assert_eq!(mode("dir/b.txt"), 0o666);
        assert_eq!(mode("dir"), 0o777);
        assert_eq!(mode("..data"), 0o777);
        writer
            .write(&payload(&[("c.txt", "three")]), OPTIONS)
            .unwrap();
        assert_eq!(mode("c.txt"), 0o444);
        assert_eq!(mode("..data"), 0o755);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn is_current_only_for_the_same_bytes_modes_and_links() {
        let root = scratch();
        let writer = AtomicWriter::new(&root);
        let set = payload(&[("a.txt", "one"), ("dir/b.txt", "two")]);
        assert!(!writer.is_current(&set).unwrap(), "an empty root");
        writer.write(&set, OPTIONS).unwrap();
        assert!(writer.is_current(&set).unwrap());
        assert!(
            !writer
                .is_current(&payload(&[("a.txt", "uno"), ("dir/b.txt", "two")]))
                .unwrap()
        );
        assert!(!writer.is_current(&payload(&[("a.txt", "one")])).unwrap());
        let mut other_mode = set.clone();
        for file in other_mode.values_mut() {
            file.mode = 0o440;
        }
        assert!(!writer.is_current(&other_mode).unwrap());
        fs::remove_file(root.join("dir")).unwrap();
        assert!(
            !writer.is_current(&set).unwrap(),
            "a missing top-level link"
        );
        writer.write(&set, OPTIONS).unwrap();
        assert!(
            writer.is_current(&set).unwrap(),
            "the write put the link back"
        );
        fs::remove_dir_all(&root).unwrap();
    }

    /// What a pod with write access could plant never makes the writer
    /// read, change or delete anything outside the volume: a `..data`
    /// pointing elsewhere is ignored (not read through, then replaced), and
    /// a planted directory holding a symlink to an outside file is removed
    /// without the file losing its mode or content.
    #[test]
    fn planted_links_are_never_followed() {
        use std::os::unix::fs::symlink;
        let root = scratch();
        let outside = scratch();
        fs::write(outside.join("a.txt"), "someone else's secret").unwrap();
        fs::set_permissions(outside.join("a.txt"), fs::Permissions::from_mode(0o640)).unwrap();
        let writer = AtomicWriter::new(&root);
        writer
            .write(&payload(&[("a.txt", "mine")]), OPTIONS)
            .unwrap();

        fs::remove_file(root.join(DATA_LINK)).unwrap();
        symlink(&outside, root.join(DATA_LINK)).unwrap();
        assert!(
            writer
                .read(&RelativePath::parse("a.txt").unwrap(), 1 << 20)
                .unwrap()
                .is_none(),
            "read through a planted ..data"
        );
        fs::create_dir(root.join("..planted")).unwrap();
        symlink(outside.join("a.txt"), root.join("..planted/link")).unwrap();
        symlink(&outside, root.join("..planted/dir")).unwrap();

        writer
            .write(&payload(&[("a.txt", "mine again")]), OPTIONS)
            .unwrap();
        assert_eq!(
            fs::read_to_string(root.join("a.txt")).unwrap(),
            "mine again"
        );
        assert!(
            !root.join("..planted").exists(),
            "the planted directory stays"
        );
        let meta = fs::metadata(outside.join("a.txt")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!(
            fs::read_to_string(outside.join("a.txt")).unwrap(),
            "someone else's secret"
        );
        let link = fs::read_link(root.join(DATA_LINK)).unwrap();
        assert!(link.to_str().unwrap().starts_with("..2"), "{link:?}");
        assert_eq!(
            writer
                .read(&RelativePath::parse("a.txt").unwrap(), 1 << 20)
                .unwrap()
                .map(|b| b.expose().clone()),
            Some(b"mine again".to_vec())
        );
        fs::remove_dir_all(&root).unwrap();
        fs::remove_dir_all(&outside).unwrap();
    }

    /// The attack reproduced against the writer: `..data -> ..evil ->
    /// <elsewhere>` (a set directory's name, but a symlink) was followed by
    /// `read`, and a link inside the set redirected a nested read. Neither
    /// is followed now, and reads are bounded.
    #[test]
    fn a_set_name_that_is_a_link_and_links_inside_the_set_are_not_followed() {
        use std::os::unix::fs::symlink;
        let root = scratch();
        let outside = scratch();
        fs::create_dir(outside.join("dir")).unwrap();
        fs::write(outside.join("a.txt"), "someone else's secret").unwrap();
        fs::write(outside.join("dir/b.txt"), "another").unwrap();
        let writer = AtomicWriter::new(&root);
        writer
            .write(
                &payload(&[("a.txt", "mine"), ("dir/b.txt", "mine too")]),
                OPTIONS,
            )
            .unwrap();
        let read = |p: &str, limit| {
            writer
                .read(&RelativePath::parse(p).unwrap(), limit)
                .map(|b| b.map(|b| String::from_utf8(b.expose().clone()).unwrap()))
        };
        assert_eq!(read("a.txt", 100).unwrap().as_deref(), Some("mine"));
        assert!(
            read("a.txt", 3).is_err(),
            "a file over the limit is refused"
        );

        // `..data` -> `..evil`, a symlink named like a set directory.
        symlink(&outside, root.join("..evil")).unwrap();
        fs::remove_file(root.join(DATA_LINK)).unwrap();
        symlink("..evil", root.join(DATA_LINK)).unwrap();
        assert_eq!(read("a.txt", 100).unwrap(), None);

        // A link inside the real set, at a directory and at a file.
        writer
            .write(
                &payload(&[("a.txt", "mine"), ("dir/b.txt", "mine too")]),
                OPTIONS,
            )
            .unwrap();
        let set = writer.current_dir().unwrap().unwrap();
        fs::remove_dir_all(set.join("dir")).unwrap();
        symlink(outside.join("dir"), set.join("dir")).unwrap();
        fs::remove_file(set.join("a.txt")).unwrap();
        symlink(outside.join("a.txt"), set.join("a.txt")).unwrap();
        for path in ["a.txt", "dir/b.txt"] {
            let error = read(path, 100).unwrap_err();
            assert!(
                matches!(error, Error::Io { ref source, .. } if source.raw_os_error() == Some(nix::libc::ELOOP) || source.raw_os_error() == Some(nix::libc::ENOTDIR)),
                "{path}: {error}"
            );
        }
        // And the comparison never reads through them either: the links
        // make the set differ, so a write replaces it.
        let set_payload = payload(&[("a.txt", "mine"), ("dir/b.txt", "mine too")]);
        assert!(!writer.is_current(&set_payload).unwrap());
        assert_eq!(
            writer.write(&set_payload, OPTIONS).unwrap(),
            WriteOutcome::Replaced
        );
        assert_eq!(read("dir/b.txt", 100).unwrap().as_deref(), Some("mine too"));
        assert_eq!(
            fs::read_to_string(outside.join("a.txt")).unwrap(),
            "someone else's secret"
        );
        fs::remove_dir_all(&root).unwrap();
        fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn writes_links_and_swaps_whole_sets() {
        let root = scratch();
        let writer = AtomicWriter::new(&root);
        let first = payload(&[("a.txt", "one"), ("dir/b.txt", "two")]);
        assert_eq!(
            writer.write(&first, OPTIONS).unwrap(),
            WriteOutcome::Replaced
        );
        assert_eq!(fs::read_to_string(root.join("a.txt")).unwrap(), "one");
        assert_eq!(fs::read_to_string(root.join("dir/b.txt")).unwrap(), "two");
        assert_eq!(
            fs::read_link(root.join("a.txt")).unwrap(),
            Path::new("..data/a.txt")
        );

        assert_eq!(
            writer.write(&first, OPTIONS).unwrap(),
            WriteOutcome::Unchanged
        );

        let second = payload(&[("a.txt", "uno"), ("c.txt", "tres")]);
        assert_eq!(
            writer.write(&second, OPTIONS).unwrap(),
            WriteOutcome::Replaced
        );
        assert_eq!(fs::read_to_string(root.join("a.txt")).unwrap(), "uno");
        assert!(
            !root.join("dir").exists(),
            "names that left the payload are removed"
        );
        let dirs: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("..") && n != DATA_LINK)
            .collect();
        assert_eq!(
            dirs.len(),
            1,
            "old timestamped directories are removed: {dirs:?}"
        );
        assert_eq!(
            fs::symlink_metadata(root.join("..data/a.txt"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o444
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn oversized_payload_keeps_the_previous_files() {
        let root = scratch();
        let writer = AtomicWriter::new(&root);
        writer.write(&payload(&[("a", "old")]), OPTIONS).unwrap();
        let small = WriteOptions {
            max_bytes: 4,
            ..OPTIONS
        };
        let err = writer
            .write(&payload(&[("a", "much too long")]), small)
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::PayloadTooLarge {
                    bytes: 13,
                    limit: 4
                }
            ),
            "{err}"
        );
        assert_eq!(fs::read_to_string(root.join("a")).unwrap(), "old");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn an_orphaned_directory_from_a_crash_is_cleaned_up() {
        let root = scratch();
        let writer = AtomicWriter::new(&root);
        writer.write(&payload(&[("a", "1")]), OPTIONS).unwrap();
        fs::create_dir(root.join("..2000_01_01_00_00_00.000000000.crash")).unwrap();
        writer.write(&payload(&[("a", "2")]), OPTIONS).unwrap();
        assert!(!root.join("..2000_01_01_00_00_00.000000000.crash").exists());
        fs::remove_dir_all(root).unwrap();
    }
}
