//! The release image's build (the `Dockerfile`'s builder stage) copies
//! everything the binary's build reads: every workspace member Cargo must
//! load, `.cargo/` (the allocator's compiled-in settings), `build.rs` and
//! `proto/`. No test builds the image (it needs the Rust image from a
//! registry), so this keeps its file list in step with the workspace.

use std::path::Path;

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn the_image_build_copies_what_the_build_reads() {
    let dockerfile = read("Dockerfile");
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words[..words.len().saturating_sub(1)].to_vec()
        })
        .collect();
    let mut needed: Vec<String> = workspace_members(&read("Cargo.toml"))
        .into_iter()
        .filter(|m| m != ".")
        .collect();
    needed.extend(
        [
            ".cargo",
            "build.rs",
            "proto",
            "src",
            "Cargo.toml",
            "Cargo.lock",
        ]
        .map(str::to_owned),
    );
    let missing: Vec<&String> = needed
        .iter()
        .filter(|n| !copied.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the Dockerfile's builder stage does not copy {missing:?} (it copies {copied:?})"
    );
}

/// The workspace's members, from `members = [...]` in Cargo.toml.
fn workspace_members(manifest: &str) -> Vec<String> {
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("Cargo.toml names the workspace's members");
    line.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}
