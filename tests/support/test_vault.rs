//! What the harness needs of a Vault: its address and the service-account
//! tokens it trusts. Its own file so the benchmark, which includes the
//! OpenBao fixture by path, shares it.

use vault_double::SaToken;

/// A Vault the harness can point the driver at and sign pods'
/// service-account tokens for: the Vault double, or a real OpenBao
/// (`openbao::OpenBao`) whose Kubernetes auth trusts the same signing key.
pub trait TestVault {
    /// Base URL, what `VAULT_ADDR` would be.
    fn addr(&self) -> String;

    /// A projected service-account token for `claims`, as kubelet's
    /// `TokenRequest` would get it from the API server.
    fn sign_sa_token(&self, claims: &SaToken) -> String;

    /// This kind of Vault seeded with the walkthrough (the harness'
    /// default when a test names none).
    async fn walkthrough() -> Self;
}
