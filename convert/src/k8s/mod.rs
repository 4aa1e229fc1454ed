//! Kubernetes objects: finding pod specs, Vault Agent containers and
//! injector annotations, and rewriting the pod around one CSI volume.

use std::collections::BTreeMap;

use serde_norway::{Mapping, Value};

use super::agent::{self, AgentConfig};
use super::gotemplate::{self, GoOptions};
use super::{Driver, Options, Report};

/// The annotation prefixes of the injectors: Vault's (`vault-k8s`) and
/// OpenBao's fork (`openbao-k8s`), whose annotations have the same names.
const INJECTORS: [&str; 2] = ["vault.hashicorp.com/", "openbao.org/"];

/// One refused object: which, and why.
#[derive(Debug, Clone)]
pub struct Refused {
    /// `Kind/name`.
    pub object: String,
    /// What could not be converted.
    pub reason: String,
}

/// `ConfigMap`s in the input, by namespace (empty: unspecified) and name.
#[derive(Default)]
pub struct ConfigMaps {
    maps: Vec<(String, String, Mapping)>,
}

impl ConfigMaps {
    /// Collects every ConfigMap's `data`.
    pub fn collect(docs: &[Value]) -> Self {
        let mut maps = Vec::new();
        for doc in docs {
            if str_at(doc, &["kind"]) == Some("ConfigMap") {
                let ns = str_at(doc, &["metadata", "namespace"])
                    .unwrap_or_default()
                    .to_owned();
                let name = str_at(doc, &["metadata", "name"])
                    .unwrap_or_default()
                    .to_owned();
                let data = doc
                    .get("data")
                    .and_then(Value::as_mapping)
                    .cloned()
                    .unwrap_or_default();
                maps.push((ns, name, data));
            }
        }
        Self { maps }
    }

    fn get(&self, namespace: &str, name: &str) -> Option<&Mapping> {
        self.maps
            .iter()
            .find(|(ns, n, _)| {
                n == name && (ns.is_empty() || namespace.is_empty() || ns == namespace)
            })
            .map(|(_, _, data)| data)
    }
}

pub(crate) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for key in path {
        cur = cur.get(*key)?;
    }
    cur.as_str()
}

fn seq<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_sequence)
        .map_or(&[], Vec::as_slice)
}

/// The pod template of a workload: (metadata, spec) paths.
fn pod_paths(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => Some(&["spec", "template"]),
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

fn at_mut<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    let mut cur = v;
    for key in path {
        cur = cur.get_mut(*key)?;
    }
    Some(cur)
}

/// The result of converting one pod template.
pub struct PodConversion {
    /// `ConfigMap`s no longer used: (namespace, name).
    pub unused_config_maps: Vec<(String, String)>,
}

fn refuse<T>(reason: impl Into<String>) -> Result<T, String> {
    Err(reason.into())
}

/// Converts the pod template inside `doc`, if it has one that uses Vault
/// Agent. `Ok(None)` when there is nothing to convert.
pub fn convert_doc(
    driver: &dyn Driver,
    doc: &mut Value,
    config_maps: &ConfigMaps,
    options: &Options,
    report: &mut Report,
) -> Result<Option<PodConversion>, String> {
    let Some(kind) = str_at(doc, &["kind"]).map(str::to_owned) else {
        return Ok(None);
    };
    let Some(path) = pod_paths(&kind) else {
        return Ok(None);
    };
    let namespace = str_at(doc, &["metadata", "namespace"])
        .unwrap_or_default()
        .to_owned();
    let object = format!(
        "{kind}/{}",
        str_at(doc, &["metadata", "name"]).unwrap_or("?")
    );
    let Some(template) = at_mut(doc, path) else {
        return Ok(None);
    };
    let inject = INJECTORS.into_iter().find(|prefix| {
        template
            .get("metadata")
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(format!("{prefix}agent-inject").as_str()))
            .and_then(Value::as_str)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    });
    let injected = inject.is_some();
    let has_agent = template.get("spec").is_some_and(|spec| {
        ["initContainers", "containers"]
            .iter()
            .any(|k| seq(spec, k).iter().any(|c| agent_config_path(c).is_some()))
    });
    if injected && has_agent {
        return refuse(
            "the pod has both injector annotations and its own Vault Agent container; convert one of them first",
        );
    }
    if (injected || has_agent) && kind == "Pod" {
        report.bare_pods.push(object.clone());
    }
    if injected {
        convert_injected(
            driver,
            template,
            inject.unwrap_or(INJECTORS[0]),
            &object,
            options,
            report,
        )?;
        return Ok(Some(PodConversion {
            unused_config_maps: Vec::new(),
        }));
    }
    if has_agent {
        return convert_agent_pod(
            driver,
            template,
            &namespace,
            &object,
            config_maps,
            options,
            report,
        )
        .map(Some);
    }
    Ok(None)
}

/// The `-config` path of a container running `vault agent`.
fn agent_config_path(container: &Value) -> Option<String> {
    let words: Vec<&str> = seq(container, "command")
        .iter()
        .chain(seq(container, "args"))
        .filter_map(Value::as_str)
        .flat_map(str::split_whitespace)
        .collect();
    let image = str_at(container, &["image"]).unwrap_or_default();
    // Vault's agent (`vault agent`) or OpenBao's (`bao agent`, image
    // `openbao/openbao`).
    let is_vault = image.contains("vault")
        || image.contains("openbao")
        || words
            .iter()
            .any(|w| matches!(w.rsplit('/').next(), Some("vault" | "bao")));
    if !is_vault || !words.contains(&"agent") {
        return None;
    }
    for (i, word) in words.iter().enumerate() {
        let flag = word.trim_start_matches('-');
        if !word.starts_with('-') {
            continue;
        }
        if let Some(path) = flag.strip_prefix("config=") {
            return Some(path.to_owned());
        }
        if flag == "config" {
            return words.get(i + 1).map(|s| (*s).to_owned());
        }
    }
    None
}

/// The mount (volume name, mount path) of `container` that holds `path`:
/// the longest mount path that is a prefix of it.
fn mount_for<'a>(container: &'a Value, path: &str) -> Option<(&'a str, &'a str, String)> {
    let mut best: Option<(&str, &str, String)> = None;
    for mount in seq(container, "volumeMounts") {
        let (Some(name), Some(mount_path)) =
            (str_at(mount, &["name"]), str_at(mount, &["mountPath"]))
        else {
            continue;
        };
        let base = mount_path.trim_end_matches('/');
        let Some(rest) = path.strip_prefix(base) else {
            continue;
        };
        let Some(relative) = rest.strip_prefix('/') else {
            continue;
        };
        if best
            .as_ref()
            .is_none_or(|(_, p, _)| p.len() < mount_path.len())
        {
            best = Some((name, mount_path, relative.to_owned()));
        }
    }
    best
}

fn volume<'a>(spec: &'a Value, name: &str) -> Option<&'a Value> {
    seq(spec, "volumes")
        .iter()
        .find(|v| str_at(v, &["name"]) == Some(name))
}

/// Reads the file at `path` in the agent's container from a ConfigMap in
/// the input.
fn config_map_file(
    spec: &Value,
    container: &Value,
    path: &str,
    namespace: &str,
    config_maps: &ConfigMaps,
) -> Result<(String, String), String> {
    let Some((vol_name, _, relative)) = mount_for(container, path) else {
        return refuse(format!(
            "{path} is not in any volume the agent container mounts"
        ));
    };
    let Some(vol) = volume(spec, vol_name) else {
        return refuse(format!("volume {vol_name} is mounted but not defined"));
    };
    let Some(cm) = vol.get("configMap") else {
        return refuse(format!(
            "{path} comes from volume {vol_name}, which is not a ConfigMap: the converter reads agent files only from ConfigMaps in its input"
        ));
    };
    let cm_name = str_at(cm, &["name"]).unwrap_or_default();
    let items = seq(cm, "items");
    let key = if items.is_empty() {
        relative.clone()
    } else {
        match items
            .iter()
            .find(|i| str_at(i, &["path"]) == Some(relative.as_str()))
        {
            Some(item) => str_at(item, &["key"]).unwrap_or_default().to_owned(),
            None => {
                return refuse(format!(
                    "ConfigMap volume {vol_name} has no item with path {relative}"
                ));
            }
        }
    };
    let Some(data) = config_maps.get(namespace, cm_name) else {
        return refuse(format!(
            "ConfigMap {cm_name} (for {path}) is not in the input: pass its manifest too"
        ));
    };
    match data.get(key.as_str()).and_then(Value::as_str) {
        Some(text) => Ok((cm_name.to_owned(), text.to_owned())),
        None => refuse(format!("ConfigMap {cm_name} has no key {key}")),
    }
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    seq(container, "env")
        .iter()
        .find(|e| str_at(e, &["name"]) == Some(name))
        .and_then(|e| str_at(e, &["value"]))
}

/// Refuses agent settings that come from the environment in a form the
/// converter cannot read.
fn check_env(container: &Value) -> Result<(), String> {
    if seq(container, "envFrom").iter().next().is_some() {
        return refuse(
            "the agent container takes variables from `envFrom`, which may set VAULT_ADDR or VAULT_NAMESPACE; the converter cannot resolve it: set them with `env` values",
        );
    }
    for e in seq(container, "env") {
        let name = str_at(e, &["name"]).unwrap_or_default();
        if name.starts_with("VAULT_") && e.get("valueFrom").is_some() {
            return refuse(format!(
                "{name} comes from `valueFrom`, which the converter cannot resolve: set it with a plain `value`"
            ));
        }
    }
    Ok(())
}

/// Volume attributes being built, with the notes that go with them.
#[derive(Default)]
struct Attributes {
    map: BTreeMap<String, String>,
    /// `pkiCert` calls so far: (file, path, request).
    pki_requests: Vec<(String, String, String)>,
    /// `secret` writes so far: (file, path, request).
    write_requests: Vec<(String, String, String)>,
}

impl Attributes {
    fn set(&mut self, key: &str, value: impl Into<String>) {
        self.map.insert(key.to_owned(), value.into());
    }
}

fn add_template(
    driver: &dyn Driver,
    attrs: &mut Attributes,
    relative: &str,
    source: &str,
    options: GoOptions,
    what: &str,
    report: &mut Report,
) -> Result<(), String> {
    let converted = gotemplate::convert(source, options)
        .map_err(|e| format!("template for {relative} ({what}), {e}"))?;
    for call in &converted.requests {
        if let Err(reason) = driver.check_secret(&call.path, &call.args) {
            return refuse(format!(
                "template for {relative} ({what}), line {}, column {}: {}: {reason}",
                call.line, call.column, call.construct
            ));
        }
    }
    let key = format!("template.{relative}");
    if attrs.map.contains_key(&key) {
        return refuse(format!("two templates write {relative}"));
    }
    if !converted.pki_requests.is_empty() {
        report.uses_pki_cert = true;
    }
    // The agent issues a certificate per pkiCert call and file (and another
    // for a `secret` write of the same request); the driver fetches each
    // distinct request once per volume.
    for (path, request) in &converted.pki_requests {
        let shared = attrs
            .pki_requests
            .iter()
            .any(|(file, _, r)| r == request && file != relative)
            || attrs.write_requests.iter().any(|(_, _, r)| r == request)
            || converted.write_requests.iter().any(|(_, r)| r == request);
        if shared {
            report.notes.push(format!(
                "{what}: pkiCert {path:?} is also called with the same arguments for another file or by `secret`: the driver issues one certificate for all of them (identical calls in a volume are fetched once), the agent issued one per template file and call"
            ));
        }
    }
    for (path, request) in &converted.write_requests {
        if attrs.pki_requests.iter().any(|(_, _, r)| r == request) {
            report.notes.push(format!(
                "{what}: secret {path:?} sends the same request as a pkiCert call for another file: the driver issues one certificate for both, the agent issued one each"
            ));
        }
    }
    attrs.pki_requests.extend(
        converted
            .pki_requests
            .iter()
            .map(|(p, r)| (relative.to_owned(), p.clone(), r.clone())),
    );
    attrs.write_requests.extend(
        converted
            .write_requests
            .iter()
            .map(|(p, r)| (relative.to_owned(), p.clone(), r.clone())),
    );
    attrs.set(&key, converted.handlebars);
    Ok(())
}

fn finish_address(
    attrs: &mut Attributes,
    address: Option<&str>,
    object: &str,
    options: &Options,
    report: &mut Report,
) {
    if let Some(address) = address {
        let same = options
            .vault_addr
            .as_deref()
            .is_some_and(|d| d.trim_end_matches('/') == address.trim_end_matches('/'));
        if !same {
            attrs.set("vaultAddress", address);
            report
                .addresses
                .push((object.to_owned(), address.to_owned()));
        }
    }
}

/// Compiles the volume's templates with the driver's own renderer, so
/// whatever it would refuse at publish (paths, size, syntax, limits, secret
/// paths and count) is refused now.
fn check_with_renderer(driver: &dyn Driver, attrs: &Attributes) -> Result<(), String> {
    let sources: Vec<(String, String)> = attrs
        .map
        .iter()
        .filter_map(|(key, source)| {
            key.strip_prefix("template.")
                .map(|path| (path.to_owned(), source.clone()))
        })
        .collect();
    driver
        .check_templates(&sources)
        .map_err(|e| format!("the driver would refuse the converted templates: {e}"))
}

fn csi_volume(name: &str, attrs: &Attributes, options: &Options) -> Value {
    let mut attributes = Mapping::new();
    for (k, v) in &attrs.map {
        attributes.insert(Value::from(k.as_str()), Value::from(v.as_str()));
    }
    let mut csi = Mapping::new();
    csi.insert("driver".into(), Value::from(options.driver_name.as_str()));
    csi.insert("readOnly".into(), Value::Bool(true));
    csi.insert("volumeAttributes".into(), Value::Mapping(attributes));
    let mut vol = Mapping::new();
    vol.insert("name".into(), Value::from(name));
    vol.insert("csi".into(), Value::Mapping(csi));
    Value::Mapping(vol)
}

fn perms_to_mode(perms: &[String]) -> Result<Option<String>, String> {
    let Some(first) = perms.first() else {
        return Ok(None);
    };
    if perms.iter().any(|p| p != first) {
        return refuse(format!(
            "templates ask for different file modes ({}); the driver has one fileMode per volume",
            perms.join(", ")
        ));
    }
    let digits = first.trim_start_matches("0o");
    let Ok(mode) = u32::from_str_radix(digits, 8) else {
        return refuse(format!("file mode {first:?} is not octal"));
    };
    if mode > 0o777 {
        return refuse(format!(
            "file mode {first} has setuid, setgid or sticky bits, which the driver refuses"
        ));
    }
    Ok(Some(format!("{mode:04o}")))
}

#[allow(clippy::too_many_lines)]
fn convert_agent_pod(
    driver: &dyn Driver,
    template: &mut Value,
    namespace: &str,
    object: &str,
    config_maps: &ConfigMaps,
    options: &Options,
    report: &mut Report,
) -> Result<PodConversion, String> {
    let spec = template.get("spec").cloned().unwrap_or_default();
    // Every agent container, with its kind and its parsed configuration.
    let mut agents: Vec<(String, bool, Value, AgentConfig, String)> = Vec::new();
    let mut used_cms = Vec::new();
    for list in ["initContainers", "containers"] {
        for c in seq(&spec, list) {
            let Some(config_path) = agent_config_path(c) else {
                continue;
            };
            let name = str_at(c, &["name"]).unwrap_or("?").to_owned();
            let sidecar = list == "containers" || str_at(c, &["restartPolicy"]) == Some("Always");
            let (cm, text) = config_map_file(&spec, c, &config_path, namespace, config_maps)
                .map_err(|e| format!("Vault Agent container {name}: {e}"))?;
            used_cms.push(cm);
            let config = agent::parse(&text)
                .map_err(|e| format!("Vault Agent container {name} ({config_path}): {e}"))?;
            agents.push((name, sidecar, c.clone(), config, config_path));
        }
    }
    let mut attrs = Attributes::default();
    let mut output_volume: Option<String> = None;
    let mut roles = Vec::new();
    let mut any_refresh = false;
    let mut perms = Vec::new();
    let mut address = None;
    let mut namespace_attr = None;
    let mut rendered: Vec<String> = Vec::new();
    for (name, sidecar, container, config, config_path) in &agents {
        let ctx = |e: String| format!("Vault Agent container {name} ({config_path}): {e}");
        for note in &config.notes {
            report.notes.push(format!("{object}: {name}: {note}"));
        }
        check_env(container).map_err(&ctx)?;
        if env_value(container, "VAULT_SKIP_VERIFY").is_some_and(|v| v == "true" || v == "1") {
            return Err(ctx("VAULT_SKIP_VERIFY is set: the driver always verifies Vault's certificate (it sends every pod's token there); give the driver Vault's CA with --vault-ca-cert instead".to_owned()));
        }
        let Some(role) = config.role.clone() else {
            return Err(ctx(
                "auto_auth has no kubernetes or jwt method with a role: the driver needs roleName"
                    .to_owned(),
            ));
        };
        roles.push(role);
        let mount = config.mount_path.clone().unwrap_or_else(|| {
            format!("auth/{}", config.method.as_deref().unwrap_or("kubernetes"))
        });
        let mount = mount
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_owned();
        if mount != "auth/kubernetes" && mount != "kubernetes" {
            attrs.set("vaultAuthMountPath", mount.trim_start_matches("auth/"));
        }
        report.roles.push((
            object.to_owned(),
            roles.last().cloned().unwrap_or_default(),
            mount.clone(),
        ));
        // The environment overrides the file, as in the agent.
        let addr = env_value(container, "VAULT_ADDR")
            .map(str::to_owned)
            .or_else(|| config.vault_address.clone());
        if address.is_some() && addr.is_some() && address != addr {
            return Err(ctx("the agents of this pod talk to different Vault servers; the driver uses one per volume".to_owned()));
        }
        address = address.or(addr);
        let ns = env_value(container, "VAULT_NAMESPACE")
            .map(str::to_owned)
            .or_else(|| config.vault_namespace.clone());
        if let (Some(method_ns), Some(ns)) = (&config.method_namespace, &ns)
            && method_ns != ns
        {
            return Err(ctx("auto_auth.method.namespace differs from the Vault namespace; the driver logs in and reads in one namespace".to_owned()));
        }
        namespace_attr = namespace_attr
            .or(ns)
            .or_else(|| config.method_namespace.clone());
        if let Some(interval) = &config.static_secret_render_interval {
            attrs.set("staticSecretRefreshInterval", interval.clone());
        }
        let once = !*sidecar || config.exit_after_auth;
        if !once {
            any_refresh = true;
        }
        for t in &config.templates {
            let Some((vol, _, relative)) = mount_for(container, &t.destination) else {
                return Err(ctx(format!(
                    "template destination {} is not in a volume the agent container mounts, so no other container can read it",
                    t.destination
                )));
            };
            if output_volume.as_deref().is_some_and(|v| v != vol) {
                return Err(ctx("templates write into more than one volume; the driver gives a pod one volume here: put them in one directory".to_owned()));
            }
            match volume(&spec, vol) {
                Some(v) if v.get("emptyDir").is_some() => {}
                _ => {
                    return Err(ctx(format!(
                        "template destination {} is in volume {vol}, which is not an emptyDir",
                        t.destination
                    )));
                }
            }
            output_volume = Some(vol.to_owned());
            if rendered.contains(&relative) {
                // An init agent and a sidecar rendering the same file.
                continue;
            }
            let source = match (&t.contents, &t.source) {
                (Some(c), _) => c.clone(),
                (None, Some(src)) => {
                    config_map_file(&spec, container, src, namespace, config_maps)
                        .map_err(&ctx)?
                        .1
                }
                (None, None) => unreachable!("agent::parse requires contents or source"),
            };
            add_template(
                driver,
                &mut attrs,
                &relative,
                &source,
                GoOptions {
                    error_on_missing_key: t.error_on_missing_key,
                },
                &t.destination,
                report,
            )
            .map_err(&ctx)?;
            rendered.push(relative);
            if let Some(p) = &t.perms {
                perms.push(p.clone());
            }
        }
    }
    if roles.iter().any(|r| *r != roles[0]) {
        return refuse(
            "the pod's agents log in with different roles; the driver uses one role per volume",
        );
    }
    let Some(output) = output_volume else {
        return refuse(
            "the Vault Agent configuration renders no templates; a pod that only used the agent's token sink needs `tokenFile` and a template of its own",
        );
    };
    attrs.set("roleName", roles[0].clone());
    // Token sinks: inside the output volume they become tokenFile.
    for (name, _, container, config, _) in &agents {
        for sink in &config.sinks {
            match mount_for(container, sink) {
                Some((vol, _, relative)) if vol == output => attrs.set("tokenFile", relative),
                Some((vol, _, _)) if mounted_elsewhere(&spec, vol, &agents) => {
                    return refuse(format!(
                        "Vault Agent container {name} writes its token to {sink}, in volume {vol}, which other containers mount; the driver writes the token only into its own volume: move the sink into the template directory to get `tokenFile`"
                    ));
                }
                _ => report.notes.push(format!(
                    "{object}: the agent's token sink {sink} is not in a volume any other container reads; dropped (set `tokenFile` if the application needs the token)"
                )),
            }
        }
    }
    if let Some(mode) = perms_to_mode(&perms)? {
        attrs.set("fileMode", mode);
    }
    if !any_refresh {
        attrs.set("refresh", "false");
    }
    finish_address(&mut attrs, address.as_deref(), object, options, report);
    if let Some(ns) = namespace_attr {
        attrs.set("vaultNamespace", ns);
    }
    check_with_renderer(driver, &attrs)?;
    // Rewrite the pod: drop the agent containers, replace the output
    // volume (same name, so every mount keeps working), drop volumes only
    // the agents used.
    let agent_names: Vec<&str> = agents.iter().map(|a| a.0.as_str()).collect();
    let spec_mut = template
        .get_mut("spec")
        .and_then(Value::as_mapping_mut)
        .ok_or("the pod template has no spec")?;
    for list in ["initContainers", "containers"] {
        if let Some(Value::Sequence(containers)) = spec_mut.get_mut(list) {
            containers.retain(|c| !str_at(c, &["name"]).is_some_and(|n| agent_names.contains(&n)));
            for c in containers.iter_mut() {
                mark_read_only(c, &output);
            }
            if containers.is_empty() {
                spec_mut.shift_remove(list);
            }
        }
    }
    let still_mounted = |spec: &Mapping, vol: &str| {
        ["initContainers", "containers"].iter().any(|list| {
            spec.get(*list)
                .and_then(Value::as_sequence)
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        seq(c, "volumeMounts")
                            .iter()
                            .any(|m| str_at(m, &["name"]) == Some(vol))
                    })
                })
        })
    };
    let snapshot = spec_mut.clone();
    let mut unused_cms = Vec::new();
    if let Some(Value::Sequence(volumes)) = spec_mut.get_mut("volumes") {
        let mut kept = Vec::new();
        for v in volumes.drain(..) {
            let name = str_at(&v, &["name"]).unwrap_or_default().to_owned();
            if name == output {
                kept.push(csi_volume(&name, &attrs, options));
            } else if still_mounted(&snapshot, &name) {
                kept.push(v);
            } else if let Some(cm) =
                str_at(&v, &["configMap", "name"]).filter(|cm| used_cms.iter().any(|u| u == cm))
            {
                unused_cms.push((namespace.to_owned(), cm.to_owned()));
            } else if v.get("emptyDir").is_some() || v.get("projected").is_some() {
                report.notes.push(format!(
                    "{object}: volume {name} was used only by the agent; removed"
                ));
            } else {
                kept.push(v);
            }
        }
        *volumes = kept;
    }
    report.converted.push(format!(
        "{object}: Vault Agent container(s) {} replaced by CSI volume {output} ({} file(s){})",
        agent_names.join(", "),
        rendered.len(),
        if any_refresh {
            ", kept fresh"
        } else {
            ", rendered once"
        }
    ));
    Ok(PodConversion {
        unused_config_maps: unused_cms,
    })
}

fn mounted_elsewhere(
    spec: &Value,
    vol: &str,
    agents: &[(String, bool, Value, AgentConfig, String)],
) -> bool {
    ["initContainers", "containers"].iter().any(|list| {
        seq(spec, list).iter().any(|c| {
            let name = str_at(c, &["name"]).unwrap_or_default();
            !agents.iter().any(|a| a.0 == name)
                && seq(c, "volumeMounts")
                    .iter()
                    .any(|m| str_at(m, &["name"]) == Some(vol))
        })
    })
}

fn mark_read_only(container: &mut Value, volume: &str) {
    if let Some(Value::Sequence(mounts)) = container.get_mut("volumeMounts") {
        for m in mounts.iter_mut() {
            if str_at(m, &["name"]) == Some(volume)
                && let Some(map) = m.as_mapping_mut()
            {
                map.insert("readOnly".into(), Value::Bool(true));
            }
        }
    }
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

#[allow(clippy::too_many_lines)]
fn convert_injected(
    driver: &dyn Driver,
    template: &mut Value,
    inject: &str,
    object: &str,
    options: &Options,
    report: &mut Report,
) -> Result<(), String> {
    let annotations: Vec<(String, String)> = template
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    let k = k.as_str()?.strip_prefix(inject)?;
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
    let get = |key: &str| {
        annotations
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let mut attrs = Attributes::default();
    let Some(role) = get("role") else {
        return refuse("vault.hashicorp.com/role is missing: the driver needs roleName");
    };
    attrs.set("roleName", role.clone());
    let auth_path = get("auth-path").unwrap_or_else(|| "auth/kubernetes".to_owned());
    let mount = auth_path.trim_start_matches('/').trim_end_matches('/');
    if mount != "auth/kubernetes" && mount != "kubernetes" {
        attrs.set("vaultAuthMountPath", mount.trim_start_matches("auth/"));
    }
    report
        .roles
        .push((object.to_owned(), role, mount.to_owned()));
    if let Some(ns) = get("namespace") {
        attrs.set("vaultNamespace", ns);
    }
    if get("agent-pre-populate-only").is_some_and(|v| v == "true") {
        attrs.set("refresh", "false");
    }
    if get("tls-skip-verify").is_some_and(|v| v == "true") {
        return refuse(
            "vault.hashicorp.com/tls-skip-verify: the driver always verifies Vault's certificate (it sends every pod's token there); give the driver Vault's CA with --vault-ca-cert instead",
        );
    }
    if get("agent-inject-token").is_some_and(|v| v == "true") {
        attrs.set("tokenFile", "token");
    }
    // The injector's templates for a secret without its own template
    // (vault-k8s, `agent/config.go`); `%s` is the secret's path.
    let default_template = match get("agent-inject-default-template").as_deref() {
        None | Some("map") => {
            "{{ with secret \"%s\" }}{{ range $k, $v := .Data }}{{ $k }}: {{ $v }}\n{{ end }}{{ end }}"
        }
        Some("json") => "{{ with secret \"%s\" }}{{ .Data | toJSON }}\n{{ end }}",
        Some(other) => {
            return refuse(format!(
                "vault.hashicorp.com/agent-inject-default-template {other:?} is not converted (the injector knows `map` and `json`)"
            ));
        }
    };
    let mount_path = get("secret-volume-path").unwrap_or_else(|| "/vault/secrets".to_owned());
    let mut perms = Vec::new();
    let mut files = 0;
    for (key, value) in &annotations {
        if let Some(name) = key.strip_prefix("agent-inject-secret-") {
            let file = get(&format!("agent-inject-file-{name}")).unwrap_or_else(|| name.to_owned());
            let source = get(&format!("agent-inject-template-{name}"))
                .unwrap_or_else(|| default_template.replace("%s", value));
            let strict = get(&format!("error-on-missing-key-{name}")).is_some_and(|v| v == "true");
            add_template(
                driver,
                &mut attrs,
                &file,
                &source,
                GoOptions {
                    error_on_missing_key: strict,
                },
                &format!("annotation agent-inject-template-{name}"),
                report,
            )?;
            files += 1;
            if let Some(p) = get(&format!("agent-inject-perms-{name}")) {
                perms.push(p);
            }
        }
    }
    for (key, value) in &annotations {
        let known = key == "agent-inject"
            || key == "role"
            || key == "auth-path"
            || key == "namespace"
            || key == "agent-pre-populate-only"
            || key == "agent-pre-populate"
            || key == "tls-skip-verify"
            || key == "agent-inject-token"
            || key == "service"
            || key == "secret-volume-path"
            || key == "agent-inject-containers"
            || key == "agent-inject-default-template"
            || key.starts_with("agent-inject-secret-")
            || key.starts_with("agent-inject-template-")
            || key.starts_with("agent-inject-file-")
            || key.starts_with("agent-inject-perms-")
            || key.starts_with("error-on-missing-key-")
            || key.starts_with("agent-inject-command-");
        if let Some(name) = key.strip_prefix("agent-inject-command-") {
            let (signal, process) = reload_command(value).ok_or_else(|| format!(
                "{inject}agent-inject-command-{name} = {value:?}: the driver runs no commands in the pod (a command would run with the driver's rights on the node); it can signal a process after a change: write `kill -HUP <process>` (or -USR1, -TERM …, `pkill -HUP <process>`, `killall -HUP <process>`), which becomes the volume's `signal` and `signalProcess`, or have the application watch the file (it is replaced atomically)"
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
            continue;
        }
        if key == "agent-pre-populate" && value == "false" {
            return refuse(
                "vault.hashicorp.com/agent-pre-populate: \"false\" (no init container) is not converted: the driver always renders before the pod starts",
            );
        }
        if !known && !droppable(key) {
            return refuse(format!("vault.hashicorp.com/{key} is not converted"));
        }
        if droppable(key) {
            report.notes.push(format!(
                "{object}: vault.hashicorp.com/{key} dropped (it tuned the agent container)"
            ));
        }
    }
    if files == 0 {
        return refuse(
            "no vault.hashicorp.com/agent-inject-secret-<name> annotations: nothing to render",
        );
    }
    if let Some(mode) = perms_to_mode(&perms)? {
        attrs.set("fileMode", mode);
    }
    finish_address(
        &mut attrs,
        get("service").as_deref(),
        object,
        options,
        report,
    );
    check_with_renderer(driver, &attrs)?;
    let only: Option<Vec<String>> =
        get("agent-inject-containers").map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    // Rewrite: annotations, the volume, the mounts.
    if let Some(Value::Mapping(ann)) = template
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
    {
        ann.retain(|k, _| !k.as_str().is_some_and(|k| k.starts_with(inject)));
        if ann.is_empty()
            && let Some(Value::Mapping(meta)) = template.get_mut("metadata")
        {
            meta.shift_remove("annotations");
        }
    }
    let volume_name = "vault-secrets";
    let spec = template
        .get_mut("spec")
        .and_then(Value::as_mapping_mut)
        .ok_or("the pod template has no spec")?;
    if spec
        .get("volumes")
        .and_then(Value::as_sequence)
        .is_some_and(|vs| vs.iter().any(|v| str_at(v, &["name"]) == Some(volume_name)))
    {
        return refuse(format!("the pod already has a volume named {volume_name}"));
    }
    let mut mounted = Vec::new();
    if let Some(Value::Sequence(containers)) = spec.get_mut("containers") {
        for c in containers.iter_mut() {
            let name = str_at(c, &["name"]).unwrap_or_default().to_owned();
            if only.as_ref().is_some_and(|o| !o.contains(&name)) {
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
                m.insert("name".into(), Value::from(volume_name));
                m.insert("mountPath".into(), Value::from(mount_path.as_str()));
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
        volumes.push(csi_volume(volume_name, &attrs, options));
    }
    report.converted.push(format!(
        "{object}: injector annotations replaced by CSI volume {volume_name} ({files} file(s)) at {mount_path} in {}",
        mounted.join(", ")
    ));
    Ok(())
}
