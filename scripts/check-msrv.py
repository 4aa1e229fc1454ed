#!/usr/bin/env python3
"""Checks that the workspace's declared `rust-version` is at least the
`rust-version` of every dependency in Cargo.lock.

Cargo enforces `rust-version` only against the toolchain that runs it, so a
newer CI toolchain would never notice a locked dependency that needs more
than the version the README and Cargo.toml promise. This reads
`cargo metadata --locked` (which carries each package's `rust_version`) for
the platform CI builds on and fails, naming the dependencies, when any needs
a newer Rust than a workspace member declares.
"""

import json
import subprocess
import sys


def version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main():
    host = next(
        line.split(":", 1)[1].strip()
        for line in subprocess.run(
            ["rustc", "-vV"], check=True, capture_output=True, text=True
        ).stdout.splitlines()
        if line.startswith("host:")
    )
    metadata = json.loads(
        subprocess.run(
            [
                "cargo", "metadata", "--locked", "--format-version", "1",
                "--filter-platform", host,
            ],
            check=True, capture_output=True, text=True,
        ).stdout
    )
    members = set(metadata["workspace_members"])
    packages = {p["id"]: p for p in metadata["packages"]}
    # Only what the resolved graph reaches on this platform.
    reached = {node["id"] for node in metadata["resolve"]["nodes"]}
    failed = False
    for member in sorted(members):
        package = packages[member]
        declared = package.get("rust_version")
        if not declared:
            print(f"{package['name']}: no rust-version in its Cargo.toml; declare one")
            failed = True
            continue
        needing_more = sorted(
            (version(p["rust_version"]), p["name"], p["version"])
            for pid, p in packages.items()
            if pid in reached and pid not in members and p.get("rust_version")
            and version(p["rust_version"]) > version(declared)
        )
        if needing_more:
            failed = True
            print(f"{package['name']} declares rust-version {declared}, but locked dependencies need more:")
            for need, name, ver in needing_more:
                print(f"  {name} {ver} needs {'.'.join(map(str, need))}")
    if failed:
        print("Raise rust-version in Cargo.toml (and the README's minimum), or pin the dependencies lower.")
        return 1
    highest = max(
        (version(p["rust_version"]) for pid, p in packages.items()
         if pid in reached and p.get("rust_version")),
        default=(0, 0, 0),
    )
    print(f"rust-version covers every locked dependency (the highest needs {'.'.join(map(str, highest))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
