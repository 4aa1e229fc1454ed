//! The examples in `deploy/examples/` run: every pod (or pod template) of
//! every example is read from its manifests, each of its CSI volumes is
//! published exactly as kubelet would publish it (the pod's service
//! account, its namespace, `readOnly`, its fsGroup), against a Vault double
//! seeded with what the example's `vault-setup.sh` writes, and the files
//! are checked. Then each is unpublished and its Vault token revoked.
//!
//! A new example directory fails here until it has a row in [`check`].

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize as _;
use serde_json::{Value, json};
use support::kubelet_wire::{PublishVariant, publish_request_variant};
use support::{Harness, Pod, expected_index, is_root, walkthrough_vault};
use vault_double::{DynamicRole, Role, VaultDouble};

/// One CSI volume of the driver in an example's manifests.
#[derive(Debug)]
struct ExampleVolume {
    /// The example's directory under `deploy/examples/` (`""`: the
    /// walkthrough at the top).
    example: String,
    pod: Pod,
    volume: String,
    attributes: BTreeMap<String, String>,
    readonly: bool,
    fs_group: Option<u64>,
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples")
}

/// Every YAML document of the resources a kustomization lists.
fn documents(dir: &Path) -> Vec<Value> {
    let kustomization: Value =
        serde_norway::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
            .unwrap();
    let mut out = Vec::new();
    for resource in kustomization["resources"].as_array().expect("resources") {
        let text = std::fs::read_to_string(dir.join(resource.as_str().unwrap())).unwrap();
        for document in serde_norway::Deserializer::from_str(&text) {
            let value = Value::deserialize(document).unwrap();
            if !value.is_null() {
                out.push(value);
            }
        }
    }
    out
}

/// The pod spec of a Pod or of a workload's pod template, and the pod's
/// name (a templated pod gets one as its controller would).
fn pod_spec(document: &Value) -> Option<(String, &Value)> {
    let name = document["metadata"]["name"].as_str()?.to_owned();
    match document["kind"].as_str()? {
        "Pod" => Some((name, &document["spec"])),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some((
            format!("{name}-x7k2p"),
            &document["spec"]["template"]["spec"],
        )),
        "CronJob" => Some((
            format!("{name}-29000000-x7k2p"),
            &document["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        )),
        _ => None,
    }
}

/// Every driver volume of every example.
fn example_volumes() -> Vec<ExampleVolume> {
    let mut dirs = vec![(String::new(), examples_dir())];
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.join("kustomization.yaml").exists() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            dirs.push((name, path));
        }
    }
    dirs.sort();
    let mut out = Vec::new();
    for (example, dir) in dirs {
        for document in documents(&dir) {
            let Some((name, spec)) = pod_spec(&document) else {
                continue;
            };
            let namespace = document["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default");
            let account = spec["serviceAccountName"].as_str().unwrap_or("default");
            for volume in spec["volumes"].as_array().into_iter().flatten() {
                let csi = &volume["csi"];
                if csi["driver"] != "vault.csi.driver" {
                    continue;
                }
                let attributes = csi["volumeAttributes"]
                    .as_object()
                    .expect("volumeAttributes")
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str().expect("attributes are strings").to_owned(),
                        )
                    })
                    .collect();
                out.push(ExampleVolume {
                    example: example.clone(),
                    pod: Pod::new(namespace, &name, account),
                    volume: volume["name"].as_str().unwrap().to_owned(),
                    attributes,
                    readonly: csi["readOnly"].as_bool().unwrap_or(false),
                    fs_group: spec["securityContext"]["fsGroup"].as_u64(),
                });
            }
        }
    }
    out
}

/// What each example's `vault-setup.sh` writes, in the double (which has
/// one set of mounts for every Vault namespace).
async fn seeded_vault() -> VaultDouble {
    let vault = walkthrough_vault().await;
    vault.kv2_put(
        "secret",
        "orders/config",
        json!({"db_host": "orders-db.default.svc", "db_user": "orders", "db_password": "s3cr3t-0rders"}),
    );
    vault.kv2_put(
        "secret",
        "billing/config",
        json!({"db_user": "billing", "db_password": "pa\"ss\\word", "api_key": "k-123"}),
    );
    vault.kv2_put("secret", "reporter/config", json!({"report_path": "daily"}));
    vault.kv2_put(
        "secret",
        "ledger/config",
        json!({"endpoint": "https://ledger.example.com", "api_token": "t-0123"}),
    );
    vault.add_dynamic_role(
        "database",
        "inventory",
        DynamicRole::new(Duration::from_secs(3600), Duration::from_secs(24 * 3600)),
    );
    vault.add_pki_role(
        "pki",
        "web",
        Duration::from_secs(72 * 3600),
        Duration::from_secs(72 * 3600),
    );
    // Each example's Vault role and the one path its policy allows.
    let roles: [(&str, &str, &[&str]); 7] = [
        ("orders", "secret/data/orders/config", &["read"]),
        ("inventory", "database/creds/inventory", &["read"]),
        ("web", "pki/issue/web", &["create", "update"]),
        ("billing", "secret/data/billing/config", &["read"]),
        ("reporter", "secret/data/reporter/*", &["read"]),
        ("migrate", "database/creds/inventory", &["read"]),
        ("ledger", "secret/data/ledger/config", &["read"]),
    ];
    for (name, path, capabilities) in roles {
        vault.put_policy(name, &[(path, capabilities)]);
        vault.add_role(
            "kubernetes",
            Role::new(name, [name], ["default"], [name]).with_audience("vault"),
        );
    }
    vault
}

fn read(target: &Path, file: &str) -> String {
    std::fs::read_to_string(target.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", target.join(file).display()))
}

/// `NAME=value` lines of an env file, in order.
fn env_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|line| {
            let (k, v) = line.split_once('=').expect("NAME=value");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn assert_credentials(text: &str) {
    let lines = env_lines(text);
    let names: Vec<&str> = lines.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["DB_USER", "DB_PASSWORD"], "{text}");
    assert!(lines.iter().all(|(_, v)| !v.is_empty()), "{text}");
}

/// What each example's files must hold once published.
fn check(example: &str, target: &Path, vault: &VaultDouble) {
    match example {
        "" => assert_eq!(
            read(target, "index.html"),
            expected_index("appuser", "suP3rsec(et!")
        ),
        "kv-env-file" => assert_eq!(
            read(target, "app.env"),
            "DB_HOST=orders-db.default.svc\nDB_USER=orders\nDB_PASSWORD=s3cr3t-0rders\n"
        ),
        "database-sighup" | "refresh-false" => {
            let text = read(target, "db.env");
            assert_credentials(&text);
            let user = &env_lines(&text)[0].1;
            assert!(
                vault
                    .leases()
                    .iter()
                    .any(|l| l.lease_id.starts_with("database/creds/inventory/")
                        && l.data["username"] == user.as_str()),
                "the file holds a leased credential"
            );
        }
        "pki-tls" => {
            let crt = read(target, "tls.crt");
            assert!(crt.starts_with("-----BEGIN CERTIFICATE-----"), "{crt}");
            assert_eq!(crt.matches("BEGIN CERTIFICATE").count(), 2, "leaf and CA");
            assert!(read(target, "tls.key").contains("PRIVATE KEY-----"));
            let issues = vault
                .requests()
                .iter()
                .filter(|r| r.path == "/v1/pki/issue/web")
                .count();
            assert_eq!(issues, 1, "the certificate and its key come from one issue");
            let mode = std::fs::metadata(target.join("tls.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o400, "fileMode");
        }
        "json-config" => {
            let config: Value =
                serde_json::from_str(&read(target, "config.json")).expect("config.json is JSON");
            assert_eq!(
                config,
                json!({"database": {"user": "billing", "password": "pa\"ss\\word"}, "apiKey": "k-123", "version": 1})
            );
        }
        "token-file" => {
            assert_eq!(read(target, "report.env"), "REPORT_PATH=daily\n");
            let token = vault
                .token(read(target, "token").trim())
                .expect("the token file holds a token Vault issued");
            assert_eq!(token.role, "reporter");
            assert!(!token.revoked);
        }
        "vault-namespace" => {
            assert_eq!(
                read(target, "ledger.conf"),
                "endpoint = https://ledger.example.com\ntoken = t-0123\n"
            );
            let tokens = vault.tokens();
            let token = tokens.iter().find(|t| t.role == "ledger").unwrap();
            assert_eq!(token.vault_namespace.as_deref(), Some("team-a"));
        }
        other => panic!(
            "deploy/examples/{other} has no expectations: add a row for it to `check` in tests/examples.rs"
        ),
    }
}

/// Publishes every example's volumes as kubelet would, checks their files,
/// unpublishes them and checks every Vault token they used is revoked.
#[tokio::test]
async fn every_example_publishes_and_renders_its_files() {
    let volumes = example_volumes();
    let examples: std::collections::BTreeSet<&str> =
        volumes.iter().map(|v| v.example.as_str()).collect();
    assert!(
        examples.len() >= 8,
        "the walkthrough and every example directory have a driver volume: {examples:?}"
    );
    let h = Harness::builder().vault(seeded_vault().await).start().await;
    for example in &volumes {
        let attributes: Vec<(&str, &str)> = example
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // An ordinary user may only give files to its own groups.
        let fs_group = example.fs_group.map(|gid| {
            if is_root() {
                gid.to_string()
            } else {
                nix::unistd::getegid().to_string()
            }
        });
        let request = publish_request_variant(
            example.pod.info(),
            &example.volume,
            &example.pod.target(&h.node, &example.volume),
            example.pod.tokens_json(&h.vault, &["vault"]),
            &attributes,
            &PublishVariant {
                readonly: example.readonly,
                volume_mount_group: fs_group.clone().unwrap_or_default(),
                tokens_in_secrets: false,
            },
        );
        let what = format!("deploy/examples/{}: {}", example.example, example.volume);
        let target = PathBuf::from(&request.target_path);
        h.client()
            .await
            .node_publish_volume(request)
            .await
            .unwrap_or_else(|status| panic!("{what}: the publish failed: {status:?}"));
        check(&example.example, &target, &h.vault);
        if let Some(gid) = fs_group {
            let meta = std::fs::metadata(target.join("..data")).unwrap();
            assert_eq!(meta.gid().to_string(), gid, "{what}: fsGroup");
        }
        h.unpublish_pod_ok(&example.pod, &example.volume).await;
    }
    let live: Vec<String> = h
        .vault
        .tokens()
        .into_iter()
        .filter(|t| !t.revoked)
        .map(|t| t.role)
        .collect();
    assert!(
        live.is_empty(),
        "every example's Vault token is revoked at unpublish; live: {live:?}"
    );
}
