//! Visits: recorded through the API, an import or handshake learning, and removed.
use edge_common::keys::Addr;

use super::{
    core::{Core, Origin},
    fault::Fault,
};
use crate::{
    history::{HistoryBuilder, VisitorHistory},
    store::Op,
    visitors::{admission_visitor, VisitorKey},
};

/// Counts of a change to the visitors.
#[derive(Clone, Copy, Debug, Default)]
pub struct Recorded {
    pub recorded: u64,
    pub outside_window: u64,
}

impl Core {
    /// Records visits (all or nothing); visits already outside the window are counted and
    /// change nothing.
    pub fn record(&mut self, visits: VisitorHistory, origin: Origin) -> Result<Recorded, Fault> {
        if origin == Origin::Api {
            self.require_ready()?;
        }
        let mut in_window = visits.clone();
        in_window.roll(self.today(), self.policy.window_days);
        let counts = Recorded {
            recorded: count_visits(&in_window),
            outside_window: count_visits(&visits) - count_visits(&in_window),
        };
        if !in_window.is_empty() {
            self.change(Op::visits(&in_window), origin)?;
        }
        Ok(counts)
    }

    /// Records peers that completed a handshake as today's visitors; those already seen today
    /// are skipped (no log record for them). Returns how many were recorded.
    pub fn learn(&mut self, peers: &[Addr]) -> Result<u64, Fault> {
        let today = self.today();
        let mut fresh = HistoryBuilder::default();
        let mut n = 0;
        for peer in peers {
            let key = admission_visitor(peer);
            if self.state.history.last_seen(key) != Some(today) {
                fresh.push(key, today);
                n += 1;
            }
        }
        if n > 0 {
            self.record(fresh.finish(), Origin::Daemon)?;
            self.learned += n;
        }
        Ok(n)
    }

    /// Removes visitors (all or nothing: NOT_FOUND if any is not in the history).
    pub fn remove_visitors(&mut self, keys: &[VisitorKey]) -> Result<u64, Fault> {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for key in keys {
            match *key {
                VisitorKey::V4(a) => v4.push(u32::from(a)),
                VisitorKey::V6(p) => v6.push(u64::from_be_bytes(p)),
            }
        }
        let gone = self.change(Op::RemoveVisitors { v4, v6 }, Origin::Api)?;
        Ok(gone.len())
    }
}

/// Distinct (visitor, day) pairs.
fn count_visits(history: &VisitorHistory) -> u64 {
    history.v4.days().map(|(_, s)| s.len()).sum::<u64>()
        + history.v6.days().map(|(_, s)| s.len()).sum::<u64>()
}
