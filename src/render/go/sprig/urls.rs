//! Sprig's `urlParse` and `urlJoin` over a port of Go's `net/url`: its
//! parser (scheme, opaque, authority, user, host, path and fragment
//! unescaped) and its `URL.String` (each part escaped as Go escapes it).

use serde_json::{Map, Value};

use super::super::model::{self, Go, go};
use super::conv::{Out, charge, first, string, text};

/// Which part of a URL a text is (`net/url`'s `encoding`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Path,
    Host,
    Zone,
    UserPassword,
    Fragment,
}

fn should_escape(c: u8, part: Part) -> bool {
    if c.is_ascii_alphanumeric() {
        return false;
    }
    if matches!(part, Part::Host | Part::Zone)
        && matches!(
            c,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
                | b'<'
                | b'>'
                | b'"'
        )
    {
        return false;
    }
    match c {
        b'-' | b'_' | b'.' | b'~' => return false,
        b'$' | b'&' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'?' | b'@' => match part {
            Part::Path => return c == b'?',
            Part::UserPassword => return matches!(c, b'@' | b'/' | b'?' | b':'),
            Part::Fragment => return false,
            Part::Host | Part::Zone => {}
        },
        _ => {}
    }
    !(part == Part::Fragment && matches!(c, b'!' | b'(' | b')' | b'*'))
}

fn escape(s: &[u8], part: Part) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for &c in s {
        if should_escape(c, part) {
            out.extend_from_slice(format!("%{c:02X}").as_bytes());
        } else {
            out.push(c);
        }
    }
    out
}

fn unhex(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// `net/url`'s `unescape`; `None` where Go fails.
fn unescape(s: &[u8], part: Part) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                let (hi, lo) = (unhex(*s.get(i + 1)?)?, unhex(*s.get(i + 2)?)?);
                let v = (hi << 4) | lo;
                let is_25 = &s[i..i + 3] == b"%25";
                if part == Part::Host && hi < 8 && !is_25 {
                    return None;
                }
                if part == Part::Zone && !is_25 && v != b' ' && should_escape(v, Part::Host) {
                    return None;
                }
                out.push(v);
                i += 3;
            }
            c => {
                if matches!(part, Part::Host | Part::Zone) && c < 0x80 && should_escape(c, part) {
                    return None;
                }
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

fn valid_port(port: &[u8]) -> bool {
    match port {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

fn parse_host(host: &[u8]) -> Option<Vec<u8>> {
    if host.first() == Some(&b'[') {
        let i = host.iter().rposition(|&b| b == b']')?;
        if !valid_port(&host[i + 1..]) {
            return None;
        }
        if let Some(zone) = host[..i].windows(3).position(|w| w == b"%25") {
            let mut out = unescape(&host[..zone], Part::Host)?;
            out.extend(unescape(&host[zone..i], Part::Zone)?);
            out.extend(unescape(&host[i..], Part::Host)?);
            return Some(out);
        }
    } else if let Some(i) = host.iter().rposition(|&b| b == b':')
        && !valid_port(&host[i..])
    {
        return None;
    }
    unescape(host, Part::Host)
}

fn valid_userinfo(s: &[u8]) -> bool {
    std::str::from_utf8(s).is_ok_and(|t| {
        t.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    '-' | '.'
                        | '_'
                        | ':'
                        | '~'
                        | '!'
                        | '$'
                        | '&'
                        | '\''
                        | '('
                        | ')'
                        | '*'
                        | '+'
                        | ','
                        | ';'
                        | '='
                        | '%'
                        | '@'
                )
        })
    })
}

/// A parsed URL: the fields `urlParse` shows and `urlJoin` writes.
#[derive(Default)]
struct Url {
    scheme: Vec<u8>,
    opaque: Vec<u8>,
    /// The user name, and the password if one was given.
    user: Option<(Vec<u8>, Option<Vec<u8>>)>,
    host: Vec<u8>,
    path: Vec<u8>,
    omit_host: bool,
    query: Vec<u8>,
    force_query: bool,
    fragment: Vec<u8>,
}

fn scheme(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    for (i, &c) in raw.iter().enumerate() {
        match c {
            c if c.is_ascii_alphabetic() => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return None,
            b':' => return Some((&raw[..i], &raw[i + 1..])),
            _ => return Some((b"", raw)),
        }
    }
    Some((b"", raw))
}

fn split_once(s: &[u8], c: u8) -> (&[u8], Option<&[u8]>) {
    match s.iter().position(|&b| b == c) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// `url.Parse`; `None` where Go fails.
fn parse(raw: &[u8]) -> Option<Url> {
    let (before, fragment) = split_once(raw, b'#');
    let mut url = Url::default();
    if before.iter().any(|&b| b < b' ' || b == 0x7f) {
        return None;
    }
    if before == b"*" {
        url.path = b"*".to_vec();
    } else {
        parse_body(before, &mut url)?;
    }
    if let Some(fragment) = fragment {
        url.fragment = unescape(fragment, Part::Fragment)?;
    }
    Some(url)
}

fn parse_body(raw: &[u8], url: &mut Url) -> Option<()> {
    let (scheme, rest) = scheme(raw)?;
    url.scheme = scheme.to_ascii_lowercase();
    let mut rest = rest;
    if rest.last() == Some(&b'?') && rest.iter().position(|&b| b == b'?') == Some(rest.len() - 1) {
        url.force_query = true;
        rest = &rest[..rest.len() - 1];
    } else {
        let (r, q) = split_once(rest, b'?');
        rest = r;
        url.query = q.unwrap_or_default().to_vec();
    }
    if !rest.starts_with(b"/") {
        if !url.scheme.is_empty() {
            url.opaque = rest.to_vec();
            return Some(());
        }
        let (segment, _) = split_once(rest, b'/');
        if segment.contains(&b':') {
            return None;
        }
    }
    if (!url.scheme.is_empty() || !rest.starts_with(b"///")) && rest.starts_with(b"//") {
        let authority_and_path = &rest[2..];
        let (authority, path) = match authority_and_path.iter().position(|&b| b == b'/') {
            Some(i) => authority_and_path.split_at(i),
            None => (authority_and_path, &b""[..]),
        };
        parse_authority(authority, url)?;
        rest = path;
    } else if !url.scheme.is_empty() && rest.starts_with(b"/") {
        url.omit_host = true;
    }
    url.path = unescape(rest, Part::Path)?;
    Some(())
}

fn parse_authority(authority: &[u8], url: &mut Url) -> Option<()> {
    let at = authority.iter().rposition(|&b| b == b'@');
    url.host = parse_host(at.map_or(authority, |i| &authority[i + 1..]))?;
    let Some(i) = at else {
        return Some(());
    };
    let userinfo = &authority[..i];
    if !valid_userinfo(userinfo) {
        return None;
    }
    url.user = Some(match split_once(userinfo, b':') {
        (name, None) => (unescape(name, Part::UserPassword)?, None),
        (name, Some(password)) => (
            unescape(name, Part::UserPassword)?,
            Some(unescape(password, Part::UserPassword)?),
        ),
    });
    Some(())
}

/// `Userinfo.String`.
fn user_text(user: &(Vec<u8>, Option<Vec<u8>>)) -> Vec<u8> {
    let mut out = escape(&user.0, Part::UserPassword);
    if let Some(password) = &user.1 {
        out.push(b':');
        out.extend(escape(password, Part::UserPassword));
    }
    out
}

/// `URL.Hostname`: the host without its port and brackets.
fn hostname(host: &[u8]) -> &[u8] {
    let mut h = host;
    if let Some(colon) = h.iter().rposition(|&b| b == b':')
        && valid_port(&h[colon..])
    {
        h = &h[..colon];
    }
    if h.len() >= 2 && h[0] == b'[' && h[h.len() - 1] == b']' {
        h = &h[1..h.len() - 1];
    }
    h
}

/// `URL.String`.
fn to_text(url: &Url) -> Vec<u8> {
    let mut out = Vec::new();
    if !url.scheme.is_empty() {
        out.extend_from_slice(&url.scheme);
        out.push(b':');
    }
    if url.opaque.is_empty() {
        let authority = !url.scheme.is_empty() || !url.host.is_empty() || url.user.is_some();
        let omitted = url.omit_host && url.host.is_empty() && url.user.is_none();
        if authority && !omitted {
            {
                if !url.host.is_empty() || !url.path.is_empty() || url.user.is_some() {
                    out.extend_from_slice(b"//");
                }
                if let Some(user) = &url.user {
                    out.extend(user_text(user));
                    out.push(b'@');
                }
                out.extend(escape(&url.host, Part::Host));
            }
        }
        let path = if url.path == b"*" {
            b"*".to_vec()
        } else {
            escape(&url.path, Part::Path)
        };
        if !path.is_empty() && path[0] != b'/' && !url.host.is_empty() {
            out.push(b'/');
        }
        if out.is_empty() && split_once(&path, b'/').0.contains(&b':') {
            out.extend_from_slice(b"./");
        }
        out.extend(path);
    } else {
        out.extend_from_slice(&url.opaque);
    }
    if url.force_query || !url.query.is_empty() {
        out.push(b'?');
        out.extend_from_slice(&url.query);
    }
    if !url.fragment.is_empty() {
        out.push(b'#');
        out.extend(escape(&url.fragment, Part::Fragment));
    }
    out
}

/// `urlParse`: the URL's parts in a map (Go panics on a bad URL).
fn url_parse(raw: &[u8]) -> Out {
    charge(raw.len() * 4)?;
    let url = parse(raw).ok_or("unable to parse url")?;
    let mut map = Map::new();
    let mut put = |k: &str, v: &[u8]| {
        map.insert(k.to_owned(), text(v));
    };
    put("scheme", &url.scheme);
    put("host", &url.host);
    put("hostname", hostname(&url.host));
    put("path", &url.path);
    put("query", &url.query);
    put("opaque", &url.opaque);
    put("fragment", &url.fragment);
    put(
        "userinfo",
        &url.user.as_ref().map(user_text).unwrap_or_default(),
    );
    Ok(Value::Object(map))
}

/// `urlJoin`: a URL from a map of its parts, each a string.
fn url_join(dict: &Map<String, Value>) -> Out {
    let get = |key: &str| -> Result<Vec<u8>, String> {
        match dict.get(key).map(go) {
            None => Ok(Vec::new()),
            Some(Go::Str(s)) => Ok(s.to_vec()),
            Some(Go::Number(n)) => Ok(n.as_str().as_bytes().to_vec()),
            Some(other) => Err(format!(
                "unable to parse {key} key, must be of type string, but {} found",
                super::conv::kind_of(&other)
            )),
        }
    };
    let mut url = Url {
        scheme: get("scheme")?,
        host: get("host")?,
        path: get("path")?,
        query: get("query")?,
        opaque: get("opaque")?,
        fragment: get("fragment")?,
        ..Url::default()
    };
    let userinfo = get("userinfo")?;
    if !userinfo.is_empty() {
        let raw = [b"proto://".as_slice(), &userinfo, b"@host"].concat();
        url.user = parse(&raw).ok_or("unable to parse userinfo in dict")?.user;
    }
    charge(url.path.len() * 4)?;
    Ok(text(&to_text(&url)))
}

/// The functions of this file; `None` for a name it does not have.
pub(super) fn call(name: &str, args: &[Go<'_>]) -> Option<Out> {
    Some(match name {
        "sprig_urlParse" => string(&first(args)).and_then(|s| url_parse(&s)),
        "sprig_urlJoin" => match first(args) {
            Go::Map(map) => url_join(map),
            Go::NilMap => url_join(&Map::new()),
            other => Err(format!(
                "wrong type for value; expected map[string]interface {{}}; got {}",
                model::type_name(&other)
            )),
        },
        _ => return None,
    })
}
