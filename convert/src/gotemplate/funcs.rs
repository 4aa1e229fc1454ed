//! The functions a consul-template template can call (text/template's
//! builtins, consul-template's own, and the `sprig_*` family consul-template
//! adds: all of Sprig's functions, as the agent registers them), and what `convert` does with each: the table
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
}

/// Every function, with its status, in the order of the published table.
pub const FUNCTIONS: &[(&str, Status)] = &[
    ("and", Status::Converted),
    (
        "call",
        Status::Semantic("calls a function value: consul-template's data holds none"),
    ),
    ("html", Status::Converted),
    ("index", Status::Converted),
    ("slice", Status::Converted),
    ("js", Status::Converted),
    ("len", Status::Converted),
    ("not", Status::Converted),
    ("or", Status::Converted),
    ("print", Status::Converted),
    ("printf", Status::Converted),
    ("println", Status::Converted),
    ("urlquery", Status::Converted),
    ("eq", Status::Converted),
    ("ge", Status::Converted),
    ("gt", Status::Converted),
    ("le", Status::Converted),
    ("lt", Status::Converted),
    ("ne", Status::Converted),
    ("secret", Status::Converted),
    ("secrets", Status::Converted),
    ("pkiCert", Status::Converted),
    ("scratch", Status::Converted),
    ("base64Decode", Status::Converted),
    ("base64Encode", Status::Converted),
    ("base64URLDecode", Status::Converted),
    ("base64URLEncode", Status::Converted),
    (
        "byKey",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "byPort",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "byTag",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
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
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "explodeMap",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    ("mergeMap", Status::Converted),
    ("mergeMapWithOverride", Status::Converted),
    ("in", Status::Converted),
    ("indent", Status::Converted),
    ("loop", Status::Converted),
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
    ("parseYAML", Status::Converted),
    (
        "plugin",
        Status::Security("runs a program on the node: the driver runs nothing for a tenant"),
    ),
    ("regexReplaceAll", Status::Converted),
    ("regexMatch", Status::Converted),
    ("replaceAll", Status::Converted),
    ("sha256Hex", Status::Converted),
    ("md5sum", Status::Converted),
    ("hmacSHA256Hex", Status::Converted),
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
    ("toTOML", Status::Converted),
    ("toUpper", Status::Converted),
    ("toYAML", Status::Converted),
    ("split", Status::Converted),
    ("splitToMap", Status::Converted),
    (
        "byMeta",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
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
    (
        "spew_dump",
        Status::Security(
            "writes its arguments to the agent's standard output (its log), not to the file, which gets nothing from it: the driver writes no tenant's values to its log; remove the call",
        ),
    ),
    (
        "spew_printf",
        Status::Security(
            "writes its arguments to the agent's standard output (its log), not to the file, which gets nothing from it: the driver writes no tenant's values to its log; remove the call",
        ),
    ),
    (
        "spew_sdump",
        Status::Semantic(
            "a debugging dump: go-spew's default configuration prints a map in Go's random order (it does not sort keys) and a secret as a memory address, so the agent's own output changes from one render to the next; print the value with printf or toJSON instead",
        ),
    ),
    (
        "spew_sprintf",
        Status::Semantic(
            "a debugging dump: go-spew's default configuration prints a map in Go's random order (it does not sort keys) and a secret as a memory address, so the agent's own output changes from one render to the next; print the value with printf or toJSON instead",
        ),
    ),
    (
        "datacenters",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "exportedServices",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "importedServices",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
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
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "keyExists",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "keyOrDefault",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "ls",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "safeLs",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "node",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "nodes",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "partitions",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "peerings",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "service",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "connect",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "services",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "tree",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "safeTree",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "caRoots",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "caLeaf",
        Status::Semantic(
            "a Consul function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too; render Consul data with consul-template itself",
        ),
    ),
    (
        "nomadServices",
        Status::Semantic(
            "a Nomad function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too",
        ),
    ),
    (
        "nomadService",
        Status::Semantic(
            "a Nomad function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too",
        ),
    ),
    (
        "nomadVarList",
        Status::Semantic(
            "a Nomad function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too",
        ),
    ),
    (
        "nomadVarListSafe",
        Status::Semantic(
            "a Nomad function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too",
        ),
    ),
    (
        "nomadVar",
        Status::Semantic(
            "a Nomad function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too",
        ),
    ),
    (
        "nomadVarExists",
        Status::Semantic(
            "a Nomad function: Vault's and OpenBao's agents leave it out, so the agent refuses the template too",
        ),
    ),
    ("sprig_hello", Status::Converted),
    (
        "sprig_ago",
        Status::Semantic("depends on the time of rendering (see timestamp)"),
    ),
    ("sprig_date_modify", Status::Converted),
    ("sprig_dateModify", Status::Converted),
    ("sprig_duration", Status::Converted),
    ("sprig_durationRound", Status::Converted),
    ("sprig_must_date_modify", Status::Converted),
    ("sprig_mustDateModify", Status::Converted),
    ("sprig_mustToDate", Status::Converted),
    ("sprig_toDate", Status::Converted),
    ("sprig_unixEpoch", Status::Converted),
    ("sprig_abbrev", Status::Converted),
    ("sprig_abbrevboth", Status::Converted),
    ("sprig_trunc", Status::Converted),
    ("sprig_trim", Status::Converted),
    ("sprig_upper", Status::Converted),
    ("sprig_lower", Status::Converted),
    ("sprig_title", Status::Converted),
    ("sprig_untitle", Status::Converted),
    ("sprig_substr", Status::Converted),
    ("sprig_repeat", Status::Converted),
    ("sprig_trimall", Status::Converted),
    ("sprig_trimAll", Status::Converted),
    ("sprig_trimSuffix", Status::Converted),
    ("sprig_trimPrefix", Status::Converted),
    ("sprig_nospace", Status::Converted),
    ("sprig_initials", Status::Converted),
    ("sprig_swapcase", Status::Converted),
    (
        "sprig_shuffle",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    ("sprig_snakecase", Status::Converted),
    ("sprig_camelcase", Status::Converted),
    ("sprig_kebabcase", Status::Converted),
    ("sprig_wrap", Status::Converted),
    ("sprig_wrapWith", Status::Converted),
    ("sprig_contains", Status::Converted),
    ("sprig_hasPrefix", Status::Converted),
    ("sprig_hasSuffix", Status::Converted),
    ("sprig_quote", Status::Converted),
    ("sprig_squote", Status::Converted),
    ("sprig_cat", Status::Converted),
    ("sprig_indent", Status::Converted),
    ("sprig_nindent", Status::Converted),
    ("sprig_replace", Status::Converted),
    ("sprig_plural", Status::Converted),
    ("sprig_sha1sum", Status::Converted),
    ("sprig_sha256sum", Status::Converted),
    (
        "sprig_sha512sum",
        Status::Semantic(
            "not in the Sprig version the agent embeds, so the agent refuses the template too; use sprig_sha256sum or sha256Hex",
        ),
    ),
    ("sprig_adler32sum", Status::Converted),
    ("sprig_toString", Status::Converted),
    ("sprig_atoi", Status::Converted),
    ("sprig_int64", Status::Converted),
    ("sprig_int", Status::Converted),
    ("sprig_float64", Status::Converted),
    ("sprig_seq", Status::Converted),
    ("sprig_toDecimal", Status::Converted),
    ("sprig_split", Status::Converted),
    ("sprig_splitList", Status::Converted),
    ("sprig_splitn", Status::Converted),
    ("sprig_toStrings", Status::Converted),
    ("sprig_until", Status::Converted),
    ("sprig_untilStep", Status::Converted),
    ("sprig_add1", Status::Converted),
    ("sprig_add", Status::Converted),
    ("sprig_sub", Status::Converted),
    ("sprig_div", Status::Converted),
    ("sprig_mod", Status::Converted),
    ("sprig_mul", Status::Converted),
    (
        "sprig_randInt",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    ("sprig_add1f", Status::Converted),
    ("sprig_addf", Status::Converted),
    ("sprig_subf", Status::Converted),
    ("sprig_divf", Status::Converted),
    ("sprig_mulf", Status::Converted),
    ("sprig_biggest", Status::Converted),
    ("sprig_max", Status::Converted),
    ("sprig_min", Status::Converted),
    ("sprig_maxf", Status::Converted),
    ("sprig_minf", Status::Converted),
    ("sprig_ceil", Status::Converted),
    ("sprig_floor", Status::Converted),
    ("sprig_round", Status::Converted),
    ("sprig_join", Status::Converted),
    ("sprig_sortAlpha", Status::Converted),
    ("sprig_default", Status::Converted),
    ("sprig_empty", Status::Converted),
    ("sprig_coalesce", Status::Converted),
    ("sprig_all", Status::Converted),
    ("sprig_any", Status::Converted),
    ("sprig_compact", Status::Converted),
    ("sprig_mustCompact", Status::Converted),
    ("sprig_fromJson", Status::Converted),
    ("sprig_toJson", Status::Converted),
    ("sprig_toPrettyJson", Status::Converted),
    ("sprig_toRawJson", Status::Converted),
    ("sprig_mustFromJson", Status::Converted),
    ("sprig_mustToJson", Status::Converted),
    ("sprig_mustToPrettyJson", Status::Converted),
    ("sprig_mustToRawJson", Status::Converted),
    ("sprig_ternary", Status::Converted),
    ("sprig_deepCopy", Status::Converted),
    ("sprig_mustDeepCopy", Status::Converted),
    ("sprig_typeOf", Status::Converted),
    ("sprig_typeIs", Status::Converted),
    ("sprig_typeIsLike", Status::Converted),
    ("sprig_kindOf", Status::Converted),
    ("sprig_kindIs", Status::Converted),
    ("sprig_deepEqual", Status::Converted),
    ("sprig_base", Status::Converted),
    ("sprig_dir", Status::Converted),
    ("sprig_clean", Status::Converted),
    ("sprig_ext", Status::Converted),
    ("sprig_isAbs", Status::Converted),
    ("sprig_osBase", Status::Converted),
    ("sprig_osClean", Status::Converted),
    ("sprig_osDir", Status::Converted),
    ("sprig_osExt", Status::Converted),
    ("sprig_osIsAbs", Status::Converted),
    ("sprig_b64enc", Status::Converted),
    ("sprig_b64dec", Status::Converted),
    ("sprig_b32enc", Status::Converted),
    ("sprig_b32dec", Status::Converted),
    ("sprig_tuple", Status::Converted),
    ("sprig_list", Status::Converted),
    ("sprig_dict", Status::Converted),
    ("sprig_get", Status::Converted),
    ("sprig_set", Status::Converted),
    ("sprig_unset", Status::Converted),
    ("sprig_hasKey", Status::Converted),
    ("sprig_pluck", Status::Converted),
    ("sprig_keys", Status::Converted),
    ("sprig_pick", Status::Converted),
    ("sprig_omit", Status::Converted),
    ("sprig_merge", Status::Converted),
    ("sprig_mergeOverwrite", Status::Converted),
    ("sprig_mustMerge", Status::Converted),
    ("sprig_mustMergeOverwrite", Status::Converted),
    ("sprig_values", Status::Converted),
    ("sprig_append", Status::Converted),
    ("sprig_mustAppend", Status::Converted),
    ("sprig_prepend", Status::Converted),
    ("sprig_mustPrepend", Status::Converted),
    ("sprig_first", Status::Converted),
    ("sprig_mustFirst", Status::Converted),
    ("sprig_rest", Status::Converted),
    ("sprig_mustRest", Status::Converted),
    ("sprig_last", Status::Converted),
    ("sprig_mustLast", Status::Converted),
    ("sprig_initial", Status::Converted),
    ("sprig_mustInitial", Status::Converted),
    ("sprig_reverse", Status::Converted),
    ("sprig_mustReverse", Status::Converted),
    ("sprig_uniq", Status::Converted),
    ("sprig_mustUniq", Status::Converted),
    ("sprig_without", Status::Converted),
    ("sprig_mustWithout", Status::Converted),
    ("sprig_has", Status::Converted),
    ("sprig_mustHas", Status::Converted),
    ("sprig_slice", Status::Converted),
    ("sprig_mustSlice", Status::Converted),
    ("sprig_concat", Status::Converted),
    ("sprig_dig", Status::Converted),
    ("sprig_chunk", Status::Converted),
    ("sprig_mustChunk", Status::Converted),
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
    (
        "sprig_derivePassword",
        Status::Security(
            "costs 32 MiB of memory and a tenth of a second or more of CPU per call (scrypt with N=32768, r=8, p=2): the driver renders every tenant's templates within one shared memory and time budget, which a template could exhaust; derive the password once and store it in Vault",
        ),
    ),
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
    ("sprig_decryptAES", Status::Converted),
    ("sprig_semver", Status::Converted),
    ("sprig_semverCompare", Status::Converted),
    ("sprig_fail", Status::Converted),
    ("sprig_regexMatch", Status::Converted),
    ("sprig_mustRegexMatch", Status::Converted),
    ("sprig_regexFindAll", Status::Converted),
    ("sprig_mustRegexFindAll", Status::Converted),
    ("sprig_regexFind", Status::Converted),
    ("sprig_mustRegexFind", Status::Converted),
    ("sprig_regexReplaceAll", Status::Converted),
    ("sprig_mustRegexReplaceAll", Status::Converted),
    ("sprig_regexReplaceAllLiteral", Status::Converted),
    ("sprig_mustRegexReplaceAllLiteral", Status::Converted),
    ("sprig_regexSplit", Status::Converted),
    ("sprig_mustRegexSplit", Status::Converted),
    ("sprig_regexQuoteMeta", Status::Converted),
    ("sprig_urlParse", Status::Converted),
    ("sprig_urlJoin", Status::Converted),
    ("sprig_date", Status::Converted),
    ("sprig_date_in_zone", Status::Converted),
    (
        "sprig_now",
        Status::Semantic(
            "the time of rendering: the agent writes it when a secret changes, the driver at each of its own renders, so the files would differ; put the time in the secret, or have the application read the file's modification time",
        ),
    ),
    ("sprig_htmlDate", Status::Converted),
    ("sprig_htmlDateInZone", Status::Converted),
    ("sprig_dateInZone", Status::Converted),
    (
        "sprig_randAlphaNum",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    (
        "sprig_randAlpha",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    (
        "sprig_randAscii",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    (
        "sprig_randNumeric",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    (
        "sprig_randBytes",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    (
        "sprig_uuidv4",
        Status::Semantic(
            "random on every call: each render writes other bytes (the agent's too), and the driver renders at every refresh where the agent renders when a secret changes; generate the value once and store it in Vault",
        ),
    ),
    (
        "sprig_getHostByName",
        Status::Security(
            "resolves a name from the node: the driver reveals nothing of the node's network to a tenant",
        ),
    ),
    (
        "sprig_env",
        Status::Security(
            "reads the environment: the driver's environment is never a tenant's to read",
        ),
    ),
    (
        "sprig_expandenv",
        Status::Security(
            "reads the environment: the driver's environment is never a tenant's to read",
        ),
    ),
];

/// The status of a function, `None` if neither Go nor consul-template
/// has it.
pub fn status(name: &str) -> Option<Status> {
    FUNCTIONS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}
