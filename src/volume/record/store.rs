//! Where records are kept: [`FileStore`] (one file per volume under
//! `--state-dir`), and [`MemoryStore`] for the core's unit tests.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::volume::ports::{Listed, RecordStore};
use crate::volume::{Error, VolumeId};

/// One JSON file per volume in `<state-dir>/volumes`, mode 0600, in 0700
/// directories, replaced by rename.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
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
            dir: volumes.clone(),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }
}

impl RecordStore for FileStore {
    /// Writes atomically: a temp file (0600, never through a link), then a
    /// rename.
    fn save(&self, id: &VolumeId, bytes: &[u8]) -> Result<(), Error> {
        let path = self.path(id.as_str());
        let tmp = path.with_extension("json.tmp");
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
            file.write_all(bytes)?;
            fs::rename(&tmp, &path)
        })();
        result.map_err(|source| state_err(&path, source))
    }

    fn remove(&self, id: &VolumeId) -> Result<(), Error> {
        let path = self.path(id.as_str());
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(state_err(&path, source)),
        }
    }

    fn load(&self, id: &VolumeId) -> Option<Zeroizing<Vec<u8>>> {
        fs::read(self.path(id.as_str())).ok().map(Zeroizing::new)
    }

    /// Every record file; temp files a crash left behind are removed (the
    /// rename never happened, so the record they were to replace is
    /// current).
    fn list(&self) -> Result<Listed, Error> {
        let mut listed = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|source| state_err(&self.dir, source))? {
            let entry = entry.map_err(|source| state_err(&self.dir, source))?;
            let path = entry.path();
            let Some(volume_id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_owned)
            else {
                let _ = fs::remove_file(&path);
                continue;
            };
            if let Ok(bytes) = fs::read(&path) {
                listed.push((volume_id, Zeroizing::new(bytes)));
            }
        }
        Ok(listed)
    }
}

fn state_err(path: &Path, source: io::Error) -> Error {
    Error::State {
        path: path.to_path_buf(),
        source,
    }
}

/// Records in memory, for the core's unit tests. Clones share their state.
#[cfg(test)]
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    records: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>>,
    saves: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

#[cfg(test)]
impl MemoryStore {
    /// How many writes the store took.
    pub fn saves(&self) -> usize {
        self.saves.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Replaces a record's bytes, as a damaged or newer file would.
    pub fn put(&self, id: &str, bytes: &[u8]) {
        self.records
            .lock()
            .unwrap()
            .insert(id.to_owned(), bytes.to_vec());
    }

    /// The bytes of a record, by volume id.
    pub fn load_bytes(&self, id: &str) -> Option<Vec<u8>> {
        self.records.lock().unwrap().get(id).cloned()
    }

    /// The ids with a record.
    pub fn ids(&self) -> Vec<String> {
        self.records.lock().unwrap().keys().cloned().collect()
    }
}

#[cfg(test)]
impl RecordStore for MemoryStore {
    fn save(&self, id: &VolumeId, bytes: &[u8]) -> Result<(), Error> {
        self.saves
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.put(id.as_str(), bytes);
        Ok(())
    }

    fn remove(&self, id: &VolumeId) -> Result<(), Error> {
        self.records.lock().unwrap().remove(id.as_str());
        Ok(())
    }

    fn load(&self, id: &VolumeId) -> Option<Zeroizing<Vec<u8>>> {
        self.records
            .lock()
            .unwrap()
            .get(id.as_str())
            .cloned()
            .map(Zeroizing::new)
    }

    fn list(&self) -> Result<Listed, Error> {
        Ok(self
            .records
            .lock()
            .unwrap()
            .iter()
            .map(|(id, bytes)| (id.clone(), Zeroizing::new(bytes.clone())))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store never deletes a record it cannot read, and removes temp
    /// files a crash left.
    #[test]
    fn list_reports_every_record_and_drops_temp_files() {
        let dir = std::env::temp_dir().join(format!("vcd-record-{}", std::process::id()));
        let store = FileStore::open(&dir).unwrap();
        let volumes = dir.join("volumes");
        fs::write(volumes.join("csi-1.json"), "{}").unwrap();
        fs::write(volumes.join("csi-2.json"), "not json").unwrap();
        fs::write(volumes.join("csi-3.json.tmp"), "partial").unwrap();
        let mut listed: Vec<String> = store
            .list()
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        listed.sort();
        assert_eq!(listed, ["csi-1", "csi-2"]);
        assert!(volumes.join("csi-2.json").exists(), "never deleted");
        assert!(!volumes.join("csi-3.json.tmp").exists());
        let id = VolumeId::parse("csi-4").unwrap();
        store.save(&id, b"{\"a\":1}").unwrap();
        assert_eq!(store.load(&id).unwrap().as_slice(), b"{\"a\":1}");
        store.remove(&id).unwrap();
        store.remove(&id).unwrap();
        assert!(store.load(&id).is_none());
        let _ = fs::remove_dir_all(&dir);
    }
}
