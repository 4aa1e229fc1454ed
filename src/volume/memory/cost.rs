//! What a volume costs the node's memory, at the kernel's cost: pure
//! functions of what it holds, so the model is table-tested and the sizing
//! in the docs follows from it.

use std::collections::BTreeSet;

use crate::storage::Payload;

/// The page size tmpfs allocates in: even a one-byte file takes a page.
pub const PAGE: u64 = 4096;

/// Kernel memory of one tmpfs inode with its dentry (a file, a directory or
/// a link). Measured: 20,000 directories cost 18.6 MiB, about 975 bytes
/// each; a whole KiB leaves a margin.
pub const INODE_BYTES: u64 = 1024;

/// The driver's own bookkeeping per volume on its heap: the live volume,
/// its map entries, its scheduler entry and its metrics labels. Measured
/// at about 8.8 KiB a volume (BENCHMARKS.md, 1,000 volumes); charged with
/// a margin.
pub const VOLUME_BOOKKEEPING_BYTES: u64 = 12 * 1024;

/// What one `serde_json::Value` node costs when parsed, at most: the
/// 32-byte value plus its share of the vector or map that holds it, which
/// may have grown to twice its length.
pub const PARSED_NODE_BYTES: u64 = 96;

/// Inodes of the atomic writer's bookkeeping per file set: the set's
/// directory and the `..data` link (twice: old and new during an update).
const SET_INODES: u64 = 4;

/// What a volume's files cost: twice their pages (an update holds the old
/// and the new set at once) plus an inode for every file, every directory
/// of the set (twice), every top-level link, and the writer's own.
pub fn files_cost(payload: &Payload) -> u64 {
    let pages: u64 = payload
        .values()
        .map(|file| (file.bytes.expose().len() as u64).div_ceil(PAGE).max(1) * PAGE)
        .sum();
    let mut directories = BTreeSet::new();
    let mut top_level = BTreeSet::new();
    for path in payload.keys() {
        let text = path.as_str();
        top_level.insert(text.split('/').next().unwrap_or(text));
        let mut end = 0;
        while let Some(slash) = text[end..].find('/') {
            end += slash;
            directories.insert(&text[..end]);
            end += 1;
        }
    }
    let inodes =
        2 * (payload.len() as u64 + directories.len() as u64) + top_level.len() as u64 + SET_INODES;
    2 * pages + inodes * INODE_BYTES
}

/// What a record of `bytes` costs on the state directory's tmpfs: its
/// pages and its inode (a second copy exists while it is replaced).
pub fn record_cost(bytes: u64) -> u64 {
    2 * (bytes.div_ceil(PAGE).max(1) * PAGE + INODE_BYTES)
}

/// What the parts of one volume cost the budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VolumeCost {
    /// Its files ([`files_cost`]).
    pub files: u64,
    /// The Vault answers kept for re-rendering.
    pub kept_answers: u64,
    /// Its record ([`record_cost`]).
    pub record: u64,
    /// Its compiled templates.
    pub templates: u64,
    /// Its attributes, as held (request and record).
    pub attributes: u64,
}

impl VolumeCost {
    /// The whole, with the driver's bookkeeping.
    pub fn total(&self) -> u64 {
        self.files
            + self.kept_answers
            + self.record
            + self.templates
            + self.attributes
            + VOLUME_BOOKKEEPING_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::storage::{FileContent, RelativePath};

    fn payload(files: &[(&str, usize)]) -> Payload {
        files
            .iter()
            .map(|(path, len)| {
                (
                    RelativePath::parse(path).unwrap(),
                    FileContent {
                        bytes: Secret::new(vec![b'x'; *len]),
                        mode: 0o444,
                    },
                )
            })
            .collect()
    }

    /// Pages twice, inodes for every file, directory and link.
    #[test]
    fn files_cost_their_pages_twice_and_their_inodes() {
        // (files, cost)
        let table: [(&[(&str, usize)], u64); 4] = [
            // One empty file: a page, the file twice, its link, the set.
            (&[("a", 0)], 2 * PAGE + (2 + 1 + SET_INODES) * INODE_BYTES),
            (
                &[("a", 4096), ("b", 4097)],
                2 * 3 * PAGE + (4 + 2 + SET_INODES) * INODE_BYTES,
            ),
            // Directories count once each, twice for the update.
            (
                &[("d/e/f", 1), ("d/e/g", 1), ("d/h", 1)],
                2 * 3 * PAGE + (2 * (3 + 2) + 1 + SET_INODES) * INODE_BYTES,
            ),
            // A deep path: every level is an inode.
            (
                &[("a/b/c/d/e/f/g/h/i/j", 1)],
                2 * PAGE + (2 * (1 + 9) + 1 + SET_INODES) * INODE_BYTES,
            ),
        ];
        for (files, cost) in table {
            assert_eq!(files_cost(&payload(files)), cost, "{files:?}");
        }
    }

    #[test]
    fn records_cost_their_pages_and_inode_twice() {
        assert_eq!(record_cost(0), 2 * (PAGE + INODE_BYTES));
        assert_eq!(record_cost(4097), 2 * (2 * PAGE + INODE_BYTES));
    }
}
