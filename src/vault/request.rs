//! [`SecretRequest`]: one call a template makes to Vault, the unit the
//! client sends, the renderer collects and the volume tracks. It lives with
//! the client, upstream of the templates that produce it.

use std::fmt;
use std::hash::{Hash, Hasher};

use serde_json::Value;

/// A path or arguments that cannot make a Vault request; the message says
/// what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

/// One `secret` call: a Vault path, plus the arguments that make it a write
/// (PUT) rather than a read (GET); or one `secrets` call, a list (LIST) of
/// the keys under a path. Equal requests are fetched once per render
/// (equality, hashing and order are by kind, path and arguments only).
///
/// Records store requests as JSON: a request recorded before lists
/// existed has no `list` field and reads as what it was, a read or a
/// write; a list is recorded with `"list": true` (and only then, so the
/// records of reads and writes keep their form).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct SecretRequest {
    path: String,
    /// Canonical JSON of the arguments (keys sorted), or `None` for a read
    /// or a list.
    body: Option<String>,
    /// A LIST of the keys under the path (`secrets "path"`), not a read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    list: bool,
    /// The path was not a literal in the template but came from data
    /// (`(secret data.data.path)`): it may be a secret, so errors and logs
    /// show [`SecretRequest::PATH_FROM_DATA`] instead.
    #[serde(default)]
    from_data: bool,
    /// An argument was not a literal in the template but came from data
    /// (`common_name=data.data.user`): Vault's messages may echo it, so
    /// they are withheld.
    #[serde(default)]
    args_from_data: bool,
}

impl PartialEq for SecretRequest {
    fn eq(&self, other: &Self) -> bool {
        (self.list, &self.path, &self.body) == (other.list, &other.path, &other.body)
    }
}

impl Eq for SecretRequest {}

impl Hash for SecretRequest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.list, &self.path, &self.body).hash(state);
    }
}

impl PartialOrd for SecretRequest {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SecretRequest {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.path, self.list, &self.body).cmp(&(&other.path, other.list, &other.body))
    }
}

impl SecretRequest {
    /// What errors and logs show for a path that came from data.
    pub const PATH_FROM_DATA: &'static str = "<path from secret data>";

    /// Validates the path (relative, no `..`, URL-safe characters) and
    /// canonicalises the arguments.
    pub fn new(path: &str, args: &serde_json::Map<String, Value>) -> Result<Self, InvalidRequest> {
        Self::build(path, args, false)
    }

    /// The same request, noting that some of its arguments came from data
    /// (Vault's messages about it are then withheld).
    #[must_use]
    pub fn with_arguments_from_data(mut self, from_data: bool) -> Self {
        self.args_from_data = from_data;
        self
    }

    /// [`SecretRequest::new`], for a path that came from data when
    /// `from_data` (its errors then never echo it).
    pub fn build(
        path: &str,
        args: &serde_json::Map<String, Value>,
        from_data: bool,
    ) -> Result<Self, InvalidRequest> {
        let path = path.trim_start_matches('/');
        let ok_char = |c: char| c.is_ascii_alphanumeric() || "-_.@=+:,~/".contains(c);
        if path.is_empty()
            || !path.chars().all(ok_char)
            || path
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            let shown = if from_data {
                Self::PATH_FROM_DATA.to_owned()
            } else {
                format!("{path:?}")
            };
            return Err(InvalidRequest(format!(
                "{shown} is not a Vault path: use letters, digits and `-_.@=+:,~` separated by single `/`"
            )));
        }
        // serde_json's map is a BTreeMap here (no `preserve_order`), so the
        // serialisation is canonical.
        let body = if args.is_empty() {
            None
        } else {
            Some(serde_json::to_string(args).map_err(|e| InvalidRequest(e.to_string()))?)
        };
        Ok(Self {
            path: path.to_owned(),
            body,
            list: false,
            from_data,
            args_from_data: false,
        })
    }

    /// A LIST of the keys under `path` (consul-template's `secrets`),
    /// validated as [`SecretRequest::build`] validates a read's path.
    /// A trailing `/` (`secret/metadata/app/`) is Vault's own way of
    /// naming a folder, and is dropped: Vault lists `path` and `path/` alike.
    pub fn list(path: &str, from_data: bool) -> Result<Self, InvalidRequest> {
        let trimmed = path.trim_end_matches('/');
        let mut request = Self::build(trimmed, &serde_json::Map::new(), from_data)?;
        request.list = true;
        Ok(request)
    }

    /// Whether this is a LIST (`secrets`) rather than a read or a write.
    pub fn is_list(&self) -> bool {
        self.list
    }

    /// The same request at another path (KV version 2's `data/` or
    /// `metadata/` inserted): what the Vault client sends when the path as
    /// written is not the engine's route.
    #[must_use]
    pub fn at_path(&self, path: &str) -> Self {
        Self {
            path: path.to_owned(),
            ..self.clone()
        }
    }

    /// The Vault path, without `/v1/`. Only for the request itself: errors
    /// and logs use [`SecretRequest::shown_path`].
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path as errors and logs may show it: the path, or
    /// [`SecretRequest::PATH_FROM_DATA`] when it came from data.
    pub fn shown_path(&self) -> &str {
        if self.from_data {
            Self::PATH_FROM_DATA
        } else {
            &self.path
        }
    }

    /// Whether the path came from data rather than the template's text:
    /// then nothing derived from it (Vault's message about it included) may
    /// be shown.
    pub fn path_from_data(&self) -> bool {
        self.from_data
    }

    /// The JSON body for a write, or `None` for a read or a list.
    pub fn body(&self) -> Option<&str> {
        self.body.as_deref()
    }
}

impl fmt::Debug for SecretRequest {
    // Arguments can carry sensitive input (e.g. transit plaintext): only the
    // path is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretRequest")
            .field("path", &self.shown_path())
            .field("write", &self.body.is_some())
            .field("list", &self.list)
            .finish_non_exhaustive()
    }
}

/// Vault's error about `request`, as errors and logs may show it: when the
/// path or an argument came from data, every word Vault or the HTTP client
/// said is withheld (Vault's messages, a "no handler for route" or
/// "common name … not allowed by this role" for instance, and connection
/// errors can quote the path or the arguments); the operation and status
/// stay.
pub fn withhold_for(request: &SecretRequest, error: super::Error) -> super::Error {
    use super::Error as E;
    if !request.from_data && !request.args_from_data {
        return error;
    }
    let what = if request.from_data {
        "the path"
    } else {
        "an argument"
    };
    let withheld = || format!("(withheld: {what} came from secret data)");
    match error {
        E::Config { .. } => E::Config { reason: withheld() },
        // The reason names a memory limit, nothing of the request's.
        over @ E::OverBudget { .. } => over,
        E::Unreachable {
            operation, address, ..
        } => E::Unreachable {
            operation,
            address,
            reason: withheld(),
        },
        E::RateLimited {
            operation,
            status,
            retry_after,
            ..
        } => E::RateLimited {
            operation,
            status,
            retry_after,
            message: withheld(),
        },
        E::Status {
            operation, status, ..
        } => E::Status {
            operation,
            status,
            message: withheld(),
        },
        E::InvalidResponse { operation, .. } => E::InvalidResponse {
            operation,
            reason: withheld(),
        },
        // The driver's own words, naming no path.
        held @ E::Held { .. } => held,
    }
}

#[cfg(test)]
mod tests {
    use super::SecretRequest;
    use serde_json::json;

    /// Records written before lists existed have no `list` field: a
    /// request reads back as the read or write it was, and reads and
    /// writes are still written in that form.
    #[test]
    fn records_without_the_list_field_read_as_reads_and_writes() {
        let old_read: SecretRequest =
            serde_json::from_value(json!({"path": "secret/data/app", "body": null})).unwrap();
        assert!(!old_read.is_list());
        assert_eq!(old_read.body(), None);
        assert_eq!(
            old_read,
            SecretRequest::new("secret/data/app", &serde_json::Map::new()).unwrap()
        );
        let old_write: SecretRequest = serde_json::from_value(
            json!({"path": "pki/issue/web", "body": "{\"common_name\":\"a\"}", "from_data": false}),
        )
        .unwrap();
        assert!(!old_write.is_list());
        assert_eq!(old_write.body(), Some("{\"common_name\":\"a\"}"));
        let written = serde_json::to_value(&old_read).unwrap();
        assert!(written.get("list").is_none(), "{written}");
    }

    /// A list is its own request: not equal to the read of its path, and
    /// recorded as a list.
    #[test]
    fn a_list_is_recorded_as_a_list_and_differs_from_a_read() {
        let list = SecretRequest::list("secret/metadata/app/", false).unwrap();
        assert!(list.is_list());
        assert_eq!(list.path(), "secret/metadata/app");
        let read = SecretRequest::new("secret/metadata/app", &serde_json::Map::new()).unwrap();
        assert_ne!(list, read);
        let written = serde_json::to_value(&list).unwrap();
        assert_eq!(written["list"], json!(true));
        let back: SecretRequest = serde_json::from_value(written).unwrap();
        assert_eq!(back, list);
        assert!(back.is_list());
        assert!(SecretRequest::list("/", false).is_err());
    }
}
