//! The Debian package as an operator installs it, with the real dpkg on this machine:
//! `cargo xtask package` builds it; `dpkg -i` installs the binary, man pages, completions, the
//! unit (which `systemd-analyze verify` accepts as installed), the config as a conffile and the
//! `edge` user; an upgrade over a running daemon keeps an edited config and, with the restart
//! the unit does, filters on without losing or letting through a datagram; `dpkg --purge`
//! leaves nothing behind, but the store when the operator asked to keep it
//! (/var/lib/edge/KEEP).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use edge::filter::pinned_link_ids;
use edge_tests::{
    daemon::Daemon,
    edge_bin,
    lab::{Lab, UNKNOWN, VISITOR},
    privileged,
    traffic::VisitorAndUnknown,
    Run,
};

const STATE: &str = "/var/lib/edge";

/// Purges the package when the test ends, however it ends, and removes what it made.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "edge"]).output();
        let _ = std::fs::remove_dir_all(STATE);
    }
}

fn dpkg(args: &[&str]) -> Run {
    Run::of(Command::new("dpkg").args(args).env("DEBIAN_FRONTEND", "noninteractive"))
}

/// `cargo xtask package` of the binary under test, at `version`; the .deb's path.
fn package(out: &Path, version: &str) -> PathBuf {
    let xtask = edge_bin().parent().unwrap().join("xtask");
    let run = Run::of(
        Command::new(&xtask)
            .args(["package", "--binary", edge_bin().to_str().unwrap(), "--version", version])
            .arg("--no-compress")
            .arg("--out")
            .arg(out),
    );
    let stdout = run.ok("cargo xtask package");
    let deb = PathBuf::from(stdout.lines().last().expect("the .deb's path on the last line"));
    assert!(deb.is_file(), "{}", deb.display());
    deb
}

fn installed() -> bool {
    dpkg(&["-s", "edge"]).stdout.contains("Status: install ok installed")
}

#[test]
fn the_package_installs_verifies_upgrades_and_purges_cleanly() {
    if !privileged("the_package_installs_verifies_upgrades_and_purges_cleanly") {
        return;
    }
    if installed() || Path::new(STATE).exists() {
        println!("SKIPPED: edge is installed on this machine (or {STATE} exists); not touching it");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let first = package(out.path(), "0.1.0");
    let _guard = Installed;
    dpkg(&["-i", first.to_str().unwrap()]).ok("dpkg -i");
    assert!(installed());

    // What an operator gets.
    let version = Run::of(Command::new("/usr/bin/edge").arg("--version")).ok("edge --version");
    assert!(version.starts_with("edge "), "{version}");
    for file in [
        "/usr/share/man/man1/edge.1",
        "/usr/share/man/man1/edge-token-verify.1",
        "/usr/share/bash-completion/completions/edge",
        "/usr/share/edge/prometheus/edge.rules.yml",
        "/usr/share/edge/grafana/edge.json",
        "/etc/edge/edge.toml",
    ] {
        assert!(Path::new(file).is_file(), "{file} not installed");
    }
    let user = Run::of(Command::new("getent").args(["passwd", "edge"])).ok("the edge user");
    assert!(user.contains("/var/lib/edge") && user.contains("nologin"), "{user}");
    let state = std::fs::metadata(STATE).expect("the state directory");
    let uid: u32 = user.split(':').nth(2).unwrap().parse().unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&state), uid);
    let conffiles = std::fs::read_to_string("/var/lib/dpkg/info/edge.conffiles").unwrap();
    assert_eq!(conffiles.trim(), "/etc/edge/edge.toml");
    let unit = "/usr/lib/systemd/system/edge.service";
    assert!(std::fs::read_to_string(unit).unwrap().contains("ExecStart=/usr/bin/edge daemon"));
    let verify = Command::new("systemd-analyze").args(["verify", unit]).output().unwrap();
    let stderr = String::from_utf8_lossy(&verify.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("edge.service")).collect();
    assert!(verify.status.success() && ours.is_empty(), "systemd-analyze verify:\n{stderr}");

    // An upgrade over a running daemon, under traffic, keeps the operator's config and the
    // store; the restart the unit does (systemd is not PID 1 on this machine: the test does
    // what `systemctl try-restart` would, SIGTERM then ExecStart's binary) swaps the new
    // program into the running link.
    let mut config = std::fs::read_to_string("/etc/edge/edge.toml").unwrap();
    config.push_str("\n# edited by the operator\n");
    std::fs::write("/etc/edge/edge.toml", &config).unwrap();
    std::fs::write(Path::new(STATE).join("snapshot-marker"), "x").unwrap();
    let second = package(out.path(), "0.1.1");
    let lab = Lab::new(&[VISITOR, UNKNOWN]).expect("creating the namespace lab");
    let iface = lab.server_if.clone();
    let strict = "mode = \"enforce\"\n[unknown]\nrate_pps = 0\nglobal_pps = 0\n";
    let mut daemon = Daemon::configure(&lab, &[&iface], strict, "2026-11-22").unwrap();
    let installed_binary = Path::new("/usr/bin/edge");
    daemon.start_binary(installed_binary).unwrap();
    daemon.wait_ready().unwrap();
    daemon.cli(&["visitors", "add", VISITOR]).ok("visitors add");
    let (link, old_prog) = pinned_link_ids(&iface).unwrap();
    let traffic = VisitorAndUnknown::start(&lab, 4000, 10);
    let floods_end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    std::thread::sleep(std::time::Duration::from_millis(500));
    dpkg(&["-i", "--force-confold", second.to_str().unwrap()]).ok("upgrade");
    assert!(dpkg(&["-s", "edge"]).stdout.contains("Version: 0.1.1"));
    daemon.stop().unwrap();
    daemon.start_binary(installed_binary).unwrap();
    daemon.wait_ready().unwrap();
    // The swap must have happened under the floods, or their figures prove nothing about it.
    let left = floods_end.saturating_duration_since(std::time::Instant::now());
    assert!(left >= std::time::Duration::from_secs(1), "the upgrade ended after the floods");
    let (same_link, new_prog) = pinned_link_ids(&iface).unwrap();
    assert_eq!(same_link, link, "the link stays through the upgrade: no detach");
    assert_ne!(new_prog, old_prog, "the upgraded binary's program runs");
    traffic.every_visitor_and_no_unknown(10_000);
    assert!(daemon.log().contains("replaced the running program"), "{}", daemon.log());
    daemon.stop().unwrap();
    drop(lab);
    assert_eq!(std::fs::read_to_string("/etc/edge/edge.toml").unwrap(), config);
    assert!(Path::new(STATE).join("snapshot-marker").exists());

    // A purge asked to keep the store keeps only that.
    std::fs::write(Path::new(STATE).join("KEEP"), "").unwrap();
    dpkg(&["--purge", "edge"]).ok("purge keeping the store");
    assert!(Path::new(STATE).join("snapshot-marker").exists(), "the store was kept");
    std::fs::remove_dir_all(STATE).unwrap();
    for gone in
        ["/usr/bin/edge", "/etc/edge", unit, "/usr/share/edge", "/usr/share/man/man1/edge.1"]
    {
        assert!(!Path::new(gone).exists(), "{gone} left behind");
    }
    assert_ne!(Run::of(Command::new("getent").args(["passwd", "edge"])).code, 0, "the user");

    // A plain purge leaves nothing.
    dpkg(&["-i", first.to_str().unwrap()]).ok("dpkg -i");
    dpkg(&["--purge", "edge"]).ok("purge");
    for gone in ["/usr/bin/edge", "/etc/edge", STATE] {
        assert!(!Path::new(gone).exists(), "{gone} left behind");
    }
    assert!(!installed());
}
