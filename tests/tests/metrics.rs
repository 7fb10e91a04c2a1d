//! Prometheus `/metrics` from a real daemon: the counters and state are there, with labels,
//! and `promtool check metrics` accepts the exposition.
use std::{
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
};

use edge_tests::{
    daemon::Daemon,
    lab::{Lab, VISITOR},
    privileged,
};

#[test]
fn metrics_expose_counters_and_state_and_pass_promtool() {
    if !privileged("metrics_expose_counters_and_state_and_pass_promtool") {
        return;
    }
    let mut lab = Lab::new(&[VISITOR]).expect("lab");
    lab.serve(Path::new(env!("CARGO_BIN_EXE_edge-probe")), &["192.0.2.1:443"]).unwrap();
    let iface = lab.server_if.clone();
    let mut daemon = Daemon::configure(
        &lab,
        &[&iface],
        "mode = \"enforce\"\n[unknown]\nrate_pps = 0\n",
        "2026-11-22",
    )
    .unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    daemon.cli(&["visitors", "add", VISITOR]).ok("visitors add");
    daemon.cli(&["deny", "add", "203.0.113.0/24"]).ok("deny add");
    assert!(lab.connects(Path::new(env!("CARGO_BIN_EXE_edge-probe")), VISITOR, 443, 700).unwrap());

    // Chunked transfer encoding may wrap the body; keep only exposition lines.
    let body = lab.scrape_metrics();
    let visitor_packets = body
        .lines()
        .find(|l| {
            l.starts_with("edge_packets_total{")
                && l.contains(&format!("interface=\"{iface}\""))
                && l.contains("reason=\"visitor\"")
                && l.contains("action=\"pass\"")
        })
        .unwrap_or_else(|| panic!("no visitor counter in:\n{body}"));
    let n: u64 = visitor_packets.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1, "{visitor_packets}");
    for line in [
        "edge_map_entries{map=\"visitors_v4\"} 1",
        "edge_map_entries{map=\"deny\"} 1",
        "edge_map_capacity{map=\"deny\"} 65536",
        "edge_mode{mode=\"enforce\"} 1",
        "edge_ready 1",
        "edge_window_length_seconds 1814400",
        "edge_admission_feed{state=\"off\"} 1",
        "edge_tickets_refused_total{reason=\"bad_hash\"} 0",
        "edge_enforcing 1",
        "edge_auto_switches_total{to=\"enforce\"} 0",
        "edge_map_capacity{map=\"unknown_buckets\"} 1000000",
    ] {
        assert!(body.lines().any(|l| l == line), "`{line}` not in:\n{body}");
    }
    let attached = format!("edge_interface_attached{{interface=\"{iface}\"}} 1");
    assert!(body.lines().any(|l| l == attached), "`{attached}` not in:\n{body}");
    for name in ["edge_unknown_packets_per_second ", "edge_map_entries{map=\"unknown_buckets\"} "] {
        assert!(body.lines().any(|l| l.starts_with(name)), "`{name}` not in:\n{body}");
    }

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (installed by `cargo xtask setup` with the prometheus package)");
    promtool.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // `edge stats --watch 1 --json`: one array per second, with per-row rates from the second.
    let mut watch = Command::new(edge_tests::edge_bin())
        .args(["stats", "--watch", "1", "--json"])
        .env("EDGE_SOCKET", &daemon.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    watch.kill().unwrap();
    let out = watch.wait_with_output().unwrap();
    let prints: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(prints.len() >= 2, "{prints:?}");
    assert!(prints[0][0].get("packets_per_second").is_none(), "no rate before a second sample");
    let visitor = prints[1]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reason"] == "visitor")
        .expect("a visitor row");
    assert!(visitor["packets_per_second"].as_f64().is_some(), "{visitor}");
    daemon.stop().unwrap();
}
