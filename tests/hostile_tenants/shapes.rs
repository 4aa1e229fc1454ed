//! The generative test's attack shapes, drawn from a seed, and the run of
//! one seed: three hostile tenants attacking at once while a good tenant
//! publishes, unpublishes and keeps one refreshing volume.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::time::Instant;
use vault_csi_driver::render::{MAX_TAGS_PER_TEMPLATE, MAX_TEMPLATE_BYTES, MAX_VOLUME_UNITS};

use super::support::{self, Pod};
use super::{ATTACK_TIME, CALL_BOUND, GOOD_TENANT_BOUND, Tenant, World, timed_publish};

/// One attack: what a hostile tenant writes to Vault and puts in its pod
/// spec. Sizes are drawn up to (and past) the driver's limits.
#[derive(Debug, Clone)]
pub enum Shape {
    /// Templates dense with subexpressions inside `{{#if false}}`: to the
    /// volume's unit limit (they compile), or to 64 KiB (refused); with an
    /// unknown role, the publish fails after the compile.
    Dense {
        files: usize,
        within_limits: bool,
        bad_role: bool,
    },
    /// `pkiCert` over a KV value of `lines` `-----BEGIN A-----` lines.
    PemBomb { lines: usize },
    /// `count` KV secrets of `bytes` each in one template, rendered or
    /// only fetched.
    BigSecrets {
        count: usize,
        bytes: usize,
        fill: char,
        render: bool,
    },
    /// An ignored attribute key holding `bytes` of `fill`.
    Pad { bytes: usize, fill: char },
    /// `keys` ignored attribute keys.
    ManyKeys { keys: usize },
    /// A KV value of `quotes` `"` characters, kept for re-rendering.
    Quotes { quotes: usize, render: bool },
    /// `files` files each `depth` directories deep.
    DeepPaths { files: usize, depth: usize },
    /// `files` files of `bytes` each.
    ManyFiles { files: usize, bytes: usize },
    /// `files` files each rendering a `bytes` KV value.
    HugeOutput { files: usize, bytes: usize },
    /// A KV object of `keys` keys rendered by `toJsonPretty` or a loop.
    WideJson { keys: usize, pretty: bool },
    /// Arrays nested `depth` deep.
    DeepJson { depth: usize },
    /// Every control character, `bytes` of them, rendered raw and as JSON.
    Controls { bytes: usize },
    /// A volume refreshing every second while its KV value flips between
    /// tiny and `max_bytes`.
    Churn { max_bytes: usize },
    /// Helpers over adversarial data (nested loops, JSON in loops,
    /// repeats, base64 and JSON chains, regexes).
    HelperBomb { kind: usize },
    /// The tenant's secret fed to whatever can quote it in an error.
    SecretInError { kind: usize },
}

const HELPER_BOMBS: usize = 6;
const SECRET_ERRORS: usize = 9;

impl Shape {
    pub fn draw(rng: &mut StdRng) -> Self {
        let fills = ['x', '"', '\u{1}', 'é', '\\'];
        let fill = fills[rng.random_range(0..fills.len())];
        match rng.random_range(0..15) {
            0 => Self::Dense {
                files: rng.random_range(1..=20),
                within_limits: rng.random_bool(0.7),
                bad_role: rng.random_bool(0.4),
            },
            1 => Self::PemBomb {
                lines: rng.random_range(1_000..=50_000),
            },
            2 => Self::BigSecrets {
                count: rng.random_range(1..=32),
                bytes: rng.random_range(10_000..=1_000_000),
                fill,
                render: rng.random_bool(0.5),
            },
            3 => Self::Pad {
                bytes: rng.random_range(1_000..=1_400_000),
                fill,
            },
            4 => Self::ManyKeys {
                keys: rng.random_range(100..=60_000),
            },
            5 => Self::Quotes {
                quotes: rng.random_range(10_000..=480_000),
                render: rng.random_bool(0.5),
            },
            6 => Self::DeepPaths {
                files: rng.random_range(1..=64),
                depth: rng.random_range(50..=2_000),
            },
            7 => Self::ManyFiles {
                files: rng.random_range(16..=64),
                bytes: rng.random_range(100..=9_000),
            },
            8 => Self::HugeOutput {
                files: rng.random_range(1..=8),
                bytes: rng.random_range(100_000..=950_000),
            },
            9 => Self::WideJson {
                keys: rng.random_range(1_000..=100_000),
                pretty: rng.random_bool(0.5),
            },
            10 => Self::DeepJson {
                depth: rng.random_range(64..=1_000),
            },
            11 => Self::Controls {
                bytes: rng.random_range(1_000..=300_000),
            },
            12 => Self::Churn {
                max_bytes: rng.random_range(10_000..=900_000),
            },
            13 => Self::HelperBomb {
                kind: rng.random_range(0..HELPER_BOMBS),
            },
            _ => Self::SecretInError {
                kind: rng.random_range(0..SECRET_ERRORS),
            },
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Dense { .. } => "dense",
            Self::PemBomb { .. } => "pem",
            Self::BigSecrets { .. } => "big",
            Self::Pad { .. } => "pad",
            Self::ManyKeys { .. } => "keys",
            Self::Quotes { .. } => "quotes",
            Self::DeepPaths { .. } => "deep",
            Self::ManyFiles { .. } => "files",
            Self::HugeOutput { .. } => "output",
            Self::WideJson { .. } => "wide",
            Self::DeepJson { .. } => "nested",
            Self::Controls { .. } => "controls",
            Self::Churn { .. } => "churn",
            Self::HelperBomb { .. } => "helpers",
            Self::SecretInError { .. } => "leak",
        }
    }

    /// Writes the shape's Vault data and returns the volume's attributes.
    #[allow(clippy::too_many_lines)] // one arm per shape, each short
    pub fn prepare(
        &self,
        world: &World,
        tenant: &Tenant,
        rng: &mut StdRng,
    ) -> Vec<(String, String)> {
        let mut attributes = vec![tenant.role()];
        let mut templates = Vec::new();
        let mut template = |name: &str, text: String| {
            templates.push((format!("template.{name}"), text));
        };
        match *self {
            Self::Dense {
                files,
                within_limits,
                bad_role,
            } => {
                let salt = rng.random_range(0..u32::MAX);
                for f in 0..files {
                    let units = if within_limits {
                        (MAX_VOLUME_UNITS / files as u64).saturating_sub(64)
                    } else {
                        u64::MAX
                    };
                    template(&format!("f{f}"), dense(&format!("a{salt}x{f}"), units));
                }
                if bad_role {
                    "no-such-role".clone_into(&mut attributes[0].1);
                }
            }
            Self::PemBomb { lines } => {
                let pem = format!("{}-----END A-----", "-----BEGIN A-----\n".repeat(lines));
                tenant.put(world, "pem", json!({ "certificate": pem }));
                template(
                    "cert",
                    format!(
                        r#"{{{{#with (pkiCert (lookup (secret "{}") "data"))}}}}{{{{Cert}}}}{{{{/with}}}}"#,
                        tenant.path("pem")
                    ),
                );
            }
            Self::BigSecrets {
                count,
                bytes,
                fill,
                render,
            } => {
                let blob = fill_to(fill, bytes);
                let mut text = String::new();
                for i in 0..count {
                    tenant.put(world, &format!("big{i}"), json!({ "blob": blob }));
                    let body = if render { "{{data.data.blob}}" } else { "" };
                    let _ = write!(text, "{}", with(&tenant.path(&format!("big{i}")), body));
                }
                template("big", text);
            }
            Self::Pad { bytes, fill } => {
                attributes.push((
                    "csi.storage.k8s.io/x-pad".to_owned(),
                    std::iter::repeat_n(fill, bytes / fill.len_utf8()).collect(),
                ));
                template("f", with(&tenant.path("config"), "{{data.data.username}}"));
            }
            Self::ManyKeys { keys } => {
                for i in 0..keys {
                    attributes.push((format!("csi.storage.k8s.io/x-{i}"), "v".to_owned()));
                }
                template("f", with(&tenant.path("config"), "{{data.data.username}}"));
            }
            Self::Quotes { quotes, render } => {
                tenant.put(world, "quotes", json!({ "q": "\"".repeat(quotes) }));
                let body = if render { "{{data.data.q}}" } else { "ok" };
                template("q", with(&tenant.path("quotes"), body));
            }
            Self::DeepPaths { files, depth } => {
                for f in 0..files {
                    let mut path = format!("d{f}/");
                    let depth = depth.min((4_000 - path.len()) / 2);
                    path.push_str(&"a/".repeat(depth));
                    path.push('f');
                    template(&path, "x".to_owned());
                }
            }
            Self::ManyFiles { files, bytes } => {
                for f in 0..files {
                    template(&format!("f{f}"), "y".repeat(bytes));
                }
            }
            Self::HugeOutput { files, bytes } => {
                tenant.put(world, "huge", json!({ "blob": "h".repeat(bytes) }));
                for f in 0..files {
                    template(
                        &format!("f{f}"),
                        with(&tenant.path("huge"), "{{data.data.blob}}"),
                    );
                }
            }
            Self::WideJson { keys, pretty } => {
                let object: serde_json::Map<String, Value> =
                    (0..keys).map(|i| (format!("k{i}"), json!(i))).collect();
                tenant.put(world, "wide", json!({ "o": object }));
                let body = if pretty {
                    "{{toJsonPretty data.data.o}}"
                } else {
                    "{{#each data.data.o}}{{@key}}={{this}}\n{{/each}}"
                };
                template("wide", with(&tenant.path("wide"), body));
            }
            Self::DeepJson { depth } => {
                let mut nested = json!("bottom");
                for _ in 0..depth {
                    nested = json!([nested]);
                }
                tenant.put(world, "nested", json!({ "n": nested }));
                template(
                    "nested",
                    with(&tenant.path("nested"), "{{toJson data.data.n}}"),
                );
            }
            Self::Controls { bytes } => {
                let controls: String = (0u8..32).map(char::from).cycle().take(bytes).collect();
                tenant.put(world, "controls", json!({ "c": controls }));
                template("raw", with(&tenant.path("controls"), "{{data.data.c}}"));
                template(
                    "json",
                    with(&tenant.path("controls"), "{{toJson data.data}}"),
                );
            }
            Self::Churn { .. } => {
                tenant.put(world, "churn", json!({ "blob": "c" }));
                attributes.push(("staticSecretRefreshInterval".to_owned(), "1s".to_owned()));
                template("churn", with(&tenant.path("churn"), "{{data.data.blob}}"));
            }
            Self::HelperBomb { kind } => {
                let list: Vec<u32> = (0..1_000).collect();
                tenant.put(
                    world,
                    "bomb",
                    json!({ "list": list, "blob": "\"<&>".repeat(100_000) }),
                );
                let body = match kind {
                    0 => "{{#each data.data.list}}{{#each ../data.data.list}}x{{/each}}{{/each}}",
                    1 => "{{#each data.data.list}}{{toJsonPretty ../data}}{{/each}}",
                    2 => r#"{{goCall "sprig_repeat" 1000000 data.data.password}}"#,
                    3 => {
                        "{{base64Encode (base64Encode (base64Encode (base64Encode data.data.blob)))}}"
                    }
                    4 => {
                        "{{toJson (toJson (toJson (toJson (toJson (toJson (toJson data.data.blob))))))}}"
                    }
                    _ => r#"{{goCall "regexMatch" "(a+)+$" data.data.blob}}"#,
                };
                template("bomb", with(&tenant.path("bomb"), body));
            }
            Self::SecretInError { kind } => {
                let body = match kind {
                    0 => "{{#with (secret data.data.password)}}{{data}}{{/with}}".to_owned(),
                    1 => r#"{{goCall "sprig_fail" data.data.password}}"#.to_owned(),
                    2 => r#"{{#with (secret "pki/issue/web" common_name=data.data.password ttl=data.data.password)}}{{data.certificate}}{{/with}}"#.to_owned(),
                    3 => "{{base64Decode data.data.password}}".to_owned(),
                    4 => "{{lookup data.data data.data.password}}".to_owned(),
                    5 => r#"{{goCall "sprig_mustFromJson" data.data.password}}"#.to_owned(),
                    6 => "{{#each data.data.password}}{{this}}{{/each}}".to_owned(),
                    7 => "{{goPrintf data.data.password}}".to_owned(),
                    _ => format!(
                        r#"{{{{#with (secret "{}" version=data.data.password)}}}}{{{{data}}}}{{{{/with}}}}"#,
                        tenant.path("config")
                    ),
                };
                template("leak", with(&tenant.path("config"), &body));
            }
        }
        attributes.extend(templates);
        attributes
    }
}

/// `{{#with (secret "path")}}body{{/with}}`.
fn with(path: &str, body: &str) -> String {
    format!(r#"{{{{#with (secret "{path}")}}}}{body}{{{{/with}}}}"#)
}

/// `bytes` bytes of `fill` as JSON will carry it: characters JSON escapes
/// count as their escape, so the Vault answer stays near `bytes`.
fn fill_to(fill: char, bytes: usize) -> String {
    let escaped = match fill {
        '"' | '\\' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    };
    std::iter::repeat_n(fill, bytes / escaped).collect()
}

/// The units of text that is all inside tags (as `render_memory.rs`
/// counts them): the bytes that are not part of a name.
fn units(text: &str) -> u64 {
    text.bytes()
        .filter(|&b| !(b.is_ascii_alphanumeric() || b"-_$:".contains(&b) || !b.is_ascii()))
        .count() as u64
}

/// Subexpression-dense tags named `name`, inside `{{#if false}}`: at most
/// `max_units` units (and the tag and byte limits), or, with `u64::MAX`,
/// to 64 KiB whatever the units (refused before parsing).
pub fn dense(name: &str, max_units: u64) -> String {
    let tag = format!(
        "{{{{{name} {}}}}}",
        format!("(b{name} c c c c c c c) ").repeat(8)
    );
    let by_bytes = (MAX_TEMPLATE_BYTES - 64) / tag.len();
    let n = if max_units == u64::MAX {
        by_bytes
    } else {
        usize::try_from(max_units / units(&tag))
            .unwrap()
            .min(MAX_TAGS_PER_TEMPLATE - 4)
            .min(by_bytes)
    };
    format!("{{{{#if false}}}}{}{{{{/if}}}}", tag.repeat(n.max(1)))
}

fn concurrency(rng: &mut StdRng) -> usize {
    match rng.random_range(0..10) {
        0..=5 => 1,
        6..=8 => rng.random_range(2..=4),
        _ => rng.random_range(5..=8),
    }
}

/// One hostile tenant: draws shapes until `until`, publishes each from
/// one to eight pods at once, keeps some volumes and unpublishes others.
/// Returns the volumes it still has.
async fn hostile(world: Arc<World>, tenant: Tenant, seed: u64, until: Instant) -> Vec<Pod> {
    let mut rng = StdRng::seed_from_u64(seed);
    let checks = world.checks();
    let socket = world.driver.socket.clone();
    let mut live: Vec<Pod> = Vec::new();
    let mut round = 0;
    while Instant::now() < until {
        let shape = Shape::draw(&mut rng);
        let attributes = shape.prepare(&world, &tenant, &mut rng);
        let pods: Vec<Pod> = (0..concurrency(&mut rng))
            .map(|i| tenant.pod(&format!("{}-{round}-{i}", shape.name())))
            .collect();
        let calls = pods.iter().enumerate().map(|(i, pod)| {
            let request = tenant.request(&world, pod, "v", &attributes);
            let what = format!("{} publish {round}.{i} of {shape:?}", tenant.namespace);
            let (checks, socket) = (Arc::clone(&checks), socket.clone());
            async move { timed_publish(&checks, &socket, &what, request, CALL_BOUND).await }
        });
        let outcomes = join_all(calls).await;
        for (pod, outcome) in pods.into_iter().zip(outcomes) {
            if outcome.is_ok() {
                live.push(pod);
            }
        }
        if let Shape::Churn { max_bytes } = shape {
            for flip in 0..12 {
                let bytes = if flip % 2 == 0 { max_bytes } else { 10 };
                tenant.put(&world, "churn", json!({ "blob": "c".repeat(bytes) }));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        while !live.is_empty() && (live.len() > 6 || rng.random_bool(0.3)) {
            let pod = live.swap_remove(rng.random_range(0..live.len()));
            world.unpublish(&pod, "v").await;
        }
        round += 1;
    }
    live
}

/// The well-behaved tenant: publishes a fresh pod's volume, reads its page
/// and unpublishes it, over and over, each call within
/// [`GOOD_TENANT_BOUND`]. Returns how many volumes it published.
async fn good(world: Arc<World>, tenant: Tenant, until: Instant) -> usize {
    let checks = world.checks();
    let socket = world.driver.socket.clone();
    let attributes = tenant.walkthrough_attributes();
    let mut published = 0;
    while Instant::now() < until {
        let pod = tenant.pod(&format!("good{published}"));
        let request = tenant.request(&world, &pod, "v", &attributes);
        let target = pod.target(&world.node, "v");
        let what = format!("good tenant's publish {published}");
        if timed_publish(&checks, &socket, &what, request, GOOD_TENANT_BOUND)
            .await
            .is_ok()
        {
            assert_eq!(
                std::fs::read_to_string(target.join("index.html")).unwrap_or_default(),
                support::expected_index("appuser", &tenant.password),
                "the good tenant's page"
            );
        }
        let mut client = world.client().await;
        let started = Instant::now();
        let result = client
            .node_unpublish_volume(pod.unpublish(&world.node, "v"))
            .await
            .map(drop);
        checks.call(
            &format!("good tenant's unpublish {published}"),
            &result,
            started.elapsed(),
            GOOD_TENANT_BOUND,
        );
        published += 1;
    }
    published
}

/// One seed: three hostile namespaces attack for [`ATTACK_TIME`] while the
/// good tenant works and keeps a volume refreshing every second; then
/// everything is unpublished, the refreshing volume must show a change
/// made after the attacks, every charge must come back, and
/// [`World::assert_isolated`] must hold. Returns what broke.
pub async fn run_seed(world: World, seed: u64) -> Vec<String> {
    let good_tenant = world.tenant("good");
    let steady = good_tenant.pod("steady");
    let mut steady_attributes = good_tenant.walkthrough_attributes();
    steady_attributes.push(("staticSecretRefreshInterval".to_owned(), "1s".to_owned()));
    let steady_target = support::publish_ok(
        world.client().await,
        good_tenant.request(&world, &steady, "v", &steady_attributes),
    )
    .await;
    let hostile_tenants: Vec<Tenant> = ["evil-a", "evil-b", "evil-c"]
        .iter()
        .map(|ns| world.tenant(ns))
        .collect();
    let monitor = world.monitor();
    let world = Arc::new(world);
    let until = Instant::now() + ATTACK_TIME;
    let attackers: Vec<_> = hostile_tenants
        .iter()
        .enumerate()
        .map(|(i, tenant)| {
            let seed = seed.wrapping_mul(1000).wrapping_add(i as u64);
            tokio::spawn(hostile(Arc::clone(&world), tenant.clone(), seed, until))
        })
        .collect();
    let good_calls = tokio::spawn(good(Arc::clone(&world), good_tenant.clone(), until))
        .await
        .unwrap();
    let mut left = Vec::new();
    for attacker in attackers {
        left.extend(attacker.await.unwrap());
    }
    for pod in &left {
        world.unpublish(pod, "v").await;
    }
    // Refreshes still reach the good tenant's volume after the attacks.
    good_tenant.put(
        &world,
        "config",
        json!({"username": format!("after-seed-{seed}"), "password": good_tenant.password}),
    );
    let expected = support::expected_index(&format!("after-seed-{seed}"), &good_tenant.password);
    let mut late = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(steady_target.join("index.html")).unwrap_or_default() != expected
    {
        if Instant::now() >= deadline {
            late.push(format!(
                "seed {seed}: the good tenant's volume (refreshed every second) did not show a change made after the attacks within 20 s"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    world.unpublish(&steady, "v").await;
    if let Err(e) = world.charges_back().await {
        late.push(format!("seed {seed}: {e}"));
    }
    // Memory comes back too: sample the idle driver for a while.
    tokio::time::sleep(Duration::from_secs(2)).await;
    monitor.stop().await;
    let Ok(mut world) = Arc::try_unwrap(world) else {
        panic!("the world is still shared");
    };
    let pods = world.node.kubelet_dir().join("pods");
    let left_mounted: Vec<String> = support::mounts_under(&pods)
        .into_iter()
        .filter(|m| std::path::Path::new(m) != pods)
        .collect();
    let mut broken = world
        .isolation_report(&format!("seed {seed} ({good_calls} good publishes)"))
        .await;
    if !left_mounted.is_empty() {
        broken.push(format!(
            "seed {seed}: volumes left mounted: {left_mounted:?}"
        ));
    }
    broken.extend(late);
    if good_calls == 0 {
        broken.push(format!("seed {seed}: the good tenant published nothing"));
    }
    broken
}
