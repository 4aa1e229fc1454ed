use std::fmt::Write as _;

use serde_json::json;

use super::*;

fn compile(renderer: &Renderer, files: &[(&str, &str)]) -> CompiledTemplates {
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
    assert_eq!(
        r.requests(&t).unwrap(),
        vec![req("secret/data/myapp/config")]
    );
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
    let found = r.requests(&t).unwrap();
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
    assert_eq!(r.requests(&t).unwrap(), vec![req("kv/first")]);
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
    let t = compile(&r, &[("f", &many)]);
    assert!(matches!(r.requests(&t), Err(Error::TooManySecrets { .. })));
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
