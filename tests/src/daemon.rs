//! A real `edge daemon` process for tests: its config, state directory, socket and clock file
//! in a temporary directory, run in a lab's server namespace, killed when dropped.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::{edge_bin, lab::Lab, Run};

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub clock: PathBuf,
    server_ns: String,
    child: Option<Child>,
}

impl Daemon {
    /// Writes `policy` plus a `[daemon]` table for `interfaces` and the clock file (today =
    /// `today`); does not start the daemon.
    pub fn configure(lab: &Lab, interfaces: &[&str], policy: &str, today: &str) -> Result<Self> {
        Self::configure_with(lab, interfaces, policy, today, "")
    }

    /// [`Daemon::configure`] with more lines for the `[daemon]` table.
    pub fn configure_with(
        lab: &Lab,
        interfaces: &[&str],
        policy: &str,
        today: &str,
        daemon_lines: &str,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("edge.toml");
        let socket = dir.path().join("edge.sock");
        let clock = dir.path().join("today");
        let list = interfaces.iter().map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(", ");
        std::fs::write(
            &config,
            format!(
                "{policy}\n[daemon]\ninterfaces = [{list}]\nstate_dir = \"state\"\nsocket = \"{}\"\n\
                 {daemon_lines}\n",
                socket.display()
            ),
        )?;
        std::fs::write(&clock, today)?;
        Ok(Self { dir, config, socket, clock, server_ns: lab.server_ns.clone(), child: None })
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Starts the daemon (stderr goes to `daemon.log` in the directory).
    pub fn start(&mut self) -> Result<()> {
        self.start_under(&[])
    }

    /// Starts the daemon through `wrapper` (a command that execs its arguments, such as
    /// `setpriv ... --`), inside the server namespace.
    pub fn start_under(&mut self, wrapper: &[String]) -> Result<()> {
        self.spawn(wrapper, &edge_bin())
    }

    /// Starts `binary` as the daemon (an installed one, say), as [`Daemon::start`] does.
    pub fn start_binary(&mut self, binary: &Path) -> Result<()> {
        self.spawn(&[], binary)
    }

    fn spawn(&mut self, wrapper: &[String], binary: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.server_ns))
            .arg("--")
            .args(wrapper)
            .arg(binary)
            .arg("daemon")
            .arg("--config")
            .arg(&self.config)
            .env("EDGE_CLOCK_FILE", &self.clock)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting edge daemon")?;
        self.child = Some(child);
        Ok(())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Waits until `edge status` reports ready.
    pub fn wait_ready(&self) -> Result<()> {
        self.wait_status("ready", |s| s["ready"] == true)
    }

    /// Waits until `edge status --json` satisfies `ok`.
    pub fn wait_status(&self, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> Result<()> {
        let met = crate::poll_until(Duration::from_secs(20), || {
            let run = self.cli(&["status", "--json"]);
            run.code == 0
                && serde_json::from_str::<serde_json::Value>(&run.stdout)
                    .is_ok_and(|status| status.get("ready").is_some() && ok(&status))
        });
        if !met {
            bail!("the daemon did not become {what} in 20 s; its log:\n{}", self.log());
        }
        Ok(())
    }

    /// Waits until the daemon's log holds `needle` `times` times; panics with the log if not.
    #[track_caller]
    pub fn wait_log(&self, needle: &str, times: usize) {
        let what = format!("`{needle}` {times} time(s) in the daemon's log");
        crate::wait_until(
            &what,
            Duration::from_secs(15),
            || self.log().matches(needle).count() >= times,
            || self.log(),
        );
    }

    /// Moves the daemon's day and waits until it has rolled the window to it.
    pub fn set_today(&self, day: &str) -> Result<()> {
        std::fs::write(&self.clock, day)?;
        self.wait_status(&format!("rolled to {day}"), |s| s["rolled_to"] == day)
    }

    /// Rewrites `[syn_cookies] mode` in the config file to `mode` and reloads it.
    pub fn set_syn_cookies(&self, mode: &str) -> Result<()> {
        let text = std::fs::read_to_string(&self.config)?;
        let key = "[syn_cookies]\nmode = \"";
        let start = text.find(key).context("no [syn_cookies] mode in the config")? + key.len();
        let end = start + text[start..].find('"').context("an unterminated mode")?;
        let mut changed = text.clone();
        changed.replace_range(start..end, mode);
        std::fs::write(&self.config, changed)?;
        let reload = self.cli(&["config", "reload"]);
        if reload.code != 0 {
            bail!("edge config reload: {}", reload.stderr);
        }
        Ok(())
    }

    /// Runs `edge ARGS` against this daemon's socket.
    pub fn cli(&self, args: &[&str]) -> Run {
        Run::of(&mut self.cli_command(args))
    }

    /// `edge ARGS` against this daemon's socket, to spawn.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(edge_bin());
        cmd.args(args).env("EDGE_SOCKET", &self.socket);
        cmd
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain syscall on our child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let status = child.wait()?;
            if !status.success() {
                bail!("edge daemon exited with {status}; its log:\n{}", self.log());
            }
        }
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn config_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}
