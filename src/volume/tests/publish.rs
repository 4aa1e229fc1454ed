//! Publish against the fakes: what a publish leaves, its rollback at each
//! step, republish, and one volume per target.

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::fakes::{Core, Pod};
use crate::storage::memory::Fault;
use crate::vault;
use crate::volume::record;
use crate::volume::{Error, PublishOutcome};

/// The walkthrough's KV read plus a database credential.
pub const TEMPLATE: &str = r#"{{#with (secret "secret/data/app")}}{{data.data.password}}{{/with}} {{#with (secret "database/creds/app")}}{{data.username}}{{/with}}"#;

const HOUR: Duration = Duration::from_secs(3600);

/// A Vault holding the template's data, with `password` for the KV secret.
pub fn seeded(core: &Core, password: &str) {
    core.vault.put(
        "secret/data/app",
        serde_json::json!({ "data": { "password": password } }),
        None,
    );
    core.vault.put(
        "database/creds/app",
        serde_json::json!({ "username": "v-app", "password": "p" }),
        Some((600, 3600)),
    );
}

/// Publishes `pod`, expecting success.
pub async fn publish(core: &Core, pod: &Pod) -> PublishOutcome {
    core.manager
        .publish_by(
            pod.checked(core, HOUR),
            Instant::now() + Duration::from_secs(120),
        )
        .await
        .expect("the publish succeeds")
}

/// The rendered `index.html` of `pod`.
pub fn index(core: &Core, pod: &Pod) -> String {
    String::from_utf8(
        core.roots
            .file(Path::new(&pod.target()), "index.html")
            .expect("the file exists"),
    )
    .unwrap()
}

/// A publish logs in once, reads each secret once, writes the files,
/// records the volume as published and schedules its refresh.
#[tokio::test(start_paused = true)]
async fn a_publish_logs_in_fetches_renders_writes_and_records() {
    let core = Core::new();
    seeded(&core, "s3cret");
    let pod = Pod::with_template("u1", TEMPLATE);
    assert_eq!(publish(&core, &pod).await, PublishOutcome::Published);
    assert_eq!(index(&core, &pod), "s3cret v-app");
    assert_eq!(core.vault.count("login"), 1);
    assert_eq!(core.vault.count("read"), 2);
    let bytes = core.store.load_bytes(&pod.volume_id()).expect("recorded");
    let recorded = record::decode(&bytes).unwrap();
    assert_eq!(recorded.phase, record::Phase::Published);
    assert_eq!(recorded.secrets.len(), 2, "{recorded:?}");
    assert_eq!(core.manager.volume_count(), 1);
}

/// A republish with kubelet's newer service-account token keeps the
/// volume as it is: no login, no read, no write.
#[tokio::test(start_paused = true)]
async fn a_republish_takes_the_newer_token_and_touches_nothing_else() {
    let core = Core::new();
    seeded(&core, "s3cret");
    let pod = Pod::with_template("u1", TEMPLATE);
    publish(&core, &pod).await;
    let (calls, writes, saves) = (
        core.vault.calls().len(),
        core.roots.writes(),
        core.store.saves(),
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(publish(&core, &pod).await, PublishOutcome::Republished);
    assert_eq!(core.vault.calls().len(), calls, "{:?}", core.vault.calls());
    assert_eq!(core.roots.writes(), writes);
    assert!(core.store.saves() <= saves + 1);
    let saves = core.store.saves();
    publish(&core, &pod).await;
    assert_eq!(
        core.store.saves(),
        saves,
        "a republish that changes nothing writes no record"
    );

    let changed = pod.clone().attribute("fileMode", "0400");
    let error = core
        .manager
        .publish_by(
            changed.checked(&core, HOUR),
            Instant::now() + Duration::from_secs(120),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, Error::AlreadyExists { .. }), "{error}");
}

/// What can fail during a publish, and what each rollback must leave.
#[derive(Debug, Clone, Copy)]
enum Step {
    Login,
    Read,
    Prepare,
    Write,
    Seal,
}

/// A publish that fails at any step leaves nothing: no root, no record,
/// the target free for its own next publish, and the token it obtained
/// revoked (with its leases).
#[tokio::test(start_paused = true)]
async fn a_publish_failing_at_any_step_leaves_nothing_and_revokes_its_token() {
    for step in [
        Step::Login,
        Step::Read,
        Step::Prepare,
        Step::Write,
        Step::Seal,
    ] {
        let core = Core::new();
        seeded(&core, "s3cret");
        let refused = vault::Error::Status {
            operation: "read",
            status: 403,
            message: "permission denied".to_owned(),
        };
        match step {
            Step::Login => core.vault.fail_next("login", refused),
            Step::Read => core.vault.fail_next("read", refused),
            Step::Prepare => core.roots.fail_once(Fault::Prepare),
            Step::Write => core.roots.fail_once(Fault::Write),
            Step::Seal => core.roots.fail_once(Fault::Seal),
        }
        let pod = Pod::with_template("u1", TEMPLATE);
        let result = core
            .manager
            .publish_by(
                pod.checked(&core, HOUR),
                Instant::now() + Duration::from_secs(120),
            )
            .await;
        assert!(result.is_err(), "{step:?}");
        // Revocations run in the background.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(core.roots.roots().is_empty(), "{step:?}: no root");
        assert!(core.store.ids().is_empty(), "{step:?}: no record");
        assert_eq!(core.manager.volume_count(), 0);
        for (token, t) in core.vault.tokens() {
            assert!(t.revoked, "{step:?}: {token} revoked");
        }
        assert!(
            core.vault.leases().values().all(|l| l.revoked),
            "{step:?}: leases revoked"
        );
        // The target is free again: the next publish succeeds.
        publish(&core, &pod).await;
        assert_eq!(index(&core, &pod), "s3cret v-app", "{step:?}");
    }
}

/// A target belongs to the volume that mounted it: another volume id's
/// publish there is refused, and its unpublish leaves the volume alone,
/// whether the volume is managed or known only from a record a restart
/// could not read.
#[tokio::test(start_paused = true)]
async fn a_target_is_bound_to_the_volume_that_mounted_it() {
    let core = Core::new();
    seeded(&core, "s3cret");
    let owner = Pod::with_template("u1", TEMPLATE);
    publish(&core, &owner).await;
    let mut intruder = Pod::with_template(
        "u1",
        "{{#with (secret \"secret/data/app\")}}stolen{{/with}}",
    );
    intruder.volume = "other".to_owned();
    intrude(&core, &owner, &intruder).await;
    assert_eq!(core.manager.volume_count(), 1);

    let bytes = core.store.load_bytes(&owner.volume_id()).unwrap();
    let spoiled = String::from_utf8(bytes)
        .unwrap()
        .replace("\"version\":3", "\"version\":99");
    core.store.put(&owner.volume_id(), spoiled.as_bytes());
    let restarted = core.restarted();
    assert_eq!(restarted.manager.restore().await.unwrap(), 0);
    intrude(&restarted, &owner, &intruder).await;
}

/// `intruder` publishes, then unpublishes, at `owner`'s target: refused,
/// then ignored; the owner's files stay.
async fn intrude(core: &Core, owner: &Pod, intruder: &Pod) {
    let request = intruder.request_at(&owner.target(), HOUR);
    let checked = core.manager.check_publish(&request).unwrap();
    let error = core
        .manager
        .publish_by(checked, Instant::now() + Duration::from_secs(120))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::TargetInUse { .. }), "{error}");
    assert_eq!(index(core, owner), "s3cret v-app", "the owner's files stay");

    let unpublish = core
        .manager
        .check_unpublish(&intruder.volume_id(), &owner.target())
        .unwrap();
    core.manager
        .unpublish_by(unpublish, Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(core.roots.roots().len(), 1, "the owner's root stays");
    assert_eq!(index(core, owner), "s3cret v-app");
}
