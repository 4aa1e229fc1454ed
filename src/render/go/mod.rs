//! Go's values in a converted template: the model under the `go*` helpers
//! that `vault-csi-driver convert` writes for consul-template templates.
//!
//! consul-template's templates hold more kinds of values than JSON has:
//! Vault data (`map[string]interface{}`, `[]interface{}`, `string`,
//! `json.Number`, `bool`, `nil`) but also Go `int`s (`len`, constants),
//! `float64`s (`parseJSON`, float constants), `[]string` (`split`),
//! consul-template's `*Secret` and `PemEncoded` structs, `time.Time`
//! (`sprig_toDate`), `*semver.Version` (`sprig_semver`), yaml.v2's
//! `map[interface{}]interface{}` (`parseYAML`), strings that are not
//! UTF-8 (`base64Decode`), and errors that Go only raises if the value
//! is used (`and`/`or` stop at the first value that decides). Vault data
//! stays plain JSON; every other kind is a *tagged* object,
//! `{"\u{FDD0}go": <nonce>, "t": <kind>, "v": <value>}`, and a string's
//! bytes that are not UTF-8 are written inside it between markers,
//! `\u{FDD0}<nonce>[<hex>]\u{FDD0}`, which the render's output turns back
//! into the bytes ([`session::output_bytes`]).
//!
//! The nonce is random for each file rendered, and the Vault data a render
//! reads is fixed before it starts: no secret can spell a tag or a marker
//! of the render that reads it, so a tenant's data cannot forge a type or
//! a byte. Text that merely looks like a marker is text.
//!
//! The session ([`session::start`]) also holds the template's variables (`$x :=`),
//! which Go can assign in one block and read after it, something
//! handlebars' block parameters cannot do.

//!
//! The files, from the top down (each imports only those below it):
//! [`strings`] holds consul-template's functions and `goCall`, with
//! [`scratch`] (consul-template's per-render scratch), falling back
//! to [`template`] (Go's builtins, and the methods of values) first and
//! [`sprig`] last; both use [`encoding`] (Go's `encoding/json`), [`yaml`]
//! (gopkg.in/yaml.v2), [`toml`] (BurntSushi/toml), [`fmt`] (Go's `fmt`),
//! [`truth`] (`and`, `or`, `not`, comparisons) and [`regex`]; [`args`]
//! reads arguments; [`helper`] is the glue to handlebars; [`model`] the
//! values, over [`clock`] (Go's `time.Time`: calendar, layouts, zones),
//! and [`session`] the per-render nonce and variables. [`value`], [`json`]
//! and [`number`] are the first, plain-JSON helpers (`goField`, `goPrint`,
//! `toGoJson`, Vault's numbers as sent), kept for templates converted
//! with them.

mod args;
mod clock;
mod encoding;
mod fmt;
mod helper;
pub mod json;
mod model;
pub(super) mod number;
mod regex;
mod scratch;
pub(super) mod session;
mod sprig;
mod strings;
mod template;
mod toml;
mod truth;
pub(super) mod value;
mod yaml;

use handlebars::Handlebars;

/// Registers every helper of the Go model and the plain-JSON Go helpers.
pub(super) fn register(registry: &mut Handlebars<'static>) {
    value::register(registry);
    helper::register(registry);
    registry.register_helper("goCall", Box::new(strings::Call));
    truth::register(registry);
    template::register(registry);
}
