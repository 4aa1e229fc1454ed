//! `pkiCert`: the certificate, key and CAs of a PKI issue response, as
//! consul-template's `pkiCert` gives them to a template (`.Cert`, `.Key`,
//! `.CA`, `.CAChain`).
//!
//! `vault-csi-driver convert` turns `{{ with pkiCert "pki/issue/web"
//! "common_name=…" }}` into `{{#with (pkiCert (secret "pki/issue/web"
//! common_name="…")) as |p1|}}`; the `secret` write issues the certificate
//! as the agent's does, and this helper derives the four fields from the
//! response the way consul-template does:
//!
//! 1. Every string in the response's `data`, and every string of
//!    `data.ca_chain`, is written out followed by a newline, in Go's map
//!    order (random);
//! 2. that text is scanned for PEM blocks, from `-----BEGIN` to the
//!    `-----` that closes the next `-----END` line, each decoded as Go's
//!    `encoding/pem` does;
//! 3. a block whose type ends in `PRIVATE KEY` is the key (the last one
//!    wins); any other block must be an X.509 certificate: a CA (basic
//!    constraints with `cA` set, in a version 3 certificate) is `.CA` if
//!    it is the first, and joins `.CAChain` unless already there; any other
//!    certificate is `.Cert` (the last one wins);
//! 4. each field is the block written again by Go's `pem.EncodeToMemory`:
//!    base64 in lines of 64 characters, headers sorted, and a newline
//!    after `-----END …-----` (Vault sends none, so `.Cert` is
//!    `data.certificate` plus a newline).
//!
//! Because of step 1, the agent's result can depend on Go's map order (two
//! different leaf certificates in two fields, say). The helper computes the
//! result for every order and fails the render unless all agree, and it
//! fails where the agent would fail: a response without a leaf certificate
//! (the agent asks again forever), a certificate block that is not a
//! certificate, or PEM text it cannot decode. It checks a certificate's
//! structure down to the basic constraints, not everything Go's `x509`
//! parser checks; Vault's PKI engine only returns certificates Go parses.
//!
//! Not reproduced: the agent reads the certificate back from the template's
//! destination file and reuses it while it is valid (after a restart, say);
//! the driver keeps the response with the volume (its record included) and
//! issues a new certificate before expiry (`README.md`, "Migrating from
//! Vault Agent").

mod der;
mod pem;

use std::collections::{HashMap, HashSet};

use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason,
    ScopedJson,
};
use serde_json::Value;

pub use der::certificate_is_ca;
use pem::decode_metered;
pub use pem::{Block, decode, encode};

use crate::render::budget::{self, Meter, Stop};

/// Most fields holding PEM blocks whose orders are compared (6! = 720
/// orders). A PKI issue response has four.
const MAX_PEM_FIELDS: usize = 6;

/// Why the certificate could not be derived. No message quotes the data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkiError {
    /// The response has no certificate that is not a CA.
    #[error(
        "the response holds no certificate (other than CAs); Vault Agent would ask Vault again instead of rendering"
    )]
    NoCertificate,
    /// PEM text the scan finds but cannot decode.
    #[error(
        "field {0:?} holds PEM text that does not decode; Vault Agent's result would depend on Go's map order"
    )]
    Malformed(String),
    /// A block that is not a private key must be a certificate.
    #[error("field {field:?} holds a {kind:?} block that is not an X.509 certificate")]
    NotACertificate {
        /// The field of `data`.
        field: String,
        /// The block's type.
        kind: String,
    },
    /// The agent's result depends on Go's random map order.
    #[error(
        "the certificate, key or CAs Vault Agent would use depend on Go's random map order (several differ across the fields {0})"
    )]
    OrderDependent(String),
    /// Too many fields hold PEM blocks to compare every order.
    #[error("{0} fields of the response hold PEM blocks; at most {MAX_PEM_FIELDS} are supported")]
    TooManyFields(usize),
    /// `data` is not a map.
    #[error("the response's data is not a map")]
    NotAMap,
    /// The render stopped at one of its limits while deriving the fields.
    #[error("{0}")]
    Stopped(Stop),
}

impl From<Stop> for PkiError {
    fn from(stop: Stop) -> Self {
        Self::Stopped(stop)
    }
}

/// The fields consul-template's `pkiCert` result has.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PemEncoded {
    /// The certificate (`.Cert`).
    pub cert: String,
    /// The private key (`.Key`), empty without one.
    pub key: String,
    /// The first CA found (`.CA`), empty without one.
    pub ca: String,
    /// Every CA found, once each, in order (`.CAChain`).
    pub ca_chain: Vec<String>,
}

impl PemEncoded {
    /// The value templates see: `Cert`, `Key`, `CA` and `CAChain`.
    pub fn to_value(&self) -> Value {
        serde_json::json!({
            "Cert": self.cert,
            "Key": self.key,
            "CA": self.ca,
            "CAChain": self.ca_chain,
        })
    }
}

/// A block, classified; the number is the block's text as Go writes it,
/// interned (equal texts, equal numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pem {
    Key(usize),
    Ca(usize),
    Leaf(usize),
}

/// consul-template's result for one order of the fields, as interned texts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Combined {
    cert: usize,
    key: Option<usize>,
    ca: Option<usize>,
    ca_chain: Vec<usize>,
}

/// Derives `.Cert`, `.Key`, `.CA` and `.CAChain` from a PKI response's
/// `data` (see the module docs). Linear in the size of `data`, and metered
/// when called during a render (see `budget`).
pub fn pem_encoded(data: &Value) -> Result<PemEncoded, PkiError> {
    pem_encoded_metered(data, &mut Meter::new())
}

fn pem_encoded_metered(data: &Value, meter: &mut Meter) -> Result<PemEncoded, PkiError> {
    let fields: Vec<(&str, String)> = match data {
        Value::Null => Vec::new(),
        Value::Object(map) => {
            let mut fields = Vec::new();
            for (k, v) in map {
                meter.text(k.len())?;
                match v {
                    Value::String(s) => {
                        meter.text(s.len())?;
                        fields.push((k.as_str(), format!("{s}\n")));
                    }
                    Value::Array(items) if k == "ca_chain" => {
                        let mut text = String::new();
                        for item in items.iter().filter_map(Value::as_str) {
                            meter.text(item.len())?;
                            text.push_str(item);
                            text.push('\n');
                        }
                        fields.push((k.as_str(), text));
                    }
                    _ => meter.add(1)?,
                }
            }
            fields
        }
        _ => return Err(PkiError::NotAMap),
    };
    let mut texts = Interned::default();
    let mut with_blocks = Vec::new();
    for (name, text) in &fields {
        let malformed = || PkiError::Malformed((*name).to_owned());
        let mut blocks = Vec::new();
        for chunk in chunks(text).ok_or_else(malformed)? {
            meter.text(chunk.len())?;
            let block = decode_metered(&format!("\n{chunk}\n"), meter)?.ok_or_else(malformed)?;
            blocks.push(classify(&block, name, &mut texts, meter)?);
        }
        if !blocks.is_empty() {
            with_blocks.push((*name, blocks));
        }
    }
    if with_blocks.len() > MAX_PEM_FIELDS {
        return Err(PkiError::TooManyFields(with_blocks.len()));
    }
    let blocks: u64 = with_blocks.iter().map(|(_, b)| b.len() as u64).sum();
    let mut order: Vec<usize> = (0..with_blocks.len()).collect();
    meter.add(blocks)?;
    let first = combine(&with_blocks, &order);
    while next_permutation(&mut order) {
        meter.add(blocks)?;
        if combine(&with_blocks, &order) != first {
            let names: Vec<String> = with_blocks.iter().map(|(n, _)| format!("{n:?}")).collect();
            return Err(PkiError::OrderDependent(names.join(", ")));
        }
    }
    meter.finish()?;
    let first = first.ok_or(PkiError::NoCertificate)?;
    let text = |id: usize| texts.text(id).to_owned();
    Ok(PemEncoded {
        cert: text(first.cert),
        key: first.key.map(text).unwrap_or_default(),
        ca: first.ca.map(text).unwrap_or_default(),
        ca_chain: first.ca_chain.into_iter().map(text).collect(),
    })
}

/// Block texts by number, each kept once.
#[derive(Default)]
struct Interned {
    ids: HashMap<String, usize>,
    texts: Vec<String>,
}

impl Interned {
    fn id(&mut self, text: String) -> usize {
        if let Some(&id) = self.ids.get(&text) {
            return id;
        }
        let id = self.texts.len();
        self.texts.push(text.clone());
        self.ids.insert(text, id);
        id
    }

    fn text(&self, id: usize) -> &str {
        &self.texts[id]
    }
}

/// consul-template's result for the fields taken in `order`, `None`
/// without a leaf certificate. Linear in the number of blocks.
fn combine(fields: &[(&str, Vec<Pem>)], order: &[usize]) -> Option<Combined> {
    let mut result = Combined::default();
    let mut cert = None;
    let mut in_chain = HashSet::new();
    for &i in order {
        for pem in &fields[i].1 {
            match *pem {
                Pem::Key(k) => result.key = Some(k),
                Pem::Leaf(c) => cert = Some(c),
                Pem::Ca(c) => {
                    result.ca.get_or_insert(c);
                    if in_chain.insert(c) {
                        result.ca_chain.push(c);
                    }
                }
            }
        }
    }
    result.cert = cert?;
    Some(result)
}

/// The next permutation in lexicographic order; false after the last.
fn next_permutation(order: &mut [usize]) -> bool {
    let Some(i) = (1..order.len()).rev().find(|&i| order[i - 1] < order[i]) else {
        return false;
    };
    let pivot = i - 1;
    let Some(j) = (i..order.len()).rev().find(|&j| order[j] > order[pivot]) else {
        return false;
    };
    order.swap(pivot, j);
    order[i..].reverse();
    true
}

fn classify(
    block: &Block,
    field: &str,
    texts: &mut Interned,
    meter: &mut Meter,
) -> Result<Pem, PkiError> {
    meter.text(block.bytes.len())?;
    let encoded = texts.id(encode(block));
    if block.kind.ends_with("PRIVATE KEY") {
        return Ok(Pem::Key(encoded));
    }
    match certificate_is_ca(&block.bytes) {
        Some(true) => Ok(Pem::Ca(encoded)),
        Some(false) => Ok(Pem::Leaf(encoded)),
        None => Err(PkiError::NotACertificate {
            field: field.to_owned(),
            kind: block.kind.clone(),
        }),
    }
}

/// The PEM chunks consul-template's scan cuts from one field: from
/// `-----BEGIN` to the `-----` closing the first `-----END` after it.
/// `None` when a chunk does not end inside the field: then where it ends,
/// and so the result, depends on the fields that follow in map order.
fn chunks(text: &str) -> Option<Vec<&str>> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN") {
        let from = &rest[start..];
        let end_line = from.find("-----END")? + "-----END".len();
        let end = end_line + from[end_line..].find("-----")? + "-----".len();
        found.push(&from[..end]);
        rest = &from[end..];
    }
    Some(found)
}

/// `(pkiCert response)`.
pub(super) struct PkiCert;

impl HelperDef for PkiCert {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        budget::charge_call(h)?;
        let [response] = h.params().as_slice() else {
            return Err(RenderErrorReason::Other(
                "`pkiCert` takes one argument, a `secret` response".to_owned(),
            )
            .into());
        };
        let response = response.value();
        // The pass that collects `secret` calls answers null.
        if response.is_null() && !r.strict_mode() {
            return Ok(ScopedJson::Derived(Value::Null));
        }
        let data = response.get("data").unwrap_or(&Value::Null);
        let pems = pem_encoded_metered(data, &mut Meter::new()).map_err(|e| match e {
            PkiError::Stopped(stop) => RenderError::from(stop),
            e => RenderErrorReason::Other(format!("`pkiCert`: {e}")).into(),
        })?;
        let result = pems.to_value();
        budget::hold(&result)?;
        Ok(ScopedJson::Derived(result))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{Block, PkiError, certificate_is_ca, decode, encode, pem_encoded};

    const ROOT: &str = include_str!("../../../tests/fixtures/pki/root.pem");
    const INTERMEDIATE: &str = include_str!("../../../tests/fixtures/pki/int.pem");
    const LEAF: &str = include_str!("../../../tests/fixtures/pki/leaf.pem");
    const OTHER_LEAF: &str = include_str!("../../../tests/fixtures/pki/leaf2.pem");
    const EC_KEY: &str = include_str!("../../../tests/fixtures/pki/leaf-ec.key");
    const PKCS8_KEY: &str = include_str!("../../../tests/fixtures/pki/leaf-p8.key");

    /// PEM as Vault sends it: no newline after the END line.
    fn vault(pem: &str) -> String {
        pem.trim_end().to_owned()
    }

    /// A `pki/issue` response's data.
    fn issued() -> Value {
        json!({
            "certificate": vault(LEAF),
            "issuing_ca": vault(INTERMEDIATE),
            "ca_chain": [vault(INTERMEDIATE), vault(ROOT)],
            "private_key": vault(EC_KEY),
            "private_key_type": "ec",
            "serial_number": "39:dd:2e",
            "expiration": 4_102_444_800_u64,
        })
    }

    #[test]
    fn an_issue_response_gives_the_pems_with_a_newline_each() {
        let pems = pem_encoded(&issued()).unwrap();
        assert_eq!(pems.cert, LEAF);
        assert_eq!(pems.key, EC_KEY);
        assert_eq!(pems.ca, INTERMEDIATE);
        assert_eq!(pems.ca_chain, vec![INTERMEDIATE, ROOT]);
        let mut pkcs8 = issued();
        pkcs8["private_key"] = json!(vault(PKCS8_KEY));
        assert_eq!(pem_encoded(&pkcs8).unwrap().key, PKCS8_KEY);
    }

    #[test]
    fn pem_text_is_written_again_as_go_writes_it() {
        // 76-column lines with CRLF and trailing spaces: Go re-wraps at 64.
        let body: String = LEAF.lines().filter(|l| !l.starts_with("-----")).collect();
        let wrapped: Vec<&str> = body
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let odd = format!(
            "junk before\r\n-----BEGIN CERTIFICATE-----  \r\n{}\r\n-----END CERTIFICATE-----",
            wrapped.join(" \r\n")
        );
        let mut data = issued();
        data["certificate"] = json!(odd);
        assert_eq!(pem_encoded(&data).unwrap().cert, LEAF);
    }

    #[test]
    fn the_agents_failures_are_render_failures() {
        let mut no_leaf = issued();
        no_leaf.as_object_mut().unwrap().remove("certificate");
        assert_eq!(pem_encoded(&no_leaf), Err(PkiError::NoCertificate));
        assert_eq!(pem_encoded(&Value::Null), Err(PkiError::NoCertificate));
        assert_eq!(pem_encoded(&json!("x")), Err(PkiError::NotAMap));
        let mut unended = issued();
        unended["certificate"] = json!("-----BEGIN CERTIFICATE-----\nMIIB\n");
        assert_eq!(
            pem_encoded(&unended),
            Err(PkiError::Malformed("certificate".to_owned()))
        );
        let mut bad_base64 = issued();
        bad_base64["certificate"] =
            json!("-----BEGIN CERTIFICATE-----\nM!IB\n-----END CERTIFICATE-----");
        assert_eq!(
            pem_encoded(&bad_base64),
            Err(PkiError::Malformed("certificate".to_owned()))
        );
        let mut not_a_cert = issued();
        not_a_cert["csr"] = json!(
            "-----BEGIN CERTIFICATE REQUEST-----\nMAMCAQA=\n-----END CERTIFICATE REQUEST-----"
        );
        assert_eq!(
            pem_encoded(&not_a_cert),
            Err(PkiError::NotACertificate {
                field: "csr".to_owned(),
                kind: "CERTIFICATE REQUEST".to_owned()
            })
        );
    }

    #[test]
    fn a_result_that_depends_on_gos_map_order_is_refused() {
        // Two leaf certificates: the agent keeps whichever comes last.
        let mut two_leaves = issued();
        two_leaves["other"] = json!(vault(OTHER_LEAF));
        assert!(matches!(
            pem_encoded(&two_leaves),
            Err(PkiError::OrderDependent(_))
        ));
        // The chain in another order than issuing_ca first.
        let mut reversed = issued();
        reversed["ca_chain"] = json!([vault(ROOT), vault(INTERMEDIATE)]);
        assert!(matches!(
            pem_encoded(&reversed),
            Err(PkiError::OrderDependent(_))
        ));
        // The same leaf twice is no ambiguity.
        let mut same_leaf = issued();
        same_leaf["again"] = json!(vault(LEAF));
        assert_eq!(pem_encoded(&same_leaf).unwrap().cert, LEAF);
    }

    #[test]
    fn basic_constraints_decide_what_is_a_ca() {
        let der = |pem: &str| decode(pem).unwrap().bytes;
        assert_eq!(certificate_is_ca(&der(ROOT)), Some(true));
        assert_eq!(certificate_is_ca(&der(INTERMEDIATE)), Some(true));
        assert_eq!(certificate_is_ca(&der(LEAF)), Some(false));
        assert_eq!(certificate_is_ca(&der(EC_KEY)), None);
        let mut trailing = der(LEAF);
        trailing.push(0);
        assert_eq!(certificate_is_ca(&trailing), None);
    }

    #[test]
    fn headers_are_written_proc_type_first_then_sorted() {
        let block = decode(
            "-----BEGIN RSA PRIVATE KEY-----\nDEK-Info: AES-128-CBC,00\nProc-Type: 4,ENCRYPTED\nA-Header:  x \n\nAAEC\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap();
        assert_eq!(
            encode(&block),
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nA-Header: x\nDEK-Info: AES-128-CBC,00\n\nAAEC\n-----END RSA PRIVATE KEY-----\n"
        );
        let empty = Block {
            kind: "X".to_owned(),
            headers: std::collections::BTreeMap::new(),
            bytes: Vec::new(),
        };
        assert_eq!(encode(&empty), "-----BEGIN X-----\n-----END X-----\n");
        // A wrong END type skips the block.
        assert_eq!(decode("-----BEGIN A-----\nAAEC\n-----END B-----\n"), None);
    }
}
