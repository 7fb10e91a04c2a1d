//! Per-reason counters, summed over CPUs, and how they are shown.
use aya::maps::{MapData, PerCpuArray};
use edge_common::{
    keys::Counter,
    reason::{is_drop, Reason, INTERNAL, REASON_COUNT, REASON_NAMES, STATS_SLOTS, SYN_COOKIE_SENT},
};
use serde::Serialize;

use crate::error::{kernel, Result};

/// A snapshot of the stats map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    slots: Vec<Counter>,
}

/// One row of `edge stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub reason: String,
    /// `pass`, `drop`, `reply` (a SYN cookie sent back), `would_drop` (monitor mode) or
    /// `aborted`.
    pub action: String,
    pub packets: u64,
    pub bytes: u64,
}

impl Stats {
    pub fn read<T: std::borrow::Borrow<MapData>>(map: &PerCpuArray<T, Counter>) -> Result<Self> {
        let slots = (0..STATS_SLOTS)
            .map(|slot| {
                let per_cpu = map.get(&slot, 0).map_err(|e| kernel("reading the stats map", e))?;
                Ok(per_cpu.iter().fold(Counter::default(), |sum, c| Counter {
                    packets: sum.packets + c.packets,
                    bytes: sum.bytes + c.bytes,
                }))
            })
            .collect::<Result<_>>()?;
        Ok(Self { slots })
    }

    fn slot(&self, slot: u32) -> Counter {
        self.slots.get(slot as usize).copied().unwrap_or_default()
    }

    /// Packets whose verdict for `reason` was applied.
    pub fn applied(&self, reason: Reason) -> Counter {
        self.slot(reason)
    }

    /// Packets `monitor` mode would have dropped for `reason`.
    pub fn would_drop(&self, reason: Reason) -> Counter {
        self.slot(REASON_COUNT + reason)
    }

    /// Packets from sources on no list that reached the budgets (passed within them, over
    /// them, or non-first fragments), whatever the mode did with them: what `auto` watches.
    /// SYNs answered with cookies and refused cookie ACKs count too: they come from sources
    /// that proved nothing yet, and during an attack phase they are most of a SYN flood (without
    /// them the measure would fall to nothing, and `auto` would leave the attack phase mid-flood).
    pub fn unknown_packets(&self) -> u64 {
        use edge_common::reason::{
            COOKIE_INVALID, FRAGMENT, SYN_COOKIE_SENT, UNKNOWN_GLOBAL, UNKNOWN_PASS, UNKNOWN_RATE,
        };
        [FRAGMENT, UNKNOWN_GLOBAL, UNKNOWN_RATE, UNKNOWN_PASS, SYN_COOKIE_SENT, COOKIE_INVALID]
            .iter()
            .map(|&r| self.applied(r).packets + self.would_drop(r).packets)
            .sum()
    }

    /// The counters of two filters together.
    pub fn plus(&self, other: &Stats) -> Stats {
        let slots = (0..STATS_SLOTS)
            .map(|s| {
                let (a, b) = (self.slot(s), other.slot(s));
                Counter { packets: a.packets + b.packets, bytes: a.bytes + b.bytes }
            })
            .collect();
        Stats { slots }
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Stats) -> Stats {
        let slots = (0..STATS_SLOTS)
            .map(|s| {
                let (now, then) = (self.slot(s), earlier.slot(s));
                Counter {
                    packets: now.packets.wrapping_sub(then.packets),
                    bytes: now.bytes.wrapping_sub(then.bytes),
                }
            })
            .collect();
        Stats { slots }
    }

    /// The single (reason, would_drop) counted in this snapshot, if exactly one packet was.
    pub fn only_reason(&self) -> Option<(Reason, bool)> {
        let counted: Vec<u32> = (0..STATS_SLOTS).filter(|s| self.slot(*s).packets > 0).collect();
        match counted.as_slice() {
            [slot] if self.slot(*slot).packets == 1 => {
                Some((slot % REASON_COUNT, *slot >= REASON_COUNT))
            }
            _ => None,
        }
    }

    /// Every reason in pipeline order, each followed by its monitor-mode would-drops. Rows that
    /// counted nothing are left out unless `all` (then every reason has its row, and every drop
    /// reason its would-drop row, so readers find each one before any traffic).
    pub fn rows(&self, all: bool) -> Vec<Row> {
        let mut rows = Vec::new();
        for reason in 0..REASON_COUNT {
            let name = REASON_NAMES[reason as usize];
            let applied = self.applied(reason);
            if all || applied.packets > 0 {
                let action = match reason {
                    INTERNAL => "aborted",
                    SYN_COOKIE_SENT => "reply",
                    r if is_drop(r) => "drop",
                    _ => "pass",
                };
                rows.push(Row {
                    reason: name.into(),
                    action: action.into(),
                    packets: applied.packets,
                    bytes: applied.bytes,
                });
            }
            let would = self.would_drop(reason);
            if would.packets > 0 || (all && is_drop(reason)) {
                rows.push(Row {
                    reason: name.into(),
                    action: "would_drop".into(),
                    packets: would.packets,
                    bytes: would.bytes,
                });
            }
        }
        rows
    }

    pub fn total_packets(&self) -> u64 {
        self.slots.iter().map(|c| c.packets).sum()
    }
}

/// `edge stats` as a table.
pub fn render_table(rows: &[Row]) -> String {
    let mut out = format!("{:<20} {:<11} {:>14} {:>16}\n", "REASON", "ACTION", "PACKETS", "BYTES");
    for r in rows {
        out.push_str(&format!(
            "{:<20} {:<11} {:>14} {:>16}\n",
            r.reason, r.action, r.packets, r.bytes
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_common::reason::{
        COOKIE_INVALID, COOKIE_VALID, SYN_REPLY_BUDGET, UNKNOWN_RATE, VISITOR,
    };

    fn counting(reasons: &[(Reason, u64)]) -> Stats {
        let mut slots = vec![Counter::default(); STATS_SLOTS as usize];
        for &(reason, packets) in reasons {
            slots[reason as usize].packets = packets;
        }
        Stats { slots }
    }

    #[test]
    fn auto_counts_what_the_cookie_stage_answered_or_refused_as_unknown() {
        // A SYN flood in the attack phase is answered (syn_cookie_sent) and its forged ACKs
        // refused (cookie_invalid): both must keep the attack measured. Visitors, valid
        // cookies and SYNs passed to the kernel are not unknown traffic.
        let stats = counting(&[
            (UNKNOWN_RATE, 5),
            (SYN_COOKIE_SENT, 1_000),
            (COOKIE_INVALID, 200),
            (VISITOR, 7),
            (COOKIE_VALID, 3),
            (SYN_REPLY_BUDGET, 11),
        ]);
        assert_eq!(stats.unknown_packets(), 1_205);
    }

    #[test]
    fn a_sent_cookie_is_shown_as_a_reply() {
        let rows = counting(&[(SYN_COOKIE_SENT, 2), (COOKIE_INVALID, 1)]).rows(false);
        let shown: Vec<(&str, &str)> =
            rows.iter().map(|r| (r.reason.as_str(), r.action.as_str())).collect();
        assert_eq!(shown, [("syn_cookie_sent", "reply"), ("cookie_invalid", "drop")]);
    }
}
