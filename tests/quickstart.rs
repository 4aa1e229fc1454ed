//! The README's first command, end to end: runs the built `quickstart`
//! example with `--exit-after-update` and checks what it says, what it
//! mounts and serves while it runs (looked at independently, not taken from
//! its output), and that it leaves nothing behind.
//!
//! Runs as any user: as root the volume must be a real tmpfs, otherwise a
//! plain folder. Never skipped.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

/// What the walkthrough's page shows before and after the rotation.
const USERNAME_LINE: &str = "<li><pre>username: appuser</pre></li>";
const ORIGINAL_PASSWORD_LINE: &str = "<li><pre>password: suP3rsec(et!</pre></li>";
const CHANGED_PASSWORD_LINE: &str = "<li><pre>password: n3w-Pa55word!</pre></li>";

/// The whole run, setup to cleanup, must fit in this.
const RUN_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn quickstart_shows_the_in_place_update_and_leaves_nothing_behind() {
    let binary = example_binary();
    let root = nix::unistd::geteuid().is_root();
    let dev_server = dev_server_on_path();

    let mut child = Command::new(&binary)
        .arg("--exit-after-update")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();

    // Read the transcript as it comes, checking the live system at the
    // moments it describes. Problems are collected, not panicked on, so
    // the quickstart always gets to clean up.
    let mut watch = Watch::new(root);
    let run = async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            watch.observe(line).await;
        }
        child.wait().await.unwrap()
    };
    let status = if let Ok(status) = tokio::time::timeout(RUN_LIMIT, run).await {
        status
    } else {
        // Ask it to clean up as Ctrl-C would, then give up on it.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
        let _ = child.start_kill();
        let _ = child.wait().await;
        watch.fail(format!("did not finish within {RUN_LIMIT:?}"));
        child.wait().await.unwrap()
    };
    let stderr = stderr_task.await.unwrap();
    let lines = &watch.lines;
    let transcript = lines.join("\n");
    let context = format!("\n--- stdout ---\n{transcript}\n--- stderr ---\n{stderr}");

    // Whatever else failed, the scratch folder must be gone and unmounted;
    // checked before the test's own safety-net cleanup below.
    let scratch = watch.scratch.clone();
    let leftover = scratch.as_ref().map(|s| (s.exists(), mounts_under(s)));
    if let Some(scratch) = &scratch {
        force_remove(scratch);
    }

    assert!(watch.problems.is_empty(), "{:#?}{context}", watch.problems);
    assert!(status.success(), "exit status {status}{context}");
    assert!(!stderr.contains("panicked"), "{context}");

    // Nothing left behind: checked on the system, not taken from the output.
    let scratch = scratch.expect("a `Scratch folder:` line");
    let (existed_after, mounted_after) = leftover.unwrap();
    assert!(
        mounted_after.is_empty(),
        "still mounted after the run: {mounted_after:?}{context}"
    );
    assert!(
        !existed_after,
        "{} still exists after the run{context}",
        scratch.display()
    );

    assert_setup_lines(lines, dev_server, root, &context);

    // The URL it printed, served the page while it ran.
    let url = watch.url.as_deref().expect("a [4/5] line with the URL");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}{context}");
    assert!(watch.served, "the page was fetched from {url}{context}");
    assert!(
        watch.volume_checked,
        "the volume was inspected while published{context}"
    );

    assert_rotation_in_order(lines, &context);

    // Cleanup as narrated: unpublished, and the summary names the folder.
    let unpublished = find(lines, "NodeUnpublishVolume", &context);
    assert!(unpublished.ends_with("done"), "{unpublished}{context}");
    let summary = find(lines, "Nothing left behind", &context);
    assert!(
        summary.contains(&scratch.display().to_string()),
        "{summary}{context}"
    );
}

/// The Vault and the storage the transcript says it used, and the setup
/// time it reports (the real one, not a rounded-down zero).
fn assert_setup_lines(lines: &[String], dev_server: Option<&str>, root: bool, context: &str) {
    // Which Vault and which storage it said it used.
    let vault_line = find(lines, "[1/5]", context);
    let expected_vault = match dev_server {
        Some("vault") => "done (vault server -dev at http://127.0.0.1:",
        Some(_) => "done (bao server -dev at http://127.0.0.1:",
        None => "done (Vault test double at http://127.0.0.1:",
    };
    assert!(vault_line.contains(expected_vault), "{vault_line}{context}");
    if dev_server == Some("bao") {
        assert!(vault_line.contains(", OpenBao 2."), "{vault_line}{context}");
    }

    // The setup time it reports is the real one, not a rounded-down zero.
    let setup = find(lines, "Setup took ", context);
    let figure = between(setup, "Setup took ", ". The page").unwrap_or_default();
    let reported = figure
        .strip_suffix(" ms")
        .and_then(|ms| ms.parse::<f64>().ok())
        .map(|ms| ms / 1000.0)
        .or_else(|| figure.strip_suffix(" s").and_then(|s| s.parse().ok()));
    assert!(
        reported.is_some_and(|secs| secs > 0.0 && secs < RUN_LIMIT.as_secs_f64()),
        "{setup}{context}"
    );
    let storage_line = find(lines, "[3/5]", context);
    let expected_storage = if root {
        "done (tmpfs"
    } else {
        "done (plain folder"
    };
    assert!(
        storage_line.contains(expected_storage),
        "{storage_line}{context}"
    );
}

/// The page before and after the rotation, in that order.
fn assert_rotation_in_order(lines: &[String], context: &str) {
    let username = position(lines, USERNAME_LINE, context);
    let original = position(lines, ORIGINAL_PASSWORD_LINE, context);
    let rotated = position(lines, "[5/5] Changing the password in Vault", context);
    let changed = position(lines, CHANGED_PASSWORD_LINE, context);
    assert!(
        username < rotated && original < rotated && rotated < changed,
        "expected the original page, then the change, then the new page{context}"
    );
    let waited = find(lines, "Waiting for the page to change in place", context);
    assert!(waited.contains("done ("), "{waited}{context}");
}

/// Checks the live system at the moments the transcript describes.
struct Watch {
    root: bool,
    lines: Vec<String>,
    problems: Vec<String>,
    scratch: Option<PathBuf>,
    url: Option<String>,
    volume_checked: bool,
    served: bool,
}

impl Watch {
    fn new(root: bool) -> Self {
        Self {
            root,
            lines: Vec::new(),
            problems: Vec::new(),
            scratch: None,
            url: None,
            volume_checked: false,
            served: false,
        }
    }

    fn fail(&mut self, problem: String) {
        self.problems.push(problem);
    }

    async fn observe(&mut self, line: String) {
        if let Some(rest) = line.strip_prefix("Scratch folder: ") {
            let path = PathBuf::from(rest.split(" (").next().unwrap_or(rest));
            if !path.starts_with(std::env::temp_dir()) {
                self.fail(format!(
                    "scratch folder {} is not under temp_dir",
                    path.display()
                ));
            }
            if !path.is_dir() {
                self.fail(format!("scratch folder {} does not exist", path.display()));
            }
            self.scratch = Some(path);
        } else if let Some(rest) = line.trim_start().strip_prefix("Target path: ") {
            self.check_volume(Path::new(rest));
        } else if line.starts_with("[4/5]") {
            match between(&line, "done (", ")") {
                Some(url) => {
                    self.url = Some(url.to_owned());
                    self.check_server(url).await;
                }
                None => self.fail(format!("no URL in {line:?}")),
            }
        }
        self.lines.push(line);
    }

    /// While published: a tmpfs mount (root) or a plain folder, under the
    /// scratch folder, holding the rendered page.
    fn check_volume(&mut self, target: &Path) {
        self.volume_checked = true;
        if !self.scratch.as_ref().is_some_and(|s| target.starts_with(s)) {
            self.fail(format!(
                "target {} is not in the scratch folder",
                target.display()
            ));
        }
        let fs_type = fs_type_at(target);
        if self.root && fs_type.as_deref() != Some("tmpfs") {
            self.fail(format!(
                "running as root, {} should be a tmpfs mount, mountinfo says {fs_type:?}",
                target.display()
            ));
        }
        if !self.root && (fs_type.is_some() || !target.is_dir()) {
            self.fail(format!(
                "unprivileged, {} should be a plain folder, mountinfo says {fs_type:?}",
                target.display()
            ));
        }
        match std::fs::read_to_string(target.join("index.html")) {
            Ok(page) if page.contains(USERNAME_LINE) && page.contains(ORIGINAL_PASSWORD_LINE) => {}
            Ok(page) => self.fail(format!(
                "index.html does not show the seeded secret:\n{page}"
            )),
            Err(e) => self.fail(format!(
                "cannot read index.html in {}: {e}",
                target.display()
            )),
        }
    }

    /// The printed URL serves the page, and a `..` path is refused.
    async fn check_server(&mut self, url: &str) {
        let Some(addr) = url
            .strip_prefix("http://")
            .and_then(|rest| rest.strip_suffix('/'))
        else {
            self.fail(format!("unexpected URL {url}"));
            return;
        };
        match http_get(addr, "/").await {
            Ok((200, body)) if body.contains(USERNAME_LINE) => self.served = true,
            Ok((status, body)) => self.fail(format!("GET {url}: {status}\n{body}")),
            Err(e) => self.fail(format!("GET {url}: {e}")),
        }
        match http_get(addr, "/../state/").await {
            Ok((400, _)) => {}
            Ok((status, body)) => self.fail(format!(
                "GET /../state/ should be refused with 400, got {status}\n{body}"
            )),
            Err(e) => self.fail(format!("GET /../state/: {e}")),
        }
    }
}

/// A raw HTTP/1.1 GET (no client-side path normalisation), returning the
/// status code and body.
async fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// `target/debug/examples/quickstart`, next to this test's `deps/` folder,
/// checked to be newer than the sources it is built from.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps/");
    let binary = profile_dir.join("examples/quickstart");
    let built = std::fs::metadata(&binary).and_then(|m| m.modified());
    let Ok(built) = built else {
        panic!(
            "{} is missing: run `cargo build --examples` first (a plain `cargo test` builds it; `cargo test --test quickstart` alone does not)",
            binary.display()
        );
    };
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in ["examples", "src", "vault-double/src"] {
        if let Some((newest, at)) = newest_file(&manifest_dir.join(dir)) {
            assert!(
                at <= built,
                "{} is older than {}: run `cargo build --examples` first",
                binary.display(),
                newest.display()
            );
        }
    }
    binary
}

fn newest_file(dir: &Path) -> Option<(PathBuf, SystemTime)> {
    let mut newest: Option<(PathBuf, SystemTime)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            newest_file(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (path, t))
        };
        if let Some((p, t)) = candidate
            && newest.as_ref().is_none_or(|(_, n)| t > *n)
        {
            newest = Some((p, t));
        }
    }
    newest
}

/// Which dev server the quickstart will find on `PATH` (`vault` first,
/// then OpenBao's `bao`) and run instead of the double.
fn dev_server_on_path() -> Option<&'static str> {
    let path = std::env::var_os("PATH")?;
    ["vault", "bao"].into_iter().find(|name| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(name)).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
    })
}

/// The first line containing `needle`.
fn find<'a>(lines: &'a [String], needle: &str, context: &str) -> &'a str {
    &lines[position(lines, needle, context)]
}

/// Index of the first line containing `needle`.
fn position(lines: &[String], needle: &str, context: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line contains {needle:?}{context}"))
}

/// The text between the first `start` and the last `end` after it.
fn between<'a>(line: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = line.find(start)? + start.len();
    let to = line.rfind(end)?;
    (to > from).then(|| &line[from..to])
}

/// Mount points at or below `root`, from `/proc/self/mountinfo`.
fn mounts_under(root: &Path) -> Vec<PathBuf> {
    mountinfo()
        .into_iter()
        .map(|(mount, _)| mount)
        .filter(|mount| mount.starts_with(root))
        .collect()
}

/// The filesystem type of the topmost mount exactly at `path`.
fn fs_type_at(path: &Path) -> Option<String> {
    mountinfo()
        .into_iter()
        .rev()
        .find(|(mount, _)| mount == path)
        .map(|(_, fs_type)| fs_type)
}

/// (mount point, filesystem type) of every mount, in mount order.
fn mountinfo() -> Vec<(PathBuf, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            Some((
                PathBuf::from(unescape(fields.get(4)?)),
                (*fields.get(dash + 1)?).to_owned(),
            ))
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let mut out = Vec::new();
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let octal = (bytes[i] == b'\\')
            .then(|| bytes.get(i + 1..i + 4))
            .flatten()
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        if let Some(byte) = octal {
            out.push(byte);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The test's own safety net after a failed run: detach and delete.
fn force_remove(scratch: &Path) {
    for mount in mounts_under(scratch).into_iter().rev() {
        let _ = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(scratch);
}
