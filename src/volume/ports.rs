//! The volume core's ports: what it needs from the world, as traits, so
//! the same core runs against Vault, the state directory and tmpfs mounts
//! in production, and against in-memory fakes in its unit tests (under
//! paused time). They are injected where the manager is built
//! ([`super::Ports`]), never chosen inside it.
//!
//! | port | production | tests |
//! |---|---|---|
//! | [`SecretSource`] | [`GovernedVault`] (HTTP, the node's budget) | a scripted fake |
//! | [`RecordStore`] | [`super::record::FileStore`] (`--state-dir`) | [`super::record::MemoryStore`] |
//! | [`crate::storage::VolumeRoots`] | tmpfs mounts, or plain directories | [`crate::storage::memory::MemoryRoots`] |

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;
use zeroize::Zeroizing;

use super::{Error, VolumeId};
use crate::secret::Secret;
use crate::vault::{
    self, AuthToken, BodyMeter, Caller, Endpoint, GovernedVault, LeaseId, Renewal, SecretRequest,
    SecretResponse,
};

/// A boxed future, so the ports can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a volume's secrets come from: Vault, as the pod. Every request
/// names the volume's Vault ([`Endpoint`]) and who it is for ([`Caller`]).
pub trait SecretSource: Send + Sync + std::fmt::Debug {
    /// Logs in as the pod with its service-account token.
    fn login<'a>(
        &'a self,
        at: &'a Endpoint,
        caller: Caller<'a>,
        mount: &'a str,
        role: &'a str,
        jwt: &'a Secret<String>,
    ) -> BoxFuture<'a, Result<AuthToken, vault::Error>>;

    /// Reads or writes one `secret` call, charging the answer to `meter`
    /// as it is read.
    fn fetch<'a>(
        &'a self,
        at: &'a Endpoint,
        caller: Caller<'a>,
        token: &'a Secret<String>,
        request: &'a SecretRequest,
        meter: &'a dyn BodyMeter,
    ) -> BoxFuture<'a, Result<SecretResponse, vault::Error>>;

    /// Renews a lease in place.
    fn renew_lease<'a>(
        &'a self,
        at: &'a Endpoint,
        caller: Caller<'a>,
        token: &'a Secret<String>,
        lease: &'a LeaseId,
        increment: Duration,
    ) -> BoxFuture<'a, Result<Renewal, vault::Error>>;

    /// Renews the Vault token.
    fn renew_token<'a>(
        &'a self,
        at: &'a Endpoint,
        caller: Caller<'a>,
        token: &'a Secret<String>,
        increment: Duration,
    ) -> BoxFuture<'a, Result<AuthToken, vault::Error>>;

    /// Whether Vault still honours the token (after a refusal).
    fn token_is_valid<'a>(
        &'a self,
        at: &'a Endpoint,
        caller: Caller<'a>,
        token: &'a Secret<String>,
    ) -> BoxFuture<'a, Result<bool, vault::Error>>;

    /// Whether the token may revoke its own leases one by one.
    fn can_revoke_leases<'a>(
        &'a self,
        at: &'a Endpoint,
        caller: Caller<'a>,
        token: &'a Secret<String>,
    ) -> BoxFuture<'a, Result<bool, vault::Error>>;

    /// Revokes the token and its leases, within the revoke timeout.
    fn revoke_token<'a>(
        &'a self,
        at: &'a Endpoint,
        token: &'a Secret<String>,
    ) -> BoxFuture<'a, Result<(), vault::Error>>;

    /// Revokes one lease, within the revoke timeout.
    fn revoke_lease<'a>(
        &'a self,
        at: &'a Endpoint,
        token: &'a Secret<String>,
        lease: &'a LeaseId,
    ) -> BoxFuture<'a, Result<(), vault::Error>>;

    /// Until when cosmetic work is paused because Vault pushed back.
    fn paused_until(&self) -> Option<Instant>;

    /// Resolves once the Vault at `at` answers again after an outage.
    fn answering<'a>(&'a self, at: &'a Endpoint) -> BoxFuture<'a, ()>;
}

impl SecretSource for GovernedVault {
    fn login<'a>(
        &'a self,
        at: &'a Endpoint,
        caller: Caller<'a>,
        mount: &'a str,
        role: &'a str,
        jwt: &'a Secret<String>,
    ) -> BoxFuture<'a, Result<AuthToken, vault::Error>> {
        Box::pin(GovernedVault::login(self, at, caller, mount, role, jwt))
    }

    fn fetch<'a>(
        &'a self,
        at: &'a Endpoint,
        caller: Caller<'a>,
        token: &'a Secret<String>,
        request: &'a SecretRequest,
        meter: &'a dyn BodyMeter,
    ) -> BoxFuture<'a, Result<SecretResponse, vault::Error>> {
        Box::pin(GovernedVault::fetch(
            self, at, caller, token, request, meter,
        ))
    }

    fn renew_lease<'a>(
        &'a self,
        at: &'a Endpoint,
        caller: Caller<'a>,
        token: &'a Secret<String>,
        lease: &'a LeaseId,
        increment: Duration,
    ) -> BoxFuture<'a, Result<Renewal, vault::Error>> {
        Box::pin(GovernedVault::renew_lease(
            self, at, caller, token, lease, increment,
        ))
    }

    fn renew_token<'a>(
        &'a self,
        at: &'a Endpoint,
        caller: Caller<'a>,
        token: &'a Secret<String>,
        increment: Duration,
    ) -> BoxFuture<'a, Result<AuthToken, vault::Error>> {
        Box::pin(GovernedVault::renew_token(
            self, at, caller, token, increment,
        ))
    }

    fn token_is_valid<'a>(
        &'a self,
        at: &'a Endpoint,
        caller: Caller<'a>,
        token: &'a Secret<String>,
    ) -> BoxFuture<'a, Result<bool, vault::Error>> {
        Box::pin(GovernedVault::token_is_valid(self, at, caller, token))
    }

    fn can_revoke_leases<'a>(
        &'a self,
        at: &'a Endpoint,
        caller: Caller<'a>,
        token: &'a Secret<String>,
    ) -> BoxFuture<'a, Result<bool, vault::Error>> {
        Box::pin(GovernedVault::can_revoke_leases(self, at, caller, token))
    }

    fn revoke_token<'a>(
        &'a self,
        at: &'a Endpoint,
        token: &'a Secret<String>,
    ) -> BoxFuture<'a, Result<(), vault::Error>> {
        Box::pin(GovernedVault::revoke_token(self, at, token))
    }

    fn revoke_lease<'a>(
        &'a self,
        at: &'a Endpoint,
        token: &'a Secret<String>,
        lease: &'a LeaseId,
    ) -> BoxFuture<'a, Result<(), vault::Error>> {
        Box::pin(GovernedVault::revoke_lease(self, at, token, lease))
    }

    fn paused_until(&self) -> Option<Instant> {
        GovernedVault::paused_until(self)
    }

    fn answering<'a>(&'a self, at: &'a Endpoint) -> BoxFuture<'a, ()> {
        Box::pin(GovernedVault::answering(self, at))
    }
}

/// Every record of a store: `(volume id, bytes)`.
pub type Listed = Vec<(String, Zeroizing<Vec<u8>>)>;

/// Where volume records are kept across restarts: opaque bytes per volume
/// (the [`super::record`] module owns their format). Writes replace a
/// record atomically: a crash leaves the old one or the new one.
pub trait RecordStore: Send + Sync + std::fmt::Debug {
    /// Writes `bytes` as volume `id`'s record.
    fn save(&self, id: &VolumeId, bytes: &[u8]) -> Result<(), Error>;

    /// Deletes a volume's record; a missing one is fine.
    fn remove(&self, id: &VolumeId) -> Result<(), Error>;

    /// One volume's record, if there is one.
    fn load(&self, id: &VolumeId) -> Option<Zeroizing<Vec<u8>>>;

    /// Every record, by the volume id its name carries.
    fn list(&self) -> Result<Listed, Error>;
}
