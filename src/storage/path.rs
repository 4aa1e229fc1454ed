//! Validation of the relative file paths a volume writes (`template.<path>`
//! and `tokenFile`). Every rule here exists because a path that escapes the
//! volume, collides with the atomic writer's bookkeeping or is ambiguous
//! would let a pod spec write somewhere it must not.

use std::fmt;
use std::path::{Component, Path};

use super::Error;

/// Longest single path element, as on Linux filesystems (`NAME_MAX`).
pub const MAX_ELEMENT_BYTES: usize = 255;
/// Longest whole relative path (`PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// A validated path relative to a volume's root: no absolute paths, no `.`
/// or `..` elements, no element starting with `..` (reserved for the atomic
/// writer's `..data` and timestamped directories), no empty elements, no NUL,
/// and length limits. Two equal strings are the same file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct RelativePath(String);

impl RelativePath {
    /// Checks `raw` against every rule and wraps it.
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidPath {
            path: raw.escape_debug().to_string(),
            reason: reason.to_owned(),
        };
        if raw.is_empty() {
            return Err(invalid("the path is empty"));
        }
        if raw.len() > MAX_PATH_BYTES {
            return Err(invalid("the path is longer than 4096 bytes"));
        }
        if raw.contains('\0') {
            return Err(invalid("the path contains a NUL byte"));
        }
        if raw.starts_with('/') {
            return Err(invalid(
                "the path must be relative to the volume, not absolute",
            ));
        }
        for element in raw.split('/') {
            if element.is_empty() {
                return Err(invalid(
                    "the path has an empty element (`//` or a trailing `/`)",
                ));
            }
            if element == "." || element == ".." {
                return Err(invalid("`.` and `..` elements are not allowed"));
            }
            if element.starts_with("..") {
                return Err(invalid(
                    "names starting with `..` are reserved for the driver's atomic updates",
                ));
            }
            if element.len() > MAX_ELEMENT_BYTES {
                return Err(invalid("a path element is longer than 255 bytes"));
            }
        }
        // Belt and braces: the lexical rules above must already imply this.
        debug_assert!(
            Path::new(raw)
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        );
        Ok(Self(raw.to_owned()))
    }

    /// The path as a string, for joining onto a directory.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first element: the name the atomic writer links at the volume root.
    pub fn first_element(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for RelativePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks that a set of paths can coexist in one volume: no duplicates and no
/// path that is both a file and a directory (`a` and `a/b`).
pub fn check_disjoint<'a>(paths: impl IntoIterator<Item = &'a RelativePath>) -> Result<(), Error> {
    let mut sorted: Vec<&RelativePath> = paths.into_iter().collect();
    sorted.sort();
    for pair in sorted.windows(2) {
        let (a, b) = (pair[0].as_str(), pair[1].as_str());
        if a == b {
            return Err(Error::InvalidPath {
                path: a.to_owned(),
                reason: "the same file is named twice".to_owned(),
            });
        }
        if b.starts_with(a) && b.as_bytes().get(a.len()) == Some(&b'/') {
            return Err(Error::InvalidPath {
                path: b.to_owned(),
                reason: format!("`{a}` is a file, so it cannot also be a directory"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_relative_paths() {
        for ok in [
            "index.html",
            "a/b/c.txt",
            ".hidden",
            "a.b",
            "x..y",
            &"n".repeat(255),
        ] {
            assert!(RelativePath::parse(ok).is_ok(), "{ok} should be accepted");
        }
    }

    #[test]
    fn refuses_every_escaping_or_ambiguous_path() {
        let long_path = vec!["a"; 2049].join("/");
        let long_element = "n".repeat(256);
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("..", "`..`"),
            ("../x", "`..`"),
            ("a/../../x", "`..`"),
            ("a/..", "`..`"),
            ("..data", "reserved"),
            ("..2024_01_01", "reserved"),
            ("a/..b", "reserved"),
            ("a//b", "empty element"),
            ("a/", "empty element"),
            ("./a", "`.`"),
            ("a\0b", "NUL"),
            (&long_element, "255 bytes"),
            (&long_path, "4096 bytes"),
        ];
        for (raw, why) in cases {
            let err = RelativePath::parse(raw).expect_err(raw);
            let text = err.to_string();
            assert!(text.contains(why), "{raw:?}: {text} should mention {why}");
        }
    }

    #[test]
    fn refuses_duplicates_and_file_directory_clashes() {
        let p = |s| RelativePath::parse(s).unwrap();
        assert!(check_disjoint(&[p("a"), p("b"), p("ab/c")]).is_ok());
        assert!(check_disjoint(&[p("a"), p("a")]).is_err());
        assert!(check_disjoint(&[p("a"), p("a/b")]).is_err());
        assert!(check_disjoint(&[p("a/b"), p("a/b/c")]).is_err());
        assert!(check_disjoint(&[p("a/b"), p("a/c")]).is_ok());
    }
}
