//! Verdict fixtures through the real program (BPF_PROG_TEST_RUN), with maps set through the
//! control library from real policy text. Each case is data (what the frame is, the frame, the
//! expected action and reason) checked by the shared harness: exactly one packet, with the
//! frame's bytes, counted under the expected reason and disposition.
use std::path::Path;

use edge::{
    import::{self, Format},
    Day, Policy,
};
use edge_common::reason::*;
use edge_tests::{
    frames::{arp, frame, ipv6_long_chain, Fragment, L4},
    harness::{case, loaded, Case, Expect::*, Loaded},
    lab::TODAY,
    privileged,
};

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

#[test]
fn every_stage_in_both_families() {
    if !privileged("every_stage_in_both_families") {
        return;
    }
    let tcp = |ip: &str, port| frame(ip, L4::Tcp(port)).build();
    let udp = |ip: &str, port| frame(ip, L4::Udp(port)).build();
    let echo = |ip: &str| frame(ip, L4::Echo).build();
    let nd = |ip: &str| frame(ip, L4::NeighborSolicitation);
    let mut cases = vec![
        case("ARP is not IP", arp(), Pass(NON_IP)),
        case("neighbour solicitation", nd("fe80::1").build(), Pass(NEIGHBOR_DISCOVERY)),
        case(
            "ND even from a denied prefix",
            nd("2001:db8:dead::1").build(),
            Pass(NEIGHBOR_DISCOVERY),
        ),
        case(
            "ND with hop limit 255 behind an extension header and a VLAN tag",
            nd("2001:db8:dead::1").ipv6_ext(&[60]).vlans(1).build(),
            Pass(NEIGHBOR_DISCOVERY),
        ),
        case("deny v4, protected port", tcp("203.0.113.5", 443), Drop(DENY)),
        case("deny v4, any port", tcp("203.0.113.5", 22), Drop(DENY)),
        case("deny v4, ICMP", echo("203.0.113.5"), Drop(DENY)),
        case("deny v6", udp("2001:db8:dead:1::5", 53), Drop(DENY)),
        case("unprotected v4 ssh", tcp("192.0.2.99", 22), Pass(PASS_UNPROTECTED)),
        case("unprotected v4 udp/80", udp("192.0.2.99", 80), Pass(PASS_UNPROTECTED)),
        case("unprotected v4 ICMP", echo("192.0.2.99"), Pass(PASS_UNPROTECTED)),
        case("unprotected v6 dns", udp("2001:db8:9::9", 53), Pass(PASS_UNPROTECTED)),
        case("unprotected v6 echo", echo("2001:db8:9::9"), Pass(PASS_UNPROTECTED)),
        case("allow v4", tcp("198.51.100.200", 443), Pass(ALLOW)),
        case("allow v6", udp("2001:db8:a:ffff::1", 443), Pass(ALLOW)),
        case("visitor v4", tcp("192.0.2.10", 80), Pass(VISITOR)),
        case("visitor v6, same /64 other host", tcp("2001:db8:1:2::beef", 443), Pass(VISITOR)),
        case("v4 neighbour of a visitor is unknown", tcp("192.0.2.11", 80), Drop(UNKNOWN_RATE)),
        case("v6 next /64 is unknown", tcp("2001:db8:1:3::10", 443), Drop(UNKNOWN_RATE)),
        case("unknown v4 strict", tcp("192.0.2.99", 443), Drop(UNKNOWN_RATE)),
        case("unknown v6 strict", udp("2001:db8:9::9", 443), Drop(UNKNOWN_RATE)),
    ];
    // RFC 4861: a router on the way lowers the hop limit, so anything below 255 came from off
    // the link and is judged like any other packet.
    for hops in [254, 64, 1] {
        let denied = nd("2001:db8:dead::1").hop_limit(hops);
        cases.extend([
            case(format!("ND from a denied prefix, hop limit {hops}"), denied.build(), Drop(DENY)),
            case(
                format!("the same behind an extension header and a tag ({hops})"),
                denied.clone().ipv6_ext(&[60]).vlans(1).build(),
                Drop(DENY),
            ),
            case(
                format!("off-link ND from an unknown source ({hops})"),
                nd("2001:db8:99::1").hop_limit(hops).build(),
                Pass(PASS_UNPROTECTED),
            ),
        ]);
    }
    let mut s = loaded();
    s.setup(STRICT, VISITORS, TODAY);
    s.check_all(&cases);
}

#[test]
fn admissions_pass_until_they_expire() {
    if !privileged("admissions_pass_until_they_expire") {
        return;
    }
    let admitted = [
        ("192.0.2.50", 600),
        ("2001:db8:5:5::1", 600),
        ("192.0.2.51", -1),
        ("2001:db8:5:6::1", -1),
    ];
    let tcp = |ip: &str| frame(ip, L4::Tcp(443)).build();
    let cases = [
        case("admitted v4", tcp("192.0.2.50"), Pass(ADMITTED)),
        case("admitted v6 /64", tcp("2001:db8:5:5::99"), Pass(ADMITTED)),
        case("expired v4", tcp("192.0.2.51"), Drop(UNKNOWN_RATE)),
        case("expired v6", tcp("2001:db8:5:6::1"), Drop(UNKNOWN_RATE)),
    ];
    let mut s = loaded();
    s.setup_admitted(STRICT, "", TODAY, &admitted);
    s.check_all(&cases);
}

#[test]
fn vlan_options_and_extension_chains() {
    if !privileged("vlan_options_and_extension_chains") {
        return;
    }
    let mut cases = Vec::new();
    for vlans in [1, 2] {
        let tagged = |ip: &str, l4| frame(ip, l4).vlans(vlans).build();
        cases.extend([
            case(
                format!("{vlans} tag(s): visitor v4"),
                tagged("192.0.2.10", L4::Tcp(443)),
                Pass(VISITOR),
            ),
            case(
                format!("{vlans} tag(s): visitor v6"),
                tagged("2001:db8:1:2::1", L4::Tcp(443)),
                Pass(VISITOR),
            ),
            case(
                format!("{vlans} tag(s): unknown"),
                tagged("192.0.2.99", L4::Tcp(443)),
                Drop(UNKNOWN_RATE),
            ),
            case(
                format!("{vlans} tag(s): unprotected"),
                tagged("192.0.2.99", L4::Tcp(22)),
                Pass(PASS_UNPROTECTED),
            ),
        ]);
    }
    cases.push(case(
        "three tags are more than we look through",
        frame("192.0.2.10", L4::Tcp(443)).vlans(3).build(),
        Drop(MALFORMED),
    ));
    for bytes in [4, 20, 40] {
        // With options the ports move: a parser ignoring IHL would read the wrong port.
        let with = |port| frame("192.0.2.99", L4::Tcp(port)).ipv4_options(bytes).build();
        cases.extend([
            case(format!("IPv4 options {bytes}B, ssh"), with(22), Pass(PASS_UNPROTECTED)),
            case(format!("IPv4 options {bytes}B, https"), with(443), Drop(UNKNOWN_RATE)),
        ]);
    }
    let chain = [0, 60, 43, 51];
    let chained = |ip: &str, l4| frame(ip, l4).ipv6_ext(&chain).build();
    cases.extend([
        case("v6 ext chain to ssh", chained("2001:db8:9::9", L4::Tcp(22)), Pass(PASS_UNPROTECTED)),
        case("v6 ext chain to https", chained("2001:db8:9::9", L4::Tcp(443)), Drop(UNKNOWN_RATE)),
        case("v6 ext chain, visitor", chained("2001:db8:1:2::3", L4::Udp(443)), Pass(VISITOR)),
        case(
            "8 destination-option headers",
            ipv6_long_chain("2001:db8:9::9", 8, 22),
            Pass(PASS_UNPROTECTED),
        ),
        case(
            "9 headers: longer than we walk",
            ipv6_long_chain("2001:db8:9::9", 9, 22),
            Drop(MALFORMED),
        ),
    ]);
    let mut s = loaded();
    s.setup(STRICT, VISITORS, TODAY);
    s.check_all(&cases);
}

#[test]
fn fragments() {
    if !privileged("fragments") {
        return;
    }
    let f = |ip: &str, l4, part| frame(ip, l4).fragment(part).build();
    let mut cases = Vec::new();
    for (unknown, visitor) in [("192.0.2.99", "192.0.2.10"), ("2001:db8:9::9", "2001:db8:1:2::10")]
    {
        cases.extend([
            case(
                format!("{unknown}: first fragment, ssh"),
                f(unknown, L4::Tcp(22), Fragment::First),
                Pass(PASS_UNPROTECTED),
            ),
            case(
                format!("{unknown}: first fragment, https"),
                f(unknown, L4::Tcp(443), Fragment::First),
                Drop(UNKNOWN_RATE),
            ),
            case(
                format!("{unknown}: later fragment"),
                f(unknown, L4::Tcp(22), Fragment::Later),
                Drop(FRAGMENT),
            ),
            case(
                format!("{visitor}: later fragment"),
                f(visitor, L4::Tcp(443), Fragment::Later),
                Pass(VISITOR),
            ),
        ]);
    }
    cases.extend([
        case(
            "allowed later fragment",
            f("198.51.100.1", L4::Udp(53), Fragment::Later),
            Pass(ALLOW),
        ),
        case("denied first fragment", f("203.0.113.1", L4::Udp(53), Fragment::First), Drop(DENY)),
    ]);
    let mut s = loaded();
    s.setup(STRICT, VISITORS, TODAY);
    s.check_all(&cases);
}

#[test]
fn truncated_at_every_header_boundary() {
    if !privileged("truncated_at_every_header_boundary") {
        return;
    }
    let samples = [
        frame("192.0.2.10", L4::Tcp(443)),
        frame("192.0.2.10", L4::Udp(443)).vlans(2),
        frame("192.0.2.10", L4::Tcp(443)).ipv4_options(12),
        frame("2001:db8:1:2::10", L4::Tcp(443)).ipv6_ext(&[0, 60, 43, 51]),
        frame("2001:db8:1:2::10", L4::Udp(443)).vlans(1).fragment(Fragment::First),
        frame("fe80::1", L4::NeighborSolicitation),
    ];
    let mut cases = Vec::new();
    for sample in samples {
        let full = sample.build();
        let nd = sample.l4 == L4::NeighborSolicitation;
        // etherparse counts the ICMPv6 message body (4 bytes) as header; the type, code and
        // checksum before it are all neighbour discovery needs.
        let headers = sample.header_len() - if nd { 4 } else { 0 };
        // Even a visitor's packet is dropped if its headers are cut short: we never guess.
        for len in 14..headers {
            cases.push(case(
                format!("{sample:?} cut at {len}/{headers}"),
                &full[..len],
                Drop(MALFORMED),
            ));
        }
        let reason = if nd { NEIGHBOR_DISCOVERY } else { VISITOR };
        cases.push(case(format!("{sample:?} headers only"), &full[..headers], Pass(reason)));
    }
    let mut s = loaded();
    s.setup(STRICT, VISITORS, TODAY);
    s.check_all(&cases);
    // Shorter than an Ethernet header never reaches XDP; the kernel refuses to test-run it.
    assert!(s.filter.run(&arp()[..13], 1).is_err());
}

#[test]
fn malformed_headers() {
    if !privileged("malformed_headers") {
        return;
    }
    let good = frame("192.0.2.10", L4::Tcp(443)).build();
    let v6 = frame("2001:db8:1:2::10", L4::Tcp(443)).build();
    let altered = |frame: &[u8], at: usize, bytes: &[u8]| {
        let mut out = frame.to_vec();
        out[at..at + bytes.len()].copy_from_slice(bytes);
        out
    };
    let cases = [
        // IHL 4 (16 bytes) is less than the fixed header.
        case("IPv4 IHL < 5", altered(&good, 14, &[0x44]), Drop(MALFORMED)),
        case("IPv4 ethertype carrying version 6", altered(&good, 14, &[0x65]), Drop(MALFORMED)),
        case(
            "IPv4 total length below the header",
            altered(&good, 16, &10u16.to_be_bytes()),
            Drop(MALFORMED),
        ),
        case("TCP data offset < 5", altered(&good, 14 + 20 + 12, &[0x40]), Drop(MALFORMED)),
        case("IPv6 ethertype carrying version 4", altered(&v6, 14, &[0x40]), Drop(MALFORMED)),
    ];
    let mut s = loaded();
    s.setup(STRICT, VISITORS, TODAY);
    s.check_all(&cases);
}

#[test]
fn modes() {
    if !privileged("modes") {
        return;
    }
    let unknown = frame("192.0.2.99", L4::Tcp(443)).build();
    let denied = frame("203.0.113.5", L4::Tcp(443)).build();
    let cut = &frame("192.0.2.10", L4::Tcp(443)).build()[..30];
    let visitor = frame("192.0.2.10", L4::Tcp(443)).build();
    let table: [(&str, Vec<Case>); 3] = [
        (
            "off",
            vec![
                case("off: unknown", &unknown, Pass(OFF)),
                case("off: denied", &denied, Pass(OFF)),
                case("off: malformed", cut, Pass(OFF)),
            ],
        ),
        (
            "monitor",
            vec![
                case("monitor: unknown", &unknown, WouldDrop(UNKNOWN_RATE)),
                case("monitor: denied", &denied, WouldDrop(DENY)),
                case("monitor: malformed", cut, WouldDrop(MALFORMED)),
                case("monitor: visitor", &visitor, Pass(VISITOR)),
            ],
        ),
        (
            "enforce",
            vec![
                case("enforce: unknown", &unknown, Drop(UNKNOWN_RATE)),
                case("enforce: malformed", cut, Drop(MALFORMED)),
            ],
        ),
    ];
    let mut s = loaded();
    for (mode, cases) in table {
        s.setup(&STRICT.replace("enforce", mode), VISITORS, TODAY);
        s.check_all(&cases);
    }
}

#[test]
fn window_boundary() {
    if !privileged("window_boundary") {
        return;
    }
    let mut s = loaded();
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
                s.check(&case(
                    format!("{family} seen D, today D+{day} ({today})"),
                    f,
                    Pass(VISITOR),
                ));
            } else {
                s.check(&case(
                    format!("{family} seen D, today D+{day} ({today})"),
                    f,
                    Drop(UNKNOWN_RATE),
                ));
            }
        }
    }
}

#[test]
fn token_bucket_burst_then_drop() {
    if !privileged("token_bucket_burst_then_drop") {
        return;
    }
    let mut s = loaded();
    // One token a second, a burst of 5; the global budget is not the limit here.
    let policy = "mode = \"enforce\"\n[unknown]\nrate_pps = 1\nburst = 5\nglobal_pps = 1000000\nprefix_v4 = 24\n";
    s.setup(policy, "", TODAY);
    let a = frame("192.0.2.99", L4::Tcp(443)).build();
    for i in 1..=5 {
        s.check(&case(format!("burst packet {i}"), &a, Pass(UNKNOWN_PASS)));
    }
    s.check(&case("sixth packet", &a, Drop(UNKNOWN_RATE)));
    // prefix_v4 = 24: a neighbour in the same /24 shares the spent bucket...
    s.check(&case(
        "same /24 shares the bucket",
        frame("192.0.2.98", L4::Tcp(443)).build(),
        Drop(UNKNOWN_RATE),
    ));
    // ...and another /24 has its own.
    s.check(&case("another /24", frame("198.18.0.1", L4::Tcp(443)).build(), Pass(UNKNOWN_PASS)));
    let v6 = frame("2001:db8:7:7::1", L4::Udp(443)).build();
    for i in 1..=5 {
        s.check(&case(format!("v6 burst packet {i}"), &v6, Pass(UNKNOWN_PASS)));
    }
    s.check(&case("v6 sixth packet", &v6, Drop(UNKNOWN_RATE)));
    s.check(&case(
        "v6 same /64 shares the bucket",
        frame("2001:db8:7:7::2", L4::Udp(443)).build(),
        Drop(UNKNOWN_RATE),
    ));
}

#[test]
fn global_budget_exhaustion_creates_no_source_state() {
    if !privileged("global_budget_exhaustion_creates_no_source_state") {
        return;
    }
    let mut s = loaded();
    let policy = "mode = \"enforce\"\n[unknown]\nrate_pps = 1000\nburst = 1000\nglobal_pps = 1\nglobal_burst = 3\n";
    s.setup(policy, VISITORS, TODAY);
    for i in 1..=3 {
        s.check(&case(
            format!("source {i} within the global budget"),
            frame(&format!("198.18.0.{i}"), L4::Tcp(443)).build(),
            Pass(UNKNOWN_PASS),
        ));
    }
    for i in 4..=20 {
        s.check(&case(
            format!("source {i}: global budget spent"),
            frame(&format!("198.18.0.{i}"), L4::Tcp(443)).build(),
            Drop(UNKNOWN_GLOBAL),
        ));
    }
    let buckets = s.filter.maps.bucket_keys().unwrap();
    assert_eq!(buckets.len(), 3, "only the sources that passed got a bucket: {buckets:?}");
    // Known sources never touch the budget.
    s.check(&case("visitor unaffected", frame("192.0.2.10", L4::Tcp(443)).build(), Pass(VISITOR)));
}

/// A botnet's sources over their budgets are remembered in lines of eight ways: sources whose
/// hashes pick one line do not evict each other until it is full, and then only one goes
/// (back to its bucket, which judges it the same). No verdict depends on the line: every
/// source drops while over its budget and passes again once its bucket takes a packet.
#[test]
fn sources_over_budget_share_a_line_without_evicting_each_other() {
    if !privileged("sources_over_budget_share_a_line_without_evicting_each_other") {
        return;
    }
    use edge_common::{
        keys::{addr_words, blocked_holds, blocked_way_free, v4_mapped, BLOCKED_WAYS},
        maps::unknown_blocked_slot,
    };
    let mut s = loaded();
    let policy = "mode = \"enforce\"\n[unknown]\nrate_pps = 1\nburst = 1\nglobal_pps = 1000000\n\
                  prefix_v4 = 32\n";
    s.setup(policy, "", TODAY);
    let epoch = s.filter.maps.blocked_epoch().unwrap();
    let slot =
        |ip: &std::net::Ipv4Addr| unknown_blocked_slot(addr_words(&v4_mapped(ip.octets())), epoch);
    // One more source than the line has ways, all picking the line of 198.0.0.0 (about 4 in
    // 2^17 addresses do).
    let line = slot(&"198.0.0.0".parse().unwrap()).0;
    let zombies: Vec<std::net::Ipv4Addr> = (0..1u32 << 22)
        .map(|i| std::net::Ipv4Addr::from(0xc600_0000 + i))
        .filter(|ip| slot(ip).0 == line)
        .take(BLOCKED_WAYS + 1)
        .collect();
    assert_eq!(zombies.len(), BLOCKED_WAYS + 1, "sources on line {line}");
    let frames: Vec<Vec<u8>> =
        zombies.iter().map(|z| frame(&z.to_string(), L4::Tcp(443)).build()).collect();
    let mut remembered = Vec::new();
    for (z, f) in zombies.iter().zip(&frames) {
        s.check(&case(format!("{z}: its one token"), f, Pass(UNKNOWN_PASS)));
        s.check(&case(format!("{z}: over its budget"), f, Drop(UNKNOWN_RATE)));
        s.check(&case(format!("{z}: remembered over it"), f, Drop(UNKNOWN_RATE)));
        remembered.push(slot(z).1);
        let ways = s.filter.maps.blocked_line(line).unwrap().ways;
        let now = coarse_now_ns();
        let held: Vec<u64> = remembered
            .iter()
            .copied()
            .filter(|t| ways.iter().any(|w| blocked_holds(*w, *t, now)))
            .collect();
        let live = ways.iter().filter(|w| !blocked_way_free(**w, now)).count();
        let expect = remembered.len().min(BLOCKED_WAYS);
        assert_eq!((held.len(), live), (expect, expect), "{z}: line {line}: {ways:x?}");
        assert!(held.contains(&slot(z).1), "{z} is in its line: {ways:x?}");
    }
    // Every source, remembered or evicted, is still over its budget...
    for (z, f) in zombies.iter().zip(&frames) {
        s.check(&case(format!("{z}: still over its budget"), f, Drop(UNKNOWN_RATE)));
    }
    // ...and no word outlasts its bucket: a second later each takes its next token.
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    for (z, f) in zombies.iter().zip(&frames) {
        s.check(&case(format!("{z}: a second later"), f, Pass(UNKNOWN_PASS)));
    }
}

/// CLOCK_MONOTONIC_COARSE, the clock the program's budgets read.
fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to write.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) }, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A global budget large enough to be charged in batches (a CPU takes up to 64 tokens at once,
/// budget.rs) still keeps to its burst: it passes the burst and at most a quarter more (what
/// the CPUs may hold ahead), then everything is `unknown_global` until it refills.
#[test]
fn a_global_budget_charged_in_batches_keeps_to_its_burst() {
    if !privileged("a_global_budget_charged_in_batches_keeps_to_its_burst") {
        return;
    }
    let mut s = loaded();
    // Credit is per CPU: the whole sequence on one.
    edge_tests::cores::pin_to(0).unwrap();
    let burst = 210;
    let policy = format!(
        "mode = \"enforce\"\n[unknown]\nrate_pps = 1000\nburst = 1000\nglobal_pps = 1\n\
         global_burst = {burst}\n"
    );
    s.setup(&policy, VISITORS, TODAY);
    let mut verdicts = Vec::new();
    for i in 0..400u32 {
        let src = std::net::Ipv4Addr::from(0xc612_0000 + i).to_string();
        let (action, _) = s.filter.run(&frame(&src, L4::Tcp(443)).build(), 1).unwrap();
        verdicts.push(action == edge::filter::XDP_PASS);
    }
    let passed = verdicts.iter().filter(|p| **p).count();
    assert!((burst..=burst + burst / 4).contains(&passed), "{passed} of a burst of {burst} passed");
    // Charged a batch at a time (a quarter of the burst over the CPUs): whole batches pass.
    let cpus = aya::util::nr_cpus().unwrap();
    let batch = (burst / 4 / cpus).clamp(1, 64);
    assert_eq!(passed, burst.div_ceil(batch) * batch, "batches of {batch} over {cpus} CPUs");
    assert!(verdicts[..passed].iter().all(|p| *p), "the passes come first, then none");
    s.check(&case("spent", frame("198.19.0.1", L4::Tcp(443)).build(), Drop(UNKNOWN_GLOBAL)));
}

/// The admission endpoint's port (`admission.http.listen`) has budgets of its own: what reaches
/// the daemon's endpoint is bounded per source and in all, while known sources pass as
/// anywhere and the unknown budgets stay untouched.
#[test]
fn the_endpoint_port_has_budgets_of_its_own() {
    if !privileged("the_endpoint_port_has_budgets_of_its_own") {
        return;
    }
    let endpoint = |budgets: &str| {
        format!(
            "mode = \"enforce\"\n[unknown]\nrate_pps = 0\n[lists]\ndeny = [\"203.0.113.0/24\"]\n\
             [admission]\nkeys = \"ticket.keys\"\n[admission.http]\nlisten = \"0.0.0.0:8080\"\n\
             targets = [\"https://shop.example/\"]\n{budgets}"
        )
    };
    let mut s = loaded();
    s.setup(&endpoint("source_pps = 1\nsource_burst = 3\nglobal_pps = 1000000\n"), VISITORS, TODAY);
    let to = |ip: &str, l4| frame(ip, l4).build();
    for i in 1..=3 {
        let packet = to("192.0.2.99", L4::Tcp(8080));
        s.check(&case(format!("unknown to the endpoint, {i}"), packet, Pass(ENDPOINT_PASS)));
    }
    s.check(&case(
        "over its endpoint budget",
        to("192.0.2.99", L4::Tcp(8080)),
        Drop(ENDPOINT_RATE),
    ));
    s.check(&case("its own budget", to("2001:db8:9::9", L4::Tcp(8080)), Pass(ENDPOINT_PASS)));
    s.check(&case("a visitor passes", to("192.0.2.10", L4::Tcp(8080)), Pass(VISITOR)));
    s.check(&case("deny first", to("203.0.113.5", L4::Tcp(8080)), Drop(DENY)));
    s.check(&case(
        "udp is not the endpoint",
        to("192.0.2.99", L4::Udp(8080)),
        Pass(PASS_UNPROTECTED),
    ));
    s.check(&case("tcp/443 keeps its rules", to("192.0.2.99", L4::Tcp(443)), Drop(UNKNOWN_RATE)));

    s.setup(&endpoint("source_pps = 100\nglobal_pps = 1\nglobal_burst = 2\n"), VISITORS, TODAY);
    for i in 1..=2 {
        let packet = to(&format!("198.18.0.{i}"), L4::Tcp(8080));
        s.check(&case(format!("source {i} within the global budget"), packet, Pass(ENDPOINT_PASS)));
    }
    for i in 3..=10 {
        let packet = to(&format!("198.18.0.{i}"), L4::Tcp(8080));
        s.check(&case(format!("source {i}: spent"), packet, Drop(ENDPOINT_GLOBAL)));
    }
}

/// The /24 bits in front of the allow and deny tries: every prefix length, IPv6 prefixes that
/// cover IPv4 (v4-mapped), and removals that clear the bits no prefix touches any more while
/// keeping those another prefix still does.
#[test]
fn list_prefixes_of_every_length_and_their_removal() {
    if !privileged("list_prefixes_of_every_length_and_their_removal") {
        return;
    }
    let mut s = loaded();
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
    let deny = edge::policy::List::Deny;
    let allow = edge::policy::List::Allow;
    let tcp = |ip: &str| frame(ip, L4::Tcp(443)).build();
    for ip in ["10.0.0.1", "10.255.255.254", "172.16.5.9", "172.16.6.7", "100.64.1.200"] {
        s.check(&case(ip, tcp(ip), Drop(DENY)));
    }
    // The IPv6 prefix ::ffff:198.18.0.0/111 is IPv4 198.18.0.0/15, written as IPv6.
    s.check(&case("198.19.255.1 via an IPv6 rule", tcp("198.19.255.1"), Drop(DENY)));
    for ip in ["11.0.0.1", "172.16.4.255", "172.16.6.8", "100.64.2.0", "198.20.0.1"] {
        s.check(&case(ip, tcp(ip), Drop(UNKNOWN_RATE)));
    }
    // Deny is judged before allow: 10.9.0.0/16 is inside the denied 10/8.
    s.check(&case("denied before allowed", tcp("10.9.1.1"), Drop(DENY)));
    s.check(&case("allowed /25", tcp("192.0.2.200"), Pass(ALLOW)));
    s.check(&case("the other /25", tcp("192.0.2.100"), Drop(UNKNOWN_RATE)));
    let marked =
        |s: &Loaded, list, ip: &str| s.filter.maps.list_net_marked(list, ip.parse().unwrap());
    assert!(marked(&s, deny, "10.200.3.4") && marked(&s, deny, "198.18.77.1"));
    assert!(!marked(&s, deny, "11.0.0.1") && !marked(&s, allow, "10.0.0.1"));
    assert!(marked(&s, allow, "192.0.2.1"), "a /25 marks its whole /24");
    // IPv6: a listed /48 marks its /32 and itself; a source in another /48 of that /32, or in
    // another /32, skips the trie.
    let udp = |ip: &str| frame(ip, L4::Udp(443)).build();
    s.check(&case("denied /48", udp("2001:db8:bad:ffff::1"), Drop(DENY)));
    s.check(&case("denied /47, its second /48", udp("2001:db8:caff::1"), Drop(DENY)));
    s.check(&case("same /32, not denied", udp("2001:db8:bae::1"), Drop(UNKNOWN_RATE)));
    s.check(&case("allowed /48", udp("2001:db8:a:1::1"), Pass(ALLOW)));
    s.check(&case("another /32", udp("2a00:1450::1"), Drop(UNKNOWN_RATE)));
    assert!(marked(&s, deny, "2001:db8:bad:ffff::1") && marked(&s, deny, "2001:db8:caff::1"));
    assert!(!marked(&s, deny, "2001:db8:bae::1") && !marked(&s, deny, "2001:db8:ffff::1"));
    assert!(!marked(&s, deny, "2a00:1450::1"));
    assert!(marked(&s, allow, "2001:db8:a::1") && !marked(&s, allow, "2001:db8::1"));
    assert!(!marked(&s, allow, "2001:db9::1"));

    // Removing the /8 clears its bits, except where a prefix still in the list lives.
    let net = |n: &str| n.parse::<ipnet::IpNet>().unwrap();
    s.filter.maps.remove_rules(deny, &[net("10.0.0.0/8"), net("::ffff:198.18.0.0/111")]).unwrap();
    assert!(!marked(&s, deny, "10.0.0.1") && !marked(&s, deny, "198.18.0.1"));
    assert!(marked(&s, deny, "172.16.5.1") && marked(&s, deny, "100.64.1.1"));
    s.check(&case("no longer denied", tcp("10.0.0.1"), Drop(UNKNOWN_RATE)));
    s.check(&case("allowed once the /8 is gone", tcp("10.9.1.1"), Pass(ALLOW)));
    s.check(&case("still denied", tcp("172.16.6.7"), Drop(DENY)));

    // An IPv6 prefix covering all of IPv4 marks every /24; taking it out unmarks them.
    s.filter.maps.insert_rules(deny, &[net("::/0")]).unwrap();
    assert!(marked(&s, deny, "1.2.3.4") && marked(&s, deny, "223.255.255.1"));
    assert!(marked(&s, deny, "2a00:1450::1"));
    s.check(&case("::/0 denies IPv4 too", tcp("1.2.3.4"), Drop(DENY)));
    s.check(&case("::/0 denies IPv6", frame("2001:db8:9::9", L4::Udp(443)).build(), Drop(DENY)));
    s.filter.maps.remove_rules(deny, &[net("::/0")]).unwrap();
    assert!(!marked(&s, deny, "1.2.3.4") && marked(&s, deny, "172.16.5.1"));
    assert!(!marked(&s, deny, "2a00:1450::1") && marked(&s, deny, "2001:db8:bad::1"));
    s.check(&case("v6 back to unknown", udp("2a00:1450::1"), Drop(UNKNOWN_RATE)));
    s.check(&case("v6 still denied", udp("2001:db8:bad::1"), Drop(DENY)));
    s.check(&case("back to unknown", tcp("1.2.3.4"), Drop(UNKNOWN_RATE)));
}
