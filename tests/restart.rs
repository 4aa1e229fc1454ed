//! Restarts and upgrades cost Vault nothing: a restarted driver (kill -9,
//! or SIGTERM as in a rolling update) re-renders from the Vault answers it
//! kept, so a KV change renders next to the *same* dynamic credential, with
//! no login, no re-issue and no extra lease. A record it cannot read never
//! breaks the live volume, and records of the previous format are migrated.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{
    CREDS_TEMPLATE, DriverProcess, Harness, INDEX_TEMPLATE, dynamic_vault, expected_index,
    requires_root, wait_for,
};
use vault_double::{DynamicRole, VaultDouble};

const ROLE: (&str, &str) = ("roleName", "example");
const LOGIN: &str = "/v1/auth/kubernetes/login";
const CREDS: &str = "/v1/database/creds/app";
const KV: &str = "/v1/secret/data/myapp/config";
/// Where the driver asks which mount `KV` lies on.
const MOUNT_OF_KV: &str = "/v1/sys/internal/ui/mounts/secret/data/myapp/config";

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// One volume holding a renewable database credential and a KV secret
/// re-read every second (the issue's measurement).
fn attributes() -> [(&'static str, &'static str); 4] {
    [
        ROLE,
        ("template.index.html", INDEX_TEMPLATE),
        ("template.creds", CREDS_TEMPLATE),
        ("staticSecretRefreshInterval", "1s"),
    ]
}

/// A Vault whose credentials live a minute (renewed at ~40 s, after this
/// test is over), so every request after a restart is one that was due.
async fn vault() -> VaultDouble {
    dynamic_vault(
        DynamicRole::new(Duration::from_secs(60), Duration::from_secs(3600)),
        Duration::from_secs(3600),
        Duration::from_secs(7200),
    )
    .await
}

fn live_leases(vault: &VaultDouble) -> usize {
    vault.leases().iter().filter(|l| !l.revoked).count()
}

fn put_password(vault: &VaultDouble, password: &str) {
    vault.kv2_put(
        "secret",
        "myapp/config",
        serde_json::json!({"username": "appuser", "password": password}),
    );
}

/// `vault_csi_unadopted_volumes` on the driver's metrics port.
async fn unadopted(port: u16) -> u64 {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("vault_csi_unadopted_volumes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no vault_csi_unadopted_volumes in {text}"))
}

/// Spoils a record's text.
type Spoil = fn(&str) -> String;

/// kill -9, then SIGTERM: after each restart a KV change renders next to
/// the same credential; the only requests the new driver sends are the
/// KV re-reads that were due; one lease stays live for the volume; the
/// unpublish revokes it.
#[tokio::test]
async fn a_restart_re_renders_from_kept_answers_and_asks_vault_nothing_new() {
    let mut h = Harness::builder().vault(vault().await).spawn(&[]).await;
    let target = h.publish_ok(&attributes()).await;
    let vault = h.vault.clone();
    let creds = read(&target.join("creds"));
    assert!(creds.starts_with("user="), "{creds}");
    let (logins, issued) = (vault.count("POST", LOGIN), vault.count("GET", CREDS));
    assert_eq!((logins, issued, live_leases(&vault)), (1, 1, 1));

    for (round, kill) in [(1, true), (2, false)] {
        if kill {
            h.driver.kill9();
        } else {
            assert!(h.driver.terminate().await.success());
        }
        let password = format!("after-restart-{round}");
        put_password(&vault, &password);
        let mark = vault.requests().len();
        h.respawn(&format!("driver-{round}.log"), &[]).await;
        wait_for(
            "the KV change rendered by the restarted driver",
            Duration::from_secs(10),
            || read(&target.join("index.html")) == expected_index("appuser", &password),
        )
        .await;
        assert_eq!(
            read(&target.join("creds")),
            creds,
            "round {round}: the credential was not re-issued"
        );
        let since: Vec<_> = vault.requests().split_off(mark);
        let unexpected: Vec<String> = since
            .iter()
            // A new process asks about the KV mount once, as the agent
            // does before its first read of a path.
            .filter(|r| !(r.method == "GET" && (r.path == KV || r.path == MOUNT_OF_KV)))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert!(
            unexpected.is_empty(),
            "round {round}: a restart sent more than the due KV re-reads: {unexpected:?}"
        );
        assert_eq!(
            vault.count("POST", LOGIN),
            logins,
            "round {round}: no login"
        );
        assert_eq!(
            vault.count("GET", CREDS),
            issued,
            "round {round}: no re-issue"
        );
        assert_eq!(live_leases(&vault), 1, "round {round}: no extra lease");
    }

    h.unpublish_ok("v").await;
    assert_eq!(live_leases(&vault), 0, "the unpublish revoked the lease");
    let _ = h.driver.terminate().await;
}

/// The device and inode of a path: the same pair is the same mount.
fn mount_identity(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// After an adoption: the old record's token and its lease are revoked
/// when the token could be salvaged, and reported when it could not.
async fn assert_old_token_handled(
    h: &Harness<DriverProcess>,
    old_token: &str,
    old_lease: &str,
    salvageable: bool,
) {
    let vault = &h.vault;
    if salvageable {
        wait_for(
            "the salvaged token revoked",
            Duration::from_secs(10),
            || vault.token(old_token).is_some_and(|t| t.revoked),
        )
        .await;
        assert!(
            vault.lease(old_lease).is_some_and(|l| l.revoked),
            "and the lease it created with it"
        );
    } else {
        assert!(
            h.driver.logs().contains("could not be salvaged"),
            "an unsalvageable token is reported"
        );
    }
}

/// A record the driver cannot read (damaged, or a format it does not
/// know) never breaks the live volume: the mount stays and keeps serving,
/// kubelet's next publish adopts it in place (the same mount, updated
/// through the writable view, so a running container sees the new files),
/// and the token the old record held is revoked when it can be salvaged.
#[tokio::test]
async fn an_unreadable_record_keeps_the_volume_and_its_next_publish_adopts_it() {
    if !requires_root("the volume's mount kept, and adopted in place, across the restart") {
        return;
    }
    // (how the record is spoiled, whether its token can be salvaged)
    let cases: [(Spoil, bool, &str); 3] = [
        (
            |text| text.replace(r#""version":3"#, r#""version":99"#),
            true,
            "cannot be read",
        ),
        (
            |text| text[..text.len() / 2].to_owned(),
            false,
            "cannot be read",
        ),
        // Readable, but its templates no longer compile (as a stricter
        // release might find): the volume cannot be resumed from it.
        (
            |text| text.replace("<p>Some secrets:</p>", "{{#if}}"),
            true,
            "Could not resume a volume from its record",
        ),
    ];
    for (spoil, salvageable, reported) in cases {
        let mut h = Harness::builder().vault(vault().await).spawn(&[]).await;
        let vault = h.vault.clone();
        let request = h.request("v", &attributes());
        let target = h.send_ok(request.clone()).await;
        let old_token = vault.tokens()[0].client_token.clone();
        let old_lease = vault.leases()[0].lease_id.clone();
        let mount_before = support::mount_options(&target).expect("mounted");
        let inode_before = mount_identity(&target);
        h.driver.kill9();

        let record = h.node.record(&request.volume_id);
        std::fs::write(&record, spoil(&read(&record))).unwrap();
        put_password(&vault, "while-unread");
        let port = support::free_port();
        let metrics_addr = format!("--metrics-addr=127.0.0.1:{port}");
        h.respawn("driver-2.log", &[&metrics_addr]).await;
        wait_for(
            "the unreadable record reported",
            Duration::from_secs(5),
            || h.driver.logs().contains(reported),
        )
        .await;
        assert!(record.exists(), "an unreadable record is never deleted");
        assert_eq!(
            support::mount_options(&target).as_deref(),
            Some(mount_before.as_str()),
            "the volume stays mounted as it was"
        );
        assert_eq!(
            read(&target.join("index.html")),
            expected_index("appuser", "suP3rsec(et!"),
            "and keeps serving its files"
        );

        assert_eq!(unadopted(port).await, 1, "the volume is counted");

        // Kubelet's next publish (a fresh token, as every minute) adopts it.
        h.publish_ok(&attributes()).await;
        assert_eq!(
            read(&target.join("index.html")),
            expected_index("appuser", "while-unread"),
            "the adopted volume has the current files"
        );
        let inode_after = mount_identity(&target);
        assert_eq!(
            inode_before, inode_after,
            "the same mount, not a new one a running container cannot see"
        );
        assert_eq!(
            support::mounts_under(&target).len(),
            1,
            "nothing stacked on the target"
        );
        assert_eq!(unadopted(port).await, 0, "and no longer counted");
        assert_old_token_handled(&h, &old_token, &old_lease, salvageable).await;
        h.unpublish_ok("v").await;
        assert!(h.node.mounts().is_empty(), "{:?}", h.node.mounts());
        // A record too damaged to name its token leaves that token and its
        // lease to end with their TTLs: nothing else can revoke them.
        let orphaned = usize::from(!salvageable);
        assert_eq!(
            live_leases(&vault),
            orphaned,
            "every reachable lease revoked"
        );
        assert!(!record.exists());
        drop(h);
    }
}

/// A record in the previous release's format (`RECORD_VERSION` 1, kept as
/// a fixture) is migrated: the volume is managed again, refresh and
/// unpublish carry on with no new login. Version 1 kept no Vault answers,
/// so the first re-render after the upgrade fetches what the templates
/// read, once.
#[tokio::test]
async fn records_of_the_previous_format_are_migrated_without_a_login() {
    let mut h = Harness::builder().vault(vault().await).spawn(&[]).await;
    let vault = h.vault.clone();
    let attributes = [
        ROLE,
        ("template.index.html", INDEX_TEMPLATE),
        ("staticSecretRefreshInterval", "1s"),
    ];
    let request = h.request("v", &attributes);
    let target = h.send_ok(request.clone()).await;
    h.driver.kill9();

    // The previous release's record of this volume: the fixture, with this
    // run's values in its placeholders.
    let record = h.node.record(&request.volume_id);
    let current: serde_json::Value = serde_json::from_str(&read(&record)).unwrap();
    let fixture = include_str!("fixtures/records/v1.json");
    let field = |pointer: &str| current.pointer(pointer).unwrap().to_string();
    let v1 = fixture
        .replace("\"{{volume_id}}\"", &field("/volume_id"))
        .replace("\"{{target_path}}\"", &field("/target_path"))
        .replace("\"{{vault_addr}}\"", &field("/vault_addr"))
        .replace("\"{{fingerprint}}\"", &field("/fingerprint"))
        .replace("\"{{attributes}}\"", &field("/attributes"))
        .replace("\"{{identity}}\"", &field("/identity"))
        .replace("\"{{token}}\"", &field("/token"))
        .replace("\"{{request}}\"", &field("/secrets/0/request"))
        .replace("\"{{due_ms}}\"", &field("/secrets/0/due_ms"));
    assert!(!v1.contains("\"{{"), "every placeholder filled");
    std::fs::write(&record, v1).unwrap();

    put_password(&vault, "after-upgrade");
    h.respawn("driver-2.log", &[]).await;
    wait_for(
        "the migrated volume refreshed",
        Duration::from_secs(10),
        || read(&target.join("index.html")) == expected_index("appuser", "after-upgrade"),
    )
    .await;
    assert_eq!(
        vault.count("POST", LOGIN),
        1,
        "the recorded token was reused"
    );
    // The record is saved after the files it describes are replaced: wait
    // for it rather than read it the moment the page changes.
    wait_for(
        "the record written back in the current format",
        Duration::from_secs(10),
        || {
            serde_json::from_str::<serde_json::Value>(&read(&record))
                .is_ok_and(|migrated| migrated["version"] == 3)
        },
    )
    .await;
    h.unpublish_ok("v").await;
    assert!(
        vault.tokens().iter().all(|t| t.revoked),
        "the token revoked"
    );
    assert!(!record.exists());
    assert!(h.node.volumes().is_empty(), "{:?}", h.node.volumes());
}
