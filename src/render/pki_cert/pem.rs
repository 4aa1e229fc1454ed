//! Go's `encoding/pem` (Go 1.19): `pem.Decode`, which skips blocks whose
//! END line or base64 is wrong, and `pem.EncodeToMemory`, metered as they
//! scan.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use crate::render::budget::{Meter, Stop};

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
pub(super) fn decode_metered(data: &str, meter: &mut Meter) -> Result<Option<Block>, Stop> {
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
