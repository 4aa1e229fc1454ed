//! What compiling templates really holds, against what the renderer says
//! it may hold: `render::compile_reservation` (the peak, bounded from the
//! sources before compiling) and `CompiledTemplates::held_bytes` (what a
//! compiled set keeps).
//!
//! Each shape is compiled in a fresh process (this test binary, run again
//! with the shape's number in `RENDER_MEMORY_SHAPE`), so the figures are
//! the compile's alone: the bytes the allocator handed out (counted by the
//! binary's global allocator) and the growth of the process's resident
//! memory (`VmHWM` after resetting it), which is what the memory cgroup
//! charges. A shape that compiles many sets and keeps them checks that the
//! charges add up to the resident memory they cause, as the attack that
//! took the driver to 115 MiB with a budget gauge of 131 KB did not.

use std::fmt::Write as _;
use std::process::Command;

use peak_alloc::PeakAlloc;
use vault_csi_driver::render::{
    MAX_TAGS_PER_TEMPLATE, MAX_TEMPLATE_BYTES, MAX_TEMPLATE_UNITS, Renderer, compile_reservation,
};
use vault_csi_driver::storage::RelativePath;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

const SHAPE: &str = "RENDER_MEMORY_SHAPE";

/// Resident memory a process gains without allocating anything in
/// particular (pages of stack, the allocator's bookkeeping, the error's
/// text): the noise of measuring resident memory.
const RESIDENT_NOISE: u64 = 1024 * 1024;

type Sources = Vec<(RelativePath, String)>;

fn one(source: String) -> Sources {
    vec![(RelativePath::parse("f").unwrap(), source)]
}

/// `unit` repeated between `open` and `close` to about `bytes` bytes.
fn fill(unit: &str, open: &str, close: &str, bytes: usize) -> String {
    let n = bytes.saturating_sub(open.len() + close.len()) / unit.len();
    format!("{open}{}{close}", unit.repeat(n))
}

/// The units of text that is all inside tags: the bytes that are not part
/// of a name.
fn units(text: &str) -> u64 {
    text.bytes()
        .filter(|&b| !(b.is_ascii_alphanumeric() || b"-_$:".contains(&b) || !b.is_ascii()))
        .count() as u64
}

/// As many `tag`s as the unit limit allows, hidden in `{{#if false}}`.
fn tags_to_the_limit(tag: &str) -> String {
    let n = usize::try_from((MAX_TEMPLATE_UNITS - 64) / units(tag))
        .unwrap()
        .min(MAX_TAGS_PER_TEMPLATE - 4)
        .min((MAX_TEMPLATE_BYTES - 64) / tag.len());
    format!("{{{{#if false}}}}{}{{{{/if}}}}", tag.repeat(n))
}

/// One tag of `unit` to the unit limit.
fn one_tag(unit: &str, open: &str, close: &str) -> String {
    let n = usize::try_from((MAX_TEMPLATE_UNITS - 64) / units(unit)).unwrap();
    let n = n.min((MAX_TEMPLATE_BYTES - 64) / unit.len());
    format!("{open}{}{close}", unit.repeat(n))
}

const WALKTHROUGH: &str = "{{#with (secret \"secret/data/myapp/config\")}}username: \
                           {{data.data.username}}\npassword: {{data.data.password}}{{/with}}\n";

/// The shapes: hostile ones at the limits, ordinary ones, and what the
/// engine or the checks refuse only after parsing.
fn shapes() -> Vec<(&'static str, Sources)> {
    let max = MAX_TEMPLATE_BYTES - 16;
    let dense = tags_to_the_limit(&format!("{{{{a {}}}}}", "(b c c c c c c c) ".repeat(8)));
    vec![
        ("dense subexpressions", one(dense.clone())),
        (
            "two dense templates",
            vec![
                (RelativePath::parse("a").unwrap(), dense.clone()),
                (RelativePath::parse("b").unwrap(), dense.replace('c', "d")),
            ],
        ),
        ("parameters in one tag", one(one_tag(" c", "{{a", "}}"))),
        ("subexpressions (b)(b)", one(one_tag("(b)", "{{a ", "}}"))),
        (
            "eight (b) per tag",
            one(tags_to_the_limit("{{a (b)(b)(b)(b)(b)(b)(b)(b)}}")),
        ),
        (
            "hashes in subexpressions",
            one(one_tag("(b c=d) ", "{{a ", "}}")),
        ),
        ("hash values", one(one_tag(" a=b", "{{a", "}}"))),
        ("array literal", one(one_tag("0,", "{{a [", "0]}}"))),
        ("nested empty arrays", one(one_tag("[],", "{{a [", "0]}}"))),
        (
            "object literal",
            one(one_tag("\"\":0,", "{{a {", "\"x\":0}}}")),
        ),
        ("empty strings", one(one_tag(" \"\"", "{{a", "}}"))),
        ("path segments", one(one_tag(".a", "{{a b", "}}"))),
        ("parent paths", one(one_tag("../", "{{a ", "b}}"))),
        ("numbers", one(one_tag(" 1", "{{a", "}}"))),
        (
            "tiny tags",
            one(fill("{{a}}x", "", "", max).chars().take(6 * 1000).collect()),
        ),
        (
            "else chain",
            one(format!(
                "{{{{#if a}}}}{}{{{{/if}}}}",
                "{{else if a}}x".repeat(MAX_TAGS_PER_TEMPLATE - 4)
            )),
        ),
        ("text", one(fill("hello world, some text. ", "", "", max))),
        ("newlines", one("\n".repeat(max))),
        (
            "walkthrough",
            one(WALKTHROUGH
                .repeat(max / WALKTHROUGH.len())
                .chars()
                .take(WALKTHROUGH.len() * 250)
                .collect()),
        ),
        (
            "whitespace control",
            one(fill("text   {{~a~}}   ", "", "", 17 * 1000)),
        ),
        ("escapes", one(fill("\\{{a}} text ", "", "", 12 * 1000))),
        (
            "raw blocks",
            one(fill("{{{{raw}}}}{{x \"}}{{{{/raw}}}}", "", "", 30 * 200)),
        ),
        (
            "comments",
            one(fill("{{!-- a }} b --}}{{! c }}", "", "", 24 * 500)),
        ),
        (
            "encoders over literals",
            one(format!(
                "{{{{#with \"{}\" as |s|}}}}{}{{{{/with}}}}",
                "\\\"".repeat(6_000),
                "{{toJson (toJson (toJson (toJson (toJson s))))}}".repeat(8)
            )),
        ),
        (
            "loops over literals",
            one(format!(
                "{{{{#each [{}0] as |x|}}}}{{{{toJsonPretty [x,x,x,x,x,x,x,x]}}}}{{{{/each}}}}",
                "0,".repeat(5_000)
            )),
        ),
    ]
}

fn status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().unwrap();
    kib * 1024
}

/// In the child: compiles one shape and prints what it measured.
#[test]
fn measure_one_shape() {
    let Ok(which) = std::env::var(SHAPE) else {
        return;
    };
    if which == "many" {
        return measure_many_sets();
    }
    let (name, sources) = shapes().swap_remove(which.parse().unwrap());
    let renderer = Renderer::new();
    let reservation = compile_reservation(&sources);
    let rss = status("VmRSS:");
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    ALLOC.reset_peak_usage();
    let before = ALLOC.current_usage() as u64;
    let compiled = renderer.compile(&sources);
    let peak = ALLOC.peak_usage() as u64 - before;
    let resident = status("VmHWM:").saturating_sub(rss);
    let held = (ALLOC.current_usage() as u64).saturating_sub(before);
    let (held_bytes, outcome) = match &compiled {
        Ok(t) => (t.held_bytes(), "compiled".to_owned()),
        Err(e) => (0, format!("refused: {}", &e.to_string()[..60])),
    };
    let bytes: usize = sources.iter().map(|(_, s)| s.len()).sum();
    println!(
        "MEASURED {name}|{bytes}|{reservation}|{peak}|{resident}|{held_bytes}|{held}|{outcome}"
    );
}

/// Compiles twelve sets of dense templates at the unit limit and keeps
/// them: the resident memory they take is covered by what they are charged
/// (their `held_bytes`) plus one compile's reservation for the transient.
fn measure_many_sets() {
    let renderer = Renderer::new();
    let sets: Vec<Sources> = (0..12)
        .map(|i| {
            one(tags_to_the_limit(&format!(
                "{{{{a{i} {}}}}}",
                "(b c c c c c c c) ".repeat(8)
            )))
        })
        .collect();
    let reservation = sets.iter().map(|s| compile_reservation(s)).max().unwrap();
    let rss = status("VmRSS:");
    let kept: Vec<_> = sets.iter().map(|s| renderer.compile(s).unwrap()).collect();
    let resident = status("VmRSS:").saturating_sub(rss);
    let charged: u64 = kept.iter().map(|t| t.held_bytes()).sum();
    println!("MANY {charged}|{reservation}|{resident}");
}

fn run_child(which: &str) -> String {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "measure_one_shape",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SHAPE, which)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "shape {which}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The reservation bounds a compile's peak, and `held_bytes` what the
/// compiled set keeps, for every shape: measured in bytes allocated and in
/// resident memory.
#[test]
fn compile_reservation_bounds_what_compiling_holds() {
    if std::env::var(SHAPE).is_ok() {
        return;
    }
    let mut table = String::new();
    for i in 0..shapes().len() {
        let out = run_child(&i.to_string());
        let line = out
            .lines()
            .find_map(|l| l.split_once("MEASURED ").map(|(_, m)| m))
            .unwrap_or_else(|| panic!("shape {i} printed no measure:\n{out}"));
        let f: Vec<&str> = line.split('|').collect();
        let n = |k: usize| f[k].parse::<u64>().unwrap();
        let (name, bytes, reservation, peak, resident, held_bytes, held) =
            (f[0], n(1), n(2), n(3), n(4), n(5), n(6));
        let _ = writeln!(
            table,
            "{name:26} {bytes:6} B  reserved {reservation:9}  peak {peak:9} ({:4}x)  \
             resident {resident:9}  held_bytes {held_bytes:8}  held {held:8} ({:4}x)  {}",
            peak / bytes,
            held / bytes,
            f[7]
        );
        assert!(
            reservation >= peak && reservation + RESIDENT_NOISE >= resident,
            "{name}: reserved {reservation}, allocated at peak {peak}, resident {resident}"
        );
        if f[7] == "compiled" {
            assert!(
                held_bytes >= held && held_bytes <= reservation,
                "{name}: held_bytes {held_bytes}, allocated and kept {held}, reserved {reservation}"
            );
        }
    }
    println!("{table}");

    let out = run_child("many");
    let line = out
        .lines()
        .find_map(|l| l.split_once("MANY ").map(|(_, m)| m))
        .unwrap_or_else(|| panic!("no measure:\n{out}"));
    let f: Vec<u64> = line.split('|').map(|v| v.parse().unwrap()).collect();
    let (charged, reservation, resident) = (f[0], f[1], f[2]);
    println!(
        "12 dense sets: charged {charged}, one reservation {reservation}, resident {resident}"
    );
    assert!(
        charged + reservation + RESIDENT_NOISE >= resident,
        "12 dense sets kept: charged {charged} + reservation {reservation} < resident {resident}"
    );
}
