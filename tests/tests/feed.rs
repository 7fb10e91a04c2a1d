//! The fleet feed end to end: a real redis-server (in the lab's server namespace) carries
//! admissions from a "queue service" (redis-cli XADD) to a real daemon. Admitted clients' TCP
//! gets through; with the daemon and then Redis down, admitted clients keep passing and
//! newcomers are held; after recovery the backlog applies, exactly once, nothing lost.
use std::{
    path::Path,
    process::{Child, Stdio},
    time::Duration,
};

use edge_tests::{
    daemon::Daemon,
    lab::{Lab, UNKNOWN},
    privileged, probe,
};

const FIRST: &str = "192.0.2.30";
const BACKLOG: &str = "192.0.2.31";
const PORT: &str = "6390";
const STREAM: &str = "edge:admissions";

fn connects(lab: &Lab, src: &str) -> bool {
    lab.connects(probe(), src, 443, 700).unwrap()
}

/// The global unknown budget the kernel runs on `iface`, in packets per second (0: none).
fn kernel_global_pps(iface: &str) -> u64 {
    let mut maps = edge::Maps::open_pinned(&Path::new(edge::filter::PIN_ROOT).join(iface))
        .expect("opening the pins");
    let interval = maps.config().unwrap().get(&0, 0).unwrap().global_interval_ns;
    1_000_000_000u64.checked_div(interval).unwrap_or(0)
}

/// A redis-server in the server namespace, persisting to `dir` (append-only file, fsync always).
fn redis(lab: &Lab, dir: &Path) -> Child {
    let child = lab
        .in_server("redis-server")
        .args(["--port", PORT, "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"])
        .args(["--appendfsync", "always", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting redis-server (installed by `cargo xtask setup`)");
    let answers = || cli(lab, &["PING"]).as_deref() == Some("PONG");
    edge_tests::wait_until("redis-server to answer", Duration::from_secs(10), answers, String::new);
    child
}

fn cli(lab: &Lab, args: &[&str]) -> Option<String> {
    let out = lab.in_server("redis-cli").args(["-p", PORT]).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn stop(mut child: Child) {
    // SAFETY: plain syscall on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
}

fn status(daemon: &Daemon) -> serde_json::Value {
    serde_json::from_str(&daemon.cli(&["status", "--json"]).ok("status")).unwrap()
}

fn wait(what: &str, ok: impl FnMut() -> bool) {
    edge_tests::wait_until(what, Duration::from_secs(15), ok, String::new);
}

#[test]
fn the_redis_feed_survives_outages_and_applies_exactly_once() {
    if !privileged("the_redis_feed_survives_outages_and_applies_exactly_once") {
        return;
    }
    let mut lab = Lab::new(&[FIRST, BACKLOG, UNKNOWN]).expect("lab");
    lab.serve(probe(), &["192.0.2.1:443"]).unwrap();
    let redis_dir = tempfile::tempdir().unwrap();
    let mut server = Some(redis(&lab, redis_dir.path()));

    let iface = lab.server_if.clone();
    let policy = format!(
        "mode = \"enforce\"\n[unknown]\nrate_pps = 0\nglobal_pps = 0\n[admission]\n\
         keys = \"ticket.keys\"\nredis_url = \"redis://127.0.0.1:{PORT}\"\nstream = \"{STREAM}\"\n\
         outage_grace_s = 2\non_queue_outage = \"hold\"\n"
    );
    let today = edge::Day::today_utc().to_string();
    let mut daemon = Daemon::configure(&lab, &[&iface], &policy, &today).unwrap();
    let keys = daemon.config_dir().join("ticket.keys");
    daemon.cli(&["key", "generate", "--out", keys.to_str().unwrap()]).ok("key generate");
    let ring = edge::ticket::Keyring::load(&keys).unwrap();
    let ticket = |ip: &str| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let t = edge::ticket::issue(ring.current(), ip.parse().unwrap(), now.as_secs() + 600, 1);
        edge::ticket::encode(&t)
    };
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    wait("feed ok", || status(&daemon)["feed"] == "ok");
    // An idle stream is not an outage: past the grace with nothing to read, still ok.
    std::thread::sleep(Duration::from_millis(3000));
    assert_eq!(status(&daemon)["feed"], "ok", "{}", daemon.log());

    // The queue service admits FIRST through the stream.
    cli(&lab, &["XADD", STREAM, "*", "ticket", &ticket(FIRST)]).expect("XADD");
    wait("FIRST admitted", || connects(&lab, FIRST));
    assert!(!connects(&lab, UNKNOWN));

    // The daemon dies; the queue service keeps admitting (the backlog).
    daemon.kill9().unwrap();
    let backlog_id = cli(&lab, &["XADD", STREAM, "*", "ticket", &ticket(BACKLOG)]).expect("XADD");
    // A malformed entry in the stream is skipped and counted, never fatal.
    let junk_id = cli(&lab, &["XADD", STREAM, "*", "ticket", "garbage"]).expect("XADD");
    assert!(connects(&lab, FIRST), "admitted keep passing with the daemon dead");
    assert!(!connects(&lab, BACKLOG), "newcomers are held");

    // Redis dies too, then the daemon comes back: degraded, holding.
    stop(server.take().unwrap());
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    wait("degraded", || status(&daemon)["feed"].as_str().unwrap_or("").starts_with("degraded"));
    assert!(connects(&lab, FIRST), "admitted keep passing while degraded");
    assert!(!connects(&lab, BACKLOG), "newcomers still held (hold: no fail-open)");
    assert!(!connects(&lab, UNKNOWN));
    assert!(daemon.log().contains("DEGRADED"), "{}", daemon.log());

    // Redis recovers (from its own append-only file): the backlog applies.
    server = Some(redis(&lab, redis_dir.path()));
    wait("BACKLOG admitted", || connects(&lab, BACKLOG));
    wait("feed ok again", || status(&daemon)["feed"] == "ok");
    let s = status(&daemon);
    assert_eq!(s["feed_position"], junk_id.as_str(), "read up to the last entry");
    assert_eq!(s["admissions"], 2, "{s}");
    assert!(backlog_id < junk_id);
    let malformed = s["admission_rejections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reason"] == "malformed")
        .map(|r| r["count"].as_u64().unwrap());
    assert_eq!(malformed, Some(1), "{s}");

    // Exactly once: a restart resumes after the stored position and applies nothing again.
    daemon.stop().unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    wait("feed ok after restart", || status(&daemon)["feed"] == "ok");
    std::thread::sleep(Duration::from_millis(1500));
    let s = status(&daemon);
    assert_eq!(s["feed_position"], junk_id.as_str());
    assert_eq!(
        s["admission_rejections"].as_array().map_or(0, |a| a.len()),
        0,
        "nothing re-read: {s}\n{}",
        daemon.log()
    );
    assert!(connects(&lab, FIRST) && connects(&lab, BACKLOG));
    assert!(!connects(&lab, UNKNOWN));
    daemon.stop().unwrap();
    stop(server.take().unwrap());
}

#[test]
fn open_rate_limited_raises_the_unknown_budget_to_its_ceiling_and_no_further() {
    if !privileged("open_rate_limited_raises_the_unknown_budget_to_its_ceiling_and_no_further") {
        return;
    }
    let mut lab = Lab::new(&[UNKNOWN]).expect("lab");
    lab.serve(probe(), &["192.0.2.1:443"]).unwrap();
    // No Redis yet: the feed fails from the start. Unknown sources normally get nothing (the
    // global budget is 0); during the outage they get the ceiling, and a small per-source one.
    let policy = format!(
        "mode = \"enforce\"\n[unknown]\nrate_pps = 5\nburst = 5\nglobal_pps = 0\n[admission]\n\
         keys = \"ticket.keys\"\nredis_url = \"redis://127.0.0.1:{PORT}\"\noutage_grace_s = 1\n\
         on_queue_outage = \"open-rate-limited\"\noutage_ceiling_pps = 1000\n"
    );
    let today = edge::Day::today_utc().to_string();
    let mut daemon = Daemon::configure(&lab, &[&lab.server_if.clone()], &policy, &today).unwrap();
    let keys = daemon.config_dir().join("ticket.keys");
    daemon.cli(&["key", "generate", "--out", keys.to_str().unwrap()]).ok("key generate");
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    wait("degraded", || status(&daemon)["feed"].as_str().unwrap_or("").starts_with("degraded"));
    assert_eq!(kernel_global_pps(&lab.server_if), 1000, "the ceiling is in force");
    // `config show` is the file's configuration, which the outage does not change.
    let shown = daemon.cli(&["config", "show"]).ok("config show");
    assert!(shown.contains("global_pps = 0"), "{shown}");
    wait("an unknown source within the ceiling", || connects(&lab, UNKNOWN));

    // The feed answers again: back to the configured budget, unknown sources get nothing.
    let redis_dir = tempfile::tempdir().unwrap();
    let server = redis(&lab, redis_dir.path());
    wait("feed ok", || status(&daemon)["feed"] == "ok");
    assert_eq!(kernel_global_pps(&lab.server_if), 0, "the configured budget again");
    assert!(!connects(&lab, UNKNOWN), "no budget once the feed is back");
    daemon.stop().unwrap();
    stop(server);
}

/// Waiting rooms' tokens through the feed: an entry says its kind (or it is detected) and the
/// address it admits; each is verified like any other, replays and forgeries are counted and
/// skipped.
#[test]
fn waiting_room_tokens_come_through_the_feed_with_their_kind() {
    if !privileged("waiting_room_tokens_come_through_the_feed_with_their_kind") {
        return;
    }
    const QUEUED: &str = "192.0.2.40";
    const JWT_USER: &str = "192.0.2.41";
    const REPLAYER: &str = "192.0.2.42";
    const FORGER: &str = "192.0.2.43";
    let mut lab = Lab::new(&[QUEUED, JWT_USER, REPLAYER, FORGER]).expect("lab");
    lab.serve(probe(), &["192.0.2.1:443"]).unwrap();
    let redis_dir = tempfile::tempdir().unwrap();
    let server = redis(&lab, redis_dir.path());
    let iface = lab.server_if.clone();
    let policy = format!(
        "mode = \"enforce\"\n[unknown]\nrate_pps = 0\nglobal_pps = 0\n[admission]\n\
         redis_url = \"redis://127.0.0.1:{PORT}\"\nstream = \"{STREAM}\"\n\
         [admission.queueit]\nsecret_file = \"queueit.secret\"\nevents = [\"sale1\"]\n\
         [admission.jwt]\njwks_file = \"jwks.json\"\nissuer = \"https://queue.example/api\"\n\
         audience = \"evt-1\"\nalgorithms = [\"RS256\", \"HS256\"]\n"
    );
    let today = edge::Day::today_utc().to_string();
    let mut daemon = Daemon::configure(&lab, &[&iface], &policy, &today).unwrap();
    let dir = daemon.config_dir().to_path_buf();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let minted = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/mint_tokens.py"))
        .arg(&dir)
        .args([&now.as_secs().to_string(), "https://queue.example/api", "evt-1", "sale1"])
        .output()
        .unwrap();
    assert!(minted.status.success(), "{}", String::from_utf8_lossy(&minted.stderr));
    let cases: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("cases.json")).unwrap()).unwrap();
    let token = |name: &str| -> String {
        cases.iter().find(|c| c["name"] == name).unwrap()["token"].as_str().unwrap().into()
    };
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    let rs = token("jwt RS256 valid");
    let entries: [&[&str]; 5] = [
        &["kind", "queueit", "token", &token("queueit valid"), "ip", QUEUED],
        &["kind", "jwt", "token", &rs, "ip", JWT_USER],
        &["token", &rs, "ip", REPLAYER],
        &["token", &token("jwt HS256 signed with the RSA public key"), "ip", FORGER],
        &["kind", "saml", "token", "x", "ip", FORGER],
    ];
    let mut last = String::new();
    for fields in entries {
        let mut args = vec!["XADD", STREAM, "*"];
        args.extend_from_slice(fields);
        last = cli(&lab, &args).expect("XADD");
    }
    wait("the entries applied", || status(&daemon)["feed_position"] == last.as_str());
    assert!(connects(&lab, QUEUED), "a Queue-it token from the feed");
    assert!(connects(&lab, JWT_USER), "a JWT from the feed");
    assert!(!connects(&lab, REPLAYER), "the same JWT for another address");
    assert!(!connects(&lab, FORGER));
    let s = status(&daemon);
    let refused = |kind: &str, reason: &str| {
        s["tokens"].as_array().unwrap().iter().filter(|k| k["kind"] == kind).any(|k| {
            k["refused"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["reason"] == reason && r["count"] == 1)
        })
    };
    assert!(refused("jwt", "replayed"), "{s}");
    assert!(refused("jwt", "alg_key_mismatch"), "{s}");
    assert!(refused("unknown", "malformed"), "{s}");
    stop(server);
}
