#!/usr/bin/env bash
# The Vault side of the vault-namespace example, inside the namespace
# team-a (Vault Enterprise, HCP Vault or OpenBao). Needs the `vault` CLI
# with VAULT_ADDR and VAULT_TOKEN (a token that may manage namespaces).
# The kubernetes auth method inside the namespace needs its own config:
# KUBE_HOST, and outside the cluster the reviewer JWT and CA, as
# deploy/examples/vault-setup.sh writes them for the root namespace.
set -euo pipefail
: "${VAULT_ADDR:?set VAULT_ADDR}"

vault namespace list -format=json 2>/dev/null | grep -q '"team-a/"' || vault namespace create team-a
export VAULT_NAMESPACE=team-a

vault secrets list -format=json | grep -q '"secret/"' || vault secrets enable -path=secret kv-v2
vault kv put secret/ledger/config endpoint=https://ledger.example.com api_token=t-0123

vault auth list -format=json | grep -q '"kubernetes/"' || vault auth enable kubernetes
vault write auth/kubernetes/config kubernetes_host="${KUBE_HOST:-https://kubernetes.default.svc}"

vault policy write ledger - <<'POLICY'
path "secret/data/ledger/config" {
  capabilities = ["read"]
}
POLICY

vault write auth/kubernetes/role/ledger \
  bound_service_account_names=ledger \
  bound_service_account_namespaces=default \
  token_policies=ledger \
  audience=vault \
  ttl=1h
