//! A pod with its own Vault Agent (or OpenBao Agent) containers: their
//! configurations (from ConfigMaps in the input) become one CSI volume in
//! place of the volume the agents rendered into.

use serde_norway::{Mapping, Value};

use super::{
    Attributes, ConfigMaps, PodConversion, add_template, agent_config_path, check_env,
    check_with_renderer, config_map_file, csi_volume, env_value, finish_address, mark_read_only,
    mount_for, mounted_elsewhere, perms_to_mode, refuse, seq, str_at, volume,
};
use crate::agent::{self, AgentConfig};
use crate::gotemplate::GoOptions;
use crate::{Driver, Options, Report};

/// One agent container of the pod.
pub(super) struct Agent {
    pub(super) name: String,
    /// A sidecar (kept running) rather than an init container.
    sidecar: bool,
    container: Value,
    config: AgentConfig,
    config_path: String,
}

/// Where the pod is and what the conversion may use.
pub(super) struct PodContext<'a> {
    pub(super) driver: &'a dyn Driver,
    pub(super) namespace: &'a str,
    pub(super) object: &'a str,
    pub(super) config_maps: &'a ConfigMaps,
    pub(super) options: &'a Options,
}

/// What the pod's agents add up to.
#[derive(Default)]
struct Collected {
    attrs: Attributes,
    output_volume: Option<String>,
    roles: Vec<String>,
    any_refresh: bool,
    perms: Vec<String>,
    address: Option<String>,
    namespace: Option<String>,
    /// Files rendered so far (relative to the output volume).
    rendered: Vec<String>,
}

/// Every agent container of the pod spec, with its parsed configuration,
/// and the ConfigMaps their configurations came from.
fn find_agents(spec: &Value, cx: &PodContext<'_>) -> Result<(Vec<Agent>, Vec<String>), String> {
    let mut agents = Vec::new();
    let mut used_cms = Vec::new();
    for list in ["initContainers", "containers"] {
        for c in seq(spec, list) {
            let Some(config_path) = agent_config_path(c) else {
                continue;
            };
            let name = str_at(c, &["name"]).unwrap_or("?").to_owned();
            let sidecar = list == "containers" || str_at(c, &["restartPolicy"]) == Some("Always");
            let (cm, text) = config_map_file(spec, c, &config_path, cx.namespace, cx.config_maps)
                .map_err(|e| format!("Vault Agent container {name}: {e}"))?;
            used_cms.push(cm);
            let config = agent::parse(&text)
                .map_err(|e| format!("Vault Agent container {name} ({config_path}): {e}"))?;
            agents.push(Agent {
                name,
                sidecar,
                container: c.clone(),
                config,
                config_path,
            });
        }
    }
    Ok((agents, used_cms))
}

impl Collected {
    /// The agent's login, address, namespace and refresh settings.
    fn settings(
        &mut self,
        agent: &Agent,
        cx: &PodContext<'_>,
        report: &mut Report,
    ) -> Result<(), String> {
        let (config, container) = (&agent.config, &agent.container);
        for note in &config.notes {
            report
                .notes
                .push(format!("{}: {}: {note}", cx.object, agent.name));
        }
        check_env(container)?;
        if env_value(container, "VAULT_SKIP_VERIFY").is_some_and(|v| v == "true" || v == "1") {
            return refuse(
                "VAULT_SKIP_VERIFY is set: the driver always verifies Vault's certificate (it sends every pod's token there); give the driver Vault's CA with --vault-ca-cert instead",
            );
        }
        let Some(role) = config.role.clone() else {
            return refuse(
                "auto_auth has no kubernetes or jwt method with a role: the driver needs roleName",
            );
        };
        let mount = config.mount_path.clone().unwrap_or_else(|| {
            format!("auth/{}", config.method.as_deref().unwrap_or("kubernetes"))
        });
        let mount = mount
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_owned();
        if mount != "auth/kubernetes" && mount != "kubernetes" {
            self.attrs
                .set("vaultAuthMountPath", mount.trim_start_matches("auth/"));
        }
        report
            .roles
            .push((cx.object.to_owned(), role.clone(), mount));
        self.roles.push(role);
        // The environment overrides the file, as in the agent.
        let addr = env_value(container, "VAULT_ADDR")
            .or_else(|| env_value(container, "BAO_ADDR"))
            .map(str::to_owned)
            .or_else(|| config.vault_address.clone());
        if self.address.is_some() && addr.is_some() && self.address != addr {
            return refuse(
                "the agents of this pod talk to different Vault servers; the driver uses one per volume",
            );
        }
        self.address = self.address.take().or(addr);
        let ns = env_value(container, "VAULT_NAMESPACE")
            .or_else(|| env_value(container, "BAO_NAMESPACE"))
            .map(str::to_owned)
            .or_else(|| config.vault_namespace.clone());
        if let (Some(method_ns), Some(ns)) = (&config.method_namespace, &ns)
            && method_ns != ns
        {
            return refuse(
                "auto_auth.method.namespace differs from the Vault namespace; the driver logs in and reads in one namespace",
            );
        }
        self.namespace = self
            .namespace
            .take()
            .or(ns)
            .or_else(|| config.method_namespace.clone());
        if let Some(interval) = &config.static_secret_render_interval {
            self.attrs
                .set("staticSecretRefreshInterval", interval.clone());
        }
        if agent.sidecar && !config.exit_after_auth {
            self.any_refresh = true;
        }
        Ok(())
    }

    /// The agent's templates, converted into the volume's attributes.
    fn templates(
        &mut self,
        agent: &Agent,
        spec: &Value,
        cx: &PodContext<'_>,
        report: &mut Report,
    ) -> Result<(), String> {
        let container = &agent.container;
        for t in &agent.config.templates {
            let Some((vol, _, relative)) = mount_for(container, &t.destination) else {
                return refuse(format!(
                    "template destination {} is not in a volume the agent container mounts, so no other container can read it",
                    t.destination
                ));
            };
            if self.output_volume.as_deref().is_some_and(|v| v != vol) {
                return refuse(
                    "templates write into more than one volume; the driver gives a pod one volume here: put them in one directory",
                );
            }
            if volume(spec, vol).is_none_or(|v| v.get("emptyDir").is_none()) {
                return refuse(format!(
                    "template destination {} is in volume {vol}, which is not an emptyDir",
                    t.destination
                ));
            }
            self.output_volume = Some(vol.to_owned());
            if self.rendered.contains(&relative) {
                // An init agent and a sidecar rendering the same file.
                continue;
            }
            let source = match (&t.contents, &t.source) {
                (Some(c), _) => c.clone(),
                (None, Some(src)) => {
                    config_map_file(spec, container, src, cx.namespace, cx.config_maps)?.1
                }
                (None, None) => unreachable!("agent::parse requires contents or source"),
            };
            let options = GoOptions {
                error_on_missing_key: t.error_on_missing_key,
            };
            add_template(
                cx.driver,
                &mut self.attrs,
                &relative,
                &source,
                options,
                &t.destination,
                report,
            )?;
            self.rendered.push(relative);
            if let Some(p) = &t.perms {
                self.perms.push(p.clone());
            }
        }
        Ok(())
    }

    /// Token sinks inside the output volume become `tokenFile`; others
    /// are dropped (or refused, if another container reads them).
    fn sinks(
        &mut self,
        agents: &[Agent],
        spec: &Value,
        output: &str,
        cx: &PodContext<'_>,
        report: &mut Report,
    ) -> Result<(), String> {
        for agent in agents {
            for sink in &agent.config.sinks {
                match mount_for(&agent.container, sink) {
                    Some((vol, _, relative)) if vol == output => self.attrs.set("tokenFile", relative),
                    Some((vol, _, _)) if mounted_elsewhere(spec, vol, agents) => {
                        return refuse(format!(
                            "Vault Agent container {} writes its token to {sink}, in volume {vol}, which other containers mount; the driver writes the token only into its own volume: move the sink into the template directory to get `tokenFile`",
                            agent.name
                        ));
                    }
                    _ => report.notes.push(format!(
                        "{}: the agent's token sink {sink} is not in a volume any other container reads; dropped (set `tokenFile` if the application needs the token)",
                        cx.object
                    )),
                }
            }
        }
        Ok(())
    }

    /// The volume's remaining attributes, checked with the driver: the
    /// output volume's name.
    fn finish(
        &mut self,
        agents: &[Agent],
        spec: &Value,
        cx: &PodContext<'_>,
        report: &mut Report,
    ) -> Result<String, String> {
        if self.roles.iter().any(|r| *r != self.roles[0]) {
            return refuse(
                "the pod's agents log in with different roles; the driver uses one role per volume",
            );
        }
        let Some(output) = self.output_volume.clone() else {
            return refuse(
                "the Vault Agent configuration renders no templates; a pod that only used the agent's token sink needs `tokenFile` and a template of its own",
            );
        };
        self.attrs.set("roleName", self.roles[0].clone());
        self.sinks(agents, spec, &output, cx, report)?;
        if let Some(mode) = perms_to_mode(&self.perms)? {
            self.attrs.set("fileMode", mode);
        }
        if !self.any_refresh {
            self.attrs.set("refresh", "false");
        }
        finish_address(
            &mut self.attrs,
            self.address.as_deref(),
            cx.object,
            cx.options,
            report,
        );
        if let Some(ns) = self.namespace.take() {
            self.attrs.set("vaultNamespace", ns);
        }
        check_with_renderer(cx.driver, &self.attrs)?;
        Ok(output)
    }
}

/// Converts a pod template with agent containers.
pub(super) fn convert_agent_pod(
    template: &mut Value,
    cx: &PodContext<'_>,
    report: &mut Report,
) -> Result<PodConversion, String> {
    let spec = template.get("spec").cloned().unwrap_or_default();
    let (agents, used_cms) = find_agents(&spec, cx)?;
    let mut collected = Collected::default();
    for agent in &agents {
        let context = |e: String| {
            format!(
                "Vault Agent container {} ({}): {e}",
                agent.name, agent.config_path
            )
        };
        collected.settings(agent, cx, report).map_err(context)?;
        collected
            .templates(agent, &spec, cx, report)
            .map_err(context)?;
    }
    let output = collected.finish(&agents, &spec, cx, report)?;
    let agent_names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
    let unused_config_maps = rewrite(
        template,
        &agent_names,
        &output,
        &collected.attrs,
        &used_cms,
        cx,
        report,
    )?;
    report.converted.push(format!(
        "{}: Vault Agent container(s) {} replaced by CSI volume {output} ({} file(s){})",
        cx.object,
        agent_names.join(", "),
        collected.rendered.len(),
        if collected.any_refresh {
            ", kept fresh"
        } else {
            ", rendered once"
        }
    ));
    Ok(PodConversion { unused_config_maps })
}

/// Rewrites the pod: drops the agent containers, replaces the output
/// volume (same name, so every mount keeps working), drops volumes only
/// the agents used. The ConfigMaps no longer used.
fn rewrite(
    template: &mut Value,
    agent_names: &[&str],
    output: &str,
    attrs: &Attributes,
    used_cms: &[String],
    cx: &PodContext<'_>,
    report: &mut Report,
) -> Result<Vec<(String, String)>, String> {
    let spec = template
        .get_mut("spec")
        .and_then(Value::as_mapping_mut)
        .ok_or("the pod template has no spec")?;
    for list in ["initContainers", "containers"] {
        if let Some(Value::Sequence(containers)) = spec.get_mut(list) {
            containers.retain(|c| !str_at(c, &["name"]).is_some_and(|n| agent_names.contains(&n)));
            for c in containers.iter_mut() {
                mark_read_only(c, output);
            }
            if containers.is_empty() {
                spec.shift_remove(list);
            }
        }
    }
    let snapshot = spec.clone();
    let mut unused = Vec::new();
    if let Some(Value::Sequence(volumes)) = spec.get_mut("volumes") {
        let mut kept = Vec::new();
        for v in volumes.drain(..) {
            let name = str_at(&v, &["name"]).unwrap_or_default().to_owned();
            if name == output {
                kept.push(csi_volume(&name, attrs, cx.options));
            } else if still_mounted(&snapshot, &name) {
                kept.push(v);
            } else if let Some(cm) =
                str_at(&v, &["configMap", "name"]).filter(|cm| used_cms.iter().any(|u| u == cm))
            {
                unused.push((cx.namespace.to_owned(), cm.to_owned()));
            } else if v.get("emptyDir").is_some() || v.get("projected").is_some() {
                report.notes.push(format!(
                    "{}: volume {name} was used only by the agent; removed",
                    cx.object
                ));
            } else {
                kept.push(v);
            }
        }
        *volumes = kept;
    }
    Ok(unused)
}

/// Whether a container of the (rewritten) pod still mounts `vol`.
fn still_mounted(spec: &Mapping, vol: &str) -> bool {
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
}
