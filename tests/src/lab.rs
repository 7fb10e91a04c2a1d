//! A throwaway lab: a server namespace and a client namespace joined by a veth pair. Names are
//! unique per process and lab, and everything is removed on drop (also on panic): namespaces,
//! the veth pair with them, and any edge pins left for the server interface.
//!
//! Traffic stays inside the two namespaces: each has only the veth, with a default route on it.
use std::{
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{bail, Context as _, Result};

pub const SERVER_ADDR: &str = "192.0.2.1";

/// The lab's clients, by the part each plays (a test gives the ones it uses to `Lab::new`).
pub const VISITOR: &str = "192.0.2.10";
pub const ALLOWED: &str = "198.51.100.10";
pub const DENIED: &str = "203.0.113.10";
pub const UNKNOWN: &str = "192.0.2.99";
pub const FLOODER: &str = "192.0.2.66";
/// What fixtures and the lab treat as today (the daemon reads it from its clock file).
pub const TODAY: &str = "2026-11-22";

pub struct Lab {
    pub server_ns: String,
    pub client_ns: String,
    /// The server's veth end: where the filter is attached.
    pub server_if: String,
    pub client_if: String,
    /// The client's source addresses, kept to rebuild the link (`recreate_link`).
    client_addrs: Vec<String>,
    children: Vec<Child>,
    /// More interfaces whose edge pins go with the lab (made by a test inside it).
    extra_pins: Vec<String>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

pub fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    sh(Command::new("ip").args(args))
}

impl Lab {
    /// Creates the namespaces and the veth pair; `client_addrs` are the sources clients use.
    pub fn new(client_addrs: &[&str]) -> Result<Self> {
        let id =
            format!("{}{}", std::process::id() % 100_000, NEXT.fetch_add(1, Ordering::Relaxed));
        let lab = Self {
            server_ns: format!("edge-{id}-srv"),
            client_ns: format!("edge-{id}-cli"),
            server_if: format!("es{id}"),
            client_if: format!("ec{id}"),
            client_addrs: client_addrs.iter().map(|a| a.to_string()).collect(),
            children: Vec::new(),
            extra_pins: Vec::new(),
        };
        ip(&["netns", "add", &lab.server_ns])?;
        ip(&["netns", "add", &lab.client_ns])?;
        lab.link_pair()?;
        Ok(lab)
    }

    /// The veth pair between the namespaces, addressed and routed.
    fn link_pair(&self) -> Result<()> {
        let (srv, cli) = (&self.server_ns, &self.client_ns);
        ip(&[
            "link",
            "add",
            &self.server_if,
            "netns",
            srv,
            "type",
            "veth",
            "peer",
            "name",
            &self.client_if,
            "netns",
            cli,
        ])?;
        ip(&["-n", srv, "addr", "add", &format!("{SERVER_ADDR}/32"), "dev", &self.server_if])?;
        for addr in &self.client_addrs {
            ip(&["-n", cli, "addr", "add", &format!("{addr}/32"), "dev", &self.client_if])?;
        }
        for (ns, dev) in [(srv, &self.server_if), (cli, &self.client_if)] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "route", "replace", "default", "dev", dev])?;
        }
        Ok(())
    }

    /// Deletes the veth pair, as a driver reload or a re-created bond takes a NIC away:
    /// whatever was attached to it goes with it.
    pub fn delete_link(&self) -> Result<()> {
        ip(&["-n", &self.server_ns, "link", "del", &self.server_if]).map(|_| ())
    }

    /// Makes the veth pair again under the same names, addressed and routed: new devices.
    pub fn restore_link(&self) -> Result<()> {
        self.link_pair()
    }

    /// A command run in the server namespace (network namespace only: bpffs pins stay shared,
    /// which `ip netns exec` would hide behind a fresh /sys). Without the test's own
    /// `SSH_CONNECTION`: that session is not the lab's, and `edge attach` would judge it
    /// (tests that want one set it).
    pub fn in_server(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.server_ns)).arg("--").arg(program);
        cmd.env_remove("SSH_CONNECTION");
        cmd
    }

    /// A command run in the client namespace.
    pub fn in_client(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.client_ns)).arg("--").arg(program);
        cmd
    }

    /// A second link between the namespaces: the server's side gets `server_addr`, the client
    /// reaches it through this link (its replies go back through the first). Returns the
    /// server-side interface's name; its pins are removed with the lab.
    pub fn add_link(&mut self, server_addr: &str) -> Result<String> {
        let (srv_if, cli_if) = (format!("{}b", self.server_if), format!("{}b", self.client_if));
        let (srv, cli) = (self.server_ns.clone(), self.client_ns.clone());
        ip(&["link", "add", &srv_if, "netns", &srv, "type", "veth", "peer", "name", &cli_if])?;
        ip(&["link", "set", &cli_if, "netns", &cli])?;
        ip(&["-n", &srv, "addr", "add", &format!("{server_addr}/32"), "dev", &srv_if])?;
        for (ns, dev) in [(&srv, &srv_if), (&cli, &cli_if)] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        ip(&["-n", &cli, "route", "add", &format!("{server_addr}/32"), "dev", &cli_if])?;
        self.extra_pins.push(srv_if.clone());
        Ok(srv_if)
    }

    /// Removes edge's pins for `iface` too when the lab goes.
    pub fn clean_pins_of(&mut self, iface: &str) {
        self.extra_pins.push(iface.to_string());
    }

    /// Starts a long-running process that is killed when the lab goes.
    /// Starts `probe serve` in the server namespace, listening on each of `addrs`, until the
    /// lab is dropped.
    pub fn serve(&mut self, probe: &std::path::Path, addrs: &[&str]) -> Result<()> {
        let mut serve = self.in_server(probe);
        serve.arg("serve").args(addrs);
        self.spawn(serve)
    }

    pub fn spawn(&mut self, mut cmd: Command) -> Result<()> {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("{cmd:?}"))?;
        self.children.push(child);
        Ok(())
    }

    /// GET /metrics from the daemon's default listener (127.0.0.1:9464) inside the server
    /// namespace; only the exposition lines (chunked encoding may wrap the body).
    pub fn scrape_metrics(&self) -> String {
        use std::io::{Read as _, Write as _};
        let netns = format!("/run/netns/{}", self.server_ns);
        let body = std::thread::spawn(move || {
            let ns = std::fs::File::open(&netns).unwrap();
            // SAFETY: valid fd; only this thread changes namespace.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns into {netns}");
            let mut stream =
                std::net::TcpStream::connect("127.0.0.1:9464").expect("metrics listener");
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
            response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
        })
        .join()
        .unwrap();
        body.lines()
            .filter(|l| l.starts_with('#') || l.starts_with("edge_"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// Whether a TCP connection from `src` to the server's `port` completes within `timeout_ms`.
    pub fn connects(
        &self,
        probe: &std::path::Path,
        src: &str,
        port: u16,
        timeout_ms: u32,
    ) -> Result<bool> {
        self.connects_to(probe, src, &format!("{SERVER_ADDR}:{port}"), timeout_ms)
    }

    /// Whether a TCP connection from `src` to `to` (ADDR:PORT) completes within `timeout_ms`.
    pub fn connects_to(
        &self,
        probe: &std::path::Path,
        src: &str,
        to: &str,
        timeout_ms: u32,
    ) -> Result<bool> {
        let status = self
            .in_client(probe)
            .args(["connect", "--from", src, "--to", to])
            .args(["--timeout-ms", &timeout_ms.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        match status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => bail!("edge-probe connect failed: {status}"),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A failed test may leave edge attached: its pins would outlive the namespace.
        for iface in std::iter::once(&self.server_if).chain(&self.extra_pins) {
            let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/edge/{iface}"));
        }
        let _ = ip(&["netns", "del", &self.server_ns]);
        let _ = ip(&["netns", "del", &self.client_ns]);
    }
}
