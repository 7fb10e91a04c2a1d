//! End to end with the daemon: a real `edge daemon` in a namespace lab, driven by the real CLI,
//! judged by real TCP connections and by the pinned maps themselves.
use std::{net::Ipv4Addr, path::Path, time::Duration};

use edge::filter::{Maps, PIN_ROOT};
use edge_tests::{
    daemon::Daemon,
    lab::{Lab, DENIED, UNKNOWN, VISITOR},
    privileged, probe,
};

const TIMEOUT_MS: u32 = 700;
/// Unknown sources get nothing: every unknown SYN to a protected port is dropped.
const STRICT: &str = "mode = \"enforce\"\n[unknown]\nrate_pps = 0\nglobal_pps = 0\n";

/// A lab with a TCP server on 443 and 22, and a daemon configured for its server interface.
fn lab_with_daemon(today: &str) -> (Lab, Daemon) {
    let mut lab = Lab::new(&[VISITOR, UNKNOWN, DENIED]).expect("creating the namespace lab");
    lab.serve(probe(), &["192.0.2.1:443", "192.0.2.1:22"]).unwrap();
    let iface = lab.server_if.clone();
    let mut daemon = Daemon::configure(&lab, &[&iface], STRICT, today).unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    (lab, daemon)
}

fn connects(lab: &Lab, src: &str, port: u16) -> bool {
    lab.connects(probe(), src, port, TIMEOUT_MS).unwrap()
}

/// Whether the pinned IPv4 bitmap of `iface` holds `ip` (the kernel's own view).
fn in_kernel_bitmap(iface: &str, ip: &str) -> bool {
    let maps = Maps::open_pinned(&Path::new(PIN_ROOT).join(iface)).expect("opening the pins");
    maps.visitors_v4().contains(ip.parse::<Ipv4Addr>().unwrap())
}

/// The last whole record in the store at `state`, as the daemon's own recovery reads it.
fn last_record(state: &Path) -> u64 {
    let snapshot = std::fs::read(state.join("snapshot")).ok();
    let mut logs: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(state)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("wal-")))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    logs.sort();
    let snapshot = snapshot.as_deref().map(|b| (Path::new("snapshot"), b));
    edge::store::recover(snapshot, &logs).expect("the store recovers").last_seq
}

/// Stops (SIGSTOP) or continues (SIGCONT) process `pid`; a stop is waited for, so no system
/// call of it is still running when this returns.
fn freeze(pid: i32, stop: bool) {
    // SAFETY: plain syscall on our child's pid.
    unsafe { libc::kill(pid, if stop { libc::SIGSTOP } else { libc::SIGCONT }) };
    let stopped = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // The state follows the command name's closing parenthesis.
        stat.rsplit(')').next().unwrap().trim_start().starts_with('T')
    };
    while stop && !stopped() {
        std::thread::sleep(Duration::from_micros(100));
    }
}

fn count(daemon: &Daemon) -> u64 {
    let out = daemon.cli(&["visitors", "count", "--json"]).ok("visitors count");
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["total"].as_u64().unwrap_or(0)
}

#[test]
fn a_recorded_visitor_passes_until_the_window_rolls_past_it() {
    if !privileged("a_recorded_visitor_passes_until_the_window_rolls_past_it") {
        return;
    }
    let (lab, daemon) = lab_with_daemon("2026-11-01");
    assert!(!connects(&lab, VISITOR, 443), "not yet a visitor");

    daemon.cli(&["visitors", "add", VISITOR]).ok("visitors add");
    assert!(in_kernel_bitmap(&lab.server_if, VISITOR));
    assert!(connects(&lab, VISITOR, 443), "recorded on D");
    assert!(!connects(&lab, UNKNOWN, 443), "an unknown source is still dropped");

    // D+20 is the last day inside a 21-day window. A clock 20 days on in one step is more
    // than window.max_jump_days (7): the daemon holds the window there until told.
    std::fs::write(&daemon.clock, "2026-11-21").unwrap();
    daemon
        .wait_status("held", |s| {
            s["window_hold"].as_str().is_some_and(|h| h.contains("2026-11-21"))
        })
        .unwrap();
    let held = daemon.cli(&["status", "--json"]).ok("status");
    assert!(held.contains("\"rolled_to\": \"2026-11-01\""), "{held}");
    daemon.cli(&["window", "roll"]).ok("window roll");
    daemon
        .wait_status("rolled", |s| s["rolled_to"] == "2026-11-21" && s["window_hold"] == "")
        .unwrap();
    assert!(connects(&lab, VISITOR, 443), "D+20 still passes");
    assert_eq!(count(&daemon), 1);

    daemon.set_today("2026-11-22").unwrap();
    assert!(!connects(&lab, VISITOR, 443), "D+21 no longer passes");
    assert!(!in_kernel_bitmap(&lab.server_if, VISITOR));
    assert_eq!(count(&daemon), 0);

    // Seen again: back in.
    daemon.cli(&["visitors", "add", VISITOR]).ok("visitors add");
    assert!(connects(&lab, VISITOR, 443));
    let stats = daemon.cli(&["stats", "--json"]).ok("stats");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stats).unwrap();
    let packets = |reason: &str| {
        rows.iter()
            .filter(|r| r["reason"] == reason)
            .map(|r| r["packets"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert!(packets("visitor") >= 3, "{stats}");
    assert!(packets("unknown_global") + packets("unknown_rate") >= 2, "{stats}");
}

/// Writes `n` distinct IPv4 addresses from `first` upwards, one per line.
fn big_list(path: &Path, first: Ipv4Addr, n: u32) {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        writeln!(out, "{}", Ipv4Addr::from(u32::from(first) + i)).unwrap();
    }
    out.flush().unwrap();
}

#[test]
fn kill_9_during_a_big_import_loses_nothing_acknowledged_and_never_stops_enforcing() {
    if !privileged(
        "kill_9_during_a_big_import_loses_nothing_acknowledged_and_never_stops_enforcing",
    ) {
        return;
    }
    let (lab, mut daemon) = lab_with_daemon("2026-11-22");
    daemon.cli(&["visitors", "add", VISITOR]).ok("visitors add");
    daemon.cli(&["deny", "add", "203.0.113.0/24", "--comment", "abuse"]).ok("deny add");
    const N: u32 = 1_000_000;
    let mut round = 0u8;
    let mut import = |daemon: &Daemon, fifo: bool| {
        // Each round imports its own addresses: 10.(16 * round).0.0 upwards.
        let first = Ipv4Addr::new(10, 16 * round, 0, 0);
        round += 1;
        let file = daemon.config_dir().join(format!("big{round}.txt"));
        if fifo {
            let path = std::ffi::CString::new(file.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: valid path.
            assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        } else {
            big_list(&file, first, N);
        }
        let child = std::process::Command::new(edge_tests::edge_bin())
            .args(["visitors", "import"])
            .arg(&file)
            .env("EDGE_SOCKET", &daemon.socket)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        (first, file, child)
    };

    // Check everything a restart must preserve; returns whether the import was applied.
    let check = |daemon: &mut Daemon, before: u64, first: Ipv4Addr, acknowledged: bool| {
        // No daemon: the pinned filter keeps enforcing exactly as before.
        assert!(connects(&lab, VISITOR, 443), "visitor passes while the daemon is dead");
        assert!(!connects(&lab, UNKNOWN, 443), "unknown dropped while the daemon is dead");
        assert!(!connects(&lab, DENIED, 22), "denied dropped while the daemon is dead");
        daemon.start().unwrap();
        daemon.wait_ready().unwrap();
        let status = daemon.cli(&["status", "--json"]).ok("status");
        assert!(status.contains("\"adopted\": true"), "{status}");
        let after = count(daemon);
        let applied = after == before + u64::from(N);
        assert!(after == before || applied, "{before} before, {after} after: all or nothing");
        if acknowledged {
            assert!(applied, "an acknowledged import must survive kill -9");
        }
        assert!(in_kernel_bitmap(&lab.server_if, VISITOR));
        let deny = daemon.cli(&["deny", "list"]).ok("deny list");
        assert!(deny.contains("203.0.113.0/24") && deny.contains("abuse"), "{deny}");
        // The maps match the store after the restart.
        let last = Ipv4Addr::from(u32::from(first) + N - 1).to_string();
        for ip in [first.to_string(), last] {
            assert_eq!(in_kernel_bitmap(&lab.server_if, &ip), applied, "{ip}: kernel vs store");
        }
        applied
    };

    // 1. Killed while the file is still streaming (half of it written to a FIFO): never applied.
    let before = count(&daemon);
    let (first, file, mut child) = import(&daemon, true);
    {
        use std::io::Write as _;
        let mut fifo = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        for i in 0..N / 2 {
            writeln!(fifo, "{}", Ipv4Addr::from(u32::from(first) + i)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
        daemon.kill9().unwrap();
        drop(fifo); // end of file: the client finds the daemon gone
        let acknowledged = child.wait().unwrap().success();
        assert!(!acknowledged, "the daemon died before the end of the file");
    }
    assert!(!check(&mut daemon, before, first, false), "a half-streamed import was applied");

    // 2. A whole import, timed, so the kills below land inside it.
    let before = count(&daemon);
    let (first, _, mut child) = import(&daemon, false);
    let start = std::time::Instant::now();
    assert!(child.wait().unwrap().success(), "a whole import");
    let took = start.elapsed();
    assert_eq!(count(&daemon), before + u64::from(N));
    assert!(in_kernel_bitmap(&lab.server_if, &first.to_string()));

    // 3. Killed once the import's record is whole in the log and before the daemon answers:
    //    applied (it is on disk) but not acknowledged, and the client says the outcome is not
    //    known and how to check. Each time the log has grown by about a record, the daemon is
    //    frozen (SIGSTOP) and the log read with the store's own recovery: a whole new record
    //    and a client still waiting is the moment, and the kill lands in it. Otherwise the
    //    daemon is thawed; a round whose answer came first is tried again.
    let state = daemon.state_dir();
    let log_bytes = |state: &Path| -> u64 {
        std::fs::read_dir(state)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("wal-")))
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .sum()
    };
    let mut landed = None;
    for _attempt in 0..5 {
        let before = count(&daemon);
        let pid = daemon.pid().expect("running") as i32;
        freeze(pid, true); // no compaction moves files while they are read
        let (logged, seq) = (log_bytes(&state), last_record(&state));
        freeze(pid, false);
        let (first, _, mut child) = import(&daemon, false);
        let killed = loop {
            std::thread::sleep(Duration::from_micros(300));
            if child.try_wait().unwrap().is_some() {
                break false; // answered
            }
            if log_bytes(&state) <= logged + u64::from(N) {
                continue;
            }
            freeze(pid, true);
            std::thread::sleep(Duration::from_millis(50)); // an answer already sent arrives
            let whole = last_record(&state) > seq;
            if whole && child.try_wait().unwrap().is_none() {
                daemon.kill9().unwrap();
                break true;
            }
            freeze(pid, false);
            if whole {
                break false;
            }
        };
        if killed {
            landed = Some((before, first, child));
            break;
        }
        assert!(child.wait().unwrap().success(), "an import that was not killed");
    }
    let (before, first, child) = landed.expect("in 5 imports, a kill between write and answer");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "killed before it answered");
    assert!(stderr.contains("may or may not have been applied"), "{stderr}");
    // Right after a kill -9 the socket file is still there: status reads the pins.
    let offline = daemon.cli(&["status"]);
    assert_eq!(offline.code, 0, "{}{}", offline.stdout, offline.stderr);
    assert!(offline.stdout.contains("attached (pinned)"), "{}", offline.stdout);
    assert!(check(&mut daemon, before, first, false), "written before the kill: applied");

    // 4. Killed at points through the import (streaming, parsing, committing).
    for percent in [10u32, 30, 50, 70, 90] {
        let before = count(&daemon);
        let (first, _, child) = import(&daemon, false);
        std::thread::sleep(took * percent / 100);
        daemon.kill9().unwrap();
        let out = child.wait_with_output().unwrap();
        let acknowledged = out.status.success();
        let applied = check(&mut daemon, before, first, acknowledged);
        eprintln!(
            "killed at {percent}% of {took:?}: acknowledged {acknowledged}, applied {applied}"
        );
    }
    assert!(connects(&lab, VISITOR, 443));
}

#[test]
fn without_pins_the_daemon_rebuilds_every_map_from_its_store() {
    if !privileged("without_pins_the_daemon_rebuilds_every_map_from_its_store") {
        return;
    }
    let (lab, mut daemon) = lab_with_daemon("2026-11-22");
    daemon.cli(&["visitors", "add", VISITOR, "2001:db8:1:2::10"]).ok("visitors add");
    daemon.cli(&["deny", "add", "203.0.113.0/24"]).ok("deny add");
    daemon.cli(&["mode", "enforce"]).ok("mode");
    daemon.stop().unwrap();

    // A reboot, as far as the filter is concerned: no program, no maps, no pins.
    daemon.cli(&["detach", "--iface", &lab.server_if]).ok("detach");
    assert!(!Path::new(PIN_ROOT).join(&lab.server_if).exists());
    assert!(connects(&lab, UNKNOWN, 443), "no filter: everyone connects");

    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    let status = daemon.cli(&["status", "--json"]).ok("status");
    assert!(status.contains("\"adopted\": false"), "{status}");
    assert!(in_kernel_bitmap(&lab.server_if, VISITOR), "rebuilt before ready");
    let maps_dir = Path::new(PIN_ROOT).join(&lab.server_if);
    let mut maps = Maps::open_pinned(&maps_dir).unwrap();
    let v6: Vec<[u8; 8]> = maps.visitors_v6().unwrap().keys().map(|k| k.unwrap()).collect();
    assert_eq!(v6, vec![[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2]]);
    assert!(connects(&lab, VISITOR, 443));
    assert!(!connects(&lab, UNKNOWN, 443));
    assert!(!connects(&lab, DENIED, 22), "the deny rule was rebuilt too");
}

#[test]
fn the_cli_reads_in_json_round_trips_exports_and_exits_with_the_right_codes() {
    if !privileged("the_cli_reads_in_json_round_trips_exports_and_exits_with_the_right_codes") {
        return;
    }
    let (lab, daemon) = lab_with_daemon("2026-11-22");
    let dir = daemon.config_dir();
    // Before any traffic, stats in JSON already name every reason (with zeros).
    let stats: Vec<serde_json::Value> =
        serde_json::from_str(&daemon.cli(&["stats", "--json"]).ok("stats")).unwrap();
    for reason in edge_common::reason::REASON_NAMES {
        assert!(stats.iter().any(|r| r["reason"] == reason), "{reason} missing: {stats:?}");
    }
    // Nothing is dropped before any traffic (the kernel's own link-local packets, such as
    // neighbour discovery and MLD reports on the new link, may already have passed).
    let dropped = |r: &&serde_json::Value| r["action"] != "pass" && r["packets"] != 0;
    assert!(!stats.iter().any(|r| dropped(&r)), "{stats:?}");
    daemon.cli(&["visitors", "add", "192.0.2.10", "--day", "2026-11-20"]).ok("add");
    daemon.cli(&["visitors", "add", "2001:db8:1:2::10", "198.18.0.1"]).ok("add");
    let log = dir.join("access.log");
    std::fs::write(
        &log,
        "198.18.0.2 - - [21/Nov/2026:23:59:59 -0200] \"GET / HTTP/1.1\" 200 5 \"-\" \"x\"\n",
    )
    .unwrap();
    assert_eq!(daemon.cli(&["visitors", "import"]).code, 2, "no file is a usage error");
    daemon.cli(&["visitors", "import", log.to_str().unwrap()]).ok("import a combined log");

    // Export, forget everyone, import the export: the same list, days included.
    let listed = daemon.cli(&["visitors", "list"]).ok("list");
    assert_eq!(
        listed,
        "192.0.2.10,2026-11-20\n198.18.0.1,2026-11-22\n198.18.0.2,2026-11-22\n\
         2001:db8:1:2::/64,2026-11-22\n"
    );
    let export = dir.join("export.csv");
    daemon.cli(&["visitors", "export", export.to_str().unwrap()]).ok("export");
    assert_eq!(std::fs::read_to_string(&export).unwrap(), listed);
    let ips: Vec<&str> = listed.lines().map(|l| l.split(',').next().unwrap()).collect();
    let mut remove = vec!["visitors", "remove"];
    remove.extend(&ips);
    daemon.cli(&remove).ok("remove");
    assert_eq!(count(&daemon), 0);
    daemon.cli(&["visitors", "import", export.to_str().unwrap()]).ok("import the export");
    assert_eq!(daemon.cli(&["visitors", "list"]).ok("list"), listed);

    // Paging from the CLI.
    let page = daemon.cli(&["visitors", "list", "--limit", "2"]);
    assert_eq!(page.code, 0);
    assert_eq!(page.stdout.lines().count(), 2);
    assert!(page.stderr.contains("--after 198.18.0.2"), "{}", page.stderr);

    // Every read answers in JSON.
    for args in [
        vec!["status", "--json"],
        vec!["visitors", "list", "--json"],
        vec!["visitors", "count", "--json"],
        vec!["allow", "list", "--json"],
        vec!["deny", "list", "--json"],
        vec!["stats", "--json"],
        vec!["config", "show", "--json"],
    ] {
        let out = daemon.cli(&args).ok(&args.join(" "));
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap_or_else(|e| panic!("edge {}: not JSON ({e}): {out}", args.join(" ")));
    }
    // The shown config is a valid config file, meaning what the file means: a temporary API
    // rule is listed apart, as a comment, never folded into [lists] where saving the output
    // would make it permanent.
    let shown = daemon.cli(&["mode", "enforce"]).ok("mode");
    assert!(shown.contains("enforce"));
    daemon
        .cli(&["allow", "add", "198.51.100.0/24", "--expires", "1h", "--comment", "temporary"])
        .ok("allow add");
    let toml = daemon.cli(&["config", "show"]).ok("config show");
    let lists: Vec<&str> = toml.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(!lists.iter().any(|l| l.contains("198.51.100.0/24")), "{toml}");
    assert!(
        toml.lines()
            .any(|l| l.starts_with('#') && l.contains("198.51.100.0/24") && l.contains("expires")),
        "{toml}"
    );
    let copy = dir.join("shown.toml");
    std::fs::write(&copy, &toml).unwrap();
    let check = daemon.cli(&["check", "--policy", copy.to_str().unwrap()]).ok("check");
    assert!(check.contains("Enforce"), "{check}");

    // Exit codes: 1 for an error (with the gRPC code), 2 for usage.
    let bad = daemon.cli(&["visitors", "add", "192.0.2.300"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("INVALID_ARGUMENT: visits[0].ip"), "{}", bad.stderr);
    let bad_file = dir.join("bad.csv");
    std::fs::write(&bad_file, "192.0.2.1\n# fine\n192.0.2.1,2026-13-01\n").unwrap();
    let bad = daemon.cli(&["visitors", "import", bad_file.to_str().unwrap()]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("bad.csv:3: "), "{}", bad.stderr);
    assert_eq!(daemon.cli(&["mode", "block"]).code, 2);
    assert_eq!(daemon.cli(&["visitors", "frobnicate"]).code, 2);
    let nobody = daemon.cli(&["--socket", "/nonexistent/edge.sock", "visitors", "count"]);
    assert_eq!(nobody.code, 1);
    assert!(nobody.stderr.contains("cannot reach the edge daemon"), "{}", nobody.stderr);

    // Detached from outside: the daemon notices and attaches again from its store.
    daemon.cli(&["detach", "--iface", &lab.server_if]).ok("detach");
    daemon
        .wait_status("re-attached", |s| {
            s["ready"] == true && Path::new(PIN_ROOT).join(&lab.server_if).join("link").exists()
        })
        .unwrap();
    assert!(in_kernel_bitmap(&lab.server_if, "192.0.2.10"));
    assert!(daemon.log().contains("detached from outside"), "{}", daemon.log());
}

/// One flipped bit in the middle of the log is damage, not a torn write: the daemon refuses to
/// start, names the file and byte, and changes nothing on disk; `edge store salvage` keeps every
/// valid record, and the daemon starts on what it kept.
#[test]
fn a_damaged_log_is_refused_unchanged_and_salvaged_on_request() {
    if !privileged("a_damaged_log_is_refused_unchanged_and_salvaged_on_request") {
        return;
    }
    let (lab, mut daemon) = lab_with_daemon("2026-11-22");
    for i in 0..300u32 {
        let ip = Ipv4Addr::from(0x0a63_0000 + i).to_string();
        daemon.cli(&["visitors", "add", &ip]).ok("visitors add");
    }
    assert_eq!(count(&daemon), 300);
    daemon.kill9().unwrap();
    let state = daemon.state_dir();
    let wal = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("wal-"))
        .unwrap();
    let mut bytes = std::fs::read(&wal).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&wal, &bytes).unwrap();
    let before: Vec<_> = std::fs::read_dir(&state).unwrap().map(|e| e.unwrap().path()).collect();

    daemon.start().unwrap();
    daemon.wait_log("damaged", 1);
    let refused = daemon.log();
    assert!(
        refused.contains(&wal.display().to_string()) && refused.contains("edge store salvage"),
        "{refused}"
    );
    assert!(refused.contains("the record at byte"), "{refused}");
    daemon.kill9().unwrap();
    assert_eq!(std::fs::read(&wal).unwrap(), bytes, "the log was not touched");
    let after: Vec<_> = std::fs::read_dir(&state).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(before, after);

    let out =
        daemon.cli(&["store", "salvage", "--state-dir", state.to_str().unwrap()]).ok("salvage");
    // 301 records (the first day's roll, then the visits): all but the damaged one are kept.
    assert!(out.contains("kept 300 records") && out.contains("records lost: 1 "), "{out}");
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    assert_eq!(count(&daemon), 299);
    // The kernel follows the salvaged store: the first and the last visit are there.
    assert!(in_kernel_bitmap(&lab.server_if, "10.99.0.0"));
    assert!(in_kernel_bitmap(&lab.server_if, &Ipv4Addr::from(0x0a63_0000 + 299).to_string()));
    daemon.stop().unwrap();
}

/// A clock that jumps months ahead and back must not empty the whitelist: the roll is held,
/// shown, and undone by the clock coming back; it survives a restart; and an operator can
/// accept a jump with `edge window roll`.
#[test]
fn a_clock_that_jumps_forward_holds_the_window_instead_of_emptying_it() {
    if !privileged("a_clock_that_jumps_forward_holds_the_window_instead_of_emptying_it") {
        return;
    }
    let (lab, mut daemon) = lab_with_daemon("2026-11-22");
    daemon.cli(&["visitors", "add", VISITOR]).ok("visitors add");
    std::fs::write(&daemon.clock, "2027-03-01").unwrap();
    daemon
        .wait_status("held", |s| {
            s["window_hold"].as_str().is_some_and(|h| h.contains("2027-03-01"))
                && s["failing_jobs"][0]["name"] == "window_roll"
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(count(&daemon), 1, "nobody left the window");
    assert!(connects(&lab, VISITOR, 443), "the visitor still passes");
    let text = daemon.cli(&["status"]).ok("status");
    assert!(text.contains("WINDOW HELD") && text.contains("edge window roll"), "{text}");
    assert!(daemon.log().contains("the clock jumped forward"), "{}", daemon.log());
    let health = daemon.cli(&["status", "--json"]).ok("status");
    assert!(health.contains("\"today\": \"2026-11-22\""), "the daemon's day stays: {health}");
    // Visits recorded meanwhile take the daemon's day, not the clock's (in its future).
    daemon.cli(&["visitors", "add", "192.0.2.77"]).ok("visitors add during the hold");
    let file = daemon.config_dir().join("held.txt");
    std::fs::write(&file, "192.0.2.78\n").unwrap();
    daemon.cli(&["visitors", "import", file.to_str().unwrap()]).ok("import during the hold");
    assert_eq!(count(&daemon), 3);

    // The clock comes back: the hold ends on its own; a restart keeps everyone.
    std::fs::write(&daemon.clock, "2026-11-22").unwrap();
    daemon.wait_status("no longer held", |s| s["window_hold"] == "").unwrap();
    daemon.stop().unwrap();
    std::fs::write(&daemon.clock, "2027-03-01").unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    daemon.wait_status("held after a restart", |s| s["window_hold"] != "").unwrap();
    assert_eq!(count(&daemon), 3, "a restart on a wrong clock forgets nobody");
    std::fs::write(&daemon.clock, "2026-11-23").unwrap();
    daemon.wait_status("rolled one day", |s| s["rolled_to"] == "2026-11-23").unwrap();
    assert_eq!(count(&daemon), 3);

    // A jump the operator accepts rolls the window.
    std::fs::write(&daemon.clock, "2026-12-30").unwrap();
    daemon.wait_status("held", |s| s["window_hold"] != "").unwrap();
    let out = daemon.cli(&["window", "roll"]).ok("window roll");
    assert!(out.contains("from 2026-11-23 to 2026-12-30: 3 visitors left it"), "{out}");
    assert_eq!(count(&daemon), 0);
    assert!(!connects(&lab, VISITOR, 443));
    daemon.stop().unwrap();
}

/// The CLI as a pipeline's first stage: a reader that stops early (`| head -1`) ends it quietly,
/// with exit 0, not a panic; and exports, each holding a copy of the history until its reader
/// is done, are bounded like imports.
#[test]
fn the_cli_in_a_pipeline_and_exports_at_once() {
    if !privileged("the_cli_in_a_pipeline_and_exports_at_once") {
        return;
    }
    let (_lab, daemon) = lab_with_daemon("2026-11-22");
    let file = daemon.config_dir().join("many.txt");
    // Enough that an export does not fit in the buffers between the daemon and a reader.
    big_list(&file, Ipv4Addr::new(10, 1, 0, 0), 500_000);
    daemon.cli(&["visitors", "import", file.to_str().unwrap()]).ok("import");
    let piped = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "\"{}\" visitors list --limit 10000 | head -1; exit ${{PIPESTATUS[0]}}",
            edge_tests::edge_bin().display()
        ))
        .env("EDGE_SOCKET", &daemon.socket)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert_eq!(piped.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&piped.stdout), "10.1.0.0,2026-11-22\n");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Two exports whose readers do not read hold their copies; a third is refused.
    let stalled: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(edge_tests::edge_bin())
                .args(["visitors", "export"])
                .env("EDGE_SOCKET", &daemon.socket)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let third = daemon.cli(&["visitors", "export"]);
    assert_eq!(third.code, 1, "{}", third.stderr);
    assert!(
        third.stderr.contains("RESOURCE_EXHAUSTED") && third.stderr.contains("exports"),
        "{}",
        third.stderr
    );
    for mut child in stalled {
        let _ = child.kill();
        let _ = child.wait();
    }
}
