use std::fmt::Write as _;

use serde_json::json;

use super::*;

fn compile(renderer: &Renderer, files: &[(&str, &str)]) -> Arc<CompiledTemplates> {
    let sources: Vec<_> = files
        .iter()
        .map(|(p, s)| (RelativePath::parse(p).unwrap(), (*s).to_owned()))
        .collect();
    renderer.compile(&sources).unwrap()
}

fn req(path: &str) -> SecretRequest {
    SecretRequest::new(path, &serde_json::Map::new()).unwrap()
}

fn text(out: &[(RelativePath, Secret<Vec<u8>>)], i: usize) -> String {
    String::from_utf8(out[i].1.expose().clone()).unwrap()
}

const WALKTHROUGH: &str = r#"{{#with (secret "secret/data/myapp/config")}}username: {{data.data.username}}
password: {{data.data.password}}{{/with}}"#;

fn kv2(data: &serde_json::Value) -> serde_json::Value {
    json!({"data": {"data": data, "metadata": {"version": 1}}, "lease_id": "", "lease_duration": 0, "renewable": false, "warnings": null})
}

#[test]
fn renders_the_walkthrough_byte_exact_without_html_escaping() {
    let r = Renderer::new();
    let t = compile(&r, &[("index.html", WALKTHROUGH)]);
    assert_eq!(t.requests(), [req("secret/data/myapp/config")]);
    let responses = HashMap::from([(
        req("secret/data/myapp/config"),
        kv2(&json!({"username": "appuser", "password": "suP3rsec(et!<&>\"'"})),
    )]);
    let out = r.render(&t, responses).unwrap();
    assert_eq!(
        text(&out, 0),
        "username: appuser\npassword: suP3rsec(et!<&>\"'"
    );
}

#[test]
fn a_missing_field_is_an_error_not_an_empty_string() {
    let r = Renderer::new();
    let t = compile(
        &r,
        &[("f", r#"{{#with (secret "kv/x")}}{{data.nope}}{{/with}}"#)],
    );
    let responses = HashMap::from([(req("kv/x"), json!({"data": {"yes": 1}}))]);
    let err = r.render(&t, responses).unwrap_err();
    assert!(matches!(err, Error::Render { .. }), "{err}");
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn identical_calls_are_collected_once_and_writes_keep_their_arguments() {
    let r = Renderer::new();
    let t = compile(
        &r,
        &[
            (
                "a",
                r#"{{#with (secret "kv/x")}}{{data.a}}{{/with}}{{#with (secret "kv/x")}}{{data.a}}{{/with}}"#,
            ),
            (
                "b",
                r#"{{#with (secret "pki/issue/web" common_name="a.example" ttl="1h")}}{{data.certificate}}{{/with}}"#,
            ),
        ],
    );
    let found = t.requests();
    assert_eq!(found.len(), 2);
    assert_eq!(found[1].path(), "pki/issue/web");
    assert_eq!(
        found[1].body(),
        Some(r#"{"common_name":"a.example","ttl":"1h"}"#)
    );
    assert!(
        !format!("{:?}", found[1]).contains("a.example"),
        "arguments stay out of Debug"
    );
}

#[test]
fn a_secret_hidden_behind_another_is_requested_in_a_second_round() {
    let r = Renderer::new();
    let t = compile(
        &r,
        &[(
            "f",
            r#"{{#with (secret "kv/first")}}{{#with (secret data.next)}}{{data.v}}{{/with}}{{/with}}"#,
        )],
    );
    assert_eq!(t.requests(), [req("kv/first")]);
    let mut responses = HashMap::from([(req("kv/first"), json!({"data": {"next": "kv/second"}}))]);
    let Err(Error::NeedsSecrets(more)) = r.render(&t, responses.clone()) else {
        panic!("expected a second round");
    };
    assert_eq!(more, vec![req("kv/second")]);
    responses.insert(req("kv/second"), json!({"data": {"v": "found"}}));
    assert_eq!(text(&r.render(&t, responses).unwrap(), 0), "found");
}

#[test]
fn helpers_encode_and_refuse_wrong_calls() {
    let r = Renderer::new();
    let t = compile(
        &r,
        &[(
            "f",
            r#"{{#with (secret "kv/x")}}{{base64Encode data.s}}|{{base64Decode data.b}}|{{toJson data}}{{/with}}"#,
        )],
    );
    let responses = HashMap::from([(req("kv/x"), json!({"data": {"s": "hi", "b": "aGk="}}))]);
    let out = r.render(&t, responses).unwrap();
    assert_eq!(text(&out, 0), r#"aGk=|hi|{"b":"aGk=","s":"hi"}"#);

    for bad in [
        "{{base64Encode}}",
        r#"{{base64Encode "a" "b"}}"#,
        r#"{{base64Decode "%%%"}}"#,
        "{{secret}}",
        "{{secret 42}}",
        r#"{{secret "../sys/x"}}"#,
        r#"{{secret "kv/x?list=true"}}"#,
        r#"{{nosuchhelper "x"}}"#,
    ] {
        let t = compile(&r, &[("f", bad)]);
        let err = r.render(&t, HashMap::new()).unwrap_err();
        assert!(matches!(err, Error::Render { .. }), "{bad}: {err}");
    }
}

#[test]
fn parse_errors_point_at_the_line_and_limits_hold() {
    let r = Renderer::new();
    let sources = vec![(
        RelativePath::parse("f").unwrap(),
        "ok\n{{#with x}}\nno close".to_owned(),
    )];
    let err = r.compile(&sources).unwrap_err();
    assert!(matches!(err, Error::Parse { .. }), "{err}");
    assert!(err.to_string().contains("line 3"), "{err}");

    let big = vec![(
        RelativePath::parse("f").unwrap(),
        "x".repeat(MAX_TEMPLATE_BYTES + 1),
    )];
    assert!(matches!(r.compile(&big), Err(Error::TooLarge { .. })));

    let mut many = String::new();
    for i in 0..=MAX_SECRETS_PER_VOLUME {
        let _ = write!(many, "{{{{#with (secret \"kv/s{i}\")}}}}{{{{/with}}}}");
    }
    let many = vec![(RelativePath::parse("f").unwrap(), many)];
    assert!(matches!(
        r.compile(&many),
        Err(Error::TooManySecrets { .. })
    ));
}

/// Found by the `template_render` fuzz target: each of these used to
/// overflow the stack or grow without bound, taking the whole driver down.
#[test]
fn hostile_templates_are_refused_before_they_can_hurt() {
    let r = Renderer::new();
    let compile = |text: &str| r.compile(&[(RelativePath::parse("f").unwrap(), text.to_owned())]);
    for (what, text, expect) in [
        (
            "recursive inline partial",
            r#"{{#*inline "a"}}{{> a}}{{/inline}}{{> a}}"#.to_owned(),
            "partials",
        ),
        ("partial", "{{> other}}".to_owned(), "partials"),
        (
            "partial block",
            "{{#> layout}}x{{/layout}}".to_owned(),
            "partials",
        ),
        ("decorator", "{{* deco}}".to_owned(), "partials"),
        (
            "deep blocks",
            "{{#if 1}}".repeat(MAX_BLOCK_DEPTH + 1) + &"{{/if}}".repeat(MAX_BLOCK_DEPTH + 1),
            "nested",
        ),
        (
            "too many tags",
            "{{x}}".repeat(MAX_TAGS_PER_TEMPLATE + 1),
            "tags",
        ),
        (
            "deep subexpressions",
            format!(
                "{{{{toJson {}\"a\"{}}}}}",
                "(toJson ".repeat(9),
                ")".repeat(9)
            ),
            "nested",
        ),
    ] {
        let err = compile(&text).expect_err(what);
        assert!(err.to_string().contains(expect), "{what}: {err}");
    }
    // Within the limits, the same constructs compile.
    assert!(
        compile(&("{{#if 1}}".repeat(MAX_BLOCK_DEPTH) + &"{{/if}}".repeat(MAX_BLOCK_DEPTH)))
            .is_ok()
    );
    assert!(compile("{{!-- {{> not a partial, a comment }} --}}ok").is_ok());

    // Eight nested toJson calls stay small enough; a growing output is cut off.
    let nested = format!(
        "{{{{toJson {}\"a\"{}}}}}",
        "(toJson ".repeat(7),
        ")".repeat(7)
    );
    let t = compile(&nested).unwrap();
    assert!(r.render(&t, HashMap::new()).is_ok());
    let huge: Vec<String> = (0..80)
        .map(|i| format!("{i}{}", "x".repeat(16 * 1024)))
        .collect();
    let responses = HashMap::from([(req("kv/x"), serde_json::json!({"data": huge}))]);
    for (what, text) in [
        (
            "one helper call",
            r#"{{#with (secret "kv/x")}}{{toJsonPretty data}}{{/with}}"#,
        ),
        (
            "many small writes",
            r#"{{#with (secret "kv/x")}}{{#each data}}{{this}}{{/each}}{{/with}}"#,
        ),
    ] {
        let t = compile(text).unwrap();
        let err = r.render(&t, responses.clone()).unwrap_err();
        assert!(err.to_string().contains("1048576 bytes"), "{what}: {err}");
    }
}

/// Runs `work` on its own thread and fails the test if it does not finish
/// within `limit`: a render guard that stopped working must fail the test,
/// not hang it.
fn finishes_within<T: Send + 'static>(
    limit: std::time::Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("the render was not stopped within {limit:?}"))
}

/// The metered `each` keeps handlebars' semantics, for data reached through
/// `secret` (values) and through the context (paths): each row renders the
/// same as with the template engine's own `each`.
#[test]
fn each_behaves_like_the_engines_own() {
    let data = json!({
        "list": ["a", "b", "c"],
        "map": {"k1": {"v": 1}, "k2": {"v": 2}},
        "empty": [],
        "nested": [{"xs": [1, 2]}, {"xs": [3]}],
        "top": "T",
    });
    let rows = [
        "{{#each list}}{{@index}}={{this}}{{#if @first}}(first){{/if}}{{#if @last}}(last){{/if}};{{/each}}",
        "{{#each map}}{{@key}}:{{v}}/{{@index}};{{/each}}",
        "{{#each list as |item|}}[{{item}}]{{/each}}",
        "{{#each map as |value key|}}{{key}}={{value.v}},{{/each}}",
        "{{#each list as |item i|}}{{i}}{{item}}{{/each}}",
        "{{#each empty}}x{{else}}none{{/each}}",
        "{{#each top}}x{{else}}not a list{{/each}}",
        "{{#each nested}}{{#each xs}}{{this}}{{@../index}}{{/each}}|{{/each}}",
        "{{#each list}}{{../top}}{{this}}{{/each}}",
        "{{#each empty}}x{{/each}}end",
    ];
    let builtin = {
        let mut h = Handlebars::new();
        h.set_strict_mode(true);
        h
    };
    let ours = {
        let mut h = Handlebars::new();
        h.set_strict_mode(true);
        h.register_helper("each", Box::new(each::BoundedEach));
        h
    };
    let r = Renderer::new();
    let responses = HashMap::from([(req("kv/d"), json!({ "data": data }))]);
    for row in rows {
        let expected = builtin.render_template(row, &data).expect(row);
        let metered = budget::Metered::start(budget::Limits::FULL);
        assert_eq!(
            ours.render_template(row, &data).expect(row),
            expected,
            "by path: {row}"
        );
        drop(metered);
        let by_value = format!(
            r#"{{{{#with (secret "kv/d")}}}}{{{{#with data}}}}{row}{{{{/with}}}}{{{{/with}}}}"#
        );
        let t = compile(&r, &[("f", &by_value)]);
        assert_eq!(
            text(&r.render(&t, responses.clone()).expect(row), 0),
            expected,
            "by value: {row}"
        );
    }
    // Strict mode: iterating over a missing field is an error, as elsewhere.
    let t = compile(
        &r,
        &[(
            "f",
            r#"{{#with (secret "kv/d")}}{{#each data.nope}}x{{/each}}{{/with}}"#,
        )],
    );
    let err = r.render(&t, responses).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

/// Two loops over the same `n` Vault entries, writing one byte per inner
/// iteration, and the response they read.
fn square_loop(
    r: &Renderer,
    n: u32,
) -> (
    Arc<CompiledTemplates>,
    HashMap<SecretRequest, serde_json::Value>,
) {
    let t = compile(
        r,
        &[(
            "f",
            r#"{{#with (secret "kv/x")}}{{#each data}}{{#each ../data}}.{{/each}}{{/each}}{{/with}}"#,
        )],
    );
    let items: Vec<u32> = (0..n).collect();
    (t, HashMap::from([(req("kv/x"), json!({ "data": items }))]))
}

/// Loops nested over Vault data can ask for billions of iterations with no
/// output at all; the iteration budget stops them.
#[test]
fn nested_loops_over_large_data_stop_at_the_iteration_budget() {
    let r = Arc::new(Renderer::new());
    let t = compile(
        &r,
        &[(
            "f",
            r#"{{#with (secret "kv/x")}}{{#each data}}{{#each ../data}}{{#each ../../data}}{{/each}}{{/each}}{{/each}}{{/with}}"#,
        )],
    );
    let items: Vec<u32> = (0..1000).collect();
    let responses = HashMap::from([(req("kv/x"), json!({ "data": items }))]);
    let err = finishes_within(std::time::Duration::from_secs(30), move || {
        r.render(&t, responses).unwrap_err()
    });
    assert!(
        err.to_string()
            .contains(&format!("more than {MAX_LOOP_ITERATIONS} iterations")),
        "{err}"
    );

    // Within the budget the same loops render.
    let r = Renderer::new();
    let (t, responses) = square_loop(&r, 300);
    assert_eq!(text(&r.render(&t, responses).unwrap(), 0).len(), 300 * 300);
}

/// Work the iteration budget does not count (encoding a large value on
/// every iteration, with no output) stops at the time limit.
#[test]
fn heavy_loop_bodies_stop_at_the_time_limit() {
    let r = Arc::new(Renderer::new());
    let t = compile(
        &r,
        &[(
            "f",
            r#"{{#with (secret "kv/x")}}{{#each data.small}}{{#each ../data.small}}{{#if (toJson ../../data.big)}}{{/if}}{{/each}}{{/each}}{{/with}}"#,
        )],
    );
    let small: Vec<u32> = (0..300).collect();
    let big: Vec<String> = (0..64)
        .map(|i| format!("{i}{}", "x".repeat(8 * 1024)))
        .collect();
    let responses = HashMap::from([(req("kv/x"), json!({ "data": {"small": small, "big": big} }))]);
    let err = finishes_within(MAX_RENDER_TIME * 10, move || {
        r.render(&t, responses).unwrap_err()
    });
    assert!(err.to_string().contains("took longer than"), "{err}");
}

#[test]
fn identical_templates_compile_once_and_are_shared() {
    let r = Renderer::new();
    let a = compile(&r, &[("index.html", WALKTHROUGH)]);
    let b = compile(&r, &[("index.html", WALKTHROUGH)]);
    assert!(
        Arc::ptr_eq(&a, &b),
        "the second volume reuses the first's templates"
    );
    let other = compile(&r, &[("other.html", WALKTHROUGH)]);
    assert!(!Arc::ptr_eq(&a, &other), "the file name is part of the key");

    // Unused templates stay for a while (a replaced pod reuses them), but
    // only the most recent few: compiling many others evicts them.
    drop((a, b));
    let sources = vec![(
        RelativePath::parse("index.html").unwrap(),
        WALKTHROUGH.to_owned(),
    )];
    assert!(
        r.cached(&sources).is_some(),
        "recently used templates are kept"
    );
    for i in 0..=TemplateCache::RECENT_SETS {
        let _ = compile(&r, &[("f", &format!("{i}"))]);
    }
    assert!(
        r.cached(&sources).is_none(),
        "templates no volume uses are not kept alive forever"
    );
    assert!(
        r.cached(&[(RelativePath::parse("f").unwrap(), "1".to_owned())])
            .is_some(),
        "the most recent ones are"
    );
    // Two sets of three 60 KB templates exceed the byte bound together.
    let big = "x".repeat(60_000);
    let set = |prefix: &str| -> Vec<(RelativePath, String)> {
        (0..3)
            .map(|i| {
                (
                    RelativePath::parse(&format!("{prefix}{i}")).unwrap(),
                    big.clone(),
                )
            })
            .collect()
    };
    drop(r.compile(&set("a")).unwrap());
    assert!(r.cached(&set("a")).is_some());
    drop(r.compile(&set("b")).unwrap());
    assert!(
        r.cached(&set("a")).is_none(),
        "the kept templates are bounded in bytes too"
    );
}

/// Small renders finish inline; a render past the inline budget hands its
/// responses back, and the full budget then renders them.
#[test]
fn inline_renders_hand_long_work_back() {
    let r = Renderer::new();
    let t = compile(&r, &[("index.html", WALKTHROUGH)]);
    let responses = HashMap::from([(
        req("secret/data/myapp/config"),
        kv2(&json!({"username": "appuser", "password": "p"})),
    )]);
    let InlineRender::Done(Ok(out)) = r.render_inline(&t, responses) else {
        panic!("the walkthrough renders inline");
    };
    assert_eq!(text(&out, 0), "username: appuser\npassword: p");

    let (t, responses) = square_loop(&r, 300);
    let InlineRender::TooLong(responses) = r.render_inline(&t, responses) else {
        panic!("90000 iterations exceed the inline budget");
    };
    assert_eq!(responses.len(), 1, "the responses come back whole");
    assert_eq!(text(&r.render(&t, responses).unwrap(), 0).len(), 300 * 300);
}
