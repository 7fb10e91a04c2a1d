//! Shared helpers for edge's integration tests: frame builders, one loaded program per test
//! binary with the fixture checks (harness), the privileged-test gate, a network-namespace lab
//! that cleans up after itself, a daemon run in it, and traffic through it.
pub mod cores;
pub mod daemon;
pub mod fleet;
pub mod frames;
pub mod generator;
pub mod harness;
pub mod lab;
pub mod tls;
pub mod traffic;

/// The bench's reference programs (see build.rs): `empty`, the one-lookup hash anchor,
/// drop-all, and the lab's live-frames packet generator.
pub static BASELINE_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("EDGE_BASELINE_OBJECT"));

/// Set to `1` to skip tests that need BPF and network namespaces (they print SKIPPED).
pub const SKIP_ENV: &str = "EDGE_SKIP_PRIVILEGED";

/// Gate for privileged tests. Returns false (after printing SKIPPED) only when explicitly
/// opted out; otherwise a missing privilege fails the test with the reason.
pub fn privileged(test: &str) -> bool {
    if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") {
        // Straight to stderr: the test harness captures println!/eprintln! of passing tests.
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {SKIP_ENV}=1");
        return false;
    }
    // SAFETY: plain syscall.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "{test} loads BPF programs and creates network namespaces: run as root \
         (or set {SKIP_ENV}=1 to skip it explicitly)"
    );
    true
}

/// The `edge` binary under test: `EDGE_BIN`, or `edge` beside this test's target directory.
pub fn edge_bin() -> std::path::PathBuf {
    if let Some(bin) = std::env::var_os("EDGE_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("edge");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p edge-user`) or set EDGE_BIN",
        bin.display()
    );
    bin
}

/// The lab's traffic tool: this package's `edge-probe` binary, beside `edge` (both are built
/// into the same target directory).
pub fn probe() -> &'static std::path::Path {
    static PROBE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PROBE.get_or_init(|| match std::env::var_os("EDGE_PROBE") {
        Some(path) => path.into(),
        None => edge_bin().with_file_name("edge-probe"),
    })
}

/// Whether `ok` comes to hold within `timeout`, checking every 50 ms.
pub fn poll_until(timeout: std::time::Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    loop {
        if ok() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Waits until `ok` holds; panics after `timeout` naming `what` (and whatever `context` says
/// then: a daemon's log, a status).
#[track_caller]
pub fn wait_until(
    what: &str,
    timeout: std::time::Duration,
    ok: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    if !poll_until(timeout, ok) {
        panic!("timed out after {timeout:?} waiting for {what}\n{}", context());
    }
}

/// The outcome of one `edge` command.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn of(cmd: &mut std::process::Command) -> Run {
        let out = cmd.output().expect("running edge");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts exit code 0 and returns stdout.
    pub fn ok(self, what: &str) -> String {
        assert_eq!(self.code, 0, "{what}: {}{}", self.stdout, self.stderr);
        self.stdout
    }
}
