#!/usr/bin/env bash
# The Vault side of the vault-namespace example, inside the namespace
# team-a (Vault Enterprise, HCP Vault or OpenBao). Needs the `vault` CLI
# with VAULT_ADDR and VAULT_TOKEN (a token that may manage namespaces), and
# `kubectl` pointed at the cluster after
# `kubectl apply -f deploy/examples/vault-auth-serviceaccount.yaml`.
# The kubernetes auth method inside the namespace needs its own config,
# written as deploy/examples/vault-setup.sh writes it for the root namespace:
#   VAULT_IN_CLUSTER=true  Vault runs as a pod in this cluster.
#   KUBE_HOST=https://...  API server URL as reachable from Vault.
#   KUBE_CA_CERT, TOKEN_REVIEW_JWT  the API server's CA (PEM) and the
#                          reviewer's JWT, read with kubectl when unset.
set -euo pipefail
: "${VAULT_ADDR:?set VAULT_ADDR}"

vault namespace list -format=json 2>/dev/null | grep -q '"team-a/"' || vault namespace create team-a
export VAULT_NAMESPACE=team-a

vault secrets list -format=json | grep -q '"secret/"' || vault secrets enable -path=secret kv-v2
vault kv put secret/ledger/config endpoint=https://ledger.example.com api_token=t-0123

vault auth list -format=json | grep -q '"kubernetes/"' || vault auth enable kubernetes
if [[ "${VAULT_IN_CLUSTER:-false}" == "true" ]]; then
  vault write auth/kubernetes/config \
    kubernetes_host="${KUBE_HOST:-https://kubernetes.default.svc}"
else
  KUBE_HOST="${KUBE_HOST:-$(kubectl config view --raw --minify --flatten \
    -o jsonpath='{.clusters[].cluster.server}')}"
  KUBE_CA_CERT="${KUBE_CA_CERT:-$(kubectl config view --raw --minify --flatten \
    -o jsonpath='{.clusters[].cluster.certificate-authority-data}' | base64 --decode)}"
  TOKEN_REVIEW_JWT="${TOKEN_REVIEW_JWT:-$(kubectl get secret vault-auth-secret -n default \
    -o go-template='{{ .data.token }}' | base64 --decode)}"
  vault write auth/kubernetes/config \
    token_reviewer_jwt="$TOKEN_REVIEW_JWT" \
    kubernetes_host="$KUBE_HOST" \
    kubernetes_ca_cert="$KUBE_CA_CERT"
fi

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
