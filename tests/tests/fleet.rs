//! A fleet end to end: three real `edge daemon` processes in three namespace labs and one real
//! redis-server in a namespace of its own, reached over TCP by each node's own link. What one
//! node learns or is told, every node enforces; a stopped node catches up; a wiped node joins
//! from the snapshot after the stream was trimmed; an outage degrades and then heals with
//! nothing lost; a Redis that comes back empty is re-seeded; a forged entry is refused.
use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use edge_tests::{
    daemon::Daemon,
    fleet::{redis_url, RedisNet, REDIS_TLS_PORT, STREAM},
    lab::Lab,
    privileged, probe,
};

// Addresses only this test uses (the handshake tracepoint sees every namespace).
const VISITOR: &str = "192.0.2.150";
const DENIED: &str = "192.0.2.151";
const LEARNED: &str = "192.0.2.152";
const LATER: &str = "192.0.2.153";
const DURING_A: &str = "192.0.2.154";
const DURING_B: &str = "192.0.2.155";
const FORGED: &str = "192.0.2.156";
/// Recorded just before a failover that loses it from Redis (no client uses it).
const TAIL: &str = "192.0.2.157";
const CLIENTS: [&str; 7] = [VISITOR, DENIED, LEARNED, LATER, DURING_A, DURING_B, FORGED];

struct Node {
    lab: Lab,
    daemon: Daemon,
}

impl Node {
    fn connects(&self, src: &str) -> bool {
        self.lab.connects(probe(), src, 443, 700).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.daemon.cli(args).ok(&args.join(" "))).unwrap()
    }

    fn fleet(&self) -> serde_json::Value {
        self.json(&["fleet", "status", "--json"])
    }

    fn status(&self) -> serde_json::Value {
        self.json(&["status", "--json"])
    }

    /// What must be equal on every node: the visitors with their days, and both rule lists.
    fn holdings(&self) -> String {
        let visitors = self.daemon.cli(&["visitors", "export"]).ok("visitors export");
        let mut lines: Vec<&str> = visitors.lines().filter(|l| !l.starts_with('#')).collect();
        lines.sort();
        let rules = |list: &str| {
            let rules = self.json(&[list, "list", "--json"]);
            let mut nets: Vec<String> = rules["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| format!("{} {} {}", r["cidr"], r["comment"], r["expires_at"]))
                .collect();
            nets.sort();
            nets
        };
        format!("{}\nallow {:?}\ndeny {:?}", lines.join("\n"), rules("allow"), rules("deny"))
    }

    fn refused(&self, reason: &str) -> u64 {
        self.fleet()["refused"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["reason"] == reason)
            .map(|r| r["count"].as_u64().unwrap())
            .sum()
    }
}

#[track_caller]
fn wait(what: &str, secs: u64, ok: impl FnMut() -> bool) {
    edge_tests::wait_until(what, Duration::from_secs(secs), ok, String::new);
}

#[track_caller]
fn wait_same(nodes: &[&Node], what: &str) {
    let mut last = Vec::new();
    let same = edge_tests::poll_until(Duration::from_secs(20), || {
        last = nodes.iter().map(|n| n.holdings()).collect();
        last.windows(2).all(|w| w[0] == w[1])
    });
    assert!(same, "{what}: the nodes differ:\n{}", last.join("\n----\n"));
}

fn node(name: &str, n: usize, key: &Path, extra: &str) -> Node {
    let mut lab = Lab::new(&CLIENTS).expect("lab");
    lab.serve(probe(), &["192.0.2.1:443"]).unwrap();
    let iface = lab.server_if.clone();
    let policy = format!(
        "mode = \"enforce\"\n[scope]\nprotect = [\"tcp/443\"]\n{extra}\n[fleet]\n\
         redis_url = \"{}\"\nnode = \"{name}\"\n\
         key_file = \"fleet.keys\"\nsnapshot_interval_s = 2\ndegraded_after_s = 2\n\
         node_timeout_s = 10\n",
        redis_url(n)
    );
    let today = edge::Day::today_utc().to_string();
    let daemon = Daemon::configure(&lab, &[&iface], &policy, &today).unwrap();
    std::fs::copy(key, daemon.config_dir().join("fleet.keys")).unwrap();
    Node { lab, daemon }
}

#[test]
fn a_fleet_of_three_acts_as_one_filter() {
    if !privileged("a_fleet_of_three_acts_as_one_filter") {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("fleet.keys");
    edge::ticket::Keyring::generate().unwrap().create(&key).unwrap();
    // A and B drop unknown sources; C lets a few through, so a newcomer can complete a
    // handshake there and be learned.
    let strict = "[unknown]\nrate_pps = 0\nglobal_pps = 0\n";
    let mut a = node("a", 0, &key, strict);
    let mut b = node("b", 1, &key, strict);
    let learning = "[unknown]\nrate_pps = 5\nburst = 5\n[learning]\nhandshakes = true\n";
    let mut c = node("c", 2, &key, learning);
    let mut redis = RedisNet::new(&[&a.lab, &b.lab, &c.lab]);
    let redis_dir = tempfile::tempdir().unwrap();
    redis.start(redis_dir.path());
    for n in [&mut a, &mut b, &mut c] {
        n.daemon.start().unwrap();
        n.daemon.wait_ready().unwrap();
    }
    for n in [&a, &b, &c] {
        n.daemon.wait_status("in the fleet", |s| s["fleet"] == "ok").unwrap();
    }
    c.daemon.wait_log("learning visitors from completed handshakes", 1);
    assert!(!a.connects(LEARNED), "unknown sources are dropped on A");

    // A visitor through A's CLI, a deny rule on B (for a source that is also a visitor), a
    // client learned from its handshake on C.
    a.daemon.cli(&["visitors", "add", VISITOR, DENIED]).ok("visitors add");
    b.daemon.cli(&["deny", "add", &format!("{DENIED}/32"), "--comment", "abuse"]).ok("deny add");
    assert!(c.connects(LEARNED), "C lets a newcomer through its budget");
    for n in [&a, &b, &c] {
        wait("the visitor passes on every node", 10, || n.connects(VISITOR));
        wait("the learned client passes on every node", 10, || n.connects(LEARNED));
        assert!(!n.connects(DENIED), "the denied source is dropped on every node");
    }
    wait_same(&[&a, &b, &c], "after the first changes");
    let fleet = a.fleet();
    let names: Vec<&str> =
        fleet["nodes"].as_array().unwrap().iter().map(|n| n["node"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b", "c"], "{fleet}");
    assert!(fleet["nodes"].as_array().unwrap().iter().all(|n| n["lag_ms"].is_u64()), "{fleet}");

    // C stops; A and B change things; C comes back and catches up.
    c.daemon.stop().unwrap();
    a.daemon.cli(&["visitors", "add", LATER]).ok("visitors add");
    b.daemon.cli(&["allow", "add", "198.51.100.0/24", "--comment", "partner"]).ok("allow add");
    b.daemon.cli(&["deny", "remove", &format!("{DENIED}/32")]).ok("deny remove");
    c.daemon.start().unwrap();
    c.daemon.wait_ready().unwrap();
    wait_same(&[&a, &b, &c], "after C caught up");
    wait("C passes the visitor added while it was down", 10, || c.connects(LATER));
    assert!(c.connects(DENIED), "the removed deny rule is gone on C too");

    // C is wiped while the fleet snapshots and trims the stream past where C was.
    c.daemon.stop().unwrap();
    std::fs::remove_dir_all(c.daemon.state_dir()).unwrap();
    a.daemon.cli(&["visitors", "add", FORGED]).ok("visitors add");
    a.daemon.cli(&["visitors", "remove", FORGED]).ok("visitors remove");
    let id = |id: Option<String>| id.as_deref().and_then(edge::fleet::stream_id);
    let newest = id(redis.last_entry());
    edge_tests::wait_until(
        "a snapshot covering the newest changes, and the stream trimmed to it",
        Duration::from_secs(40),
        || {
            let covers = id(redis.snapshot_covers());
            covers >= newest && id(redis.first_entry()) >= covers
        },
        || {
            let log = a.daemon.log();
            let fleet: Vec<&str> = log.lines().filter(|l| l.contains("fleet")).collect();
            format!(
                "newest {newest:?}, snapshot {:?}, first {:?}\n{}",
                redis.snapshot_covers(),
                redis.first_entry(),
                fleet[fleet.len().saturating_sub(10)..].join("\n")
            )
        },
    );
    c.daemon.start().unwrap();
    c.daemon.wait_ready().unwrap();
    c.daemon.wait_log("joined the fleet's snapshot", 1);
    wait_same(&[&a, &b, &c], "after the wiped node rejoined");
    let c_visitors = c.daemon.cli(&["visitors", "export"]).ok("visitors export");
    assert!(c_visitors.contains(LATER), "{c_visitors}");
    assert!(!c_visitors.contains(FORGED), "a removal reaches the wiped node: {c_visitors}");

    // A forged entry: an allow rule for FORGED, written straight to the stream without the
    // fleet key. Refused and counted on every node; FORGED stays dropped.
    let forged_rule = edge::store::Op::PutRules(vec![edge::store::StoredRule {
        list: edge::policy::List::Allow,
        net: format!("{FORGED}/32").parse().unwrap(),
        comment: "forged".into(),
        expires_at: 0,
        added_at: 1,
    }]);
    let stamp = edge::store::Stamp { hlc: u64::MAX >> 1, node: "mallory".into() };
    let body = edge::fleet::change_body(&[edge::store::Stamped { stamp, op: forged_rule }]);
    redis
        .query(move |conn| {
            redis::cmd("XADD")
                .arg(STREAM)
                .arg("*")
                .arg("node")
                .arg("mallory")
                .arg("kind")
                .arg("change")
                .arg("key")
                .arg("1")
                .arg("body")
                .arg(body)
                .arg("mac")
                .arg(vec![0u8; 32])
                .query::<String>(conn)
        })
        .unwrap();
    for n in [&a, &b, &c] {
        wait("the forged entry is refused and counted", 10, || n.refused("bad_mac") >= 1);
        assert!(!n.json(&["allow", "list", "--json"]).to_string().contains("forged"));
    }
    // (C lets a few unknown packets through its budget; A and B drop them all.)
    for n in [&a, &b] {
        assert!(!n.connects(FORGED), "the forged allow rule is not in force");
    }

    // Redis goes away for 30 s; A and B keep learning and enforcing, say they are degraded,
    // and afterwards everyone holds the union.
    redis.stop();
    a.daemon.cli(&["visitors", "add", DURING_A]).ok("visitors add on A while cut off");
    b.daemon.cli(&["visitors", "add", DURING_B]).ok("visitors add on B while cut off");
    for n in [&a, &b] {
        wait("degraded", 15, || n.status()["fleet"].as_str().unwrap().starts_with("degraded"));
        assert!(n.connects(VISITOR), "enforcing from the store while cut off");
        assert!(!n.connects(FORGED));
    }
    assert!(a.connects(DURING_A) && !a.connects(DURING_B), "each side has only its own");
    let metrics = a.lab.scrape_metrics();
    assert!(metrics.contains("edge_fleet_degraded 1"), "{metrics}");
    std::thread::sleep(Duration::from_secs(25));
    redis.start(redis_dir.path());
    for n in [&a, &b, &c] {
        wait("the fleet recovers", 15, || n.status()["fleet"] == "ok");
        wait("both sides' visitors pass everywhere", 10, || {
            n.connects(DURING_A) && n.connects(DURING_B)
        });
    }
    wait_same(&[&a, &b, &c], "after the outage");

    // Redis comes back with no data at all: the nodes re-seed it and lose nothing.
    redis.stop();
    let empty = tempfile::tempdir().unwrap();
    redis.start(empty.path());
    for n in [&a, &b, &c] {
        n.daemon.wait_log("re-seeding it", 1);
    }
    let before = a.holdings();
    c.daemon.stop().unwrap();
    std::fs::remove_dir_all(c.daemon.state_dir()).unwrap();
    wait("a snapshot in the new Redis", 20, || redis.snapshot_covers().is_some());
    c.daemon.start().unwrap();
    c.daemon.wait_ready().unwrap();
    wait_same(&[&a, &b, &c], "after the re-seed");
    assert_eq!(a.holdings(), before, "nothing was lost");
    for n in [&a, &b, &c] {
        assert!(n.connects(DURING_A) && n.connects(LEARNED) && n.connects(LATER));
    }

    // Redis fails over to a copy that lacks the stream's tail (a replica that had not caught
    // up): A's last entry is gone, and A publishes its state again, so C, down meanwhile,
    // still gets what A added.
    c.daemon.stop().unwrap();
    redis.stop();
    let older = tempfile::tempdir().unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", empty.path().display()))
        .arg(older.path())
        .status()
        .unwrap();
    assert!(copied.success());
    redis.start(empty.path());
    wait("A back in the fleet", 15, || a.status()["fleet"] == "ok");
    a.daemon.cli(&["visitors", "add", TAIL]).ok("visitors add");
    wait("B holding the tail", 10, || {
        b.daemon.cli(&["visitors", "export"]).ok("export").contains(TAIL)
    });
    redis.stop();
    redis.start(older.path());
    a.daemon.wait_log("Redis lost its tail", 1);
    c.daemon.start().unwrap();
    c.daemon.wait_ready().unwrap();
    wait_same(&[&a, &b, &c], "after the failover");
    assert!(c.daemon.cli(&["visitors", "export"]).ok("export").contains(TAIL));

    // A is killed (-9) in the middle of a million-line import: every node ends with none of
    // it or all of it.
    let v4 = |n: &Node| n.status()["visitors_v4"].as_u64().unwrap();
    let held = v4(&b);
    let list = keys.path().join("million.txt");
    let lines: String = (0..1_000_000u32)
        .map(|i| format!("{}\n", std::net::Ipv4Addr::from(0x0a00_0000 + i)))
        .collect();
    std::fs::write(&list, lines).unwrap();
    let mut import = a.daemon.cli_command(&["visitors", "import", list.to_str().unwrap()]);
    let mut import = import.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    a.daemon.kill9().unwrap();
    let _ = import.wait();
    a.daemon.start().unwrap();
    a.daemon.wait_ready().unwrap();
    wait_same(&[&a, &b, &c], "after the import was cut");
    for n in [&a, &b, &c] {
        let now = v4(n);
        assert!(now == held || now == held + 1_000_000, "{now} visitors; had {held}");
    }
    eprintln!("the cut import landed {}", if v4(&b) == held { "nowhere" } else { "everywhere" });
}

#[test]
fn a_node_reaches_its_fleet_over_tls_with_a_client_certificate_and_a_password() {
    if !privileged("a_node_reaches_its_fleet_over_tls_with_a_client_certificate_and_a_password") {
        return;
    }
    const PASSWORD: &str = "s3cret-fleet-pw";
    let lab = Lab::new(&[]).expect("lab");
    let mut redis = RedisNet::new(&[&lab]);
    let files = tempfile::tempdir().unwrap();
    let pki = edge_tests::tls::Pki::for_server(files.path(), &["10.98.0.2"]);
    redis.start_tls(files.path(), &pki, PASSWORD);
    let policy = format!(
        "mode = \"enforce\"\n[fleet]\nredis_url = \"rediss://:{PASSWORD}@10.98.0.2:{REDIS_TLS_PORT}\"\n\
         node = \"tls\"\nkey_file = \"fleet.keys\"\ntls_ca_file = \"{}\"\n\
         tls_client_cert = \"{}\"\ntls_client_key = \"{}\"\n",
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let today = edge::Day::today_utc().to_string();
    let mut daemon = Daemon::configure(&lab, &[&lab.server_if], &policy, &today).unwrap();
    edge::ticket::Keyring::generate()
        .unwrap()
        .create(&daemon.config_dir().join("fleet.keys"))
        .unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    daemon.wait_status("in the fleet over TLS", |s| s["fleet"] == "ok").unwrap();
    daemon.cli(&["visitors", "add", VISITOR]).ok("visitors add");
    edge_tests::wait_until(
        "the visit in the stream",
        Duration::from_secs(10),
        || redis.query(|c| redis::cmd("XLEN").arg(STREAM).query::<u64>(c)).unwrap() >= 1,
        || daemon.log(),
    );
    let fleet: serde_json::Value =
        serde_json::from_str(&daemon.cli(&["fleet", "status", "--json"]).ok("fleet status"))
            .unwrap();
    assert_eq!(fleet["redis"], format!("rediss://:REDACTED@10.98.0.2:{REDIS_TLS_PORT}"));
    // The password is in no answer and no log line.
    let config = daemon.cli(&["config", "show"]).ok("config show");
    let status = daemon.cli(&["status", "--json"]).ok("status");
    for text in [fleet.to_string(), config, status, daemon.log()] {
        assert!(!text.contains(PASSWORD), "the password shows: {text}");
    }
}
