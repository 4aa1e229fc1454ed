#!/usr/bin/env bash
# The Vault side of the kv-env-file example: the secret, a policy that may
# read it, and the role the pod logs in to. Needs the `vault` CLI with
# VAULT_ADDR and VAULT_TOKEN (a token that may write policies and roles),
# and the kubernetes auth method configured as in deploy/examples/vault-setup.sh.
set -euo pipefail
: "${VAULT_ADDR:?set VAULT_ADDR}"

vault secrets list -format=json | grep -q '"secret/"' || vault secrets enable -path=secret kv-v2
vault kv put secret/orders/config db_host=orders-db.default.svc db_user=orders db_password='s3cr3t-0rders'

vault policy write orders - <<'POLICY'
path "secret/data/orders/config" {
  capabilities = ["read"]
}
POLICY

# audience=vault: the CSIDriver's tokenRequests audience.
vault write auth/kubernetes/role/orders \
  bound_service_account_names=orders \
  bound_service_account_namespaces=default \
  token_policies=orders \
  audience=vault \
  ttl=1h
