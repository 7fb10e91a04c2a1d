//! Property: the IPv4 visitor bitmap and its /24 and /16 summaries, written by inserts,
//! removals and whole-window reconciles in any order, always give the verdict of a plain set: a
//! visitor passes and nobody else does, through the real program. The summaries are exact after
//! every step: a /24's net bit is set exactly when the /24 holds a visitor, and a /16's block
//! bit exactly when the /16 does (a clear summary bit is what lets the kernel skip the finer
//! bits, so a visitor's must never be clear).
use std::{collections::BTreeSet, net::Ipv4Addr, path::Path};

use edge::{
    filter::{XDP_DROP, XDP_PASS},
    import::{self, Format},
    Day, Filter, Policy,
};
use edge_common::reason::{UNKNOWN_RATE, VISITOR};
use edge_tests::{
    frames::{frame, L4},
    harness::loaded,
    privileged,
};
use proptest::prelude::*;

/// Three /24s the operations draw from (two share a /16), a neighbour none of them touches,
/// and a /24 in a /16 none of them touches.
const NETS: [[u8; 3]; 3] = [[10, 1, 2], [10, 1, 3], [172, 16, 0]];
const UNTOUCHED: [[u8; 3]; 2] = [[10, 1, 4], [10, 2, 0]];

const POLICY: &str =
    "mode = \"enforce\"\n[scope]\nprotect = [\"tcp/443\"]\n[unknown]\nrate_pps = 0\n";

#[derive(Clone, Debug)]
enum Op {
    Insert(Ipv4Addr),
    Remove(Ipv4Addr),
    /// The window now holds exactly these (as `apply` after an import or a day roll).
    Reconcile(Vec<Ipv4Addr>),
}

fn addr() -> impl Strategy<Value = Ipv4Addr> {
    // Host bytes weighted to the /24's edges, where word and net boundaries are.
    let host = prop_oneof![Just(0u8), Just(63), Just(64), Just(255), any::<u8>()];
    (0..NETS.len(), host).prop_map(|(n, h)| Ipv4Addr::new(NETS[n][0], NETS[n][1], NETS[n][2], h))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => addr().prop_map(Op::Insert),
        4 => addr().prop_map(Op::Remove),
        1 => proptest::collection::vec(addr(), 0..6).prop_map(Op::Reconcile),
    ]
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut loaded = loaded();
    let f = &mut loaded.filter;
    let today = Day::today_utc();
    let policy = Policy::parse(POLICY, "p.toml", Path::new(".")).unwrap();
    let reconcile = |f: &mut Filter, set: &BTreeSet<Ipv4Addr>| {
        let csv: String = set.iter().map(|a| format!("{a}\n")).collect();
        let history = import::parse(&csv, "window.csv", Format::Csv, today).unwrap();
        f.maps.apply(&policy, &history, today).unwrap();
    };
    let mut model = BTreeSet::new();
    reconcile(f, &model);
    for op in ops {
        match op {
            Op::Insert(a) => {
                f.maps.visitors_v4().insert(*a);
                model.insert(*a);
            }
            Op::Remove(a) => {
                f.maps.visitors_v4().remove(*a);
                model.remove(a);
            }
            Op::Reconcile(set) => {
                model = set.iter().copied().collect();
                reconcile(f, &model);
            }
        }
        for net in NETS.iter().chain(&UNTOUCHED) {
            let first = Ipv4Addr::new(net[0], net[1], net[2], 0);
            let occupied = model.iter().any(|a| a.octets()[..3] == net[..]);
            prop_assert_eq!(
                f.maps.visitors_v4().net_marked(first),
                occupied,
                "net bit of {}/24 after {:?}",
                first,
                op
            );
            let occupied = model.iter().any(|a| a.octets()[..2] == net[..2]);
            prop_assert_eq!(
                f.maps.visitors_v4().block_marked(first),
                occupied,
                "block bit of {}/16 after {:?}",
                Ipv4Addr::new(net[0], net[1], 0, 0),
                op
            );
        }
    }
    // Every address of the touched /24s and the untouched one, through the program.
    for net in NETS.iter().chain(&UNTOUCHED) {
        for host in 0..=255u8 {
            let a = Ipv4Addr::new(net[0], net[1], net[2], host);
            let j = f.judge(&frame(&a.to_string(), L4::Tcp(443)).build()).unwrap();
            let want =
                if model.contains(&a) { (XDP_PASS, VISITOR) } else { (XDP_DROP, UNKNOWN_RATE) };
            prop_assert_eq!((j.action, j.reason), want, "{} after {:?}", a, ops);
        }
    }
    Ok(())
}

proptest! {
    // Each reconcile reads the whole 512 MiB bitmap: few cases, many operations each.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn bitmap_and_its_summaries_match_a_set(ops in proptest::collection::vec(op(), 1..40)) {
        if privileged("bitmap_and_its_summaries_match_a_set") {
            run(&ops)?;
        }
    }
}
