//! `template_path`: bytes → `RelativePath::parse`.
//!
//! Never panics. When a path is accepted it is relative, NUL-free, within
//! the length limits, has no empty, `.`, `..` or `..`-prefixed element, and
//! joined onto a volume root it stays strictly inside that root after
//! lexical normalisation. When it is refused, the message holds no control
//! characters (the raw path is escaped before it reaches a log or an event).
#![no_main]

use std::path::{Component, Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use vault_csi_driver::storage::{MAX_ELEMENT_BYTES, MAX_PATH_BYTES, RelativePath};

const ROOT: &str = "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/vol/mount";

/// `a/b/../c` → `a/c`, without touching the filesystem; `..` at the root
/// stays at the root, as the kernel does.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Prefix(p) => out.push(p.as_os_str()),
            Component::RootDir => {
                out.clear();
                out.push("/");
            }
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let path = match RelativePath::parse(raw) {
        Ok(path) => path,
        Err(e) => {
            let text = e.to_string();
            assert!(
                !text.chars().any(char::is_control),
                "the refusal of {raw:?} carries control characters: {text:?}"
            );
            return;
        }
    };
    let s = path.as_str();
    assert_eq!(s, raw, "the accepted path was changed");
    assert!(!s.is_empty(), "accepted an empty path");
    assert!(!s.starts_with('/'), "accepted absolute {s:?}");
    assert!(
        Path::new(s).is_relative(),
        "accepted {s:?}, which is not relative"
    );
    assert!(!s.contains('\0'), "accepted {s:?} with NUL");
    assert!(s.len() <= MAX_PATH_BYTES, "accepted {} bytes", s.len());
    assert_eq!(MAX_PATH_BYTES, 4096);
    assert_eq!(MAX_ELEMENT_BYTES, 255);
    for element in s.split('/') {
        assert!(!element.is_empty(), "accepted {s:?} with an empty element");
        assert!(
            element != "." && element != "..",
            "accepted {s:?} with `.`/`..`"
        );
        assert!(
            !element.starts_with(".."),
            "accepted {s:?} with a `..`-prefixed element"
        );
        assert!(
            element.len() <= MAX_ELEMENT_BYTES,
            "accepted a {}-byte element",
            element.len()
        );
    }
    assert_eq!(path.first_element(), s.split('/').next().unwrap());
    assert!(
        Path::new(s)
            .components()
            .all(|c| matches!(c, Component::Normal(_))),
        "{s:?} has a non-normal component"
    );

    let root = Path::new(ROOT);
    let joined = normalise(&root.join(s));
    assert!(
        joined.starts_with(root) && joined != root,
        "{s:?} joined onto {ROOT} escapes to {}",
        joined.display()
    );
    // Same file, same path: the components survive the join unchanged.
    assert_eq!(
        joined.strip_prefix(root).unwrap(),
        Path::new(s),
        "{s:?} is not the same path once joined"
    );
});
