//! `vault-csi-driver convert`: the walkthrough converted and published
//! through the real socket, consul-template constructs compared byte for
//! byte with Go's text/template, and every refusal with its message.
//!
//! The Go comparison runs `go run tests/gotemplate/main.go` when a Go
//! toolchain is installed (CI installs Debian's golang-go), and checks that
//! Go still gives the outputs checked in at
//! `tests/fixtures/gotemplate/expected.json`. Without Go, the converted
//! templates are compared with that file. Regenerate it with
//! `VCD_UPDATE_GO_EXPECTED=1 cargo test --test convert go_`.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use support::Harness;
use vault_csi_driver::convert::{self, DriverChecks, Options, gotemplate};
use vault_csi_driver::render::go::json as go_helpers;
use vault_csi_driver::render::{Rendered, Renderer, SecretRequest};
use vault_csi_driver::storage::RelativePath;

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

fn options() -> Options {
    Options::parse(&[]).unwrap()
}

/// Converts the walkthrough's two files; returns the output documents and
/// the summary.
fn convert_walkthrough(args: &[&str]) -> (Vec<serde_norway::Value>, String) {
    let mut docs = Vec::new();
    for f in [
        "walkthrough/configmap.yaml",
        "walkthrough/example-k8s-spec.yaml",
    ] {
        let text = std::fs::read_to_string(fixture(f)).unwrap();
        docs.extend(convert::parse_yaml(&text, f).unwrap());
    }
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let (out, report) =
        convert::convert_documents(docs, &Options::parse(&args).unwrap(), &DriverChecks).unwrap();
    let summary = report.summary(&Options::parse(&args).unwrap());
    (convert::parse_yaml(&out, "output").unwrap(), summary)
}

fn csi_attributes(pod: &serde_norway::Value) -> Vec<(String, String)> {
    let volumes = pod["spec"]["volumes"].as_sequence().unwrap();
    let csi: Vec<_> = volumes.iter().filter(|v| v.get("csi").is_some()).collect();
    assert_eq!(csi.len(), 1, "one CSI volume: {volumes:?}");
    csi[0]["csi"]["volumeAttributes"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// What Vault Agent renders for the walkthrough's template and data
/// (`{{-` eats the newline before `<ul>`, `{{ end }}` leaves an empty line).
const AGENT_PAGE: &str = "<html>\n<body>\n<p>Some secrets:</p>\n<ul>\n<li><pre>username: appuser</pre></li>\n<li><pre>password: suP3rsec(et!</pre></li>\n</ul>\n\n</body>\n</html>\n";

/// The walkthrough's ConfigMap and Pod become one Pod whose CSI volume is
/// mounted where nginx mounted the shared emptyDir; published through the
/// real socket against the Vault double seeded with the walkthrough, the
/// page is byte-identical to what the agent renders.
#[tokio::test]
async fn walkthrough_converts_and_publishes_the_agents_page() {
    let (docs, summary) = convert_walkthrough(&["--vault-addr", "http://EXTERNAL_VAULT_ADDR:8200"]);
    assert_eq!(docs.len(), 2, "the ConfigMap stays, the Pod is rewritten");
    assert_eq!(docs[0]["kind"].as_str(), Some("ConfigMap"));
    let pod = &docs[1];
    let spec = &pod["spec"];
    assert!(
        spec.get("initContainers").is_none(),
        "the agent init container is gone"
    );
    let containers = spec["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let mount = &containers[0]["volumeMounts"][0];
    assert_eq!(mount["name"].as_str(), Some("shared-data"));
    assert_eq!(mount["mountPath"].as_str(), Some("/usr/share/nginx/html"));
    assert_eq!(mount["readOnly"].as_bool(), Some(true));
    let volumes = spec["volumes"].as_sequence().unwrap();
    assert_eq!(
        volumes.len(),
        1,
        "the agent's config volume is gone: {volumes:?}"
    );
    assert_eq!(
        volumes[0]["csi"]["driver"].as_str(),
        Some("vault.csi.driver")
    );
    assert_eq!(volumes[0]["csi"]["readOnly"].as_bool(), Some(true));
    let attributes = csi_attributes(pod);
    let keys: Vec<&str> = attributes.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["refresh", "roleName", "template.index.html"],
        "{attributes:?}"
    );
    assert!(summary.contains("audience `vault`"), "{summary}");
    assert!(summary.contains("/home/vault/.vault-token"), "{summary}");

    let h = Harness::walkthrough().await;
    let attrs: Vec<(&str, &str)> = attributes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let target = h.send_ok(h.request("shared-data", &attrs)).await;
    let page = std::fs::read_to_string(target.join("index.html")).unwrap();
    assert_eq!(page, AGENT_PAGE);
    h.unpublish_ok("shared-data").await;
    h.stop().await;
}

/// Without `--vault-addr`, the agent's `VAULT_ADDR` becomes `vaultAddress`
/// and the summary says the driver must allow it; `--drop-agent-config`
/// leaves the ConfigMap out.
#[test]
fn walkthrough_address_and_configmap_options() {
    let (docs, summary) = convert_walkthrough(&[]);
    let attributes = csi_attributes(&docs[1]);
    assert!(attributes.contains(&(
        "vaultAddress".to_owned(),
        "http://EXTERNAL_VAULT_ADDR:8200".to_owned()
    )));
    assert!(summary.contains("--allowed-vault-addrs"), "{summary}");
    let (docs, _) = convert_walkthrough(&["--drop-agent-config"]);
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["kind"].as_str(), Some("Pod"));
}

/// The binary: `convert` files, `-` for stdin, the marker comment on the
/// ConfigMap, the summary on stderr; the driver's own flags still parse.
#[test]
fn the_binary_converts_files_and_stdin_and_keeps_the_driver_flags() {
    let bin = env!("CARGO_BIN_EXE_vault-csi-driver");
    let cm = fixture("walkthrough/configmap.yaml");
    let pod = fixture("walkthrough/example-k8s-spec.yaml");
    let out = Command::new(bin)
        .arg("convert")
        .arg(&cm)
        .arg(&pod)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("# vault-csi-driver convert: no longer used"),
        "{stdout}"
    );
    assert!(stdout.contains("driver: vault.csi.driver"));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("Converted:") && stderr.contains("Pod/vault-agent-example"),
        "{stderr}"
    );

    let mut child = Command::new(bin)
        .args(["convert", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input =
        std::fs::read_to_string(&cm).unwrap() + "---\n" + &std::fs::read_to_string(&pod).unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), stdout);

    // A refusal prints nothing on stdout and exits 1.
    let out = Command::new(bin).arg("convert").arg(&pod).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ConfigMap example-vault-agent-config"));

    // The driver's flags: `--version` and a missing required flag.
    let out = Command::new(bin).arg("--version").output().unwrap();
    assert!(out.status.success());
    let out = Command::new(bin)
        .arg("--endpoint")
        .arg("unix:///x")
        .env_remove("NODE_NAME")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--node-id"));
}

// ------------------------------------------------------------ injector

const INJECTED: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: apps
spec:
  template:
    metadata:
      labels: {app: web}
      annotations:
        vault.hashicorp.com/agent-inject: "true"
        vault.hashicorp.com/role: "web"
        vault.hashicorp.com/auth-path: "auth/k8s-prod"
        vault.hashicorp.com/namespace: "team-a"
        vault.hashicorp.com/agent-pre-populate-only: "true"
        vault.hashicorp.com/agent-inject-token: "true"
        vault.hashicorp.com/service: "https://vault.example:8200"
        vault.hashicorp.com/agent-inject-secret-db.env: "database/creds/app"
        vault.hashicorp.com/agent-inject-template-db.env: |
          {{- with secret "database/creds/app" -}}
          DB_USER={{ .Data.username }}
          DB_PASSWORD={{ .Data.password }}
          {{- end }}
        vault.hashicorp.com/agent-inject-perms-db.env: "0440"
        vault.hashicorp.com/agent-limits-cpu: "250m"
        prometheus.io/scrape: "true"
    spec:
      containers:
        - name: app
          image: app:1
"#;

/// Injector annotations become a CSI volume at /vault/secrets with the
/// role, mount, namespace, refresh, tokenFile, fileMode and address; other
/// annotations stay.
#[test]
fn injector_annotations_become_a_volume_at_vault_secrets() {
    let docs = convert::parse_yaml(INJECTED, "in").unwrap();
    let (out, report) = convert::convert_documents(docs, &options(), &DriverChecks).unwrap();
    let docs = convert::parse_yaml(&out, "out").unwrap();
    let template = &docs[0]["spec"]["template"];
    let annotations = template["metadata"]["annotations"].as_mapping().unwrap();
    assert_eq!(
        annotations.len(),
        1,
        "only vault.hashicorp.com/ annotations go: {annotations:?}"
    );
    let mount = &template["spec"]["containers"][0]["volumeMounts"][0];
    assert_eq!(mount["mountPath"].as_str(), Some("/vault/secrets"));
    assert_eq!(mount["name"].as_str(), Some("vault-secrets"));
    let attributes: HashMap<String, String> =
        template["spec"]["volumes"][0]["csi"]["volumeAttributes"]
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().unwrap().to_owned(),
                    v.as_str().unwrap().to_owned(),
                )
            })
            .collect();
    let expect = |k: &str, v: &str| {
        assert_eq!(
            attributes.get(k).map(String::as_str),
            Some(v),
            "{k}: {attributes:?}"
        );
    };
    expect("roleName", "web");
    expect("vaultAuthMountPath", "k8s-prod");
    expect("vaultNamespace", "team-a");
    expect("refresh", "false");
    expect("tokenFile", "token");
    expect("fileMode", "0440");
    expect("vaultAddress", "https://vault.example:8200");
    expect(
        "template.db.env",
        "{{#each (goWith (goSecret (secret \"database/creds/app\"))) as |w1|}}DB_USER={{goOut (goDot w1 \"Data\" \"username\")}}\nDB_PASSWORD={{goOut (goDot w1 \"Data\" \"password\")}}{{else}}{{/each}}\n",
    );
    let summary = report.summary(&options());
    assert!(
        summary.contains("https://vault.example:8200 must be allowed"),
        "{summary}"
    );
    assert!(summary.contains("agent-limits-cpu dropped"), "{summary}");
}

/// The attributes of the first pod template's CSI volume.
fn volume_attributes(out: &str) -> HashMap<String, String> {
    let docs = convert::parse_yaml(out, "out").unwrap();
    let spec = if docs[0]["kind"].as_str() == Some("Pod") {
        &docs[0]["spec"]
    } else {
        &docs[0]["spec"]["template"]["spec"]
    };
    spec["volumes"][0]["csi"]["volumeAttributes"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// A secret annotated without a template gets the injector's default
/// template (`map`, or `json` with `agent-inject-default-template`),
/// converted exactly like any other.
#[test]
fn injector_default_templates_are_converted() {
    let pod = |extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    vault.hashicorp.com/agent-inject: \"true\"\n    vault.hashicorp.com/role: r\n    vault.hashicorp.com/agent-inject-secret-app: secret/data/app\n{extra}spec:\n  containers:\n    - name: app\n      image: app\n"
        )
    };
    for (extra, go_template) in [
        (
            "",
            "{{ with secret \"secret/data/app\" }}{{ range $k, $v := .Data }}{{ $k }}: {{ $v }}\n{{ end }}{{ end }}",
        ),
        (
            "    vault.hashicorp.com/agent-inject-default-template: json\n",
            "{{ with secret \"secret/data/app\" }}{{ .Data | toJSON }}\n{{ end }}",
        ),
    ] {
        let docs = convert::parse_yaml(&pod(extra), "in").unwrap();
        let (out, _) = convert::convert_documents(docs, &options(), &DriverChecks).unwrap();
        let expected = gotemplate::convert(go_template, gotemplate::GoOptions::default())
            .unwrap()
            .handlebars;
        assert_eq!(
            volume_attributes(&out).get("template.app"),
            Some(&expected),
            "{extra:?}"
        );
    }
    // The map form prints every value as Go does.
    let converted = gotemplate::convert(
        "{{ with secret \"secret/data/app\" }}{{ range $k, $v := .Data }}{{ $k }}: {{ $v }}\n{{ end }}{{ end }}",
        gotemplate::GoOptions::default(),
    )
    .unwrap();
    let page = render(&converted.handlebars, &secrets_for("")).unwrap();
    assert!(
        page.starts_with("data: map[api.key:dotted big:123456789012345678901234567890 "),
        "{page}"
    );
}

/// The summary says what differs around pkiCert: the agent's reuse of the
/// certificate in the destination file, and certificates issued per file.
#[test]
fn pki_cert_summary_notes_the_agents_cache_and_shared_certificates() {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    vault.hashicorp.com/agent-inject: \"true\"\n    vault.hashicorp.com/role: r\n    vault.hashicorp.com/agent-inject-secret-tls.crt: pki/issue/web\n    vault.hashicorp.com/agent-inject-template-tls.crt: '{{ with pkiCert \"pki/issue/web\" \"common_name=a.example\" }}{{ .Cert }}{{ end }}'\n    vault.hashicorp.com/agent-inject-secret-tls.key: pki/issue/web\n    vault.hashicorp.com/agent-inject-template-tls.key: '{{ with pkiCert \"pki/issue/web\" \"common_name=a.example\" }}{{ .Key }}{{ end }}'\nspec:\n  containers:\n    - name: app\n      image: app\n";
    let docs = convert::parse_yaml(pod, "in").unwrap();
    let (out, report) = convert::convert_documents(docs, &options(), &DriverChecks).unwrap();
    assert_eq!(
        volume_attributes(&out)
            .get("template.tls.key")
            .map(String::as_str),
        Some(
            "{{#each (goWith (goPki (pkiCert (secret \"pki/issue/web\" common_name=\"a.example\")))) as |w1|}}{{goOut (goDot w1 \"Key\")}}{{else}}{{/each}}"
        )
    );
    let summary = report.summary(&options());
    assert!(
        summary.contains("reused a valid certificate it found in the template's destination file"),
        "{summary}"
    );
    assert!(
        summary.contains("the driver issues one certificate for all of them"),
        "{summary}"
    );
}

/// Injector settings with no exact equivalent are refused, each saying why.
#[test]
fn injector_refusals_say_why() {
    let base = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    vault.hashicorp.com/agent-inject: \"true\"\n    vault.hashicorp.com/role: r\n";
    let spec = "spec:\n  containers:\n    - name: app\n      image: app\n";
    for (extra, expected) in [
        (
            "    vault.hashicorp.com/agent-inject-secret-a: secret/data/a\n    vault.hashicorp.com/agent-inject-default-template: yaml\n",
            "agent-inject-default-template \"yaml\" is not converted",
        ),
        (
            "    vault.hashicorp.com/agent-inject-secret-a: secret/data/a\n    vault.hashicorp.com/agent-inject-template-a: x\n    vault.hashicorp.com/tls-skip-verify: \"true\"\n",
            "the driver always verifies Vault's certificate",
        ),
        (
            "    vault.hashicorp.com/agent-inject-secret-a: secret/data/a\n    vault.hashicorp.com/agent-inject-template-a: x\n    vault.hashicorp.com/agent-inject-command-a: nginx -s reload\n",
            "the driver runs no commands in the pod",
        ),
        (
            "    vault.hashicorp.com/agent-inject-secret-a: secret/data/a\n    vault.hashicorp.com/agent-inject-template-a: \"{{ pkiCert \\\"pki/issue/x\\\" }}\"\n",
            "line 1, column 1: pkiCert: pkiCert needs `key=value` arguments",
        ),
        (
            "    vault.hashicorp.com/agent-inject-secret-a: secret/data/a\n    vault.hashicorp.com/agent-inject-template-a: x\n    vault.hashicorp.com/agent-inject-file-a: ../escape\n",
            "template path \"../escape\"",
        ),
        (
            "    vault.hashicorp.com/agent-inject-secret-a: secret/data/a\n    vault.hashicorp.com/agent-inject-template-a: x\n    vault.hashicorp.com/agent-configmap: cm\n",
            "vault.hashicorp.com/agent-configmap is not converted",
        ),
    ] {
        let docs = convert::parse_yaml(&format!("{base}{extra}{spec}"), "in").unwrap();
        let err = convert::convert_documents(docs, &options(), &DriverChecks)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{extra}: {err}");
    }
}

/// Agent configuration settings with no equivalent are refused.
#[test]
fn agent_config_refusals_say_why() {
    for (hcl, expected) in [
        (
            "vault { tls_skip_verify = true }",
            "`vault.tls_skip_verify` is not converted: the driver always verifies",
        ),
        (
            "auto_auth {\n method \"kubernetes\" {\n  config = { role = \"r\", role_id_file_path = \"/x\" }\n }\n}",
            "auto_auth.method.config.role_id_file_path",
        ),
        (
            "template {\n destination = \"/etc/secrets/a\"\n contents = \"x\"\n command = \"kill -HUP 1\"\n}",
            "the driver runs no commands in the pod",
        ),
        (
            "cache { use_auto_auth_token = true }",
            "the driver runs no proxy in the pod",
        ),
        (
            "template {\n destination = \"/etc/secrets/a\"\n contents = \"x\"\n left_delimiter = \"[[\"\n}",
            "only the default delimiters",
        ),
    ] {
        let err = convert::agent::parse(hcl).unwrap_err().to_string();
        assert!(err.contains(expected), "{hcl}: {err}");
    }
    let config = convert::agent::parse(
        "template_config { static_secret_render_interval = \"30s\" }\nvault {\n address = \"https://v:8200\"\n namespace = \"ns1\"\n}\nauto_auth {\n method \"jwt\" {\n  mount_path = \"auth/jwt-k8s\"\n  config = { role = \"r\", path = \"/var/run/secrets/token\" }\n }\n}",
    )
    .unwrap();
    assert_eq!(config.static_secret_render_interval.as_deref(), Some("30s"));
    assert_eq!(config.vault_address.as_deref(), Some("https://v:8200"));
    assert_eq!(config.vault_namespace.as_deref(), Some("ns1"));
    assert_eq!(config.method.as_deref(), Some("jwt"));
    assert_eq!(config.mount_path.as_deref(), Some("auth/jwt-k8s"));
    assert_eq!(config.role.as_deref(), Some("r"));
}

// ------------------------------------------------------------ templates vs Go

/// A KV v2 response with the data the table uses. Parsed from text, so
/// numbers keep the text Vault sent (`1.50`), as the driver keeps it.
fn kv2() -> Value {
    serde_json::from_str(
        r#"{
        "request_id": "r", "lease_id": "", "lease_duration": 2764800, "renewable": false, "warnings": null,
        "data": {
            "data": {
                "username": "appuser",
                "password": "suP3rsec(et!<&>\"'",
                "key-with-dashes": "dash",
                "api.key": "dotted",
                "we]ird {key}\"": "weird",
                "blob": "aGVsbG8Kd29ybGQ=",
                "empty": "",
                "list": ["a", "b", "c"],
                "nested": {"zeta": "z", "alpha": "a", "Mid": "m", "beta": "b"},
                "zero": 0,
                "count": 42,
                "price": 1.50,
                "negzero": -0,
                "big": 123456789012345678901234567890,
                "yes": true,
                "no": false,
                "null": null,
                "unicode": "héllo ☃",
                "env": "prod",
                "none": [],
                "mixed": {"b": [1, "x", null, true, 2.50], "a": {"n": 2.50, "m": {}}},
                "matrix": [["a", "b"], ["c"]]
            },
            "metadata": {"version": 3, "created_time": "2024-01-01T00:00:00Z", "deletion_time": "", "destroyed": false}
        }
    }"#,
    )
    .unwrap()
}

fn pem(name: &str) -> String {
    std::fs::read_to_string(fixture(&format!("pki/{name}")))
        .unwrap()
        .trim_end()
        .to_owned()
}

/// A `pki/issue` response: PEM as Vault sends it (no final newline), the
/// chain with the issuing CA first.
fn pki() -> Value {
    json!({
        "lease_id": "", "lease_duration": 0, "renewable": false, "warnings": null,
        "data": {
            "certificate": pem("leaf.pem"),
            "issuing_ca": pem("int.pem"),
            "ca_chain": [pem("int.pem"), pem("root.pem")],
            "private_key": pem("leaf-ec.key"),
            "private_key_type": "ec",
            "serial_number": "01:02",
            "expiration": 4_102_444_800_u64
        }
    })
}

/// An issue response whose PEM text Go writes again: CRLF line breaks,
/// 76-column base64 with trailing spaces, text before the block, and a
/// PKCS #8 key.
fn pki_odd() -> Value {
    let leaf = pem("leaf.pem");
    let body: String = leaf.lines().filter(|l| !l.starts_with("-----")).collect();
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let mut response = pki();
    response["data"]["certificate"] = json!(format!(
        "issued by the test\r\n-----BEGIN CERTIFICATE-----\r\n{} \r\n-----END CERTIFICATE-----",
        lines.join(" \r\n")
    ));
    response["data"]["private_key"] = json!(pem("leaf-p8.key"));
    response
}

/// A response with CAs only: the agent never renders it.
fn pki_ca_only() -> Value {
    let mut response = pki();
    response["data"]
        .as_object_mut()
        .unwrap()
        .remove("certificate");
    response
}

/// (name, template, strict). Secrets: `secret/data/app` (KV v2) and
/// `pki/issue/web` with `common_name=web.example` `ttl=24h`.
const CASES: &[(&str, &str, bool)] = &[
    (
        "walkthrough",
        "<html>\n<body>\n<p>Some secrets:</p>\n{{- with secret \"secret/data/app\" }}\n<ul>\n<li><pre>username: {{ .Data.data.username }}</pre></li>\n<li><pre>password: {{ .Data.data.password }}</pre></li>\n</ul>\n{{ end }}\n</body>\n</html>\n",
        false,
    ),
    (
        "fields and metadata",
        "{{ with secret \"secret/data/app\" }}{{ .Data.data.username }} v{{ .Data.metadata.version }} {{ .Data.metadata.created_time }} {{ .Data.data.count }} {{ .Data.data.yes }} {{ .Data.metadata.destroyed }}{{ end }}",
        false,
    ),
    (
        "secret envelope fields",
        "{{ with secret \"pki/issue/web\" \"common_name=web.example\" \"ttl=24h\" }}{{ .LeaseID }} {{ .LeaseDuration }} {{ .Renewable }}\n{{ .Data.certificate }}\n{{ .Data.private_key }}{{ end }}",
        false,
    ),
    (
        "range map sorted",
        "{{ with secret \"secret/data/app\" }}{{ range $k, $v := .Data.data.nested }}{{ $k }}={{ $v }};{{ end }}{{ end }}",
        false,
    ),
    (
        "range list with index",
        "{{ with secret \"secret/data/app\" }}{{ range $i, $v := .Data.data.list }}{{ $i }}:{{ $v }} {{ end }}{{ end }}",
        false,
    ),
    (
        "range dot",
        "{{ with secret \"secret/data/app\" }}{{ range .Data.data.list }}[{{ . }}]{{ end }}{{ end }}",
        false,
    ),
    (
        "range one variable",
        "{{ with secret \"secret/data/app\" }}{{ range $v := .Data.data.nested }}{{ $v }}{{ end }}{{ end }}",
        false,
    ),
    (
        "range else on missing and empty",
        "{{ with secret \"secret/data/app\" }}{{ range .Data.data.missing }}x{{ else }}none{{ end }}|{{ range .Data.data.none }}x{{ else }}empty{{ end }}{{ end }}",
        false,
    ),
    (
        "range outer dot via variable",
        "{{ with secret \"secret/data/app\" }}{{ range $k, $v := .Data.data.nested }}{{ $k }}{{ end }}{{ range .Data.data.list }}{{ . }}{{ end }}{{ end }}",
        false,
    ),
    (
        "if else if else",
        "{{ with secret \"secret/data/app\" }}{{ if .Data.data.missing }}A{{ else if .Data.data.empty }}B{{ else if .Data.data.username }}C{{ else }}D{{ end }}{{ end }}",
        false,
    ),
    (
        "truth of json numbers",
        "{{ with secret \"secret/data/app\" }}{{ if .Data.data.zero }}zero-is-true{{ else }}zero-is-false{{ end }} {{ if .Data.data.no }}T{{ else }}F{{ end }} {{ if .Data.data.list }}L{{ end }} {{ if .Data.data.nested }}M{{ end }}{{ end }}",
        false,
    ),
    (
        "if on missing key",
        "{{ with secret \"secret/data/app\" }}{{ if .Data.data.missing }}yes{{ else }}no{{ end }}{{ end }}",
        false,
    ),
    (
        "with value and else",
        "{{ with secret \"secret/data/app\" }}{{ with .Data.data }}{{ .username }}{{ end }}|{{ with .Data.data.zero }}{{ . }}{{ end }}|{{ with .Data.data.missing }}x{{ else }}none{{ end }}|{{ with .Data.data.empty }}x{{ else }}empty{{ end }}{{ end }}",
        false,
    ),
    (
        "index",
        "{{ with secret \"secret/data/app\" }}{{ index .Data.data \"key-with-dashes\" }} {{ index .Data.data \"api.key\" }} {{ index .Data.data.list 1 }} {{ index .Data \"data\" \"username\" }}{{ end }}",
        false,
    ),
    (
        "base64",
        "{{ with secret \"secret/data/app\" }}{{ base64Decode .Data.data.blob }}|{{ base64Encode .Data.data.password }}|{{ .Data.data.blob | base64Decode }}{{ end }}",
        false,
    ),
    (
        "printf",
        "{{ with secret \"secret/data/app\" }}{{ printf \"%s:%s\" .Data.data.username .Data.data.env }} {{ printf \"%v%%\" .Data.data.count }} {{ with secret \"pki/issue/web\" \"common_name=web.example\" \"ttl=24h\" }}{{ printf \"ttl=%d\" .LeaseDuration }}{{ end }}{{ end }}",
        false,
    ),
    (
        "whitespace trimming",
        "a  \n  {{- with secret \"secret/data/app\" -}}  \n\t b {{- .Data.data.username -}} \n c\n{{- end }}\r\n  d",
        false,
    ),
    (
        "block tags on their own lines",
        "start\n  {{ with secret \"secret/data/app\" }}\n  {{ if .Data.data.yes }}\n    yes\n  {{ else }}\n    no\n  {{ end }}\n  {{ range .Data.data.list }}\n  - {{ . }}\n  {{ end }}\n{{ end }}\nend\n",
        false,
    ),
    (
        "template starting and ending with blocks",
        "{{ with secret \"secret/data/app\" }}\n{{ .Data.data.username }}\n{{ end }}",
        false,
    ),
    (
        "comments",
        "a{{/* one */}}b\n{{- /* two */\t-}}\nc {{/* three\nlines */}}\n",
        false,
    ),
    (
        "eq ne and or not",
        "{{ with secret \"secret/data/app\" }}{{ if eq .Data.data.env \"prod\" }}P{{ end }}{{ if ne .Data.data.env \"prod\" }}N{{ end }}{{ if and (eq .Data.data.env \"prod\") (ne .Data.data.username \"x\") }}A{{ end }}{{ if or (eq .Data.data.env \"dev\") (eq .Data.data.env \"x\") }}O{{ else }}!O{{ end }}{{ if not (eq .Data.data.env \"dev\") }}!D{{ end }}{{ end }}",
        false,
    ),
    (
        "raw strings and unicode",
        "{{ with secret `secret/data/app` }}{{ .Data.data.unicode }} ✓ \\ back\\slash {{ end }}",
        false,
    ),
    (
        "constants",
        "{{ \"lit\" }} {{ `raw` }} {{ true }} {{ printf \"%s-%v-%t\" \"a\" true false }}",
        false,
    ),
    (
        "else in with secret",
        "{{ with secret \"secret/data/app\" }}ok{{ else }}never{{ end }}",
        false,
    ),
    (
        "strict mode present keys",
        "{{ with secret \"secret/data/app\" }}{{ .Data.data.username }}{{ end }}",
        true,
    ),
    (
        "strict mode missing key errors",
        "{{ with secret \"secret/data/app\" }}{{ .Data.data.missing }}{{ end }}",
        true,
    ),
    (
        "missing key and null print no value",
        "{{ with secret \"secret/data/app\" }}[{{ .Data.data.missing }}] [{{ index .Data.data \"missing\" }}] [{{ .Data.data.null }}] [{{ index .Data.data.nested \"missing\" }}]{{ end }}",
        false,
    ),
    (
        "index of a missing key and null in strict mode",
        "{{ with secret \"secret/data/app\" }}[{{ index .Data.data \"missing\" }}] [{{ .Data.data.null }}]{{ end }}",
        true,
    ),
    (
        "if on a missing key in strict mode errors",
        "{{ with secret \"secret/data/app\" }}{{ if .Data.data.missing }}yes{{ else }}no{{ end }}{{ end }}",
        true,
    ),
    (
        "range over a missing key in strict mode errors",
        "{{ with secret \"secret/data/app\" }}{{ range .Data.data.missing }}x{{ end }}{{ end }}",
        true,
    ),
    (
        "field of a missing key errors",
        "{{ with secret \"secret/data/app\" }}{{ .Data.data.missing.x }}{{ end }}",
        false,
    ),
    (
        "field of null errors",
        "{{ with secret \"secret/data/app\" }}{{ .Data.data.null.x }}{{ end }}",
        false,
    ),
    (
        "field of text errors",
        "{{ with secret \"secret/data/app\" }}{{ .Data.data.username.x }}{{ end }}",
        false,
    ),
    (
        "field of a list errors",
        "{{ with secret \"secret/data/app\" }}{{ range .Data.data.list }}{{ .x }}{{ end }}{{ end }}",
        false,
    ),
    (
        "decimals and big numbers as Vault sent them",
        "{{ with secret \"secret/data/app\" }}{{ .Data.data.price }} {{ .Data.data.negzero }} {{ .Data.data.big }} {{ printf \"%v|%s\" .Data.data.price .Data.data.price }} {{ toJSON .Data.data.mixed }} {{ if .Data.data.price }}T{{ end }}{{ end }}",
        false,
    ),
    (
        "lists and maps print in Go syntax",
        "{{ with secret \"secret/data/app\" }}{{ .Data.data.list }} {{ .Data.data.nested }} {{ .Data.data.mixed }} {{ .Data.data.none }} {{ .Data.data.matrix }} {{ .Data.metadata }}{{ end }}",
        false,
    ),
    (
        "printing .Data",
        "{{ with secret \"secret/data/app\" }}{{ .Data }}{{ end }}",
        false,
    ),
    (
        "printf verbs on Vault data",
        "{{ with secret \"secret/data/app\" }}{{ printf \"%d|%t|%s|%v|%s|%d|%v\" .Data.data.count .Data.data.username .Data.data.yes .Data.data.null .Data.data.null .Data.data.mixed .Data.metadata }}{{ end }}",
        false,
    ),
    (
        "printf on range keys and the lease duration",
        "{{ with secret \"secret/data/app\" }}{{ range $i, $v := .Data.data.list }}{{ printf \"%d/%s/%v \" $i $i $i }}{{ end }}{{ range $k, $v := .Data.data.nested }}{{ printf \"%d;\" $k }}{{ end }}{{ printf \"%s %v %d\" .LeaseDuration .Renewable .LeaseID }}{{ end }}",
        false,
    ),
    (
        "printf of constants with wrong verbs",
        "{{ printf \"%d %s %t\" \"lit\" true \"x\" }}",
        false,
    ),
    (
        "eq and ne on numbers, booleans and nil",
        "{{ with secret \"secret/data/app\" }}{{ if eq .Data.data.count \"42\" }}A{{ end }}{{ if eq .Data.data.yes true }}B{{ end }}{{ if ne .Data.data.price \"1.5\" }}C{{ end }}{{ if eq .Data.data.missing \"x\" }}D{{ else }}E{{ end }}{{ if eq \"prod\" .Data.data.env }}F{{ end }}{{ range $k, $v := .Data.data.nested }}{{ if eq $k \"beta\" }}G{{ end }}{{ end }}{{ eq .Data.data.env \"prod\" }}{{ end }}",
        false,
    ),
    (
        "eq of a boolean and text errors",
        "{{ with secret \"secret/data/app\" }}{{ if eq .Data.data.yes \"true\" }}x{{ end }}{{ end }}",
        false,
    ),
    (
        "eq of a list and text errors",
        "{{ with secret \"secret/data/app\" }}{{ if eq .Data.data.list \"a\" }}x{{ end }}{{ end }}",
        false,
    ),
    (
        "eq of a list index and text errors",
        "{{ with secret \"secret/data/app\" }}{{ range $i, $v := .Data.data.list }}{{ if eq $i \"0\" }}x{{ end }}{{ end }}{{ end }}",
        false,
    ),
    (
        "range over text errors",
        "{{ with secret \"secret/data/app\" }}{{ range .Data.data.username }}x{{ else }}none{{ end }}{{ end }}",
        false,
    ),
    (
        "range over nested values and nulls",
        "{{ with secret \"secret/data/app\" }}{{ range $k, $v := .Data.data.mixed }}{{ $k }}={{ $v }};{{ range $v }}({{ . }}){{ end }}{{ end }}{{ range .Data.data.matrix }}{{ index . 0 }}{{ end }}{{ end }}",
        false,
    ),
    (
        "with over values keeps Go's dot",
        "{{ with secret \"secret/data/app\" }}{{ with .Data.data.mixed }}{{ with .a }}{{ .n }} {{ .m }} {{ .missing }}{{ end }}{{ end }}{{ end }}",
        false,
    ),
    (
        "index positions, nesting and odd keys",
        "{{ with secret \"secret/data/app\" }}{{ index .Data.data.matrix 1 0 }} {{ (index .Data.data \"nested\").zeta }} {{ index .Data.data \"we]ird {key}\\\"\" }} {{ index .Data \"metadata\" \"version\" }}{{ end }}",
        false,
    ),
    (
        "index out of range errors",
        "{{ with secret \"secret/data/app\" }}{{ index .Data.data.list 3 }}{{ end }}",
        false,
    ),
    (
        "index of a missing key then a key errors",
        "{{ with secret \"secret/data/app\" }}{{ index .Data.data \"missing\" \"x\" }}{{ end }}",
        false,
    ),
    (
        "base64 of a missing key errors",
        "{{ with secret \"secret/data/app\" }}{{ base64Decode .Data.data.missing }}{{ end }}",
        false,
    ),
    (
        "toJSON of a missing key",
        "{{ with secret \"secret/data/app\" }}{{ toJSON .Data.data.missing }} {{ toJSONPretty .Data.data.null }}{{ end }}",
        false,
    ),
    (
        "the injector's default map template",
        "{{ with secret \"secret/data/app\" }}{{ range $k, $v := .Data }}{{ $k }}: {{ $v }}\n{{ end }}{{ end }}",
        false,
    ),
    (
        "secret arguments as consul-template reads them",
        "{{ with secret \" /pki/issue/web/ \" \" common_name = web.example \" \"\" \"ttl=1h\" \"ttl=24h\" }}{{ .Data.serial_number }}{{ end }}",
        false,
    ),
    (
        "a response without data",
        "{{ with secret \"secret/data/none\" }}[{{ .Data.x }}] [{{ .Data }}] [{{ index .Data \"x\" }}] [{{ toJSON .Data }}] [{{ range .Data }}x{{ else }}empty{{ end }}] [{{ if .Data }}T{{ else }}F{{ end }}] [{{ printf \"%v\" .Data }}]{{ end }}",
        false,
    ),
    (
        "a response without data in strict mode errors",
        "{{ with secret \"secret/data/none\" }}{{ .Data.x }}{{ end }}",
        true,
    ),
    (
        "pkiCert fields",
        "{{ with pkiCert \"pki/issue/web\" \"common_name=web.example\" \"ttl=24h\" }}{{ .Cert }}{{ .Key }}{{ .CA }}{{ range .CAChain }}{{ . }}{{ end }}{{ end }}",
        false,
    ),
    (
        "pkiCert through .Data, index and printing the chain",
        "{{ with pkiCert \"pki/issue/web\" \"common_name=web.example\" \"ttl=24h\" }}{{ .Data.Cert }}|{{ index .CAChain 1 }}|{{ .CAChain }}|{{ printf \"%s\" .Data.CA }}|{{ range $i, $c := .Data.CAChain }}{{ $i }}{{ end }}|{{ if .Key }}key{{ end }}{{ end }}",
        false,
    ),
    (
        "pkiCert writes PEM again as Go does",
        "{{- with pkiCert \"pki/issue/odd\" \"common_name=web.example\" \"ttl=24h\" -}}\n{{ .Cert }}{{ .Key }}\n{{- end }}",
        false,
    ),
    (
        "pkiCert without a certificate errors",
        "{{ with pkiCert \"pki/issue/ca-only\" \"common_name=web.example\" \"ttl=24h\" }}{{ .CA }}{{ end }}",
        false,
    ),
    (
        "pkiCert index out of range errors",
        "{{ with pkiCert \"pki/issue/web\" \"common_name=web.example\" \"ttl=24h\" }}{{ index .CAChain 2 }}{{ end }}",
        false,
    ),
];

/// Values for `toJSON` / `toJSONPretty` (Go's encoder, HTML escaping).
fn json_cases() -> Vec<Value> {
    vec![
        json!({"b": "<script>&amp;</script>", "a": ["x", 1, true, null], "c": {}, "d": [], "e": "\u{2028}\u{2029} é ☃ \n\t\r\"\\ \u{1}"}),
        json!({"nested": {"z": {"y": [1, 2, {"x": "<>"}]}}, "n": 12_345_678_901_i64, "neg": -7}),
        json!("plain"),
        json!([]),
        // Numbers as Vault sent them: the parser keeps their text.
        serde_json::from_str(
            r#"{"d": 1.50, "z": -0, "big": 123456789012345678901234567890, "l": [0.10, -2]}"#,
        )
        .unwrap(),
    ]
}

fn secrets_for(case: &str) -> Vec<(String, Vec<String>, Value)> {
    let _ = case;
    let issue = |path: &str, response| {
        (
            path.to_owned(),
            vec!["common_name=web.example".to_owned(), "ttl=24h".to_owned()],
            response,
        )
    };
    vec![
        ("secret/data/app".to_owned(), vec![], kv2()),
        (
            "secret/data/none".to_owned(),
            vec![],
            json!({"lease_id": "", "lease_duration": 0, "renewable": false, "data": null}),
        ),
        issue("pki/issue/web", pki()),
        issue("pki/issue/odd", pki_odd()),
        issue("pki/issue/ca-only", pki_ca_only()),
    ]
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct GoResult {
    output: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn go_input() -> Value {
    let mut cases: Vec<Value> = CASES
        .iter()
        .map(|(name, template, strict)| {
            let secrets: Vec<Value> = secrets_for(name)
                .into_iter()
                .map(|(path, args, response)| json!({"path": path, "args": args, "response": response}))
                .collect();
            json!({"template": template, "strict": strict, "secrets": secrets})
        })
        .collect();
    cases.extend(json_cases().into_iter().map(|v| json!({"json": v})));
    Value::Array(cases)
}

/// Go's outputs: from `go run` when Go is installed, else the checked-in
/// file.
fn go_outputs() -> Vec<GoResult> {
    let expected_file = fixture("gotemplate/expected.json");
    let go = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        go || std::env::var("CI").as_deref() != Ok("true"),
        "CI=true needs a Go toolchain for the byte-for-byte comparison (.ci/run installs golang-go)"
    );
    if !go {
        eprintln!(
            "no Go toolchain: comparing with {}",
            expected_file.display()
        );
        return serde_json::from_str(&std::fs::read_to_string(&expected_file).unwrap()).unwrap();
    }
    let cache = std::env::temp_dir().join("vcd-go-cache");
    let mut child = Command::new("go")
        .args(["run", "main.go"])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gotemplate"))
        .env("GOCACHE", &cache)
        .env("GOPATH", cache.join("path"))
        .env("GO111MODULE", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_vec(&go_input()).unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &input).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "go run failed");
    let results: Vec<GoResult> = serde_json::from_slice(&out.stdout).unwrap();
    if std::env::var("VCD_UPDATE_GO_EXPECTED").as_deref() == Ok("1") {
        std::fs::write(
            &expected_file,
            serde_json::to_string_pretty(&results).unwrap() + "\n",
        )
        .unwrap();
    }
    let checked_in: Vec<GoResult> =
        serde_json::from_str(&std::fs::read_to_string(&expected_file).unwrap()).unwrap();
    assert_eq!(
        results,
        checked_in,
        "Go's output changed: regenerate {}",
        expected_file.display()
    );
    results
}

/// Renders a converted template with the driver's renderer.
fn render(template: &str, secrets: &[(String, Vec<String>, Value)]) -> Result<String, String> {
    let renderer = Renderer::new();
    let sources = vec![(RelativePath::parse("out").unwrap(), template.to_owned())];
    let compiled = renderer.compile(&sources).map_err(|e| e.to_string())?;
    let responses: HashMap<SecretRequest, Value> = secrets
        .iter()
        .map(|(path, args, response)| {
            let args: serde_json::Map<String, Value> = args
                .iter()
                .map(|a| {
                    let (k, v) = a.split_once('=').unwrap();
                    (k.to_owned(), Value::String(v.to_owned()))
                })
                .collect();
            (SecretRequest::new(path, &args).unwrap(), response.clone())
        })
        .collect();
    let Rendered::Files(files) = renderer
        .render(&compiled, responses)
        .map_err(|e| e.to_string())?
    else {
        return Err("the template asks for a secret not given".to_owned());
    };
    Ok(String::from_utf8(files[0].1.expose().clone()).unwrap())
}

/// Every construct in the table, converted and rendered by the driver,
/// gives exactly Go's bytes, or fails where Go fails.
#[test]
fn go_template_constructs_match_go_byte_for_byte() {
    let go = go_outputs();
    for (i, (name, template, strict)) in CASES.iter().enumerate() {
        let converted = gotemplate::convert(
            template,
            gotemplate::GoOptions {
                error_on_missing_key: *strict,
            },
        )
        .unwrap_or_else(|e| panic!("{name}: refused: {e}"));
        let driver = render(&converted.handlebars, &secrets_for(name));
        // Cases named "… errors" fail in Go, and only those: a case cannot
        // pass by failing on both sides for unrelated reasons unnoticed.
        assert_eq!(
            go[i].error.is_some(),
            name.ends_with(" errors"),
            "{name}: Go gave {:?}",
            go[i]
        );
        match (&go[i].error, driver) {
            (None, Ok(out)) => assert_eq!(
                out, go[i].output,
                "{name}: converted as {:?}",
                converted.handlebars
            ),
            (Some(_), Err(_)) => {}
            (go_err, driver) => panic!(
                "{name}: Go gave {go_err:?} / {:?}, the driver {driver:?} (template {:?})",
                go[i].output, converted.handlebars
            ),
        }
    }
    for (j, value) in json_cases().iter().enumerate() {
        let (compact, pretty) = go[CASES.len() + j].output.split_once('\0').unwrap();
        assert_eq!(
            go_helpers::to_go_json("toGoJson", value).unwrap(),
            Value::String(compact.to_owned())
        );
        assert_eq!(
            go_helpers::to_go_json_pretty("toGoJsonPretty", value).unwrap(),
            Value::String(pretty.to_owned())
        );
    }
}

/// A missing key prints `<no value>` in the agent's default mode and fails
/// the render with `error_on_missing_key`, as in Go (checked without Go:
/// the table above compares both with Go's output).
#[test]
fn missing_keys_print_no_value_or_fail_as_in_go() {
    let template = "{{ with secret \"secret/data/app\" }}{{ .Data.data.missing }}{{ end }}";
    let default = gotemplate::convert(template, gotemplate::GoOptions::default()).unwrap();
    assert_eq!(
        default.handlebars,
        "{{#each (goWith (goSecret (secret \"secret/data/app\"))) as |w1|}}{{goOut (goDot w1 \"Data\" \"data\" \"missing\")}}{{else}}{{/each}}"
    );
    assert_eq!(
        render(&default.handlebars, &secrets_for("")).unwrap(),
        "<no value>"
    );
    let strict = gotemplate::convert(
        template,
        gotemplate::GoOptions {
            error_on_missing_key: true,
        },
    )
    .unwrap();
    let err = render(&strict.handlebars, &secrets_for("")).unwrap_err();
    assert!(
        err.contains("map has no entry for key \"missing\""),
        "{err}"
    );
}

/// Every refused construct, with line, column and the construct named.
#[test]
fn refused_constructs_name_line_column_and_construct() {
    for (template, expected) in [
        (
            "{{ with pkiCert \"pki/issue/x\" }}{{ .Cert }}{{ end }}",
            "pkiCert: pkiCert needs `key=value` arguments",
        ),
        (
            "{{ with pkiCert \"pki/issue/x\" \"common_name=a\" }}{{ .Cert }}{{ end }}\n{{ with pkiCert \"pki/issue/x\" \"common_name=b\" }}{{ .Key }}{{ end }}",
            "line 2, column 1: pkiCert \"pki/issue/x\": a second pkiCert on the same path with other arguments",
        ),
        (
            "{{ with secret \"a\" \"\" }}{{ end }}",
            "secret: every argument is empty",
        ),
        (
            "{{ define \"x\" }}{{ template \"x\" }}{{ end }}{{ template \"x\" }}",
            "a template that calls itself",
        ),
        ("{{ continue }}", "{{continue}}: outside a range"),
        ("x\n {{ $y }}", "line 2, column 2: $y: undefined variable"),
        (
            "{{ with secret \"a\" }}{{ if .Data.data.a }}{{ else with .Data.data.b }}{{ end }}{{ end }}",
            "Go takes `else with` in a `with` only",
        ),
        (
            "{{ env \"HOME\" }}",
            "line 1, column 1: function `env`: refused for security: reads the environment",
        ),
        (
            "{{ file \"/etc/passwd\" }}",
            "function `file`: refused for security: reads a file of the node",
        ),
        ("{{ key \"a\" }}", "function `key`: a Consul function"),
        ("{{ nosuch 1 }}", "function `nosuch`: not a function"),
        (
            "{{ with pkiCert .Data \"common_name=a\" }}{{ end }}",
            "a computed pkiCert argument",
        ),
        ("{{ with secret \"a\" }}x", "with: no matching {{end}}"),
        ("{{ end }}", "unexpected {{end}}"),
        (
            "{{ with secret \"a\" \"notkv\" }}{{ end }}",
            "write arguments must be `key=value`",
        ),
        ("{{ \"a\\q\" }}", "escape `\\q`"),
        ("{{ \"a\\xff\" }}", "a byte that is not UTF-8"),
        ("{{/* open", "unclosed comment"),
        ("{{ with secret \"a\" }}{{ .Data.data.x", "unclosed action"),
    ] {
        let err = gotemplate::convert(template, gotemplate::GoOptions::default())
            .map(|c| c.handlebars)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{template:?}: {err}");
        assert!(err.starts_with("line "), "{template:?}: {err}");
    }
}

const SIDECAR: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: agent
  namespace: shop
data:
  agent.hcl: |
    vault {
      address   = "https://vault.internal:8200"
      namespace = "team"
    }
    auto_auth {
      method "jwt" {
        mount_path = "auth/jwt-k8s"
        config = {
          role = "app"
          path = "/var/run/secrets/kubernetes.io/serviceaccount/token"
        }
      }
      sink "file" {
        config = { path = "/vault/out/.token" }
      }
    }
    template_config {
      static_secret_render_interval = "1m"
    }
    template {
      source               = "/etc/vault/app.tpl"
      destination          = "/vault/out/app/config.json"
      perms                = "0640"
      error_on_missing_key = true
    }
  app.tpl: |
    {{ with secret "kv/data/shop/db" }}{{ .Data.data | toJSONPretty }}{{ end }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
  namespace: shop
spec:
  replicas: 2
  template:
    metadata:
      labels: {app: shop}
    spec:
      serviceAccountName: shop
      volumes:
        - name: agent-config
          configMap: {name: agent}
        - name: out
          emptyDir: {medium: Memory}
      containers:
        - name: app
          image: shop:1
          volumeMounts:
            - {name: out, mountPath: /config}
        - name: vault-agent
          image: hashicorp/vault:1.18
          command: ["vault", "agent", "-config", "/etc/vault/agent.hcl"]
          volumeMounts:
            - {name: agent-config, mountPath: /etc/vault}
            - {name: out, mountPath: /vault/out}
"#;

/// A Deployment with an agent sidecar: `source` read from the ConfigMap,
/// the sink inside the shared volume becomes `tokenFile`, jwt mount,
/// namespace, interval and perms carry over, and the volume keeps
/// refreshing.
#[test]
fn sidecar_deployment_converts_every_agent_setting() {
    let docs = convert::parse_yaml(SIDECAR, "in").unwrap();
    let options = Options::parse(&[
        "--vault-addr".to_owned(),
        "https://vault.internal:8200/".to_owned(),
    ])
    .unwrap();
    let (out, report) = convert::convert_documents(docs, &options, &DriverChecks).unwrap();
    let docs = convert::parse_yaml(&out, "out").unwrap();
    assert_eq!(docs.len(), 2);
    let spec = &docs[1]["spec"]["template"]["spec"];
    let containers = spec["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1, "the sidecar is gone");
    assert_eq!(
        containers[0]["volumeMounts"][0]["mountPath"].as_str(),
        Some("/config")
    );
    let volumes = spec["volumes"].as_sequence().unwrap();
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0]["name"].as_str(), Some("out"));
    let attributes: Vec<(String, String)> = volumes[0]["csi"]["volumeAttributes"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_owned(),
                v.as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("fileMode", "0640"),
        ("roleName", "app"),
        ("staticSecretRefreshInterval", "1m"),
        (
            "template.app/config.json",
            "{{#each (goWith (goSecret (secret \"kv/data/shop/db\"))) as |w1|}}{{goOut (goCall \"toJSONPretty\" (goDot w1 \"Data\" \"data\" missingkey=\"error\"))}}{{else}}{{/each}}\n",
        ),
        ("tokenFile", ".token"),
        ("vaultAuthMountPath", "jwt-k8s"),
        ("vaultNamespace", "team"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(attributes, expected);
    let summary = report.summary(&options);
    assert!(
        !summary.contains("must be allowed"),
        "the driver's own address needs no allowing: {summary}"
    );
    assert!(
        !summary.contains("<no value>"),
        "error_on_missing_key = true matches the driver: {summary}"
    );
}

/// A `CronJob`'s pod template is found and converted like a Pod's.
#[test]
fn cronjob_pod_templates_are_converted() {
    let cron = r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: report}
spec:
  schedule: "@daily"
  jobTemplate:
    spec:
      template:
        metadata:
          annotations:
            vault.hashicorp.com/agent-inject: "true"
            vault.hashicorp.com/role: report
            vault.hashicorp.com/agent-inject-secret-creds: database/creds/report
            vault.hashicorp.com/agent-inject-template-creds: '{{ with secret "database/creds/report" }}{{ .Data.username }}{{ end }}'
        spec:
          restartPolicy: Never
          containers:
            - {name: job, image: report:1}
"#;
    let docs = convert::parse_yaml(cron, "in").unwrap();
    let (out, _) = convert::convert_documents(docs, &options(), &DriverChecks).unwrap();
    let docs = convert::parse_yaml(&out, "out").unwrap();
    let template = &docs[0]["spec"]["jobTemplate"]["spec"]["template"];
    assert!(template["metadata"].get("annotations").is_none());
    assert_eq!(
        template["spec"]["volumes"][0]["name"].as_str(),
        Some("vault-secrets")
    );
    assert_eq!(
        template["spec"]["volumes"][0]["csi"]["volumeAttributes"]["template.creds"].as_str(),
        Some(
            "{{#each (goWith (goSecret (secret \"database/creds/report\"))) as |w1|}}{{goOut (goDot w1 \"Data\" \"username\")}}{{else}}{{/each}}"
        )
    );
}

/// The constructs a migrating user tried that convert refused before:
/// converted, rendered by the driver, the bytes Go's text/template and
/// consul-template write (Go 1.22+, as the agent is built).
#[test]
fn constructs_users_write_convert_exactly() {
    let kv = json!({
        "request_id": "r1", "lease_id": "", "lease_duration": 0, "renewable": false,
        "data": {"data": {"user": "app", "zero": 0, "flag": false, "csv": " a,b ,c ",
                          "list": ["x", "y"], "json": "{\"k\": [1, 2.5]}", "pw": "  s3cret ",
                          "bin": "/w==", "wrapped": "aGVs\nbG8=", "empty": ""},
                 "metadata": {"version": 1}},
        "warnings": null
    });
    let secrets = vec![("secret/data/app".to_owned(), Vec::new(), kv)];
    let with = |body: &str| format!("{{{{ with secret \"secret/data/app\" }}}}{body}{{{{ end }}}}");
    let cases: Vec<(String, &[u8])> = vec![
        (with("{{ .Data.data.user | toUpper }}"), b"APP"),
        (with("{{ if not .Data.data.flag }}off{{ end }}"), b"off"),
        (
            with("{{ if .Data.data.zero }}zero is true{{ end }}"),
            b"zero is true",
        ),
        (
            with("{{ if and .Data.data.user .Data.data.empty }}x{{ else }}y{{ end }}"),
            b"y",
        ),
        (with("{{ or .Data.data.empty \"default\" }}"), b"default"),
        (
            with("{{ $u := .Data.data.user }}{{ if true }}{{ $u = \"z\" }}{{ end }}{{ $u }}"),
            b"z",
        ),
        (
            with("{{ printf \"%-6s|%5s|%q\" .Data.data.user \"ab\" .Data.data.user }}"),
            b"app   |   ab|\"app\"",
        ),
        (with("{{ printf \"%.2f\" 3.14159 }}"), b"3.14"),
        (
            with("{{ len .Data.data.user }} {{ len .Data.data.list }}"),
            b"3 2",
        ),
        (
            with("{{ join \",\" (split \",\" .Data.data.csv) }}"),
            b"a,b ,c",
        ),
        (
            with("{{ .Data.data.csv | trimSpace | replaceAll \",\" \";\" }}"),
            b"a;b ;c",
        ),
        (with("{{ contains \"pp\" .Data.data.user }}"), b"true"),
        (with("{{ (parseJSON .Data.data.json).k }}"), b"[1 2.5]"),
        (
            with("{{ .Data.data.list | toUnescapedJSON }}"),
            b"[\"x\",\"y\"]",
        ),
        (with("{{ base64Decode .Data.data.wrapped }}"), b"hello"),
        (with("{{ base64Decode .Data.data.bin }}"), b"\xff"),
        (with("{{ sprig_upper .Data.data.user }}"), b"APP"),
        (with("C:\\{{ .Data.data.user }}"), b"C:\\app"),
        (with("{{ \"{{\" }}"), b"{{"),
        ("{{ . }}".to_owned(), b"<no value>"),
        (
            "{{ define \"u\" }}[{{ . }}]{{ end }}".to_owned()
                + &with("{{ template \"u\" .Data.data.user }}"),
            b"[app]",
        ),
        (
            "{{ define \"u\" }}{{ . }}{{ end }}".to_owned()
                + &with("{{ executeTemplate \"u\" .Data.data.user | toUpper }}"),
            b"APP",
        ),
        (
            with("{{ range $i, $e := .Data.data.list }}{{ $i }}={{ $e }};{{ end }}"),
            b"0=x;1=y;",
        ),
    ];
    let mut failures = Vec::new();
    for (template, expected) in &cases {
        let converted = match gotemplate::convert(template, gotemplate::GoOptions::default()) {
            Ok(c) => c.handlebars,
            Err(e) => {
                failures.push(format!("{template}: refused: {e}"));
                continue;
            }
        };
        match render_bytes(&converted, &secrets) {
            Ok(bytes) if bytes == *expected => {}
            Ok(bytes) => failures.push(format!(
                "{template}: {:?} (handlebars {converted})",
                String::from_utf8_lossy(&bytes)
            )),
            Err(e) => failures.push(format!("{template}: {e} (handlebars {converted})")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn render_bytes(
    template: &str,
    secrets: &[(String, Vec<String>, Value)],
) -> Result<Vec<u8>, String> {
    let renderer = Renderer::new();
    let sources = vec![(RelativePath::parse("out").unwrap(), template.to_owned())];
    let compiled = renderer.compile(&sources).map_err(|e| e.to_string())?;
    let responses: HashMap<SecretRequest, Value> = secrets
        .iter()
        .map(|(path, _, response)| {
            (
                SecretRequest::new(path, &serde_json::Map::new()).unwrap(),
                response.clone(),
            )
        })
        .collect();
    match renderer
        .render(&compiled, responses)
        .map_err(|e| e.to_string())?
    {
        Rendered::Files(files) => Ok(files[0].1.expose().clone()),
        Rendered::NeedsSecrets(more) => Err(format!("{} more secrets asked for", more.len())),
    }
}

/// The `OpenBao` injector (`openbao.org/` annotations) converts like Vault's,
/// and a `kill -HUP` reload command becomes `signal` + `signalProcess`.
#[test]
fn openbao_injector_and_reload_commands_convert() {
    let yaml = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  annotations:
    openbao.org/agent-inject: "true"
    openbao.org/role: web
    openbao.org/agent-inject-secret-db: database/creds/app
    openbao.org/agent-inject-template-db: "{{ with secret \"database/creds/app\" }}{{ .Data.username }}{{ end }}"
    openbao.org/agent-inject-command-db: kill -HUP $(pidof nginx)
spec:
  containers:
    - name: nginx
      image: nginx
"#;
    let docs = convert::parse_yaml(yaml, "in").unwrap();
    let (out, report) = convert::convert_documents(docs, &options(), &DriverChecks).unwrap();
    let attributes = volume_attributes(&out);
    assert_eq!(attributes.get("signal").map(String::as_str), Some("SIGHUP"));
    assert_eq!(
        attributes.get("signalProcess").map(String::as_str),
        Some("nginx")
    );
    assert_eq!(attributes.get("roleName").map(String::as_str), Some("web"));
    assert!(!out.contains("openbao.org/"), "{out}");
    let summary = report.summary(&options());
    assert!(
        summary.contains("delete the pod and create it again"),
        "{summary}"
    );
    assert!(!summary.contains("no `data/` segment"), "{summary}");
}

/// An `OpenBao` agent sidecar (`bao agent`, `openbao/openbao`) converts
/// like Vault's: `remove_jwt_after_reading` is accepted (and noted), the
/// projected token volume only the agent mounted is dropped, and a KV v2
/// path without `data/` passes through unchanged, without a warning.
#[test]
fn openbao_agent_pods_convert_and_lose_the_agents_volumes() {
    let yaml = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: bao}
data:
  agent.hcl: |
    auto_auth {
      method "kubernetes" {
        config = {
          role = "web"
          remove_jwt_after_reading = false
        }
      }
    }
    template {
      contents    = "{{ with secret \"secret/myapp/config\" }}{{ .Data.data.user }}{{ end }}"
      destination = "/out/user"
    }
---
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  volumes:
    - {name: cfg, configMap: {name: bao}}
    - {name: out, emptyDir: {}}
    - name: bao-token
      projected:
        sources:
          - serviceAccountToken: {path: token, audience: openbao}
  containers:
    - name: web
      image: nginx
      volumeMounts: [{name: out, mountPath: /usr/share/nginx/html}]
    - name: bao
      image: openbao/openbao:2.7.2
      args: ["bao", "agent", "-config=/etc/bao/agent.hcl"]
      volumeMounts:
        - {name: cfg, mountPath: /etc/bao}
        - {name: out, mountPath: /out}
        - {name: bao-token, mountPath: /var/run/secrets/openbao}
"#;
    let docs = convert::parse_yaml(yaml, "in").unwrap();
    let (out, report) = convert::convert_documents(docs, &options(), &DriverChecks).unwrap();
    let pod = convert::parse_yaml(&out, "out")
        .unwrap()
        .into_iter()
        .find(|d| d["kind"] == "Pod")
        .unwrap();
    let volumes: Vec<&str> = pod["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(volumes, ["out"], "{out}");
    let template = pod["spec"]["volumes"][0]["csi"]["volumeAttributes"]["template.user"]
        .as_str()
        .unwrap();
    assert!(
        template.contains("(secret \"secret/myapp/config\")"),
        "{template}"
    );
    let summary = report.summary(&options());
    assert!(summary.contains("remove_jwt_after_reading"), "{summary}");
    assert!(
        summary.contains("volume bao-token was used only by the agent"),
        "{summary}"
    );
    assert!(
        summary.contains("delete the pod and create it again"),
        "{summary}"
    );
    assert!(!summary.contains("data/"), "{summary}");
}
