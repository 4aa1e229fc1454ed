//! [`MemoryRoots`]: volume roots held in a map, for the volume core's unit
//! tests. It keeps the seam's contract (a target must be checked and
//! prepared before it holds files, a staged root is the pod's only once
//! sealed, an unchanged payload writes nothing) and can be told to fail,
//! so the core's rollback is tested at every step.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{
    Error, Payload, Prepared, RelativePath, RootKind, RootOptions, VolumeRoots, WriteOptions,
    WriteOutcome,
};
use crate::secret::Secret;

/// One sealed root: its files (bytes and modes).
type Files = BTreeMap<RelativePath, (Vec<u8>, u32)>;

/// What the test can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// [`VolumeRoots::prepare`].
    Prepare,
    /// [`Prepared::write`] and [`VolumeRoots::update`].
    Write,
    /// [`Prepared::seal`].
    Seal,
    /// [`VolumeRoots::remove`].
    Remove,
}

#[derive(Debug, Default)]
struct State {
    sealed: HashMap<PathBuf, Files>,
    faults: Vec<Fault>,
    writes: usize,
}

/// Roots in memory. Clones share their state.
#[derive(Debug, Clone, Default)]
pub struct MemoryRoots {
    state: Arc<Mutex<State>>,
}

fn injected(action: &'static str, path: &Path) -> Error {
    Error::Io {
        action,
        path: path.to_path_buf(),
        source: std::io::Error::other("injected fault"),
    }
}

fn files_of(payload: &Payload) -> Files {
    payload
        .iter()
        .map(|(path, file)| (path.clone(), (file.bytes.expose().clone(), file.mode)))
        .collect()
}

impl MemoryRoots {
    /// Makes the next call of `fault`'s kind fail, once.
    pub fn fail_once(&self, fault: Fault) {
        self.state().faults.push(fault);
    }

    /// The sealed root at `target`'s file `file`, if any.
    pub fn file(&self, target: &Path, file: &str) -> Option<Vec<u8>> {
        let path = RelativePath::parse(file).ok()?;
        self.state()
            .sealed
            .get(target)
            .and_then(|files| files.get(&path))
            .map(|(bytes, _)| bytes.clone())
    }

    /// Targets holding a sealed root.
    pub fn roots(&self) -> Vec<PathBuf> {
        let mut roots: Vec<_> = self.state().sealed.keys().cloned().collect();
        roots.sort();
        roots
    }

    /// Writes that replaced files, all roots together.
    pub fn writes(&self) -> usize {
        self.state().writes
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("memory roots poisoned")
    }

    fn take_fault(&self, fault: Fault) -> bool {
        let mut state = self.state();
        match state.faults.iter().position(|f| *f == fault) {
            Some(i) => {
                state.faults.remove(i);
                true
            }
            None => false,
        }
    }

    fn store(&self, target: &Path, payload: &Payload) -> WriteOutcome {
        let files = files_of(payload);
        let mut state = self.state();
        if state.sealed.get(target) == Some(&files) {
            return WriteOutcome::Unchanged;
        }
        state.writes += 1;
        state.sealed.insert(target.to_path_buf(), files);
        WriteOutcome::Replaced
    }
}

/// A root being prepared in memory.
#[derive(Debug)]
struct Staged {
    roots: MemoryRoots,
    existing: bool,
    files: Option<Payload>,
}

impl Prepared for Staged {
    fn is_existing(&self) -> bool {
        self.existing
    }

    fn write(&mut self, payload: &Payload, options: WriteOptions) -> Result<WriteOutcome, Error> {
        if self.roots.take_fault(Fault::Write) {
            return Err(injected("write", Path::new("staged")));
        }
        check_size(payload, options)?;
        self.files = Some(payload.clone());
        Ok(WriteOutcome::Replaced)
    }

    fn seal(self: Box<Self>, target: &Path) -> Result<super::Leftover, Error> {
        if self.roots.take_fault(Fault::Seal) {
            return Err(injected("seal", target));
        }
        let files = self.files.unwrap_or_default();
        self.roots.store(target, &files);
        Ok(super::Leftover::default())
    }
}

fn check_size(payload: &Payload, options: WriteOptions) -> Result<(), Error> {
    let bytes: u64 = payload
        .values()
        .map(|f| f.bytes.expose().len() as u64)
        .sum();
    if bytes > options.max_bytes {
        return Err(Error::PayloadTooLarge {
            bytes,
            limit: options.max_bytes,
        });
    }
    Ok(())
}

impl VolumeRoots for MemoryRoots {
    fn kind(&self) -> RootKind {
        RootKind::PlainDirectory
    }

    fn open(&self) -> Result<(), Error> {
        Ok(())
    }

    fn close(&self) {}

    fn check_target(&self, _target: &Path) -> Result<(), Error> {
        Ok(())
    }

    fn prepare(
        &self,
        target: &Path,
        _id: &str,
        _options: &RootOptions,
    ) -> Result<Box<dyn Prepared>, Error> {
        if self.take_fault(Fault::Prepare) {
            return Err(injected("prepare", target));
        }
        Ok(Box::new(Staged {
            roots: self.clone(),
            existing: self.state().sealed.contains_key(target),
            files: None,
        }))
    }

    fn update(
        &self,
        target: &Path,
        _id: &str,
        payload: &Payload,
        options: WriteOptions,
    ) -> Result<WriteOutcome, Error> {
        if self.take_fault(Fault::Write) {
            return Err(injected("write", target));
        }
        check_size(payload, options)?;
        Ok(self.store(target, payload))
    }

    fn read(
        &self,
        target: &Path,
        file: &RelativePath,
        _limit: u64,
    ) -> Result<Option<Secret<Vec<u8>>>, Error> {
        Ok(self.file(target, file.as_str()).map(Secret::new))
    }

    fn remove(&self, target: &Path) -> Result<(), Error> {
        if self.take_fault(Fault::Remove) {
            return Err(injected("remove", target));
        }
        self.state().sealed.remove(target);
        Ok(())
    }

    fn is_root(&self, target: &Path) -> Result<bool, Error> {
        Ok(self.state().sealed.contains_key(target))
    }

    fn bytes_used(&self, target: &Path) -> u64 {
        self.state().sealed.get(target).map_or(0, |files| {
            files.values().map(|(bytes, _)| bytes.len() as u64).sum()
        })
    }
}
