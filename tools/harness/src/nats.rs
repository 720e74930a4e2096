//! nats-server children: one node (`NatsServer`) or three clustered on loopback (`NatsCluster`).
//! `NATS_SERVER` names the binary (`tools/nats-server.sh` installs it), else PATH.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::process::signal;

fn binary() -> std::ffi::OsString {
    std::env::var_os("NATS_SERVER").unwrap_or_else(|| "nats-server".into())
}

fn temp_dir_in(parent: Option<&Path>) -> anyhow::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    match parent {
        Some(parent) => {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
            builder.prefix("nats-").tempdir_in(parent)
        }
        None => builder.prefix("nats-").tempdir(),
    }
    .context("a temporary directory for nats-server")
}

fn spawn_error(error: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "starting {} failed: {error} (tools/nats-server.sh installs nats-server)",
        PathBuf::from(binary()).display()
    )
}

/// One nats-server with JetStream on loopback, on a free port (`-p -1`, read back from
/// `--ports_file_dir`), with its own store directory. Killed on drop; it can be SIGKILLed,
/// paused, restarted on the same port, and have its store removed.
pub struct NatsServer {
    dir: tempfile::TempDir,
    config: Option<PathBuf>,
    child: Option<Child>,
    port: u16,
}

impl NatsServer {
    /// Starts a server with JetStream and no authentication, in a temporary directory.
    pub fn start() -> anyhow::Result<NatsServer> {
        Self::start_in(None, None)
    }

    /// Starts a server with a configuration file's text (users, permissions…); the port and
    /// store directory still come from the command line.
    pub fn start_with_config(config: Option<&str>) -> anyhow::Result<NatsServer> {
        Self::start_in(None, config)
    }

    /// Starts a server in a new directory under `parent` (the system's temporary directory when
    /// `None`).
    pub fn start_in(parent: Option<&Path>, config: Option<&str>) -> anyhow::Result<NatsServer> {
        let dir = temp_dir_in(parent)?;
        let config = config
            .map(|text| {
                let path = dir.path().join("server.conf");
                std::fs::write(&path, text).map(|()| path)
            })
            .transpose()
            .context("writing the server's configuration")?;
        let mut server = NatsServer {
            dir,
            config,
            child: None,
            port: 0,
        };
        server.spawn(None)?;
        Ok(server)
    }

    fn spawn(&mut self, port: Option<u16>) -> anyhow::Result<()> {
        let ports = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports);
        std::fs::create_dir_all(&ports).context("the ports directory")?;
        let log = self.dir.path().join("server.log");
        let mut command = Command::new(binary());
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        command
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(port.map_or("-1".to_owned(), |p| p.to_string()))
            .arg("-sd")
            .arg(self.store())
            .arg("--ports_file_dir")
            .arg(&ports)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).context("the server log")?);
        let child = command.spawn().map_err(spawn_error)?;
        self.child = Some(child);
        self.port = crate::wait_until(
            Duration::from_secs(10),
            Duration::from_millis(5),
            || {
                let file = std::fs::read_dir(&ports).ok()?.next()?.ok()?;
                let text = std::fs::read_to_string(file.path()).ok()?;
                let json: serde_json::Value = serde_json::from_str(&text).ok()?;
                json["nats"][0].as_str()?.rsplit(':').next()?.parse().ok()
            },
            || {
                format!(
                    "nats-server did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            },
        )?;
        Ok(())
    }

    /// Its JetStream store directory.
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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
        if let Some(pid) = self.pid() {
            let _ = signal(pid, if paused { "STOP" } else { "CONT" });
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let port = self.port;
        self.spawn(Some(port))
    }

    /// SIGKILLs it, removes its whole store (every stream, bucket and consumer), and starts it
    /// again, empty, on the same port.
    pub fn restart_empty(&mut self) -> anyhow::Result<()> {
        self.kill();
        let store = self.store();
        if store.exists() {
            std::fs::remove_dir_all(&store)
                .with_context(|| format!("removing {}", store.display()))?;
        }
        let port = self.port;
        self.spawn(Some(port))
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
/// this process, so no two draws of one run hand out the same port (two random draws did once:
/// a node's monitor and route ports, and the node could not start).
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
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
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
/// port and `max_payload: 8MB`. Pings every second, two missed: a frozen client (a SIGSTOPped
/// writer) loses its subscriptions within about 3 s, so requests stop going to it. Killed on
/// drop; a node can be SIGKILLed and restarted with its store.
pub struct NatsCluster {
    dir: tempfile::TempDir,
    /// Per node: client, monitoring and route ports.
    ports: Vec<(u16, u16, u16)>,
    children: Vec<Option<Child>>,
}

impl NatsCluster {
    /// Starts three nodes, all fsyncing every write, and waits until JetStream is healthy on each.
    pub fn start() -> anyhow::Result<NatsCluster> {
        Self::start_in(None, &[true, true, true])
    }

    /// Starts one node per entry; `false`: that node keeps nats-server's default sync interval.
    pub fn start_with_sync(sync_always: &[bool]) -> anyhow::Result<NatsCluster> {
        Self::start_in(None, sync_always)
    }

    /// As `start_with_sync`, in a new directory under `parent` (the system's temporary
    /// directory when `None`).
    pub fn start_in(parent: Option<&Path>, sync_always: &[bool]) -> anyhow::Result<NatsCluster> {
        let dir = temp_dir_in(parent)?;
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
            std::fs::write(dir.path().join(format!("n{}.conf", i + 1)), config)
                .context("writing a node's configuration")?;
        }
        let mut cluster = NatsCluster {
            dir,
            children: ports.iter().map(|_| None).collect(),
            ports,
        };
        for node in 0..cluster.ports.len() {
            cluster.spawn(node)?;
        }
        for node in 0..cluster.ports.len() {
            cluster.wait_healthy(node)?;
        }
        Ok(cluster)
    }

    fn log(&self, node: usize) -> PathBuf {
        self.dir.path().join(format!("n{}.log", node + 1))
    }

    fn spawn(&mut self, node: usize) -> anyhow::Result<()> {
        let child = Command::new(binary())
            .arg("-c")
            .arg(self.dir.path().join(format!("n{}.conf", node + 1)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.log(node)).context("a node's log")?)
            .spawn()
            .map_err(spawn_error)?;
        self.children[node] = Some(child);
        Ok(())
    }

    /// Waits until the node answers `/healthz` with JetStream current (meta leader known).
    pub fn wait_healthy(&self, node: usize) -> anyhow::Result<()> {
        crate::wait_until(
            Duration::from_secs(30),
            Duration::from_millis(20),
            || matches!(http_get(self.ports[node].1, "/healthz"), Ok((200, _))).then_some(()),
            || {
                format!(
                    "node n{} did not become healthy: {}",
                    node + 1,
                    std::fs::read_to_string(self.log(node)).unwrap_or_default()
                )
            },
        )
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
    pub fn restart_all(&mut self) -> anyhow::Result<()> {
        for node in 0..self.children.len() {
            self.kill(node);
        }
        for node in 0..self.children.len() {
            self.spawn(node)?;
        }
        for node in 0..self.children.len() {
            self.wait_healthy(node)?;
        }
        Ok(())
    }

    /// Starts a killed node again with its store and waits until it is healthy.
    pub fn restart(&mut self, node: usize) -> anyhow::Result<()> {
        self.kill(node);
        self.spawn(node)?;
        self.wait_healthy(node)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in 0..self.children.len() {
            self.kill(node);
        }
    }
}
