use super::*;

fn defaults() -> SpecDefaults {
    SpecDefaults {
        vault_addr: Some(Url::parse("http://vault.vault:8200").unwrap()),
        allowed_vault_addrs: vec![
            Url::parse("http://vault.vault:8200").unwrap(),
            Url::parse("https://vault.example.com").unwrap(),
        ],
        static_refresh_interval: Duration::from_secs(300),
    }
}

fn context(extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut ctx: HashMap<String, String> = [
        ("roleName", "example"),
        ("template.index.html", "hi"),
        ("csi.storage.k8s.io/pod.name", "nginx"),
        ("csi.storage.k8s.io/pod.namespace", "default"),
        ("csi.storage.k8s.io/pod.uid", "uid-1"),
        ("csi.storage.k8s.io/serviceAccount.name", "vault-auth"),
        ("csi.storage.k8s.io/ephemeral", "true"),
        ("csi.storage.k8s.io/serviceAccount.tokens", "{}"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra {
        ctx.insert((*k).to_owned(), (*v).to_owned());
    }
    ctx
}

#[test]
fn parses_the_walkthrough_volume_with_defaults() {
    let (spec, pod) = parse_attributes(&context(&[]), &defaults()).unwrap();
    assert_eq!(spec.role, "example");
    assert_eq!(spec.auth_mount, "kubernetes");
    assert_eq!(spec.audience, "vault");
    assert_eq!(spec.vault_addr.as_str(), "http://vault.vault:8200/");
    assert!(spec.refresh);
    assert_eq!(spec.static_interval, Duration::from_secs(300));
    assert_eq!(spec.templates[0].0.as_str(), "index.html");
    assert_eq!(pod.namespace, "default");
    assert_eq!(pod.name, "nginx");
}

#[test]
fn parses_every_option() {
    let (spec, _) = parse_attributes(
        &context(&[
            ("vaultAddress", "https://vault.example.com/"),
            ("vaultAuthMountPath", "auth/jwt"),
            ("vaultNamespace", "team-a/"),
            ("audience", "other"),
            ("fileMode", "0400"),
            ("refresh", "false"),
            ("tokenFile", "token"),
            ("staticSecretRefreshInterval", "1m30s"),
            ("signal", "HUP"),
            ("signalProcess", "nginx"),
            ("csi.storage.k8s.io/some.future.key", "x"),
        ]),
        &defaults(),
    )
    .unwrap();
    assert_eq!(spec.vault_addr.host_str(), Some("vault.example.com"));
    assert_eq!(spec.auth_mount, "jwt");
    assert_eq!(spec.namespace.as_deref(), Some("team-a/"));
    assert_eq!(spec.audience, "other");
    assert_eq!(spec.file_mode, Some(0o400));
    assert!(!spec.refresh);
    assert_eq!(spec.token_file.unwrap().as_str(), "token");
    assert_eq!(spec.static_interval, Duration::from_secs(90));
    let signal = spec.signal.unwrap();
    assert_eq!(signal.signal.name(), "SIGHUP");
    assert_eq!(signal.process, "nginx");
}

#[test]
fn refuses_bad_attributes_naming_the_key() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("roleNmae", "x")], "roleNmae"),
        (&[("roleName", " ")], "roleName"),
        (
            &[("vaultAddress", "http://evil.example:8200")],
            "not an allowed Vault address",
        ),
        (&[("vaultAddress", "not a url")], "vaultAddress"),
        (&[("vaultAuthMountPath", "../sys")], "vaultAuthMountPath"),
        (&[("fileMode", "4755")], "setuid"),
        (&[("fileMode", "rw-r--r--")], "octal"),
        (&[("refresh", "yes")], "refresh"),
        (&[("staticSecretRefreshInterval", "5 minutes")], "duration"),
        (&[("staticSecretRefreshInterval", "10ms")], "at least 1s"),
        (&[("template./etc/passwd", "x")], "absolute"),
        (&[("template.a/../../x", "x")], "`..`"),
        (&[("template...data", "x")], "reserved"),
        (&[("tokenFile", "index.html")], "twice"),
        (&[("csi.storage.k8s.io/ephemeral", "false")], "ephemeral"),
        (
            &[("signal", "SIGKILL"), ("signalProcess", "nginx")],
            "SIGHUP",
        ),
        (&[("signal", "9"), ("signalProcess", "nginx")], "signal"),
        (&[("signal", "SIGHUP")], "needs signalProcess"),
        (&[("signalProcess", "nginx")], "needs signal"),
        (&[("signal", "SIGHUP"), ("signalProcess", "")], "empty"),
        (
            &[("signal", "SIGHUP"), ("signalProcess", "/usr/sbin/nginx")],
            "`/`",
        ),
        (
            &[("signal", "SIGTERM"), ("signalProcess", "pause")],
            "sandbox",
        ),
        (&[("signals", "SIGHUP")], "signals"),
    ];
    for (extra, expected) in cases {
        let err = parse_attributes(&context(extra), &defaults()).unwrap_err();
        assert!(err.to_string().contains(expected), "{extra:?}: {err}");
    }
    let mut no_role = context(&[]);
    no_role.remove("roleName");
    assert!(
        parse_attributes(&no_role, &defaults())
            .unwrap_err()
            .to_string()
            .contains("roleName")
    );
}

#[test]
fn refuses_more_files_than_the_limit() {
    let keys: Vec<(String, String)> = (0..=MAX_FILES_PER_VOLUME)
        .map(|i| (format!("template.f{i}"), "x".to_owned()))
        .collect();
    let mut ctx = context(&[]);
    ctx.extend(keys);
    let err = parse_attributes(&ctx, &defaults()).unwrap_err();
    assert!(err.to_string().contains("at most 64"), "{err}");
}

#[test]
fn volume_ids_and_target_paths_are_checked() {
    assert!(VolumeId::parse("csi-0123abcd").is_ok());
    for bad in ["", "a/b", "a\0b", ".hidden", &"x".repeat(129)] {
        assert!(VolumeId::parse(bad).is_err(), "{bad:?}");
    }
    let kubelet = Path::new("/var/lib/kubelet");
    let good = "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/vol/mount";
    assert_eq!(TargetPath::parse(good, kubelet).unwrap().pod_uid(), "uid");
    for bad in [
        "relative/pods/x/mount",
        "/var/lib/kubelet/pods/uid/../../../etc/mount",
        "/var/lib/kubelet/pods/./uid/mount",
        "/etc/mount",
        "/var/lib/kubelet/plugins/x/mount",
        "/var/lib/kubelet/pods/uid",
        "/var/lib/kubelet/pods/uid/mo\0unt",
    ] {
        assert!(TargetPath::parse(bad, kubelet).is_err(), "{bad:?}");
    }
}

#[test]
fn fingerprint_ignores_only_the_rotating_token() {
    let a = context(&[]);
    let mut b = a.clone();
    b.insert(
        TOKENS_KEY.to_owned(),
        r#"{"vault":{"token":"new"}}"#.to_owned(),
    );
    assert_eq!(fingerprint(&a, false, ""), fingerprint(&b, false, ""));
    assert_ne!(fingerprint(&a, false, ""), fingerprint(&a, true, ""));
    assert_ne!(fingerprint(&a, false, ""), fingerprint(&a, false, "1000"));
    let mut c = a.clone();
    c.insert("template.index.html".to_owned(), "changed".to_owned());
    assert_ne!(fingerprint(&a, false, ""), fingerprint(&c, false, ""));
}

/// [`ATTRIBUTES`] is the parser's own list: every key the `match` in
/// [`parse_attributes`] names, nothing more, in the unknown-attribute
/// message too, and every one accepted with a valid value. A key added to
/// the parser without the list (or the docs) fails here.
#[test]
fn the_attribute_list_is_the_parsers_own() {
    let source = include_str!("mod.rs");
    let body = &source[source.find("pub fn parse_attributes").unwrap()..];
    let body = &body[..body.find("\n}\n").unwrap()];
    // The arms of the `match` on the key, at the indentation of the first
    // one (values matched inside an arm, like `refresh`'s, are deeper).
    let indent = |line: &str| line.len() - line.trim_start().len();
    let arms = indent(
        body.lines()
            .find(|l| l.contains("\"roleName\" =>"))
            .unwrap(),
    );
    let mut parsed: Vec<&str> = body
        .lines()
        .filter(|line| indent(line) == arms)
        .filter_map(|line| {
            let arm = line.trim_start().strip_prefix('"')?;
            let (key, rest) = arm.split_once('"')?;
            rest.trim_start().starts_with("=>").then_some(key)
        })
        .collect();
    parsed.push("template.<file>");
    let mut listed = ATTRIBUTES.to_vec();
    parsed.sort_unstable();
    listed.sort_unstable();
    assert_eq!(parsed, listed, "parse_attributes' keys against ATTRIBUTES");

    let unknown = Error::UnknownAttribute { key: "x".into() }.to_string();
    assert!(
        unknown.ends_with(&format!("known: {}", ATTRIBUTES.join(", "))),
        "{unknown}"
    );

    let valid = |key: &str| match key {
        "roleName" | "signalProcess" => "nginx",
        "vaultAddress" => "https://vault.example.com",
        "vaultAuthMountPath" => "jwt",
        "vaultNamespace" => "team-a",
        "audience" => "vault",
        "fileMode" => "0440",
        "refresh" => "false",
        "tokenFile" => "token",
        "staticSecretRefreshInterval" => "1m",
        "signal" => "SIGHUP",
        "template.<file>" => "hi",
        other => panic!("no valid value for {other} in this test"),
    };
    let every: Vec<(String, &str)> = ATTRIBUTES
        .iter()
        .map(|key| (key.replace("<file>", "app.conf"), valid(key)))
        .collect();
    let every: Vec<(&str, &str)> = every.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    parse_attributes(&context(&every), &defaults()).expect("every listed attribute is accepted");
}
