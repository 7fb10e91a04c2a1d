//! Property: in enforce mode with empty lists and no unknown budget, no IP packet to a
//! protected port ever passes, whatever the frame looks like. Frames are random structures
//! (VLANs, options, extension chains, fragments, truncation) and random bytes; an independent
//! parser (etherparse) decides what each frame is.
use std::sync::OnceLock;

use edge::filter::XDP_PASS;
use edge_common::reason::{NEIGHBOR_DISCOVERY, NON_IP, PASS_UNPROTECTED};
use edge_tests::{
    frames::{frame, Fragment, L4},
    harness::{loaded, Loaded},
    lab::TODAY,
    privileged,
};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use proptest::prelude::*;

const PROTECTED: [(bool, u16); 3] = [(true, 80), (true, 443), (false, 443)];

/// The shared program, with an enforcing policy, no lists and no unknown budget (set once).
fn strict() -> std::sync::MutexGuard<'static, Loaded> {
    static SET: std::sync::Once = std::sync::Once::new();
    let mut loaded = loaded();
    SET.call_once(|| loaded.setup("mode = \"enforce\"\n[unknown]\nrate_pps = 0\n", "", TODAY));
    loaded
}

/// Whether an independent parser sees a TCP/UDP packet to a protected port in this frame.
fn targets_protected_port(bytes: &[u8]) -> bool {
    let Ok(p) = SlicedPacket::from_ethernet(bytes) else { return false };
    if !matches!(p.net, Some(NetSlice::Ipv4(_)) | Some(NetSlice::Ipv6(_))) {
        return false;
    }
    match p.transport {
        Some(TransportSlice::Tcp(t)) => PROTECTED.contains(&(true, t.destination_port())),
        Some(TransportSlice::Udp(u)) => PROTECTED.contains(&(false, u.destination_port())),
        _ => false,
    }
}

/// The privilege gate, asked once for the whole file (proptest calls the body per case).
fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| privileged("property tests (random frames through the program)"))
}

fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    if bytes.len() < 14 {
        return Ok(()); // never reaches XDP
    }
    let mut f = strict();
    let j = f.filter.judge(bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    if j.action == XDP_PASS {
        prop_assert!(
            [NON_IP, NEIGHBOR_DISCOVERY, PASS_UNPROTECTED].contains(&j.reason),
            "passed for {} ({bytes:02x?})",
            j.reason_name()
        );
        prop_assert!(
            !targets_protected_port(bytes),
            "a protected-port packet passed ({bytes:02x?})"
        );
    }
    Ok(())
}

fn structured() -> impl Strategy<Value = Vec<u8>> {
    let src = prop_oneof![
        any::<[u8; 4]>().prop_map(|a| std::net::Ipv4Addr::from(a).to_string()),
        any::<[u8; 16]>().prop_map(|a| std::net::Ipv6Addr::from(a).to_string()),
    ];
    let port = prop_oneof![Just(80u16), Just(443), Just(22), any::<u16>()];
    let l4 = (any::<bool>(), port).prop_map(|(tcp, p)| if tcp { L4::Tcp(p) } else { L4::Udp(p) });
    let frag = prop_oneof![Just(Fragment::None), Just(Fragment::First), Just(Fragment::Later)];
    let ext = proptest::collection::vec(prop_oneof![Just(0u8), Just(43), Just(60), Just(51)], 0..4)
        .prop_map(|mut v| {
            v.sort();
            v.dedup();
            v
        });
    (
        src,
        l4,
        0..3usize,
        0..11usize,
        ext,
        frag,
        any::<u16>(),
        proptest::collection::vec(any::<(u16, u8)>(), 0..3),
    )
        .prop_map(|(src, l4, vlans, opt_words, ext, frag, cut, flips)| {
            let mut f = frame(&src, l4).vlans(vlans).fragment(frag);
            if src.contains(':') {
                f = f.ipv6_ext(&ext)
            } else {
                f = f.ipv4_options(opt_words * 4)
            }
            let mut bytes = f.build();
            for (at, value) in flips {
                let at = at as usize % bytes.len();
                bytes[at] = value;
            }
            let keep = 14 + cut as usize % (bytes.len() - 13);
            bytes.truncate(keep);
            bytes
        })
}

fn random_bytes() -> impl Strategy<Value = Vec<u8>> {
    // Random bytes behind a random one of the ethertypes the parser cares about.
    (
        prop_oneof![
            Just([0x08u8, 0x00]),
            Just([0x86, 0xdd]),
            Just([0x81, 0x00]),
            Just([0x88, 0xa8]),
            any::<[u8; 2]>()
        ],
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(ethertype, rest)| {
            let mut bytes = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
            bytes.extend_from_slice(&ethertype);
            bytes.extend(rest);
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn structured_frames_never_pass_to_a_protected_port(bytes in structured()) {
        if enabled() {
            check(&bytes)?;
        }
    }

    #[test]
    fn random_frames_never_pass_to_a_protected_port(bytes in random_bytes()) {
        if enabled() {
            check(&bytes)?;
        }
    }
}

/// The property has teeth: a protected-port TCP SYN is what the structured generator makes
/// most, and the independent parser recognises it.
#[test]
fn the_oracle_recognises_protected_packets() {
    assert!(targets_protected_port(&frame("192.0.2.1", L4::Tcp(443)).build()));
    assert!(targets_protected_port(&frame("2001:db8::1", L4::Udp(443)).ipv6_ext(&[0, 60]).build()));
    assert!(!targets_protected_port(&frame("192.0.2.1", L4::Tcp(22)).build()));
}
