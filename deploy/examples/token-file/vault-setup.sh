#!/usr/bin/env bash
# The Vault side of the token-file example: the token the pod gets may read
# the reporter's secrets, which the app reads with it itself. Needs the
# `vault` CLI with VAULT_ADDR and VAULT_TOKEN, and the kubernetes auth
# method configured as in deploy/examples/vault-setup.sh.
set -euo pipefail
: "${VAULT_ADDR:?set VAULT_ADDR}"

vault secrets list -format=json | grep -q '"secret/"' || vault secrets enable -path=secret kv-v2
vault kv put secret/reporter/config report_path=daily
vault kv put secret/reporter/daily rows=42

vault policy write reporter - <<'POLICY'
path "secret/data/reporter/*" {
  capabilities = ["read"]
}
POLICY

# The token is renewed by the driver: keep Vault's default policy on the
# role (renew-self, revoke-self), as every role here does.
vault write auth/kubernetes/role/reporter \
  bound_service_account_names=reporter \
  bound_service_account_namespaces=default \
  token_policies=reporter \
  audience=vault \
  ttl=1h
