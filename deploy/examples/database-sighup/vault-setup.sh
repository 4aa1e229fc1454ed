#!/usr/bin/env bash
# The Vault side of the database-sighup example: the database secrets engine
# pointed at a PostgreSQL server, a role issuing short-lived users, a policy
# and the Vault role the pod logs in to. Needs the `vault` CLI with
# VAULT_ADDR and VAULT_TOKEN, the kubernetes auth method configured as in
# deploy/examples/vault-setup.sh, and PG_URL: a connection URL Vault can use
# to create users, e.g. postgresql://{{username}}:{{password}}@db.default.svc:5432/postgres
# with PG_USER and PG_PASSWORD for that account.
set -euo pipefail
: "${VAULT_ADDR:?set VAULT_ADDR}"
: "${PG_URL:?set PG_URL to a connection URL with {{username}} and {{password}}}"
: "${PG_USER:?set PG_USER}" "${PG_PASSWORD:?set PG_PASSWORD}"

vault secrets list -format=json | grep -q '"database/"' || vault secrets enable database
vault write database/config/inventory \
  plugin_name=postgresql-database-plugin \
  allowed_roles=inventory \
  connection_url="$PG_URL" \
  username="$PG_USER" password="$PG_PASSWORD"
vault write database/roles/inventory \
  db_name=inventory \
  creation_statements="CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';" \
  default_ttl=1h max_ttl=24h

vault policy write inventory - <<'POLICY'
path "database/creds/inventory" {
  capabilities = ["read"]
}
POLICY

vault write auth/kubernetes/role/inventory \
  bound_service_account_names=inventory \
  bound_service_account_namespaces=default \
  token_policies=inventory \
  audience=vault \
  ttl=1h
