//! `ledgerctl` as a child process: where the binary is, `serve` started and stopped, signals.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;

/// The `ledgerctl` binary of this build: `LEDGERCTL` when set; this process when it is
/// `ledgerctl` (a benchmark); else beside a test binary's `deps/` folder (cargo puts both in the
/// same profile folder).
pub fn ledgerctl_path() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("LEDGERCTL") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("this program's path")?;
    if exe.file_stem().is_some_and(|name| name == "ledgerctl") {
        return Ok(exe);
    }
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("a test binary lives in <target>/<profile>/deps")?;
    let path = profile_dir.join("ledgerctl");
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build it first (cargo build --workspace --bins, same profile as the tests)",
        path.display()
    );
    Ok(path)
}

/// Sends `signal` (`TERM`, `KILL`, `STOP`, `CONT`, `INT`) to process `pid`.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

/// A `ledgerctl serve` child, SIGKILLed on drop unless stopped; its stderr goes to
/// `DATA.serve.log`, at `LEDGER_LOG=info`.
pub struct Serve {
    /// The process.
    pub child: Child,
    log: PathBuf,
}

impl Serve {
    /// Starts `ledgerctl --data DATA serve --nats URL --tick-seconds 0 EXTRA…` and waits until it
    /// logs that it serves.
    pub fn start(data: &Path, url: &str, extra: &[&str]) -> anyhow::Result<Serve> {
        let log = data.with_extension("serve.log");
        let child = Command::new(ledgerctl_path()?)
            .arg("--data")
            .arg(data)
            .args(["serve", "--nats", url, "--tick-seconds", "0"])
            .args(extra)
            .env_remove("LEDGER_DATA")
            .env("LEDGER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).context("the serve log")?)
            .spawn()
            .context("starting ledgerctl serve")?;
        let serve = Serve { child, log };
        serve.wait_for_log_or_fail("serving (pid", Duration::from_secs(60))?;
        Ok(serve)
    }

    /// Waits until its stderr contains `text`; an error with the log after `within`.
    pub fn wait_for_log_or_fail(&self, text: &str, within: Duration) -> anyhow::Result<()> {
        crate::wait_until(
            within,
            Duration::from_millis(10),
            || self.log().contains(text).then_some(()),
            || format!("serve did not log {text:?}: {}", self.log()),
        )
    }

    /// Waits until its stderr contains `text` (true), or until `within` passed (false).
    pub fn wait_for_log(&self, text: &str, within: Duration) -> bool {
        self.wait_for_log_or_fail(text, within).is_ok()
    }

    /// What it wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits; returns the exit status and all it wrote to stderr.
    pub fn terminate_with_log(self) -> (ExitStatus, String) {
        let path = self.log.clone();
        let status = self.terminate();
        (status, std::fs::read_to_string(path).unwrap_or_default())
    }

    /// SIGTERM, then waits; returns the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let _ = signal(self.child.id(), "TERM");
        let status = self.child.wait().expect("wait for serve");
        std::mem::forget(self);
        status
    }

    /// SIGSTOPs the process (it keeps its sockets and answers nothing), or SIGCONTs it.
    pub fn pause(&self, paused: bool) {
        let _ = signal(self.child.id(), if paused { "STOP" } else { "CONT" });
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
