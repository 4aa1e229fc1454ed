#!/usr/bin/env bash
# The Vault side of the json-config example. Needs the `vault` CLI with
# VAULT_ADDR and VAULT_TOKEN, and the kubernetes auth method configured as
# in deploy/examples/vault-setup.sh.
set -euo pipefail
: "${VAULT_ADDR:?set VAULT_ADDR}"

vault secrets list -format=json | grep -q '"secret/"' || vault secrets enable -path=secret kv-v2
vault kv put secret/billing/config db_user=billing 'db_password=pa"ss\word' api_key=k-123

vault policy write billing - <<'POLICY'
path "secret/data/billing/config" {
  capabilities = ["read"]
}
POLICY

vault write auth/kubernetes/role/billing \
  bound_service_account_names=billing \
  bound_service_account_namespaces=default \
  token_policies=billing \
  audience=vault \
  ttl=1h
