//! A pod annotated for the injector (Vault's `vault-k8s`, or OpenBao's
//! `openbao-k8s` with `openbao.org/` annotations of the same names): its
//! annotations become one CSI volume at the injector's mount path.

use serde_norway::{Mapping, Value};

use super::{
    Attributes, add_template, check_with_renderer, csi_volume, finish_address, perms_to_mode,
    refuse, str_at,
};
use crate::gotemplate::GoOptions;
use crate::{Driver, Options, Report};

/// The injector's annotations of one pod: the prefix, and (name without
/// the prefix, value) pairs.
struct Annotations<'a> {
    prefix: &'a str,
    pairs: Vec<(String, String)>,
}

impl Annotations<'_> {
    fn get(&self, key: &str) -> Option<String> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
}

/// The templates for a secret without its own template (vault-k8s,
/// `agent/config.go`); `%s` is the secret's path.
fn default_template(annotations: &Annotations<'_>) -> Result<&'static str, String> {
    match annotations.get("agent-inject-default-template").as_deref() {
        None | Some("map") => Ok(
            "{{ with secret \"%s\" }}{{ range $k, $v := .Data }}{{ $k }}: {{ $v }}\n{{ end }}{{ end }}",
        ),
        Some("json") => Ok("{{ with secret \"%s\" }}{{ .Data | toJSON }}\n{{ end }}"),
        Some(other) => refuse(format!(
            "{}agent-inject-default-template {other:?} is not converted (the injector knows `map` and `json`)",
            annotations.prefix
        )),
    }
}

/// Login, namespace, refresh and token settings.
fn settings(
    annotations: &Annotations<'_>,
    attrs: &mut Attributes,
    object: &str,
    report: &mut Report,
) -> Result<(), String> {
    let prefix = annotations.prefix;
    let Some(role) = annotations.get("role") else {
        return refuse(format!(
            "{prefix}role is missing: the driver needs roleName"
        ));
    };
    attrs.set("roleName", role.clone());
    let auth_path = annotations
        .get("auth-path")
        .unwrap_or_else(|| "auth/kubernetes".to_owned());
    let mount = auth_path.trim_start_matches('/').trim_end_matches('/');
    if mount != "auth/kubernetes" && mount != "kubernetes" {
        attrs.set("vaultAuthMountPath", mount.trim_start_matches("auth/"));
    }
    report
        .roles
        .push((object.to_owned(), role, mount.to_owned()));
    if let Some(ns) = annotations.get("namespace") {
        attrs.set("vaultNamespace", ns);
    }
    if annotations
        .get("agent-pre-populate-only")
        .is_some_and(|v| v == "true")
    {
        attrs.set("refresh", "false");
    }
    if annotations
        .get("tls-skip-verify")
        .is_some_and(|v| v == "true")
    {
        return refuse(format!(
            "{prefix}tls-skip-verify: the driver always verifies Vault's certificate (it sends every pod's token there); give the driver Vault's CA with --vault-ca-cert instead"
        ));
    }
    if annotations
        .get("agent-inject-token")
        .is_some_and(|v| v == "true")
    {
        attrs.set("tokenFile", "token");
    }
    Ok(())
}

/// One template per `agent-inject-secret-<name>`; the number of files.
fn templates(
    driver: &dyn Driver,
    annotations: &Annotations<'_>,
    attrs: &mut Attributes,
    report: &mut Report,
) -> Result<usize, String> {
    let default_template = default_template(annotations)?;
    let mut perms = Vec::new();
    let mut files = 0;
    for (key, value) in &annotations.pairs {
        let Some(name) = key.strip_prefix("agent-inject-secret-") else {
            continue;
        };
        let file = annotations
            .get(&format!("agent-inject-file-{name}"))
            .unwrap_or_else(|| name.to_owned());
        let source = annotations
            .get(&format!("agent-inject-template-{name}"))
            .unwrap_or_else(|| default_template.replace("%s", value));
        let strict = annotations
            .get(&format!("error-on-missing-key-{name}"))
            .is_some_and(|v| v == "true");
        let options = GoOptions {
            error_on_missing_key: strict,
        };
        let what = format!("annotation agent-inject-template-{name}");
        add_template(driver, attrs, &file, &source, options, &what, report)?;
        files += 1;
        if let Some(p) = annotations.get(&format!("agent-inject-perms-{name}")) {
            perms.push(p);
        }
    }
    if files == 0 {
        return refuse(format!(
            "no {}agent-inject-secret-<name> annotations: nothing to render",
            annotations.prefix
        ));
    }
    if let Some(mode) = perms_to_mode(&perms)? {
        attrs.set("fileMode", mode);
    }
    Ok(files)
}

/// Annotations the driver has an answer to.
fn known(key: &str) -> bool {
    matches!(
        key,
        "agent-inject"
            | "role"
            | "auth-path"
            | "namespace"
            | "agent-pre-populate-only"
            | "agent-pre-populate"
            | "tls-skip-verify"
            | "agent-inject-token"
            | "service"
            | "secret-volume-path"
            | "agent-inject-containers"
            | "agent-inject-default-template"
    ) || [
        "agent-inject-secret-",
        "agent-inject-template-",
        "agent-inject-file-",
        "agent-inject-perms-",
        "error-on-missing-key-",
        "agent-inject-command-",
    ]
    .iter()
    .any(|p| key.starts_with(p))
}

/// Reload commands, and annotations refused or dropped.
fn check_annotations(
    annotations: &Annotations<'_>,
    attrs: &mut Attributes,
    object: &str,
    report: &mut Report,
) -> Result<(), String> {
    let prefix = annotations.prefix;
    for (key, value) in &annotations.pairs {
        if let Some(name) = key.strip_prefix("agent-inject-command-") {
            let (signal, process) = reload_command(value).ok_or_else(|| format!(
                "{prefix}agent-inject-command-{name} = {value:?}: the driver runs no commands in the pod (a command would run with the driver's rights on the node); it can signal a process after a change: write `kill -HUP <process>` (or -USR1, -TERM …, `pkill -HUP <process>`, `killall -HUP <process>`), which becomes the volume's `signal` and `signalProcess`, or have the application watch the file (it is replaced atomically)"
            ))?;
            if attrs
                .map
                .get("signalProcess")
                .is_some_and(|p| *p != process)
            {
                return refuse(
                    "two agent-inject-command annotations signal different processes; the driver signals one process per volume",
                );
            }
            attrs.set("signal", signal);
            attrs.set("signalProcess", process);
        } else if key == "agent-pre-populate" && value == "false" {
            return refuse(format!(
                "{prefix}agent-pre-populate: \"false\" (no init container) is not converted: the driver always renders before the pod starts, which is what the application sees anyway once the volume is mounted; drop the annotation"
            ));
        } else if droppable(key) {
            report.notes.push(format!(
                "{object}: {prefix}{key} dropped (it tuned the agent container)"
            ));
        } else if !known(key) {
            return refuse(format!(
                "{prefix}{key} is not converted: the driver has no equivalent setting; drop the annotation or render this pod with the agent"
            ));
        }
    }
    Ok(())
}

/// Converts a pod template annotated for the injector.
pub(super) fn convert_injected(
    driver: &dyn Driver,
    template: &mut Value,
    prefix: &str,
    object: &str,
    options: &Options,
    report: &mut Report,
) -> Result<(), String> {
    let pairs: Vec<(String, String)> = template
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    let k = k.as_str()?.strip_prefix(prefix)?;
                    let v = match v {
                        Value::String(s) => s.clone(),
                        Value::Bool(b) => b.to_string(),
                        Value::Number(n) => n.to_string(),
                        _ => return None,
                    };
                    Some((k.to_owned(), v))
                })
                .collect()
        })
        .unwrap_or_default();
    let annotations = Annotations { prefix, pairs };
    let mut attrs = Attributes::default();
    settings(&annotations, &mut attrs, object, report)?;
    let files = templates(driver, &annotations, &mut attrs, report)?;
    check_annotations(&annotations, &mut attrs, object, report)?;
    finish_address(
        &mut attrs,
        annotations.get("service").as_deref(),
        object,
        options,
        report,
    );
    check_with_renderer(driver, &attrs)?;
    let mount_path = annotations
        .get("secret-volume-path")
        .unwrap_or_else(|| "/vault/secrets".to_owned());
    let only: Option<Vec<String>> = annotations
        .get("agent-inject-containers")
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    let mounted = rewrite(
        template,
        prefix,
        &mount_path,
        only.as_deref(),
        &attrs,
        options,
    )?;
    report.converted.push(format!(
        "{object}: injector annotations replaced by CSI volume {VOLUME} ({files} file(s)) at {mount_path} in {}",
        mounted.join(", ")
    ));
    Ok(())
}

/// The volume's name in the converted pod.
const VOLUME: &str = "vault-secrets";

/// Rewrites the pod: the injector's annotations go, the volume comes, the
/// containers mount it. The containers that mount it.
fn rewrite(
    template: &mut Value,
    prefix: &str,
    mount_path: &str,
    only: Option<&[String]>,
    attrs: &Attributes,
    options: &Options,
) -> Result<Vec<String>, String> {
    if let Some(Value::Mapping(ann)) = template
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
    {
        ann.retain(|k, _| !k.as_str().is_some_and(|k| k.starts_with(prefix)));
        if ann.is_empty()
            && let Some(Value::Mapping(meta)) = template.get_mut("metadata")
        {
            meta.shift_remove("annotations");
        }
    }
    let spec = template
        .get_mut("spec")
        .and_then(Value::as_mapping_mut)
        .ok_or("the pod template has no spec")?;
    if spec
        .get("volumes")
        .and_then(Value::as_sequence)
        .is_some_and(|vs| vs.iter().any(|v| str_at(v, &["name"]) == Some(VOLUME)))
    {
        return refuse(format!("the pod already has a volume named {VOLUME}"));
    }
    let mut mounted = Vec::new();
    if let Some(Value::Sequence(containers)) = spec.get_mut("containers") {
        for c in containers.iter_mut() {
            let name = str_at(c, &["name"]).unwrap_or_default().to_owned();
            if only.is_some_and(|o| !o.contains(&name)) {
                continue;
            }
            let Some(map) = c.as_mapping_mut() else {
                continue;
            };
            let mounts = map
                .entry("volumeMounts".into())
                .or_insert_with(|| Value::Sequence(Vec::new()));
            if let Value::Sequence(mounts) = mounts {
                let mut m = Mapping::new();
                m.insert("name".into(), Value::from(VOLUME));
                m.insert("mountPath".into(), Value::from(mount_path));
                m.insert("readOnly".into(), Value::Bool(true));
                mounts.push(Value::Mapping(m));
            }
            mounted.push(name);
        }
    }
    let volumes = spec
        .entry("volumes".into())
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if let Value::Sequence(volumes) = volumes {
        volumes.push(csi_volume(VOLUME, attrs, options));
    }
    Ok(mounted)
}

/// A reload command the driver can do itself: `kill -HUP <process>`,
/// `pkill -HUP <process>`, `killall -HUP <process>` (or `-s HUP`,
/// `-SIGHUP`, `$(pidof <process>)` as the target): the signal's name and
/// the process name.
fn reload_command(command: &str) -> Option<(String, String)> {
    let command = command
        .trim()
        .trim_start_matches("sh -c ")
        .trim_matches(['"', '\''])
        .replace("$(pidof ", "$(pidof:");
    let words: Vec<&str> = command.split_whitespace().collect();
    let (tool, rest) = words.split_first()?;
    if !matches!(
        *tool,
        "kill" | "pkill" | "killall" | "/bin/kill" | "/usr/bin/pkill"
    ) {
        return None;
    }
    let (signal, target) = match rest {
        ["-s", signal, target] => (*signal, *target),
        [flag, target] if flag.starts_with('-') => (&flag[1..], *target),
        _ => return None,
    };
    let signal = signal.trim_start_matches("SIG").to_ascii_uppercase();
    if !matches!(
        signal.as_str(),
        "HUP" | "INT" | "QUIT" | "USR1" | "USR2" | "TERM" | "WINCH"
    ) {
        return None;
    }
    let process = target
        .strip_prefix("$(pidof:")
        .and_then(|t| t.strip_suffix(')'))
        .or_else(|| (*tool != "kill").then_some(target))?;
    let valid = !process.is_empty()
        && process
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    valid.then(|| (format!("SIG{signal}"), process.to_owned()))
}

/// Annotations of the injector the converter drops silently: they tune the
/// agent container that no longer exists.
fn droppable(key: &str) -> bool {
    [
        "agent-inject-status",
        "agent-limits-",
        "agent-requests-",
        "agent-image",
        "agent-run-as-",
        "agent-init-first",
        "agent-set-security-context",
        "agent-share-process-namespace",
        "agent-revoke-",
        "agent-cache-enable",
        "log-level",
        "log-format",
        "preserve-secret-case",
        "agent-json-patch",
        "agent-init-json-patch",
    ]
    .iter()
    .any(|p| key.starts_with(p))
}
