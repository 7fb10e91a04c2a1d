//! The knock, through the real program (BPF_PROG_TEST_RUN): a ticket in a UDP datagram is
//! verified in the kernel, admits its source, and every refusal has its counter. The kernel's
//! verdict on every altered ticket is checked against the userspace verifier's.
use std::path::Path;

use edge::{
    filter::XDP_DROP,
    ticket::{self, Key, Keyring},
    Day, Policy, VisitorHistory,
};
use edge_common::{keys::AdmittedUntil, reason::*, ticket::TicketBytes};
use edge_tests::{
    frames::{frame, L4},
    harness::{case, loaded, Expect::*, Loaded},
    privileged,
};

const KNOCK_PORT: u16 = 7000;

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn key(id: u8, seed: u8) -> Key {
    Key::new(id, core::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8)))
}

fn knock_frame(src: &str, ticket: &[u8]) -> Vec<u8> {
    frame(src, L4::Udp(KNOCK_PORT)).payload_bytes(ticket).build()
}

fn tcp(src: &str) -> Vec<u8> {
    frame(src, L4::Tcp(443)).build()
}

fn admitted_until(lab: &mut Loaded, ip: &str) -> Option<u64> {
    let key = edge::visitors::admission_key(ip.parse().unwrap());
    lab.filter.maps.admitted().unwrap().get(&key, 0).ok().map(|a: AdmittedUntil| a.admitted_until)
}

fn knock_policy(dir: &Path, knock: bool) -> Policy {
    let admission = if knock {
        format!("[admission]\nkeys = \"keys\"\nknock_port = {KNOCK_PORT}\n")
    } else {
        String::new()
    };
    let text = format!(
        "mode = \"enforce\"\n[unknown]\nrate_pps = 0\n[lists]\ndeny = [\"203.0.113.0/24\"]\n{admission}"
    );
    Policy::parse(&text, "knock.toml", dir).unwrap()
}

#[test]
fn knocks_are_verified_in_the_kernel() {
    if !privileged("knocks_are_verified_in_the_kernel") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (current, previous) = (key(2, 7), key(1, 3));
    let ring = Keyring::new(vec![current.clone(), previous.clone()]);
    ring.create(&dir.path().join("keys")).unwrap();
    let policy = knock_policy(dir.path(), true);
    let from_file = Keyring::load(policy.admission.keys.as_deref().unwrap()).unwrap();
    assert_eq!(from_file, ring);

    let mut lab = loaded();
    lab.filter.maps.reset_budgets().unwrap();
    let today = Day::today_utc();
    lab.filter.maps.apply(&policy, &VisitorHistory::default(), today).unwrap();
    lab.filter.maps.set_ticket_keys(Some(&ring)).unwrap();

    let src = "192.0.2.50";
    let not_after = now() + 600;
    let valid = ticket::issue(&current, src.parse().unwrap(), not_after, 1);

    lab.check(&case("unknown before the knock", tcp(src), Drop(UNKNOWN_RATE)));
    lab.check(&case("valid knock", knock_frame(src, &valid.0), Drop(KNOCK_OK)));
    assert_eq!(admitted_until(&mut lab, src), Some(not_after + 1), "admitted through not-after");
    lab.check(&case("admitted after the knock", tcp(src), Pass(ADMITTED)));

    // Replays: from another address it fails; from the same one it renews the same admission.
    lab.check(&case("replay, other IP", knock_frame("192.0.2.51", &valid.0), Drop(KNOCK_WRONG_IP)));
    lab.check(&case("the other IP is not admitted", tcp("192.0.2.51"), Drop(UNKNOWN_RATE)));
    lab.check(&case("replay, same IP", knock_frame(src, &valid.0), Drop(KNOCK_OK)));
    assert_eq!(admitted_until(&mut lab, src), Some(not_after + 1));

    // Rotation: the previous key still verifies; an unknown id does not.
    let by_previous = ticket::issue(&previous, "192.0.2.52".parse().unwrap(), not_after, 2);
    lab.check(&case("previous key", knock_frame("192.0.2.52", &by_previous.0), Drop(KNOCK_OK)));
    let retired = ticket::issue(&key(9, 9), "192.0.2.53".parse().unwrap(), not_after, 3);
    lab.check(&case("unknown key", knock_frame("192.0.2.53", &retired.0), Drop(KNOCK_UNKNOWN_KEY)));

    let expired = ticket::issue(&current, "192.0.2.54".parse().unwrap(), now() - 10, 4);
    lab.check(&case("expired", knock_frame("192.0.2.54", &expired.0), Drop(KNOCK_EXPIRED)));
    lab.check(&case("expired admits nothing", tcp("192.0.2.54"), Drop(UNKNOWN_RATE)));

    // Every single bit flip is refused, for the reason the userspace verifier gives.
    let other = "192.0.2.60";
    let base = ticket::issue(&current, other.parse().unwrap(), not_after, 5);
    for bit in 0..base.0.len() * 8 {
        let mut flipped: TicketBytes = base;
        flipped.0[bit / 8] ^= 1 << (bit % 8);
        let user = ticket::verify(&flipped, &ring, now(), Some(other.parse().unwrap()))
            .expect_err("userspace accepted a flipped ticket");
        let j = lab.filter.judge(&knock_frame(other, &flipped.0)).unwrap();
        assert_eq!(j.action, XDP_DROP, "bit {bit}");
        assert_eq!(
            j.reason_name(),
            format!("knock_{}", user.reason()),
            "bit {bit}: kernel vs daemon"
        );
    }
    lab.check(&case("no flip admitted anyone", tcp(other), Drop(UNKNOWN_RATE)));

    // Wrong sizes: truncated, oversized, empty; and a datagram cut short of its length.
    for len in [0, 1, 47, 49, 96] {
        let mut bytes = valid.0.to_vec();
        bytes.resize(len, 0);
        lab.check(&case(
            format!("{len}-byte knock"),
            knock_frame(src, &bytes),
            Drop(KNOCK_MALFORMED),
        ));
    }
    let whole = knock_frame("192.0.2.70", &valid.0);
    lab.check(&case("cut datagram", &whole[..whole.len() - 10], Drop(KNOCK_MALFORMED)));

    // IPv6 binds the /64.
    let v6 = ticket::issue(&current, "2001:db8:5:6::1".parse().unwrap(), not_after, 6);
    lab.check(&case(
        "v6 knock from the /64",
        knock_frame("2001:db8:5:6::99", &v6.0),
        Drop(KNOCK_OK),
    ));
    lab.check(&case("v6 admitted /64", tcp("2001:db8:5:6::abcd"), Pass(ADMITTED)));
    lab.check(&case("v6 other /64", knock_frame("2001:db8:5:7::1", &v6.0), Drop(KNOCK_WRONG_IP)));
    lab.check(&case("v6 other /64 not admitted", tcp("2001:db8:5:7::1"), Drop(UNKNOWN_RATE)));

    // Deny comes first: a denied source cannot knock its way in.
    let denied = ticket::issue(&current, "203.0.113.9".parse().unwrap(), not_after, 7);
    lab.check(&case("denied knock", knock_frame("203.0.113.9", &denied.0), Drop(DENY)));

    // Keys removed: every knock is an unknown key (the object file holds none).
    lab.filter.maps.set_ticket_keys(None).unwrap();
    let fresh = ticket::issue(&current, "192.0.2.80".parse().unwrap(), not_after, 8);
    lab.check(&case("no keys", knock_frame("192.0.2.80", &fresh.0), Drop(KNOCK_UNKNOWN_KEY)));

    // Purging drops what expired (the expired knock admitted nothing) and keeps the rest.
    let stale = edge::visitors::admission_key("192.0.2.90".parse().unwrap());
    lab.filter.maps.admit_key(stale, now() - 1).unwrap();
    assert_eq!(lab.filter.maps.purge_admissions(now()).unwrap(), 1);
    assert_eq!(admitted_until(&mut lab, "192.0.2.90"), None);
    assert_eq!(admitted_until(&mut lab, src), Some(not_after + 1));

    // Without a knock port, the port is just an unprotected UDP port.
    let plain = knock_policy(dir.path(), false);
    lab.filter.maps.apply(&plain, &VisitorHistory::default(), today).unwrap();
    lab.check(&case("knock off", knock_frame("192.0.2.80", &fresh.0), Pass(PASS_UNPROTECTED)));
}

#[test]
fn the_admitted_hint_gates_the_lookup_and_rebuilds_without_losing_admissions() {
    if !privileged("the_admitted_hint_gates_the_lookup_and_rebuilds_without_losing_admissions") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let policy = knock_policy(dir.path(), true);
    let mut lab = loaded();
    lab.filter.maps.reset_budgets().unwrap();
    lab.filter.maps.apply(&policy, &VisitorHistory::default(), Day::today_utc()).unwrap();
    let (a, b) = ("192.0.2.61", "192.0.2.62");
    let key = |ip: &str| edge::visitors::admission_key(ip.parse().unwrap());

    // Never admitted: the hint is closed, so the admitted map is not even looked up.
    assert!(!lab.filter.maps.admitted_hinted(&key(b)));
    lab.check(&case("never admitted", tcp(b), Drop(UNKNOWN_RATE)));

    lab.filter.maps.admit_key(key(a), now() + 3600).unwrap();
    assert!(lab.filter.maps.admitted_hinted(&key(a)));
    lab.check(&case("admitted", tcp(a), Pass(ADMITTED)));
    // Rebuilds flip generations; a held admission is in every one.
    for round in 0..3 {
        lab.filter.maps.rebuild_admitted_hint().unwrap();
        assert!(lab.filter.maps.admitted_hinted(&key(a)), "round {round}");
        lab.check(&case("admitted after a rebuild", tcp(a), Pass(ADMITTED)));
    }
    // Revoked: the next rebuild closes its slot again.
    lab.filter.maps.revoke(a.parse().unwrap()).unwrap();
    lab.filter.maps.rebuild_admitted_hint().unwrap();
    assert!(!lab.filter.maps.admitted_hinted(&key(a)));
    lab.check(&case("revoked", tcp(a), Drop(UNKNOWN_RATE)));
}
