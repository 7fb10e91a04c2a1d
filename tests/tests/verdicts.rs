//! Verdict fixtures through the real program (BPF_PROG_TEST_RUN), with maps set through the
//! control library from real policy text. Each case asserts the verdict and the counter delta:
//! exactly one packet, with the frame's bytes, under the expected reason and disposition.
use std::{
    net::IpAddr,
    path::Path,
    sync::{Mutex, MutexGuard, OnceLock},
};

use edge::{
    filter::{XDP_DROP, XDP_PASS},
    import::{self, Format},
    Day, Filter, Policy,
};
use edge_common::{keys::Counter, reason::*};
use edge_tests::{
    frames::{arp, frame, ipv6_long_chain, Fragment, L4},
    privileged,
};

/// One loaded program for the whole file (loading allocates the 512 MiB visitor bitmap); each
/// test takes it and applies its own policy and visitors (apply makes the maps hold exactly
/// those), after revoking the previous test's admissions.
struct Shared {
    filter: Filter,
    admitted: Vec<IpAddr>,
}

fn shared() -> MutexGuard<'static, Shared> {
    static SHARED: OnceLock<Mutex<Shared>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let filter = Filter::load().expect("loading the XDP program (BPF_PROG_LOAD)");
            Mutex::new(Shared { filter, admitted: Vec::new() })
        })
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const TODAY: &str = "2026-11-22";

/// A strict enforcing policy with lists in both families.
const STRICT: &str = r#"
mode = "enforce"
[unknown]
rate_pps = 0
[lists]
allow = ["198.51.100.0/24", "2001:db8:a::/48"]
deny = ["203.0.113.0/24", "2001:db8:dead::/48"]
"#;

const VISITORS: &str = "192.0.2.10\n2001:db8:1:2::10\n";

impl Shared {
    fn setup(&mut self, policy: &str, visitors: &str, today: &str) {
        self.setup_admitted(policy, visitors, today, &[]);
    }

    /// Applies a policy, visitors (CSV text) and admissions (`IP`, seconds from now).
    fn setup_admitted(
        &mut self,
        policy: &str,
        visitors: &str,
        today: &str,
        admitted: &[(&str, i64)],
    ) {
        let maps = &mut self.filter.maps;
        for ip in self.admitted.drain(..) {
            maps.revoke(ip).unwrap();
        }
        let today = Day::parse(today).unwrap();
        let policy = Policy::parse(policy, "fixture.toml", Path::new(".")).expect("fixture policy");
        let history =
            import::parse(visitors, "fixture.csv", Format::Csv, today).expect("fixture visitors");
        maps.apply(&policy, &history, today).unwrap();
        maps.reset_budgets().unwrap();
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
                as i64;
        for (ip, from_now) in admitted {
            let ip: IpAddr = ip.parse().unwrap();
            maps.admit(ip, (now + from_now) as u64).unwrap();
            self.admitted.push(ip);
        }
    }

    /// Runs `frame` and checks action and counters.
    #[track_caller]
    fn expect(&mut self, case: &str, frame: &[u8], action: u32, reason: Reason, would_drop: bool) {
        let before = self.filter.maps.stats().unwrap();
        let (got, _) = self.filter.run(frame, 1).unwrap();
        let delta = self.filter.maps.stats().unwrap().since(&before);
        let counted = if would_drop { delta.would_drop(reason) } else { delta.applied(reason) };
        let seen: Vec<_> = delta.rows(false).into_iter().map(|r| (r.reason, r.action)).collect();
        assert_eq!(got, action, "{case}: action (counted {seen:?})");
        assert_eq!(
            counted,
            Counter { packets: 1, bytes: frame.len() as u64 },
            "{case}: expected one packet under {}{} but counted {seen:?}",
            REASON_NAMES[reason as usize],
            if would_drop { " (would drop)" } else { "" },
        );
        assert_eq!(delta.total_packets(), 1, "{case}: counted more than once: {seen:?}");
    }

    #[track_caller]
    fn passes(&mut self, case: &str, frame: &[u8], reason: Reason) {
        self.expect(case, frame, XDP_PASS, reason, false);
    }

    #[track_caller]
    fn drops(&mut self, case: &str, frame: &[u8], reason: Reason) {
        self.expect(case, frame, XDP_DROP, reason, false);
    }
}

#[test]
fn every_stage_in_both_families() {
    if !privileged("every_stage_in_both_families") {
        return;
    }
    let mut s = shared();
    s.setup(STRICT, VISITORS, TODAY);

    s.passes("ARP is not IP", &arp(), NON_IP);
    s.passes(
        "neighbour solicitation",
        &frame("fe80::1", L4::NeighborSolicitation).build(),
        NEIGHBOR_DISCOVERY,
    );
    s.passes(
        "ND even from a denied prefix",
        &frame("2001:db8:dead::1", L4::NeighborSolicitation).build(),
        NEIGHBOR_DISCOVERY,
    );
    s.passes(
        "ND with hop limit 255 behind an extension header and a VLAN tag",
        &frame("2001:db8:dead::1", L4::NeighborSolicitation).ipv6_ext(&[60]).vlans(1).build(),
        NEIGHBOR_DISCOVERY,
    );
    // RFC 4861: a router on the way lowers the hop limit, so anything below 255 came from off
    // the link and is judged like any other packet.
    for hops in [254, 64, 1] {
        let nd = frame("2001:db8:dead::1", L4::NeighborSolicitation).hop_limit(hops);
        s.drops(&format!("ND from a denied prefix, hop limit {hops}"), &nd.build(), DENY);
        let tagged = nd.clone().ipv6_ext(&[60]).vlans(1).build();
        s.drops(&format!("the same behind an extension header and a tag ({hops})"), &tagged, DENY);
        let unknown = frame("2001:db8:99::1", L4::NeighborSolicitation).hop_limit(hops);
        s.passes(
            &format!("off-link ND from an unknown source ({hops})"),
            &unknown.build(),
            PASS_UNPROTECTED,
        );
    }

    s.drops("deny v4, protected port", &frame("203.0.113.5", L4::Tcp(443)).build(), DENY);
    s.drops("deny v4, any port", &frame("203.0.113.5", L4::Tcp(22)).build(), DENY);
    s.drops("deny v4, ICMP", &frame("203.0.113.5", L4::Echo).build(), DENY);
    s.drops("deny v6", &frame("2001:db8:dead:1::5", L4::Udp(53)).build(), DENY);

    s.passes("unprotected v4 ssh", &frame("192.0.2.99", L4::Tcp(22)).build(), PASS_UNPROTECTED);
    s.passes("unprotected v4 udp/80", &frame("192.0.2.99", L4::Udp(80)).build(), PASS_UNPROTECTED);
    s.passes("unprotected v4 ICMP", &frame("192.0.2.99", L4::Echo).build(), PASS_UNPROTECTED);
    s.passes("unprotected v6 dns", &frame("2001:db8:9::9", L4::Udp(53)).build(), PASS_UNPROTECTED);
    s.passes("unprotected v6 echo", &frame("2001:db8:9::9", L4::Echo).build(), PASS_UNPROTECTED);

    s.passes("allow v4", &frame("198.51.100.200", L4::Tcp(443)).build(), ALLOW);
    s.passes("allow v6", &frame("2001:db8:a:ffff::1", L4::Udp(443)).build(), ALLOW);

    s.passes("visitor v4", &frame("192.0.2.10", L4::Tcp(80)).build(), VISITOR);
    s.passes(
        "visitor v6, same /64 other host",
        &frame("2001:db8:1:2::beef", L4::Tcp(443)).build(),
        VISITOR,
    );
    s.drops(
        "v4 neighbour of a visitor is unknown",
        &frame("192.0.2.11", L4::Tcp(80)).build(),
        UNKNOWN_RATE,
    );
    s.drops(
        "v6 next /64 is unknown",
        &frame("2001:db8:1:3::10", L4::Tcp(443)).build(),
        UNKNOWN_RATE,
    );

    s.drops("unknown v4 strict", &frame("192.0.2.99", L4::Tcp(443)).build(), UNKNOWN_RATE);
    s.drops("unknown v6 strict", &frame("2001:db8:9::9", L4::Udp(443)).build(), UNKNOWN_RATE);
}

#[test]
fn admissions_pass_until_they_expire() {
    if !privileged("admissions_pass_until_they_expire") {
        return;
    }
    let mut s = shared();
    s.setup_admitted(
        STRICT,
        "",
        TODAY,
        &[
            ("192.0.2.50", 600),
            ("2001:db8:5:5::1", 600),
            ("192.0.2.51", -1),
            ("2001:db8:5:6::1", -1),
        ],
    );
    s.passes("admitted v4", &frame("192.0.2.50", L4::Tcp(443)).build(), ADMITTED);
    s.passes("admitted v6 /64", &frame("2001:db8:5:5::99", L4::Tcp(443)).build(), ADMITTED);
    s.drops("expired v4", &frame("192.0.2.51", L4::Tcp(443)).build(), UNKNOWN_RATE);
    s.drops("expired v6", &frame("2001:db8:5:6::1", L4::Tcp(443)).build(), UNKNOWN_RATE);
}

#[test]
fn vlan_options_and_extension_chains() {
    if !privileged("vlan_options_and_extension_chains") {
        return;
    }
    let mut s = shared();
    s.setup(STRICT, VISITORS, TODAY);
    for vlans in [1, 2] {
        s.passes(
            &format!("{vlans} tag(s): visitor v4"),
            &frame("192.0.2.10", L4::Tcp(443)).vlans(vlans).build(),
            VISITOR,
        );
        s.passes(
            &format!("{vlans} tag(s): visitor v6"),
            &frame("2001:db8:1:2::1", L4::Tcp(443)).vlans(vlans).build(),
            VISITOR,
        );
        s.drops(
            &format!("{vlans} tag(s): unknown"),
            &frame("192.0.2.99", L4::Tcp(443)).vlans(vlans).build(),
            UNKNOWN_RATE,
        );
        s.passes(
            &format!("{vlans} tag(s): unprotected"),
            &frame("192.0.2.99", L4::Tcp(22)).vlans(vlans).build(),
            PASS_UNPROTECTED,
        );
    }
    s.drops(
        "three tags are more than we look through",
        &frame("192.0.2.10", L4::Tcp(443)).vlans(3).build(),
        MALFORMED,
    );

    for bytes in [4, 20, 40] {
        // With options the ports move: a parser ignoring IHL would read the wrong port.
        s.passes(
            &format!("IPv4 options {bytes}B, ssh"),
            &frame("192.0.2.99", L4::Tcp(22)).ipv4_options(bytes).build(),
            PASS_UNPROTECTED,
        );
        s.drops(
            &format!("IPv4 options {bytes}B, https"),
            &frame("192.0.2.99", L4::Tcp(443)).ipv4_options(bytes).build(),
            UNKNOWN_RATE,
        );
    }

    let chain = [0, 60, 43, 51];
    s.passes(
        "v6 ext chain to ssh",
        &frame("2001:db8:9::9", L4::Tcp(22)).ipv6_ext(&chain).build(),
        PASS_UNPROTECTED,
    );
    s.drops(
        "v6 ext chain to https",
        &frame("2001:db8:9::9", L4::Tcp(443)).ipv6_ext(&chain).build(),
        UNKNOWN_RATE,
    );
    s.passes(
        "v6 ext chain, visitor",
        &frame("2001:db8:1:2::3", L4::Udp(443)).ipv6_ext(&chain).build(),
        VISITOR,
    );
    s.passes(
        "8 destination-option headers",
        &ipv6_long_chain("2001:db8:9::9", 8, 22),
        PASS_UNPROTECTED,
    );
    s.drops("9 headers: longer than we walk", &ipv6_long_chain("2001:db8:9::9", 9, 22), MALFORMED);
}

#[test]
fn fragments() {
    if !privileged("fragments") {
        return;
    }
    let mut s = shared();
    s.setup(STRICT, VISITORS, TODAY);
    for (src, visitor) in [("192.0.2", "192.0.2.10"), ("2001:db8:9:", "2001:db8:1:2::10")] {
        let unknown =
            if src.contains(':') { "2001:db8:9::9".to_string() } else { format!("{src}.99") };
        let f = |ip: &str, l4, frag| frame(ip, l4).fragment(frag).build();
        s.passes(
            &format!("{unknown}: first fragment, ssh"),
            &f(&unknown, L4::Tcp(22), Fragment::First),
            PASS_UNPROTECTED,
        );
        s.drops(
            &format!("{unknown}: first fragment, https"),
            &f(&unknown, L4::Tcp(443), Fragment::First),
            UNKNOWN_RATE,
        );
        s.drops(
            &format!("{unknown}: later fragment"),
            &f(&unknown, L4::Tcp(22), Fragment::Later),
            FRAGMENT,
        );
        s.passes(
            &format!("{visitor}: later fragment"),
            &f(visitor, L4::Tcp(443), Fragment::Later),
            VISITOR,
        );
    }
    s.passes(
        "allowed later fragment",
        &frame("198.51.100.1", L4::Udp(53)).fragment(Fragment::Later).build(),
        ALLOW,
    );
    s.drops(
        "denied first fragment",
        &frame("203.0.113.1", L4::Udp(53)).fragment(Fragment::First).build(),
        DENY,
    );
}

#[test]
fn truncated_at_every_header_boundary() {
    if !privileged("truncated_at_every_header_boundary") {
        return;
    }
    let mut s = shared();
    s.setup(STRICT, VISITORS, TODAY);
    let samples = [
        frame("192.0.2.10", L4::Tcp(443)),
        frame("192.0.2.10", L4::Udp(443)).vlans(2),
        frame("192.0.2.10", L4::Tcp(443)).ipv4_options(12),
        frame("2001:db8:1:2::10", L4::Tcp(443)).ipv6_ext(&[0, 60, 43, 51]),
        frame("2001:db8:1:2::10", L4::Udp(443)).vlans(1).fragment(Fragment::First),
        frame("fe80::1", L4::NeighborSolicitation),
    ];
    for sample in samples {
        let full = sample.build();
        let nd = sample.l4 == L4::NeighborSolicitation;
        // etherparse counts the ICMPv6 message body (4 bytes) as header; the type, code and
        // checksum before it are all neighbour discovery needs.
        let headers = sample.header_len() - if nd { 4 } else { 0 };
        // Even a visitor's packet is dropped if its headers are cut short: we never guess.
        for len in 14..headers {
            s.drops(&format!("{sample:?} cut at {len}/{headers}"), &full[..len], MALFORMED);
        }
        let whole = &full[..headers];
        let reason = if nd { NEIGHBOR_DISCOVERY } else { VISITOR };
        s.passes(&format!("{sample:?} headers only"), whole, reason);
    }
    // Shorter than an Ethernet header never reaches XDP; the kernel refuses to test-run it.
    assert!(s.filter.run(&arp()[..13], 1).is_err());
}

#[test]
fn malformed_headers() {
    if !privileged("malformed_headers") {
        return;
    }
    let mut s = shared();
    s.setup(STRICT, VISITORS, TODAY);
    let good = frame("192.0.2.10", L4::Tcp(443)).build();
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44; // IHL 4 (16 bytes) is less than the fixed header
    s.drops("IPv4 IHL < 5", &bad_ihl, MALFORMED);
    let mut bad_version = good.clone();
    bad_version[14] = 0x65;
    s.drops("IPv4 ethertype carrying version 6", &bad_version, MALFORMED);
    let mut bad_total = good.clone();
    bad_total[16..18].copy_from_slice(&10u16.to_be_bytes());
    s.drops("IPv4 total length below the header", &bad_total, MALFORMED);
    let mut bad_doff = good.clone();
    bad_doff[14 + 20 + 12] = 0x40; // TCP data offset 4
    s.drops("TCP data offset < 5", &bad_doff, MALFORMED);
    let v6 = frame("2001:db8:1:2::10", L4::Tcp(443)).build();
    let mut bad_v6 = v6.clone();
    bad_v6[14] = 0x40;
    s.drops("IPv6 ethertype carrying version 4", &bad_v6, MALFORMED);
}

#[test]
fn modes() {
    if !privileged("modes") {
        return;
    }
    let mut s = shared();
    let unknown = frame("192.0.2.99", L4::Tcp(443)).build();
    let denied = frame("203.0.113.5", L4::Tcp(443)).build();
    let cut = &frame("192.0.2.10", L4::Tcp(443)).build()[..30];

    s.setup(&STRICT.replace("enforce", "off"), VISITORS, TODAY);
    s.passes("off: unknown", &unknown, OFF);
    s.passes("off: denied", &denied, OFF);
    s.passes("off: malformed", cut, OFF);

    s.setup(&STRICT.replace("enforce", "monitor"), VISITORS, TODAY);
    s.expect("monitor: unknown", &unknown, XDP_PASS, UNKNOWN_RATE, true);
    s.expect("monitor: denied", &denied, XDP_PASS, DENY, true);
    s.expect("monitor: malformed", cut, XDP_PASS, MALFORMED, true);
    s.passes("monitor: visitor", &frame("192.0.2.10", L4::Tcp(443)).build(), VISITOR);

    s.setup(STRICT, VISITORS, TODAY);
    s.drops("enforce: unknown", &unknown, UNKNOWN_RATE);
    s.drops("enforce: malformed", cut, MALFORMED);
}

#[test]
fn window_boundary() {
    if !privileged("window_boundary") {
        return;
    }
    let mut s = shared();
    let seen = "2026-11-01";
    let visitors = format!("192.0.2.10,{seen}\n2001:db8:1:2::10,{seen}\n");
    let d = Day::parse(seen).unwrap();
    let v4 = frame("192.0.2.10", L4::Tcp(443)).build();
    let v6 = frame("2001:db8:1:2::10", L4::Tcp(443)).build();
    for (day, passes) in [(0, true), (20, true), (21, false), (22, false)] {
        let today = d.plus(day).to_string();
        // Apply on top of the previous day's state: the roll itself must take visitors out.
        s.filter
            .maps
            .apply(
                &Policy::parse(STRICT, "fixture.toml", Path::new(".")).unwrap(),
                &import::parse(&visitors, "v.csv", Format::Csv, d.plus(day)).unwrap(),
                d.plus(day),
            )
            .unwrap();
        for (family, f) in [("v4", &v4), ("v6", &v6)] {
            if passes {
                s.passes(&format!("{family} seen D, today D+{day} ({today})"), f, VISITOR);
            } else {
                s.drops(&format!("{family} seen D, today D+{day} ({today})"), f, UNKNOWN_RATE);
            }
        }
    }
}

#[test]
fn token_bucket_burst_then_drop() {
    if !privileged("token_bucket_burst_then_drop") {
        return;
    }
    let mut s = shared();
    // One token a second, a burst of 5; the global budget is not the limit here.
    let policy = "mode = \"enforce\"\n[unknown]\nrate_pps = 1\nburst = 5\nglobal_pps = 1000000\nprefix_v4 = 24\n";
    s.setup(policy, "", TODAY);
    let a = frame("192.0.2.99", L4::Tcp(443)).build();
    for i in 1..=5 {
        s.passes(&format!("burst packet {i}"), &a, UNKNOWN_PASS);
    }
    s.drops("sixth packet", &a, UNKNOWN_RATE);
    // prefix_v4 = 24: a neighbour in the same /24 shares the spent bucket...
    s.drops("same /24 shares the bucket", &frame("192.0.2.98", L4::Tcp(443)).build(), UNKNOWN_RATE);
    // ...and another /24 has its own.
    s.passes("another /24", &frame("198.18.0.1", L4::Tcp(443)).build(), UNKNOWN_PASS);
    let v6 = frame("2001:db8:7:7::1", L4::Udp(443)).build();
    for i in 1..=5 {
        s.passes(&format!("v6 burst packet {i}"), &v6, UNKNOWN_PASS);
    }
    s.drops("v6 sixth packet", &v6, UNKNOWN_RATE);
    s.drops(
        "v6 same /64 shares the bucket",
        &frame("2001:db8:7:7::2", L4::Udp(443)).build(),
        UNKNOWN_RATE,
    );
}

#[test]
fn global_budget_exhaustion_creates_no_source_state() {
    if !privileged("global_budget_exhaustion_creates_no_source_state") {
        return;
    }
    let mut s = shared();
    let policy = "mode = \"enforce\"\n[unknown]\nrate_pps = 1000\nburst = 1000\nglobal_pps = 1\nglobal_burst = 3\n";
    s.setup(policy, VISITORS, TODAY);
    for i in 1..=3 {
        s.passes(
            &format!("source {i} within the global budget"),
            &frame(&format!("198.18.0.{i}"), L4::Tcp(443)).build(),
            UNKNOWN_PASS,
        );
    }
    for i in 4..=20 {
        s.drops(
            &format!("source {i}: global budget spent"),
            &frame(&format!("198.18.0.{i}"), L4::Tcp(443)).build(),
            UNKNOWN_GLOBAL,
        );
    }
    let buckets = s.filter.maps.bucket_keys().unwrap();
    assert_eq!(buckets.len(), 3, "only the sources that passed got a bucket: {buckets:?}");
    // Known sources never touch the budget.
    s.passes("visitor unaffected", &frame("192.0.2.10", L4::Tcp(443)).build(), VISITOR);
}

/// The /24 bits in front of the allow and deny tries: every prefix length, IPv6 prefixes that
/// cover IPv4 (v4-mapped), and removals that clear the bits no prefix touches any more while
/// keeping those another prefix still does.
#[test]
fn list_prefixes_of_every_length_and_their_removal() {
    if !privileged("list_prefixes_of_every_length_and_their_removal") {
        return;
    }
    let mut s = shared();
    let policy = r#"
mode = "enforce"
[unknown]
rate_pps = 0
[lists]
deny = ["10.0.0.0/8", "172.16.5.0/24", "172.16.6.7/32", "100.64.0.0/23", "::ffff:198.18.0.0/111",
        "2001:db8:bad::/48", "2001:db8:cafe::/47"]
allow = ["192.0.2.128/25", "10.9.0.0/16", "2001:db8:a::/48"]
"#;
    s.setup(policy, "", TODAY);
    let deny = edge_common::maps::DENY;
    let allow = edge_common::maps::ALLOW;
    let tcp = |ip: &str| frame(ip, L4::Tcp(443)).build();
    for ip in ["10.0.0.1", "10.255.255.254", "172.16.5.9", "172.16.6.7", "100.64.1.200"] {
        s.drops(ip, &tcp(ip), DENY);
    }
    // The IPv6 prefix ::ffff:198.18.0.0/111 is IPv4 198.18.0.0/15, written as IPv6.
    s.drops("198.19.255.1 via an IPv6 rule", &tcp("198.19.255.1"), DENY);
    for ip in ["11.0.0.1", "172.16.4.255", "172.16.6.8", "100.64.2.0", "198.20.0.1"] {
        s.drops(ip, &tcp(ip), UNKNOWN_RATE);
    }
    // Deny is judged before allow: 10.9.0.0/16 is inside the denied 10/8.
    s.drops("denied before allowed", &tcp("10.9.1.1"), DENY);
    s.passes("allowed /25", &tcp("192.0.2.200"), ALLOW);
    s.drops("the other /25", &tcp("192.0.2.100"), UNKNOWN_RATE);
    let marked =
        |s: &Shared, list, ip: &str| s.filter.maps.list_net_marked(list, ip.parse().unwrap());
    assert!(marked(&s, deny, "10.200.3.4") && marked(&s, deny, "198.18.77.1"));
    assert!(!marked(&s, deny, "11.0.0.1") && !marked(&s, allow, "10.0.0.1"));
    assert!(marked(&s, allow, "192.0.2.1"), "a /25 marks its whole /24");
    // IPv6: a listed /48 marks its /32; a source in another /32 skips the trie.
    let udp = |ip: &str| frame(ip, L4::Udp(443)).build();
    s.drops("denied /48", &udp("2001:db8:bad:ffff::1"), DENY);
    s.drops("denied /47, its second /48", &udp("2001:db8:caff::1"), DENY);
    s.drops("same /32, not denied", &udp("2001:db8:bae::1"), UNKNOWN_RATE);
    s.passes("allowed /48", &udp("2001:db8:a:1::1"), ALLOW);
    s.drops("another /32", &udp("2a00:1450::1"), UNKNOWN_RATE);
    assert!(marked(&s, deny, "2001:db8:ffff::1") && !marked(&s, deny, "2a00:1450::1"));
    assert!(marked(&s, allow, "2001:db8::1") && !marked(&s, allow, "2001:db9::1"));

    // Removing the /8 clears its bits, except where a prefix still in the list lives.
    let net = |n: &str| n.parse::<ipnet::IpNet>().unwrap();
    s.filter.maps.remove_rules(deny, &[net("10.0.0.0/8"), net("::ffff:198.18.0.0/111")]).unwrap();
    assert!(!marked(&s, deny, "10.0.0.1") && !marked(&s, deny, "198.18.0.1"));
    assert!(marked(&s, deny, "172.16.5.1") && marked(&s, deny, "100.64.1.1"));
    s.drops("no longer denied", &tcp("10.0.0.1"), UNKNOWN_RATE);
    s.passes("allowed once the /8 is gone", &tcp("10.9.1.1"), ALLOW);
    s.drops("still denied", &tcp("172.16.6.7"), DENY);

    // An IPv6 prefix covering all of IPv4 marks every /24; taking it out unmarks them.
    s.filter.maps.insert_rules(deny, &[net("::/0")]).unwrap();
    assert!(marked(&s, deny, "1.2.3.4") && marked(&s, deny, "223.255.255.1"));
    assert!(marked(&s, deny, "2a00:1450::1"));
    s.drops("::/0 denies IPv4 too", &tcp("1.2.3.4"), DENY);
    s.drops("::/0 denies IPv6", &frame("2001:db8:9::9", L4::Udp(443)).build(), DENY);
    s.filter.maps.remove_rules(deny, &[net("::/0")]).unwrap();
    assert!(!marked(&s, deny, "1.2.3.4") && marked(&s, deny, "172.16.5.1"));
    assert!(!marked(&s, deny, "2a00:1450::1") && marked(&s, deny, "2001:db8:bad::1"));
    s.drops("v6 back to unknown", &udp("2a00:1450::1"), UNKNOWN_RATE);
    s.drops("v6 still denied", &udp("2001:db8:bad::1"), DENY);
    s.drops("back to unknown", &tcp("1.2.3.4"), UNKNOWN_RATE);
}
