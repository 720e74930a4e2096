//! The NATS connection every verb and the service share: URL (a cluster's URLs
//! comma-separated), credentials, TLS; a CLI call fails fast, the service keeps reconnecting.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::limits::{CONNECT_WAIT_SECONDS, REQUEST_TIMEOUT};

/// Connection flags. Secrets come from flags or the environment; none is ever put in a subject
/// or a message.
///
/// In `--help` they stand under one heading; a verb's short help (`-h`) lists only `--nats`.
#[derive(clap::Args, Clone, Debug, Default)]
#[command(next_help_heading = "NATS connection (any verb; see --help)")]
pub struct NatsArgs {
    /// Talk to a `ledgerctl serve` through this NATS server instead of opening --data, e.g.
    /// nats://127.0.0.1:4222; a cluster's URLs comma-separated.
    #[arg(long, global = true, env = "NATS_URL")]
    pub nats: Option<String>,
    /// NATS user (with --nats-password).
    #[arg(
        long,
        global = true,
        hide_short_help = true,
        env = "NATS_USER",
        requires = "nats_password"
    )]
    pub nats_user: Option<String>,
    /// NATS password (with --nats-user).
    #[arg(
        long,
        global = true,
        hide_short_help = true,
        env = "NATS_PASSWORD",
        hide_env_values = true
    )]
    pub nats_password: Option<String>,
    /// NATS token.
    #[arg(
        long,
        global = true,
        hide_short_help = true,
        env = "NATS_TOKEN",
        hide_env_values = true
    )]
    pub nats_token: Option<String>,
    /// A NATS credentials file (JWT and nkey seed).
    #[arg(long, global = true, hide_short_help = true, env = "NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// A file holding an nkey seed (SU…).
    #[arg(long, global = true, hide_short_help = true, env = "NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,
    /// A PEM file of CA certificates to trust for TLS (implies TLS).
    #[arg(long, global = true, hide_short_help = true, env = "NATS_CA")]
    pub nats_ca: Option<PathBuf>,
    /// A client certificate (PEM) for mutual TLS, with --nats-key.
    #[arg(
        long,
        global = true,
        hide_short_help = true,
        env = "NATS_CERT",
        requires = "nats_key"
    )]
    pub nats_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, global = true, hide_short_help = true, env = "NATS_KEY")]
    pub nats_key: Option<PathBuf>,
    /// Seconds to wait for the service's answer to one request (default 30).
    #[arg(long, global = true, hide_short_help = true, env = "NATS_TIMEOUT")]
    pub nats_timeout: Option<u64>,
    /// The prefix of this connection's reply inboxes (default _INBOX): a server that gives each
    /// user inboxes of its own (tools/nats/users.conf: _INBOX_<user>) keeps one user from
    /// reading another's replies.
    #[arg(long, global = true, hide_short_help = true, env = "NATS_INBOX_PREFIX")]
    pub nats_inbox_prefix: Option<String>,
    /// serve: seconds to keep trying the first connection before giving up (default 30);
    /// once connected, it reconnects for as long as it runs.
    #[arg(long, global = true, hide_short_help = true, env = "NATS_CONNECT_WAIT")]
    pub nats_connect_wait: Option<u64>,
}

impl NatsArgs {
    /// The options every connection shares: name, timeout, credentials, TLS.
    async fn options(&self, name: &str) -> anyhow::Result<async_nats::ConnectOptions> {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .request_timeout(Some(
                self.nats_timeout
                    .map_or(REQUEST_TIMEOUT, Duration::from_secs),
            ));
        if let (Some(user), Some(password)) = (&self.nats_user, &self.nats_password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(prefix) = &self.nats_inbox_prefix {
            options = options.custom_inbox_prefix(prefix.clone());
        }
        if let Some(token) = &self.nats_token {
            options = options.token(token.clone());
        }
        if let Some(creds) = &self.nats_creds {
            options = options
                .credentials_file(creds)
                .await
                .with_context(|| format!("reading NATS credentials {}", creds.display()))?;
        }
        if let Some(path) = &self.nats_nkey {
            let seed = std::fs::read_to_string(path)
                .with_context(|| format!("reading the nkey seed {}", path.display()))?;
            options = options.nkey(seed.trim().to_owned());
        }
        if let Some(ca) = &self.nats_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.nats_cert, &self.nats_key) {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        Ok(options)
    }

    /// Connects with the given flags. With `reconnects` (the server) it keeps trying the first
    /// connection for `--nats-connect-wait` seconds, then gives up naming the URL; once
    /// connected it reconnects forever and counts each (re)connection there. Without (a CLI
    /// call) it fails fast.
    pub async fn connect(
        &self,
        name: &str,
        reconnects: Option<tokio::sync::watch::Sender<u64>>,
    ) -> anyhow::Result<async_nats::Client> {
        let url = self
            .nats
            .as_deref()
            .context("no NATS server given (--nats URL or NATS_URL)")?;
        // A cluster's URLs, comma-separated: the client fails over between them.
        let servers = url
            .split(',')
            .map(|one| one.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("--nats {url}: not a NATS URL (or a comma-separated list)"))?;
        let Some(reconnects) = reconnects else {
            // A permissions violation comes back as an asynchronous server error, not as a
            // reply: hand it to `request` so the user hears it at once, not after a timeout.
            let (refused, _) = REFUSALS.get_or_init(|| tokio::sync::watch::channel(None));
            let refused = refused.clone();
            let options = self
                .options(name)
                .await?
                .max_reconnects(Some(3))
                .connection_timeout(Duration::from_secs(5))
                .event_callback(move |event| {
                    let refused = refused.clone();
                    async move {
                        if let async_nats::Event::ServerError(error) = event {
                            refused.send_replace(Some(error.to_string()));
                        }
                    }
                });
            // The error's own text once (its source repeats it).
            return options
                .connect(servers)
                .await
                .map_err(|error| anyhow::anyhow!("cannot reach NATS at {url}: {error}"));
        };
        let wait = Duration::from_secs(self.nats_connect_wait.unwrap_or(CONNECT_WAIT_SECONDS));
        let deadline = tokio::time::Instant::now() + wait;
        let mut delay = Duration::from_millis(250);
        loop {
            let counter = reconnects.clone();
            let options = self
                .options(name)
                .await?
                .max_reconnects(None)
                .event_callback(move |event| {
                    let counter = counter.clone();
                    async move {
                        if matches!(event, async_nats::Event::Connected) {
                            counter.send_modify(|n| *n += 1);
                            tracing::info!(%event, "NATS connection");
                        } else {
                            tracing::warn!(%event, "NATS connection");
                        }
                    }
                });
            match options.connect(servers.clone()).await {
                Ok(client) => {
                    tracing::info!(url, "connected to NATS");
                    return Ok(client);
                }
                Err(error) if tokio::time::Instant::now() + delay < deadline => {
                    tracing::warn!(url, %error, "NATS not reachable yet; retrying");
                    // Backing off between attempts at the first connection.
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(error) => anyhow::bail!(
                    "cannot reach NATS at {url} after {} s (--nats-connect-wait): {error}",
                    wait.as_secs()
                ),
            }
        }
    }
}

/// Server errors the client heard (permissions violations), for `request`.
type Refusals = (
    tokio::sync::watch::Sender<Option<String>>,
    tokio::sync::watch::Receiver<Option<String>>,
);
static REFUSALS: std::sync::OnceLock<Refusals> = std::sync::OnceLock::new();

/// The server errors (permissions violations) a CLI connection hears, as they come: a
/// violation is an asynchronous server error, not a reply.
pub fn refusals() -> tokio::sync::watch::Receiver<Option<String>> {
    REFUSALS
        .get_or_init(|| tokio::sync::watch::channel(None))
        .1
        .clone()
}
