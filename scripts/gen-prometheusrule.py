#!/usr/bin/env python3
"""Generates deploy/monitoring/prometheusrule.yaml (a Prometheus Operator
PrometheusRule) from deploy/monitoring/rules.yaml, the one source of the
alerting rules. With --check, fails if the committed file differs (CI).

A rules file's top level is `groups:`, which is exactly a PrometheusRule's
`spec`, so the rules are copied verbatim, indented under `spec:`.
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ROOT / "deploy/monitoring/rules.yaml"
TARGET = ROOT / "deploy/monitoring/prometheusrule.yaml"

HEADER = """\
# GENERATED from rules.yaml by scripts/gen-prometheusrule.py; edit rules.yaml
# and run the script. For the Prometheus Operator: kubectl apply -f this file
# (your Prometheus's ruleSelector may need the label below changed).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: vault-csi-driver
  namespace: vault-csi-driver
  labels:
    app.kubernetes.io/name: vault-csi-driver
spec:
"""


def generate():
    lines = SOURCE.read_text().splitlines()
    # Drop the source's leading comment block; keep everything from `groups:`.
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    body = "".join(("  " + line if line else "") + "\n" for line in lines[start:])
    return HEADER + body


def main():
    text = generate()
    if sys.argv[1:] == ["--check"]:
        if TARGET.read_text() != text:
            print(f"{TARGET.relative_to(ROOT)} is out of date: run python3 scripts/gen-prometheusrule.py")
            return 1
        print(f"{TARGET.relative_to(ROOT)} matches {SOURCE.relative_to(ROOT)}")
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
