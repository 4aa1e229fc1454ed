//! Vault Agent's HCL configuration: the parts that become volume
//! attributes, and refusals for the parts that have no equivalent.

use hcl::eval::{Context, Evaluate as _};
use hcl::{Body, Value};

/// Why an agent configuration was not converted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is not HCL.
    #[error("the agent configuration does not parse as HCL: {0}")]
    Parse(String),
    /// A setting has no equivalent in the driver.
    #[error("agent setting `{setting}` is not converted: {reason}")]
    Unsupported {
        /// The setting, as a path in the configuration.
        setting: String,
        /// Why, and what to do.
        reason: String,
    },
    /// A setting has the wrong type.
    #[error("agent setting `{setting}` must be {expected}")]
    Type {
        /// The setting.
        setting: String,
        /// What it must be.
        expected: &'static str,
    },
}

/// One `template` stanza.
#[derive(Debug, Clone, Default)]
pub struct Template {
    /// `destination`: an absolute path in the agent's container.
    pub destination: String,
    /// `contents`, inline.
    pub contents: Option<String>,
    /// `source`: a file path in the agent's container.
    pub source: Option<String>,
    /// `error_on_missing_key`.
    pub error_on_missing_key: bool,
    /// `perms`, as written.
    pub perms: Option<String>,
}

/// What the converter uses from an agent configuration.
#[derive(Debug, Clone, Default)]
pub struct AgentConfig {
    /// `auto_auth.method`'s type: `kubernetes` or `jwt`.
    pub method: Option<String>,
    /// `auto_auth.method.mount_path`.
    pub mount_path: Option<String>,
    /// `auto_auth.method.config.role`.
    pub role: Option<String>,
    /// `auto_auth.method.namespace`.
    pub method_namespace: Option<String>,
    /// `auto_auth.sink "file"` paths.
    pub sinks: Vec<String>,
    /// `exit_after_auth`.
    pub exit_after_auth: bool,
    /// The `template` stanzas.
    pub templates: Vec<Template>,
    /// `template_config.static_secret_render_interval`.
    pub static_secret_render_interval: Option<String>,
    /// `vault.address`.
    pub vault_address: Option<String>,
    /// `vault.namespace`.
    pub vault_namespace: Option<String>,
    /// Settings dropped on purpose, for the summary.
    pub notes: Vec<String>,
}

fn eval(setting: &str, expr: &hcl::Expression) -> Result<Value, Error> {
    expr.evaluate(&Context::new())
        .map_err(|e| Error::Unsupported {
            setting: setting.to_owned(),
            reason: format!(
                "it uses HCL interpolation or functions the converter does not evaluate ({e})"
            ),
        })
}

fn string(setting: &str, expr: &hcl::Expression) -> Result<String, Error> {
    match eval(setting, expr)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(Error::Type {
            setting: setting.to_owned(),
            expected: "a string",
        }),
    }
}

fn boolean(setting: &str, expr: &hcl::Expression) -> Result<bool, Error> {
    match eval(setting, expr)? {
        Value::Bool(b) => Ok(b),
        Value::String(s) if s == "true" || s == "false" => Ok(s == "true"),
        _ => Err(Error::Type {
            setting: setting.to_owned(),
            expected: "a boolean",
        }),
    }
}

fn unsupported<T>(setting: &str, reason: &str) -> Result<T, Error> {
    Err(Error::Unsupported {
        setting: setting.to_owned(),
        reason: reason.to_owned(),
    })
}

/// Parses an agent configuration.
#[allow(clippy::too_many_lines)]
pub fn parse(source: &str) -> Result<AgentConfig, Error> {
    let body: Body = hcl::parse(source).map_err(|e| Error::Parse(e.to_string()))?;
    let mut config = AgentConfig::default();
    for attr in body.attributes() {
        match attr.key() {
            "exit_after_auth" => config.exit_after_auth = boolean("exit_after_auth", attr.expr())?,
            "pid_file" | "log_level" | "log_file" | "log_format" => {
                config.notes.push(format!(
                    "`{}` dropped (the driver has no agent process)",
                    attr.key()
                ));
            }
            other => return unsupported(other, "no equivalent in the driver"),
        }
    }
    for block in body.blocks() {
        match block.identifier() {
            "auto_auth" => auto_auth(block.body(), &mut config)?,
            "template" => config.templates.push(template(block.body())?),
            "template_config" => {
                for attr in block.body().attributes() {
                    match attr.key() {
                        "static_secret_render_interval" => {
                            config.static_secret_render_interval =
                                Some(string("template_config.static_secret_render_interval", attr.expr())?);
                        }
                        "exit_on_retry_failure" => config.notes.push(
                            "`template_config.exit_on_retry_failure` dropped: a failed refresh keeps the previous files; a failed publish fails the pod's start".to_owned(),
                        ),
                        other => return unsupported(&format!("template_config.{other}"), "no equivalent in the driver"),
                    }
                }
            }
            "vault" => {
                for attr in block.body().attributes() {
                    match attr.key() {
                        "address" => config.vault_address = Some(string("vault.address", attr.expr())?),
                        "namespace" => config.vault_namespace = Some(string("vault.namespace", attr.expr())?),
                        "tls_skip_verify" => {
                            if boolean("vault.tls_skip_verify", attr.expr())? {
                                return unsupported(
                                    "vault.tls_skip_verify",
                                    "the driver always verifies Vault's certificate (it sends every pod's token there); give the driver Vault's CA with --vault-ca-cert instead",
                                );
                            }
                        }
                        "ca_cert" | "ca_path" => config.notes.push(format!(
                            "`vault.{}` dropped: the driver's CA bundle is --vault-ca-cert, set by the operator",
                            attr.key()
                        )),
                        other => return unsupported(&format!("vault.{other}"), "no equivalent in the driver's volume attributes"),
                    }
                }
                if let Some(retry) = block.body().blocks().next() {
                    return unsupported(
                        &format!("vault.{}", retry.identifier()),
                        "no equivalent in the driver's volume attributes",
                    );
                }
            }
            "cache" | "listener" | "api_proxy" => {
                return unsupported(
                    block.identifier(),
                    "the driver runs no proxy in the pod; the application must read the files instead of calling the agent",
                );
            }
            other => return unsupported(other, "no equivalent in the driver"),
        }
    }
    Ok(config)
}

/// `auto_auth { method … }`: the login (type, mount, namespace, role).
fn auth_method(block: &hcl::Block, config: &mut AgentConfig) -> Result<(), Error> {
    if config.method.is_some() {
        return unsupported("auto_auth.method", "only one auth method is converted");
    }
    let mut kind = block.labels().first().map(|l| l.as_str().to_owned());
    for attr in block.body().attributes() {
        match attr.key() {
            "type" => kind = Some(string("auto_auth.method.type", attr.expr())?),
            "mount_path" => {
                config.mount_path = Some(string("auto_auth.method.mount_path", attr.expr())?);
            }
            "namespace" => {
                config.method_namespace = Some(string("auto_auth.method.namespace", attr.expr())?);
            }
            "config" => {
                method_config(&eval("auto_auth.method.config", attr.expr())?, config)?;
            }
            "wrap_ttl" => {
                return unsupported(
                    "auto_auth.method.wrap_ttl",
                    "the driver does not wrap tokens",
                );
            }
            other => {
                return unsupported(
                    &format!("auto_auth.method.{other}"),
                    "no equivalent in the driver",
                );
            }
        }
    }
    for inner in block.body().blocks() {
        if inner.identifier() == "config" {
            let mut object = hcl::Map::new();
            for attr in inner.body().attributes() {
                object.insert(
                    attr.key().to_owned(),
                    eval("auto_auth.method.config", attr.expr())?,
                );
            }
            method_config(&Value::Object(object), config)?;
        } else {
            return unsupported(
                &format!("auto_auth.method.{}", inner.identifier()),
                "no equivalent in the driver",
            );
        }
    }
    match kind.as_deref() {
        Some("kubernetes" | "jwt") => config.method = kind,
        Some(other) => {
            return unsupported(
                &format!("auto_auth.method \"{other}\""),
                "the driver logs in with the pod's service-account token, through a `kubernetes` or `jwt` auth method",
            );
        }
        None => return unsupported("auto_auth.method", "the method has no type"),
    }
    Ok(())
}

fn auto_auth(body: &Body, config: &mut AgentConfig) -> Result<(), Error> {
    if let Some(attr) = body.attributes().next() {
        return unsupported(
            &format!("auto_auth.{}", attr.key()),
            "no equivalent in the driver",
        );
    }
    for block in body.blocks() {
        match block.identifier() {
            "method" => auth_method(block, config)?,
            "sink" => {
                let kind = block.labels().first().map(|l| l.as_str().to_owned());
                let mut path = None;
                for attr in block.body().attributes() {
                    match attr.key() {
                        "type" if string("auto_auth.sink.type", attr.expr())? == "file" => {}
                        "config" => {
                            if let Value::Object(o) = eval("auto_auth.sink.config", attr.expr())?
                                && let Some(Value::String(p)) = o.get("path")
                            {
                                path = Some(p.clone());
                            }
                        }
                        other => {
                            return unsupported(
                                &format!("auto_auth.sink.{other}"),
                                "only a plain file sink (no wrapping, no encryption) is converted",
                            );
                        }
                    }
                }
                for inner in block.body().blocks() {
                    if inner.identifier() == "config" {
                        for attr in inner.body().attributes() {
                            if attr.key() == "path" {
                                path = Some(string("auto_auth.sink.config.path", attr.expr())?);
                            }
                        }
                    }
                }
                if kind.as_deref().is_some_and(|k| k != "file") {
                    return unsupported("auto_auth.sink", "only `sink \"file\"` is converted");
                }
                let Some(path) = path else {
                    return unsupported("auto_auth.sink", "the file sink has no config.path");
                };
                config.sinks.push(path);
            }
            other => {
                return unsupported(&format!("auto_auth.{other}"), "no equivalent in the driver");
            }
        }
    }
    Ok(())
}

fn method_config(value: &Value, config: &mut AgentConfig) -> Result<(), Error> {
    let Value::Object(object) = value else {
        return Err(Error::Type {
            setting: "auto_auth.method.config".to_owned(),
            expected: "an object",
        });
    };
    for (key, value) in object {
        match (key.as_str(), value) {
            ("role", Value::String(role)) => config.role = Some(role.clone()),
            ("remove_jwt_after_reading", Value::Bool(_)) => config.notes.push(
                "`auto_auth.method.config.remove_jwt_after_reading` dropped: the driver reads no token file (kubelet hands it the pod's token)".to_owned(),
            ),
            ("token_path" | "path", _) => config.notes.push(format!(
                "`auto_auth.method.config.{key}` dropped: the driver logs in with the token kubelet issues for the CSIDriver's audience"
            )),
            (other, _) => {
                return unsupported(&format!("auto_auth.method.config.{other}"), "no equivalent in the driver");
            }
        }
    }
    Ok(())
}

fn template(body: &Body) -> Result<Template, Error> {
    let mut t = Template::default();
    for attr in body.attributes() {
        let setting = format!("template.{}", attr.key());
        match attr.key() {
            "destination" => t.destination = string(&setting, attr.expr())?,
            "contents" => t.contents = Some(string(&setting, attr.expr())?),
            "source" => t.source = Some(string(&setting, attr.expr())?),
            "error_on_missing_key" => t.error_on_missing_key = boolean(&setting, attr.expr())?,
            "perms" => t.perms = Some(string(&setting, attr.expr())?),
            "left_delimiter" | "right_delimiter" => {
                let d = string(&setting, attr.expr())?;
                if d != "{{" && d != "}}" {
                    return unsupported(
                        &setting,
                        "only the default delimiters `{{` `}}` are converted",
                    );
                }
            }
            "create_dest_dirs" | "backup" | "wait" => {}
            "command" | "command_timeout" | "exec" => {
                return unsupported(
                    &setting,
                    "the driver runs no commands in the pod (a command would run with the driver's rights on the node); for a reload, set the volume's `signal` and `signalProcess` attributes (e.g. `SIGHUP` and `nginx`), which signal the pod's process after a change, or have the application watch the file (it is replaced atomically)",
                );
            }
            _ => return unsupported(&setting, "no equivalent in the driver"),
        }
    }
    if let Some(block) = body.blocks().next() {
        return unsupported(
            &format!("template.{}", block.identifier()),
            "the driver runs no commands in the pod; have the application watch the file",
        );
    }
    if t.destination.is_empty() {
        return unsupported(
            "template",
            "a template without `destination` (env_template, exec) has no file to put in a volume",
        );
    }
    if t.contents.is_some() == t.source.is_some() {
        return unsupported(
            "template",
            "exactly one of `contents` and `source` must be set",
        );
    }
    Ok(t)
}
