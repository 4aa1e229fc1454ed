# syntax=docker/dockerfile:1
# vault-csi-driver container image.
#
# Build (BuildKit, the default builder since Docker 23):
#   docker build -t vault-csi-driver:dev .
# Then point deploy/ at it, e.g. from an overlay:
#   kustomize edit set image ghcr.io/vault-csi-driver/vault-csi-driver=vault-csi-driver:dev

# The runtime base image; see the runtime stage for pinning it by digest.
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:latest

# ---- build ------------------------------------------------------------------
# Debian 12 (bookworm) to match the runtime image's glibc. No protoc is needed:
# build.rs compiles proto/csi.proto with protox (pure Rust).
FROM rust:1.95-bookworm AS builder
WORKDIR /src
# Only what the build reads. .cargo/ holds the allocator's compiled-in
# settings. go-duration/ and convert/ are workspace members the binary
# links. vault-double/ is a workspace member (and a dev-dependency), so Cargo
# needs its manifest to load the workspace even though the release binary
# does not link it. benches/, examples/ and tests/
# are left out: Cargo.toml's [[bench]] target (benches/driver/main.rs) and
# the other non-bin targets are only read when they are built, and
# `cargo build --bin` builds none of them. If src/ ever include_str!s a file
# outside these paths, or a [[bin]] is added, copy that too.
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo ./.cargo
COPY proto ./proto
COPY src ./src
COPY go-duration ./go-duration
COPY convert ./convert
COPY vault-double ./vault-double
# The caches keep downloaded crates and incremental artifacts between builds;
# the binary is copied out because the target/ cache is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin vault-csi-driver \
 && install -D -m 0755 target/release/vault-csi-driver /out/vault-csi-driver

# ---- runtime ----------------------------------------------------------------
# distroless cc: glibc, libgcc and CA certificates (/etc/ssl/certs, which the
# rustls native-roots verifier reads for Vault's TLS), and nothing else: no
# shell, no package manager, no mount/umount binaries. None are needed; the
# driver mounts and unmounts its tmpfs volumes itself with mount(2)/umount2(2).
# distroless publishes no version tags, only :latest/:debug/:nonroot, so a
# release should pin the digest it was tested with:
#   docker build --build-arg RUNTIME_IMAGE=gcr.io/distroless/cc-debian12@sha256:<digest> .
# (the digest from `crane digest gcr.io/distroless/cc-debian12:latest` or
# `docker buildx imagetools inspect`). No digest is pinned here: it could not
# be looked up and verified where this file was last edited, and an
# unverified one would be worse than the tag.
# tests/node_in_a_box.rs builds a test image with the same content without a
# registry (the binary at the same path, its shared libraries, CA
# certificates, USER 0, the same ENTRYPOINT): keep the two in step.
# hadolint ignore=DL3006,DL3007
FROM ${RUNTIME_IMAGE}
COPY --from=builder /out/vault-csi-driver /usr/local/bin/vault-csi-driver
# Root is required: mount(2) needs CAP_SYS_ADMIN (the DaemonSet runs this
# container privileged, which also permits Bidirectional mount propagation),
# and the driver writes into kubelet's root-owned pod directories.
# hadolint ignore=DL3002
USER 0
ENTRYPOINT ["/usr/local/bin/vault-csi-driver"]
