//! Replays a capture through the real program: every frame goes through BPF_PROG_TEST_RUN with
//! the maps set from a policy, and comes back with its verdict and reason.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::{capture::Frame, error::Result, Filter};

pub use crate::capture::read as read_frames;

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
    /// Bytes judged: those the capture holds.
    pub captured: usize,
    /// The frame's length on the wire, when the snap length cut it shorter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub captured_of: Option<usize>,
}

/// Totals of a replay.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub frames: usize,
    pub pass: usize,
    pub drop: usize,
    pub would_drop: usize,
    /// Frames cut by the capture's snap length (judged on what was captured).
    pub cut: usize,
    pub reasons: BTreeMap<&'static str, usize>,
}

/// Frames shorter than an Ethernet header never reach XDP (the NIC discards them), and the
/// kernel's test run refuses them: they are reported under this reason, as drops.
pub const RUNT: &str = "runt";

/// Judges each frame in order, on the bytes the capture holds. Budgets see the frames back to
/// back (the program reads the kernel clock, not capture timestamps).
pub fn replay(
    filter: &mut Filter,
    frames: &[Frame],
    mut each: impl FnMut(&FrameVerdict),
) -> Result<Summary> {
    let mut summary = Summary::default();
    for (index, frame) in frames.iter().enumerate() {
        let captured = frame.data.len();
        let captured_of = (frame.original_len > captured).then_some(frame.original_len);
        let (verdict, reason, would_drop) = if captured < 14 {
            ("drop", RUNT, false)
        } else {
            let j = filter.judge(&frame.data)?;
            (j.verdict(), j.reason_name(), j.would_drop)
        };
        let verdict = FrameVerdict { index, verdict, reason, would_drop, captured, captured_of };
        summary.frames += 1;
        match verdict.verdict {
            "pass" => summary.pass += 1,
            _ => summary.drop += 1,
        }
        summary.would_drop += usize::from(verdict.would_drop);
        summary.cut += usize::from(captured_of.is_some());
        *summary.reasons.entry(verdict.reason).or_default() += 1;
        each(&verdict);
    }
    Ok(summary)
}
