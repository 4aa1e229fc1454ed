//! A volume's limits under hostile templates and data: rendered output
//! larger than the volume may hold, loops over large Vault data cut off by
//! the render budget, and a tmpfs full to the last byte. Each fails cleanly:
//! the previous files stay, nothing is left half-written, and the driver
//! keeps serving other pods.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::{
    Harness, INDEX_TEMPLATE, Pod, assert_walkthrough_page, expected_index, requires_root, wait_for,
    walkthrough_vault,
};
use tonic::Code;

const ROLE: (&str, &str) = ("roleName", "example");

/// Rendered output larger than the volume may hold: refused at publish;
/// during a refresh the previous files stay.
#[tokio::test]
async fn oversized_output_fails_cleanly_and_keeps_previous_files() {
    let h = Harness::builder()
        .config(move |config| {
            config.volume_size_bytes = 64 * 1024;
        })
        .start()
        .await;
    let attrs = [
        ROLE,
        ("template.index.html", INDEX_TEMPLATE),
        ("staticSecretRefreshInterval", "1s"),
    ];
    let target = h.publish_ok(&attrs).await;

    h.vault.kv2_put(
        "secret",
        "myapp/config",
        serde_json::json!({"username": "appuser", "password": "p".repeat(40_000)}),
    );
    let reads = h.vault.count("GET", "/v1/secret/data/myapp/config");
    wait_for(
        "refreshes to try the large secret",
        Duration::from_secs(10),
        || h.vault.count("GET", "/v1/secret/data/myapp/config") >= reads + 2,
    )
    .await;
    assert_walkthrough_page(&target);

    let other = Pod::new("default", "big", "vault-auth");
    let request = h.request_for(&other, "v", &attrs);
    let status = h.send_err(request.clone()).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(status.message().contains("limit"), "{}", status.message());
    assert!(!PathBuf::from(&request.target_path).exists());
    assert_eq!(
        h.node.volumes().len(),
        1,
        "only the first volume is mounted"
    );
    h.stop().await;
}

/// A template that nests loops over Vault data asks for a billion
/// iterations with no output; the render budget stops it with a status that
/// names the limit, nothing is left behind, and the driver keeps serving
/// other pods (rendering runs off the gRPC workers).
#[tokio::test]
async fn loops_over_large_vault_data_are_cut_off() {
    let vault = walkthrough_vault().await;
    let items: Vec<u32> = (0..1000).collect();
    vault.kv2_put(
        "secret",
        "myapp/list",
        serde_json::json!({ "items": items }),
    );
    let h = Harness::builder().vault(vault).start().await;
    let hostile = Pod::new("default", "loops", "vault-auth");
    let template = r#"{{#with (secret "secret/data/myapp/list")}}{{#each data.data.items}}{{#each ../data.data.items}}{{#each ../../data.data.items}}{{/each}}{{/each}}{{/each}}{{/with}}"#;
    let request = h.request_for(&hostile, "loops", &[ROLE, ("template.x", template)]);
    let mut client = h.client().await;
    let publish = tokio::spawn(async move { client.node_publish_volume(request).await });

    // Meanwhile an ordinary pod is served.
    let request = h.request("ok", &[ROLE, ("template.index.html", INDEX_TEMPLATE)]);
    let target = h.send_ok(request).await;
    assert_walkthrough_page(&target);

    let status = tokio::time::timeout(Duration::from_secs(60), publish)
        .await
        .expect("the render budget stops the loops")
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(
        status.message().contains("iterations"),
        "{}",
        status.message()
    );
    assert_eq!(
        h.node.volumes().len(),
        1,
        "only the ordinary pod's volume is mounted"
    );
    assert_eq!(
        h.node.state_files(),
        1,
        "only the ordinary pod's volume has state"
    );
}

/// The volume's tmpfs fills up: refreshes fail cleanly with the previous
/// files intact, and succeed again once space is freed. The pod's view is
/// read-only, so the test fills the tmpfs through a writable bind mount of
/// its own, as the driver writes updates.
#[tokio::test]
async fn a_full_tmpfs_keeps_the_previous_files() {
    if !requires_root("a tmpfs that fills up (ENOSPC), filled through a bind mount") {
        return;
    }
    let h = Harness::walkthrough().await;
    let attrs = [
        ROLE,
        ("template.index.html", INDEX_TEMPLATE),
        ("staticSecretRefreshInterval", "1s"),
    ];
    let target = h.publish_ok(&attrs).await;

    let view = target.with_file_name("writable-view");
    std::fs::create_dir_all(&view).unwrap();
    let bind = nix::mount::MsFlags::MS_BIND;
    nix::mount::mount(Some(&target), &view, None::<&str>, bind, None::<&str>).unwrap();
    let writable = nix::mount::MsFlags::MS_REMOUNT | bind;
    nix::mount::mount(None::<&str>, &view, None::<&str>, writable, None::<&str>).unwrap();
    // Fill the volume until the kernel says no.
    let filler = view.join("filler");
    let chunk = vec![0u8; 64 * 1024];
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&filler).unwrap();
        let error = loop {
            if let Err(e) = file.write_all(&chunk) {
                break e;
            }
        };
        assert_eq!(error.raw_os_error(), Some(nix::libc::ENOSPC));
    }
    h.vault.kv2_put(
        "secret",
        "myapp/config",
        serde_json::json!({"username": "appuser", "password": "while-full"}),
    );
    let reads = h.vault.count("GET", "/v1/secret/data/myapp/config");
    wait_for(
        "refreshes against the full volume",
        Duration::from_secs(10),
        || h.vault.count("GET", "/v1/secret/data/myapp/config") >= reads + 2,
    )
    .await;
    assert_walkthrough_page(&target);
    let leftovers: Vec<_> = std::fs::read_dir(&target)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("..") && n != "..data")
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "failed writes leave no partial directories: {leftovers:?}"
    );

    std::fs::remove_file(&filler).unwrap();
    nix::mount::umount2(&view, nix::mount::MntFlags::MNT_DETACH).unwrap();
    wait_for(
        "the refresh to land once space is free",
        Duration::from_secs(70),
        || {
            std::fs::read_to_string(target.join("index.html"))
                .is_ok_and(|t| t == expected_index("appuser", "while-full"))
        },
    )
    .await;
    h.stop().await;
}
