//! SYN cookies through the real program (BPF_PROG_TEST_RUN): a SYN to a protected port with a
//! listener comes back as the SYN-ACK (XDP_TX) with the kernel's cookie, addresses, ports,
//! checksums and options right, in both families and under a VLAN tag; the ACK that brings the
//! cookie back passes, and one with a wrong, another source's or a two-minute-old cookie is
//! dropped.
//!
//! End to end (the last test): a real client connects to a real server through a cookie and
//! keeps what it negotiates, a connection open before cookies turn on talks throughout,
//! forged SYNs and ACKs from allowed addresses reach no listener, and the host's sysctls go
//! back as they were when cookies turn off or edge is detached.
//!
//! The program looks listeners up in the namespace of the device a test run uses (the
//! loopback of the running thread's namespace), so each test runs in a thread moved to a
//! network namespace of its own, with its own listener and `tcp_syncookies = 2`.
use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener},
    time::Duration,
};

use edge::filter::{XDP_DROP, XDP_PASS, XDP_TX};
use edge_common::reason::*;
use edge_tests::{
    daemon::Daemon,
    frames::{DST_V4, DST_V6},
    harness::{loaded, Loaded},
    lab::{Lab, TODAY},
    privileged, probe,
};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TcpOptionElement, TransportSlice};

const PORT: u16 = 443;
const CLIENT_PORT: u16 = 40_000;
const CLIENT_SEQ: u32 = 1_000_000;
const CLIENT_TSVAL: u32 = 123_456;
const CLIENT_WSCALE: u8 = 9;
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

const VISITOR_V4: &str = "198.51.100.7";
const VISITOR_V6: &str = "2001:db8:1:2::7";
const OTHER_VISITOR_V4: &str = "198.51.100.8";
const VISITORS: &str = "198.51.100.7\n198.51.100.8\n2001:db8:1:2::7\n";

/// Enforcing, strict for unknown sources, cookies always; a small reply budget for the last
/// case.
fn policy(reply_burst: u32) -> String {
    format!(
        r#"
mode = "enforce"
[unknown]
rate_pps = 0
[syn_cookies]
mode = "always"
reply_pps = 1
reply_burst = {reply_burst}
mss_v4 = 1460
mss_v6 = 1440
[daemon]
interfaces = ["lo"]
state_dir = "/nonexistent"
"#
    )
}

/// A TCP frame from `src` to the fixtures' destination, port 443.
struct Tcp {
    src: IpAddr,
    vlan: bool,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    options: Vec<TcpOptionElement>,
}

impl Tcp {
    fn syn(src: &str) -> Self {
        Tcp {
            src: src.parse().unwrap(),
            vlan: false,
            seq: CLIENT_SEQ,
            ack: None,
            syn: true,
            options: vec![
                TcpOptionElement::MaximumSegmentSize(1400),
                TcpOptionElement::SelectiveAcknowledgementPermitted,
                TcpOptionElement::Timestamp(CLIENT_TSVAL, 0),
                TcpOptionElement::Noop,
                TcpOptionElement::WindowScale(CLIENT_WSCALE),
            ],
        }
    }

    /// The third packet of the handshake: acknowledging `cookie`.
    fn ack(src: &str, cookie: u32) -> Self {
        Tcp {
            src: src.parse().unwrap(),
            vlan: false,
            seq: CLIENT_SEQ + 1,
            ack: Some(cookie.wrapping_add(1)),
            syn: false,
            options: Vec::new(),
        }
    }

    fn build(&self) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
        let ip = match self.src {
            IpAddr::V4(src) => eth.ipv4(src.octets(), DST_V4, 64),
            IpAddr::V6(src) => eth.ipv6(src.octets(), DST_V6, 64),
        };
        let mut tcp = ip.tcp(CLIENT_PORT, PORT, self.seq, 64_240);
        if self.syn {
            tcp = tcp.syn();
        }
        if let Some(ack) = self.ack {
            tcp = tcp.ack(ack);
        }
        let tcp = tcp.options(&self.options).unwrap();
        let mut out = Vec::new();
        tcp.write(&mut out, &[]).unwrap();
        if self.vlan {
            // An 802.1Q tag (VLAN 10) before the ethertype.
            out.splice(12..12, [0x81, 0x00, 0x00, 0x0a]);
        }
        out
    }
}

/// Runs `body` in a thread moved to a network namespace of its own, with `tcp_syncookies =
/// 2` and a dual-stack listener on port 443.
fn in_own_netns(body: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        // SAFETY: plain syscall; it moves only this thread.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare(CLONE_NEWNET)");
        // /proc/sys/net shows the namespace of the thread that opens it.
        std::fs::write("/proc/sys/net/ipv4/tcp_syncookies", "2")
            .expect("tcp_syncookies = 2 in the test's namespace");
        let listener =
            TcpListener::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), PORT)).unwrap();
        body();
        drop(listener);
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

/// One run: the action, the frame the program left, and the one reason counted.
fn run(l: &mut Loaded, frame: &[u8]) -> (u32, Vec<u8>, Reason) {
    let before = l.filter.maps.stats().unwrap();
    let (action, out) = l.filter.run_and_read(frame).unwrap();
    let delta = l.filter.maps.stats().unwrap().since(&before);
    let rows = delta.rows(false);
    assert_eq!(delta.total_packets(), 1, "one packet counted once: {rows:?}");
    let reason = (0..REASON_COUNT).find(|r| delta.applied(*r).packets == 1).unwrap();
    (action, out, reason)
}

/// What a SYN-ACK the program sent says, checked against the SYN it answers.
struct SynAck {
    cookie: u32,
    options: Vec<TcpOptionElement>,
}

/// Checks `reply` answers `syn` (addresses, ports, flags, numbers, checksums, VLAN tag) and
/// returns its cookie and options.
fn answers(syn: &[u8], reply: &[u8]) -> SynAck {
    let asked = SlicedPacket::from_ethernet(syn).unwrap();
    let got = SlicedPacket::from_ethernet(reply).unwrap();
    let (Some(etherparse::LinkSlice::Ethernet2(a)), Some(etherparse::LinkSlice::Ethernet2(g))) =
        (&asked.link, &got.link)
    else {
        panic!("Ethernet frames")
    };
    assert_eq!((g.source(), g.destination()), (a.destination(), a.source()), "MACs swapped");
    assert_eq!(asked.vlan_ids(), got.vlan_ids(), "VLAN tags kept");
    let (Some(TransportSlice::Tcp(a_tcp)), Some(TransportSlice::Tcp(g_tcp))) =
        (&asked.transport, &got.transport)
    else {
        panic!("TCP in both")
    };
    match (&asked.net, &got.net) {
        (Some(NetSlice::Ipv4(a)), Some(NetSlice::Ipv4(g))) => {
            let (a, g) = (a.header(), g.header());
            assert_eq!((g.source(), g.destination()), (a.destination(), a.source()));
            assert_eq!(g.ttl(), 64);
            assert!(g.dont_fragment());
            assert_eq!(g.total_len() as usize, 20 + g_tcp.slice().len(), "IPv4 total length");
            let header = g.to_header();
            assert_eq!(header.header_checksum, header.calc_header_checksum(), "IPv4 checksum");
            let sum = g_tcp.to_header().calc_checksum_ipv4(&header, g_tcp.payload()).unwrap();
            assert_eq!(g_tcp.checksum(), sum, "TCP checksum (IPv4)");
        }
        (Some(NetSlice::Ipv6(a)), Some(NetSlice::Ipv6(g))) => {
            let (a, g) = (a.header(), g.header());
            assert_eq!((g.source(), g.destination()), (a.destination(), a.source()));
            assert_eq!(g.hop_limit(), 64);
            assert_eq!(g.payload_length() as usize, g_tcp.slice().len(), "IPv6 payload length");
            let sum =
                g_tcp.to_header().calc_checksum_ipv6(&g.to_header(), g_tcp.payload()).unwrap();
            assert_eq!(g_tcp.checksum(), sum, "TCP checksum (IPv6) of {reply:02x?}");
        }
        other => panic!("the same IP family in and out: {other:?}"),
    }
    assert_eq!(g_tcp.payload().len(), 0, "no payload");
    assert_eq!((g_tcp.source_port(), g_tcp.destination_port()), (PORT, CLIENT_PORT));
    assert!(g_tcp.syn() && g_tcp.ack() && !g_tcp.rst() && !g_tcp.fin(), "SYN-ACK flags");
    assert_eq!(g_tcp.acknowledgment_number(), a_tcp.sequence_number().wrapping_add(1));
    let options = g_tcp.options_iterator().map(|o| o.unwrap()).collect();
    SynAck { cookie: g_tcp.sequence_number(), options }
}

/// The window scale this namespace's listeners choose (what the program announces).
fn host_wscale() -> u8 {
    let options = edge::syncookies::host_options();
    ((options >> edge_common::config::SYN_OPT_WSCALE_SHIFT) & 0xf) as u8
}

#[test]
fn a_syn_is_answered_with_a_cookie_and_only_its_ack_passes() {
    if !privileged("a_syn_is_answered_with_a_cookie_and_only_its_ack_passes") {
        return;
    }
    in_own_netns(|| {
        let mut l = loaded();
        l.setup(&policy(1_000), VISITORS, TODAY);
        for (src, vlan) in [(VISITOR_V4, false), (VISITOR_V6, false), (VISITOR_V4, true)] {
            let what = format!("{src}{}", if vlan { " under a VLAN tag" } else { "" });
            let syn = Tcp { vlan, ..Tcp::syn(src) }.build();
            let (action, reply, reason) = run(&mut l, &syn);
            assert_eq!((action, reason), (XDP_TX, SYN_COOKIE_SENT), "{what}: answered");
            let answer = answers(&syn, &reply);
            let mss = if src.contains(':') { 1440 } else { 1460 };
            let [TcpOptionElement::MaximumSegmentSize(got_mss), TcpOptionElement::SelectiveAcknowledgementPermitted, TcpOptionElement::Timestamp(tsval, tsecr), TcpOptionElement::Noop, TcpOptionElement::WindowScale(ws)] =
                answer.options[..]
            else {
                panic!(
                    "{what}: MSS, SACK-permitted, timestamps, window scale: {:?}",
                    answer.options
                )
            };
            assert_eq!(got_mss, mss, "{what}: our MSS");
            assert_eq!(tsecr, CLIENT_TSVAL, "{what}: the client's timestamp echoed");
            assert_eq!(tsval & 0xf, u32::from(CLIENT_WSCALE), "{what}: its window scale kept");
            assert_ne!(tsval & 0x10, 0, "{what}: SACK kept in the timestamp");
            assert_eq!(ws, host_wscale(), "{what}: the listener's own window scale");

            let ack = Tcp { vlan, ..Tcp::ack(src, answer.cookie) }.build();
            let (action, _, reason) = run(&mut l, &ack);
            assert_eq!((action, reason), (XDP_PASS, COOKIE_VALID), "{what}: its ACK passes");
            let wrong = Tcp { vlan, ..Tcp::ack(src, answer.cookie ^ 0x0100_0000) }.build();
            let (action, _, reason) = run(&mut l, &wrong);
            assert_eq!((action, reason), (XDP_DROP, COOKIE_INVALID), "{what}: a wrong cookie");
        }

        let syn = Tcp::syn(VISITOR_V4).build();
        let cookie = answers(&syn, &run(&mut l, &syn).1).cookie;
        let stolen = Tcp::ack(OTHER_VISITOR_V4, cookie).build();
        let (action, _, reason) = run(&mut l, &stolen);
        assert_eq!((action, reason), (XDP_DROP, COOKIE_INVALID), "another source's cookie");
        // An unknown source meets its budgets before any cookie work (strict here).
        let unknown = Tcp::ack("203.0.113.9", cookie).build();
        assert_eq!(run(&mut l, &unknown).2, UNKNOWN_RATE, "an unknown source's ACK");

        // IPv4 options do not hide an ACK from the check (a SYN with them is the kernel's).
        let mut optioned = Tcp::ack(VISITOR_V4, cookie ^ 0x0100_0000).build();
        optioned.splice(14 + 20..14 + 20, [1, 1, 1, 0]);
        optioned[14] = 0x46;
        let total = u16::from_be_bytes([optioned[16], optioned[17]]) + 4;
        optioned[16..18].copy_from_slice(&total.to_be_bytes());
        let (action, _, reason) = run(&mut l, &optioned);
        assert_eq!((action, reason), (XDP_DROP, COOKIE_INVALID), "a wrong cookie under IP options");

        // Options in another order (macOS's) are walked one by one to the same answer.
        let walked = Tcp {
            options: vec![
                TcpOptionElement::MaximumSegmentSize(1460),
                TcpOptionElement::Noop,
                TcpOptionElement::WindowScale(6),
                TcpOptionElement::Noop,
                TcpOptionElement::Noop,
                TcpOptionElement::Timestamp(CLIENT_TSVAL, 0),
                TcpOptionElement::SelectiveAcknowledgementPermitted,
            ],
            ..Tcp::syn(VISITOR_V4)
        }
        .build();
        let (action, reply, _) = run(&mut l, &walked);
        assert_eq!(action, XDP_TX, "another layout");
        let answer = answers(&walked, &reply);
        let [TcpOptionElement::MaximumSegmentSize(_), TcpOptionElement::SelectiveAcknowledgementPermitted, TcpOptionElement::Timestamp(tsval, tsecr), TcpOptionElement::Noop, TcpOptionElement::WindowScale(_)] =
            answer.options[..]
        else {
            panic!("another layout: {:?}", answer.options)
        };
        assert_eq!((tsval & 0x1f, tsecr), (0x10 | 6, CLIENT_TSVAL), "its scale and SACK kept");

        // Without options the SYN-ACK has only the MSS: without a timestamp to carry them,
        // scaling and SACK cannot survive a cookie.
        let bare = Tcp { options: vec![], ..Tcp::syn(VISITOR_V4) }.build();
        let (action, reply, _) = run(&mut l, &bare);
        assert_eq!(action, XDP_TX);
        assert_eq!(answers(&bare, &reply).options, [TcpOptionElement::MaximumSegmentSize(1460)]);
    });
}

/// The kernel's cookie carries the minute it was made, and the kernel takes it back for two
/// minutes at most: the ACK that passes at once is dropped two minutes later.
#[test]
fn a_cookie_older_than_two_minutes_is_refused() {
    if !privileged("a_cookie_older_than_two_minutes_is_refused") {
        return;
    }
    in_own_netns(|| {
        let syn = Tcp::syn(VISITOR_V4).build();
        let ack = {
            let mut l = loaded();
            l.setup(&policy(1_000), VISITORS, TODAY);
            let (action, reply, _) = run(&mut l, &syn);
            assert_eq!(action, XDP_TX, "answered");
            let ack = Tcp::ack(VISITOR_V4, answers(&syn, &reply).cookie).build();
            assert_eq!(run(&mut l, &ack).2, COOKIE_VALID, "a fresh cookie");
            ack
        };
        // The cookie's clock ticks once a minute (jiffies / (60 * HZ)), from an unknown phase:
        // 121 s are two ticks for certain. The program is free for the other tests meanwhile.
        std::thread::sleep(Duration::from_secs(121));
        let mut l = loaded();
        l.setup(&policy(1_000), VISITORS, TODAY);
        // A new SYN first, so that the listener has sent a cookie in the last two minutes and
        // only the old cookie's age is left to refuse it.
        let (action, reply, _) = run(&mut l, &syn);
        assert_eq!(action, XDP_TX, "answered again");
        let (action, _, reason) = run(&mut l, &ack);
        assert_eq!((action, reason), (XDP_DROP, COOKIE_INVALID), "the cookie two minutes on");
        let again = Tcp::ack(VISITOR_V4, answers(&syn, &reply).cookie).build();
        assert_eq!(run(&mut l, &again).2, COOKIE_VALID, "the new cookie for the same SYN");
    });
}

#[test]
fn what_is_not_a_handshake_is_judged_as_before() {
    if !privileged("what_is_not_a_handshake_is_judged_as_before") {
        return;
    }
    in_own_netns(|| {
        let mut l = loaded();
        l.setup(&policy(1_000), VISITORS, TODAY);
        // No listener on the port: the SYN is the kernel's to refuse, judged as before. (The
        // program reads no checksum, so the edited port needs no new one.)
        let mut closed = Tcp::syn(VISITOR_V4).build();
        closed[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&444u16.to_be_bytes());
        let policy_all = format!("{}\n[scope]\nprotect = [\"tcp/*\"]\n", policy(1_000));
        l.setup(&policy_all, VISITORS, TODAY);
        let (action, _, reason) = run(&mut l, &closed);
        assert_eq!((action, reason), (XDP_PASS, VISITOR), "a SYN to a closed port");
        // An unknown source's SYN to a closed port still meets its budget (strict here).
        let mut unknown = Tcp::syn("203.0.113.9").build();
        unknown[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&444u16.to_be_bytes());
        assert_eq!(run(&mut l, &unknown).2, UNKNOWN_RATE);
        // A RST is never a cookie's business.
        let mut rst = Tcp::ack(VISITOR_V4, 5).build();
        rst[14 + 20 + 13] |= 0x04;
        assert_eq!(run(&mut l, &rst).2, VISITOR, "a RST");
        // Cookies in `attack` mode answer nothing while the filter only monitors.
        let monitoring = policy(1_000)
            .replace("mode = \"enforce\"", "mode = \"monitor\"")
            .replace("mode = \"always\"", "mode = \"attack\"");
        l.setup(&monitoring, VISITORS, TODAY);
        let (action, _, reason) = run(&mut l, &Tcp::syn(VISITOR_V4).build());
        assert_eq!((action, reason), (XDP_PASS, VISITOR), "attack mode while monitoring");
    });
}

#[test]
fn replies_stop_at_the_reply_budget() {
    if !privileged("replies_stop_at_the_reply_budget") {
        return;
    }
    in_own_netns(|| {
        let mut l = loaded();
        l.setup(&policy(2), VISITORS, TODAY);
        let syn = Tcp::syn(VISITOR_V4).build();
        let verdicts: Vec<(u32, Reason)> =
            (0..4).map(|_| run(&mut l, &syn)).map(|(action, _, reason)| (action, reason)).collect();
        // Past the budget a visitor's SYN goes to the kernel (which answers with its own
        // cookie): a spent budget never costs a known source its connection.
        let (sent, spent) = ((XDP_TX, SYN_COOKIE_SENT), (XDP_PASS, SYN_REPLY_BUDGET));
        assert_eq!(verdicts, [sent, sent, spent, spent], "a burst of 2 at 1 per second");
        let unknown = Tcp::syn("203.0.113.9").build();
        assert_eq!(run(&mut l, &unknown).2, UNKNOWN_RATE, "an unknown source's SYN, spent");
    });
}

// ---- End to end, in namespaces: a real client, a real server, forged handshakes. ----

/// The lab's client here (no other test uses it: the handshake tracepoint sees every
/// namespace).
const CLIENT: &str = "192.0.2.181";
/// Sources of forged segments: in the allowed range, owned by no one.
const FORGED_FIRST: u8 = 200;
const FORGED: u8 = 20;

fn in_ns(ns: &str, program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(program)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `net.ipv4.tcp_syncookies` and `tcp_timestamps` in the server's namespace.
fn sysctls(lab: &Lab) -> (String, String) {
    let read = |name| in_ns(&lab.server_ns, "cat", &[name]).trim().to_string();
    (read("/proc/sys/net/ipv4/tcp_syncookies"), read("/proc/sys/net/ipv4/tcp_timestamps"))
}

/// A TcpExt counter of the server's namespace (`/proc/net/netstat`).
fn tcp_ext(lab: &Lab, name: &str) -> u64 {
    let text = in_ns(&lab.server_ns, "cat", &["/proc/net/netstat"]);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let names = lines[0].split_whitespace();
    let values = lines[1].split_whitespace();
    names.zip(values).find(|(n, _)| *n == name).map(|(_, v)| v.parse().unwrap()).unwrap()
}

fn packets(daemon: &Daemon, reason: &str) -> u64 {
    let out = daemon.cli(&["stats", "--json"]).ok("stats");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    rows.iter().filter(|r| r["reason"] == reason).map(|r| r["packets"].as_u64().unwrap()).sum()
}

#[test]
fn real_clients_connect_through_cookies_and_forged_handshakes_reach_nothing() {
    if !privileged("real_clients_connect_through_cookies_and_forged_handshakes_reach_nothing") {
        return;
    }
    let mut lab = Lab::new(&[CLIENT]).expect("creating the namespace lab");
    // A veth wakes its peer for the frames it sends back with XDP_TX only if the peer runs an
    // XDP program itself (a NIC has no such condition).
    let mut pass = lab.in_client(probe());
    pass.args(["xdp-pass", &lab.client_if.clone()]);
    lab.spawn(pass).unwrap();
    let attached =
        || in_ns(&lab.client_ns, "ip", &["link", "show", &lab.client_if]).contains("xdp");
    edge_tests::wait_until(
        "xdp-pass on the client",
        std::time::Duration::from_secs(5),
        attached,
        String::new,
    );
    let report = tempfile::NamedTempFile::new().unwrap();
    let mut echo = lab.in_server(probe());
    echo.args(["echo", "192.0.2.1:443", report.path().to_str().unwrap()]);
    lab.spawn(echo).unwrap();
    // What the server's side of each connection negotiated, by the client's port.
    let server_side = || -> Vec<(String, String)> {
        let text = std::fs::read_to_string(report.path()).unwrap_or_default();
        let split = |l: &str| l.split_once(' ').map(|(p, o)| (p.to_string(), o.to_string()));
        text.lines().filter_map(split).collect()
    };
    let before = sysctls(&lab);
    let policy = "mode = \"enforce\"\n[scope]\nprotect = [\"tcp/443\"]\n[lists]\n\
                  allow = [\"192.0.2.0/24\"]\n[learning]\nhandshakes = true\n\
                  [syn_cookies]\nmode = \"off\"\n";
    let iface = lab.server_if.clone();
    let mut daemon = Daemon::configure(&lab, &[&iface], policy, TODAY).unwrap();
    daemon.start().unwrap();
    daemon.wait_ready().unwrap();
    assert_eq!(sysctls(&lab), before, "cookies off: the host as it was");

    // A connection opened before cookies turn on, talking all along.
    let mut long = lab
        .in_client(probe())
        .args(["talk", "--from", CLIENT, "--to", "192.0.2.1:443", "--secs", "6"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Its first line comes once it is connected: only then do cookies turn on.
    let mut long_said = String::new();
    let mut long_stdout = std::io::BufReader::new(long.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut long_stdout, &mut long_said).unwrap();
    assert!(long_said.starts_with("negotiated "), "the long connection: {long_said}");
    daemon.set_syn_cookies("always").unwrap();
    assert_eq!(sysctls(&lab), ("2".into(), "2".into()), "cookies on: syncookies and timestamps");
    let failed_before = tcp_ext(&lab, "SyncookiesFailed");
    let sent_before = packets(&daemon, "syn_cookie_sent");

    // A new connection goes through a cookie and gets what the first one got.
    let short = lab
        .in_client(probe())
        .args(["talk", "--from", CLIENT, "--to", "192.0.2.1:443", "--secs", "1.5"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let short_out = short.wait_with_output().unwrap();
    let short_said = String::from_utf8_lossy(&short_out.stdout).into_owned();
    assert!(short_out.status.success(), "{short_said}\n{}", daemon.log());
    assert!(packets(&daemon, "syn_cookie_sent") > sent_before, "the SYN was answered by edge");
    assert!(packets(&daemon, "cookie_valid") >= 1, "and its ACK brought the cookie back");

    // Forged SYNs and ACKs from allowed addresses no one there owns.
    let invalid_before = packets(&daemon, "cookie_invalid");
    let sent_before = packets(&daemon, "syn_cookie_sent");
    for i in 0..FORGED {
        for (flag, last) in [("syn", FORGED_FIRST + i), ("ack", FORGED_FIRST + FORGED + i)] {
            let from = format!("192.0.2.{last}");
            in_ns(
                &lab.client_ns,
                probe().to_str().unwrap(),
                &["spoof", "--from", &from, "--to", "192.0.2.1:443", "--flag", flag],
            );
        }
    }
    let counted = || {
        let answered = packets(&daemon, "syn_cookie_sent") - sent_before;
        let refused = packets(&daemon, "cookie_invalid") - invalid_before;
        (answered, refused)
    };
    let all = (u64::from(FORGED), u64::from(FORGED));
    let seen = || counted() == all;
    edge_tests::wait_until("the forged segments counted", Duration::from_secs(5), seen, || {
        format!("{:?} of {all:?} (SYNs answered, ACKs refused)", counted())
    });
    assert_eq!(tcp_ext(&lab, "SyncookiesFailed"), failed_before, "no forged ACK reached TCP");
    let sockets = in_ns(&lab.server_ns, "ss", &["-tanH"]);
    assert!(!sockets.contains("192.0.2.2"), "no socket for a forged source:\n{sockets}");

    std::io::Read::read_to_string(&mut long_stdout, &mut long_said).unwrap();
    assert!(long.wait().unwrap().success(), "the long connection: {long_said}");

    // The cookie connection negotiated what the one before cookies did, on both sides.
    let client_side =
        |said: &str| said.lines().find_map(|l| l.strip_prefix("negotiated ")).unwrap().to_string();
    let (plain, cookie) = (client_side(&long_said), client_side(&short_said));
    assert_eq!(cookie, plain, "the client's side");
    assert!(plain.contains("ts") && plain.contains("sack") && plain.contains("wscale"), "{plain}");
    let server = server_side();
    assert_eq!(server.len(), 2, "two connections: {server:?}");
    assert_eq!(server[1].1, server[0].1, "the server's side: {server:?}");

    let visitors = daemon.cli(&["visitors", "list", "--json"]).ok("visitors list");
    assert!(visitors.contains(CLIENT), "the cookie client is learned: {visitors}");
    assert!(!visitors.contains("192.0.2.2"), "no forged source is learned: {visitors}");

    // Off again: the host exactly as before. On, then detached: the same.
    daemon.set_syn_cookies("off").unwrap();
    assert_eq!(sysctls(&lab), before, "cookies off again");
    daemon.set_syn_cookies("always").unwrap();
    assert_eq!(sysctls(&lab), ("2".into(), "2".into()));
    daemon.stop().unwrap();
    let detached =
        lab.in_server(edge_tests::edge_bin()).args(["detach", "--iface", &iface]).output();
    assert!(detached.unwrap().status.success(), "edge detach");
    assert_eq!(sysctls(&lab), before, "detached: the host as it was");
}
