//! The docs' reference tables come from the code, never from memory.
//!
//! Generated between `<!-- BEGIN GENERATED name … -->` and
//! `<!-- END GENERATED name -->` markers, and rewritten by
//! `VCD_UPDATE_DOCS=1 cargo test --test docs_reference`:
//! - `flags`: the driver's flags, from clap's own model of `--help`
//!   ([`Config`]);
//! - `metrics`: every metric family, from the live registry
//!   ([`Metrics::encode`]), per-volume gauges included;
//! - `error-codes`: one example of every volume error with the code kubelet
//!   receives, from [`status::examples`], in kubelet's spelling.
//!
//! Checked, because their prose is written by hand:
//! - the attribute reference against the parser's list ([`ATTRIBUTES`]);
//! - the limits table against the constants it names, and so the
//!   memory-model table of the sizing page;
//! - the sizing page's worked examples against the memory model's own
//!   functions (`volume::memory::cost`, `budget_from_limit`);
//! - gRPC codes spelled as kubelet's events and the driver's log print them
//!   (`InvalidArgument`, not `INVALID_ARGUMENT`);
//! - every page reachable from the README, every relative link and anchor
//!   resolving.
//!
//! A new flag, metric or error from any change makes the generated check
//! fail until the tables are regenerated.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::CommandFactory as _;
use vault_csi_driver::config::Config;
use vault_csi_driver::csi::status;
use vault_csi_driver::metrics::Metrics;
use vault_csi_driver::volume::ATTRIBUTES;

/// The command that rewrites the generated tables.
const REGENERATE: &str = "VCD_UPDATE_DOCS=1 cargo test --test docs_reference";

/// Pages another change writes: links to them are accepted while they do
/// not exist yet, and checked like any other once they do.
const WRITTEN_ELSEWHERE: &[&str] = &["docs/migrating-from-vault-agent.md"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

/// Text for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// A code span for a Markdown table cell, whatever backticks `text` holds.
fn code_cell(text: &str) -> String {
    let text = cell(text);
    if text.contains('`') {
        format!("`` {text} ``")
    } else {
        format!("`{text}`")
    }
}

/// One generated table: where it goes and what it holds.
struct Generated {
    file: &'static str,
    name: &'static str,
    body: String,
}

fn begin_marker(name: &str) -> String {
    format!("<!-- BEGIN GENERATED {name}: do not edit; regenerate with `{REGENERATE}` -->")
}

fn end_marker(name: &str) -> String {
    format!("<!-- END GENERATED {name} -->")
}

/// The text between the markers of `name` in `page`, and where it lies.
fn block(page: &str, name: &str) -> Option<(usize, usize)> {
    let begin = page.find(&begin_marker(name))? + begin_marker(name).len();
    let end = begin + page[begin..].find(&end_marker(name))?;
    Some((begin, end))
}

/// The driver's flags as `--help` knows them: flag, variable, default and
/// help text, in declaration order.
fn flags_table() -> String {
    let mut command = Config::command();
    command.build();
    let mut table =
        String::from("| Flag | Environment variable | Default | Meaning |\n|---|---|---|---|\n");
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        let env = arg.get_env().map_or_else(
            || "none".to_owned(),
            |e| format!("`{}`", e.to_string_lossy()),
        );
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let switch = !arg.get_action().takes_values();
        let default = match defaults.as_slice() {
            [] if arg.is_required_set() => "none (required)".to_owned(),
            [] => "none".to_owned(),
            [value] if switch && value == "false" => "off".to_owned(),
            values => format!("`{}`", values.join(",")),
        };
        let mut help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        let help_trimmed = help.trim_end().to_owned();
        help = help_trimmed;
        if !help.ends_with('.') {
            help.push('.');
        }
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|_| !switch)
            .map(|v| format!("`{}`", v.get_name()))
            .collect();
        if !values.is_empty() {
            let _ = write!(help, " One of {}.", values.join(", "));
        }
        if arg.is_hide_short_help_set() {
            help.push_str(" Shown by `--help`, not by `-h`.");
        }
        let _ = writeln!(
            table,
            "| `--{long}` | {env} | {default} | {} |",
            cell(&help)
        );
    }
    table
}

/// Undoes the `OpenMetrics` escaping of a `# HELP` text.
fn unescape(text: &str) -> String {
    text.replace("\\\"", "\"")
        .replace("\\n", "\n")
        .replace("\\\\", "\\")
}

/// `(family, type, help)` of every family in an exposition.
fn families(exposition: &str) -> Vec<(String, String, String)> {
    let mut helps = BTreeMap::new();
    let mut out = Vec::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            helps.insert(name.to_owned(), unescape(help));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            let help = helps.get(name).cloned().unwrap_or_default();
            out.push((name.to_owned(), kind.to_owned(), help));
        }
    }
    out
}

/// Every metric family the driver registers, with the series names a
/// query uses.
fn metrics_table() -> String {
    let always: BTreeSet<String> = families(&Metrics::new().encode())
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    let mut table = String::from("| Metric | Type | Meaning |\n|---|---|---|\n");
    for (name, kind, help) in families(&Metrics::with_per_volume(true).encode()) {
        let series = match kind.as_str() {
            "counter" => format!("`{name}_total`"),
            "histogram" => format!("`{name}` (`_bucket`, `_sum`, `_count`)"),
            _ => format!("`{name}`"),
        };
        let mut help = help.trim_end().to_owned();
        if !help.ends_with('.') {
            help.push('.');
        }
        if !always.contains(&name) {
            help.push_str(" Only with `--metrics-per-volume`.");
        }
        let _ = writeln!(table, "| {series} | {kind} | {} |", cell(&help));
    }
    table
}

/// A code as kubelet's events and the driver's log print it (Go's
/// `codes.Code` names; tonic's `Debug` agrees on every code but one).
fn kubelet_spelling(code: tonic::Code) -> String {
    match code {
        tonic::Code::Cancelled => "Canceled".to_owned(),
        code => format!("{code:?}"),
    }
}

/// Codes after which kubelet treats the mount as uncertain
/// (`isFinalError` in kubelet's `csi_client.go`).
fn uncertain(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Cancelled
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unavailable
            | tonic::Code::ResourceExhausted
            | tonic::Code::Aborted
    )
}

/// Every volume error's code and an example of its message, grouped by
/// code.
fn error_codes_table() -> String {
    let mut by_code: BTreeMap<String, (bool, Vec<String>)> = BTreeMap::new();
    for (error, code) in status::examples() {
        let entry = by_code
            .entry(kubelet_spelling(code))
            .or_insert_with(|| (uncertain(code), Vec::new()));
        entry.1.push(status::full_message(&error));
    }
    let mut table = String::from(
        "| Code | What kubelet does | Example messages (`desc = …`) |\n|---|---|---|\n",
    );
    for (code, (uncertain, messages)) in by_code {
        let treatment = if uncertain {
            "Retries; the mount is uncertain until then (kubelet may call NodeUnpublishVolume for it)."
        } else {
            "Final for this attempt; kubelet retries the mount with backoff."
        };
        let examples: Vec<String> = messages.iter().map(|m| code_cell(m)).collect();
        let _ = writeln!(
            table,
            "| `{code}` | {treatment} | {} |",
            examples.join("<br>")
        );
    }
    table
}

fn generated() -> Vec<Generated> {
    vec![
        Generated {
            file: "docs/operate/configuration.md",
            name: "flags",
            body: flags_table(),
        },
        Generated {
            file: "docs/operate/metrics.md",
            name: "metrics",
            body: metrics_table(),
        },
        Generated {
            file: "docs/operate/troubleshooting.md",
            name: "error-codes",
            body: error_codes_table(),
        },
    ]
}

/// The first line where `have` and `want` differ, for the failure message.
fn first_difference(have: &str, want: &str) -> String {
    let (mut have_lines, mut want_lines) = (have.lines(), want.lines());
    for number in 1.. {
        match (have_lines.next(), want_lines.next()) {
            (None, None) => break,
            (h, w) if h == w => {}
            (h, w) => {
                return format!(
                    "line {number} of the table:\n      page: {}\n    binary: {}",
                    h.unwrap_or("<missing>"),
                    w.unwrap_or("<missing>")
                );
            }
        }
    }
    "the text around the table".to_owned()
}

/// The generated tables are what the binary says today. With
/// `VCD_UPDATE_DOCS=1` they are rewritten instead.
#[test]
fn generated_references_match_the_binary() {
    let update = std::env::var("VCD_UPDATE_DOCS").as_deref() == Ok("1");
    let mut stale = Vec::new();
    for Generated { file, name, body } in generated() {
        let page = read(file);
        let Some((begin, end)) = block(&page, name) else {
            panic!(
                "{file} has no generated block `{name}`: add the lines\n{}\n{}\nand run `{REGENERATE}`",
                begin_marker(name),
                end_marker(name)
            );
        };
        let want = format!("\n{body}");
        let have = &page[begin..end];
        if have == want {
            continue;
        }
        if update {
            let page = format!("{}{want}{}", &page[..begin], &page[end..]);
            std::fs::write(repo().join(file), page).unwrap();
            eprintln!("rewrote the `{name}` table in {file}");
        } else {
            stale.push(format!(
                "{file}, table `{name}`: {}",
                first_difference(have, &want)
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "the docs and the binary disagree; regenerate with `{REGENERATE}` and review the diff:\n{}",
        stale.join("\n")
    );
}

/// The rows of the table that follows `marker` in `page`: each row's cells.
fn table_after(page: &str, marker: &str) -> Vec<Vec<String>> {
    let start = page
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in the page"));
    page[start..]
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .map(|line| {
            line.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

/// The attribute reference lists exactly the attributes the parser takes.
#[test]
fn the_attribute_reference_lists_every_attribute() {
    let file = "docs/volumes/attributes.md";
    let page = read(file);
    let documented: BTreeSet<String> = table_after(&page, "<!-- checked: attributes -->")
        .into_iter()
        .map(|row| row[0].trim_matches('`').to_owned())
        .collect();
    let parsed: BTreeSet<String> = ATTRIBUTES.iter().map(|a| (*a).to_owned()).collect();
    let missing: Vec<&String> = parsed.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&parsed).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "{file}'s attribute table and the parser (vault_csi_driver::volume::ATTRIBUTES) disagree: \
         the parser takes {missing:?}, which the table lacks; the table lists {unknown:?}, which the parser refuses. \
         Edit the table by hand: its prose is not generated."
    );
}

fn secs(duration: Duration) -> String {
    format!("{} s", duration.as_secs())
}

/// The limits table names each constant with the value it has.
#[test]
fn the_limits_table_matches_the_constants() {
    use vault_csi_driver::{render, storage, timing, vault, volume};
    let file = "docs/volumes/templates.md";
    let constants: [(&str, String); 26] = [
        ("MAX_TEMPLATE_BYTES", render::MAX_TEMPLATE_BYTES.to_string()),
        ("MAX_TEMPLATE_UNITS", render::MAX_TEMPLATE_UNITS.to_string()),
        ("MAX_VOLUME_UNITS", render::MAX_VOLUME_UNITS.to_string()),
        (
            "MAX_RENDER_HELD_BYTES",
            render::MAX_RENDER_HELD_BYTES.to_string(),
        ),
        (
            "MAX_CACHE_HELD_BYTES",
            render::MAX_CACHE_HELD_BYTES.to_string(),
        ),
        (
            "MAX_ERROR_MESSAGE_BYTES",
            render::MAX_ERROR_MESSAGE_BYTES.to_string(),
        ),
        ("RENDER_LIMIT_BASE", secs(timing::RENDER_LIMIT_BASE)),
        ("RENDER_LIMIT_CAP", secs(timing::RENDER_LIMIT_CAP)),
        (
            "MAX_SECRETS_PER_VOLUME",
            render::MAX_SECRETS_PER_VOLUME.to_string(),
        ),
        (
            "MAX_TAGS_PER_TEMPLATE",
            render::MAX_TAGS_PER_TEMPLATE.to_string(),
        ),
        ("MAX_BLOCK_DEPTH", render::MAX_BLOCK_DEPTH.to_string()),
        (
            "MAX_SUBEXPRESSION_DEPTH",
            render::MAX_SUBEXPRESSION_DEPTH.to_string(),
        ),
        ("MAX_PARAMS_PER_TAG", render::MAX_PARAMS_PER_TAG.to_string()),
        ("MAX_RENDERED_BYTES", render::MAX_RENDERED_BYTES.to_string()),
        (
            "MAX_LOOP_ITERATIONS",
            render::MAX_LOOP_ITERATIONS.to_string(),
        ),
        ("MAX_RENDER_WORK", render::MAX_RENDER_WORK.to_string()),
        ("MAX_RENDER_DATA", render::MAX_RENDER_DATA.to_string()),
        ("MAX_RENDER_TIME", secs(render::MAX_RENDER_TIME)),
        ("MAX_COMPILE_TIME", secs(render::MAX_COMPILE_TIME)),
        ("RENDER_THREADS", render::RENDER_THREADS.to_string()),
        ("RENDER_QUEUE", render::RENDER_QUEUE.to_string()),
        ("MAX_QUEUE_WAIT", secs(render::MAX_QUEUE_WAIT)),
        (
            "MAX_FILES_PER_VOLUME",
            volume::MAX_FILES_PER_VOLUME.to_string(),
        ),
        ("MAX_RESPONSE_BYTES", vault::MAX_RESPONSE_BYTES.to_string()),
        ("MAX_ELEMENT_BYTES", storage::MAX_ELEMENT_BYTES.to_string()),
        (
            "MAX_VOLUME_ID_BYTES",
            volume::MAX_VOLUME_ID_BYTES.to_string(),
        ),
    ];
    check_constants(file, "<!-- checked: limits -->", &constants);
}

/// The table after `marker` in `file` names each constant in backticks, in
/// a row that also states its value (written without thousands
/// separators, as the code has it).
fn check_constants(file: &str, marker: &str, constants: &[(&str, String)]) {
    let page = read(file);
    let rows = table_after(&page, marker);
    let mut wrong = Vec::new();
    for (name, value) in constants {
        let tag = format!("`{name}`");
        let Some(row) = rows.iter().find(|row| row.iter().any(|c| c.contains(&tag))) else {
            wrong.push(format!("no row names {tag}"));
            continue;
        };
        if !row.iter().any(|c| c.contains(value.as_str())) {
            wrong.push(format!(
                "the row naming {tag} does not say {value}: {row:?}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{file}'s table after {marker} and the code disagree (edit the table by hand):\n{}",
        wrong.join("\n")
    );
}

/// The memory model's table names its bounds and charges with the values
/// they have.
#[test]
fn the_memory_table_matches_the_constants() {
    use vault_csi_driver::volume::memory::{RESERVE_BYTES, cost, pressure};
    use vault_csi_driver::{csi, render, vault, volume};
    let constants = [
        ("MAX_REQUEST_BYTES", csi::MAX_REQUEST_BYTES.to_string()),
        ("MAX_ATTRIBUTES", volume::MAX_ATTRIBUTES.to_string()),
        (
            "MAX_ATTRIBUTE_BYTES",
            volume::MAX_ATTRIBUTE_BYTES.to_string(),
        ),
        ("MAX_RESPONSE_BYTES", vault::MAX_RESPONSE_BYTES.to_string()),
        ("MAX_RENDER_DATA", render::MAX_RENDER_DATA.to_string()),
        ("PARSED_VALUE_BYTES", render::PARSED_VALUE_BYTES.to_string()),
        (
            "MAX_RENDER_HELD_BYTES",
            render::MAX_RENDER_HELD_BYTES.to_string(),
        ),
        ("MAX_RENDERED_BYTES", render::MAX_RENDERED_BYTES.to_string()),
        ("PAGE", cost::PAGE.to_string()),
        ("INODE_BYTES", cost::INODE_BYTES.to_string()),
        (
            "VOLUME_BOOKKEEPING_BYTES",
            cost::VOLUME_BOOKKEEPING_BYTES.to_string(),
        ),
        (
            "MAX_CACHE_HELD_BYTES",
            render::MAX_CACHE_HELD_BYTES.to_string(),
        ),
        ("RESERVE_BYTES", RESERVE_BYTES.to_string()),
        ("HEADROOM_BYTES", pressure::HEADROOM_BYTES.to_string()),
    ];
    check_constants(
        "docs/operate/sizing.md",
        "<!-- checked: memory -->",
        &constants,
    );
}

/// The pages this project writes (others, like `BENCHMARKS.md`, are
/// generated or historical).
fn own_pages() -> Vec<String> {
    let mut pages: Vec<String> = [
        "README.md",
        "CONTRIBUTING.md",
        "CHANGELOG.md",
        "ARCHITECTURE.md",
    ]
    .iter()
    .map(|p| (*p).to_owned())
    .collect();
    let mut dirs = vec![repo().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                let relative = path.strip_prefix(repo()).unwrap();
                pages.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    pages.sort();
    pages
}

/// The lines of `page` outside fenced code blocks, numbered from 1.
fn prose_lines(page: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (index, line) in page.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push((index + 1, line));
        }
    }
    out
}

/// gRPC codes are written as kubelet's events and the driver's log show
/// them, so a search of a log finds the docs' rows.
#[test]
fn docs_spell_grpc_codes_as_kubelet_does() {
    const SHOUTED: [&str; 16] = [
        "CANCELLED",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
        "UNKNOWN",
    ];
    let word = |c: char| c.is_ascii_uppercase() || c == '_';
    let mut found = Vec::new();
    for file in own_pages() {
        let page = read(&file);
        for (number, line) in page.lines().enumerate() {
            for token in line.split(|c: char| !word(c)) {
                // Python's grpcio spells its own codes so.
                let python = format!("StatusCode.{token}");
                if SHOUTED.contains(&token) && !line.contains(&python) {
                    found.push(format!("{file}:{}: {token}", number + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "write gRPC codes as kubelet prints them (InvalidArgument, ResourceExhausted, …):\n{}",
        found.join("\n")
    );
}

/// GitHub's anchor for a heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(page: &str) -> BTreeSet<String> {
    prose_lines(page)
        .into_iter()
        .filter_map(|(_, line)| {
            let text = line.trim_start_matches('#');
            (line.starts_with('#') && text.starts_with(' ')).then(|| slug(text))
        })
        .collect()
}

/// `(line, target)` of every relative Markdown link in `page`.
fn links(page: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (number, line) in prose_lines(page) {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let Some(end) = rest.find(')') else { break };
            let target = &rest[..end];
            rest = &rest[end..];
            if !target.contains("://") && !target.starts_with("mailto:") && !target.is_empty() {
                out.push((number, target.to_owned()));
            }
        }
    }
    out
}

/// Joins `target` to the directory of `from`, both repository-relative.
fn resolve(from: &str, target: &str) -> String {
    let mut parts: Vec<&str> = Path::new(from)
        .parent()
        .map(|p| {
            p.to_str()
                .unwrap()
                .split('/')
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

/// Every relative link resolves (file and anchor), and every page under
/// `docs/` is reachable from the README by following links.
#[test]
fn every_page_is_reachable_and_every_link_resolves() {
    let mut broken = Vec::new();
    let mut reached = BTreeSet::from(["README.md".to_owned()]);
    let mut queue = VecDeque::from(["README.md".to_owned()]);
    let own: BTreeSet<String> = own_pages().into_iter().collect();
    while let Some(file) = queue.pop_front() {
        let page = read(&file);
        for (number, target) in links(&page) {
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let path = if path.is_empty() {
                file.clone()
            } else {
                resolve(&file, path)
            };
            let full = repo().join(&path);
            if !full.exists() {
                if !WRITTEN_ELSEWHERE.contains(&path.as_str()) {
                    broken.push(format!("{file}:{number}: {target}: no such file"));
                }
                continue;
            }
            if Path::new(&path).extension().is_some_and(|e| e == "md") {
                if !anchor.is_empty() && !anchors(&read(&path)).contains(anchor) {
                    broken.push(format!(
                        "{file}:{number}: {target}: no heading for #{anchor}"
                    ));
                }
                if own.contains(&path) && reached.insert(path.clone()) {
                    queue.push_back(path);
                }
            }
        }
    }
    let unreached: Vec<&String> = own.iter().filter(|p| !reached.contains(*p)).collect();
    assert!(
        broken.is_empty() && unreached.is_empty(),
        "broken links:\n{}\npages no link from README.md leads to: {unreached:?}",
        broken.join("\n")
    );
}

/// One volume of the sizing page's worked examples: its attributes (as
/// kubelet sends them, without the token attribute), its one template,
/// the Vault answer it keeps and the bytes it renders.
struct ExampleVolume {
    template_file: &'static str,
    template: &'static str,
    answer: String,
    rendered: usize,
}

/// A KV v2 answer as Vault and OpenBao send it, holding `data`.
fn kv2_answer(data: &str) -> String {
    format!(
        r#"{{"request_id":"5f0e0b4c-6c1e-4b7e-9d55-6b1f3a0c2d9e","lease_id":"","renewable":false,"lease_duration":0,"data":{{"data":{data},"metadata":{{"created_time":"2026-12-01T10:00:00.123456789Z","custom_metadata":null,"deletion_time":"","destroyed":false,"version":1}}}},"wrap_info":null,"warnings":null,"auth":null,"mount_type":"kv"}}"#
    )
}

impl ExampleVolume {
    /// The walkthrough's volume (`deploy/examples/nginx-pod.yaml`).
    fn walkthrough() -> Self {
        Self {
            template_file: "index.html",
            template: "<html>\n<body>\n<p>Some secrets:</p>\n{{#with (secret \"secret/data/myapp/config\")}}\n<ul>\n<li><pre>username: {{data.data.username}}</pre></li>\n<li><pre>password: {{data.data.password}}</pre></li>\n</ul>\n{{/with}}\n</body>\n</html>\n",
            answer: kv2_answer(r#"{"password":"suP3rsec(et!","username":"appuser"}"#),
            rendered: 160,
        }
    }

    /// One file of 400 KiB rendered from a KV secret holding it.
    fn large() -> Self {
        let blob = "x".repeat(400 * 1024);
        Self {
            template_file: "blob",
            template: r#"{{#with (secret "secret/data/myapp/big")}}{{data.data.blob}}{{/with}}"#,
            answer: kv2_answer(&format!(r#"{{"blob":"{blob}"}}"#)),
            rendered: blob.len(),
        }
    }

    fn attributes(&self) -> BTreeMap<String, String> {
        [
            ("roleName", "example".to_owned()),
            (
                "csi.storage.k8s.io/pod.name",
                "nginx-7c9f8d6b5-x2k4q".to_owned(),
            ),
            ("csi.storage.k8s.io/pod.namespace", "default".to_owned()),
            (
                "csi.storage.k8s.io/pod.uid",
                "0b6e9c7a-1d2e-4f3a-8b5c-6d7e8f9a0b1c".to_owned(),
            ),
            (
                "csi.storage.k8s.io/serviceAccount.name",
                "vault-auth".to_owned(),
            ),
            ("csi.storage.k8s.io/ephemeral", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain([(
            format!("template.{}", self.template_file),
            self.template.to_owned(),
        )])
        .collect()
    }

    /// The volume's record with or without its answer, as the driver
    /// writes it (a kubelet service-account JWT is about 1,150 bytes, a
    /// Vault service token 95).
    fn record_bytes(&self, with_answer: bool) -> usize {
        use vault_csi_driver::volume::record::{
            Phase, RECORD_VERSION, StoredAction, StoredIdentity, StoredSecret, StoredToken,
            VolumeRecord,
        };
        let path = if self.template_file == "blob" {
            "secret/data/myapp/big"
        } else {
            "secret/data/myapp/config"
        };
        let record = VolumeRecord {
            version: RECORD_VERSION,
            volume_id: format!("csi-{}", "3c5e0f2a9d7b41e8".repeat(4)),
            target_path: "/var/lib/kubelet/pods/0b6e9c7a-1d2e-4f3a-8b5c-6d7e8f9a0b1c/volumes/kubernetes.io~csi/secrets/mount".into(),
            readonly: true,
            fs_group: None,
            selinux_context: None,
            vault_addr: Some("https://vault.example.com:8200/".to_owned()),
            fingerprint: "9f86d081884c7d65".repeat(4),
            attributes: self.attributes(),
            phase: Phase::Published,
            identity: Some(StoredIdentity {
                jwt: "e".repeat(1150),
                expires_at_ms: 1_764_583_200_000,
            }),
            token: Some(StoredToken {
                token: format!("hvs.{}", "C".repeat(91)),
                expires_at_ms: 1_764_583_200_000,
                requested_ttl_secs: 3600,
                renewable: true,
                batch: false,
                exhausted: false,
                due_ms: 1_764_581_600_000,
            }),
            secrets: vec![StoredSecret {
                request: vault_csi_driver::vault::SecretRequest::new(path, &serde_json::Map::new())
                    .unwrap(),
                lease_id: None,
                action: StoredAction::Refetch,
                increment_secs: 0,
                expires_at_ms: None,
                due_ms: 1_764_580_300_000,
                answer: with_answer.then(|| self.answer.as_str().into()),
            }],
            salvaged: Vec::new(),
        };
        record.encode().len()
    }
}

/// `render`'s parse weight of a Vault answer, as the renderer weighs a
/// body before parsing it: one per string, per value opened or separated,
/// and per 16 bytes of text.
fn parse_weight(raw: &str) -> u64 {
    let (mut total, mut in_string, mut escaped, mut text) = (1u64, false, false, 0u64);
    for byte in raw.bytes() {
        if in_string {
            text += 1;
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => {
                    in_string = false;
                    total += 1 + text / 16;
                    text = 0;
                }
                _ => {}
            }
        } else if matches!(byte, b'[' | b'{' | b',') {
            total += 1;
        } else if byte == b'"' {
            in_string = true;
        }
    }
    total
}

/// Room a record's serialisation reserves beyond its answers and
/// attributes (`RECORD_SLACK` in `volume::manager`).
const RECORD_SLACK: u64 = 64 * 1024;

/// What one example volume costs, part by part, and its peak while it is
/// published.
struct ExampleCost {
    parts: vault_csi_driver::volume::memory::cost::VolumeCost,
    peak: u64,
}

fn example_cost(volume: &ExampleVolume) -> ExampleCost {
    use vault_csi_driver::render::{PARSED_VALUE_BYTES, Renderer};
    use vault_csi_driver::secret::Secret;
    use vault_csi_driver::storage::{FileContent, Payload, RelativePath};
    use vault_csi_driver::volume::memory::cost::{self, VOLUME_BOOKKEEPING_BYTES, VolumeCost};
    let path = RelativePath::parse(volume.template_file).unwrap();
    let sources = vec![(path.clone(), volume.template.to_owned())];
    let templates = Renderer::new().compile(&sources).unwrap().held_bytes();
    let payload: Payload = [(
        path,
        FileContent {
            bytes: Secret::new(vec![b'x'; volume.rendered]),
            mode: 0o444,
        },
    )]
    .into_iter()
    .collect();
    // `LiveVolume::attributes_cost`: each key and value, with 64 bytes of
    // map overhead, held twice (the request's and the record's copy).
    let attributes = 2 * volume
        .attributes()
        .iter()
        .map(|(k, v)| (k.len() + v.len()) as u64 + 64)
        .sum::<u64>();
    let kept = volume.answer.len() as u64;
    let parts = VolumeCost {
        files: cost::files_cost(&payload),
        kept_answers: kept,
        record: cost::record_cost(volume.record_bytes(true) as u64),
        templates,
        attributes,
    };
    // While it is published: when its files are charged, the render still
    // holds what it reserved (the parsed answer and the output), and the
    // record is the one written before the answers came; then the record's
    // serialisation reserves twice the answers, the attributes and slack.
    let early_record = cost::record_cost(volume.record_bytes(false) as u64);
    let before_record = parts.total() - parts.record;
    let render = parse_weight(&volume.answer) * PARSED_VALUE_BYTES + kept + volume.rendered as u64;
    let at_write = before_record + early_record + render;
    let at_record = before_record + early_record + 2 * kept + attributes + RECORD_SLACK;
    let admission = attributes + templates + VOLUME_BOOKKEEPING_BYTES;
    ExampleCost {
        peak: at_write.max(at_record).max(admission),
        parts,
    }
}

/// How many volumes of `cost` a limit of `limit` bytes admits: the last
/// one needs room for its peak.
fn volumes_within(limit: u64, cost: &ExampleCost) -> u64 {
    if cost.peak > limit {
        return 0;
    }
    (limit - cost.peak) / cost.parts.total() + 1
}

/// The sizing page's worked examples follow from the memory model's own
/// functions (`volume::memory::cost`, `budget_from_limit`, the compiled
/// templates' size), for a 128 MiB limit and the default namespace share.
#[test]
fn the_sizing_examples_follow_the_memory_model() {
    use vault_csi_driver::volume::memory::budget_from_limit;
    let file = "docs/operate/sizing.md";
    let budget = budget_from_limit(128 * 1024 * 1024);
    // `MemoryBudget`: the share of a u64 budget, rounded down.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let share = ((budget as f64) * 0.5) as u64;
    let costs = [
        example_cost(&ExampleVolume::walkthrough()),
        example_cost(&ExampleVolume::large()),
    ];
    let row = |name: &str, f: &dyn Fn(&ExampleCost) -> u64| {
        (name.to_owned(), costs.iter().map(f).collect::<Vec<u64>>())
    };
    let expected = [
        row("Files", &|c| c.parts.files),
        row("Kept answers", &|c| c.parts.kept_answers),
        row("Record", &|c| c.parts.record),
        row("Compiled templates", &|c| c.parts.templates),
        row("Attributes", &|c| c.parts.attributes),
        row("Bookkeeping", &|_| {
            vault_csi_driver::volume::memory::cost::VOLUME_BOOKKEEPING_BYTES
        }),
        row("Standing cost", &|c| c.parts.total()),
        row("Peak", &|c| c.peak),
        row("One namespace", &|c| volumes_within(share, c)),
        row("The node", &|c| volumes_within(budget, c)),
    ];
    let page = read(file);
    let rows = table_after(&page, "<!-- checked: sizing -->");
    let mut wrong = Vec::new();
    for (name, values) in &expected {
        let Some(row) = rows.iter().find(|r| r[0].contains(name.as_str())) else {
            wrong.push(format!("no row starts with {name:?}"));
            continue;
        };
        for (i, value) in values.iter().enumerate() {
            let cell = row.get(i + 1).map_or("", String::as_str);
            let numbers: Vec<&str> = cell
                .split(|c: char| !c.is_ascii_digit())
                .filter(|n| !n.is_empty())
                .collect();
            if numbers.first() != Some(&value.to_string().as_str()) {
                wrong.push(format!(
                    "row {name:?}, column {}: the model gives {value}, the page says {cell:?}",
                    i + 1
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{file}'s worked examples and the memory model disagree (edit the table by hand; \
         each cell starts with the figure in bytes, or the count):\n{}",
        wrong.join("\n")
    );
}
