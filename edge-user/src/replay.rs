//! Replays a capture through the real program: every frame goes through BPF_PROG_TEST_RUN with
//! the maps set from a policy, and comes back with its verdict and reason.
use std::{collections::BTreeMap, fs::File, io::BufReader, path::Path};

use pcap_file::{
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader},
    DataLink,
};
use serde::Serialize;

use crate::{
    error::{Error, Result},
    Filter,
};

/// One replayed frame.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FrameVerdict {
    pub index: usize,
    /// `pass` or `drop`.
    pub verdict: &'static str,
    pub reason: &'static str,
    /// In `monitor` mode: the verdict would have been a drop.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub would_drop: bool,
}

/// Totals of a replay.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub frames: usize,
    pub pass: usize,
    pub drop: usize,
    pub would_drop: usize,
    pub reasons: BTreeMap<&'static str, usize>,
}

/// Frames shorter than an Ethernet header never reach XDP (the NIC discards them), and the
/// kernel's test run refuses them: they are reported under this reason, as drops.
pub const RUNT: &str = "runt";

/// Reads every Ethernet frame of a pcap or pcapng file.
pub fn read_frames(path: &Path) -> Result<Vec<Vec<u8>>> {
    let fail = |what: String| Error::Pcap(format!("{}: {what}", path.display()));
    let open =
        || File::open(path).map(BufReader::new).map_err(|e| fail(format!("cannot read: {e}")));
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(&mut open()?, &mut magic)
        .map_err(|_| fail("too short to be a capture".into()))?;
    let mut frames = Vec::new();
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut reader = PcapNgReader::new(open()?).map_err(|e| fail(e.to_string()))?;
        while let Some(block) = reader.next_block() {
            let block = block.map_err(|e| fail(format!("frame {}: {e}", frames.len())))?;
            let (data, interface) = match block {
                Block::EnhancedPacket(p) => (p.data.into_owned(), p.interface_id),
                Block::SimplePacket(p) => (p.data.into_owned(), 0),
                _ => continue,
            };
            let link = reader.interfaces().get(interface as usize).map(|i| i.linktype);
            if link != Some(DataLink::ETHERNET) {
                return Err(fail(format!(
                    "frame {}: link type {link:?} is not Ethernet",
                    frames.len()
                )));
            }
            frames.push(data);
        }
    } else {
        let mut reader = PcapReader::new(open()?).map_err(|e| fail(e.to_string()))?;
        if reader.header().datalink != DataLink::ETHERNET {
            return Err(fail(format!("link type {:?} is not Ethernet", reader.header().datalink)));
        }
        while let Some(packet) = reader.next_packet() {
            let packet = packet.map_err(|e| fail(format!("frame {}: {e}", frames.len())))?;
            frames.push(packet.data.into_owned());
        }
    }
    Ok(frames)
}

/// Judges each frame in order. Budgets see the frames back to back (the program reads the
/// kernel clock, not capture timestamps).
pub fn replay(
    filter: &mut Filter,
    frames: &[Vec<u8>],
    mut each: impl FnMut(&FrameVerdict),
) -> Result<Summary> {
    let mut summary = Summary::default();
    for (index, frame) in frames.iter().enumerate() {
        let verdict = if frame.len() < 14 {
            FrameVerdict { index, verdict: "drop", reason: RUNT, would_drop: false }
        } else {
            let j = filter.judge(frame)?;
            FrameVerdict {
                index,
                verdict: j.verdict(),
                reason: j.reason_name(),
                would_drop: j.would_drop,
            }
        };
        summary.frames += 1;
        match verdict.verdict {
            "pass" => summary.pass += 1,
            _ => summary.drop += 1,
        }
        summary.would_drop += usize::from(verdict.would_drop);
        *summary.reasons.entry(verdict.reason).or_default() += 1;
        each(&verdict);
    }
    Ok(summary)
}
