//! Unpublish, restart and adoption against the fakes.

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::fakes::{Core, Pod};
use super::publish::{TEMPLATE, index, publish, seeded};
use crate::refresh::Refresher;
use crate::storage::memory::Fault;
use crate::vault;
use crate::volume::record::{self, Phase};
use crate::volume::{PublishOutcome, VolumeId};

const HOUR: Duration = Duration::from_secs(3600);

async fn unpublish(core: &Core, pod: &Pod) {
    let request = core
        .manager
        .check_unpublish(&pod.volume_id(), &pod.target())
        .unwrap();
    core.manager
        .unpublish_by(request, Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
}

/// An unpublish while a refresh waits on a slow Vault: the pod's view goes
/// at once; the clean-up waits for the refresh, so the token revoked is the
/// refresh's newest and no record is written after the removal.
#[tokio::test(start_paused = true)]
async fn an_unpublish_racing_a_refresh_revokes_the_last_token_and_leaves_no_record() {
    let core = Core::new();
    seeded(&core, "one");
    core.vault.token_ttl(Duration::from_secs(60));
    let pod = Pod::with_template("u1", TEMPLATE);
    publish(&core, &pod).await;
    let id = VolumeId::parse(&pod.volume_id()).unwrap();

    // The token is due for renewal; renewals hang for a while.
    tokio::time::advance(Duration::from_secs(50)).await;
    core.vault.fail_next(
        "renew_self",
        vault::Error::Status {
            operation: "renew_self",
            status: 400,
            message: "not renewable".to_owned(),
        },
    );
    let manager = std::sync::Arc::clone(&core.manager);
    let refresh = tokio::spawn(async move { manager.refresh(id).await });
    tokio::task::yield_now().await;
    unpublish(&core, &pod).await;
    assert!(
        core.roots.roots().is_empty(),
        "the pod's view is gone at once"
    );
    let _ = refresh.await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(core.store.ids().is_empty(), "no record resurrected");
    let tokens = core.vault.tokens();
    assert!(
        tokens
            .values()
            .all(|t| t.revoked || t.expires_at <= Instant::now()),
        "{tokens:?}"
    );
    assert!(core.vault.leases().values().all(|l| l.revoked));
    assert_eq!(core.manager.volume_count(), 0);
}

/// A restarted driver resumes a published volume from its record without
/// asking Vault anything, and goes on refreshing it.
#[tokio::test(start_paused = true)]
async fn a_restart_resumes_from_the_record_without_vault() {
    let core = Core::new();
    seeded(&core, "one");
    let pod = Pod::with_template("u1", TEMPLATE);
    publish(&core, &pod).await;
    let calls = core.vault.calls().len();

    let restarted = core.restarted();
    assert_eq!(restarted.manager.restore().await.unwrap(), 1);
    assert_eq!(core.vault.calls().len(), calls, "{:?}", core.vault.calls());
    assert_eq!(
        publish(&restarted, &pod).await,
        PublishOutcome::Republished,
        "kubelet's next publish finds it managed"
    );
    assert_eq!(core.vault.count("login"), 1);
}

/// A publish that did not finish is undone at restart: its root removed,
/// its record removed, its token revoked.
#[tokio::test(start_paused = true)]
async fn a_restart_undoes_an_unfinished_publish() {
    let core = Core::new();
    seeded(&core, "one");
    let pod = Pod::with_template("u1", TEMPLATE);
    publish(&core, &pod).await;
    // As a crash between the first record and the end would leave it.
    let bytes = core.store.load_bytes(&pod.volume_id()).unwrap();
    let mut recorded = record::decode(&bytes).unwrap();
    recorded.phase = Phase::Publishing;
    core.store.put(&pod.volume_id(), &recorded.encode());

    let restarted = core.restarted();
    assert_eq!(restarted.manager.restore().await.unwrap(), 0);
    assert!(core.roots.roots().is_empty());
    assert!(core.store.ids().is_empty());
    assert!(core.vault.tokens().values().all(|t| t.revoked));
}

/// A volume whose record cannot be read stays mounted; a publish adopting
/// it that is cut short (by a crash, or a failure) never unmounts it, and
/// the tokens it held are revoked only once a publish replaces its files.
#[tokio::test(start_paused = true)]
async fn an_adoption_cut_short_keeps_the_volume_and_every_token_to_revoke() {
    let core = Core::new();
    seeded(&core, "one");
    let pod = Pod::with_template("u1", TEMPLATE);
    publish(&core, &pod).await;
    let old_token = core.vault.newest_token();
    let bytes = core.store.load_bytes(&pod.volume_id()).unwrap();
    let spoiled = String::from_utf8(bytes)
        .unwrap()
        .replace("\"version\":3", "\"version\":99");
    core.store.put(&pod.volume_id(), spoiled.as_bytes());

    // Restart: unreadable, kept as it is.
    let restarted = core.restarted();
    assert_eq!(restarted.manager.restore().await.unwrap(), 0);
    assert_eq!(restarted.roots.roots().len(), 1, "still mounted");

    // Kubelet's publish adopts it, but its reads fail: the volume stays
    // mounted, serving the old files.
    seeded(&restarted, "two");
    restarted.vault.fail_next(
        "read",
        vault::Error::Status {
            operation: "read",
            status: 500,
            message: "internal error".to_owned(),
        },
    );
    let failed = restarted
        .manager
        .publish_by(
            pod.checked(&restarted, HOUR),
            Instant::now() + Duration::from_secs(120),
        )
        .await;
    assert!(failed.is_err());
    assert_eq!(restarted.roots.roots().len(), 1, "still mounted");
    assert_eq!(index(&restarted, &pod), "one v-app", "the old files stay");
    let adopting = record::decode(&restarted.store.load_bytes(&pod.volume_id()).unwrap()).unwrap();
    assert_eq!(adopting.phase, Phase::Adopting);
    assert_eq!(
        adopting.salvaged.len(),
        2,
        "the old token and the failed publish's"
    );
    assert!(!restarted.vault.tokens()[&old_token].revoked, "not yet");

    // A crash now, and another restart: still mounted, still waiting.
    let again = restarted.restarted();
    assert_eq!(again.manager.restore().await.unwrap(), 0);
    assert_eq!(again.roots.roots().len(), 1, "never unmounted");

    // The next publish adopts it, in place, and revokes every old token.
    publish(&again, &pod).await;
    assert_eq!(index(&again, &pod), "two v-app");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tokens = again.vault.tokens();
    let newest = again.vault.newest_token();
    for (token, t) in &tokens {
        assert_eq!(t.revoked, *token != newest, "{token}");
    }
    assert_eq!(again.roots.roots().len(), 1);
    let adopted = record::decode(&again.store.load_bytes(&pod.volume_id()).unwrap()).unwrap();
    assert_eq!(adopted.phase, Phase::Published);
    assert!(adopted.salvaged.is_empty());
}

/// A driver killed while an adopting publish waits for Vault, after its
/// login: the record written then keeps the tokens salvaged from the
/// unreadable record beside the new login's, so the publish that finally
/// adopts the volume revokes them all.
#[tokio::test(start_paused = true)]
async fn a_crash_during_an_adoption_loses_no_token_to_revoke() {
    let core = Core::new();
    seeded(&core, "one");
    let pod = Pod::with_template("u1", TEMPLATE);
    publish(&core, &pod).await;
    let bytes = core.store.load_bytes(&pod.volume_id()).unwrap();
    let spoiled = String::from_utf8(bytes)
        .unwrap()
        .replace("\"version\":3", "\"version\":99");
    core.store.put(&pod.volume_id(), spoiled.as_bytes());
    let restarted = core.restarted();
    assert_eq!(restarted.manager.restore().await.unwrap(), 0);

    // Kubelet's publish adopts it, logs in, and waits for its read.
    restarted.vault.hold_reads(true);
    let reads = restarted.vault.count("read");
    let manager = std::sync::Arc::clone(&restarted.manager);
    let checked = pod.checked(&restarted, HOUR);
    let _adopting = tokio::spawn(async move {
        manager
            .publish_by(checked, Instant::now() + Duration::from_secs(120))
            .await
    });
    while restarted.vault.count("read") == reads {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(restarted.vault.tokens().len(), 2, "the adoption logged in");

    // Killed now: the next run starts from the store as it is.
    let store = crate::volume::record::MemoryStore::default();
    let recorded = restarted.store.load_bytes(&pod.volume_id()).unwrap();
    store.put(&pod.volume_id(), &recorded);
    let vault = restarted.vault.clone();
    let again = Core::over(vault.clone(), store, restarted.roots.clone());
    assert_eq!(again.manager.restore().await.unwrap(), 0);
    assert_eq!(again.roots.roots().len(), 1, "never unmounted");

    vault.hold_reads(false);
    seeded(&again, "two");
    publish(&again, &pod).await;
    assert_eq!(index(&again, &pod), "two v-app");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let newest = vault.newest_token();
    let live: Vec<String> = vault
        .tokens()
        .into_iter()
        .filter(|(token, t)| !t.revoked && *token != newest)
        .map(|(token, _)| token)
        .collect();
    assert!(live.is_empty(), "tokens never revoked: {live:?}");
}

/// An unpublish whose target removal fails keeps the volume managed, for
/// kubelet's retry.
#[tokio::test(start_paused = true)]
async fn an_unpublish_that_cannot_remove_the_target_keeps_the_volume() {
    let core = Core::new();
    seeded(&core, "one");
    let pod = Pod::with_template("u1", TEMPLATE);
    publish(&core, &pod).await;
    core.roots.fail_once(Fault::Remove);
    let request = core
        .manager
        .check_unpublish(&pod.volume_id(), &pod.target())
        .unwrap();
    assert!(
        core.manager
            .unpublish_by(request, Instant::now() + Duration::from_secs(10))
            .await
            .is_err()
    );
    assert_eq!(core.manager.volume_count(), 1);
    unpublish(&core, &pod).await;
    assert_eq!(core.manager.volume_count(), 0);
    assert!(
        core.roots
            .file(Path::new(&pod.target()), "index.html")
            .is_none()
    );
}
