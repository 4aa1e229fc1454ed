#!/usr/bin/env bash
# Validate the install manifests against the Kubernetes API schemas.
#
# Renders with `kubectl kustomize`:
#   deploy/                     the base install (kubectl apply -k deploy/)
#   deploy/overlays/k8s-1.35    base + CSIDriver.spec.serviceAccountTokenInSecrets
#   deploy/overlays/app-signals base + hostPID (volumes may signal their app)
#   deploy/examples             the nginx walkthrough's objects
#   deploy/examples/*/          each example of docs/volumes/examples.md
# and validates every document in STRICT mode (unknown fields are errors; so is
# a kind the schemas do not know) against each supported Kubernetes minor
# version, using the OpenAPI schemas bundled in the PyPI package
# kubernetes-validate. Needs: bash, kubectl, python3 with pip. The only network
# access is `pip install` of the validator when it is missing.
#
# Usage: bash scripts/validate-manifests.sh
set -euo pipefail

# Pinned so that the schema set (and so the result) only changes on purpose.
# 1.37.0 bundles schemas for Kubernetes 1.25 through 1.37.
KUBERNETES_VALIDATE_VERSION="1.37.0"
# Oldest Kubernetes minor the manifests claim to support. Every schema version
# the validator ships from here up to its newest is checked.
MIN_SUPPORTED="1.30"
# CSIDriver.spec.serviceAccountTokenInSecrets first appears in the 1.35 API
# (KEP-5538, beta in 1.35, GA in 1.36). Older schemas rightly reject it as an
# unknown field, and older API servers do not know it, so the k8s-1.35 overlay
# is only validated against 1.35 and newer. Everything else in that overlay is
# the base, which is validated against every version.
OVERLAY_MIN="1.35"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

if ! command -v kubectl >/dev/null 2>&1; then
  echo "validate-manifests: kubectl is required (for kubectl kustomize)" >&2
  exit 1
fi

installed_version="$(python3 -c 'from kubernetes_validate.version import __version__ as v; print(v)' 2>/dev/null || true)"
if [[ "$installed_version" != "$KUBERNETES_VALIDATE_VERSION" ]]; then
  echo "validate-manifests: installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION from PyPI"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT

kubectl kustomize deploy/ >"$workdir/base.yaml"
kubectl kustomize deploy/overlays/k8s-1.35 >"$workdir/overlay-k8s-1.35.yaml"
kubectl kustomize deploy/overlays/app-signals >"$workdir/overlay-app-signals.yaml"
kubectl kustomize deploy/examples >"$workdir/examples.yaml"
mkdir "$workdir/example"
for example in deploy/examples/*/; do
  name="$(basename "$example")"
  kubectl kustomize "$example" >"$workdir/example/$name.yaml"
done

python3 - "$MIN_SUPPORTED" "$OVERLAY_MIN" "$workdir" <<'PY'
import sys

import yaml
import kubernetes_validate.utils as kv
from packaging.version import Version

min_supported, overlay_min, workdir = sys.argv[1:4]

# Every schema version the validator ships, from the oldest supported minor on.
# (all_versions() lists each version twice: plain and -strict schema dirs.)
versions = sorted({kv.major_minor(v) for v in kv.all_versions()
                   if Version(kv.major_minor(v)) >= Version(min_supported)}, key=Version)
if not versions:
    sys.exit(f"validate-manifests: kubernetes-validate has no schemas >= {min_supported}")
overlay_versions = [v for v in versions if Version(v) >= Version(overlay_min)]
skipped = [v for v in versions if v not in overlay_versions]

# Load each big schema file once instead of once per document.
_cache = {}
_schema_contents = kv.schema_contents
def cached_schema_contents(filename, desired_version):
    if filename not in _cache:
        _cache[filename] = _schema_contents(filename, desired_version)
    return _cache[filename]
kv.schema_contents = cached_schema_contents

def load(name):
    with open(f"{workdir}/{name}") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    if not docs:
        sys.exit(f"validate-manifests: {name} rendered no documents")
    return docs

def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]

base = load("base.yaml")
overlay = load("overlay-k8s-1.35.yaml")
app_signals = load("overlay-app-signals.yaml")
examples = load("examples.yaml")
import os
each_example = {name[:-len(".yaml")]: load(f"example/{name}")
                for name in sorted(os.listdir(f"{workdir}/example"))}

problems = []
def check(cond, msg):
    if not cond:
        problems.append(msg)

# A kustomize patch whose target matches nothing is silently skipped, and a
# schema check cannot see a missing optional field, so assert the key settings.
csidrivers = by_kind(base, "CSIDriver")
check(len(csidrivers) == 1, "base must render exactly one CSIDriver")
if csidrivers:
    spec = csidrivers[0]["spec"]
    check(csidrivers[0]["metadata"]["name"] == "vault.csi.driver", "CSIDriver name")
    check(spec.get("volumeLifecycleModes") == ["Ephemeral"], "volumeLifecycleModes")
    check(spec.get("fsGroupPolicy") == "File", "fsGroupPolicy")
    check(spec.get("requiresRepublish") is True, "requiresRepublish")
    check(spec.get("tokenRequests") == [{"audience": "vault", "expirationSeconds": 3600}],
          "tokenRequests")
    check("serviceAccountTokenInSecrets" not in spec,
          "base must not set serviceAccountTokenInSecrets (pre-1.35 clusters)")
overlay_drivers = by_kind(overlay, "CSIDriver")
check(len(overlay_drivers) == 1
      and overlay_drivers[0]["spec"].get("serviceAccountTokenInSecrets") is True,
      "k8s-1.35 overlay must set CSIDriver.spec.serviceAccountTokenInSecrets: true")
for name, docs, host_pid in (("base", base, None), ("app-signals overlay", app_signals, True)):
    daemonsets = by_kind(docs, "DaemonSet")
    check(len(daemonsets) == 1
          and daemonsets[0]["spec"]["template"]["spec"].get("hostPID") is host_pid,
          f"{name} must render one DaemonSet with hostPID {host_pid}")
for kind in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"):
    check(not by_kind(base, kind), f"base must grant no Kubernetes API access (found a {kind})")
if not each_example:
    problems.append("deploy/examples/*/ rendered no example")
for name, docs in each_example.items():
    volumes = [v for d in docs for v in
               ((d.get("spec", {}).get("template", {}).get("spec") or d.get("spec") or {})
                .get("volumes") or [])
               if (v.get("csi") or {}).get("driver") == "vault.csi.driver"]
    check(volumes, f"deploy/examples/{name} must have a vault.csi.driver volume")
for p in problems:
    print(f"FAIL invariant: {p}")

# The validator must reject an unknown field in strict mode; otherwise a pass
# below would mean nothing.
bogus = {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
         "metadata": {"name": "x"}, "spec": {"attachRequired": False, "bogusField": 1}}
try:
    kv.validate(bogus, versions[-1], strict=True)
    sys.exit("validate-manifests: strict validation accepted an unknown field; refusing to trust it")
except kv.ValidationError:
    pass

print(f"validate-manifests: Kubernetes {', '.join(versions)} (strict schemas)")
if skipped:
    print(f"validate-manifests: k8s-1.35 overlay skipped on {', '.join(skipped)}: "
          f"serviceAccountTokenInSecrets is not in those APIs (base covers the rest)")

passed = failed = 0
def validate(label, docs, vers):
    global passed, failed
    for v in vers:
        for doc in docs:
            name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            try:
                used = kv.validate(doc, v, strict=True)
                if used != v:
                    raise kv.InvalidSchemaError(f"validated against {used}, not {v}")
                passed += 1
            except kv.ValidationError as e:
                failed += 1
                path = ".".join(str(p) for p in e.path)
                print(f"FAIL {label} k8s {v} {name}: {path}: {e.message}")
            except (kv.SchemaNotFoundError, kv.InvalidSchemaError, kv.VersionNotSupportedError) as e:
                failed += 1
                print(f"FAIL {label} k8s {v} {name}: {e.message}")

validate("deploy/", base, versions)
validate("deploy/overlays/k8s-1.35", overlay, overlay_versions)
validate("deploy/overlays/app-signals", app_signals, versions)
validate("deploy/examples", examples, versions)
for name, docs in each_example.items():
    validate(f"deploy/examples/{name}", docs, versions)

failed += len(problems)
print(f"manifests: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
