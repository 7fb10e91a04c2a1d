//! A fleet's Redis for tests and benchmarks: a redis-server in a namespace of its own, linked
//! to each lab's server namespace by a veth pair (10.98.N.1 on node N, 10.98.N.2 on Redis).
//! Nothing routes out of it; everything is removed on drop.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::lab::Lab;

pub const REDIS_PORT: u16 = 6391;
/// The fleet's stream (the default `[fleet] stream`).
pub const STREAM: &str = "edge:fleet";

/// Stream entries as XRANGE answers: id, then field and value pairs.
pub type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>;

/// The URL node `n` (the `n`-th lab given to [`RedisNet::new`]) reaches Redis at.
pub fn redis_url(n: usize) -> String {
    format!("redis://10.98.{n}.2:{REDIS_PORT}")
}

/// The namespace Redis runs in, linked to each lab's server namespace by a veth pair
/// (10.98.N.1 on the node, 10.98.N.2 on Redis). No default route anywhere out of it.
pub struct RedisNet {
    ns: String,
    server: Option<Child>,
    /// `requirepass`, if the server was started with one.
    password: Option<String>,
}

/// The TLS port of [`RedisNet::start_tls`] (the plain port then listens on its loopback only).
pub const REDIS_TLS_PORT: u16 = 6392;

impl RedisNet {
    pub fn new(labs: &[&Lab]) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ns = format!("edge-{}{n}-redis", std::process::id() % 100_000);
        run(Command::new("ip").args(["netns", "add", &ns]));
        run(Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]));
        for (n, lab) in labs.iter().enumerate() {
            let (node_if, redis_if) = (format!("{}r", lab.server_if), format!("rd{n}"));
            run(Command::new("ip").args([
                "link",
                "add",
                &node_if,
                "netns",
                &lab.server_ns,
                "type",
                "veth",
                "peer",
                "name",
                &redis_if,
                "netns",
                &ns,
            ]));
            for (netns, dev, addr) in [
                (&lab.server_ns, &node_if, format!("10.98.{n}.1/30")),
                (&ns, &redis_if, format!("10.98.{n}.2/30")),
            ] {
                run(Command::new("ip").args(["-n", netns, "addr", "add", &addr, "dev", dev]));
                run(Command::new("ip").args(["-n", netns, "link", "set", dev, "up"]));
            }
        }
        Self { ns, server: None, password: None }
    }

    /// Starts redis-server persisting to `dir` (append-only, fsync always).
    pub fn start(&mut self, dir: &Path) {
        self.start_with(dir, &["--bind", "0.0.0.0"]);
    }

    /// Starts redis-server with TLS on [`REDIS_TLS_PORT`] (server certificate and key from
    /// `pki`; client certificates signed by its CA required) and a password.
    pub fn start_tls(&mut self, dir: &Path, pki: &crate::tls::Pki, password: &str) {
        self.password = Some(password.to_string());
        let path = |p: &Path| p.display().to_string();
        let port = REDIS_TLS_PORT.to_string();
        let (cert, key, ca) = (path(&pki.server_cert), path(&pki.server_key), path(&pki.ca));
        self.start_with(
            dir,
            &[
                "--bind",
                "0.0.0.0",
                "--tls-port",
                &port,
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                "yes",
                "--requirepass",
                password,
            ],
        );
    }

    fn start_with(&mut self, dir: &Path, args: &[&str]) {
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .args(["--", "redis-server", "--port", &REDIS_PORT.to_string()])
            .args(args)
            .args(["--protected-mode", "no", "--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "always", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server (installed by `cargo xtask setup`)");
        self.server = Some(child);
        crate::wait_until(
            "redis-server to answer",
            Duration::from_secs(10),
            || self.query(|c| redis::cmd("PING").query::<String>(c)).is_ok(),
            String::new,
        );
    }

    /// The stream entry the fleet's snapshot covers.
    pub fn snapshot_covers(&self) -> Option<String> {
        let key = format!("{STREAM}:snapshot");
        self.query(move |c| redis::cmd("HGET").arg(key).arg("covers").query(c)).unwrap()
    }

    /// The id of the stream's oldest entry.
    pub fn first_entry(&self) -> Option<String> {
        let range = redis::cmd("XRANGE").arg(STREAM).arg("-").arg("+").arg("COUNT").arg(1).clone();
        let entries: Entries = self.query(move |c| range.query(c)).unwrap();
        entries.first().map(|(id, _)| id.clone())
    }

    /// The id of the stream's newest entry.
    pub fn last_entry(&self) -> Option<String> {
        let range =
            redis::cmd("XREVRANGE").arg(STREAM).arg("+").arg("-").arg("COUNT").arg(1).clone();
        let entries: Entries = self.query(move |c| range.query(c)).unwrap();
        entries.first().map(|(id, _)| id.clone())
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            // SAFETY: plain syscall on our child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            child.wait().unwrap();
        }
    }

    /// Runs `f` on a connection to Redis from inside its namespace.
    pub fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T> + Send + 'static,
    ) -> redis::RedisResult<T> {
        let netns = format!("/run/netns/{}", self.ns);
        let auth = self.password.as_ref().map_or(String::new(), |p| format!(":{p}@"));
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&netns).unwrap();
            // SAFETY: valid fd; only this thread changes namespace.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns into {netns}");
            let client = redis::Client::open(format!("redis://{auth}127.0.0.1:{REDIS_PORT}"))?;
            let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
            f(&mut conn)
        })
        .join()
        .unwrap()
    }
}

impl Drop for RedisNet {
    fn drop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}
