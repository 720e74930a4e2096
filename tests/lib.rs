//! Helpers shared by the integration tests: where `ledgerctl` is, temporary stores, a small
//! seeded random source whose seed is printed so a failure can be replayed.

use std::path::PathBuf;
use std::process::Command;

/// The `ledgerctl` binary of this build: `LEDGERCTL` when set, else beside the test binary's
/// `deps/` folder (cargo puts both in the same profile folder). `.ci/run` builds it first.
pub fn ledgerctl_path() -> PathBuf {
    if let Some(path) = std::env::var_os("LEDGERCTL") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in <target>/<profile>/deps");
    let path = profile_dir.join("ledgerctl");
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build --workspace --bins, same profile as the tests)",
        path.display()
    );
    path
}

/// A `ledgerctl` command with `--data DIR`.
pub fn ledgerctl(data: &std::path::Path) -> Command {
    let mut command = Command::new(ledgerctl_path());
    command.arg("--data").arg(data);
    command.env_remove("LEDGER_DATA");
    command
}

/// Runs `ledgerctl --data DIR ARGS…` with `stdin` as its standard input and waits for it.
pub fn run_ledgerctl(data: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = ledgerctl(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ledgerctl");
    // A verb that does not read stdin may exit first; a broken pipe then is not a failure.
    let _ = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes());
    child.wait_with_output().expect("wait for ledgerctl")
}

/// The positions of a stream's events as `read_stream` returns them (through the stream index).
pub fn stream_positions(ledger: &ledger::Ledger, stream: &str) -> Vec<u64> {
    ledger
        .read_stream(stream, 1, usize::MAX)
        .unwrap()
        .iter()
        .map(|event| event.position)
        .collect()
}

/// Copies a directory tree (a committed fixture store) so a test can open it: opening recovers
/// the journal, which writes.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for entry in std::fs::read_dir(from).expect("read the fixture directory") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy a fixture file");
        }
    }
}

/// A xorshift generator: enough randomness for kill timings and load shapes.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `env_var` when set, else from the clock; prints the seed either way.
    pub fn from_env(env_var: &str) -> Rng {
        let seed = std::env::var(env_var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("seed {env_var}={seed}");
        Rng(seed | 1)
    }

    /// The next value in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound.max(1)
    }
}

/// A real nats-server for one test: JetStream on, loopback, a free port (`-p -1`, read back from
/// `--ports_file_dir`), its own store directory. Killed on drop; can be restarted on the same
/// port and SIGKILLed. `NATS_SERVER` names the binary (tools/test.sh installs it), else PATH.
pub struct NatsServer {
    dir: tempfile::TempDir,
    config: Option<PathBuf>,
    child: Option<std::process::Child>,
    port: u16,
}

impl NatsServer {
    /// Starts a server with JetStream and no authentication.
    pub fn start() -> NatsServer {
        Self::start_with_config(None)
    }

    /// Starts a server with a configuration file's text (users, permissions…); the port and
    /// store directory still come from the command line.
    pub fn start_with_config(config: Option<&str>) -> NatsServer {
        let dir = tempfile::tempdir().expect("a temp dir");
        let config = config.map(|text| {
            let path = dir.path().join("server.conf");
            std::fs::write(&path, text).expect("write the config");
            path
        });
        let mut server = NatsServer {
            dir,
            config,
            child: None,
            port: 0,
        };
        server.spawn(None);
        server
    }

    fn spawn(&mut self, port: Option<u16>) {
        let binary = std::env::var_os("NATS_SERVER").unwrap_or_else(|| "nats-server".into());
        let ports = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports);
        std::fs::create_dir_all(&ports).expect("ports dir");
        let mut command = Command::new(&binary);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        command
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(port.map_or("-1".to_owned(), |p| p.to_string()))
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .arg("--ports_file_dir")
            .arg(&ports)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("server.log")).expect("log"));
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "starting {} failed: {e} (tools/test.sh installs nats-server)",
                PathBuf::from(&binary).display()
            )
        });
        let started = std::time::Instant::now();
        let port = loop {
            let file = std::fs::read_dir(&ports)
                .ok()
                .and_then(|mut entries| entries.next())
                .and_then(|entry| entry.ok())
                .and_then(|entry| std::fs::read_to_string(entry.path()).ok());
            if let Some(port) = file
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|json| json["nats"][0].as_str().map(str::to_owned))
                .and_then(|url| url.rsplit(':').next()?.parse::<u16>().ok())
            {
                break port;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "nats-server did not start: {}",
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        self.port = port;
        self.child = Some(child);
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the server (its store stays).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// SIGSTOPs the server (it keeps its sockets but answers nothing), or SIGCONTs it.
    pub fn pause(&self, paused: bool) {
        if let Some(child) = &self.child {
            Command::new("kill")
                .arg(if paused { "-STOP" } else { "-CONT" })
                .arg(child.id().to_string())
                .status()
                .expect("kill -STOP/-CONT");
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port;
        self.spawn(Some(port));
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback TCP port below the kernel's ephemeral range (32768 and up on Linux), so that
/// no outgoing connection of another test takes it while a killed node waits to be restarted
/// on it: from 20000 to 32767, one that binds now. Draws walk that range from a start random to
/// this process, so no two draws of one test run hand out the same port (two random draws did
/// once: a node's monitor and route ports, and the node could not start).
pub fn free_port() -> u16 {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    const FIRST: u64 = 20_000;
    const COUNT: u64 = 12_768;
    static START: OnceLock<u64> = OnceLock::new();
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| {
        let mut x = u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        x = (x ^ (x >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^ (x >> 29)
    });
    loop {
        let draw = DRAWS.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start.wrapping_add(draw)) % COUNT) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A plain HTTP/1.0 GET on loopback: the status code and the body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", port))?;
    socket.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(socket, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    socket.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_owned()))
}

/// Three nats-server nodes clustered on loopback, JetStream on every node with
/// `sync_interval: always` (unless a node is started without it), each with its HTTP monitoring
/// port. Pings every second, two missed: a frozen client (a SIGSTOPped writer) loses its
/// subscriptions within about 3 s, so requests stop going to it. Killed on drop; a node can be SIGKILLed and restarted with its store.
pub struct NatsCluster {
    dir: tempfile::TempDir,
    /// Per node: client, monitoring and route ports.
    ports: Vec<(u16, u16, u16)>,
    children: Vec<Option<std::process::Child>>,
}

impl NatsCluster {
    /// Starts three nodes, all fsyncing every write, and waits until JetStream is healthy on each.
    pub fn start() -> NatsCluster {
        Self::start_with_sync(&[true, true, true])
    }

    /// Starts one node per entry; `false`: that node keeps nats-server's default sync interval.
    pub fn start_with_sync(sync_always: &[bool]) -> NatsCluster {
        let dir = tempfile::tempdir().expect("a temp dir");
        let ports: Vec<(u16, u16, u16)> = sync_always
            .iter()
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, _, route)| format!("nats-route://127.0.0.1:{route}"))
            .collect();
        for (i, (&(client, http, route), &sync)) in ports.iter().zip(sync_always).enumerate() {
            let store = dir.path().join(format!("n{}", i + 1));
            let sync_line = if sync { "sync_interval: always" } else { "" };
            let config = format!(
                "server_name: n{n}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{http}\n\
                 max_payload: 8MB\nping_interval: \"1s\"\nping_max: 2\n\
                 jetstream {{ store_dir: \"{store}\", {sync_line} }}\n\
                 cluster {{ name: ledger, listen: 127.0.0.1:{route}, routes: [{routes}] }}\n",
                n = i + 1,
                store = store.display(),
                routes = routes.join(", "),
            );
            std::fs::write(dir.path().join(format!("n{}.conf", i + 1)), config).expect("config");
        }
        let mut cluster = NatsCluster {
            dir,
            children: ports.iter().map(|_| None).collect(),
            ports,
        };
        for node in 0..cluster.ports.len() {
            cluster.spawn(node);
        }
        for node in 0..cluster.ports.len() {
            cluster.wait_healthy(node);
        }
        cluster
    }

    fn spawn(&mut self, node: usize) {
        let binary = std::env::var_os("NATS_SERVER").unwrap_or_else(|| "nats-server".into());
        let log = self.dir.path().join(format!("n{}.log", node + 1));
        let child = Command::new(&binary)
            .arg("-c")
            .arg(self.dir.path().join(format!("n{}.conf", node + 1)))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting nats-server failed: {e} (tools/test.sh installs it)")
            });
        self.children[node] = Some(child);
    }

    /// Waits until the node answers `/healthz` with JetStream current (meta leader known).
    pub fn wait_healthy(&self, node: usize) {
        let started = std::time::Instant::now();
        loop {
            if let Ok((200, _)) = http_get(self.ports[node].1, "/healthz") {
                return;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "node n{} did not become healthy: {}",
                node + 1,
                std::fs::read_to_string(self.dir.path().join(format!("n{}.log", node + 1)))
                    .unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Every node's client URL, comma-separated (what `--nats` takes).
    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|(client, _, _)| format!("nats://127.0.0.1:{client}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// One node's client URL.
    pub fn url(&self, node: usize) -> String {
        format!("nats://127.0.0.1:{}", self.ports[node].0)
    }

    /// Every node's monitoring URL, comma-separated (what `--nats-monitor` takes).
    pub fn monitors(&self) -> String {
        self.ports
            .iter()
            .map(|(_, http, _)| format!("http://127.0.0.1:{http}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node named `n<k>` (as nats-server names it in stream info), 0-based.
    pub fn node_named(&self, name: &str) -> usize {
        name.trim_start_matches('n')
            .parse::<usize>()
            .expect("a node name")
            - 1
    }

    /// SIGKILLs one node (its store stays).
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.children[node].take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// SIGKILLs every node, starts them all again with their stores, and waits until each is
    /// healthy (a node alone has no quorum: they must come up together).
    pub fn restart_all(&mut self) {
        for node in 0..self.children.len() {
            self.kill(node);
        }
        for node in 0..self.children.len() {
            self.spawn(node);
        }
        for node in 0..self.children.len() {
            self.wait_healthy(node);
        }
    }

    /// Starts a killed node again with its store and waits until it is healthy.
    pub fn restart(&mut self, node: usize) {
        self.kill(node);
        self.spawn(node);
        self.wait_healthy(node);
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in 0..self.children.len() {
            self.kill(node);
        }
    }
}

/// A `ledgerctl serve` child process, SIGKILLed on drop unless stopped.
pub struct Serve {
    /// The process.
    pub child: std::process::Child,
    log: PathBuf,
}

impl Serve {
    /// Starts `ledgerctl --data DATA serve --nats URL --tick-seconds 0 EXTRA…` and waits until
    /// the service answers `$SRV.PING.ledger`.
    pub fn start(data: &std::path::Path, url: &str, extra: &[&str]) -> Serve {
        let log = data.with_extension("serve.log");
        let child = ledgerctl(data)
            .args(["serve", "--nats", url, "--tick-seconds", "0"])
            .args(extra)
            .env("LEDGER_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("serve log"))
            .spawn()
            .expect("start ledgerctl serve");
        let serve = Serve { child, log };
        serve.wait_until_serving();
        serve
    }

    fn wait_until_serving(&self) {
        let started = std::time::Instant::now();
        loop {
            if self.log().contains("serving (pid") {
                return;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "serve did not start: {}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Waits until its stderr contains `text` (true), or until `within` passed (false).
    pub fn wait_for_log(&self, text: &str, within: std::time::Duration) -> bool {
        let started = std::time::Instant::now();
        while started.elapsed() < within {
            if self.log().contains(text) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits; returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        let status = self.child.wait().expect("wait for serve");
        std::mem::forget(self);
        status
    }

    /// SIGSTOPs the process (it keeps its sockets and answers nothing), or SIGCONTs it.
    pub fn pause(&self, paused: bool) {
        Command::new("kill")
            .arg(if paused { "-STOP" } else { "-CONT" })
            .arg(self.child.id().to_string())
            .status()
            .expect("kill -STOP/-CONT");
    }

    /// SIGKILL, then waits.
    pub fn kill(mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
        std::mem::forget(self);
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A real PostgreSQL 15 server for one test: `initdb` on a temp dir, started as the
/// unprivileged `postgres` user (PostgreSQL refuses root) on a free loopback port with
/// `synchronous_commit = on` and `fsync = on`. Stopped (fast shutdown) on drop. `PG_BIN` names
/// the binaries' folder (tools/postgres.sh installs them), else Debian's.
pub struct Postgres {
    dir: tempfile::TempDir,
    child: std::process::Child,
    port: u16,
}

impl Postgres {
    /// Starts a fresh server and waits until it accepts connections.
    pub fn start() -> Postgres {
        let bin = PathBuf::from(
            std::env::var_os("PG_BIN").unwrap_or_else(|| "/usr/lib/postgresql/15/bin".into()),
        );
        let dir = tempfile::tempdir().expect("a temp dir");
        let data = dir.path().join("pgdata");
        let as_postgres = |program: &str| {
            let mut command = Command::new("runuser");
            command
                .args(["-u", "postgres", "--"])
                .arg(bin.join(program));
            command
        };
        Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("chown the temp dir to postgres");
        let status = as_postgres("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "ledger",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("initdb (tools/postgres.sh installs PostgreSQL 15)");
        assert!(status.success(), "initdb failed");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = as_postgres("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "synchronous_commit=on",
                "-c",
                "fsync=on",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("postgres.log")).expect("log"))
            .spawn()
            .expect("start postgres");
        let server = Postgres { dir, child, port };
        let started = std::time::Instant::now();
        while postgres::Client::connect(&server.url(), postgres::NoTls).is_err() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "postgres did not start: {}",
                std::fs::read_to_string(server.dir.path().join("postgres.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        server
    }

    /// A libpq connection string for the `ledger` superuser on the `postgres` database.
    pub fn url(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=ledger dbname=postgres",
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT to the postmaster (its pid is the first line of postmaster.pid; the child we
        // hold is runuser): a fast shutdown.
        let pid = std::fs::read_to_string(self.dir.path().join("pgdata/postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next().map(str::to_owned));
        if let Some(pid) = pid {
            Command::new("kill").args(["-INT", &pid]).status().ok();
        }
        self.child.wait().ok();
    }
}
