#!/usr/bin/env bash
# Configure Vault for the nginx example: the Vault half of the "Vault Agent with
# Kubernetes auth" walkthrough, unchanged except for `audience=vault` on the role.
#
# Needs: the `vault` CLI logged in with a token that may manage mounts, policies
# and auth methods (VAULT_ADDR, VAULT_TOKEN), and `kubectl` pointed at the
# cluster after `kubectl apply -f deploy/examples/vault-auth-serviceaccount.yaml`.
# Safe to run again: every step is idempotent.
#
# Usage:
#   VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN=root bash deploy/examples/vault-setup.sh
# Environment overrides:
#   VAULT_IN_CLUSTER=true  Vault runs as a pod in this cluster (see step 5).
#   KUBE_HOST=https://...  API server URL as reachable FROM VAULT (step 5).
set -euo pipefail

: "${VAULT_ADDR:?set VAULT_ADDR to the Vault server}"
VAULT_IN_CLUSTER="${VAULT_IN_CLUSTER:-false}"

# 1. A KV version 2 secrets engine at secret/. `vault server -dev` already has
#    one; enable it only if the path is free.
if ! vault secrets list -format=json | grep -q '"secret/"'; then
  vault secrets enable -path=secret kv-v2
fi

# 2. The application's secret. With KV v2, `ttl` is ordinary data (kept from
#    the walkthrough); the driver re-reads static secrets every
#    --static-secret-refresh-interval (default 5m) and re-renders on change.
vault kv put secret/myapp/config username='appuser' password='suP3rsec(et!' ttl='30s'

# 3. Read-only policy for it. KV v2 data lives under secret/data/.
vault policy write myapp-kv-ro - <<'POLICY'
path "secret/data/myapp/*" {
  capabilities = ["read", "list"]
}
POLICY

# 4. The Kubernetes auth method.
if ! vault auth list -format=json | grep -q '"kubernetes/"'; then
  vault auth enable kubernetes
fi

# 5. Tell Vault how to verify login JWTs. Vault sends each one to the
#    Kubernetes TokenReview API:
#    - kubernetes_host:    API server URL as reachable from Vault.
#    - kubernetes_ca_cert: CA that signed the API server's certificate.
#    - token_reviewer_jwt: JWT Vault authenticates TokenReview calls with; its
#      service account needs system:auth-delegator (here: vault-auth's
#      long-lived token from the Secret vault-auth-secret).
#    Vault in the cluster: set only kubernetes_host; Vault then uses its own
#    pod's service account token and CA (that account needs the
#    system:auth-delegator binding instead of vault-auth).
#    Issuer validation is off by default since Vault 1.9, so `issuer` is not set.
if [[ "$VAULT_IN_CLUSTER" == "true" ]]; then
  vault write auth/kubernetes/config \
    kubernetes_host="${KUBE_HOST:-https://kubernetes.default.svc}"
else
  KUBE_HOST="${KUBE_HOST:-$(kubectl config view --raw --minify --flatten \
    -o jsonpath='{.clusters[].cluster.server}')}"
  KUBE_CA_CERT="$(kubectl config view --raw --minify --flatten \
    -o jsonpath='{.clusters[].cluster.certificate-authority-data}' | base64 --decode)"
  TOKEN_REVIEW_JWT="$(kubectl get secret vault-auth-secret -n default \
    -o go-template='{{ .data.token }}' | base64 --decode)"
  vault write auth/kubernetes/config \
    token_reviewer_jwt="$TOKEN_REVIEW_JWT" \
    kubernetes_host="$KUBE_HOST" \
    kubernetes_ca_cert="$KUBE_CA_CERT"
fi

# 6. The role the pod logs in to (volumeAttributes.roleName: example).
#    - bound_service_account_names/namespaces: only default/vault-auth may use it.
#    - audience=vault: must match the CSIDriver's tokenRequests audience; Vault
#      rejects tokens minted for any other audience (e.g. the API server's).
#    - token_policies / ttl: what the resulting Vault token may do, and for how
#      long.
vault write auth/kubernetes/role/example \
  bound_service_account_names=vault-auth \
  bound_service_account_namespaces=default \
  token_policies=myapp-kv-ro \
  audience=vault \
  ttl=24h

echo "Vault is configured. Next: kubectl apply -f deploy/examples/nginx-pod.yaml"
