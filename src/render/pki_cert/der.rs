//! Just enough DER to tell a CA certificate from a leaf: the basic
//! constraints of a version 3 X.509 certificate.

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
