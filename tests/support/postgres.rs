//! A scratch PostgreSQL cluster for OpenBao's database secrets engine:
//! `initdb` in a temporary directory, the server on a free loopback port,
//! password logins over TCP (so a credential in a volume is proven by
//! logging in with it), stopped and removed on drop.
//!
//! As root the cluster runs as the `postgres` user (PostgreSQL refuses to
//! run as root); otherwise as the user running the tests. The binaries are
//! found through `VCD_PG_BIN` (a directory holding `initdb`, `postgres`,
//! `psql`) or under `/usr/lib/postgresql/<version>/bin` (Debian's
//! `postgresql` package). [`Postgres::start`] returns `None` (after saying
//! so) when none is installed, and fails under `CI=true` instead.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, rand_suffix, wait_for};

/// The superuser's password, which OpenBao's connection uses.
pub const ADMIN_PASSWORD: &str = "pg-admin-secret";

/// The creation statement OpenBao runs for each credential.
pub const CREATION_STATEMENT: &str =
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';";

/// A running scratch cluster.
pub struct Postgres {
    child: Child,
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

/// The directory with PostgreSQL's server binaries, if installed.
pub fn postgres_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("VCD_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("postgres").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

/// The binaries, or `None` with a message (a failure under `CI=true`).
pub fn requires_postgres() -> Option<PathBuf> {
    let found = postgres_bin();
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "this test needs PostgreSQL (Debian's `postgresql` package, or VCD_PG_BIN) and CI=true forbids skipping it"
        );
        eprintln!("skipping: needs PostgreSQL (install Debian's `postgresql`, or set VCD_PG_BIN)");
    }
    found
}

impl Postgres {
    /// Initialises and starts a cluster; `None` when PostgreSQL is not
    /// installed (see [`requires_postgres`]).
    pub async fn start() -> Option<Self> {
        let bin = requires_postgres()?;
        let dir = std::env::temp_dir().join(format!("vcd-pg-{}", rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let owner = owner();
        if let Some((uid, gid)) = owner {
            nix::unistd::chown(&dir, Some(uid.into()), Some(gid.into())).unwrap();
        }
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, ADMIN_PASSWORD).unwrap();
        if let Some((uid, gid)) = owner {
            nix::unistd::chown(&pwfile, Some(uid.into()), Some(gid.into())).unwrap();
        }
        let output = as_owner(Command::new(bin.join("initdb")), owner)
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-U", "postgres", "-E", "UTF8", "--no-sync"])
            .args(["--auth-local=scram-sha-256", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let port = free_port();
        let log = std::fs::File::create(dir.join("postgres.log")).unwrap();
        let child = as_owner(Command::new(bin.join("postgres")), owner)
            .arg("-D")
            .arg(dir.join("data"))
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "shared_buffers=16MB", "-c", "max_connections=60"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let pg = Self {
            child,
            dir,
            bin,
            port,
        };
        wait_for(
            "PostgreSQL to accept logins",
            Duration::from_secs(20),
            || pg.admin_query("SELECT 1").is_ok(),
        )
        .await;
        Some(pg)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// OpenBao's `connection_url` for it (`{{username}}`/`{{password}}`
    /// filled in by the plugin from `username`/`password`).
    pub fn connection_url(&self) -> String {
        format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// Runs `sql` as the superuser; the rows, one line each (`psql -At`).
    pub fn admin_query(&self, sql: &str) -> Result<String, String> {
        self.query_as("postgres", ADMIN_PASSWORD, sql)
    }

    /// Runs `sql` logged in over TCP as `user` with `password`.
    pub fn query_as(&self, user: &str, password: &str, sql: &str) -> Result<String, String> {
        let output = Command::new(self.bin.join("psql"))
            .arg(format!(
                "host=127.0.0.1 port={} user={user} dbname=postgres connect_timeout=5",
                self.port
            ))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGPASSWORD", password)
            .env_remove("PGSERVICEFILE")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
        }
    }

    /// Whether `user` can log in with `password`.
    pub fn can_log_in(&self, user: &str, password: &str) -> bool {
        self.query_as(user, password, "SELECT 1").as_deref() == Ok("1")
    }

    /// The login roles OpenBao created (names starting `v-`).
    pub fn vault_roles(&self) -> Vec<String> {
        self.admin_query("SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-%' ORDER BY 1")
            .expect("query pg_roles")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Whether role `name` exists.
    pub fn role_exists(&self, name: &str) -> bool {
        self.vault_roles().iter().any(|r| r == name)
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// The data directory, e.g. to read its configuration.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// As root: the `postgres` user's ids (PostgreSQL refuses to run as root).
fn owner() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .expect("running as root needs the `postgres` user (Debian's postgresql package makes it)");
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

fn as_owner(mut command: Command, owner: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid).env("HOME", "/tmp");
    }
    command
}
