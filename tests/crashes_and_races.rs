//! Crashes and races: `kill -9` of the driver in the middle of publishes
//! and of refreshes, and hundreds of concurrent publishes and unpublishes
//! of the same and of different volumes. Nothing half-published survives,
//! a volume's files always come from one render, and no volume, mount or
//! state file leaks.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use support::{
    CREDS_TEMPLATE, Harness, INDEX_TEMPLATE, Pod, assert_walkthrough_page, dynamic_vault,
    expected_index, is_volume,
};
use tonic::Code;
use vault_double::DynamicRole;

const ROLE: (&str, &str) = ("roleName", "example");

/// 200 concurrent publishes and unpublishes of different and of the same
/// volumes: only OK or `ABORTED`, no deadlock, and afterwards no leaked mount
/// or state file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishes_and_unpublishes_leak_nothing() {
    let h = Harness::walkthrough().await;
    let shared = Pod::walkthrough();
    let attrs = [ROLE, ("template.index.html", INDEX_TEMPLATE)];
    let mut tasks = Vec::new();
    for i in 0..200 {
        let pod = if i % 2 == 0 {
            Pod::new("default", &format!("p{i}"), "vault-auth")
        } else {
            shared.clone()
        };
        let request = h.request_for(&pod, "v", &attrs);
        let unpublish = pod.unpublish(&h.node, "v");
        let mut client = h.client().await;
        tasks.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            for r in [
                client.node_publish_volume(request).await.map(drop),
                client.node_unpublish_volume(unpublish).await.map(drop),
            ] {
                codes.push(r.err().map(|s| s.code()));
            }
            codes
        }));
    }
    let all = tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(tasks))
        .await
        .expect("no deadlock");
    let allowed: HashSet<Option<Code>> = [None, Some(Code::Aborted)].into_iter().collect();
    for codes in all {
        for code in codes.unwrap() {
            assert!(allowed.contains(&code), "unexpected {code:?}");
        }
    }
    // The shared volume may still be published if its last call was a publish.
    h.unpublish_pod_ok(&shared, "v").await;
    assert!(
        h.node.volumes().is_empty(),
        "leaked volumes: {}",
        h.node.volumes().len()
    );
    assert_eq!(h.node.state_files(), 0, "leaked state files");
    h.stop().await;
}

/// `kill -9` at random moments during publishes: after a restart, every
/// volume is either fully published (record, mount, complete files) or
/// entirely absent; nothing half-published survives.
#[tokio::test]
async fn kill_9_mid_publish_leaves_nothing_half_published() {
    let mut h = Harness::builder().spawn(&[]).await;
    let attrs = [
        ROLE,
        ("template.index.html", INDEX_TEMPLATE),
        ("template.b/copy", INDEX_TEMPLATE),
    ];
    let mut pods = Vec::new();
    for round in 0..12u64 {
        if round > 0 {
            h.respawn("driver.log", &[]).await;
        }
        let pod = Pod::new("default", &format!("crash{round}"), "vault-auth");
        let request = h.request_for(&pod, "v", &attrs);
        let mut client = h.client().await;
        let call = tokio::spawn(async move { client.node_publish_volume(request).await });
        tokio::time::sleep(Duration::from_micros(round * 700)).await;
        h.driver.kill9();
        let _ = call.await;
        pods.push(pod);
    }
    h.respawn("driver-final.log", &[]).await;
    let mut published = 0;
    for pod in &pods {
        let target = pod.target(&h.node, "v");
        let record = h.node.record(&pod.volume_id("v"));
        if is_volume(&target) {
            published += 1;
            let text = std::fs::read_to_string(&record).expect("a published volume has its record");
            assert!(
                text.contains("\"phase\":\"published\""),
                "a volume that exists is fully published"
            );
            assert_walkthrough_page(&target);
            assert_eq!(
                std::fs::read_to_string(target.join("b/copy")).unwrap(),
                expected_index("appuser", "suP3rsec(et!")
            );
        } else {
            assert!(
                !record.exists(),
                "a volume that does not exist has no record"
            );
            assert!(!target.join("..data").exists());
        }
        h.unpublish_pod_ok(pod, "v").await;
    }
    eprintln!(
        "{published} of {} volumes survived their crash fully published",
        pods.len()
    );
    assert!(h.node.volumes().is_empty(), "{:?}", h.node.volumes());
    assert_eq!(h.node.state_files(), 0);
}

/// `kill -9` while a volume is being refreshed over and over: after each
/// crash its two files come from the same render (old set or new set, never
/// a mix), and the next driver carries on.
#[tokio::test]
async fn kill_9_mid_refresh_leaves_the_old_or_the_new_set() {
    let creds = DynamicRole {
        default_ttl: Duration::from_secs(1),
        max_ttl: Duration::from_secs(600),
        renewable: false,
    };
    let mut h = Harness::builder()
        .vault(dynamic_vault(creds, Duration::from_secs(3600), Duration::from_secs(7200)).await)
        .spawn(&[])
        .await;
    let attrs = [
        ROLE,
        ("template.creds", CREDS_TEMPLATE),
        ("template.dir/again", CREDS_TEMPLATE),
    ];
    let target = h.publish_ok(&attrs).await;
    for round in 0..8u64 {
        tokio::time::sleep(Duration::from_millis(600 + round * 97)).await;
        h.driver.kill9();
        let a = std::fs::read_to_string(target.join("creds")).unwrap();
        let b = std::fs::read_to_string(target.join("dir/again")).unwrap();
        assert_eq!(a, b, "round {round}: the files come from different renders");
        assert!(a.starts_with("user=v-"), "round {round}: {a:?}");
        h.respawn(&format!("driver-{round}.log"), &[]).await;
    }
    let creds_seen: HashSet<String> = h.vault.leases().into_iter().map(|l| l.lease_id).collect();
    assert!(
        creds_seen.len() >= 5,
        "refreshes kept happening across restarts"
    );
    h.unpublish_ok("v").await;
    assert!(h.node.volumes().is_empty(), "{:?}", h.node.volumes());
}
