//! `vault-csi-driver convert`: turns pods that use Vault Agent or OpenBao
//! Agent (their own agent container with a ConfigMap, or the injector's
//! annotations) into pods with one CSI volume of this driver.
//!
//! It reads Kubernetes YAML and writes YAML; it never contacts Vault or a
//! cluster. Templates are converted from consul-template to handlebars
//! exactly or refused ([`gotemplate`]); the agent's HCL is read with
//! `hcl-rs` ([`agent`]); pods are rewritten in [`k8s`]. A refusal anywhere
//! prints nothing on stdout: a half-converted manifest is never applied by
//! accident.

pub mod agent;
pub mod gotemplate;
pub mod k8s;

use std::fmt::Write as _;
use std::io::Read as _;

use serde::Deserialize as _;
use serde_norway::Value;

/// What `convert` asks of the driver: its own checks of a `secret` call
/// and of a volume's templates, so that whatever the driver would refuse
/// at publish is refused when converting, with the template's position.
///
/// The driver's binary implements it with its renderer (`src/main.rs`);
/// this crate does not depend on the driver, which depends on it.
pub trait Driver {
    /// Checks one `secret "path" "k=v" …` call (the path as
    /// consul-template reads it, the arguments as strings) as the driver's
    /// `secret` helper does; the error says what is wrong.
    fn check_secret(
        &self,
        path: &str,
        args: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String>;

    /// Checks one `secrets "path"` call (a LIST of the keys under the
    /// path) as the driver's `secrets` helper does.
    fn check_list(&self, path: &str) -> Result<(), String> {
        self.check_secret(path, &serde_json::Map::new())
    }

    /// Compiles one volume's templates, (file path in the volume,
    /// handlebars source), as the driver does at publish.
    fn check_templates(&self, templates: &[(String, String)]) -> Result<(), String>;
}

/// What went wrong running `convert`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line is wrong.
    #[error("{0}\n\n{USAGE}")]
    Usage(String),
    /// An input file could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file (`-` for stdin).
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// An input is not YAML.
    #[error("{file} is not YAML: {message}")]
    Yaml {
        /// The file (`-` for stdin).
        file: String,
        /// The parser's message, with position.
        message: String,
    },
    /// Some objects could not be converted exactly; nothing was printed.
    #[error("nothing was converted: {} object(s) cannot be converted exactly:\n{}", .0.len(), .0.iter().map(|r| format!("  {}: {}", r.object, r.reason)).collect::<Vec<_>>().join("\n"))]
    Refused(Vec<k8s::Refused>),
    /// Writing the output failed.
    #[error("cannot write YAML: {0}")]
    Write(String),
}

/// The command's help text.
pub const USAGE: &str = "usage: vault-csi-driver convert [--drop-agent-config] [--vault-addr URL] [--driver-name NAME] [FILE...]

Reads Kubernetes YAML (stdin when no FILE is given, or for `-`) and prints it
with every Vault Agent container, and every pod annotated for the Vault Agent
injector, replaced by one CSI volume of this driver. Prints a summary of what
changed and what needs attention on stderr. Contacts neither Vault nor a cluster.

  --drop-agent-config  leave out the agent's ConfigMaps instead of marking them unused
  --vault-addr URL     the driver's --vault-addr: agent addresses equal to it are left
                       out of the volume (the driver's default applies)
  --driver-name NAME   the CSIDriver's name (default vault.csi.driver)";

/// Command-line options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Drop the `ConfigMap`s the agents used.
    pub drop_agent_config: bool,
    /// The driver's default Vault address.
    pub vault_addr: Option<String>,
    /// The `CSIDriver`'s name.
    pub driver_name: String,
    /// Input files; empty means stdin.
    pub files: Vec<String>,
}

impl Options {
    /// Parses the arguments after `convert`.
    pub fn parse(args: &[String]) -> Result<Self, Error> {
        let mut options = Self {
            drop_agent_config: false,
            vault_addr: None,
            driver_name: "vault.csi.driver".to_owned(),
            files: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |flag: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| Error::Usage(format!("{flag} needs a value")))
            };
            match arg.as_str() {
                "--drop-agent-config" => options.drop_agent_config = true,
                "--vault-addr" => options.vault_addr = Some(value("--vault-addr")?),
                "--driver-name" => options.driver_name = value("--driver-name")?,
                "-h" | "--help" => return Err(Error::Usage("help".to_owned())),
                a if a.starts_with("--vault-addr=") => {
                    options.vault_addr = Some(a["--vault-addr=".len()..].to_owned());
                }
                a if a.starts_with("--driver-name=") => {
                    a["--driver-name=".len()..].clone_into(&mut options.driver_name);
                }
                a if a.starts_with('-') && a != "-" => {
                    return Err(Error::Usage(format!("unknown option {a}")));
                }
                file => options.files.push(file.to_owned()),
            }
        }
        Ok(options)
    }
}

/// What the summary tells the reader.
#[derive(Debug, Default)]
pub struct Report {
    /// One line per converted object.
    pub converted: Vec<String>,
    /// Settings dropped on purpose.
    pub notes: Vec<String>,
    /// (object, address) pairs the driver must allow.
    pub addresses: Vec<(String, String)>,
    /// (object, role, auth mount) pairs whose audience must be checked.
    pub roles: Vec<(String, String, String)>,
    /// Some template uses `pkiCert`.
    pub uses_pki_cert: bool,
    /// Some converted object is a bare Pod.
    pub bare_pods: Vec<String>,
}

impl Report {
    /// The summary printed on stderr.
    pub fn summary(&self, options: &Options) -> String {
        let mut s = String::new();
        if self.converted.is_empty() {
            s.push_str(
                "vault-csi-driver convert: no Vault Agent found; the input is printed unchanged\n",
            );
            return s;
        }
        s.push_str("Converted:\n");
        for line in &self.converted {
            let _ = writeln!(s, "  - {line}");
        }
        s.push_str("Needs attention:\n");
        for (object, role, mount) in &self.roles {
            let _ = writeln!(
                s,
                "  - {object}: the driver logs in to {mount} as role {role:?} with a service-account token for the audience `vault` (the CSIDriver's tokenRequests), not the pod's default token: the role's `audience` (or the jwt role's `bound_audiences`) must be `vault`"
            );
        }
        for (object, address) in &self.addresses {
            let _ = writeln!(
                s,
                "  - {object}: vaultAddress {address} must be allowed by the driver (--allowed-vault-addrs / ALLOWED_VAULT_ADDRS){}",
                if options.vault_addr.is_none() {
                    ", or pass --vault-addr to leave the driver's default address out"
                } else {
                    ""
                }
            );
        }
        if self.uses_pki_cert {
            s.push_str("  - pkiCert became (pkiCert (secret \"…\" …)): the same .Cert, .Key, .CA and .CAChain for the same issue response; the agent reused a valid certificate it found in the template's destination file (after a restart, say), the driver issues a certificate when the volume is published, keeps the response (across its own restarts too) and issues the next before expiry\n");
        }
        for pod in &self.bare_pods {
            let _ = writeln!(
                s,
                "  - {pod}: a running pod's volumes cannot change: delete the pod and create it again from this output (`kubectl delete pod …` then `kubectl apply -f …`); workloads (Deployments, StatefulSets, …) roll their pods by themselves"
            );
        }
        for note in &self.notes {
            let _ = writeln!(s, "  - note: {note}");
        }
        s
    }
}

/// Reads every input document.
fn read_inputs(options: &Options) -> Result<Vec<Value>, Error> {
    let files = if options.files.is_empty() {
        vec!["-".to_owned()]
    } else {
        options.files.clone()
    };
    let mut docs = Vec::new();
    for file in files {
        let text = if file == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| Error::Read {
                    file: file.clone(),
                    source,
                })?;
            text
        } else {
            std::fs::read_to_string(&file).map_err(|source| Error::Read {
                file: file.clone(),
                source,
            })?
        };
        docs.extend(parse_yaml(&text, &file)?);
    }
    Ok(docs)
}

/// Splits YAML text into documents, skipping empty ones.
pub fn parse_yaml(text: &str, file: &str) -> Result<Vec<Value>, Error> {
    let mut docs = Vec::new();
    for de in serde_norway::Deserializer::from_str(text) {
        let value = Value::deserialize(de).map_err(|e| Error::Yaml {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// Converts documents; returns the output YAML and the report.
pub fn convert_documents(
    mut docs: Vec<Value>,
    options: &Options,
    driver: &dyn Driver,
) -> Result<(String, Report), Error> {
    let config_maps = k8s::ConfigMaps::collect(&docs);
    let mut report = Report::default();
    let mut refused = Vec::new();
    let mut unused = Vec::new();
    for doc in &mut docs {
        let object = format!(
            "{}/{}",
            k8s::str_at(doc, &["kind"]).unwrap_or("?"),
            k8s::str_at(doc, &["metadata", "name"]).unwrap_or("?")
        );
        match k8s::convert_doc(driver, doc, &config_maps, options, &mut report) {
            Ok(Some(done)) => unused.extend(done.unused_config_maps),
            Ok(None) => {}
            Err(reason) => refused.push(k8s::Refused { object, reason }),
        }
    }
    if !refused.is_empty() {
        return Err(Error::Refused(refused));
    }
    let mut out = String::new();
    for doc in &docs {
        let is_unused_cm = k8s::str_at(doc, &["kind"]) == Some("ConfigMap") && {
            let ns = k8s::str_at(doc, &["metadata", "namespace"]).unwrap_or_default();
            let name = k8s::str_at(doc, &["metadata", "name"]).unwrap_or_default();
            unused
                .iter()
                .any(|(n, m)| m == name && (n.is_empty() || ns.is_empty() || n == ns))
        };
        if is_unused_cm && options.drop_agent_config {
            report.notes.push(format!(
                "ConfigMap {} dropped (--drop-agent-config)",
                k8s::str_at(doc, &["metadata", "name"]).unwrap_or_default()
            ));
            continue;
        }
        if !out.is_empty() {
            out.push_str("---\n");
        }
        if is_unused_cm {
            out.push_str("# vault-csi-driver convert: no longer used (it configured Vault Agent); delete it once no pod mounts it\n");
        }
        out.push_str(&serde_norway::to_string(doc).map_err(|e| Error::Write(e.to_string()))?);
    }
    Ok((out, report))
}

/// Runs `convert` with the arguments after it; the process exit code.
pub fn main(args: &[String], driver: &dyn Driver) -> i32 {
    let result = Options::parse(args).and_then(|options| {
        let docs = read_inputs(&options)?;
        let (out, report) = convert_documents(docs, &options, driver)?;
        Ok((out, report, options))
    });
    match result {
        Ok((out, report, options)) => {
            print!("{out}");
            eprint!("{}", report.summary(&options));
            0
        }
        Err(Error::Usage(m)) if m == "help" => {
            println!("{USAGE}");
            0
        }
        Err(e @ Error::Refused(_)) => {
            eprintln!("vault-csi-driver convert: {e}");
            1
        }
        Err(e) => {
            eprintln!("vault-csi-driver convert: {e}");
            2
        }
    }
}
