//! One daemon, several interfaces, one set of maps; and restarts (also over an earlier build's
//! pins of other layouts) that replace the program in its pinned link while traffic flows,
//! losing and mis-judging nothing.
use std::path::Path;

use edge::filter::{pinned_link_ids, Maps, PIN_ROOT};
use edge_tests::{
    daemon::Daemon,
    lab::{Lab, UNKNOWN, VISITOR},
    privileged, probe,
    traffic::{Counter, Flood, VisitorAndUnknown},
};

const SECOND_SERVER: &str = "198.51.100.1";
const TIMEOUT_MS: u32 = 700;
const STRICT: &str = "mode = \"enforce\"\n[unknown]\nrate_pps = 0\nglobal_pps = 0\n";

/// STRICT in a policy file, for `edge attach` (the directory goes with the first value).
fn strict_policy_file() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, STRICT).unwrap();
    (dir, policy)
}

/// Packets counted for `reason` and `action` on one interface.
/// A lab with a visitor and an unknown client, and a ready daemon on its server interface with
/// the strict policy that knows the visitor: the lab, the interface's name, the daemon.
fn visitor_daemon() -> (Lab, String, Daemon) {
    let lab = Lab::new(&[VISITOR, UNKNOWN]).expect("creating the namespace lab");
    let iface = lab.server_if.clone();
    let mut daemon = Daemon::configure(&lab, &[&iface], STRICT, "2026-11-22").unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    daemon.cli(&["visitors", "add", VISITOR]).ok("visitors add");
    (lab, iface, daemon)
}

/// A lab with an unknown client, and a ready daemon on its server interface with the strict
/// policy: the lab, the interface's name, the daemon.
fn strict_daemon() -> (Lab, String, Daemon) {
    let lab = Lab::new(&[UNKNOWN]).expect("creating the namespace lab");
    let iface = lab.server_if.clone();
    let mut daemon = Daemon::configure(&lab, &[&iface], STRICT, "2026-11-22").unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    (lab, iface, daemon)
}

fn packets(daemon: &Daemon, iface: &str, reason: &str, action: &str) -> u64 {
    let out = daemon.cli(&["stats", "--iface", iface, "--json"]).ok("stats");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    rows.iter()
        .filter(|r| r["reason"] == reason && r["action"] == action)
        .map(|r| r["packets"].as_u64().unwrap())
        .sum()
}

#[test]
fn two_interfaces_share_one_set_of_maps_and_count_on_their_own() {
    if !privileged("two_interfaces_share_one_set_of_maps_and_count_on_their_own") {
        return;
    }
    let mut lab = Lab::new(&[VISITOR, UNKNOWN]).expect("creating the namespace lab");
    let second = lab.add_link(SECOND_SERVER).unwrap();
    lab.serve(probe(), &["192.0.2.1:443", &format!("{SECOND_SERVER}:443")]).unwrap();
    let first = lab.server_if.clone();
    let mut daemon = Daemon::configure(&lab, &[&first, &second], STRICT, "2026-11-22").unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();

    // One map, pinned under each interface; counters of their own.
    let (a, b) = (Path::new(PIN_ROOT).join(&first), Path::new(PIN_ROOT).join(&second));
    let (a, b) = (Maps::open_pinned(&a).unwrap(), Maps::open_pinned(&b).unwrap());
    for name in edge::filter::SHARED_MAPS {
        assert_eq!(a.map_id(name).unwrap(), b.map_id(name).unwrap(), "{name} is shared");
    }
    assert_ne!(a.map_id("stats").unwrap(), b.map_id("stats").unwrap(), "counters are not");

    // One record reaches both interfaces.
    daemon.cli(&["visitors", "add", VISITOR]).ok("visitors add");
    let to_second = format!("{SECOND_SERVER}:443");
    assert!(lab.connects(probe(), VISITOR, 443, TIMEOUT_MS).unwrap(), "visitor via the first");
    let first_before = packets(&daemon, &first, "visitor", "pass");
    assert!(first_before >= 2, "the first interface counted the handshake: {first_before}");
    assert_eq!(packets(&daemon, &second, "visitor", "pass"), 0);
    assert!(lab.connects_to(probe(), VISITOR, &to_second, TIMEOUT_MS).unwrap(), "via the second");
    assert!(packets(&daemon, &second, "visitor", "pass") >= 2);
    assert_eq!(packets(&daemon, &first, "visitor", "pass"), first_before, "not counted twice");
    assert!(!lab.connects(probe(), UNKNOWN, 443, TIMEOUT_MS).unwrap());
    assert!(!lab.connects_to(probe(), UNKNOWN, &to_second, TIMEOUT_MS).unwrap());
    assert!(packets(&daemon, &second, "unknown_rate", "drop") >= 1);

    // The sum over interfaces is what `stats` without --iface shows.
    let all = daemon.cli(&["stats", "--json"]).ok("stats");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&all).unwrap();
    let visitor: u64 = rows
        .iter()
        .filter(|r| r["reason"] == "visitor" && r["action"] == "pass")
        .map(|r| r["packets"].as_u64().unwrap())
        .sum();
    assert_eq!(
        visitor,
        packets(&daemon, &first, "visitor", "pass") + packets(&daemon, &second, "visitor", "pass")
    );
    daemon.stop().unwrap();
}

#[test]
fn restarts_replace_the_program_in_place_without_losing_or_misjudging_a_packet() {
    if !privileged("restarts_replace_the_program_in_place_without_losing_or_misjudging_a_packet") {
        return;
    }
    let (lab, iface, mut daemon) = visitor_daemon();
    let (link, first_prog) = pinned_link_ids(&iface).unwrap();
    let passed_before = packets(&daemon, &iface, "visitor", "pass");
    let traffic = VisitorAndUnknown::start(&lab, 4000, 10);
    // Three restarts while both floods run; each loads the program anew and swaps it in.
    let mut programs = vec![first_prog];
    for _ in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(700));
        daemon.stop().unwrap();
        daemon.start().unwrap();
        daemon.wait_ready().unwrap();
        let (same_link, prog) = pinned_link_ids(&iface).unwrap();
        assert_eq!(same_link, link, "the link itself stays: no detach");
        assert!(!programs.contains(&prog), "a new program each start: {prog} in {programs:?}");
        programs.push(prog);
    }
    let (visitor_sent, _) = traffic.every_visitor_and_no_unknown(20_000);
    // The counters live on across the swaps (the pinned stats map is reused).
    let passed = packets(&daemon, &iface, "visitor", "pass") - passed_before;
    assert!(passed >= visitor_sent, "{passed} counted, {visitor_sent} sent");
    assert!(daemon.log().matches("replaced the running program").count() >= 3, "{}", daemon.log());
    daemon.stop().unwrap();
}

#[test]
fn maps_of_another_layout_are_told_apart_naming_the_map() {
    if !privileged("maps_of_another_layout_are_told_apart_naming_the_map") {
        return;
    }
    // Maps made by this build match its own definitions...
    let maps = Maps::create().unwrap();
    let mut defined = edge::filter::defined_maps().unwrap();
    assert_eq!(edge::filter::layout_mismatch(&defined, &maps).unwrap(), None);
    // ...and a build whose `config` record grew would be told, naming the map...
    let config = defined.get_mut("config").unwrap().clone();
    let mut grown = config.clone();
    grown.set_value_size(config.value_size() + 8);
    defined.insert("config".into(), grown);
    let why = edge::filter::layout_mismatch(&defined, &maps).unwrap().expect("a mismatch");
    let size = config.value_size();
    assert!(
        why.contains("`config`")
            && why.contains(&format!("(4, {size}, 1, 1024)"))
            && why.contains(&format!("(4, {}, 1, 1024)", size + 8)),
        "{why}"
    );
    // ...as would one whose record kept its size but not its flags (an earlier build's config
    // was not mmap-able; its fields were in another order).
    let earlier = aya_obj::Map::new_from_params(config.map_type(), 4, size, 1, 0);
    defined.insert("config".into(), earlier);
    let why = edge::filter::layout_mismatch(&defined, &maps).unwrap().expect("a mismatch");
    assert!(
        why.contains(&format!("(4, {size}, 1, 1024)"))
            && why.contains(&format!("(4, {size}, 1, 0)")),
        "{why}"
    );
}

#[test]
fn an_attach_that_could_not_outlive_its_command_is_refused() {
    if !privileged("an_attach_that_could_not_outlive_its_command_is_refused") {
        return;
    }
    let lab = Lab::new(&[UNKNOWN]).expect("creating the namespace lab");
    let (_dir, policy) = strict_policy_file();
    // `ip netns exec` runs edge in a mount namespace of its own with a fresh /sys: pins made
    // there would die with it when edge exits, and the filter with them.
    let run = edge_tests::Run::of(
        std::process::Command::new("ip")
            .args(["netns", "exec", &lab.server_ns])
            .arg(edge_tests::edge_bin())
            .args(["attach", "--iface", &lab.server_if, "--policy"])
            .arg(&policy)
            .env_remove("SSH_CONNECTION"),
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("no other process shares this mount namespace")
            && run.stderr.contains("nsenter --net=/run/netns/NAME"),
        "{}",
        run.stderr
    );
    let link = std::process::Command::new("ip")
        .args(["-n", &lab.server_ns, "-d", "link", "show", "dev", &lab.server_if])
        .output()
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(!link.contains("prog/xdp"), "an XDP program was left on the interface: {link}");
    assert!(!Path::new(PIN_ROOT).join(&lab.server_if).exists());
    // The same through nsenter, which enters only the network namespace, attaches for good.
    let mut attach = lab.in_server(edge_tests::edge_bin());
    attach.args(["attach", "--iface", &lab.server_if, "--policy"]).arg(&policy);
    edge_tests::Run::of(&mut attach).ok("attach through nsenter");
    let link = std::process::Command::new("ip")
        .args(["-n", &lab.server_ns, "link", "show", "dev", &lab.server_if])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&link.stdout).contains("prog/xdp"));
    let mut detach = lab.in_server(edge_tests::edge_bin());
    detach.args(["detach", "--iface", &lab.server_if]);
    edge_tests::Run::of(&mut detach).ok("detach");
}

#[test]
fn an_interface_deleted_and_made_again_is_filtered_again() {
    if !privileged("an_interface_deleted_and_made_again_is_filtered_again") {
        return;
    }
    let mut lab = Lab::new(&[VISITOR, UNKNOWN]).expect("creating the namespace lab");
    lab.serve(probe(), &["192.0.2.1:443"]).unwrap();
    let iface = lab.server_if.clone();
    let mut daemon = Daemon::configure(&lab, &[&iface], STRICT, "2026-11-22").unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    daemon.cli(&["visitors", "add", VISITOR]).ok("visitors add");
    assert!(lab.connects(probe(), VISITOR, 443, TIMEOUT_MS).unwrap());
    assert!(!lab.connects(probe(), UNKNOWN, 443, TIMEOUT_MS).unwrap());
    let xdp_on = |lab: &Lab| {
        let out = std::process::Command::new("ip")
            .args(["-n", &lab.server_ns, "link", "show", "dev", &lab.server_if])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
    };

    // The device goes away: its XDP link with it. The daemon says it is not filtering it.
    lab.delete_link().unwrap();
    daemon
        .wait_status("not ready while the interface is gone", |s| {
            s["ready"] == false
                && s["interfaces"][0]["state"]
                    .as_str()
                    .is_some_and(|state| state.contains("no such network interface"))
        })
        .unwrap();
    assert_eq!(daemon.cli(&["status"]).code, 0);
    let body = lab.scrape_metrics();
    let gone = format!("edge_interface_attached{{interface=\"{iface}\"}} 0");
    assert!(body.lines().any(|l| l == gone) && body.lines().any(|l| l == "edge_ready 0"), "{body}");

    // A new device of the same name: the pinned link is defunct, and must not pass for a filter.
    lab.restore_link().unwrap();
    daemon
        .wait_status("attached again", |s| {
            s["ready"] == true && s["interfaces"][0]["state"] == "attached"
        })
        .unwrap();
    assert!(xdp_on(&lab), "no XDP program on the new {iface}");
    let back = format!("edge_interface_attached{{interface=\"{iface}\"}} 1");
    assert!(lab.scrape_metrics().lines().any(|l| l == back));
    assert!(lab.connects(probe(), VISITOR, 443, TIMEOUT_MS).unwrap(), "the visitor was kept");
    assert!(!lab.connects(probe(), UNKNOWN, 443, TIMEOUT_MS).unwrap(), "unknown still dropped");

    // Deleted and made again at once: the same.
    lab.delete_link().unwrap();
    lab.restore_link().unwrap();
    daemon.wait_status("attached to the newest device", |_| xdp_on(&lab)).unwrap();
    daemon.wait_ready().unwrap();
    assert!(xdp_on(&lab));
    assert!(!lab.connects(probe(), UNKNOWN, 443, TIMEOUT_MS).unwrap());
    let log = daemon.log();
    assert!(log.contains("the interface was deleted or re-created"), "{log}");
    daemon.stop().unwrap();
}

#[test]
fn pins_of_a_deleted_interface_are_reported_and_replaced() {
    if !privileged("pins_of_a_deleted_interface_are_reported_and_replaced") {
        return;
    }
    let lab = Lab::new(&[UNKNOWN]).expect("creating the namespace lab");
    let (_dir, policy) = strict_policy_file();
    let edge = |args: &[&str]| {
        let mut cmd = lab.in_server(edge_tests::edge_bin());
        cmd.args(["--socket", "/nonexistent/edge.sock"]).args(args);
        edge_tests::Run::of(&mut cmd)
    };
    let policy = policy.to_str().unwrap();
    // `status` lists every pin, other tests' too (pins are not per network namespace): ours.
    let line = || {
        let status = edge(&["status"]).ok("status");
        let ours = status.lines().find(|l| l.trim_start().starts_with(lab.server_if.as_str()));
        ours.unwrap_or_else(|| panic!("{} is not listed: {status}", lab.server_if)).to_string()
    };
    let live = || {
        let out = edge(&["status", "--json"]).ok("status --json");
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        let all = json["attached"].as_array().unwrap().clone();
        let ours = all.into_iter().find(|i| i["name"] == lab.server_if.as_str());
        ours.unwrap_or_else(|| panic!("{} is not listed: {json}", lab.server_if))["live"].clone()
    };
    edge(&["attach", "--iface", &lab.server_if, "--policy", policy]).ok("attach");
    assert!(line().contains("attached (pinned), mode enforce"), "{}", line());
    assert_eq!(live(), true);

    // A new device under the old name: the pins stay, the link they hold filters nothing.
    lab.delete_link().unwrap();
    lab.restore_link().unwrap();
    let ours = line();
    assert!(ours.contains("NOT FILTERING") && ours.contains("run `edge attach` again"), "{ours}");
    assert_eq!(live(), false);

    // Attaching again replaces them (they enforce nothing); a live filter is not replaced.
    edge(&["attach", "--iface", &lab.server_if, "--policy", policy]).ok("attach again");
    assert_eq!(live(), true);
    let again = edge(&["attach", "--iface", &lab.server_if, "--policy", policy]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already attached"), "{}", again.stderr);
    edge(&["detach", "--iface", &lab.server_if]).ok("detach");
}

/// What an upgrade between builds whose maps differ meets: pins of an earlier build lacking a
/// map this one added (`list_nets`), with a record laid out otherwise (`config`) and counters
/// for fewer reasons (`stats`). The daemon takes the rest over, makes those anew filled from the
/// store, and swaps its program into the running link while traffic flows: no visitor datagram
/// lost, no unknown one let through.
#[test]
fn pins_of_an_earlier_layout_are_taken_over_in_place_renewing_what_changed() {
    if !privileged("pins_of_an_earlier_layout_are_taken_over_in_place_renewing_what_changed") {
        return;
    }
    let (lab, iface, mut daemon) = visitor_daemon();
    daemon.stop().unwrap();

    // The pins as an earlier build left them (its program keeps running on its own maps).
    let pins = Path::new(PIN_ROOT).join(&iface);
    let defined = edge::filter::defined_maps().unwrap();
    let earlier = |name: &str, change: &dyn Fn(&mut aya_obj::Map)| {
        let mut map = defined[name].clone();
        change(&mut map);
        std::fs::remove_file(pins.join(name)).unwrap();
        let made = aya::maps::MapData::create(map, name, None).unwrap();
        made.pin(pins.join(name)).unwrap();
    };
    std::fs::remove_file(pins.join(edge_common::maps::LIST_NETS)).unwrap();
    let config_size = defined["config"].value_size();
    earlier("config", &|m| m.set_value_size(config_size + 8));
    let reasons = defined["stats"].max_entries();
    earlier("stats", &|m| m.set_max_entries(reasons - 3));
    let (link, old_prog) = pinned_link_ids(&iface).unwrap();
    let map_id =
        |name: &str| aya::maps::MapData::from_pin(pins.join(name)).unwrap().info().unwrap().id();
    let kept = ["admitted", "unknown_buckets", "visitors_v4", "deny"];
    let kept_before: Vec<u32> = kept.iter().map(|name| map_id(name)).collect();
    let config_before = map_id("config");

    let traffic = VisitorAndUnknown::start(&lab, 4000, 6);
    std::thread::sleep(std::time::Duration::from_millis(1000));
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    let (same_link, prog) = pinned_link_ids(&iface).unwrap();
    assert_eq!(same_link, link, "the link itself stays: no detach");
    assert_ne!(prog, old_prog, "this build's program runs");
    traffic.every_visitor_and_no_unknown(10_000);

    let log = daemon.log();
    for said in [
        "the running filter has no `list_nets` map",
        &format!(
            "the pinned `config` map has (key, value, entries, flags) (4, {}",
            config_size + 8
        ),
        "the pinned `stats` map has",
        "counting starts over",
        "replaced the running program in its pinned link",
    ] {
        assert!(log.contains(said), "the log does not say {said:?}:\n{log}");
    }
    // The maps laid out alike were taken over, the others made anew; pinned now: this build's
    // layouts, counting this build's reasons.
    let kept_after: Vec<u32> = kept.iter().map(|name| map_id(name)).collect();
    assert_eq!(kept_after, kept_before, "{kept:?} were taken over as they were");
    assert_ne!(map_id("config"), config_before, "config was made anew");
    let maps = Maps::open_pinned(&pins).unwrap();
    assert_eq!(edge::filter::layout_mismatch(&defined, &maps).unwrap(), None);
    assert!(packets(&daemon, &iface, "visitor", "pass") > 0);
    assert!(packets(&daemon, &iface, "unknown_rate", "drop") > 0);
    daemon.stop().unwrap();
}

/// The kernel's link notifications, not a poll, bring the filter back: across two re-creations
/// of the interface under an unknown UDP flood, (almost) nothing reaches the server, and the
/// interface's counters go on from where they were.
#[test]
fn a_re_created_interface_is_filtered_before_it_carries_traffic_and_keeps_its_counters() {
    if !privileged(
        "a_re_created_interface_is_filtered_before_it_carries_traffic_and_keeps_its_counters",
    ) {
        return;
    }
    let (lab, iface, mut daemon) = strict_daemon();
    let counter = Counter::start(&lab, 9);
    let unknown = Flood::start(&lab, UNKNOWN, 3000, 6);
    let mut dropped = 0;
    for _ in 0..2 {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let before = packets(&daemon, &iface, "unknown_rate", "drop");
        assert!(before >= dropped, "counters went back: {before} < {dropped}");
        dropped = before;
        lab.delete_link().unwrap();
        lab.restore_link().unwrap();
        daemon.wait_ready().unwrap();
    }
    let unknown_sent = unknown.sent();
    let counted = counter.counted();
    let through = counted[UNKNOWN].as_u64().unwrap_or(0);
    eprintln!(
        "re-created twice under {unknown_sent} unknown datagrams: {through} reached the server"
    );
    assert!(unknown_sent > 10_000, "{unknown_sent}");
    assert!(through * 1000 <= unknown_sent, "{through} of {unknown_sent} got through");
    let after = packets(&daemon, &iface, "unknown_rate", "drop");
    assert!(after >= dropped, "the counters started over: {after} < {dropped}");
    let log = daemon.log();
    assert!(log.contains("the interface was deleted or re-created"), "{log}");
    daemon.stop().unwrap();
}
