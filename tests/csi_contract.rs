//! The CSI contract's refusals, as tables: hostile template paths, target
//! paths, volume ids, templates and volume attributes. Each row is one
//! refused NodePublishVolume with the gRPC code and a fragment of the
//! message kubelet turns into a pod event; after every refusal nothing is
//! mounted or written, no state is recorded and, unless the row says
//! otherwise, nothing was sent to Vault.

mod support;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use support::{Harness, INDEX_TEMPLATE};
use tonic::Code;
use vault_csi_driver::proto::NodePublishVolumeRequest;
use vault_double::VaultDouble;

const ROLE: (&str, &str) = ("roleName", "example");
const TEMPLATE: (&str, &str) = ("template.index.html", INDEX_TEMPLATE);
const TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";

/// One refused publish.
struct Refusal {
    /// What the row shows.
    what: &'static str,
    request: NodePublishVolumeRequest,
    code: Code,
    /// A fragment of the status message.
    says: &'static str,
    /// Whether the refusal comes before any Vault login.
    before_vault: bool,
}

impl Refusal {
    /// A refusal with `INVALID_ARGUMENT`, before Vault is contacted.
    fn invalid(what: &'static str, request: NodePublishVolumeRequest, says: &'static str) -> Self {
        Self {
            what,
            request,
            code: Code::InvalidArgument,
            says,
            before_vault: true,
        }
    }

    /// The same, for a refusal that may come after the login.
    fn after_login(self) -> Self {
        Self {
            before_vault: false,
            ..self
        }
    }
}

/// Sends every row's request and asserts its refusal, and that nothing
/// was mounted, recorded, written or (where the row says so) sent to
/// Vault's login.
async fn assert_refused(h: &Harness, rows: Vec<Refusal>) {
    for row in rows {
        let what = row.what;
        let target = PathBuf::from(&row.request.target_path);
        let logins = h.vault.count("POST", "/v1/auth/kubernetes/login");
        let status = h.send_err(row.request).await;
        assert_eq!(status.code(), row.code, "{what}: {}", status.message());
        assert!(
            status.message().contains(row.says),
            "{what}: {:?} does not say {:?}",
            status.message(),
            row.says
        );
        assert!(h.node.volumes().is_empty(), "{what}: something was mounted");
        assert_eq!(h.node.state_files(), 0, "{what}: state was written");
        if row.before_vault {
            assert_eq!(
                h.vault.count("POST", "/v1/auth/kubernetes/login"),
                logins,
                "{what}: Vault was contacted"
            );
        }
        if target.starts_with(h.node.kubelet_dir().join("pods")) {
            assert!(
                !target.join("..data").exists(),
                "{what}: files were written"
            );
        }
    }
}

/// Template paths that escape, collide or are reserved.
#[tokio::test]
async fn hostile_template_paths_are_refused() {
    let h = Harness::walkthrough().await;
    let long_element = format!("template.{}", "e".repeat(256));
    let long_path = format!("template.{}", vec!["p"; 2100].join("/"));
    let with = |extra: &[(&str, &str)]| {
        let mut attributes = vec![ROLE];
        attributes.extend_from_slice(extra);
        h.request("v", &attributes)
    };
    let mut too_many = h.request("v", &[ROLE]);
    too_many.volume_context.extend(
        (0..=vault_csi_driver::volume::MAX_FILES_PER_VOLUME)
            .map(|i| (format!("template.f{i}"), "x".to_owned())),
    );
    let rows = vec![
        Refusal::invalid(
            "absolute",
            with(&[("template./etc/cron.d/x", "x")]),
            "not absolute",
        ),
        Refusal::invalid(
            "dotdot anywhere",
            with(&[("template.a/../x", "x")]),
            "`..` elements are not allowed",
        ),
        Refusal::invalid(
            "escaping",
            with(&[("template.a/../../x", "x")]),
            "`..` elements are not allowed",
        ),
        Refusal::invalid(
            "leading dotdot",
            with(&[("template../x", "x")]),
            "`..` elements are not allowed",
        ),
        Refusal::invalid(
            "reserved ..data",
            with(&[("template...data", "x")]),
            "reserved for the driver's atomic updates",
        ),
        Refusal::invalid(
            "reserved ..prefix",
            with(&[("template...2024_01_01", "x")]),
            "reserved for the driver's atomic updates",
        ),
        Refusal::invalid(
            "empty element",
            with(&[("template.a//b", "x")]),
            "empty element",
        ),
        Refusal::invalid(
            "trailing slash",
            with(&[("template.a/", "x")]),
            "empty element",
        ),
        Refusal::invalid(
            "NUL",
            with(&[("template.a\0b", "x")]),
            "contains a NUL byte",
        ),
        Refusal::invalid(
            "element over 255",
            with(&[(&long_element, "x")]),
            "element is longer than 255 bytes",
        ),
        Refusal::invalid(
            "path over 4096",
            with(&[(&long_path, "x")]),
            "longer than 4096 bytes",
        ),
        Refusal::invalid(
            "file and directory",
            with(&[("template.a", "x"), ("template.a/b", "y")]),
            "cannot also be a directory",
        ),
        Refusal::invalid(
            "token file duplicates a template",
            with(&[("template.a", "x"), ("tokenFile", "a")]),
            "the same file is named twice",
        ),
        Refusal::invalid("no template", with(&[]), "\"template.<file>\" is required"),
        Refusal::invalid("too many files", too_many, "at most 64"),
    ];
    assert_refused(&h, rows).await;
    h.stop().await;
}

/// Target paths outside kubelet's pods directory, with `..`, through a
/// symlink or a file, or a symlink at the target: refused, never followed.
#[tokio::test]
async fn hostile_target_paths_are_refused_and_never_followed() {
    let h = Harness::walkthrough().await;
    let outside = h.node.root.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let pods = h.node.kubelet_dir().join("pods");

    // Parent is a symlink to a directory outside the kubelet tree.
    let link_parent = pods.join("uid-link/volumes/kubernetes.io~csi");
    std::fs::create_dir_all(&link_parent).unwrap();
    std::os::unix::fs::symlink(&outside, link_parent.join("vol")).unwrap();
    // Parent is a regular file.
    let file_parent = pods.join("uid-file/volumes/kubernetes.io~csi");
    std::fs::create_dir_all(&file_parent).unwrap();
    std::fs::write(file_parent.join("vol"), b"file").unwrap();
    // A symlink sits at the target itself.
    let link_target = pods.join("uid-target/volumes/kubernetes.io~csi/vol");
    std::fs::create_dir_all(&link_target).unwrap();
    std::os::unix::fs::symlink(&outside, link_target.join("mount")).unwrap();

    let at = |target: String| {
        let mut request = h.request("v", &[ROLE, TEMPLATE]);
        request.target_path = target;
        request
    };
    let rows = vec![
        Refusal::invalid(
            "relative",
            at("var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount".to_owned()),
            "it is not absolute",
        ),
        Refusal::invalid(
            "outside the kubelet dir",
            at(outside.join("mount").display().to_string()),
            "set --kubelet-dir",
        ),
        Refusal::invalid(
            "plugins instead of pods",
            at(h.node
                .kubelet_dir()
                .join("plugins/x/mount")
                .display()
                .to_string()),
            "set --kubelet-dir",
        ),
        Refusal::invalid(
            "dotdot",
            at(format!("{}/u/../../../outside/mount", pods.display())),
            "it contains `.` or `..`",
        ),
        Refusal::invalid(
            "parent is a symlink",
            at(link_parent.join("vol/mount").display().to_string()),
            "vol is a symlink, which is never followed",
        ),
        Refusal::invalid(
            "parent is a file",
            at(file_parent.join("vol/mount").display().to_string()),
            "vol is not a directory",
        ),
        Refusal::invalid(
            "target is a symlink",
            at(link_target.join("mount").display().to_string()),
            "mount is a symlink, which is never followed",
        ),
        Refusal::invalid(
            "parent missing",
            at(pods
                .join("nope/volumes/kubernetes.io~csi/vol/mount")
                .display()
                .to_string()),
            "kubelet creates the target's parent before publishing",
        ),
    ];
    for row in rows {
        let what = row.what;
        assert_refused(&h, vec![row]).await;
        assert!(
            std::fs::read_dir(&outside).unwrap().next().is_none(),
            "{what}: something was written outside"
        );
    }
    assert!(
        std::fs::symlink_metadata(link_target.join("mount"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    h.stop().await;
}

/// Volume ids kubelet never sends: refused before anything else.
#[tokio::test]
async fn hostile_volume_ids_are_refused() {
    let h = Harness::walkthrough().await;
    let with_id = |id: String| {
        let mut request = h.request("v", &[ROLE, TEMPLATE]);
        request.volume_id = id;
        request
    };
    let rows = vec![
        Refusal::invalid("empty id", with_id(String::new()), "volume_id is required"),
        Refusal::invalid("long id", with_id("x".repeat(129)), "longer than 128 bytes"),
        Refusal::invalid("slash", with_id("a/b".into()), "contains `/` or NUL"),
        Refusal::invalid("NUL", with_id("a\0b".into()), "contains `/` or NUL"),
    ];
    assert_refused(&h, rows).await;
    h.stop().await;
}

/// Templates that are too large, do not parse, misuse a helper or read too
/// many secrets: refused naming the problem (all but the helper misuse
/// before Vault is contacted).
#[tokio::test]
async fn hostile_templates_are_refused() {
    let h = Harness::walkthrough().await;
    let big = "x".repeat(vault_csi_driver::render::MAX_TEMPLATE_BYTES + 1);
    let many_secrets: String =
        (0..=vault_csi_driver::render::MAX_SECRETS_PER_VOLUME).fold(String::new(), |mut acc, i| {
            let _ = write!(
                acc,
                "{{{{#with (secret \"secret/data/myapp/s{i}\")}}}}{{{{/with}}}}"
            );
            acc
        });
    let template = |source: &str| h.request("v", &[ROLE, ("template.f", source)]);
    let rows = vec![
        Refusal::invalid("template too large", template(&big), "limit"),
        Refusal::invalid(
            "parse error",
            template("line one\n{{#with x}}\nunclosed"),
            "line 3",
        ),
        Refusal::invalid(
            "helper misuse",
            template("{{base64Encode}}"),
            "exactly one argument",
        )
        .after_login(),
        Refusal::invalid("too many secrets", template(&many_secrets), "at most 32"),
    ];
    assert_refused(&h, rows).await;
    h.stop().await;
}

/// Volume attributes and tokens that must be refused: a `vaultAddress`
/// outside the allow-list (the pod's token never goes there), malformed
/// tokens JSON, a token minted for another audience, an expired token.
#[tokio::test]
async fn hostile_attributes_and_tokens_are_refused() {
    let h = Harness::walkthrough().await;
    let evil = VaultDouble::start().await;
    vault_double::seed_walkthrough(&evil);
    let with_tokens = |tokens: String| {
        let mut request = h.request("v", &[ROLE, TEMPLATE]);
        request.volume_context.insert(TOKENS.into(), tokens);
        request
    };
    let wrong_audience = serde_json::json!({"vault": {"token": h.pod.token(&h.vault, "api", Duration::from_secs(600)), "expirationTimestamp": "2099-01-01T00:00:00Z"}});
    let expired = serde_json::json!({"vault": {"token": h.pod.token(&h.vault, "vault", Duration::ZERO), "expirationTimestamp": "2000-01-01T00:00:00Z"}});
    let rows = vec![
        Refusal::invalid(
            "vaultAddress outside the allow-list",
            h.request("v", &[ROLE, TEMPLATE, ("vaultAddress", &evil.addr())]),
            "not an allowed Vault address",
        ),
        Refusal::invalid(
            "malformed tokens JSON",
            with_tokens("{\"vault\":".into()),
            "is not valid JSON",
        ),
        Refusal::invalid(
            "wrong audience",
            with_tokens(wrong_audience.to_string()),
            "minted for",
        ),
        Refusal::invalid("expired token", with_tokens(expired.to_string()), "expired"),
    ];
    assert_refused(&h, rows).await;
    assert!(
        evil.requests().is_empty(),
        "nothing was sent to the unlisted Vault"
    );
    h.stop().await;
}
