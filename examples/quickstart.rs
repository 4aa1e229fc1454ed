//! One-command quickstart: `cargo run --example quickstart`.
//!
//! Runs the walkthrough on this machine, without a cluster:
//!
//! 1. starts a Vault (a real `vault server -dev` if `vault` is on `PATH`,
//!    else `bao server -dev` if OpenBao's `bao` is, else the project's
//!    in-process Vault test double) and seeds it like the walkthrough;
//! 2. starts the driver in-process on a unix socket in a scratch folder;
//! 3. acts as kubelet: signs a service-account token for `default/vault-auth`
//!    and calls NodePublishVolume with the walkthrough's volume (a tmpfs
//!    when run as root, else a plain folder);
//! 4. serves the volume's folder over HTTP like the walkthrough's nginx;
//! 5. changes the password in Vault and shows the page change in place.
//!
//! Ctrl-C (or `--exit-after-update`) unpublishes the volume and removes
//! everything it created.

#[path = "quickstart/kubelet.rs"]
mod kubelet;
#[path = "quickstart/scratch.rs"]
mod scratch;
#[path = "quickstart/vault.rs"]
mod vault;
#[path = "quickstart/web.rs"]
mod web;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vault_csi_driver::config::{Config, LogFormat};

use crate::kubelet::Pod;
use crate::scratch::{Scratch, Storage};
use crate::vault::{DevServer, PASSWORD, SECRET_PATH, USERNAME, Vault};
use crate::web::Web;

/// The password the quickstart rotates to in step 5.
const NEW_PASSWORD: &str = "n3w-Pa55word!";
/// The volume's `staticSecretRefreshInterval`.
const REFRESH_INTERVAL: &str = "2s";
/// Number of numbered steps.
const STEPS: usize = 5;

/// The walkthrough's `index.html` template.
const INDEX_TEMPLATE: &str = r#"<html>
<body>
<p>Some secrets:</p>
{{#with (secret "secret/data/myapp/config")}}
<ul>
<li><pre>username: {{data.data.username}}</pre></li>
<li><pre>password: {{data.data.password}}</pre></li>
</ul>
{{/with}}
</body>
</html>
"#;

/// Set as soon as SIGINT/SIGTERM arrives, so an unfinished step says
/// "interrupted" rather than "failed".
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Runs Vault, the driver, a kubelet stand-in and a web server on this
/// machine, shows a secret rendered into a pod volume and updated in place,
/// then cleans up on Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "quickstart")]
struct Args {
    /// Stop and clean up right after the in-place change has been shown,
    /// instead of serving the page until Ctrl-C.
    #[arg(long)]
    exit_after_update: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Driver warnings go to stderr; `RUST_LOG=info` shows more. The
    // driver's warning about plain directories is said in step 3 instead,
    // and the test double's own warnings are noise here.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,vault_csi_driver::app=error,vault_double=error")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("quickstart: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(quickstart(&args))
}

/// Everything the quickstart created, in creation order, so cleanup can
/// undo exactly that however far setup got.
struct Stack {
    scratch: Scratch,
    vault: Option<Vault>,
    driver: Option<Driver>,
    published: Option<Published>,
    web: Option<Web>,
    ready: bool,
}

/// A volume NodePublishVolume was called for.
struct Published {
    pod: Pod,
    target: PathBuf,
}

async fn quickstart(args: &Args) -> ExitCode {
    let started = Instant::now();
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("quickstart: cannot watch Ctrl-C: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let scratch = match Scratch::create() {
        Ok(scratch) => scratch,
        Err(e) => {
            eprintln!("quickstart: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "vault-csi-driver quickstart: Vault, the CSI driver and a pod's volume, on this machine."
    );
    println!(
        "Scratch folder: {} (removed when the quickstart ends)",
        scratch.root.display()
    );
    println!();
    let mut stack = Stack {
        scratch,
        vault: None,
        driver: None,
        published: None,
        web: None,
        ready: false,
    };

    let outcome = tokio::select! {
        result = run(args, &mut stack, started) => result,
        () = signals.next() => Ok(()),
    };
    let interrupted = INTERRUPTED.load(Ordering::SeqCst);
    let mut code = match (&outcome, interrupted) {
        (Err(e), _) => {
            eprintln!("\nThe quickstart failed: {e:#}");
            ExitCode::FAILURE
        }
        (Ok(()), true) if !stack.ready => {
            println!("\nInterrupted during setup.");
            ExitCode::from(130)
        }
        (Ok(()), _) => ExitCode::SUCCESS,
    };

    // A second Ctrl-C during cleanup exits at once (after killing Vault).
    let vault_pid = stack.vault.as_ref().and_then(Vault::child_pid);
    let root = stack.scratch.root.clone();
    let force = tokio::spawn(async move {
        signals.next().await;
        eprintln!(
            "\nInterrupted again: exiting without finishing cleanup; remove {} yourself.",
            root.display()
        );
        if let Some(pid) = vault_pid.and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::process::exit(130);
    });
    if !stack.teardown().await {
        code = ExitCode::FAILURE;
    }
    force.abort();
    code
}

/// Step 1: a Vault dev server (or OpenBao's) if one is on the PATH, else
/// the test double, seeded as in the walkthrough.
async fn start_vault(stack: &mut Stack) -> anyhow::Result<()> {
    let step = Progress::step(1, "Starting Vault");
    if let Some((binary, flavor)) = vault::find_vault_binary() {
        stack.vault = Some(Vault::DevServer(Box::new(DevServer::spawn(
            &binary,
            flavor,
            &stack.scratch.root,
        )?)));
        if let Some(Vault::DevServer(dev)) = &mut stack.vault {
            dev.wait_healthy().await?;
            dev.seed().await?;
        }
    } else {
        stack.vault = Some(Vault::start_double().await);
    }
    let vault = stack.vault.as_ref().context("Vault was just started")?;
    step.done(&vault.describe());
    say(&format!(
        "Seeded as in the walkthrough: KV {SECRET_PATH} (username={USERNAME}, password={PASSWORD}), policy myapp-kv-ro, role \"example\" for default/vault-auth on auth mount \"{}\".",
        vault.auth_mount()
    ));

    Ok(())
}

/// Step 3's check: the target is what the driver said it would make (a
/// tmpfs as root, else a plain folder), described for the transcript.
fn check_storage(storage: &Storage, target: &std::path::Path) -> anyhow::Result<String> {
    let fs_type = scratch::fs_type_at(target);
    Ok(match storage {
        Storage::Tmpfs => {
            ensure!(
                fs_type.as_deref() == Some("tmpfs"),
                "expected a tmpfs at {}, found {fs_type:?}",
                target.display()
            );
            "tmpfs mounted by the driver, because this runs as root".to_owned()
        }
        Storage::PlainFolder { reason } => {
            ensure!(
                fs_type.is_none() && target.is_dir(),
                "expected a plain folder at {}, found mount {fs_type:?}",
                target.display()
            );
            format!("plain folder, {reason}")
        }
    })
}

/// Steps 1 to 5, then (unless `--exit-after-update`) waits for Ctrl-C.
async fn run(args: &Args, stack: &mut Stack, started: Instant) -> anyhow::Result<()> {
    start_vault(stack).await?;
    let vault = stack.vault.as_ref().context("Vault was just started")?;

    // 2. The driver.
    let step = Progress::step(2, "Starting the CSI driver");
    let storage = Storage::detect(&stack.scratch);
    let config = driver_config(&stack.scratch, &vault.addr(), storage.plain())?;
    let endpoint = config.endpoint.clone();
    let socket = stack.scratch.socket();
    stack.driver = Some(Driver::spawn(config, socket.clone()));
    if let Some(driver) = &mut stack.driver {
        driver.wait_ready().await?;
    }
    step.done(&format!("in-process, listening on {endpoint}"));

    // 3. Kubelet publishes the pod's volume.
    let step = Progress::step(3, "Publishing the pod's volume as kubelet would");
    let pod = Pod::walkthrough();
    let target = pod.prepare_target(&stack.scratch.kubelet_dir())?;
    let token = vault.sign_sa_token(&pod, "vault")?;
    let mut attributes = vec![
        ("roleName", "example"),
        ("template.index.html", INDEX_TEMPLATE),
        ("staticSecretRefreshInterval", REFRESH_INTERVAL),
    ];
    if vault.auth_mount() != "kubernetes" {
        attributes.push(("vaultAuthMountPath", vault.auth_mount()));
    }
    let request = pod.publish(&target, &token, &attributes)?;
    // Recorded first: NodeUnpublishVolume is safe even if publish fails.
    stack.published = Some(Published {
        pod: pod.clone(),
        target: target.clone(),
    });
    let mut node = kubelet::connect(&socket).await?;
    tokio::time::timeout(Duration::from_secs(30), node.node_publish_volume(request))
        .await
        .context("NodePublishVolume did not answer within 30 s")?
        .context("NodePublishVolume failed")?;
    let storage_text = check_storage(&storage, &target)?;
    step.done(&storage_text);
    say(&format!(
        "Signed a service-account JWT for {}/{} (audience \"vault\") and called NodePublishVolume; the driver logged in to Vault with it (auth/{}/login, role \"example\") and rendered index.html.",
        pod.namespace,
        pod.service_account,
        vault.auth_mount()
    ));
    say(&format!("Target path: {}", target.display()));

    // 4. Serve the folder like the walkthrough's nginx.
    let step = Progress::step(4, "Serving the volume's folder over HTTP");
    let web = stack.web.insert(Web::start(target.clone()).await?);
    let url = web.url.clone();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .context("cannot build an HTTP client")?;
    let page = fetch(&http, &url).await?;
    ensure!(
        page.contains(&format!("password: {PASSWORD}")),
        "the served page does not show the seeded password:\n{page}"
    );
    step.done(&url);
    stack.ready = true;
    say(&format!(
        "Setup took {}. The page at {url}:",
        elapsed(started.elapsed())
    ));
    print_page(&page);

    // 5. Rotate the password and watch the page change in place.
    let step = Progress::step(5, "Changing the password in Vault");
    vault.set_password(NEW_PASSWORD).await?;
    let changed = Instant::now();
    step.done(&format!("{SECRET_PATH} now has password={NEW_PASSWORD}"));
    let wait = Progress::begin(&format!(
        "      Waiting for the page to change in place (staticSecretRefreshInterval: {REFRESH_INTERVAL})"
    ));
    let page = wait_for_page(&http, &url, &format!("password: {NEW_PASSWORD}")).await?;
    wait.done(&format!("{} later", elapsed(changed.elapsed())));
    say(&format!("The same page at {url} now:"));
    print_page(&page);
    println!();

    if args.exit_after_update {
        println!("--exit-after-update: cleaning up now.");
        return Ok(());
    }
    println!("Open {url} in a browser. Press Ctrl-C to unpublish the volume and clean up.");
    std::future::pending::<()>().await;
    Ok(())
}

impl Stack {
    /// Undoes everything in reverse order and proves nothing is left.
    /// Returns whether every step succeeded.
    async fn teardown(mut self) -> bool {
        println!("\nCleaning up …");
        let mut clean = true;
        if let Some(web) = self.web.take() {
            let progress = Progress::begin("      Stopping the web server");
            clean &= progress.finish(web.stop().await);
        }
        if let Some(published) = self.published.take() {
            let progress = Progress::begin("      Unpublishing the volume (NodeUnpublishVolume)");
            let result = match &self.driver {
                Some(driver) => unpublish(&driver.socket, &published).await,
                None => Err(anyhow::anyhow!("the driver is not running")),
            };
            clean &= progress.finish(result);
        }
        if let Some(driver) = self.driver.take() {
            let progress = Progress::begin("      Stopping the driver");
            clean &= progress.finish(driver.stop().await);
        }
        if let Some(vault) = self.vault.take() {
            let progress = Progress::begin("      Stopping Vault");
            clean &= progress.finish(vault.stop().await);
        }
        let progress = Progress::begin("      Removing the scratch folder");
        let root = self.scratch.root.clone();
        let removed = self.scratch.remove().and_then(|detached| {
            if detached.is_empty() {
                Ok(())
            } else {
                bail!("had to detach leftover mounts: {detached:?}")
            }
        });
        clean &= progress.finish(removed);
        if clean {
            println!(
                "Nothing left behind: nothing mounted under {} and the folder is gone.",
                root.display()
            );
        } else {
            println!(
                "Cleanup was not complete; see above. Check {} and /proc/self/mountinfo.",
                root.display()
            );
        }
        clean
    }
}

/// NodeUnpublishVolume, then checks the target is gone.
async fn unpublish(socket: &std::path::Path, published: &Published) -> anyhow::Result<()> {
    let mut node = kubelet::connect(socket).await?;
    tokio::time::timeout(
        Duration::from_secs(15),
        node.node_unpublish_volume(published.pod.unpublish(&published.target)),
    )
    .await
    .context("NodeUnpublishVolume did not answer within 15 s")?
    .context("NodeUnpublishVolume failed")?;
    ensure!(
        scratch::fs_type_at(&published.target).is_none(),
        "{} is still mounted",
        published.target.display()
    );
    ensure!(
        !published.target.exists(),
        "{} still exists",
        published.target.display()
    );
    Ok(())
}

/// The driver's flags: defaults as the binary has them, with every
/// setting that matters here set explicitly (so the environment, e.g.
/// `VAULT_ADDR` or `VAULT_CACERT` for another Vault, does not leak in).
fn driver_config(scratch: &Scratch, vault_addr: &str, plain: bool) -> anyhow::Result<Config> {
    let mut config = Config::try_parse_from(["vault-csi-driver", "--node-id", "quickstart-node"])
        .context("the driver's default flags do not parse")?;
    config.endpoint = format!("unix://{}", scratch.socket().display());
    "quickstart-node".clone_into(&mut config.node_id);
    "vault.csi.driver".clone_into(&mut config.driver_name);
    config.vault_addr = Some(vault_addr.parse().context("Vault's address")?);
    config.allowed_vault_addrs = Vec::new();
    config.vault_ca_cert = None;
    config.state_dir = scratch.state_dir();
    config.kubelet_dir = scratch.kubelet_dir();
    config.metrics_addr = None;
    config.log_format = LogFormat::Text;
    config.static_secret_refresh_interval = Duration::from_secs(2);
    config.volume_size_bytes = 1024 * 1024;
    config.max_concurrent_refreshes = 64;
    config.insecure_plain_directories = plain;
    config.shutdown_timeout = Duration::from_secs(10);
    // The walkthrough's page changes every couple of seconds; a cluster
    // keeps the 30 s floor.
    config.fairness.min_refresh_interval = Duration::from_secs(1);
    Ok(config)
}

/// The driver running in-process on its unix socket.
struct Driver {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), vault_csi_driver::app::Error>>,
    socket: PathBuf,
}

impl Driver {
    fn spawn(config: Config, socket: PathBuf) -> Self {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(vault_csi_driver::app::run(config, shutdown.clone()));
        Self {
            shutdown,
            task,
            socket,
        }
    }

    /// Waits for the socket to appear (or the driver to fail).
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.socket.exists() {
            if self.task.is_finished() {
                let result = (&mut self.task).await.context("the driver task panicked")?;
                result.context("the driver stopped")?;
                bail!("the driver stopped before it listened");
            }
            ensure!(
                Instant::now() < deadline,
                "the driver did not create {} within 10 s",
                self.socket.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Graceful shutdown, as on SIGTERM.
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if self.task.is_finished() {
            // Already stopped (it failed earlier); its error was reported.
            return Ok(());
        }
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .context("the driver did not stop within 15 s")?
            .context("the driver task panicked")?
            .context("the driver stopped with an error")
    }
}

/// SIGINT (Ctrl-C) and SIGTERM.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("SIGTERM")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        INTERRUPTED.store(true, Ordering::SeqCst);
    }
}

/// One line of progress: `text …  ` now, `done (detail)` or `failed` later.
/// Dropped unfinished (an error or Ctrl-C), it says so.
struct Progress {
    finished: bool,
}

impl Progress {
    fn step(number: usize, text: &str) -> Self {
        Self::begin(&format!("[{number}/{STEPS}] {text}"))
    }

    fn begin(text: &str) -> Self {
        print!("{text} …  ");
        let _ = std::io::stdout().flush();
        Self { finished: false }
    }

    fn done(mut self, detail: &str) {
        self.finished = true;
        println!("done ({detail})");
    }

    /// `done` or `failed: <error>`; returns whether it succeeded.
    fn finish(mut self, result: anyhow::Result<()>) -> bool {
        self.finished = true;
        match result {
            Ok(()) => {
                println!("done");
                true
            }
            Err(e) => {
                println!("failed: {e:#}");
                false
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if !self.finished {
            if INTERRUPTED.load(Ordering::SeqCst) {
                println!("interrupted");
            } else {
                println!("failed");
            }
        }
    }
}

/// A duration as a reader wants it: milliseconds under a second (setup
/// against the in-process double takes tens of them, which `{:.1} s`
/// printed as "0.0 s"), else seconds to a tenth.
fn elapsed(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis().max(1))
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

/// An indented line of explanation under a step.
fn say(text: &str) {
    println!("      {text}");
}

/// The page, indented and marked so it stands apart from the narration.
fn print_page(page: &str) {
    let mut out = String::new();
    for line in page.lines() {
        let _ = writeln!(out, "      | {line}");
    }
    print!("{out}");
}

/// `GET url`, which must answer 200.
async fn fetch(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let response = http
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    ensure!(status.is_success(), "GET {url}: HTTP {status}");
    response.text().await.with_context(|| format!("GET {url}"))
}

/// Polls `url` until the page contains `needle` (at most 20 s).
async fn wait_for_page(http: &reqwest::Client, url: &str, needle: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = fetch(http, url).await?;
        if page.contains(needle) {
            return Ok(page);
        }
        ensure!(
            Instant::now() < deadline,
            "the page did not change within 20 s; it still reads:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `len` random bytes as hex.
fn random_hex(len: usize) -> String {
    let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
    hex(&bytes)
}
