//! Kubernetes objects: finding pod specs, Vault Agent containers and
//! injector annotations, and rewriting the pod around one CSI volume.

use std::collections::BTreeMap;

use serde_norway::{Mapping, Value};

mod agent_pod;
mod injector;

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
        injector::convert_injected(
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
        let cx = agent_pod::PodContext {
            driver,
            namespace: &namespace,
            object: &object,
            config_maps,
            options,
        };
        return agent_pod::convert_agent_pod(template, &cx, report).map(Some);
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
        let checked = if call.list {
            driver.check_list(&call.path)
        } else {
            driver.check_secret(&call.path, &call.args)
        };
        if let Err(reason) = checked {
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

fn mounted_elsewhere(spec: &Value, vol: &str, agents: &[agent_pod::Agent]) -> bool {
    ["initContainers", "containers"].iter().any(|list| {
        seq(spec, list).iter().any(|c| {
            let name = str_at(c, &["name"]).unwrap_or_default();
            !agents.iter().any(|a| a.name == name)
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
