#!/usr/bin/env bash
# The Vault side of the refresh-false example: it reuses the database role
# of the database-sighup example (run its vault-setup.sh first) and adds the
# policy and the Vault role the Job logs in to. Needs the `vault` CLI with
# VAULT_ADDR and VAULT_TOKEN, and the kubernetes auth method configured as
# in deploy/examples/vault-setup.sh.
set -euo pipefail
: "${VAULT_ADDR:?set VAULT_ADDR}"

vault policy write migrate - <<'POLICY'
path "database/creds/inventory" {
  capabilities = ["read"]
}
POLICY

vault write auth/kubernetes/role/migrate \
  bound_service_account_names=migrate \
  bound_service_account_namespaces=default \
  token_policies=migrate \
  audience=vault \
  ttl=15m
