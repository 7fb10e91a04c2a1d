//! The README demo: a throwaway namespace lab with `edge daemon` running on its server side,
//! driven through the CLI the way ops and security teams would: record a visitor, add an
//! allow and a deny range, switch modes, roll the window forward, and read the counters. Real
//! TCP from four sources shows each step. Everything is removed at the end.
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use edge_tests::{
    daemon::Daemon,
    lab::{Lab, SERVER_ADDR},
};

const POLICY: &str = r#"# The demo's config (embedded in edge-lab-demo); the [daemon] table is added below.
mode = "monitor"
[scope]
protect = ["tcp/80", "tcp/443", "udp/443"]
[unknown]
rate_pps = 0          # strict: unknown sources get nothing on protected ports
[window]
days = 21
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
    let mut serve = lab.in_server(&probe);
    serve.args(["serve", &format!("{SERVER_ADDR}:443"), &format!("{SERVER_ADDR}:22")]);
    lab.spawn(serve)?;

    let iface = lab.server_if.clone();
    let mut daemon = Daemon::configure(&lab, &[&iface], POLICY, "2026-11-01")?;
    println!("== lab: namespaces {} and {}, edge daemon on {iface}", lab.client_ns, lab.server_ns);
    println!("== config:\n{}", std::fs::read_to_string(&daemon.config)?);
    daemon.start()?;
    daemon.wait_ready()?;

    let traffic = |title: &str| -> Result<()> {
        println!("\n-- traffic: {title}");
        for (role, addr) in CLIENTS {
            let ok = lab.connects(&probe, addr, 443, 700)?;
            println!(
                "   {role:<8} {addr:<14} -> tcp/443 {}",
                if ok { "connected" } else { "blocked" }
            );
        }
        Ok(())
    };
    let edge = |args: &[&str]| -> Result<()> {
        println!("\n$ edge {}", args.join(" "));
        let run = daemon.cli(args);
        print!("{}{}", run.stdout, run.stderr);
        if run.code != 0 {
            bail!("edge {} exited with {}", args.join(" "), run.code);
        }
        Ok(())
    };

    edge(&["status"])?;
    traffic("monitor mode: nothing is dropped, would-drops are counted")?;
    edge(&["visitors", "add", "192.0.2.10"])?;
    edge(&["allow", "add", "198.51.100.0/24", "--comment", "office"])?;
    edge(&["deny", "add", "203.0.113.0/24", "--comment", "abuse", "--expires", "7d"])?;
    edge(&["mode", "enforce"])?;
    traffic("enforce: visitor and allowed pass, denied and unknown are dropped")?;

    println!("\n-- 21 days later (the daemon's clock is moved with EDGE_CLOCK_FILE)");
    std::fs::write(&daemon.clock, "2026-11-22")?;
    daemon.wait_status("holding the window", |s| s["window_hold"] != "")?;
    println!("   a clock 21 days on in one step could be wrong: the daemon holds the window");
    edge(&["status"])?;
    edge(&["window", "roll"])?;
    edge(&["visitors", "count"])?;
    traffic("the visitor was last seen 21 days ago: out of the window")?;

    edge(&["deny", "list"])?;
    edge(&["stats"])?;
    daemon.stop()?;
    std::thread::sleep(Duration::from_millis(100));
    let detach = daemon.cli(&["detach", "--iface", &iface]);
    if detach.code != 0 {
        bail!("edge detach failed: {}", detach.stderr);
    }
    println!("\n== daemon stopped, filter detached, lab removed");
    Ok(())
}
