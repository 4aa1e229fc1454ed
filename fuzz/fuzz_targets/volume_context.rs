//! `volume_context`: kubelet's `volume_context` map → `parse_attributes`.
//!
//! Input format (so seeds stay readable and the fuzzer can splice keys):
//! UTF-8 text, one attribute per line, `key=value` split at the first `=`
//! (a line without `=` is a key with an empty value). In values, `\n`, `\t`,
//! `\0` and `\\` are unescaped, so templates can span lines. A repeated key
//! keeps its last value, as a map would.
//!
//! Never panics; when the attributes are accepted, every file path is a
//! clean relative path, the file count is within the limit, the role is not
//! blank and the Vault address is an allowed one.
#![no_main]

use std::collections::HashMap;
use std::path::{Component, Path};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use url::Url;
use vault_csi_driver::storage::RelativePath;
use vault_csi_driver::volume::{
    MAX_FILES_PER_VOLUME, SpecDefaults, normalise_addr, parse_attributes,
};

const VAULT_ADDR: &str = "http://127.0.0.1:8200";
const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);

fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

fn check_path(what: &str, path: &RelativePath) {
    let s = path.as_str();
    let again = RelativePath::parse(s)
        .unwrap_or_else(|e| panic!("{what} {s:?} was accepted but does not re-parse: {e}"));
    assert_eq!(&again, path, "{what} {s:?} re-parses differently");
    assert!(!s.is_empty(), "{what} is empty");
    assert!(!s.starts_with(".."), "{what} {s:?} starts with `..`");
    assert!(!s.starts_with('/'), "{what} {s:?} is absolute");
    assert!(!s.contains('\0'), "{what} {s:?} contains NUL");
    for element in s.split('/') {
        assert!(
            !element.is_empty() && element != "." && element != "..",
            "{what} {s:?} has an empty, `.` or `..` element"
        );
        assert!(
            !element.starts_with(".."),
            "{what} {s:?} has a `..`-prefixed element"
        );
    }
    assert!(
        Path::new(s)
            .components()
            .all(|c| matches!(c, Component::Normal(_))),
        "{what} {s:?} has a non-normal component"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut context: HashMap<String, String> = HashMap::new();
    for line in text.split('\n') {
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        context.insert(key.to_owned(), unescape(value));
    }

    let addr = Url::parse(VAULT_ADDR).unwrap();
    let defaults = SpecDefaults {
        vault_addr: Some(addr.clone()),
        allowed_vault_addrs: vec![addr],
        static_refresh_interval: DEFAULT_INTERVAL,
    };

    let Ok((spec, _pod)) = parse_attributes(&context, &defaults) else {
        return;
    };

    // The role names a Vault role: never blank.
    assert!(
        !spec.role.trim().is_empty(),
        "accepted a blank roleName {:?}",
        spec.role
    );
    assert_eq!(context.get("roleName"), Some(&spec.role));

    // Files: at least one template, within the limit, all clean and disjoint.
    assert!(
        !spec.templates.is_empty(),
        "accepted a volume without templates"
    );
    let files = spec.templates.len() + usize::from(spec.token_file.is_some());
    assert!(
        files <= MAX_FILES_PER_VOLUME,
        "accepted {files} files; the limit is {MAX_FILES_PER_VOLUME}"
    );
    let mut all: Vec<&RelativePath> = Vec::with_capacity(files);
    for (path, source) in &spec.templates {
        check_path("template path", path);
        // Each template is exactly the `template.<path>` attribute.
        assert_eq!(
            context.get(&format!("template.{}", path.as_str())),
            Some(source),
            "template {path} does not come from its attribute"
        );
        all.push(path);
    }
    if let Some(token_file) = &spec.token_file {
        check_path("tokenFile", token_file);
        all.push(token_file);
    }
    all.sort();
    for pair in all.windows(2) {
        let (a, b) = (pair[0].as_str(), pair[1].as_str());
        assert_ne!(a, b, "the same file {a:?} is named twice");
        assert!(
            !(b.starts_with(a) && b.as_bytes().get(a.len()) == Some(&b'/')),
            "{a:?} is both a file and a directory of {b:?}"
        );
    }

    // Only the allowed Vault address is ever used.
    assert_eq!(
        normalise_addr(&spec.vault_addr),
        normalise_addr(&Url::parse(VAULT_ADDR).unwrap()),
        "accepted a Vault address outside the allowed list: {}",
        spec.vault_addr
    );

    // Permission bits only; a sane refresh interval.
    if let Some(mode) = spec.file_mode {
        assert!(mode <= 0o777, "accepted fileMode {mode:o}");
    }
    assert!(
        spec.static_interval >= Duration::from_secs(1),
        "accepted staticSecretRefreshInterval {:?}",
        spec.static_interval
    );
    assert!(!spec.auth_mount.is_empty(), "accepted an empty auth mount");
    assert!(
        spec.auth_mount
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".."),
        "accepted auth mount {:?}",
        spec.auth_mount
    );
});
