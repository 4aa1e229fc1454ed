//! The published list (`docs/migrating-from-vault-agent.md`, "Functions")
//! covers every function a consul-template template can call, each with
//! the status the converter gives it.

use std::collections::BTreeMap;

use vault_csi_convert::gotemplate::funcs::{FUNCTIONS, Status};

fn published() -> BTreeMap<String, (String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/migrating-from-vault-agent.md"
    );
    let doc = std::fs::read_to_string(path).expect("the migration guide exists");
    let section = doc
        .split("\n### Functions\n")
        .nth(1)
        .expect("the guide has a Functions section");
    let mut rows = BTreeMap::new();
    for line in section.lines().skip_while(|l| !l.starts_with('|')) {
        if !line.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        let Some(name) = cells[0].strip_prefix('`').and_then(|n| n.strip_suffix('`')) else {
            continue;
        };
        let previous = rows.insert(
            name.to_owned(),
            (
                cells[1].to_owned(),
                cells.get(2).copied().unwrap_or("").to_owned(),
            ),
        );
        assert!(previous.is_none(), "{name} is listed twice");
    }
    rows
}

#[test]
fn the_published_list_is_the_converters_table() {
    let published = published();
    let mut missing = Vec::new();
    for (name, status) in FUNCTIONS {
        let (word, why) = match status {
            Status::Converted => ("converted, byte-exact", None),
            Status::Security(reason) => ("refused: security", Some(*reason)),
            Status::Semantic(reason) => ("refused: semantic", Some(*reason)),
        };
        match published.get(*name) {
            None => missing.push((*name).to_owned()),
            Some((published_word, published_why)) => {
                assert_eq!(published_word, word, "{name}");
                if let Some(why) = why {
                    assert_eq!(published_why, why, "{name}: the reason");
                }
            }
        }
    }
    assert!(missing.is_empty(), "not in the published list: {missing:?}");
    let extra: Vec<&String> = published
        .keys()
        .filter(|n| !FUNCTIONS.iter().any(|(f, _)| f == n))
        .collect();
    assert!(
        extra.is_empty(),
        "published but not in the converter's table: {extra:?}"
    );
}

/// consul-template's own functions.
const CONSUL_TEMPLATE: &[&str] = &[
    "base64Decode",
    "base64Encode",
    "base64URLDecode",
    "base64URLEncode",
    "byKey",
    "byMeta",
    "byPort",
    "byTag",
    "caLeaf",
    "caRoots",
    "connect",
    "contains",
    "containsAll",
    "containsAny",
    "containsNone",
    "containsNotAll",
    "datacenters",
    "divide",
    "env",
    "envOrDefault",
    "executeTemplate",
    "explode",
    "explodeMap",
    "exportedServices",
    "file",
    "hmacSHA256Hex",
    "importedServices",
    "in",
    "indent",
    "join",
    "key",
    "keyExists",
    "keyOrDefault",
    "loop",
    "ls",
    "maximum",
    "md5sum",
    "mergeMap",
    "mergeMapWithOverride",
    "minimum",
    "modulo",
    "multiply",
    "mustEnv",
    "node",
    "nodes",
    "nomadService",
    "nomadServices",
    "nomadVar",
    "nomadVarExists",
    "nomadVarList",
    "nomadVarListSafe",
    "parseBool",
    "parseFloat",
    "parseInt",
    "parseJSON",
    "parseUint",
    "parseYAML",
    "partitions",
    "peerings",
    "pkiCert",
    "plugin",
    "regexMatch",
    "regexReplaceAll",
    "replaceAll",
    "safeLs",
    "safeTree",
    "scratch",
    "secret",
    "secrets",
    "service",
    "services",
    "sha256Hex",
    "sockaddr",
    "split",
    "splitToMap",
    "spew_dump",
    "spew_printf",
    "spew_sdump",
    "spew_sprintf",
    "subtract",
    "timestamp",
    "toJSON",
    "toJSONPretty",
    "toLower",
    "toTitle",
    "toTOML",
    "toUnescapedJSON",
    "toUnescapedJSONPretty",
    "toUpper",
    "toYAML",
    "tree",
    "trim",
    "trimPrefix",
    "trimSpace",
    "trimSuffix",
    "writeToFile",
    "add",
];
/// text/template's builtins.
const BUILTINS: &[&str] = &[
    "and", "call", "html", "index", "slice", "js", "len", "not", "or", "print", "printf",
    "println", "urlquery", "eq", "ge", "gt", "le", "lt", "ne",
];

/// The table holds consul-template's whole function map (its
/// `template/funcs.go` and `template/template.go` at the version OpenBao's
/// agent embeds), text/template's builtins and Sprig's hermetic functions
/// as `sprig_*`.
#[test]
fn the_table_covers_consul_templates_function_map() {
    for name in CONSUL_TEMPLATE.iter().chain(BUILTINS) {
        assert!(
            FUNCTIONS.iter().any(|(f, _)| f == name),
            "{name} is missing from the converter's table"
        );
    }
    let sprig = FUNCTIONS
        .iter()
        .filter(|(f, _)| f.starts_with("sprig_"))
        .count();
    assert!(sprig >= 190, "Sprig's hermetic functions: {sprig}");
}
