//! Hostile templates against the real driver: a template cannot crash it
//! (recursive partials, however spelled), stall other pods' publishes
//! (heavy renders run on the render threads, under budgets), or leak a
//! secret used as a Vault path (errors and logs show a placeholder).

mod support;

use std::time::Duration;

use support::{
    DriverProcess, Harness, INDEX_TEMPLATE, Pod, assert_walkthrough_page, walkthrough_vault,
};
use tonic::Code;
use vault_csi_driver::render::{
    MAX_PARAMS_PER_TAG, MAX_TAGS_PER_TEMPLATE, MAX_TEMPLATE_BYTES, MAX_TEMPLATE_UNITS,
    SecretRequest,
};

const ROLE: (&str, &str) = ("roleName", "example");

/// The publish of `template` fails with `code`; returns the message.
async fn publish_fails(
    h: &Harness<DriverProcess>,
    request: vault_csi_driver::proto::NodePublishVolumeRequest,
    code: Code,
    what: &str,
) -> String {
    let status = h
        .client()
        .await
        .node_publish_volume(request)
        .await
        .expect_err(what);
    assert_eq!(status.code(), code, "{what}: {}", status.message());
    status.message().to_owned()
}

fn driver_alive(driver: &mut DriverProcess) {
    assert!(
        driver.child.try_wait().unwrap().is_none(),
        "the driver exited:\n{}",
        driver.logs()
    );
}

/// Two inline partials that include each other used to overflow the stack
/// of the driver (an abort, so kubelet's retries crash-looped it). Every
/// spelling is refused with `INVALID_ARGUMENT` naming the construct and
/// where it is, before Vault is contacted, and the driver serves the next
/// pod.
#[tokio::test]
async fn recursive_partials_are_refused_and_the_driver_keeps_serving() {
    let mut h = Harness::builder().spawn(&[]).await;
    let hostile = Pod::new("default", "partials", "vault-auth");
    for (what, template, expect) in [
        (
            "mutually recursive inline partials",
            "{{ ~ #*inline \"a\"}}{{ ~>b}}{{/inline}}\n{{ ~ #*inline \"b\"}}{{ ~>a}}{{/inline}}{{ ~>a}}",
            "line 1, column 1: an inline partial",
        ),
        (
            "a partial after ~",
            "ok\n{{~> p}}",
            "line 2, column 1: a partial",
        ),
        (
            "a partial block",
            "{{ ~ #> p}}x{{ ~ /p}}",
            "line 1, column 1: a partial block",
        ),
    ] {
        let request = h.request_for(&hostile, "v", &[ROLE, ("template.f", template)]);
        let logins = h.vault.count("POST", "/v1/auth/kubernetes/login");
        let message = publish_fails(&h, request, Code::InvalidArgument, what).await;
        assert!(message.contains(expect), "{what}: {message}");
        assert!(message.contains("not supported"), "{what}: {message}");
        assert_eq!(
            h.vault.count("POST", "/v1/auth/kubernetes/login"),
            logins,
            "{what}: Vault was contacted"
        );
        driver_alive(&mut h.driver);
    }
    // Inside a raw block the same text is text.
    let request = h.request_for(
        &hostile,
        "raw",
        &[ROLE, ("template.f", "{{{{raw}}}}{{> p}}{{{{/raw}}}}")],
    );
    let target = h.send_ok(request).await;
    assert_eq!(
        std::fs::read_to_string(target.join("f")).unwrap(),
        "{{> p}}"
    );

    let request = h.request("ok", &[ROLE, ("template.index.html", INDEX_TEMPLATE)]);
    let target = h.send_ok(request).await;
    assert_walkthrough_page(&target);
    driver_alive(&mut h.driver);
}

/// Two volumes whose 60 KB templates hand a 100,000-element Vault array to
/// built-in helpers on every line used to render for 13.5 s each on the
/// threads that answer kubelet, and another pod's publish waited behind
/// them. Now they stop at the render budget with `INVALID_ARGUMENT` naming
/// the limit, and the other pod is answered promptly meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_templates_neither_stall_other_pods_nor_run_past_their_limit() {
    let vault = walkthrough_vault().await;
    let items: Vec<u32> = (0..100_000).collect();
    vault.kv2_put("secret", "myapp/list", serde_json::json!({ "a": items }));
    let mut h = Harness::builder().vault(vault).spawn(&[]).await;

    let fill = |body: &str| {
        // As many copies as the size, tag and unit limits allow.
        let units = body
            .bytes()
            .filter(|&b| !(b.is_ascii_alphanumeric() || b"-_$:".contains(&b)))
            .count();
        let n = ((MAX_TEMPLATE_BYTES - 100) / body.len())
            .min((MAX_TAGS_PER_TEMPLATE - 2) / body.matches("{{").count())
            .min((usize::try_from(MAX_TEMPLATE_UNITS).unwrap() - 100) / units);
        format!(
            r#"{{{{#with (secret "secret/data/myapp/list")}}}}{}{{{{/with}}}}"#,
            body.repeat(n)
        )
    };
    let params = |n: usize| vec!["data.data.a"; n].join(" ");
    // The original attack, 18 parameters per tag, is refused at compile
    // (its tags are too dense to parse, or have too many parameters).
    let original = fill(&format!("{{{{#if {}}}}}{{{{/if}}}}", params(18)));
    let request = h.request_for(
        &Pod::new("default", "orig", "vault-auth"),
        "v",
        &[ROLE, ("template.f", &original)],
    );
    let message = publish_fails(&h, request, Code::InvalidArgument, "18 parameters").await;
    assert!(
        message.contains(&format!("at most {MAX_PARAMS_PER_TAG} are allowed"))
            || message.contains(&format!("at most {MAX_TEMPLATE_UNITS} are allowed")),
        "{message}"
    );

    // The most a tag may do, and the same nested in a loop.
    let hostile = [
        fill(&format!(
            "{{{{#if {}}}}}{{{{/if}}}}",
            params(MAX_PARAMS_PER_TAG)
        )),
        fill("{{#each data.data.a}}{{#unless ../data.data.a}}{{/unless}}{{/each}}"),
    ];
    let mut running = Vec::new();
    for (i, template) in hostile.iter().enumerate() {
        let request = h.request_for(
            &Pod::new("default", &format!("heavy{i}"), "vault-auth"),
            "v",
            &[ROLE, ("template.f", template)],
        );
        let mut client = h.client().await;
        running.push(tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let result = client.node_publish_volume(request).await;
            (result, started.elapsed())
        }));
    }

    // Meanwhile an ordinary pod is answered promptly.
    let request = h.request("ok", &[ROLE, ("template.index.html", INDEX_TEMPLATE)]);
    let started = tokio::time::Instant::now();
    let target = tokio::time::timeout(Duration::from_secs(2), h.send_ok(request))
        .await
        .expect("another pod's publish is answered within 2 s while heavy templates render");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_walkthrough_page(&target);

    for task in running {
        let (result, took) = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the heavy publishes are answered")
            .unwrap();
        let status = result.expect_err("a heavy template fails");
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        assert!(
            status.message().contains("units of work")
                || status.message().contains("iterations")
                || status.message().contains("took longer than"),
            "{}",
            status.message()
        );
        // Login and the 600 KB read included: far from the 13.5 s it was.
        assert!(took < Duration::from_secs(10), "answered after {took:?}");
    }
    driver_alive(&mut h.driver);
}

/// A secret value used as a Vault path (`(secret data.data.password)`)
/// never appears in the status kubelet turns into a pod event, nor in the
/// driver's log, whether the value is not a valid path or Vault refuses it
/// (the Vault double, like Vault, quotes an unknown route in its error).
#[tokio::test]
async fn a_secret_used_as_a_path_is_never_shown() {
    let vault = walkthrough_vault().await;
    vault.kv2_put(
        "secret",
        "myapp/pointer",
        serde_json::json!({ "valid": "hunter2-route/x", "invalid": "hunter2 (not a path)" }),
    );
    let mut h = Harness::builder()
        .vault(vault)
        .spawn(&["--log-level=debug"])
        .await;
    let pod = Pod::new("default", "leaky", "vault-auth");
    for field in ["valid", "invalid"] {
        let template = format!(
            r#"{{{{#with (secret "secret/data/myapp/pointer")}}}}{{{{#with (secret data.data.{field})}}}}{{{{data}}}}{{{{/with}}}}{{{{/with}}}}"#
        );
        let request = h.request_for(&pod, field, &[ROLE, ("template.f", &template)]);
        let status = h
            .client()
            .await
            .node_publish_volume(request)
            .await
            .expect_err(field);
        let message = status.message();
        assert!(!message.contains("hunter2"), "{field}: {message}");
        assert!(
            message.contains(SecretRequest::PATH_FROM_DATA),
            "{field}: {message}"
        );
        driver_alive(&mut h.driver);
    }
    // The valid one was requested from Vault, which named the route.
    assert_eq!(h.vault.count("GET", "/v1/hunter2-route/x"), 1);
    let logs = h.driver.logs();
    assert!(!logs.is_empty());
    assert!(!logs.contains("hunter2"), "{logs}");
}

/// Templates dense with subexpressions parse into about a hundred times
/// their size: twenty 64 KiB templates in one volume (1.25 MiB, inside
/// `{{#if false}}` so they render nothing) got the driver OOM-killed in a
/// 128 MiB cgroup during the first publish, while its memory budget saw a
/// few kilobytes. They are now refused before anything is parsed, with
/// `INVALID_ARGUMENT` naming the limit, before Vault is contacted; the
/// driver serves the next pod.
#[tokio::test]
async fn dense_templates_are_refused_before_they_are_parsed() {
    let mut h = Harness::builder().spawn(&[]).await;
    let tag = format!("{{{{a {}}}}}", "(b c c c c c c c) ".repeat(8));
    let dense = format!(
        "{{{{#if false}}}}{}{{{{/if}}}}",
        tag.repeat((MAX_TEMPLATE_BYTES - 64) / tag.len())
    );
    let names: Vec<String> = (0..20).map(|i| format!("template.f{i}")).collect();
    let mut attributes = vec![ROLE];
    attributes.extend(names.iter().map(|n| (n.as_str(), dense.as_str())));
    let request = h.request_for(
        &Pod::new("default", "dense", "vault-auth"),
        "v",
        &attributes,
    );
    let logins = h.vault.count("POST", "/v1/auth/kubernetes/login");
    let message = publish_fails(&h, request, Code::InvalidArgument, "dense templates").await;
    assert!(
        message.contains(&format!("at most {MAX_TEMPLATE_UNITS} are allowed")),
        "{message}"
    );
    assert_eq!(h.vault.count("POST", "/v1/auth/kubernetes/login"), logins);
    driver_alive(&mut h.driver);

    let request = h.request("ok", &[ROLE, ("template.index.html", INDEX_TEMPLATE)]);
    assert_walkthrough_page(&h.send_ok(request).await);
}

/// `pkiCert` over a Vault value of 50,000 `-----BEGIN A-----` lines
/// (950 KB) kept both render threads busy for 33 s each (its PEM scan was
/// quadratic and never looked at the clock), and every other tenant's
/// publish got `RESOURCE_EXHAUSTED` meanwhile. The scan is linear and
/// metered now: the hostile publishes fail at once with `INVALID_ARGUMENT`
/// and another pod is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_pem_value_neither_stalls_other_pods_nor_the_render_threads() {
    let vault = walkthrough_vault().await;
    let pem = format!("{}-----END A-----", "-----BEGIN A-----\n".repeat(50_000));
    vault.kv2_put(
        "secret",
        "myapp/pem",
        serde_json::json!({ "certificate": pem }),
    );
    let mut h = Harness::builder().vault(vault).spawn(&[]).await;
    let template =
        r#"{{#with (pkiCert (lookup (secret "secret/data/myapp/pem") "data"))}}{{Cert}}{{/with}}"#;
    let mut running = Vec::new();
    for i in 0..2 {
        let request = h.request_for(
            &Pod::new("default", &format!("pem{i}"), "vault-auth"),
            "v",
            &[ROLE, ("template.f", template)],
        );
        let mut client = h.client().await;
        running.push(tokio::spawn(async move {
            client.node_publish_volume(request).await
        }));
    }
    let request = h.request("ok", &[ROLE, ("template.index.html", INDEX_TEMPLATE)]);
    let target = tokio::time::timeout(Duration::from_secs(10), h.send_ok(request))
        .await
        .expect("another pod's publish is answered while hostile PEM values render");
    assert_walkthrough_page(&target);
    for task in running {
        let status = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the hostile publishes are answered")
            .unwrap()
            .expect_err("a hostile PEM value fails");
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        assert!(status.message().contains("pkiCert"), "{}", status.message());
    }
    driver_alive(&mut h.driver);
}

/// Templates built to make the engine quote itself (an unreadable 60 KB
/// parameter, 30 KB block names) produced 45 to 75 KB messages, which
/// kubelet puts into pod events. The status now carries an excerpt.
#[tokio::test]
async fn compile_bombs_get_short_messages() {
    let mut h = Harness::builder().spawn(&[]).await;
    let pod = Pod::new("default", "bombs", "vault-auth");
    let long = "z".repeat(30_000);
    for (i, bomb) in [
        format!("{{{{x 0{}}}}}", "0".repeat(60_000)),
        format!("{{{{#a{long}}}}}{{{{/b{long}}}}}"),
    ]
    .iter()
    .enumerate()
    {
        let request = h.request_for(&pod, &format!("v{i}"), &[ROLE, ("template.f", bomb)]);
        let message = publish_fails(&h, request, Code::InvalidArgument, "a compile bomb").await;
        assert!(
            message.len() <= 1024,
            "a message of {} bytes",
            message.len()
        );
        assert!(message.contains("line 1, column"), "{message}");
    }
    driver_alive(&mut h.driver);
}
