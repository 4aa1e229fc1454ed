//! The functions a consul-template template can call (text/template's
//! builtins, consul-template's own, and the `sprig_*` family consul-template
//! adds), and what `convert` does with each: the table
//! `docs/migrating-from-vault-agent.md` publishes (a test compares them).

/// What `convert` does with a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Converted to the driver's Go-model helpers, byte-exact.
    Converted,
    /// Refused for a security reason (which).
    Security(&'static str),
    /// Refused because the driver cannot mean the same thing (why).
    Semantic(&'static str),
    /// Not converted yet: refused, saying so.
    NotYet,
}

/// Every function, with its status, in the order of the published table.
pub const FUNCTIONS: &[(&str, Status)] = &[
    ("and", Status::Converted),
    (
        "call",
        Status::Semantic("calls a function value: consul-template's data holds none"),
    ),
    ("html", Status::NotYet),
    ("index", Status::Converted),
    ("slice", Status::NotYet),
    ("js", Status::NotYet),
    ("len", Status::Converted),
    ("not", Status::Converted),
    ("or", Status::Converted),
    ("print", Status::Converted),
    ("printf", Status::Converted),
    ("println", Status::Converted),
    ("urlquery", Status::NotYet),
    ("eq", Status::Converted),
    ("ge", Status::Converted),
    ("gt", Status::Converted),
    ("le", Status::Converted),
    ("lt", Status::Converted),
    ("ne", Status::Converted),
    ("secret", Status::Converted),
    ("secrets", Status::NotYet),
    ("pkiCert", Status::Converted),
    ("scratch", Status::NotYet),
    ("base64Decode", Status::Converted),
    ("base64Encode", Status::Converted),
    ("base64URLDecode", Status::Converted),
    ("base64URLEncode", Status::Converted),
    (
        "byKey",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "byPort",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "byTag",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    ("contains", Status::Converted),
    ("containsAll", Status::Converted),
    ("containsAny", Status::Converted),
    ("containsNone", Status::Converted),
    ("containsNotAll", Status::Converted),
    (
        "env",
        Status::Security(
            "reads the environment: the driver's environment is the node plugin's, never a tenant's to read",
        ),
    ),
    (
        "mustEnv",
        Status::Security(
            "reads the environment: the driver's environment is the node plugin's, never a tenant's to read",
        ),
    ),
    (
        "envOrDefault",
        Status::Security(
            "reads the environment: the driver's environment is the node plugin's, never a tenant's to read",
        ),
    ),
    ("executeTemplate", Status::Converted),
    (
        "explode",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "explodeMap",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    ("mergeMap", Status::NotYet),
    ("mergeMapWithOverride", Status::NotYet),
    ("in", Status::Converted),
    ("indent", Status::Converted),
    ("loop", Status::NotYet),
    ("join", Status::Converted),
    ("trim", Status::Converted),
    ("trimPrefix", Status::Converted),
    ("trimSuffix", Status::Converted),
    ("trimSpace", Status::Converted),
    ("parseBool", Status::Converted),
    ("parseFloat", Status::Converted),
    ("parseInt", Status::Converted),
    ("parseJSON", Status::Converted),
    ("parseUint", Status::Converted),
    ("parseYAML", Status::NotYet),
    (
        "plugin",
        Status::Security("runs a program on the node: the driver runs nothing for a tenant"),
    ),
    ("regexReplaceAll", Status::NotYet),
    ("regexMatch", Status::NotYet),
    ("replaceAll", Status::Converted),
    ("sha256Hex", Status::Converted),
    ("md5sum", Status::NotYet),
    ("hmacSHA256Hex", Status::NotYet),
    (
        "timestamp",
        Status::Semantic(
            "the time of rendering: the agent writes it when a secret changes, the driver at each of its own renders, so the files would differ; put the time in the secret, or have the application read the file's modification time",
        ),
    ),
    ("toLower", Status::Converted),
    ("toJSON", Status::Converted),
    ("toJSONPretty", Status::Converted),
    ("toUnescapedJSON", Status::Converted),
    ("toUnescapedJSONPretty", Status::Converted),
    ("toTitle", Status::Converted),
    ("toTOML", Status::NotYet),
    ("toUpper", Status::Converted),
    ("toYAML", Status::NotYet),
    ("split", Status::Converted),
    ("splitToMap", Status::Converted),
    (
        "byMeta",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "sockaddr",
        Status::Security(
            "reads the node's network interfaces: the driver reveals nothing of the node to a tenant",
        ),
    ),
    (
        "writeToFile",
        Status::Security(
            "writes a file of the node: the driver writes only the volume's own files",
        ),
    ),
    ("add", Status::Converted),
    ("subtract", Status::Converted),
    ("multiply", Status::Converted),
    ("divide", Status::Converted),
    ("modulo", Status::Converted),
    ("minimum", Status::Converted),
    ("maximum", Status::Converted),
    ("spew_dump", Status::NotYet),
    ("spew_printf", Status::NotYet),
    ("spew_sdump", Status::NotYet),
    ("spew_sprintf", Status::NotYet),
    (
        "datacenters",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "exportedServices",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "importedServices",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "file",
        Status::Security(
            "reads a file of the node: the driver never reads the node's files for a tenant",
        ),
    ),
    (
        "key",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "keyExists",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "keyOrDefault",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "ls",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "safeLs",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "node",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "nodes",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "partitions",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "peerings",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "service",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "connect",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "services",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "tree",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "safeTree",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "caRoots",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "caLeaf",
        Status::Semantic(
            "reads Consul (or Consul's data): the driver talks to Vault only; render Consul data with consul-template itself",
        ),
    ),
    (
        "nomadServices",
        Status::Semantic("reads Nomad: the driver talks to Vault only"),
    ),
    (
        "nomadService",
        Status::Semantic("reads Nomad: the driver talks to Vault only"),
    ),
    (
        "nomadVarList",
        Status::Semantic("reads Nomad: the driver talks to Vault only"),
    ),
    (
        "nomadVarListSafe",
        Status::Semantic("reads Nomad: the driver talks to Vault only"),
    ),
    (
        "nomadVar",
        Status::Semantic("reads Nomad: the driver talks to Vault only"),
    ),
    (
        "nomadVarExists",
        Status::Semantic("reads Nomad: the driver talks to Vault only"),
    ),
    ("sprig_hello", Status::NotYet),
    (
        "sprig_ago",
        Status::Semantic("depends on the time of rendering (see timestamp)"),
    ),
    ("sprig_date_modify", Status::NotYet),
    ("sprig_dateModify", Status::NotYet),
    ("sprig_duration", Status::NotYet),
    ("sprig_durationRound", Status::NotYet),
    ("sprig_must_date_modify", Status::NotYet),
    ("sprig_mustDateModify", Status::NotYet),
    ("sprig_mustToDate", Status::NotYet),
    ("sprig_toDate", Status::NotYet),
    ("sprig_unixEpoch", Status::NotYet),
    ("sprig_abbrev", Status::NotYet),
    ("sprig_abbrevboth", Status::NotYet),
    ("sprig_trunc", Status::NotYet),
    ("sprig_trim", Status::Converted),
    ("sprig_upper", Status::Converted),
    ("sprig_lower", Status::Converted),
    ("sprig_title", Status::NotYet),
    ("sprig_untitle", Status::NotYet),
    ("sprig_substr", Status::NotYet),
    ("sprig_repeat", Status::Converted),
    ("sprig_trimall", Status::NotYet),
    ("sprig_trimAll", Status::Converted),
    ("sprig_trimSuffix", Status::Converted),
    ("sprig_trimPrefix", Status::Converted),
    ("sprig_nospace", Status::Converted),
    ("sprig_initials", Status::NotYet),
    ("sprig_swapcase", Status::NotYet),
    (
        "sprig_shuffle",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    ("sprig_snakecase", Status::NotYet),
    ("sprig_camelcase", Status::NotYet),
    ("sprig_kebabcase", Status::NotYet),
    ("sprig_wrap", Status::NotYet),
    ("sprig_wrapWith", Status::NotYet),
    ("sprig_contains", Status::Converted),
    ("sprig_hasPrefix", Status::Converted),
    ("sprig_hasSuffix", Status::Converted),
    ("sprig_quote", Status::NotYet),
    ("sprig_squote", Status::NotYet),
    ("sprig_cat", Status::NotYet),
    ("sprig_indent", Status::Converted),
    ("sprig_nindent", Status::Converted),
    ("sprig_replace", Status::Converted),
    ("sprig_plural", Status::NotYet),
    ("sprig_sha1sum", Status::NotYet),
    ("sprig_sha256sum", Status::Converted),
    ("sprig_sha512sum", Status::NotYet),
    ("sprig_adler32sum", Status::NotYet),
    ("sprig_toString", Status::NotYet),
    ("sprig_atoi", Status::NotYet),
    ("sprig_int64", Status::NotYet),
    ("sprig_int", Status::NotYet),
    ("sprig_float64", Status::NotYet),
    ("sprig_seq", Status::NotYet),
    ("sprig_toDecimal", Status::NotYet),
    ("sprig_split", Status::NotYet),
    ("sprig_splitList", Status::Converted),
    ("sprig_splitn", Status::NotYet),
    ("sprig_toStrings", Status::NotYet),
    ("sprig_until", Status::NotYet),
    ("sprig_untilStep", Status::NotYet),
    ("sprig_add1", Status::NotYet),
    ("sprig_add", Status::NotYet),
    ("sprig_sub", Status::NotYet),
    ("sprig_div", Status::NotYet),
    ("sprig_mod", Status::NotYet),
    ("sprig_mul", Status::NotYet),
    (
        "sprig_randInt",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    ("sprig_add1f", Status::NotYet),
    ("sprig_addf", Status::NotYet),
    ("sprig_subf", Status::NotYet),
    ("sprig_divf", Status::NotYet),
    ("sprig_mulf", Status::NotYet),
    ("sprig_biggest", Status::NotYet),
    ("sprig_max", Status::NotYet),
    ("sprig_min", Status::NotYet),
    ("sprig_maxf", Status::NotYet),
    ("sprig_minf", Status::NotYet),
    ("sprig_ceil", Status::NotYet),
    ("sprig_floor", Status::NotYet),
    ("sprig_round", Status::NotYet),
    ("sprig_join", Status::NotYet),
    ("sprig_sortAlpha", Status::NotYet),
    ("sprig_default", Status::NotYet),
    ("sprig_empty", Status::NotYet),
    ("sprig_coalesce", Status::NotYet),
    ("sprig_all", Status::NotYet),
    ("sprig_any", Status::NotYet),
    ("sprig_compact", Status::NotYet),
    ("sprig_mustCompact", Status::NotYet),
    ("sprig_fromJson", Status::NotYet),
    ("sprig_toJson", Status::NotYet),
    ("sprig_toPrettyJson", Status::NotYet),
    ("sprig_toRawJson", Status::NotYet),
    ("sprig_mustFromJson", Status::NotYet),
    ("sprig_mustToJson", Status::NotYet),
    ("sprig_mustToPrettyJson", Status::NotYet),
    ("sprig_mustToRawJson", Status::NotYet),
    ("sprig_ternary", Status::NotYet),
    ("sprig_deepCopy", Status::NotYet),
    ("sprig_mustDeepCopy", Status::NotYet),
    ("sprig_typeOf", Status::NotYet),
    ("sprig_typeIs", Status::NotYet),
    ("sprig_typeIsLike", Status::NotYet),
    ("sprig_kindOf", Status::NotYet),
    ("sprig_kindIs", Status::NotYet),
    ("sprig_deepEqual", Status::NotYet),
    ("sprig_base", Status::NotYet),
    ("sprig_dir", Status::NotYet),
    ("sprig_clean", Status::NotYet),
    ("sprig_ext", Status::NotYet),
    ("sprig_isAbs", Status::NotYet),
    ("sprig_osBase", Status::NotYet),
    ("sprig_osClean", Status::NotYet),
    ("sprig_osDir", Status::NotYet),
    ("sprig_osExt", Status::NotYet),
    ("sprig_osIsAbs", Status::NotYet),
    ("sprig_b64enc", Status::Converted),
    ("sprig_b64dec", Status::Converted),
    ("sprig_b32enc", Status::NotYet),
    ("sprig_b32dec", Status::NotYet),
    ("sprig_tuple", Status::NotYet),
    ("sprig_list", Status::NotYet),
    ("sprig_dict", Status::NotYet),
    ("sprig_get", Status::NotYet),
    ("sprig_set", Status::NotYet),
    ("sprig_unset", Status::NotYet),
    ("sprig_hasKey", Status::NotYet),
    ("sprig_pluck", Status::NotYet),
    ("sprig_keys", Status::NotYet),
    ("sprig_pick", Status::NotYet),
    ("sprig_omit", Status::NotYet),
    ("sprig_merge", Status::NotYet),
    ("sprig_mergeOverwrite", Status::NotYet),
    ("sprig_mustMerge", Status::NotYet),
    ("sprig_mustMergeOverwrite", Status::NotYet),
    ("sprig_values", Status::NotYet),
    ("sprig_append", Status::NotYet),
    ("sprig_mustAppend", Status::NotYet),
    ("sprig_prepend", Status::NotYet),
    ("sprig_mustPrepend", Status::NotYet),
    ("sprig_first", Status::NotYet),
    ("sprig_mustFirst", Status::NotYet),
    ("sprig_rest", Status::NotYet),
    ("sprig_mustRest", Status::NotYet),
    ("sprig_last", Status::NotYet),
    ("sprig_mustLast", Status::NotYet),
    ("sprig_initial", Status::NotYet),
    ("sprig_mustInitial", Status::NotYet),
    ("sprig_reverse", Status::NotYet),
    ("sprig_mustReverse", Status::NotYet),
    ("sprig_uniq", Status::NotYet),
    ("sprig_mustUniq", Status::NotYet),
    ("sprig_without", Status::NotYet),
    ("sprig_mustWithout", Status::NotYet),
    ("sprig_has", Status::NotYet),
    ("sprig_mustHas", Status::NotYet),
    ("sprig_slice", Status::NotYet),
    ("sprig_mustSlice", Status::NotYet),
    ("sprig_concat", Status::NotYet),
    ("sprig_dig", Status::NotYet),
    ("sprig_chunk", Status::NotYet),
    ("sprig_mustChunk", Status::NotYet),
    (
        "sprig_bcrypt",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    (
        "sprig_htpasswd",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    (
        "sprig_genPrivateKey",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    ("sprig_derivePassword", Status::NotYet),
    (
        "sprig_buildCustomCert",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    (
        "sprig_genCA",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    (
        "sprig_genCAWithKey",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    (
        "sprig_genSelfSignedCert",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    (
        "sprig_genSelfSignedCertWithKey",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    (
        "sprig_genSignedCert",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    (
        "sprig_genSignedCertWithKey",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    (
        "sprig_encryptAES",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    ("sprig_decryptAES", Status::NotYet),
    ("sprig_semver", Status::NotYet),
    ("sprig_semverCompare", Status::NotYet),
    ("sprig_fail", Status::NotYet),
    ("sprig_regexMatch", Status::NotYet),
    ("sprig_mustRegexMatch", Status::NotYet),
    ("sprig_regexFindAll", Status::NotYet),
    ("sprig_mustRegexFindAll", Status::NotYet),
    ("sprig_regexFind", Status::NotYet),
    ("sprig_mustRegexFind", Status::NotYet),
    ("sprig_regexReplaceAll", Status::NotYet),
    ("sprig_mustRegexReplaceAll", Status::NotYet),
    ("sprig_regexReplaceAllLiteral", Status::NotYet),
    ("sprig_mustRegexReplaceAllLiteral", Status::NotYet),
    ("sprig_regexSplit", Status::NotYet),
    ("sprig_mustRegexSplit", Status::NotYet),
    ("sprig_regexQuoteMeta", Status::NotYet),
    ("sprig_urlParse", Status::NotYet),
    ("sprig_urlJoin", Status::NotYet),
    (
        "sprig_env",
        Status::Security(
            "reads the environment (the agent has no such function either): the driver's environment is never a tenant's to read",
        ),
    ),
    (
        "sprig_expandenv",
        Status::Security(
            "reads the environment (the agent has no such function either): the driver's environment is never a tenant's to read",
        ),
    ),
];

/// The status of a function, `None` if neither Go nor consul-template
/// has it.
pub fn status(name: &str) -> Option<Status> {
    FUNCTIONS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}
