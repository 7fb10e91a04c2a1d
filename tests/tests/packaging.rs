//! What ships beside the binary: `--version` with the git revision, shell completions and man
//! pages generated from the CLI definition, the systemd unit, and proof that the capabilities
//! the unit grants are enough: a real daemon run as `nobody` with only those filters traffic.
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use edge_tests::{daemon::Daemon, edge_bin, lab::Lab, privileged, Run};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn unit_text() -> String {
    std::fs::read_to_string(repo().join("packaging/edge.service")).expect("packaging/edge.service")
}

/// The value of `key=` in the unit (the first such line).
fn unit_value(key: &str) -> String {
    unit_text()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit has no {key}="))
        .to_string()
}

#[test]
fn version_names_the_git_revision() {
    let out = Run::of(Command::new(edge_bin()).arg("--version")).ok("edge --version");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo())
        .output()
        .expect("git");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert!(!head.is_empty(), "the tests run from a git checkout");
    assert_eq!(out.trim(), format!("edge {} (git {head})", env!("CARGO_PKG_VERSION")));
}

#[test]
fn completions_parse_in_their_shells() {
    let bash = Run::of(Command::new(edge_bin()).args(["completions", "bash"])).ok("bash");
    assert!(bash.contains("visitors") && bash.contains("--socket"), "{bash}");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("edge.bash");
    std::fs::write(&script, &bash).unwrap();
    Run::of(Command::new("bash").arg("-n").arg(&script)).ok("bash -n on the completions");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = Run::of(Command::new(edge_bin()).args(["completions", shell])).ok(shell);
        assert!(out.contains("visitors"), "{shell}: {out}");
    }
    let bad = Run::of(Command::new(edge_bin()).args(["completions", "tcsh"]));
    assert_eq!(bad.code, 2, "an unknown shell is a usage error: {}", bad.stderr);
}

#[test]
fn man_pages_render_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    Run::of(Command::new(edge_bin()).arg("man").arg("--out").arg(dir.path())).ok("edge man");
    for page in ["edge.1", "edge-daemon.1", "edge-visitors-import.1", "edge-stats.1"] {
        let path = dir.path().join(page);
        assert!(path.exists(), "{page} was not written");
        // groff -ww: all warnings; -z: no output, only the diagnostics.
        let out = Command::new("groff").args(["-man", "-Tutf8", "-ww", "-z"]).arg(&path).output();
        let out = out.expect("groff");
        assert!(out.status.success() && out.stderr.is_empty(), "{page}: {}", {
            String::from_utf8_lossy(&out.stderr)
        });
    }
    let top = Run::of(Command::new(edge_bin()).arg("man")).ok("edge man to stdout");
    assert!(top.starts_with(".ie") && top.contains(".SH SUBCOMMANDS"), "{top}");
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    // The unit as installed, with this build's binary in place of /usr/local/bin/edge.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("edge.service");
    std::fs::write(
        &unit,
        unit_text().replace("/usr/local/bin/edge", &edge_bin().display().to_string()),
    )
    .unwrap();
    // Its Documentation= pages are checked with `man`: the pages this build generates.
    let man1 = dir.path().join("man/man1");
    Run::of(Command::new(edge_bin()).arg("man").arg("--out").arg(&man1)).ok("edge man");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("MANPATH", dir.path().join("man"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only the unit's own lines count: the host's other units may have their own complaints.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("edge.service")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify:\n{stderr}");
    // Not full root: a user, and a bounding set equal to the ambient set.
    assert_eq!(unit_value("User"), "edge");
    assert_eq!(unit_value("AmbientCapabilities"), unit_value("CapabilityBoundingSet"));
    assert!(!unit_value("AmbientCapabilities").contains("CAP_SYS_ADMIN"));
}

/// Puts `path` back under root's ownership when the test ends, however it ends.
struct Chowned(PathBuf, u32, u32);

impl Drop for Chowned {
    fn drop(&mut self) {
        let _ = std::os::unix::fs::chown(&self.0, Some(self.1), Some(self.2));
    }
}

fn chown_tree(path: &Path, uid: u32) {
    Run::of(Command::new("chown").arg("-R").arg(format!("{uid}:{uid}")).arg(path)).ok("chown");
}

/// The bit of each capability in /proc/PID/status's Cap* masks.
fn cap_bit(name: &str) -> u64 {
    match name {
        "CAP_DAC_READ_SEARCH" => 1 << 2,
        "CAP_NET_ADMIN" => 1 << 12,
        "CAP_PERFMON" => 1 << 38,
        "CAP_BPF" => 1 << 39,
        other => panic!("the test does not know {other}"),
    }
}

#[test]
fn the_daemon_runs_as_nobody_with_only_the_units_capabilities() {
    if !privileged("the_daemon_runs_as_nobody_with_only_the_units_capabilities") {
        return;
    }
    const NOBODY: u32 = 65534;
    let caps: Vec<String> =
        unit_value("AmbientCapabilities").split_whitespace().map(String::from).collect();
    let setpriv_caps = caps
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",");

    let mut lab = Lab::new(&["192.0.2.10", "192.0.2.99"]).expect("creating the namespace lab");
    lab.serve(Path::new(env!("CARGO_BIN_EXE_edge-probe")), &["192.0.2.1:443"]).unwrap();
    let iface = lab.server_if.clone();
    // Learning too: the handshake tracepoint is what needs CAP_PERFMON.
    let policy = "mode = \"enforce\"\n[unknown]\nrate_pps = 0\nglobal_pps = 0\n\
                  [learning]\nhandshakes = true\n";
    let mut daemon = Daemon::configure(&lab, &[&iface], policy, "2026-11-01").unwrap();

    // What the unit's ExecStartPre and StateDirectory= do: the pin directory and the state
    // belong to the daemon's user.
    let pins = Path::new(edge::filter::PIN_ROOT);
    std::fs::create_dir_all(pins).unwrap();
    let meta = std::fs::metadata(pins).unwrap();
    let _restore = Chowned(pins.to_path_buf(), meta.uid(), meta.gid());
    std::os::unix::fs::chown(pins, Some(NOBODY), Some(NOBODY)).unwrap();
    chown_tree(daemon.config_dir(), NOBODY);

    daemon
        .start_under(&[
            "setpriv".into(),
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".into(),
            format!("--inh-caps=-all,{setpriv_caps}"),
            format!("--ambient-caps=-all,{setpriv_caps}"),
            format!("--bounding-set=-all,{setpriv_caps}"),
            "--".into(),
        ])
        .unwrap();
    daemon.wait_ready().unwrap();

    // It really is nobody, with exactly the unit's capabilities.
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid().unwrap()))
        .expect("the daemon's /proc status");
    let field =
        |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).unwrap().trim().to_string();
    assert!(field("Uid:").starts_with(&NOBODY.to_string()), "{status}");
    let want: u64 = caps.iter().map(|c| cap_bit(c)).sum();
    assert_eq!(u64::from_str_radix(&field("CapEff:"), 16).unwrap(), want, "{status}");
    assert_eq!(u64::from_str_radix(&field("CapBnd:"), 16).unwrap(), want, "{status}");

    // And it does its job: a recorded visitor connects, an unknown source does not.
    daemon.cli(&["visitors", "add", "192.0.2.10"]).ok("visitors add");
    let probe = Path::new(env!("CARGO_BIN_EXE_edge-probe"));
    assert!(lab.connects(probe, "192.0.2.10", 443, 700).unwrap(), "the visitor connects");
    assert!(!lab.connects(probe, "192.0.2.99", 443, 700).unwrap(), "the unknown is dropped");
    let stats = daemon.cli(&["stats", "--json"]).ok("stats");
    assert!(stats.contains("\"visitor\""), "{stats}");
    let log = daemon.log();
    assert!(log.contains("learning visitors from completed handshakes"), "{log}");
    assert!(!log.contains("learning is off"), "{log}");
    daemon.stop().unwrap();
    lab.clean_pins_of(&iface);
}
