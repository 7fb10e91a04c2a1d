//! Admissions end to end: a real daemon with ticket keys in a namespace lab. A client that
//! knocks with a ticket gets its TCP through (verified in the kernel, also with the daemon
//! dead); a queue service admitting over gRPC gets its clients through; refusals carry their
//! codes and are counted; rotation keeps the previous key valid; admissions survive a rebuild.
use std::path::Path;

use edge::{
    api::{self, admissions_client::AdmissionsClient, control_client::ControlClient},
    filter::{Maps, PIN_ROOT},
    ticket::{self, Keyring},
    visitors::admission_key,
};
use edge_tests::{
    daemon::Daemon,
    lab::{Lab, UNKNOWN},
    privileged, probe,
};
use tonic::Code;

const KNOCKER: &str = "192.0.2.20";
const QUEUED: &str = "192.0.2.21";
const LATE_KNOCKER: &str = "192.0.2.22";
const POLICY: &str = "mode = \"enforce\"\n[unknown]\nrate_pps = 0\nglobal_pps = 0\n\
                      [admission]\nkeys = \"ticket.keys\"\nknock_port = 7000\n";

fn connects(lab: &Lab, src: &str) -> bool {
    lab.connects(probe(), src, 443, 700).unwrap()
}

fn knock(lab: &Lab, src: &str, ticket: &str) {
    let status = lab
        .in_client(probe())
        .args(["knock", "--from", src, "--to", "192.0.2.1:7000", "--ticket", ticket])
        .status()
        .unwrap();
    assert!(status.success(), "edge-probe knock");
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn admit(tickets: &[(&str, &str)]) -> api::AdmitRequest {
    api::AdmitRequest {
        admissions: tickets
            .iter()
            .map(|(t, ip)| api::AdmissionTicket {
                ticket: t.to_string(),
                ip: ip.to_string(),
                kind: String::new(),
            })
            .collect(),
    }
}

#[track_caller]
fn refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, words: &[&str]) {
    let status = r.expect_err("should be refused");
    assert_eq!(status.code(), code, "{status:?}");
    for w in words {
        assert!(status.message().contains(w), "`{w}` not in {:?}", status.message());
    }
}

#[test]
fn knocks_and_queue_admissions_let_exactly_the_admitted_through() {
    if !privileged("knocks_and_queue_admissions_let_exactly_the_admitted_through") {
        return;
    }
    let mut lab = Lab::new(&[KNOCKER, QUEUED, LATE_KNOCKER, UNKNOWN]).expect("lab");
    lab.serve(probe(), &["192.0.2.1:443"]).unwrap();
    let iface = lab.server_if.clone();
    let today = time_today();
    let mut daemon = Daemon::configure(&lab, &[&iface], POLICY, &today).unwrap();
    let keys = daemon.config_dir().join("ticket.keys");
    daemon.cli(&["key", "generate", "--out", keys.to_str().unwrap()]).ok("key generate");
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    let issue = |ip: &str| {
        let out = daemon.cli(&[
            "ticket",
            "issue",
            "--ip",
            ip,
            "--ttl",
            "10m",
            "--key",
            keys.to_str().unwrap(),
        ]);
        out.ok("ticket issue").trim().to_string()
    };

    // The knock: verified in the kernel.
    assert!(!connects(&lab, KNOCKER), "not admitted yet");
    knock(&lab, KNOCKER, &issue(KNOCKER));
    assert!(connects(&lab, KNOCKER), "admitted by its knock");
    knock(&lab, UNKNOWN, &issue(KNOCKER));
    assert!(!connects(&lab, UNKNOWN), "someone else's ticket admits nobody");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let channel = edge::client::connect(&daemon.socket).await.unwrap();
        let mut admissions = AdmissionsClient::new(channel.clone());
        let ring = Keyring::load(&keys).unwrap();
        let good = issue(QUEUED);
        let mut flipped = ticket::decode(&good).unwrap();
        flipped.0[47] ^= 1;
        let flipped = ticket::encode(&flipped);
        let expired =
            ticket::encode(&ticket::issue(ring.current(), QUEUED.parse().unwrap(), now() - 5, 1));

        // Refusals: codes, reasons, and the batch is all or nothing.
        refused(
            admissions.admit(admit(&[(&good, ""), (&flipped, "")])).await,
            Code::PermissionDenied,
            &["admissions[1]", "bad_hash"],
        );
        refused(
            admissions.admit(admit(&[(&expired, "")])).await,
            Code::PermissionDenied,
            &["expired"],
        );
        refused(
            admissions.admit(admit(&[(&good, UNKNOWN)])).await,
            Code::PermissionDenied,
            &["wrong_ip"],
        );
        refused(
            admissions.admit(admit(&[("not-a-ticket", "")])).await,
            Code::InvalidArgument,
            &["admissions[0]", "malformed"],
        );
        assert!(!connects(&lab, QUEUED), "nothing unverified reached a map");

        // The queue service's admission over gRPC.
        let r = admissions.admit(admit(&[(&good, QUEUED)])).await.unwrap().into_inner();
        assert_eq!(r.admitted, 1);
        assert!(connects(&lab, QUEUED), "admitted by the queue service");

        // A stream of batches.
        let batches =
            vec![admit(&[(&issue("198.18.0.1"), "")]), admit(&[(&issue("198.18.0.2"), "")])];
        let r = admissions.admit_stream(tokio_stream::iter(batches)).await.unwrap().into_inner();
        assert_eq!(r.admitted, 2);

        let status = ControlClient::new(channel)
            .get_status(api::GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status.admissions, 3);
        let count = |reason: &str| {
            status.admission_rejections.iter().find(|r| r.reason == reason).map_or(0, |r| r.count)
        };
        assert_eq!(
            (count("bad_hash"), count("expired"), count("wrong_ip"), count("malformed")),
            (1, 1, 1, 1)
        );
        // Admitted sources are today's visitors too.
        assert_eq!(status.visitors_v4, 3);
    });

    // Rotation: the previous key keeps working; the one before it is retired.
    let old = issue(LATE_KNOCKER);
    daemon.cli(&["key", "rotate", "--key", keys.to_str().unwrap()]).ok("rotate");
    daemon.wait_log("ticket keys reloaded", 1);
    runtime.block_on(async {
        let channel = edge::client::connect(&daemon.socket).await.unwrap();
        let mut admissions = AdmissionsClient::new(channel);
        admissions.admit(admit(&[(&old, "")])).await.expect("the previous key still verifies");
        daemon.cli(&["key", "rotate", "--key", keys.to_str().unwrap()]).ok("rotate");
        daemon.wait_log("ticket keys reloaded", 2);
        refused(
            admissions.admit(admit(&[(&old, "")])).await,
            Code::PermissionDenied,
            &["unknown_key"],
        );
    });

    // The daemon dead: knocks still verify in the kernel with the keys it holds.
    daemon.kill9().unwrap();
    assert!(!connects(&lab, UNKNOWN));
    lab_knock_only(&lab, &daemon, &keys);

    // Pins removed (a reboot): the daemon rebuilds the admitted map from its store. Knock
    // admissions lived only in the kernel and are gone: that client knocks again.
    daemon.cli(&["detach", "--iface", &iface]).ok("detach");
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    let mut maps = Maps::open_pinned(&Path::new(PIN_ROOT).join(&iface)).unwrap();
    let held = maps.admitted().unwrap().get(&admission_key(QUEUED.parse().unwrap()), 0);
    assert!(held.is_ok_and(|a| a.admitted_until > now()), "the admission was rebuilt");
    assert!(connects(&lab, QUEUED));
    assert!(!connects(&lab, UNKNOWN));
}

/// With the daemon down, a never-seen source knocks with a ticket from the current key and
/// gets through.
fn lab_knock_only(lab: &Lab, daemon: &Daemon, keys: &Path) {
    let out = daemon.cli(&[
        "ticket",
        "issue",
        "--ip",
        UNKNOWN,
        "--ttl",
        "1m",
        "--key",
        keys.to_str().unwrap(),
    ]);
    let ticket = out.ok("ticket issue");
    knock(lab, UNKNOWN, ticket.trim());
    assert!(connects(lab, UNKNOWN), "a knock works with the daemon dead");
}

fn time_today() -> String {
    edge::Day::today_utc().to_string()
}
