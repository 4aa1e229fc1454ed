#!/usr/bin/env bash
# The Vault side of the pki-tls example: a PKI engine with its own root CA
# (for a real deployment, an intermediate signed by your CA), a role that
# issues certificates for names under default.svc, a policy and the Vault
# role the pod logs in to. Needs the `vault` CLI with VAULT_ADDR and
# VAULT_TOKEN, and the kubernetes auth method configured as in
# deploy/examples/vault-setup.sh.
set -euo pipefail
: "${VAULT_ADDR:?set VAULT_ADDR}"

if ! vault secrets list -format=json | grep -q '"pki/"'; then
  vault secrets enable pki
  vault secrets tune -max-lease-ttl=8760h pki
  vault write -field=certificate pki/root/generate/internal \
    common_name="example root" ttl=8760h >/dev/null
fi
vault write pki/roles/web \
  allowed_domains=default.svc allow_subdomains=true max_ttl=72h

# Issuing is a write to pki/issue/<role>.
vault policy write web - <<'POLICY'
path "pki/issue/web" {
  capabilities = ["create", "update"]
}
POLICY

vault write auth/kubernetes/role/web \
  bound_service_account_names=web \
  bound_service_account_namespaces=default \
  token_policies=web \
  audience=vault \
  ttl=1h
