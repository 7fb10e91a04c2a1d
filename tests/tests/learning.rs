//! Visitor learning from completed TCP handshakes: a client that really connects to a
//! protected port is recorded as today's visitor; forged SYNs and ACKs from addresses that
//! cannot answer the SYN-ACK are not, and neither is a handshake on an unprotected port, one a
//! local user completes in a network namespace of their own, or one to loopback.
use std::time::Duration;

use edge_tests::{daemon::Daemon, lab::Lab, privileged, probe};

// Addresses no other test uses: the tracepoint sees every namespace on the host.
const CLIENT: &str = "192.0.2.177";
const UNPROTECTED_CLIENT: &str = "192.0.2.176";
const SPOOFED_SYN: &str = "192.0.2.178";
const SPOOFED_ACK: &str = "192.0.2.179";
/// What a local user puts on a namespace of their own.
const FORGED: &str = "198.51.100.77";

fn visitors(daemon: &Daemon) -> String {
    daemon.cli(&["visitors", "list", "--json"]).ok("visitors list")
}

fn packets(daemon: &Daemon, reason: &str) -> u64 {
    let out = daemon.cli(&["stats", "--json"]).ok("stats");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    rows.iter().filter(|r| r["reason"] == reason).map(|r| r["packets"].as_u64().unwrap()).sum()
}

#[test]
fn a_completed_handshake_makes_a_visitor_and_forged_segments_do_not() {
    if !privileged("a_completed_handshake_makes_a_visitor_and_forged_segments_do_not") {
        return;
    }
    let mut lab = Lab::new(&[CLIENT, UNPROTECTED_CLIENT]).expect("creating the namespace lab");
    lab.serve(probe(), &["192.0.2.1:443", "192.0.2.1:8080"]).unwrap();
    let iface = lab.server_if.clone();
    // Monitor: every segment reaches the server's TCP, so only the handshake decides.
    let policy =
        "mode = \"monitor\"\n[scope]\nprotect = [\"tcp/443\"]\n[learning]\nhandshakes = true\n";
    let mut daemon = Daemon::configure(&lab, &[&iface], policy, "2026-11-22").unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    daemon.wait_log("learning visitors from completed handshakes", 1);

    // Forged segments first: they reach the server (counted as unknown) but complete nothing.
    let unknown_before = packets(&daemon, "unknown_pass");
    for (src, flag) in [(SPOOFED_SYN, "syn"), (SPOOFED_ACK, "ack")] {
        let status = lab
            .in_client(probe())
            .args(["spoof", "--from", src, "--to", "192.0.2.1:443", "--flag", flag])
            .status()
            .unwrap();
        assert!(status.success(), "spoof {flag} from {src}");
    }
    assert!(packets(&daemon, "unknown_pass") >= unknown_before + 2, "the forged segments arrived");
    // A real handshake on an unprotected port.
    assert!(lab.connects_to(probe(), UNPROTECTED_CLIENT, "192.0.2.1:8080", 700).unwrap());
    // A local user's handshake in a network namespace of their own, with an address of their
    // choosing, on a protected port: the tracepoint sees it, and it must not count.
    let probe_path = probe().display().to_string();
    let own_namespace = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "--"])
        .args(["unshare", "-Urn", "sh", "-c"])
        .arg(format!(
            "ip addr add {FORGED}/32 dev lo && ip link set lo up && \
             ({probe_path} serve {FORGED}:443 & p=$!; sleep 0.3; \
              {probe_path} connect --from {FORGED} --to {FORGED}:443; r=$?; kill $p; exit $r)"
        ))
        .output()
        .unwrap();
    assert!(
        own_namespace.status.success(),
        "the unprivileged handshake: {}{}",
        String::from_utf8_lossy(&own_namespace.stdout),
        String::from_utf8_lossy(&own_namespace.stderr)
    );
    // A handshake in the daemon's namespace, to a local address that is not the protected
    // interface's (loopback): it did not come through the filter.
    let server_ns = format!("--net=/run/netns/{}", lab.server_ns);
    let looped = std::process::Command::new("nsenter")
        .args([server_ns.as_str(), "--", "sh", "-c"])
        .arg(format!(
            "ip link set lo up; ({probe_path} serve 127.0.0.1:443 & p=$!; sleep 0.3; \
             {probe_path} connect --from 127.0.0.1 --to 127.0.0.1:443; r=$?; kill $p; exit $r)"
        ))
        .status()
        .unwrap();
    assert!(looped.success(), "the loopback handshake");
    // A real handshake on a protected port.
    assert!(lab.connects(probe(), CLIENT, 443, 700).unwrap());

    let learned = || visitors(&daemon).contains(CLIENT);
    edge_tests::wait_until("the client to be learned", Duration::from_secs(5), learned, || {
        daemon.log()
    });
    // The readers drain every 200 ms: anything the forged segments caused is in by now.
    std::thread::sleep(Duration::from_millis(600));
    let list = visitors(&daemon);
    for never in [SPOOFED_SYN, SPOOFED_ACK, UNPROTECTED_CLIENT, FORGED, "127.0.0.1"] {
        assert!(!list.contains(never), "{never} was learned: {list}");
    }
    let status: serde_json::Value =
        serde_json::from_str(&daemon.cli(&["status", "--json"]).ok("status")).unwrap();
    assert!(status["learned_visitors"].as_u64().unwrap() >= 1, "{status}");
    // Learned means recorded: in the store (it survives a restart) and in the kernel.
    daemon.stop().unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    assert!(visitors(&daemon).contains(CLIENT));
    daemon.cli(&["mode", "enforce"]).ok("mode enforce");
    assert!(lab.connects(probe(), CLIENT, 443, 700).unwrap(), "the learned visitor passes");
    daemon.stop().unwrap();
}
