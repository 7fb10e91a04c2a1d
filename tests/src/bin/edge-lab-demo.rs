//! The README demo: a throwaway namespace lab, the filter attached with a small embedded
//! policy, real TCP from a visitor, an allowed, a denied and an unknown source, then the
//! per-reason counters. Everything is removed at the end.
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use edge_tests::{
    edge_bin,
    lab::{Lab, SERVER_ADDR},
};

const POLICY: &str = r#"# The demo's policy (embedded in edge-lab-demo).
mode = "enforce"
[scope]
protect = ["tcp/80", "tcp/443", "udp/443"]
[unknown]
rate_pps = 0          # strict: unknown sources get nothing on protected ports
[lists]
allow = ["198.51.100.0/24"]
deny = ["203.0.113.0/24"]
visitors = "visitors.csv"
"#;

const CLIENTS: [(&str, &str); 4] = [
    ("visitor", "192.0.2.10"),
    ("allowed", "198.51.100.10"),
    ("denied", "203.0.113.10"),
    ("unknown", "192.0.2.99"),
];

fn main() -> Result<()> {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces and loads BPF: run it as root");
    }
    let probe = std::env::current_exe()?.with_file_name("edge-probe");
    let addrs: Vec<&str> = CLIENTS.iter().map(|(_, a)| *a).collect();
    let mut lab = Lab::new(&addrs).context("creating the lab")?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("visitors.csv"), "192.0.2.10   # seen today\n")?;
    let policy = dir.path().join("demo.toml");
    std::fs::write(&policy, POLICY)?;

    println!(
        "== lab: namespaces {} and {}, filter on {}",
        lab.client_ns, lab.server_ns, lab.server_if
    );
    println!("== policy:\n{POLICY}");
    let mut serve = lab.in_server(&probe);
    serve.args(["serve", &format!("{SERVER_ADDR}:443"), &format!("{SERVER_ADDR}:22")]);
    lab.spawn(serve)?;
    std::thread::sleep(std::time::Duration::from_millis(300));

    let status = lab
        .in_server(edge_bin())
        .args(["attach", "--iface", &lab.server_if, "--xdp-mode", "native", "--policy"])
        .arg(&policy)
        .status()?;
    if !status.success() {
        bail!("edge attach failed");
    }

    println!("\n== traffic (TCP connect from each source to {SERVER_ADDR})");
    for (role, addr) in CLIENTS {
        for port in [443, 22] {
            let ok = lab.connects(&probe, addr, port, 700)?;
            let note = match (role, port) {
                ("denied", _) => " (deny applies to every port)",
                (_, 22) => " (tcp/22 is not protected)",
                _ => "",
            };
            println!(
                "  {role:<8} {addr:<14} -> tcp/{port:<4} {}{note}",
                if ok { "connected" } else { "blocked" }
            );
        }
    }

    println!("\n== edge stats --iface {}", lab.server_if);
    let status = Command::new(edge_bin()).args(["stats", "--iface", &lab.server_if]).status()?;
    let detach = Command::new(edge_bin()).args(["detach", "--iface", &lab.server_if]).status()?;
    if !status.success() || !detach.success() {
        bail!("edge stats/detach failed");
    }
    println!("\n== detached; lab removed");
    Ok(())
}
