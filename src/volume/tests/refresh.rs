//! Refreshes against the fakes, under paused time, with the scheduler
//! running: leases renewed in place then replaced, tokens renewed then
//! replaced, a token an operator revoked, an outage longer than a lease,
//! and batch tokens.

use std::time::Duration;

use tokio::time::Instant;

use super::fakes::{Core, Pod};
use super::publish::{TEMPLATE, index, publish, seeded};
use crate::vault;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A database lease is renewed in place at about two thirds of its life,
/// with the same lease id, until its max TTL caps a renewal; then a new
/// credential is fetched before the old one ends.
#[tokio::test(start_paused = true)]
async fn a_lease_is_renewed_in_place_until_capped_then_replaced() {
    let mut core = Core::new();
    seeded(&core, "one");
    core.vault.put(
        "database/creds/app",
        serde_json::json!({ "username": "v-app", "password": "p" }),
        Some((600, 1000)),
    );
    core.run_scheduler();
    let pod = Pod::with_template("u1", TEMPLATE);
    publish(&core, &pod).await;
    let first: Vec<String> = core.vault.leases().into_keys().collect();
    assert_eq!(first.len(), 1);

    tokio::time::sleep(secs(450)).await;
    assert_eq!(
        core.vault.count("renew_lease"),
        1,
        "{:?}",
        core.vault.calls()
    );
    assert_eq!(core.vault.leases().len(), 1, "renewed in place");

    // The second renewal is capped at the max TTL (1000 s): the credential
    // is replaced before it ends.
    tokio::time::sleep(secs(600)).await;
    let leases = core.vault.leases();
    assert_eq!(
        leases.len(),
        2,
        "replaced once capped: {:?}",
        core.vault.calls()
    );
    let old = &leases[&first[0]];
    assert!(
        core.vault
            .calls()
            .iter()
            .any(|c| c.starts_with("read database/creds/app")),
        "fetched again"
    );
    assert!(
        old.max_at > Instant::now() - secs(600),
        "before the old one ended"
    );
}

/// A token is renewed until a renewal comes back capped; it is then
/// replaced by a login before it dies, and the leases it owned with it.
#[tokio::test(start_paused = true)]
async fn a_token_is_renewed_then_replaced_before_it_ends() {
    let mut core = Core::new();
    seeded(&core, "one");
    core.vault.token_ttl(secs(300));
    core.run_scheduler();
    let pod = Pod::with_template("u1", TEMPLATE);
    publish(&core, &pod).await;
    tokio::time::sleep(secs(250)).await;
    assert!(
        core.vault.count("renew_self") >= 1,
        "{:?}",
        core.vault.calls()
    );
    core.vault.fail_next(
        "renew_self",
        vault::Error::Status {
            operation: "renew_self",
            status: 500,
            message: "past the max TTL".to_owned(),
        },
    );
    tokio::time::sleep(secs(300)).await;
    assert!(core.vault.count("login") >= 2, "{:?}", core.vault.calls());
    let newest = core.vault.newest_token();
    let leases = core.vault.leases();
    assert!(
        leases.values().any(|l| l.token == newest && !l.revoked),
        "the lease was fetched again under the new token"
    );
}

/// An operator revokes the volume's token: the next refused request makes
/// the driver check the token, log in again at once and fetch what died
/// with the old token, well before the token's scheduled renewal.
#[tokio::test(start_paused = true)]
async fn a_revoked_token_is_replaced_at_the_next_refusal() {
    let mut core = Core::new();
    seeded(&core, "one");
    core.vault.token_ttl(secs(24 * 3600));
    core.run_scheduler();
    let pod = Pod::with_template("u1", TEMPLATE);
    publish(&core, &pod).await;
    let old = core.vault.newest_token();
    core.vault.revoke(&old);
    seeded(&core, "two");
    // The KV secret is re-read every 300 s (the default interval).
    tokio::time::sleep(secs(330)).await;
    assert_eq!(
        core.vault.count("lookup_self"),
        1,
        "{:?}",
        core.vault.calls()
    );
    assert_eq!(core.vault.count("login"), 2, "one new login, at once");
    assert_eq!(index(&core, &pod), "two v-app");
    let newest = core.vault.newest_token();
    assert_ne!(newest, old);
    assert!(
        core.vault
            .leases()
            .values()
            .any(|l| l.token == newest && !l.revoked),
        "the credential the revocation killed was replaced"
    );
}

/// A 403 from a policy (the token is fine) does not lead to logins: the
/// token is checked at most every 30 s.
#[tokio::test(start_paused = true)]
async fn a_policy_refusal_costs_a_token_check_not_a_login() {
    let mut core = Core::new();
    seeded(&core, "one");
    core.run_scheduler();
    let pod = Pod::with_template("u1", TEMPLATE);
    publish(&core, &pod).await;
    for _ in 0..20 {
        core.vault.fail_next(
            "read",
            vault::Error::Status {
                operation: "read",
                status: 403,
                message: "permission denied".to_owned(),
            },
        );
    }
    tokio::time::sleep(secs(600)).await;
    assert_eq!(core.vault.count("login"), 1, "{:?}", core.vault.calls());
    assert!(core.vault.count("lookup_self") >= 1);
}

/// Vault is down for longer than a lease: while the file holds the dead
/// credential the volume is degraded, and once Vault answers the
/// credential is replaced at once, not when its backoff runs out.
#[tokio::test(start_paused = true)]
async fn after_an_outage_an_ended_lease_is_replaced_as_soon_as_vault_answers() {
    let mut core = Core::new();
    seeded(&core, "one");
    core.vault.put(
        "database/creds/app",
        serde_json::json!({ "username": "v-app", "password": "p" }),
        Some((60, 3600)),
    );
    core.run_scheduler();
    let pod = Pod::with_template("u1", TEMPLATE);
    publish(&core, &pod).await;
    core.vault.set_down(true);
    // Several failed renewals; the lease ends at 60 s.
    tokio::time::sleep(secs(200)).await;
    assert!(
        core.vault.count("renew_lease") >= 2,
        "{:?}",
        core.vault.calls()
    );
    assert!(
        core.manager
            .metrics
            .encode()
            .contains("vault_csi_degraded_volumes 1")
    );
    let reads_before = core.vault.count("read");
    core.vault.set_down(false);
    // The outage watch probes every second; the refresh follows at once.
    tokio::time::sleep(secs(3)).await;
    assert!(
        core.vault.count("read") > reads_before,
        "the credential was fetched as soon as Vault answered: {:?}",
        core.vault.calls()
    );
    let live = core
        .vault
        .leases()
        .values()
        .filter(|l| !l.revoked && l.expires_at > Instant::now())
        .count();
    assert_eq!(live, 1);
    tokio::time::sleep(secs(1)).await;
    assert!(
        core.manager
            .metrics
            .encode()
            .contains("vault_csi_degraded_volumes 0")
    );
}

/// A batch token cannot be revoked: unpublish revokes its leases one by
/// one instead.
#[tokio::test(start_paused = true)]
async fn a_batch_tokens_leases_are_revoked_one_by_one() {
    let core = Core::new();
    seeded(&core, "one");
    core.vault.batch_tokens();
    let pod = Pod::with_template("u1", TEMPLATE);
    publish(&core, &pod).await;
    let request = core
        .manager
        .check_unpublish(&pod.volume_id(), &pod.target())
        .unwrap();
    core.manager
        .unpublish_by(request, Instant::now() + secs(10))
        .await
        .unwrap();
    assert_eq!(
        core.vault.count("revoke_self"),
        0,
        "{:?}",
        core.vault.calls()
    );
    assert_eq!(core.vault.count("revoke_lease"), 1);
    assert!(core.vault.leases().values().all(|l| l.revoked));
}

/// A login answered with no TTL (`lease_duration: 0`) is planned as a
/// five-minute token: the driver does not log in again in a loop.
#[tokio::test(start_paused = true)]
async fn a_token_without_a_ttl_is_not_replaced_in_a_loop() {
    let mut core = Core::new();
    seeded(&core, "one");
    core.vault.token_ttl(Duration::ZERO);
    core.run_scheduler();
    let pod = Pod::with_template("u1", TEMPLATE);
    publish(&core, &pod).await;
    tokio::time::sleep(secs(150)).await;
    assert_eq!(core.vault.count("login"), 1, "{:?}", core.vault.calls());
}

/// A certificate already past its NotAfter on arrival (a skewed clock) is
/// asked for again after 10 to 20 s, not in a loop.
#[tokio::test(start_paused = true)]
async fn an_expired_certificate_is_not_fetched_again_in_a_loop() {
    let mut core = Core::new();
    core.vault.put_certificate("pki/cert/web", 1_000_000);
    core.run_scheduler();
    let pod = Pod::with_template(
        "u1",
        r#"{{#with (secret "pki/cert/web")}}{{data.certificate}}{{/with}}"#,
    );
    publish(&core, &pod).await;
    tokio::time::sleep(secs(9)).await;
    assert_eq!(core.vault.count("read"), 1, "{:?}", core.vault.calls());
    tokio::time::sleep(secs(60)).await;
    assert!(core.vault.count("read") <= 7, "{:?}", core.vault.calls());
}

/// `refresh: "false"` renders once and never again (the agent's
/// init-container mode): no re-read, no renewal, no login.
#[tokio::test(start_paused = true)]
async fn a_volume_that_does_not_refresh_is_rendered_once() {
    let mut core = Core::new();
    seeded(&core, "one");
    core.vault.token_ttl(secs(60));
    core.run_scheduler();
    let pod = Pod::with_template("u1", TEMPLATE).attribute("refresh", "false");
    publish(&core, &pod).await;
    seeded(&core, "two");
    tokio::time::sleep(secs(3600)).await;
    assert_eq!(index(&core, &pod), "one v-app");
    assert_eq!(core.vault.count("read"), 2, "{:?}", core.vault.calls());
    assert_eq!(core.vault.count("renew_self"), 0);
    assert_eq!(core.vault.count("renew_lease"), 0);
    assert_eq!(core.vault.count("login"), 1);
}
