//! PostgreSQL 15 as a child: `initdb` on a directory of its own, started as the unprivileged
//! `postgres` user (PostgreSQL refuses root) on a free loopback port with
//! `synchronous_commit = on` and `fsync = on`. `PG_BIN` names the binaries' folder
//! (`tools/postgres.sh` installs them), else Debian's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

/// A running PostgreSQL, stopped (fast shutdown) on drop.
pub struct Postgres {
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    child: Child,
    port: u16,
}

impl Postgres {
    /// A fresh server in a temporary directory, with PostgreSQL's default connection limit.
    pub fn start() -> anyhow::Result<Postgres> {
        let temp = tempfile::Builder::new()
            .prefix("postgres-")
            .tempdir()
            .context("a temporary directory for PostgreSQL")?;
        let dir = temp.path().to_owned();
        let mut server = Self::start_at(&dir, None)?;
        server._temp = Some(temp);
        Ok(server)
    }

    /// A fresh server in `dir` (created), allowing `max_connections` when given.
    pub fn start_at(dir: &Path, max_connections: Option<usize>) -> anyhow::Result<Postgres> {
        let bin = PathBuf::from(
            std::env::var_os("PG_BIN").unwrap_or_else(|| "/usr/lib/postgresql/15/bin".into()),
        );
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let status = Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir)
            .status()
            .context("running chown")?;
        anyhow::ensure!(
            status.success(),
            "chown {} to postgres failed",
            dir.display()
        );
        let as_postgres = |program: &str| {
            let mut command = Command::new("runuser");
            command
                .args(["-u", "postgres", "--"])
                .arg(bin.join(program));
            command
        };
        let data = dir.join("pgdata");
        let status = as_postgres("initdb")
            .args(["-A", "trust", "-U", "ledger", "-E", "UTF8", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("initdb (source tools/postgres.sh installs PostgreSQL 15)")?;
        anyhow::ensure!(status.success(), "initdb failed");
        let port = crate::free_port();
        let mut settings = vec![
            "listen_addresses=127.0.0.1".to_owned(),
            "synchronous_commit=on".to_owned(),
            "fsync=on".to_owned(),
        ];
        if let Some(max_connections) = max_connections {
            settings.push(format!("max_connections={max_connections}"));
        }
        let log = dir.join("postgres.log");
        let child = as_postgres("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir)
            .args(settings.iter().flat_map(|setting| ["-c", setting]))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).context("the PostgreSQL log")?)
            .spawn()
            .context("starting postgres")?;
        let server = Postgres {
            dir: dir.to_owned(),
            _temp: None,
            child,
            port,
        };
        crate::wait_until(
            Duration::from_secs(30),
            Duration::from_millis(50),
            || {
                postgres::Client::connect(&server.url(), postgres::NoTls)
                    .ok()
                    .map(|_| ())
            },
            || {
                format!(
                    "postgres did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            },
        )?;
        Ok(server)
    }

    /// A libpq connection string for the `ledger` superuser on the `postgres` database.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=ledger dbname=postgres",
            self.port
        )
    }

    /// `SHOW server_version`.
    pub fn version(&self) -> anyhow::Result<String> {
        let mut client = postgres::Client::connect(&self.url(), postgres::NoTls)?;
        Ok(client.query_one("SHOW server_version", &[])?.get(0))
    }

    /// Stops the PostgreSQL that [`Postgres::start_at`] started in `dir`, from outside its
    /// handle (an interrupted benchmark): a fast shutdown, then up to 15 s for it to remove its
    /// pid file.
    pub fn stop_in(dir: &Path) {
        let data = dir.join("pgdata");
        if signal_postmaster(&data) {
            let _ = crate::wait_until(
                Duration::from_secs(15),
                Duration::from_millis(50),
                || (!data.join("postmaster.pid").exists()).then_some(()),
                String::new,
            );
        }
    }
}

/// Asks the PostgreSQL running on `data` (if any) for a fast shutdown: SIGINT to the postmaster,
/// whose pid is the first line of `postmaster.pid` (the child we hold is `runuser`). Returns
/// whether one was running.
fn signal_postmaster(data: &Path) -> bool {
    let pid = std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next().and_then(|pid| pid.parse().ok()));
    pid.is_some_and(|pid| crate::signal(pid, "INT").is_ok())
}

impl Drop for Postgres {
    fn drop(&mut self) {
        signal_postmaster(&self.dir.join("pgdata"));
        self.child.wait().ok();
    }
}
