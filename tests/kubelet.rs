//! What real kubelets do to the driver, beyond the happy path: the
//! variants of NodePublishVolume kubelet really sends (read-only, fsGroup,
//! tokens in `secrets`, the same JWT resent for most of an hour, a reboot,
//! an unpublish of a volume the driver never saw), its deadlines and
//! cancellations at any point, and SIGTERM while Vault is slow.
#![allow(clippy::missing_panics_doc)]

mod support;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::kubelet_wire::{self, PublishVariant};
use support::{
    CREDS_TEMPLATE, Harness, INDEX_TEMPLATE, Pod, assert_walkthrough_page, dynamic_vault,
    is_volume, requires_root, wait_for,
};
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;
use vault_csi_driver::proto::NodePublishVolumeRequest;
use vault_csi_driver::proto::node_client::NodeClient;
use vault_double::{DynamicRole, Role, VaultDouble};

const ROLE: (&str, &str) = ("roleName", "example");
const CREDS: [(&str, &str); 2] = [ROLE, ("template.creds", CREDS_TEMPLATE)];
const INDEX: [(&str, &str); 2] = [ROLE, ("template.index.html", INDEX_TEMPLATE)];

fn creds(target: &Path) -> String {
    std::fs::read_to_string(target.join("creds")).unwrap_or_default()
}

/// Every token and lease issued from the `tokens`-th and `leases`-th on is
/// revoked (explicitly, with its token, or by expiring).
fn all_revoked_since(vault: &VaultDouble, tokens: usize, leases: usize) -> bool {
    vault.tokens()[tokens..].iter().all(|t| t.revoked)
        && vault.leases()[leases..].iter().all(|l| l.revoked)
}

/// Tokens and leases issued since the marks that are still live.
fn live_since(vault: &VaultDouble, tokens: usize, leases: usize) -> (usize, usize) {
    (
        vault.tokens()[tokens..]
            .iter()
            .filter(|t| !t.revoked)
            .count(),
        vault.leases()[leases..]
            .iter()
            .filter(|l| !l.revoked)
            .count(),
    )
}

/// A publish of `request`'s volume with a misspelt attribute: `ABORTED`
/// while another operation on the volume runs, `INVALID_ARGUMENT` once it
/// has ended, and it changes nothing. Waits for the latter.
async fn wait_until_settled(node: &mut NodeClient<Channel>, request: &NodePublishVolumeRequest) {
    // A valid request for the same volume at a target whose pod directory
    // does not exist: `ABORTED` while the volume's operation runs, then
    // refused by the target check (which runs under the volume's guard),
    // touching nothing whether the volume ended published or absent.
    let mut probe = request.clone();
    probe.target_path = probe
        .target_path
        .replacen("/pods/", "/pods/no-such-pod-", 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match node.node_publish_volume(probe.clone()).await {
            Err(status) if status.code() == Code::Aborted => {
                assert!(
                    Instant::now() < deadline,
                    "the cancelled publish never ended"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) if status.code() == Code::InvalidArgument => return,
            other => panic!("unexpected answer to the probe: {other:?}"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Cancel {
    /// The client drops the call after this long (tonic then drops the
    /// driver's handler).
    Drop(Duration),
    /// The client sends this `grpc-timeout`, as kubelet sends its 2 minutes.
    Deadline(Duration),
}

/// Sends `request` and cancels it as `cancel` says. A deadline the client
/// sends must be answered before it passes, by the driver, with
/// `DEADLINE_EXCEEDED`, or with the call's own outcome if it ends first;
/// never cancelled by the caller's gRPC stack.
async fn cancel_publish(
    client: &mut NodeClient<Channel>,
    request: &NodePublishVolumeRequest,
    cancel: Cancel,
) {
    match cancel {
        Cancel::Drop(after) => {
            let _ = tokio::time::timeout(after, client.node_publish_volume(request.clone())).await;
        }
        Cancel::Deadline(after) => {
            let mut call = tonic::Request::new(request.clone());
            call.set_timeout(after);
            let started = Instant::now();
            let answer = client.node_publish_volume(call).await;
            if let Err(status) = answer {
                assert_ne!(
                    status.code(),
                    Code::Cancelled,
                    "{cancel:?}: the driver answers before the caller's deadline: {status:?}"
                );
                assert!(started.elapsed() < after, "{cancel:?}");
            }
        }
    }
}

/// Kubelet's publishes cancelled at many points, against a Vault that
/// takes its time: each volume ends fully published or entirely absent;
/// every token and lease obtained is revoked unless the published volume
/// holds it; kubelet's next publish succeeds, and its unpublish revokes
/// the rest. A deadline the client sends is answered before it passes,
/// with `DEADLINE_EXCEEDED` from the driver rather than a cancellation.
#[tokio::test]
async fn publishes_cancelled_at_any_point_end_published_or_absent_and_leak_nothing() {
    let h = Harness::dynamic(DynamicRole::new(
        Duration::from_secs(600),
        Duration::from_secs(3600),
    ))
    .await;
    let latency = Duration::from_millis(150);
    h.vault.set_latency(latency, latency);
    let ms = Duration::from_millis;
    let cases = [
        Cancel::Drop(ms(0)),
        Cancel::Drop(ms(10)),
        Cancel::Drop(ms(80)),
        Cancel::Drop(ms(170)),
        Cancel::Drop(ms(250)),
        Cancel::Drop(ms(330)),
        Cancel::Drop(ms(450)),
        Cancel::Deadline(ms(100)),
        Cancel::Deadline(ms(200)),
        Cancel::Deadline(ms(300)),
        Cancel::Deadline(ms(1500)),
    ];
    let (mut published, mut absent) = (0, 0);
    for cancel in cases {
        let pod = Pod::walkthrough();
        let request = h.request_for(&pod, "v", &CREDS);
        let target = PathBuf::from(&request.target_path);
        let record = h.node.record(&request.volume_id);
        let (tokens, leases) = (h.vault.tokens().len(), h.vault.leases().len());
        let mut client = h.client().await;

        cancel_publish(&mut client, &request, cancel).await;
        wait_until_settled(&mut client, &request).await;

        if is_volume(&target) {
            published += 1;
            assert!(creds(&target).starts_with("user="), "{cancel:?}");
            let text = std::fs::read_to_string(&record).expect("a published volume's record");
            assert!(text.contains(r#""phase":"published""#), "{cancel:?}");
            wait_for(
                "every token and lease but the volume's own revoked",
                Duration::from_secs(10),
                || live_since(&h.vault, tokens, leases) == (1, 1),
            )
            .await;
        } else {
            absent += 1;
            assert!(!record.exists(), "{cancel:?}: a record without a volume");
            assert!(
                h.node.volumes().is_empty(),
                "{cancel:?}: {:?}",
                h.node.volumes()
            );
            wait_for(
                "every token and lease obtained revoked",
                Duration::from_secs(10),
                || all_revoked_since(&h.vault, tokens, leases),
            )
            .await;
        }

        // Kubelet's retry, then the pod's deletion.
        support::publish_ok(client.clone(), request.clone()).await;
        assert!(creds(&target).starts_with("user="), "{cancel:?}");
        support::unpublish_ok(client, pod.unpublish(&h.node, "v")).await;
        assert!(!is_volume(&target), "{cancel:?}");
        assert!(!record.exists(), "{cancel:?}");
        wait_for(
            "every token and lease revoked after the unpublish",
            Duration::from_secs(10),
            || all_revoked_since(&h.vault, tokens, leases),
        )
        .await;
    }
    eprintln!("cancelled publishes: {published} ended published, {absent} absent");
    assert!(h.node.volumes().is_empty(), "{:?}", h.node.volumes());
    h.vault.set_latency(Duration::ZERO, Duration::ZERO);
    h.stop().await;
}

/// A template reading a secret the role may not read, beside one that
/// creates a lease: the publish logs in, obtains the lease, then fails.
const DENIED_TEMPLATE: &str =
    r#"{{#with (secret "secret/data/elsewhere/config")}}{{data.data.password}}{{/with}}"#;

/// Publishes that fail after the login (one read refused, another
/// holding a lease), cancelled at many points: each ends absent, with the
/// token and the lease it obtained revoked, and kubelet's retry fails the
/// same way without leaking either.
#[tokio::test]
async fn failing_publishes_cancelled_at_any_point_leave_nothing() {
    let h = Harness::dynamic(DynamicRole::new(
        Duration::from_secs(600),
        Duration::from_secs(3600),
    ))
    .await;
    let latency = Duration::from_millis(150);
    h.vault.set_latency(latency, latency);
    let ms = Duration::from_millis;
    let attributes = [
        ROLE,
        ("template.creds", CREDS_TEMPLATE),
        ("template.denied", DENIED_TEMPLATE),
    ];
    for cancel in [
        Cancel::Drop(ms(10)),
        Cancel::Drop(ms(100)),
        Cancel::Drop(ms(170)),
        Cancel::Drop(ms(250)),
        Cancel::Drop(ms(400)),
        Cancel::Deadline(ms(200)),
        Cancel::Deadline(ms(1500)),
    ] {
        let pod = Pod::walkthrough();
        let request = h.request_for(&pod, "v", &attributes);
        let target = PathBuf::from(&request.target_path);
        let record = h.node.record(&request.volume_id);
        let (tokens, leases) = (h.vault.tokens().len(), h.vault.leases().len());
        let mut client = h.client().await;

        cancel_publish(&mut client, &request, cancel).await;
        wait_until_settled(&mut client, &request).await;
        assert!(!is_volume(&target), "{cancel:?}");
        assert!(!record.exists(), "{cancel:?}");
        assert!(
            h.node.volumes().is_empty(),
            "{cancel:?}: {:?}",
            h.node.volumes()
        );
        wait_for(
            "every token and lease obtained revoked",
            Duration::from_secs(10),
            || all_revoked_since(&h.vault, tokens, leases),
        )
        .await;

        let status = client
            .node_publish_volume(request.clone())
            .await
            .expect_err("the read is still refused");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(!record.exists(), "{cancel:?}");
        assert!(h.vault.tokens().len() > tokens, "the retry logged in");
        assert!(h.vault.leases().len() > leases, "and obtained a lease");
        wait_for(
            "the retry's token and lease revoked",
            Duration::from_secs(10),
            || all_revoked_since(&h.vault, tokens, leases),
        )
        .await;
    }
    h.vault.set_latency(Duration::ZERO, Duration::ZERO);
    h.stop().await;
}

/// A Vault that takes every read and never answers: kubelet hears
/// `DEADLINE_EXCEEDED` within `--publish-timeout` (not after 3 attempts of
/// 30 s each), nothing is left mounted or recorded, the token the login
/// obtained is revoked (and the lease the read created with it), and once
/// Vault answers again the next publish succeeds.
#[tokio::test]
async fn a_hung_vault_is_answered_within_the_publish_timeout_and_rolled_back() {
    let h = Harness::builder()
        .vault(
            dynamic_vault(
                DynamicRole::new(Duration::from_secs(600), Duration::from_secs(3600)),
                Duration::from_secs(3600),
                Duration::from_secs(7200),
            )
            .await,
        )
        .config(move |config| {
            config.publish_timeout = Duration::from_secs(3);
        })
        .start()
        .await;
    // Logins (and the mount lookup) answer; the credential's read hangs
    // (the double registers the read, and the lease it creates, before it
    // waits).
    h.vault
        .set_path_latency("database/creds/app", Some(Duration::from_secs(600)));
    let request = h.request("v", &CREDS);
    let target = PathBuf::from(&request.target_path);

    let started = Instant::now();
    let status = h
        .client()
        .await
        .node_publish_volume(request.clone())
        .await
        .expect_err("Vault never answers the read");
    let waited = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("--publish-timeout"), "{status:?}");
    assert!(
        waited < Duration::from_secs(10),
        "answered after {waited:?}"
    );
    assert!(!is_volume(&target));
    assert!(!h.node.record(&request.volume_id).exists());
    assert!(h.node.volumes().is_empty(), "{:?}", h.node.volumes());
    assert_eq!((h.vault.tokens().len(), h.vault.leases().len()), (1, 1));
    wait_for(
        "the token and its lease revoked",
        Duration::from_secs(10),
        || all_revoked_since(&h.vault, 0, 0),
    )
    .await;

    h.vault.set_path_latency("database/creds/app", None);
    support::publish_ok(h.client().await, request).await;
    assert!(creds(&target).starts_with("user="));
    h.stop().await;
}

/// A volume whose Vault token ends soon (the role caps it at 3 s), so the
/// refresh logs in again; the role then grants long tokens (the refresh's
/// token would outlive the test) and logins turn slow, so that refresh is
/// in flight when the pod is deleted.
async fn volume_with_a_refresh_in_flight(h: &Harness, login_latency: Duration) -> PathBuf {
    let target = h.publish_ok(&CREDS).await;
    assert!(creds(&target).starts_with("user="));
    // The first renewal is capped by the 3 s maximum: the driver then
    // plans a new login shortly before the token ends.
    wait_for("the capped renewal", Duration::from_secs(10), || {
        h.vault.count("POST", "/v1/auth/token/renew-self") >= 1
    })
    .await;
    h.vault.add_role(
        "kubernetes",
        Role::new("example", ["vault-auth"], ["default"], ["myapp-kv-ro"])
            .with_audience("vault")
            .with_ttl(Duration::from_secs(3600), Duration::from_secs(7200)),
    );
    h.vault.set_latency(login_latency, Duration::ZERO);
    wait_for(
        "the refresh's login to reach Vault",
        Duration::from_secs(15),
        || h.vault.count("POST", "/v1/auth/kubernetes/login") >= 2,
    )
    .await;
    target
}

async fn short_token_vault() -> VaultDouble {
    dynamic_vault(
        DynamicRole::new(Duration::from_secs(600), Duration::from_secs(3600)),
        Duration::from_secs(3),
        Duration::from_secs(3),
    )
    .await
}

/// Kubelet cancels an unpublish while a refresh of the volume waits on
/// Vault, then retries: the retry answers at once with the target gone,
/// and once the refresh ends, the token it obtained and the lease it
/// fetched are revoked and no record comes back.
#[tokio::test]
async fn an_unpublish_cancelled_during_a_refresh_leaves_no_record_or_live_token() {
    let h = Harness::builder()
        .vault(short_token_vault().await)
        .start()
        .await;
    let target = volume_with_a_refresh_in_flight(&h, Duration::from_secs(3)).await;
    let record = h.node.record(&h.pod.volume_id("v"));

    let mut client = h.client().await;
    let _ = tokio::time::timeout(
        Duration::from_millis(300),
        client.node_unpublish_volume(h.pod.unpublish(&h.node, "v")),
    )
    .await;
    let retried = Instant::now();
    support::unpublish_ok(client, h.pod.unpublish(&h.node, "v")).await;
    assert!(
        retried.elapsed() < Duration::from_secs(2),
        "the retry answered after {:?}",
        retried.elapsed()
    );
    assert!(!is_volume(&target));

    wait_for(
        "the refresh's token and lease revoked and the record gone",
        Duration::from_secs(20),
        || !record.exists() && all_revoked_since(&h.vault, 0, 0) && h.vault.tokens().len() >= 2,
    )
    .await;
    // Nothing brings the record back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!record.exists());
    assert!(h.node.volumes().is_empty(), "{:?}", h.node.volumes());
    h.vault.set_latency(Duration::ZERO, Duration::ZERO);
    h.stop().await;
}

/// An unpublish behind a refresh stuck on a slow Vault answers within its
/// bound, with the target unmounted, so the pod does not stay Terminating;
/// the revocation follows when the refresh ends.
#[tokio::test]
async fn an_unpublish_behind_a_slow_refresh_answers_within_its_bound() {
    let h = Harness::builder()
        .vault(short_token_vault().await)
        .start()
        .await;
    let target = volume_with_a_refresh_in_flight(&h, Duration::from_secs(16)).await;
    let record = h.node.record(&h.pod.volume_id("v"));

    let started = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(13),
        support::unpublish_ok(h.client().await, h.pod.unpublish(&h.node, "v")),
    )
    .await
    .expect("the unpublish answers without waiting for the refresh");
    assert!(!is_volume(&target));
    assert!(!target.exists());
    eprintln!("unpublish answered after {:?}", started.elapsed());

    wait_for(
        "the revocation once the refresh ends",
        Duration::from_secs(25),
        || !record.exists() && all_revoked_since(&h.vault, 0, 0) && h.vault.tokens().len() >= 2,
    )
    .await;
    h.vault.set_latency(Duration::ZERO, Duration::ZERO);
    h.stop().await;
}

/// SIGTERM while a publish waits on a Vault that takes a minute per read:
/// the driver exits within `--shutdown-timeout` (kubelet would SIGKILL it
/// at 30 s), the publish is answered and rolled back, and its token is
/// revoked.
#[tokio::test]
async fn sigterm_during_a_slow_publish_exits_within_the_shutdown_timeout() {
    let mut h = Harness::builder()
        .vault(
            dynamic_vault(
                DynamicRole::new(Duration::from_secs(600), Duration::from_secs(3600)),
                Duration::from_secs(3600),
                Duration::from_secs(7200),
            )
            .await,
        )
        .spawn(&["--shutdown-timeout=4s"])
        .await;
    h.vault
        .set_path_latency("database/creds/app", Some(Duration::from_secs(60)));
    let request = h.request("v", &CREDS);
    let target = PathBuf::from(&request.target_path);
    let record = h.node.record(&request.volume_id);
    let mut client = h.client().await;
    let call = tokio::spawn(async move { client.node_publish_volume(request).await });
    wait_for("the read to reach Vault", Duration::from_secs(10), || {
        h.vault.count("*", "/v1/database/creds/app") >= 1
    })
    .await;

    let started = Instant::now();
    let status = h.driver.terminate().await;
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(10), "exited after {took:?}");
    let answer = call.await.unwrap();
    assert!(answer.is_err(), "{answer:?}");
    assert!(!is_volume(&target));
    assert!(!record.exists());
    wait_for("the token revoked", Duration::from_secs(5), || {
        all_revoked_since(&h.vault, 0, 0)
    })
    .await;
}

/// NodePublishVolume for the walkthrough's pod with `variant`.
fn variant_request(h: &Harness, variant: &PublishVariant) -> NodePublishVolumeRequest {
    kubelet_wire::publish_request_variant(
        h.pod.info(),
        "v",
        &h.pod.target(&h.node, "v"),
        h.pod.tokens_json(&h.vault, &["vault"]),
        &INDEX,
        variant,
    )
}

/// `readOnly: true` on the pod's volume: kubelet sets `readonly`.
#[tokio::test]
async fn a_read_only_volume_is_published() {
    if !requires_root("the read-only mount") {
        return;
    }
    let h = Harness::walkthrough().await;
    let variant = PublishVariant {
        readonly: true,
        ..PublishVariant::default()
    };
    let target = h.send_ok(variant_request(&h, &variant)).await;
    assert_walkthrough_page(&target);
    let options = support::mount_options(&target).unwrap();
    assert!(options.split(',').any(|o| o == "ro"), "{options}");
    h.unpublish_ok("v").await;
    assert!(!is_volume(&target));
    h.stop().await;
}

/// A pod with `fsGroup` and a read-only volume: kubelet passes
/// `volume_mount_group` with `readonly`, and the files belong to the group.
#[tokio::test]
async fn a_read_only_volume_with_an_fs_group_is_owned_by_the_group() {
    if !requires_root("files chowned to the pod's fsGroup (CAP_CHOWN)") {
        return;
    }
    let h = Harness::walkthrough().await;
    let variant = PublishVariant {
        readonly: true,
        volume_mount_group: "4321".to_owned(),
        ..PublishVariant::default()
    };
    let target = h.send_ok(variant_request(&h, &variant)).await;
    assert_walkthrough_page(&target);
    assert_eq!(
        std::fs::metadata(target.join("index.html")).unwrap().gid(),
        4321
    );
    assert_eq!(std::fs::metadata(&target).unwrap().gid(), 4321);
    // Kubelet's republish sends the same again.
    h.send_ok(variant_request(&h, &variant)).await;
    h.unpublish_ok("v").await;
    h.stop().await;
}

/// `serviceAccountTokenInSecrets: true` (Kubernetes 1.35+): the tokens are
/// in `secrets` only, and they are used.
#[tokio::test]
async fn tokens_in_secrets_only_are_used() {
    let h = Harness::walkthrough().await;
    let variant = PublishVariant {
        tokens_in_secrets: true,
        ..PublishVariant::default()
    };
    let request = variant_request(&h, &variant);
    assert!(
        !request
            .volume_context
            .contains_key(kubelet_wire::TOKENS_KEY)
    );
    let target = support::publish_ok(h.client().await, request.clone()).await;
    assert_walkthrough_page(&target);
    support::publish_ok(h.client().await, request).await;
    assert_eq!(h.vault.count("POST", "/v1/auth/kubernetes/login"), 1);
    h.unpublish_ok("v").await;
    h.stop().await;
}

/// Kubelet reuses a service-account token until 80 % of its life: with
/// the default hour, the same JWT comes back on every republish (about
/// once a minute) for 48 minutes. Each republish is answered without a
/// new Vault login.
#[tokio::test]
async fn the_same_jwt_resent_on_every_republish_logs_in_once() {
    let h = Harness::walkthrough().await;
    let request = h.request("v", &INDEX);
    let target = support::publish_ok(h.client().await, request.clone()).await;
    let mut client = h.client().await;
    for _minute in 0..48 {
        client
            .node_publish_volume(request.clone())
            .await
            .expect("a republish with the same token");
    }
    assert_walkthrough_page(&target);
    assert_eq!(
        h.vault.count("POST", "/v1/auth/kubernetes/login"),
        1,
        "one login for 48 republishes of the same JWT"
    );
    assert_eq!(
        h.vault.tokens().iter().filter(|t| !t.revoked).count(),
        1,
        "one live token"
    );
    support::unpublish_ok(client, h.pod.unpublish(&h.node, "v")).await;
    h.stop().await;
}

/// After a reboot `/run` is empty (no driver state), nothing is mounted,
/// and the target kubelet's earlier publish created is still there, empty:
/// kubelet's publish of the reconstructed volume succeeds.
#[tokio::test]
async fn after_a_reboot_a_publish_onto_the_old_empty_target_succeeds() {
    let builder = Harness::builder();
    let pod = Pod::walkthrough();
    let target =
        kubelet_wire::target_after_reboot(&builder.node().kubelet_dir(), &pod.uid, "v").unwrap();
    assert!(target.is_dir() && !is_volume(&target));
    let h = builder.start().await;
    h.send_ok(h.request_for(&pod, "v", &INDEX)).await;
    assert!(is_volume(&target));
    assert_walkthrough_page(&target);
    h.unpublish_pod_ok(&pod, "v").await;
    assert!(!target.exists());
    h.stop().await;
}

/// After a kubelet restart, a volume of a deleted pod is reconstructed and
/// unpublished: its target is not mounted and the driver never saw its id.
/// The answer is OK and the empty target is gone, as kubelet expects.
#[tokio::test]
async fn an_unpublish_of_an_unknown_unmounted_volume_succeeds() {
    let h = Harness::walkthrough().await;
    let target = kubelet_wire::target_after_reboot(&h.node.kubelet_dir(), &h.pod.uid, "v").unwrap();
    h.unpublish_ok("v").await;
    assert!(!target.exists());
    // And again, with the target already gone.
    h.unpublish_ok("v").await;
    assert_eq!(h.vault.count("*", "/v1/"), 0, "nothing to revoke");
    h.stop().await;
}
