//! Traffic that runs through a restart or an upgrade: UDP floods from the lab's client at a
//! protected port, and a counter of what arrived per source at the server, so a test can
//! prove that no datagram from an admitted source was lost and none from an unknown one
//! got through.
use std::{
    io::{BufRead as _, BufReader, Lines},
    process::{Child, ChildStdout, Stdio},
};

use crate::{
    lab::{Lab, UNKNOWN, VISITOR},
    probe,
};

/// The server address and protected port the floods aim at.
const TARGET: &str = "192.0.2.1:443";

/// A process in the server namespace counting UDP datagrams per source on udp/443.
pub struct Counter {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Counter {
    /// Counts for `secs` seconds; returns once it listens.
    pub fn start(lab: &Lab, secs: u32) -> Self {
        let mut child = lab
            .in_server(probe())
            .args(["count", "--listen", TARGET, "--secs", &secs.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "listening");
        Self { child, lines }
    }

    /// Datagrams counted per source (a JSON object), once its time is up.
    pub fn counted(mut self) -> serde_json::Value {
        let line = self.lines.next().unwrap().unwrap();
        self.child.wait().unwrap();
        serde_json::from_str(&line).unwrap()
    }
}

/// A UDP flood from one of the client's sources.
pub struct Flood(Child);

impl Flood {
    pub fn start(lab: &Lab, src: &str, pps: u32, secs: u32) -> Self {
        let child = lab
            .in_client(probe())
            .args(["flood", "--from", src, "--to", TARGET])
            .args(["--pps", &pps.to_string(), "--secs", &secs.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        Self(child)
    }

    /// How many datagrams it sent, once it is done.
    pub fn sent(self) -> u64 {
        let out = self.0.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| {
            panic!("edge-probe flood printed {text:?}");
        })
    }
}

/// A visitor's flood and an unknown source's flood at the same rate, and the counter: what a
/// restart or an upgrade must carry through, every visitor datagram and no unknown one.
pub struct VisitorAndUnknown {
    counter: Counter,
    visitor: Flood,
    unknown: Flood,
}

impl VisitorAndUnknown {
    /// Both floods at `pps` for `secs` seconds (the lab's VISITOR must be a visitor).
    pub fn start(lab: &Lab, pps: u32, secs: u32) -> Self {
        let counter = Counter::start(lab, secs + 3);
        let visitor = Flood::start(lab, VISITOR, pps, secs);
        let unknown = Flood::start(lab, UNKNOWN, pps, secs);
        Self { counter, visitor, unknown }
    }

    /// Once done: each flood sent at least `at_least`, every visitor datagram arrived, no
    /// unknown one did. Returns the datagrams each sent.
    pub fn every_visitor_and_no_unknown(self, at_least: u64) -> (u64, u64) {
        let (visitor, unknown) = (self.visitor.sent(), self.unknown.sent());
        let counted = self.counter.counted();
        assert!(visitor >= at_least && unknown >= at_least, "sent {visitor} and {unknown}");
        assert_eq!(counted[VISITOR].as_u64(), Some(visitor), "every visitor datagram arrived");
        assert_eq!(counted[UNKNOWN].as_u64(), None, "no unknown datagram got through: {counted}");
        (visitor, unknown)
    }
}
