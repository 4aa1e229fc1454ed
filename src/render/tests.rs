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

/// The files of a render that needed no more secrets.
fn files(rendered: Rendered) -> RenderedFiles {
    match rendered {
        Rendered::Files(files) => files,
        Rendered::NeedsSecrets(more) => panic!("the render asked for {more:?}"),
    }
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
    let out = files(r.render(&t, responses).unwrap());
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

/// A write's data as consul-template's `"key=value"` strings (what
/// `convert` writes for computed arguments): trimmed, empty ones skipped,
/// the last of a repeated key kept; one that is not a pair, or data that
/// is all empty (the agent would write nothing, the driver would read),
/// fails without quoting the string.
#[test]
fn write_data_given_as_key_value_strings() {
    let r = Renderer::new();
    let t = compile(
        &r,
        &[(
            "a",
            r#"{{#with (secret "pki/issue/web" " common_name = a.example " "" "ttl=2h" "ttl=1h")}}{{data.certificate}}{{/with}}"#,
        )],
    );
    let found = t.requests();
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].body(),
        Some(r#"{"common_name":"a.example","ttl":"1h"}"#)
    );
    for bad in [
        r#"{{#with (secret "pki/issue/web" "s3cr3t-without-equals")}}{{/with}}"#,
        r#"{{#with (secret "pki/issue/web" "" "")}}{{/with}}"#,
        r#"{{#with (secret "pki/issue/web" "a=b" ttl="1h")}}{{/with}}"#,
    ] {
        let sources = vec![(RelativePath::parse("a").unwrap(), bad.to_owned())];
        let compiled = r.compile(&sources).unwrap();
        let err = r.render(&compiled, HashMap::new()).unwrap_err().to_string();
        assert!(!err.contains("s3cr3t"), "{err}");
        assert!(err.contains("secret"), "{bad}: {err}");
    }
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
    let Ok(Rendered::NeedsSecrets(more)) = r.render(&t, responses.clone()) else {
        panic!("expected a second round");
    };
    assert_eq!(more, vec![req("kv/second")]);
    responses.insert(req("kv/second"), json!({"data": {"v": "found"}}));
    assert_eq!(text(&files(r.render(&t, responses).unwrap()), 0), "found");
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
    let out = files(r.render(&t, responses).unwrap());
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
            text(&files(r.render(&t, responses.clone()).expect(row)), 0),
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
    assert_eq!(
        text(&files(r.render(&t, responses).unwrap()), 0).len(),
        300 * 300
    );
}

/// Work the iteration budget does not count (encoding a large value on
/// every iteration, with no output) stops at the work budget, or at the
/// bytes of values derived (each encoding is one), whichever comes first.
#[test]
fn heavy_loop_bodies_stop_at_the_work_budget() {
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
    assert!(err.is_limit(), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("more than {MAX_RENDER_WORK} units of work"))
            || message.contains(&format!("more than {MAX_RENDER_HELD_BYTES} bytes")),
        "{err}"
    );
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
    // only the most recent, within a bound in bytes: compiling many others
    // evicts them.
    drop((a, b));
    let sources = vec![(
        RelativePath::parse("index.html").unwrap(),
        WALKTHROUGH.to_owned(),
    )];
    assert!(
        r.cached(&sources).is_some(),
        "recently used templates are kept"
    );
    assert!(r.cache_held_bytes() > 0);
    let big = |i: usize| {
        vec![(
            RelativePath::parse("f").unwrap(),
            format!("{i}{}", "x".repeat(60_000)),
        )]
    };
    let mut compiled = 0;
    while r.cached(&sources).is_some() {
        drop(r.compile(&big(compiled)).unwrap());
        assert!(r.cache_held_bytes() <= MAX_CACHE_HELD_BYTES);
        compiled += 1;
        assert!(
            compiled < 1000,
            "templates no volume uses are not kept alive forever"
        );
    }
    assert!(
        r.cached(&big(compiled - 1)).is_some(),
        "the most recent ones are"
    );
    // A set holding more than the bound is never kept beyond its volumes.
    let dense = format!(
        "{{{{#if false}}}}{}{{{{/if}}}}",
        "{{a (b)(b)(b)(b)(b)(b)(b)(b)}}".repeat(750)
    );
    let dense: Vec<_> = ["f", "g"]
        .iter()
        .map(|f| (RelativePath::parse(f).unwrap(), dense.clone()))
        .collect();
    let t = r.compile(&dense).unwrap();
    assert!(t.held_bytes() > MAX_CACHE_HELD_BYTES, "{}", t.held_bytes());
    assert!(
        Arc::ptr_eq(&r.cached(&dense).unwrap(), &t),
        "shared while in use"
    );
    drop(t);
    assert!(r.cached(&dense).is_none());
    assert!(r.cache_held_bytes() <= MAX_CACHE_HELD_BYTES);
}

fn compile_one(r: &Renderer, text: &str) -> Result<Arc<CompiledTemplates>, Error> {
    r.compile(&[(RelativePath::parse("f").unwrap(), text.to_owned())])
}

/// Partials, partial blocks, decorators and inline partials are refused on
/// the parsed template, however the tag is spelled (`~`, whitespace,
/// triple braces), with the line, column and construct; two inline
/// partials that include each other used to overflow the stack.
#[test]
fn partials_and_decorators_are_refused_however_spelled() {
    let r = Renderer::new();
    for (text, construct, at) in [
        ("{{> p}}", "a partial", "line 1, column 1"),
        ("x\n  {{~> p}}", "a partial", "line 2, column 3"),
        ("{{ ~>p}}", "a partial", "line 1, column 1"),
        ("{{~ > p ~}}", "a partial", "line 1, column 1"),
        ("{{#> p}}x{{/p}}", "a partial block", "line 1, column 1"),
        (
            "{{ ~ #> p}}x{{ ~ /p}}",
            "a partial block",
            "line 1, column 1",
        ),
        ("{{* d}}", "a decorator", "line 1, column 1"),
        ("{{~ * d}}", "a decorator", "line 1, column 1"),
        (
            r#"{{#*inline "p"}}{{> p}}{{/inline}}"#,
            "an inline partial",
            "line 1, column 1",
        ),
        (
            "{{ ~ #*inline \"a\"}}{{ ~>b}}{{/inline}}\n{{ ~ #*inline \"b\"}}{{ ~>a}}{{/inline}}{{ ~>a}}",
            "an inline partial",
            "line 1, column 1",
        ),
        (
            "{{#if 1}}\n{{else}}\n  {{> p}}{{/if}}",
            "a partial",
            "line 3, column 3",
        ),
        (
            "{{#each x}}{{#with y}}ok{{/with}}{{#> p}}{{/p}}{{/each}}",
            "a partial block",
            "line 1, column 34",
        ),
    ] {
        let err = compile_one(&r, text).expect_err(text).to_string();
        assert!(err.contains(construct), "{text}: {err}");
        assert!(err.contains(at), "{text}: {err}");
        assert!(err.contains("not supported"), "{text}: {err}");
    }
    // Inside a raw block, the same text is text.
    let t = compile_one(&r, "{{{{raw}}}}{{> p}}{{#*inline \"q\"}}{{{{/raw}}}}").unwrap();
    assert_eq!(
        text(&files(r.render(&t, HashMap::new()).unwrap()), 0),
        "{{> p}}{{#*inline \"q\"}}"
    );
    // So is an escaped tag, and a comment.
    let t = compile_one(&r, "\\{{> p}} {{!-- {{> p}} --}}{{! {{> q}}").unwrap();
    assert_eq!(
        text(&files(r.render(&t, HashMap::new()).unwrap()), 0),
        "{{> p}} "
    );
}

/// Tags with more parameters than allowed are refused at compile (all are
/// evaluated before the helper runs); the limits hold inside
/// subexpressions, blocks and `{{else}}` branches too.
#[test]
fn parameter_and_nesting_limits_hold_on_the_parsed_tree() {
    let r = Renderer::new();
    let params = |n: usize| vec!["x"; n].join(" ");
    assert!(compile_one(&r, &format!("{{{{#if {}}}}}{{{{/if}}}}", params(8))).is_ok());
    for text in [
        format!("{{{{#if {}}}}}{{{{/if}}}}", params(18)),
        format!("{{{{#if {}}}}}{{{{/if}}}}", params(9)),
        format!("{{{{toJson (lookup {} a=1)}}}}", params(8)),
        format!(
            "{{{{#if 1}}}}{{{{else}}}}\n{{{{ lookup {} }}}}{{{{/if}}}}",
            params(9)
        ),
    ] {
        let err = compile_one(&r, &text).expect_err(&text).to_string();
        assert!(
            err.contains(&format!("at most {MAX_PARAMS_PER_TAG} are allowed")),
            "{text}: {err}"
        );
        assert!(err.contains("line "), "{text}: {err}");
    }
    // Blocks nested through `{{else}}` branches count.
    let chain =
        "{{#if 0}}{{else}}".repeat(MAX_BLOCK_DEPTH + 1) + &"{{/if}}".repeat(MAX_BLOCK_DEPTH + 1);
    let err = compile_one(&r, &chain).unwrap_err().to_string();
    assert!(err.contains("nested more than"), "{err}");
}

/// The metered built-ins behave exactly like the engine's own, by path
/// (data in the context) and by value (data from `secret`).
#[test]
fn builtins_behave_like_the_engines_own() {
    let data = json!({
        "t": true, "f": false, "zero": 0, "one": 1, "neg": -3, "big": 18_446_744_073_709_551_615_u64,
        "half": 0.5, "s": "abc", "n": "12", "empty": "", "list": ["a", "b"], "none": [],
        "map": {"k": "v", "n": {"x": 1}}, "nul": null,
    });
    let rows = [
        "{{#if t}}y{{else}}n{{/if}}{{#if f}}y{{else}}n{{/if}}{{#if zero}}y{{else}}n{{/if}}",
        "{{#if zero includeZero=true}}y{{else}}n{{/if}}{{#if none}}y{{else}}n{{/if}}{{#if map}}y{{/if}}",
        "{{#unless f}}u{{/unless}}{{#unless t}}u{{else}}e{{/unless}}{{#unless empty}}E{{/unless}}",
        "{{#if f}}a{{else if one}}b{{else}}c{{/if}}",
        "{{#with map}}{{k}}{{n.x}}{{/with}}{{#with map as |m|}}{{m.k}}{{/with}}",
        "{{#with nul}}x{{else}}no{{/with}}{{#with map.n}}{{x}}{{../s}}{{/with}}",
        "{{#each list}}{{#with ../map}}{{@index}}{{k}}{{/with}}{{/each}}",
        "{{lookup list 1}}{{lookup map \"k\"}}{{#with (lookup map \"n\")}}{{x}}{{/with}}",
        "{{eq one 1}}{{ne s \"abc\"}}{{gt big half}}{{gte one 1}}{{lt neg zero}}{{lte n 12}}",
        "{{gt s \"abd\"}}{{lt n one}}{{eq list list}}{{gt half 0}}{{lt big 1.5}}{{gt t f}}",
        "{{#eq s \"abc\"}}same{{else}}diff{{/eq}}{{#gt one 2}}g{{else}}l{{/gt}}",
        "{{not t}}{{not empty}}{{and t one s}}{{or f zero empty}}{{and}}{{or}}",
        "{{#and t f}}y{{else}}n{{/and}}{{#not f}}N{{/not}}",
        "{{len list}}{{len map}}{{len s}}{{len one}}{{len (lookup map \"n\")}}",
        "{{log s}}{{log s level=\"warn\"}}[logged nothing]",
        "{{{{raw}}}}{{if}}{{{{/raw}}}}",
    ];
    let builtin = {
        let mut h = Handlebars::new();
        h.set_strict_mode(true);
        h.register_escape_fn(handlebars::no_escape);
        h
    };
    let ours = {
        let mut h = Handlebars::new();
        h.set_strict_mode(true);
        h.register_escape_fn(handlebars::no_escape);
        builtins::register(&mut h);
        h
    };
    let r = Renderer::new();
    let responses = HashMap::from([(req("kv/d"), json!({ "data": data }))]);
    for row in rows {
        let expected = builtin.render_template(row, &data);
        let metered = budget::Metered::start(budget::Limits::FULL);
        let got = ours.render_template(row, &data);
        drop(metered);
        match (&expected, &got) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "by path: {row}"),
            (Err(a), Err(b)) => assert_eq!(a.reason().to_string(), b.reason().to_string(), "{row}"),
            _ => panic!("{row}: engine {expected:?}, ours {got:?}"),
        }
        let Ok(expected) = expected else { continue };
        let by_value = format!(
            r#"{{{{#with (secret "kv/d")}}}}{{{{#with data}}}}{row}{{{{/with}}}}{{{{/with}}}}"#
        );
        let t = compile(&r, &[("f", &by_value)]);
        assert_eq!(
            text(&files(r.render(&t, responses.clone()).expect(row)), 0),
            expected,
            "by value: {row}"
        );
    }
    // Errors agree too: missing parameters, strict misses, bad log levels.
    for row in [
        "{{#if}}x{{/if}}",
        "{{#with}}x{{/with}}",
        "{{lookup list}}",
        "{{lookup list 5}}",
        "{{lookup map \"nope\"}}",
        "{{#with nope}}x{{/with}}",
        "{{eq one}}",
        "{{eq nope 1}}",
        "{{not}}",
        "{{len}}",
        "{{log s level=\"loud\"}}",
    ] {
        let expected = builtin.render_template(row, &data).expect_err(row);
        let metered = budget::Metered::start(budget::Limits::FULL);
        let got = ours.render_template(row, &data).expect_err(row);
        drop(metered);
        assert_eq!(
            expected.reason().to_string(),
            got.reason().to_string(),
            "{row}"
        );
    }
}

/// A 100,000-element Vault array.
fn big_array() -> HashMap<SecretRequest, serde_json::Value> {
    let items: Vec<u32> = (0..100_000).collect();
    HashMap::from([(req("kv/x"), kv2(&json!({ "a": items, "s": "x" })))])
}

/// Tags that hand a large value to a built-in helper, or print it, over and
/// over (the 60 KB templates that used to take 13 s each) stop at a budget
/// well within the time limit, with a message naming the limit.
#[test]
fn large_values_passed_to_builtins_stop_at_the_work_budget() {
    let r = Arc::new(Renderer::new());
    let a8 = ["data.data.a"; MAX_PARAMS_PER_TAG].join(" ");
    // As many tags as fit in the largest template (0: once).
    let wrap = |body: &str, n: usize| {
        let n = if n == 0 {
            (MAX_TEMPLATE_BYTES - 64) / body.len()
        } else {
            n
        };
        format!(
            r#"{{{{#with (secret "kv/x")}}}}{}{{{{/with}}}}"#,
            body.repeat(n.min(MAX_TAGS_PER_TEMPLATE / 3))
        )
    };
    let cases = [
        wrap(&format!("{{{{#if {a8}}}}}{{{{/if}}}}"), 0),
        wrap(&format!("{{{{#unless {a8}}}}}{{{{/unless}}}}"), 0),
        wrap(&format!("{{{{#with {a8}}}}}{{{{/with}}}}"), 0),
        wrap(r#"{{#if (lookup data.data "a")}}{{/if}}"#, 0),
        wrap(&format!("{{{{#if (eq {a8})}}}}{{{{/if}}}}"), 0),
        wrap("{{len data.data.a}}", 0),
        wrap(&format!("{{{{toJson (and {a8})}}}}"), 0),
        // Nested in a loop: every iteration passes the array again.
        wrap(
            "{{#each data.data.a}}{{#if ../data.data.a}}{{/if}}{{/each}}",
            1,
        ),
        wrap(
            "{{#each data.data.a as |x|}}{{lookup ../data.data.a x}}{{/each}}",
            1,
        ),
    ];
    for text in cases {
        assert!(text.len() <= MAX_TEMPLATE_BYTES, "{}", text.len());
        let t = compile_one(&r, &text).unwrap();
        let (r2, responses) = (Arc::clone(&r), big_array());
        let started = tokio::time::Instant::now();
        let err = finishes_within(MAX_RENDER_TIME * 5, move || {
            r2.render(&t, responses).unwrap_err()
        });
        let took = started.elapsed();
        let message = err.to_string();
        assert!(
            message.contains(&format!("more than {MAX_RENDER_WORK} units of work"))
                || message.contains(&format!("more than {MAX_LOOP_ITERATIONS} iterations")),
            "{}: {message}",
            &text[..120.min(text.len())]
        );
        assert!(
            took < MAX_RENDER_TIME,
            "{}: stopped after {took:?}",
            &text[..120.min(text.len())]
        );
    }
}

/// Plain expressions call no helper: printing a large value over and over
/// is cut off by the output cap, and the output writer checks the clock.
#[test]
fn plain_expressions_stop_at_the_output_cap_and_the_clock() {
    let r = Renderer::new();
    let arrays = format!(
        r#"{{{{#with (secret "kv/x")}}}}{}{{{{/with}}}}"#,
        "{{data.data.a}}".repeat(1000)
    );
    let t = compile_one(&r, &arrays).unwrap();
    let err = r.render(&t, big_array()).unwrap_err().to_string();
    assert!(
        err.contains(&format!("{MAX_RENDERED_BYTES} bytes")),
        "{err}"
    );
    // An object prints as `[object]`: reaching it a thousand times is cheap,
    // because lookups into Vault data borrow it instead of copying it.
    let objects = format!(
        r#"{{{{#with (secret "kv/x")}}}}{}{{{{/with}}}}"#,
        "{{data.data}}".repeat(1000)
    );
    let t = compile_one(&r, &objects).unwrap();
    let started = tokio::time::Instant::now();
    let out = files(r.render(&t, big_array()).unwrap());
    assert_eq!(text(&out, 0), "[object]".repeat(1000));
    assert!(
        started.elapsed() < MAX_RENDER_TIME,
        "{:?}",
        started.elapsed()
    );

    let t = compile_one(&r, "{{#with (secret \"kv/x\")}}{{data.data.s}}{{/with}}").unwrap();
    let expired = budget::Limits {
        time: std::time::Duration::ZERO,
        ..budget::Limits::FULL
    };
    let err = r
        .render_under(&t, big_array(), expired, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("took longer than"), "{err}");
}

/// A render sees at most `MAX_RENDER_DATA` of Vault data.
#[test]
fn too_much_vault_data_is_refused() {
    let r = Renderer::new();
    let t = compile_one(&r, "{{#with (secret \"kv/x\")}}{{data.data.s}}{{/with}}").unwrap();
    let items: Vec<u32> = (0..u32::try_from(MAX_RENDER_DATA).unwrap()).collect();
    let responses = HashMap::from([(req("kv/x"), kv2(&json!({ "a": items, "s": "x" })))]);
    let err = r.render(&t, responses).unwrap_err();
    assert!(matches!(err, Error::DataTooLarge), "{err}");
    assert!(
        err.to_string().contains(&MAX_RENDER_DATA.to_string()),
        "{err}"
    );
}

/// A `secret` path built from data is never echoed: not when it is
/// invalid, not when it was not fetched, not in a request's debug form.
#[test]
fn paths_from_secret_data_are_never_shown() {
    let r = Renderer::new();
    let password = "hunter2-SECRET/..//x";
    let t = compile_one(
        &r,
        r#"{{#with (secret "kv/a")}}{{#with (secret data.data.password)}}{{data}}{{/with}}{{/with}}"#,
    )
    .unwrap();
    let responses = HashMap::from([(req("kv/a"), kv2(&json!({ "password": password })))]);
    let err = r.render(&t, responses).unwrap_err().to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains(SecretRequest::PATH_FROM_DATA), "{err}");

    // A valid path from data is requested, and shown redacted.
    let responses = HashMap::from([(req("kv/a"), kv2(&json!({ "password": "kv/hunter2" })))]);
    let Ok(Rendered::NeedsSecrets(more)) = r.render(&t, responses) else {
        panic!("the path from data is requested");
    };
    assert_eq!(more[0].path(), "kv/hunter2");
    assert!(more[0].path_from_data());
    assert_eq!(more[0].shown_path(), SecretRequest::PATH_FROM_DATA);
    assert!(!format!("{:?}", more[0]).contains("hunter2"));
    let withheld = withhold_for(
        &more[0],
        crate::vault::Error::Status {
            operation: "read",
            status: 404,
            message: "no handler for route \"kv/hunter2\"".to_owned(),
        },
    )
    .to_string();
    assert!(!withheld.contains("hunter2"), "{withheld}");
    assert!(withheld.contains("404"), "{withheld}");
    // A literal path is shown as written.
    assert_eq!(req("kv/a").shown_path(), "kv/a");
}

/// The pool answers at the deadline even if the work goes on, refuses
/// work when full, and propagates panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_answers_at_the_deadline_and_when_full() {
    let p = Arc::new(pool::Pool::sized(1, 1));
    let started = tokio::time::Instant::now();
    let limit = std::time::Duration::from_millis(200);
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let wait = std::sync::Mutex::new(wait);
    let long = p.run("rendering", limit, move || {
        let _ = wait.lock().unwrap().recv();
    });
    let err = long.await.unwrap_err();
    assert!(matches!(err, Error::TimedOut { .. }), "{err}");
    assert!(err.to_string().contains("200ms"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    // The thread is still busy and one job fills the queue: the next is
    // refused at once.
    let p2 = Arc::clone(&p);
    let queued = tokio::spawn(async move { p2.run("rendering", limit, || 1).await });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let err = p.run("rendering", limit, || 2).await.unwrap_err();
    assert!(matches!(err, Error::Busy), "{err}");
    release.send(()).unwrap();
    assert_eq!(queued.await.unwrap().unwrap(), 1);
    assert_eq!(p.run("rendering", limit, || 3).await.unwrap(), 3);
}

/// Every `template_render` fuzz seed compiles or is refused, and renders
/// or fails, on a 2 MiB stack (a quarter of a render thread's): the seeds
/// include every spelling of the partials that used to overflow the stack.
#[test]
fn fuzz_seeds_never_crash() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/template_render");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        seen += 1;
        let name = path.display().to_string();
        let partial = text.contains('>') || text.contains('*');
        let outcome = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                let r = Renderer::new();
                match compile_one(&r, &text) {
                    Ok(t) => {
                        let _ = r.render(&t, HashMap::new());
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                }
            })
            .unwrap()
            .join()
            .unwrap_or_else(|_| panic!("{name} crashed the renderer"));
        if name.contains("partial") || name.contains("decorator") {
            let refused = outcome.expect_err(&name);
            assert!(
                partial
                    && (refused.contains("not supported") || refused.contains("does not parse")),
                "{name}: {refused}"
            );
        }
    }
    assert!(seen >= 10, "the seeds are where the fuzz README says");
}

/// Nesting as deep as the largest template allows, in every form the
/// parser recurses on (subexpressions, array and object literals, blocks,
/// `{{else if}}` chains), is refused without overflowing the stack: on a
/// render thread, and on a 2 MiB one.
#[tokio::test]
async fn the_deepest_nesting_is_refused_without_overflowing() {
    let half = |open: &str, close: &str, fixed: usize| {
        let n = (MAX_TEMPLATE_BYTES - fixed) / (open.len() + close.len());
        (open.repeat(n), close.repeat(n))
    };
    let (o, c) = half("(a ", ")", 16);
    let subexpressions = format!("{{{{x {o}1{c}}}}}");
    let (o, c) = half("[", "]", 16);
    let arrays = format!("{{{{x {o}{c}}}}}");
    let (o, c) = half("{\"a\":", "}", 16);
    let objects = format!("{{{{x {o}1{c}}}}}");
    let blocks =
        "{{#a}}".repeat(MAX_TAGS_PER_TEMPLATE / 2) + &"{{/a}}".repeat(MAX_TAGS_PER_TEMPLATE / 2);
    let chain = "{{#if 0}}{{else if 0}}".repeat(MAX_TAGS_PER_TEMPLATE / 3)
        + &"{{/if}}".repeat(MAX_TAGS_PER_TEMPLATE / 3);
    let unclosed = format!("{{{{x {}", "(a ".repeat((MAX_TEMPLATE_BYTES - 8) / 3));
    let r = Arc::new(Renderer::new());
    for text in [subexpressions, arrays, objects, blocks, chain, unclosed] {
        assert!(text.len() <= MAX_TEMPLATE_BYTES);
        let sources = vec![(RelativePath::parse("f").unwrap(), text.clone())];
        let err = r.compile_off_thread(&sources).await.unwrap_err();
        assert!(
            matches!(err, Error::Parse { .. } | Error::TooComplex { .. }),
            "{}: {err}",
            &text[..40]
        );
        let small = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || Renderer::new().compile(&sources).map(|_| ()))
            .unwrap()
            .join()
            .expect("no overflow on 2 MiB");
        assert!(small.is_err());
    }
}

/// Subexpressions nested a few hundred deep used to parse and then
/// overflow the stack while the engine converted the parse; every depth,
/// however spelled (strings holding parentheses, `~`, whitespace), is
/// refused on a 2 MiB stack with the line and column.
#[test]
fn deep_subexpressions_are_refused_before_the_engine_converts_them() {
    let worker = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(|| {
            let r = Renderer::new();
            for n in [9, 50, 200, 330, 400, 650, 1000, 2000, 2700, 4000, 6000] {
                for (open, close) in [
                    ("(a ", ")"),
                    ("( a \")\" ", " )"),
                    ("(a x=')}}' ", ")"),
                    ("(\n a\t", "\n)"),
                ] {
                    let text = format!("x\n{{{{~ y {}1{} ~}}}}", open.repeat(n), close.repeat(n));
                    if text.len() > MAX_TEMPLATE_BYTES {
                        continue;
                    }
                    let err = compile_one(&r, &text).unwrap_err().to_string();
                    assert!(
                        err.contains("nested more than")
                            || err.contains("stack limit")
                            || err.contains(&format!("at most {MAX_TEMPLATE_UNITS} are allowed")),
                        "{n} {open:?}: {err}"
                    );
                }
            }
            let err = compile_one(&r, "{{x (a (a (a (a (a (a (a (a (a 1)))))))))}}")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("line 1, column 29: subexpressions are nested more than 8"),
                "{err}"
            );
        })
        .unwrap();
    worker.join().expect("no overflow");
}

/// The helpers registered on `registry`, from the engine's own listing of
/// them (its `Debug`; the engine has no other): helpers added later are
/// covered without being named here.
fn helper_names(registry: &Handlebars<'static>) -> Vec<String> {
    let listing = format!("{registry:?}");
    let start = listing
        .find("helpers: [")
        .expect("the registry lists its helpers")
        + 10;
    let end = start + listing[start..].find(']').unwrap();
    listing[start..end]
        .split(", ")
        .map(|name| name.trim_matches('"').to_owned())
        .filter(|name| !name.is_empty())
        .collect()
}

/// Vault data at the data limit, shaped to make helpers work hard: a
/// megabyte of text full of what encoders escape, a PEM scan's worst case
/// (50,000 BEGIN lines before one END line, 950 KB), a wide list, a wide
/// map, deep nesting, valid base64, numbers as Vault sends them. Parsed
/// from JSON text, as the driver parses Vault's answers.
fn adversarial_data() -> serde_json::Value {
    let huge: String = "<>&\"\\\u{1}é\u{2028}-----BEGIN A-----\n %v {{x}}"
        .chars()
        .cycle()
        .take(400_000)
        .collect();
    let pem = format!("{}-----END A-----", "-----BEGIN A-----\n".repeat(50_000));
    let mut deep = String::new();
    for _ in 0..100 {
        deep.push_str("[1,\"x\",");
    }
    deep.push('0');
    deep.push_str(&"]".repeat(100));
    let text = serde_json::json!({
        "huge": huge,
        "pem": {"data": {"certificate": pem}},
        "wide": (0..30_000).map(|i| format!("v{i}")).collect::<Vec<_>>(),
        "map": (0..10_000).map(|i| (format!("k{i}"), serde_json::Value::from(i))).collect::<serde_json::Map<_, _>>(),
        "b64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "x".repeat(300_000)),
        "nums": "NUMS",
        "deep": "DEEP",
    })
    .to_string()
    .replace("\"DEEP\"", &deep)
    .replace("\"NUMS\"", "[1.50, -0, 123456789012345678901234567890, 1E5]");
    let data: serde_json::Value = serde_json::from_str(&text).unwrap();
    let weight = budget::weight(&data, u64::MAX);
    assert!(weight <= MAX_RENDER_DATA, "the data weighs {weight}");
    data
}

/// Every registered helper, called every way a template can (one to three
/// parameters, a format first, keys after, a hash, a block) over data at
/// the limits, stops where the render's budget says: its work is metered
/// in proportion to what it touches, so the deterministic budgets stop it
/// before the clock does, and with the work budget lifted the clock stops
/// it within a small bound of its limit. `pkiCert`'s quadratic PEM scan
/// ran for half a minute on the `pem` value and failed both.
#[test]
fn every_helper_stops_within_its_limits_over_adversarial_data() {
    const OVERRUN: std::time::Duration = std::time::Duration::from_millis(500);
    let r = Renderer::new();
    let names = helper_names(&r.strict);
    assert!(
        names.iter().any(|n| n == "pkiCert") && names.len() >= 20,
        "{names:?}"
    );
    let context = Context::from(json!({ "]0": {"data": adversarial_data()} }));
    let keys = HashMap::from([(req("kv/x"), "]0".to_owned())]);
    let clock_only = budget::Limits {
        iterations: u32::MAX,
        work: u64::MAX,
        time: std::time::Duration::from_millis(50),
        held: u64::MAX,
    };
    let mut ran = 0;
    for name in &names {
        for value in [
            "data.huge",
            "data.pem",
            "data.wide",
            "data.map",
            "data.deep",
            "data.b64",
            "data.nums",
            "data",
        ] {
            for call in [
                format!("{{{{{name} {value}}}}}"),
                format!("{{{{{name} {value} {value}}}}}"),
                format!("{{{{{name} {value} {value} {value}}}}}"),
                format!("{{{{{name} \"%v\" {value}}}}}"),
                format!("{{{{{name} {value} \"k1\" 1}}}}"),
                format!("{{{{{name} {value} key={value}}}}}"),
                format!("{{{{#{name} {value}}}}}{{{{this}}}}{{{{else}}}}-{{{{/{name}}}}}"),
            ] {
                let text = format!("{{{{#with (secret \"kv/x\")}}}}{call}{{{{/with}}}}");
                let Ok(t) = compile_one(&r, &text) else {
                    continue;
                };
                for (limits, allowed) in [
                    (budget::Limits::FULL, MAX_RENDER_TIME),
                    (clock_only, clock_only.time + OVERRUN),
                ] {
                    let started = tokio::time::Instant::now();
                    let result = r.render_context(&t, &context, keys.clone(), 1, limits, None);
                    let took = started.elapsed();
                    ran += 1;
                    assert!(
                        took < allowed,
                        "{call}: ran for {took:?} (allowed {allowed:?})"
                    );
                    if limits == budget::Limits::FULL
                        && let Err(e) = &result
                    {
                        assert_ne!(
                            e.limit(),
                            Some(Limit::Time),
                            "{call}: only the clock stopped it: {e}"
                        );
                    }
                }
            }
        }
    }
    assert!(ran > 1000, "{ran} renders");
}

/// Templates built to make the engine's or the driver's messages quote
/// tens of kilobytes (a parameter the engine cannot read, a long helper
/// name, a long path, mismatched block names, a long secret path): every
/// error carries an excerpt of at most `MAX_ERROR_MESSAGE_BYTES`, with the
/// line and column. Kubelet puts these messages into pod events; they used
/// to be 45 to 75 KB.
#[test]
fn errors_quote_only_an_excerpt_however_the_template_is_built() {
    let r = Renderer::new();
    let long = "z".repeat(60_000);
    let digits = "0".repeat(60_000);
    let bombs = [
        format!("{{{{x 0{digits}}}}}"),
        format!("{{{{x [01,{}1]}}}}", "1,".repeat(10_000)),
        format!("{{{{#a{half}}}}}{{{{/b{half}}}}}", half = &long[..30_000]),
        format!("line\n{{{{#with (secret \"kv/x\")}}}}{{{{{long}}}}}{{{{/with}}}}"),
        format!("{{{{#with (secret \"kv/x\")}}}}{{{{{long} 1}}}}{{{{/with}}}}"),
        format!("{{{{#with (secret \"kv/x\")}}}}{{{{secret \"a/{long} b\"}}}}{{{{/with}}}}"),
        format!("{{{{#with (secret \"kv/x\")}}}}{{{{lookup data \"{long}\"}}}}{{{{/with}}}}"),
        format!("{{{{x \"{long}"),
    ];
    for bomb in bombs {
        let message = match compile_one(&r, &bomb) {
            Err(e) => e.to_string(),
            Ok(t) => r
                .render(&t, HashMap::from([(req("kv/x"), json!({"data": {}}))]))
                .expect_err(&bomb[..40])
                .to_string(),
        };
        assert!(
            message.len() <= MAX_ERROR_MESSAGE_BYTES + 100,
            "{}: a message of {} bytes: {}",
            &bomb[..40],
            message.len(),
            &message[..200]
        );
        assert!(message.contains("line "), "{}: {message}", &bomb[..40]);
    }
}

/// Work whose caller stops waiting (its deadline passed, or the request
/// was cancelled and its future dropped) stops at its next check of the
/// clock, long before its own time limit, and frees its render thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_whose_caller_stops_waiting_stops_at_its_next_check() {
    let p = Arc::new(pool::Pool::sized(1, 1));
    let (started, is_started) = std::sync::mpsc::channel();
    let (stopped, is_stopped) = std::sync::mpsc::channel();
    let long = std::time::Duration::from_secs(600);
    let p2 = Arc::clone(&p);
    let caller = tokio::spawn(async move {
        p2.run("rendering", long, move || {
            let _metered = budget::Metered::start(budget::Limits {
                time: long,
                ..budget::Limits::FULL
            });
            started.send(()).unwrap();
            let stop = loop {
                if let Err(e) = budget::check_time() {
                    break e;
                }
                std::thread::yield_now();
            };
            let _ = stopped.send((budget::tripped(), stop.reason().to_string()));
        })
        .await
    });
    tokio::task::spawn_blocking(move || is_started.recv().unwrap())
        .await
        .unwrap();
    caller.abort();
    let (limit, message) = tokio::task::spawn_blocking(move || {
        is_stopped.recv_timeout(std::time::Duration::from_secs(30))
    })
    .await
    .unwrap()
    .expect("the abandoned work stops");
    assert_eq!(limit, Some(Limit::Abandoned), "{message}");
    assert!(message.contains("abandoned"), "{message}");
    assert_eq!(p.run("rendering", long, || 7).await.unwrap(), 7);
}

/// Every way a render can stop at a limit is recognisable as one, with the
/// limit named; mistakes in templates are not limits.
#[test]
fn renders_stopped_at_a_limit_say_which() {
    let r = Renderer::new();
    let render = |text: &str, limits: budget::Limits| {
        let t = compile_one(&r, text).unwrap();
        r.render_under(&t, big_array(), limits, None).unwrap_err()
    };
    let in_secret = |body: &str| format!("{{{{#with (secret \"kv/x\")}}}}{body}{{{{/with}}}}");
    let cases = [
        (
            in_secret("{{data.data.s}}"),
            budget::Limits {
                time: std::time::Duration::ZERO,
                ..budget::Limits::FULL
            },
            Limit::Time,
        ),
        (
            in_secret(&"{{#if (lookup data.data \"a\")}}{{/if}}".repeat(100)),
            budget::Limits::FULL,
            Limit::Work,
        ),
        (
            in_secret("{{#each data.data.a}}{{#each ../data.data.a}}{{/each}}{{/each}}"),
            budget::Limits::FULL,
            Limit::Iterations,
        ),
        (
            in_secret(&"{{data.data.a}}".repeat(10)),
            budget::Limits::FULL,
            Limit::Output,
        ),
        (
            in_secret(&"{{#if (toJson data.data.a)}}{{/if}}".repeat(100)),
            budget::Limits {
                held: 1024 * 1024,
                ..budget::Limits::FULL
            },
            Limit::Held,
        ),
    ];
    for (text, limits, limit) in cases {
        let err = render(&text, limits);
        assert!(err.is_limit(), "{text}: {err}");
        assert_eq!(err.limit(), Some(limit), "{text}: {err}");
    }
    assert!(Error::DataTooLarge.is_limit());
    let t = compile_one(&r, "{{#with (secret \"kv/x\")}}{{data.nope}}{{/with}}").unwrap();
    let mistake = r.render(&t, big_array()).unwrap_err();
    assert!(!mistake.is_limit(), "{mistake}");
}

/// A render error's message never quotes a string of the volume's data,
/// whatever a helper wrote into it (strings under four bytes excepted).
#[test]
fn render_errors_never_quote_a_value_of_the_data() {
    let data = serde_json::json!({"]0": {"data": {"password": "hunter2-secret", "n": 1, "short": "abc", "list": ["x-token-77"]}}});
    let error = Error::Render {
        file: RelativePath::parse("f").unwrap(),
        message: "line 1, column 3: cannot compare hunter2-secret with abc or x-token-77"
            .to_owned(),
    };
    let shown = error.scrubbed(&data).to_string();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("x-token-77"), "{shown}");
    assert!(shown.contains("with abc"), "{shown}");
}
