//! Operating the daemon: `mode = "auto"` driven by a real flood in the lab, and config reload
//! (`edge config reload` and SIGHUP) that applies a good file and refuses a bad one.
use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use edge_tests::{
    daemon::Daemon,
    lab::{Lab, FLOODER, UNKNOWN, VISITOR},
    privileged, probe,
};

const TIMEOUT_MS: u32 = 700;

fn lab_with_server(clients: &[&str]) -> Lab {
    let mut lab = Lab::new(clients).expect("creating the namespace lab");
    lab.serve(probe(), &["192.0.2.1:443"]).unwrap();
    lab
}

fn status(daemon: &Daemon) -> serde_json::Value {
    serde_json::from_str(&daemon.cli(&["status", "--json"]).ok("status")).unwrap()
}

#[test]
fn auto_mode_enforces_during_a_flood_and_returns_to_monitor_after_it() {
    if !privileged("auto_mode_enforces_during_a_flood_and_returns_to_monitor_after_it") {
        return;
    }
    let lab = lab_with_server(&[VISITOR, UNKNOWN, FLOODER]);
    let iface = lab.server_if.clone();
    // Unknown sources get no budget: under enforce they are dropped, under monitor they pass.
    let policy = "mode = \"auto\"\n[auto]\nenter_pps = 300\nexit_pps = 100\nsustain_s = 2\n\
                  cool_down_s = 3\n[unknown]\nrate_pps = 0\nglobal_pps = 0\n";
    let mut daemon = Daemon::configure(&lab, &[&iface], policy, "2026-11-22").unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    daemon.cli(&["visitors", "add", VISITOR]).ok("visitors add");

    let s = status(&daemon);
    assert_eq!((s["mode"].as_str(), s["kernel_mode"].as_str()), (Some("auto"), Some("monitor")));
    assert_eq!(s["auto"]["phase"], "monitor", "{s}");
    assert!(lab.connects(probe(), UNKNOWN, 443, TIMEOUT_MS).unwrap(), "calm: monitor passes");

    // 1,500 pps of UDP to a protected port from one unknown source, for 8 s.
    let started = Instant::now();
    let mut flood = lab
        .in_client(probe())
        .args(["flood", "--from", FLOODER, "--to", "192.0.2.1:443", "--pps", "1500"])
        .args(["--secs", "8"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    daemon.wait_status("enforcing", |s| s["auto"]["phase"] == "enforce").unwrap();
    let took = started.elapsed();
    // Two measured seconds above enter_pps; the first may be the flood's first fraction of a
    // second (a fifth of 1,500 pps is already 300), so the switch comes after 1 to 2 s.
    assert!(took >= Duration::from_secs(1), "switched on one measurement: {took:?}");
    let s = status(&daemon);
    assert_eq!(s["kernel_mode"], "enforce");
    assert_eq!(s["auto"]["switches_to_enforce"], 1);
    assert!(s["unknown_pps"].as_f64().unwrap() >= 300.0, "{s}");
    assert!(!lab.connects(probe(), UNKNOWN, 443, TIMEOUT_MS).unwrap(), "attack: unknown dropped");
    assert!(lab.connects(probe(), VISITOR, 443, TIMEOUT_MS).unwrap(), "attack: visitor passes");
    let body = lab.scrape_metrics();
    for line in ["edge_enforcing 1", "edge_auto_switches_total{to=\"enforce\"} 1"] {
        assert!(body.lines().any(|l| l == line), "`{line}` not in:\n{body}");
    }

    // Still enforcing while the flood lasts; back to monitor a cool-down after it ends.
    assert_eq!(status(&daemon)["auto"]["phase"], "enforce");
    flood.wait().unwrap();
    let ended = Instant::now();
    daemon.wait_status("calm again", |s| s["auto"]["phase"] == "monitor").unwrap();
    assert!(ended.elapsed() >= Duration::from_secs(2), "left before the cool-down");
    let s = status(&daemon);
    assert_eq!(
        (s["auto"]["switches_to_enforce"].as_u64(), s["auto"]["switches_to_monitor"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(lab.connects(probe(), UNKNOWN, 443, TIMEOUT_MS).unwrap(), "calm: monitor passes");
    let log = daemon.log();
    assert_eq!(log.matches("switching to enforce").count(), 1, "{log}");
    assert_eq!(log.matches("switching back to monitor").count(), 1, "{log}");
    let body = lab.scrape_metrics();
    assert!(body.lines().any(|l| l == "edge_auto_switches_total{to=\"monitor\"} 1"), "{body}");
    assert!(body.lines().any(|l| l == "edge_enforcing 0"), "{body}");
    daemon.stop().unwrap();
}

/// The flood that kept auto mode out of enforce: 2 s on, 1.5 s off, never `sustain_s` (3)
/// seconds in a row above `enter_pps`, yet most of the time. Real packets through the lab.
#[test]
fn a_flood_that_pauses_every_few_seconds_still_switches_auto_to_enforce() {
    if !privileged("a_flood_that_pauses_every_few_seconds_still_switches_auto_to_enforce") {
        return;
    }
    let lab = lab_with_server(&[UNKNOWN, FLOODER]);
    let iface = lab.server_if.clone();
    let policy = "mode = \"auto\"\n[auto]\nenter_pps = 1000\nexit_pps = 500\nsustain_s = 3\n\
                  cool_down_s = 30\n[unknown]\nrate_pps = 0\nglobal_pps = 0\n";
    let mut daemon = Daemon::configure(&lab, &[&iface], policy, "2026-11-22").unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    let mut enforcing_after = None;
    for pulse in 1..=6 {
        let mut flood = lab
            .in_client(probe())
            .args(["flood", "--from", FLOODER, "--to", "192.0.2.1:443", "--pps", "3000"])
            .args(["--secs", "2"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        flood.wait().unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        if status(&daemon)["auto"]["phase"] == "enforce" {
            enforcing_after = Some(pulse);
            break;
        }
    }
    let pulses = enforcing_after.expect("six pulses of 2 s on, 1.5 s off left auto in monitor");
    eprintln!("enforcing after {pulses} pulses");
    assert_eq!(status(&daemon)["kernel_mode"], "enforce");
    assert!(!lab.connects(probe(), UNKNOWN, 443, TIMEOUT_MS).unwrap(), "attack: unknown dropped");
    daemon.stop().unwrap();
}

#[test]
fn a_bad_config_is_refused_on_reload_and_a_good_one_applies() {
    if !privileged("a_bad_config_is_refused_on_reload_and_a_good_one_applies") {
        return;
    }
    let lab = lab_with_server(&[UNKNOWN]);
    let iface = lab.server_if.clone();
    let policy = "mode = \"enforce\"\n[unknown]\nrate_pps = 0\nglobal_pps = 0\n\
                  [lists]\nallow = []\n";
    let mut daemon = Daemon::configure(&lab, &[&iface], policy, "2026-11-22").unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    assert!(!lab.connects(probe(), UNKNOWN, 443, TIMEOUT_MS).unwrap());
    let good = std::fs::read_to_string(&daemon.config).unwrap();
    let shown = daemon.cli(&["config", "show"]).ok("config show");

    // A value out of range: refused with file:line and field; nothing changes.
    std::fs::write(&daemon.config, good.replace("rate_pps = 0", "rate_pps = -5")).unwrap();
    let run = daemon.cli(&["config", "reload"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let at = format!("{}:3:", daemon.config.display());
    assert!(
        run.stderr.contains("FAILED_PRECONDITION")
            && run.stderr.contains("config not reloaded, the running one stays")
            && run.stderr.contains(&at)
            && run.stderr.contains("unknown.rate_pps"),
        "{}",
        run.stderr
    );
    assert_eq!(daemon.cli(&["config", "show"]).ok("config show"), shown);

    // What only a restart can change is refused too, naming the field.
    let moved = good.replace("edge.sock", "other.sock");
    std::fs::write(&daemon.config, &moved).unwrap();
    let run = daemon.cli(&["config", "reload"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("daemon.socket changed"), "{}", run.stderr);

    // A good change applies: the unknown source is allowed from now on.
    let allowed = good.replace("allow = []", &format!("allow = [\"{UNKNOWN}/32\"]"));
    std::fs::write(&daemon.config, &allowed).unwrap();
    let out = daemon.cli(&["config", "reload"]).ok("config reload");
    assert!(out.contains("lists.allow: 0 prefixes -> 1 prefixes (changed)"), "{out}");
    assert!(lab.connects(probe(), UNKNOWN, 443, TIMEOUT_MS).unwrap(), "allowed after reload");

    // SIGHUP does the same: a bad file is logged and ignored, a good one applies.
    let pid = daemon.pid().unwrap() as i32;
    std::fs::write(&daemon.config, allowed.replace("mode = \"enforce\"", "mode = \"sometimes\""))
        .unwrap();
    // SAFETY: plain syscall on our child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    wait_for(|| daemon.log().contains("SIGHUP: config not reloaded"), &daemon);
    assert_eq!(status(&daemon)["mode"], "enforce");
    std::fs::write(&daemon.config, allowed.replace("mode = \"enforce\"", "mode = \"monitor\""))
        .unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    daemon.wait_status("monitor after SIGHUP", |s| s["mode"] == "monitor").unwrap();
    assert!(daemon.log().contains("config: mode: enforce -> monitor"), "{}", daemon.log());
    daemon.stop().unwrap();
}

fn wait_for(ok: impl FnMut() -> bool, daemon: &Daemon) {
    edge_tests::wait_until("the condition", Duration::from_secs(10), ok, || daemon.log());
}

#[test]
fn edge_top_names_the_heaviest_dropped_source_and_prefix_with_its_rate() {
    if !privileged("edge_top_names_the_heaviest_dropped_source_and_prefix_with_its_rate") {
        return;
    }
    let lab = lab_with_server(&[UNKNOWN, FLOODER]);
    let iface = lab.server_if.clone();
    let policy = "mode = \"enforce\"\n[unknown]\nrate_pps = 0\nglobal_pps = 0\n\
                  [events]\ndrop_sample = 10\n";
    let mut daemon = Daemon::configure(&lab, &[&iface], policy, "2026-11-22").unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    let empty: serde_json::Value =
        serde_json::from_str(&daemon.cli(&["top", "--json"]).ok("top")).unwrap();
    assert_eq!(empty["samples"].as_u64().unwrap_or(0), 0, "{empty}");

    // 2,000 pps from one source for 3 s, and a few dropped connection attempts from another.
    let flood = lab
        .in_client(probe())
        .args(["flood", "--from", FLOODER, "--to", "192.0.2.1:443", "--pps", "2000", "--secs", "3"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(flood.success());
    assert!(!lab.connects(probe(), UNKNOWN, 443, TIMEOUT_MS).unwrap());
    let top: serde_json::Value =
        serde_json::from_str(&daemon.cli(&["top", "--json", "--limit", "5"]).ok("top")).unwrap();
    assert_eq!(top["sample_every"], 10);
    let first = &top["sources"][0];
    assert_eq!(first["key"], FLOODER, "{top}");
    assert_eq!(first["reason"], "unknown_rate");
    let pps = first["pps"].as_f64().unwrap();
    assert!((1200.0..=2800.0).contains(&pps), "estimated {pps} pps for 2000: {top}");
    assert_eq!(top["prefixes"][0]["key"], "192.0.2.0/24", "{top}");
    let text = daemon.cli(&["top"]).ok("top");
    assert!(text.contains(FLOODER) && text.contains("192.0.2.0/24"), "{text}");
    let run = daemon.cli(&["top", "--limit", "5000"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("INVALID_ARGUMENT: limit"), "{}", run.stderr);
    daemon.stop().unwrap();
}

/// A rule's expiry is its own operation: a prefix the config file gained after an API rule for
/// it was added leaves that API rule to expire (the prefix stays allowed for the config file),
/// and no other rule's expiry waits on it. Allow and deny alike.
#[test]
fn api_rules_expire_on_time_even_when_the_config_file_lists_the_same_prefix() {
    if !privileged("api_rules_expire_on_time_even_when_the_config_file_lists_the_same_prefix") {
        return;
    }
    const KEPT: &str = "9.9.5.7"; // 9.9.5.0/24: an API rule, then the config file's too
    const EXPIRING: &str = "9.9.3.7"; // 9.9.3.0/24: an API rule only
    let lab = lab_with_server(&[KEPT, EXPIRING]);
    let policy = "mode = \"enforce\"\n[unknown]\nrate_pps = 0\nglobal_pps = 0\n[lists]\nallow = []\ndeny = []\n";
    // Expiries are wall-clock times: the daemon's day is the real one here.
    let today = edge::Day::today_utc().to_string();
    let mut daemon = Daemon::configure(&lab, &[&lab.server_if], policy, &today).unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    daemon.cli(&["allow", "add", "9.9.5.0/24", "--expires", "6s"]).ok("allow add");
    daemon.cli(&["deny", "add", "9.9.6.0/24", "--expires", "6s"]).ok("deny add");
    let with_config = std::fs::read_to_string(&daemon.config)
        .unwrap()
        .replace("allow = []", "allow = [\"9.9.5.0/24\"]")
        .replace("deny = []", "deny = [\"9.9.6.0/24\"]");
    std::fs::write(&daemon.config, with_config).unwrap();
    daemon.cli(&["config", "reload"]).ok("config reload");
    daemon.cli(&["allow", "add", "9.9.3.0/24", "--expires", "3s"]).ok("allow add");
    daemon.cli(&["deny", "add", "9.9.7.0/24", "--expires", "3s"]).ok("deny add");
    assert!(lab.connects(probe(), EXPIRING, 443, TIMEOUT_MS).unwrap(), "allowed by its API rule");

    // Both API rules of each list expire on time; the config file's prefixes stay in force.
    daemon
        .wait_status("the API rules expired", |_| {
            let allow = daemon.cli(&["allow", "list", "--json"]).ok("allow list");
            let deny = daemon.cli(&["deny", "list", "--json"]).ok("deny list");
            !allow.contains("\"source\": \"api\"") && !deny.contains("\"source\": \"api\"")
        })
        .unwrap();
    let allow = daemon.cli(&["allow", "list"]).ok("allow list");
    assert!(allow.contains("9.9.5.0/24") && allow.contains("config"), "{allow}");
    assert!(!allow.contains("9.9.3.0/24"), "{allow}");
    assert!(!lab.connects(probe(), EXPIRING, 443, TIMEOUT_MS).unwrap(), "expired: dropped again");
    assert!(lab.connects(probe(), KEPT, 443, TIMEOUT_MS).unwrap(), "the config file's allow stays");
    let s = status(&daemon);
    assert_eq!(s["failing_jobs"], serde_json::json!([]), "{s}");
    assert!(!daemon.log().contains("background job failed"), "{}", daemon.log());
    daemon.stop().unwrap();
}
