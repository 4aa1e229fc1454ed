//! Vault's messages about requests whose arguments came from secret data,
//! against the real server's own wording.

use tonic::Code;

use super::support::Harness;
use super::support::openbao::OpenBao;

/// A PKI issue whose `common_name` comes from a KV value, against a role
/// that does not allow that name: OpenBao refuses it with a message that
/// quotes the name (`common name … not allowed by this role`, read from
/// its audit log). The publish fails with `InvalidArgument` naming the
/// path and saying the message was withheld; neither the status nor the
/// driver's log (at debug level) holds the value.
#[tokio::test]
async fn a_refusal_quoting_an_argument_from_secret_data_is_withheld() {
    let Some((bao, secret)) = OpenBao::with_password_as_refused_name().await else {
        return;
    };
    let h = Harness::builder()
        .vault(bao)
        .spawn(&["--log-level=debug"])
        .await;
    let template = r#"{{#with (secret "secret/data/myapp/config")}}{{#with (secret "pki/issue/web" common_name=data.data.password)}}{{data.certificate}}{{/with}}{{/with}}"#;
    let request = h.request("v", &[("roleName", "example"), ("template.cert", template)]);
    let status = h.send_err(request).await;
    let message = status.message();

    let audit = h.vault.audit();
    let refusal = audit
        .responses()
        .find(|e| e.path == "pki/issue/web")
        .and_then(|e| e.error.clone())
        .unwrap_or_default();
    assert!(
        refusal.contains(&secret),
        "OpenBao's own refusal quotes the common name: {refusal:?}\n{}",
        audit.describe()
    );
    assert_eq!(status.code(), Code::InvalidArgument, "{message}");
    assert!(
        message.contains("pki/issue/web") && message.contains("withheld"),
        "the status names the path and says the message was withheld: {message}"
    );
    assert!(
        !message.contains(&secret),
        "the status quotes the secret: {message}"
    );
    let logs = h.driver.logs();
    assert!(
        !logs.contains(&secret),
        "the driver's log holds the secret: {}",
        logs.lines()
            .find(|l| l.contains(&secret))
            .unwrap_or_default()
    );
}
