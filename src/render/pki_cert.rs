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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason,
    ScopedJson,
};
use serde_json::Value;

use super::budget::{self, Meter, Stop};

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

/// A PEM block as Go's `encoding/pem` holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The type, from `-----BEGIN <type>-----`.
    pub kind: String,
    /// Headers (`Key: value` lines); a key repeated keeps its last value.
    pub headers: BTreeMap<String, String>,
    /// The decoded bytes.
    pub bytes: Vec<u8>,
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

/// A line without its line break (`\n` or `\r\n`) and trailing spaces and
/// tabs, and the text after the break (Go's `getLine`).
fn get_line(data: &str) -> (&str, &str) {
    let (line, rest) = match data.find('\n') {
        None => (data, ""),
        Some(i) => (
            data[..i].strip_suffix('\r').unwrap_or(&data[..i]),
            &data[i + 1..],
        ),
    };
    (line.trim_end_matches([' ', '\t']), rest)
}

/// The first PEM block in `data`, decoded as Go's `pem.Decode` (Go 1.19)
/// does: blocks whose END line or base64 is wrong are skipped.
pub fn decode(data: &str) -> Option<Block> {
    decode_metered(data, &mut Meter::new()).unwrap_or(None)
}

const START: &str = "\n-----BEGIN ";
const END: &str = "\n-----END ";
const DASHES: &str = "-----";

/// [`decode`], in time linear in `data`, charging `meter` as it goes.
///
/// Go's loop tries every `-----BEGIN` line in turn and, for each, searches
/// for the next `-----END` line and decodes everything in between: done
/// literally, text with many BEGIN lines before one END line costs the
/// square of its length (50,000 lines kept a render thread busy for half a
/// minute). The result is the same here without the repeated work: the
/// next END line is found once for all the BEGIN lines before it
/// ([`NextEnd`]), what follows an END trailer is checked once per place
/// ([`blank_to_eol`]), and a block's text is checked for characters base64
/// cannot hold before it is decoded, which fails a candidate at the first
/// such character (the next BEGIN line has some).
fn decode_metered(data: &str, meter: &mut Meter) -> Result<Option<Block>, Stop> {
    let mut next_end = NextEnd::default();
    let mut blank_lines: HashMap<usize, bool> = HashMap::new();
    // Byte offsets into `data` of what is left.
    let mut at = 0;
    loop {
        let rest = &data[at..];
        let skipped = if rest.starts_with(&START[1..]) {
            START.len() - 1
        } else {
            let Some(found) = rest.find(START) else {
                meter.text(rest.len())?;
                return Ok(None);
            };
            found + START.len()
        };
        meter.text(skipped)?;
        at += skipped;
        let (type_line, after) = get_line(&data[at..]);
        meter.text(data.len() - at - after.len())?;
        at = data.len() - after.len();
        let Some(kind) = type_line.strip_suffix(DASHES) else {
            continue;
        };
        let mut headers = BTreeMap::new();
        loop {
            if at == data.len() {
                return Ok(None);
            }
            let (line, next) = get_line(&data[at..]);
            let Some((key, value)) = line.split_once(':') else {
                break;
            };
            meter.text(data.len() - at - next.len())?;
            headers.insert(key.trim().to_owned(), value.trim().to_owned());
            at = data.len() - next.len();
        }
        let rest = &data[at..];
        let (end_index, trailer_index) = if headers.is_empty() && rest.starts_with(&END[1..]) {
            (0, END.len() - 1)
        } else {
            match next_end.from(data, at, meter)? {
                Some(i) => (i - at, i - at + END.len()),
                None => continue,
            }
        };
        let trailer = &rest[trailer_index..];
        let trailer_len = kind.len() + DASHES.len();
        if trailer.len() < trailer_len || !trailer.is_char_boundary(trailer_len) {
            continue;
        }
        let (trailer, rest_of_line) = trailer.split_at(trailer_len);
        meter.text(trailer_len)?;
        if !trailer.starts_with(kind) || !trailer.ends_with(DASHES) {
            continue;
        }
        let eol_at = data.len() - rest_of_line.len();
        let blank = if let Some(&blank) = blank_lines.get(&eol_at) {
            blank
        } else {
            let blank = blank_to_eol(rest_of_line, meter)?;
            blank_lines.insert(eol_at, blank);
            blank
        };
        if !blank {
            continue;
        }
        let body = &rest[..end_index];
        let Some(bytes) = go_base64(body, meter)? else {
            continue;
        };
        return Ok(Some(Block {
            kind: kind.to_owned(),
            headers,
            bytes,
        }));
    }
}

/// The next END line at or after a position, for positions that only grow:
/// each byte is searched once, however many BEGIN lines ask.
#[derive(Default)]
struct NextEnd {
    /// The last search: from where, and the END line found (its offset).
    last: Option<(usize, Option<usize>)>,
}

impl NextEnd {
    fn from(&mut self, data: &str, at: usize, meter: &mut Meter) -> Result<Option<usize>, Stop> {
        if let Some((searched_from, found)) = self.last
            && searched_from <= at
            && found.is_none_or(|end| end >= at)
        {
            return Ok(found);
        }
        let found = data[at..].find(END).map(|i| at + i);
        meter.text(found.map_or(data.len(), |end| end + END.len()) - at)?;
        self.last = Some((at, found));
        Ok(found)
    }
}

/// Whether the rest of the line is blank as Go's `getLine` sees it:
/// spaces and tabs, then an optional `\r`, then the line break or the end.
fn blank_to_eol(rest: &str, meter: &mut Meter) -> Result<bool, Stop> {
    let blanks = rest
        .bytes()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    meter.text(blanks)?;
    let after = &rest.as_bytes()[blanks..];
    let after = after.strip_prefix(b"\r").unwrap_or(after);
    Ok(after.first().is_none_or(|&b| b == b'\n'))
}

/// Go's `base64.StdEncoding` decoding of PEM text: spaces, tabs and line
/// breaks are skipped, padding is required, the unused bits of the last
/// character may be set. Text holding any other character fails at that
/// character, before anything is decoded.
fn go_base64(text: &str, meter: &mut Meter) -> Result<Option<Vec<u8>>, Stop> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
    );
    let valid = |b: &u8| {
        b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b' ' | b'\t' | b'\r' | b'\n')
    };
    let clean = text.bytes().take_while(valid).count();
    meter.text(clean)?;
    if clean < text.len() {
        return Ok(None);
    }
    let compact: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '\t' | '\r' | '\n'))
        .collect();
    meter.text(compact.len())?;
    Ok(LENIENT.decode(compact).ok())
}

/// The block as Go's `pem.EncodeToMemory` writes it.
pub fn encode(block: &Block) -> String {
    const PROC_TYPE: &str = "Proc-Type";
    let mut out = format!("-----BEGIN {}-----\n", block.kind);
    if !block.headers.is_empty() {
        if let Some(value) = block.headers.get(PROC_TYPE) {
            let _ = writeln!(out, "{PROC_TYPE}: {value}");
        }
        for (key, value) in block.headers.iter().filter(|(k, _)| *k != PROC_TYPE) {
            let _ = writeln!(out, "{key}: {value}");
        }
        out.push('\n');
    }
    let text = base64::engine::general_purpose::STANDARD.encode(&block.bytes);
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    let _ = writeln!(out, "-----END {}-----", block.kind);
    out
}

/// A DER element that is present but malformed.
struct Malformed;

/// Reads DER: one element at a time, definite lengths in their shortest
/// form, one-byte tags.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    fn read(&mut self, tag: u8) -> Option<&'a [u8]> {
        let (&first, rest) = self.0.split_first()?;
        if first != tag || tag & 0x1f == 0x1f {
            return None;
        }
        let (&len_byte, rest) = rest.split_first()?;
        let (len, rest) = if len_byte < 0x80 {
            (usize::from(len_byte), rest)
        } else {
            let n = usize::from(len_byte & 0x7f);
            if n == 0 || n > 4 || rest.len() < n || rest[0] == 0 {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            if len < 0x80 {
                return None;
            }
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        let (content, rest) = rest.split_at(len);
        self.0 = rest;
        Some(content)
    }

    /// An element with this tag if it comes next; `Err` if it does but is
    /// malformed.
    fn read_optional(&mut self, tag: u8) -> Result<Option<&'a [u8]>, Malformed> {
        if self.peek() == Some(tag) {
            self.read(tag).map(Some).ok_or(Malformed)
        } else {
            Ok(None)
        }
    }
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BOOLEAN: u8 = 0x01;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
/// 2.5.29.19, basic constraints.
const BASIC_CONSTRAINTS: [u8; 3] = [0x55, 0x1d, 0x13];

/// Whether a DER certificate is a CA, as Go's `x509` sets `IsCA`: the basic
/// constraints of a version 3 certificate say `cA`. `None` when the bytes
/// are not a certificate.
pub fn certificate_is_ca(der: &[u8]) -> Option<bool> {
    let mut input = Der(der);
    let mut cert = Der(input.read(SEQUENCE)?);
    if !input.0.is_empty() {
        return None;
    }
    let mut tbs = Der(cert.read(SEQUENCE)?);
    cert.read(SEQUENCE)?;
    cert.read(BIT_STRING)?;
    let version = match tbs.read_optional(0xa0).ok()? {
        None => 0,
        Some(explicit) => {
            let mut explicit = Der(explicit);
            match explicit.read(INTEGER)? {
                [v] if *v <= 2 => *v,
                _ => return None,
            }
        }
    };
    tbs.read(INTEGER)?; // serial number
    for _ in 0..5 {
        // signature algorithm, issuer, validity, subject, public key
        tbs.read(SEQUENCE)?;
    }
    if version < 1 {
        return Some(false);
    }
    tbs.read_optional(0x81).ok()?; // issuer unique id
    tbs.read_optional(0x82).ok()?; // subject unique id
    if version < 2 {
        return Some(false);
    }
    let Some(extensions) = tbs.read_optional(0xa3).ok()? else {
        return Some(false);
    };
    let mut list = Der(Der(extensions).read(SEQUENCE)?);
    let mut is_ca = false;
    while !list.0.is_empty() {
        let mut extension = Der(list.read(SEQUENCE)?);
        let oid = extension.read(OID)?;
        if let Some(critical) = extension.read_optional(BOOLEAN).ok()? {
            boolean(critical)?;
        }
        let value = extension.read(OCTET_STRING)?;
        if oid == BASIC_CONSTRAINTS {
            let mut constraints = Der(Der(value).read(SEQUENCE)?);
            if let Some(ca) = constraints.read_optional(BOOLEAN).ok()? {
                is_ca = boolean(ca)?;
            }
        }
    }
    Some(is_ca)
}

fn boolean(content: &[u8]) -> Option<bool> {
    match content {
        [0x00] => Some(false),
        [0xff] => Some(true),
        _ => None,
    }
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

    const ROOT: &str = include_str!("../../tests/fixtures/pki/root.pem");
    const INTERMEDIATE: &str = include_str!("../../tests/fixtures/pki/int.pem");
    const LEAF: &str = include_str!("../../tests/fixtures/pki/leaf.pem");
    const OTHER_LEAF: &str = include_str!("../../tests/fixtures/pki/leaf2.pem");
    const EC_KEY: &str = include_str!("../../tests/fixtures/pki/leaf-ec.key");
    const PKCS8_KEY: &str = include_str!("../../tests/fixtures/pki/leaf-p8.key");

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
