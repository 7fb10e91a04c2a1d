//! What the store holds (the daemon's desired state) and the changes that move it: one `Op` per
//! log record, applied to a `State` the same way on a live change and on replay.
use std::collections::BTreeMap;

use edge_common::keys::Addr;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::fleet::{Cursor, FleetState, Stamped};
use crate::{
    history::{Departed, VisitorHistory},
    policy::{List, Mode},
    token::ClaimId,
    visitors::{admission_visitor, Day},
};

/// An allow or deny entry managed through the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRule {
    pub list: List,
    pub net: IpNet,
    pub comment: String,
    /// Unix seconds; 0 never expires.
    pub expires_at: u64,
    pub added_at: u64,
}

/// Visitors seen on one day.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayBatch {
    pub day: u32,
    /// IPv4 addresses, host order.
    pub v4: Vec<u32>,
    /// IPv6 /64 prefixes, big-endian.
    pub v6: Vec<u64>,
}

/// One change: one log record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Visits(Vec<DayBatch>),
    RemoveVisitors {
        v4: Vec<u32>,
        v6: Vec<u64>,
    },
    PutRules(Vec<StoredRule>),
    RemoveRules {
        list: List,
        nets: Vec<IpNet>,
    },
    SetMode(Mode),
    /// Verified admissions: (admission key, admitted until in unix seconds), each also a
    /// visit on `day`. `feed` is the Redis Stream id read up to, when they came from the feed:
    /// stored in the same record, so a restart resumes exactly after what was applied.
    Admit {
        day: u32,
        entries: Vec<(Addr, u64)>,
        feed: Option<String>,
    },
    /// The window rolled to day `to`: every day before `first` left it. Logged (not derived
    /// from the clock on replay), so a restart knows the last day rolled to and a clock that
    /// jumps while the daemon is down is noticed.
    Roll {
        to: u32,
        first: u32,
    },
    /// Changes stamped for the fleet, applied under its merge rules (store/fleet.rs): made
    /// here (`position` None) or read from the fleet's stream through `position`, stored in
    /// the same record so a restart resumes exactly after what was applied.
    Fleet {
        changes: Vec<Stamped>,
        position: Option<String>,
    },
    /// Where this node stands in the fleet (store/fleet.rs, `Cursor`).
    FleetCursor(Cursor),
    /// Admissions from waiting rooms' tokens: as `Admit`, plus each token's use by its source
    /// (the replay limit counts a token's distinct sources), in the same record.
    Redeem {
        day: u32,
        entries: Vec<(Addr, u64)>,
        uses: Vec<TokenUse>,
        feed: Option<String>,
    },
}

/// A token (by its replay id) admitted `source` at `used_at`; its uses are kept until
/// `expires`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUse {
    pub claim: ClaimId,
    pub expires: u64,
    pub source: Addr,
    pub used_at: u64,
}

/// The sources a token admitted, when it was first used (an admission's cap counts from
/// then, however often the token is presented again), and until when that matters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUses {
    pub expires: u64,
    pub first_used: u64,
    pub sources: Vec<Addr>,
}

impl TokenUses {
    /// Records a use: the sources are a set, the expiry the latest, the first use the earliest.
    pub fn add(&mut self, expires: u64, source: Addr, used_at: u64) {
        self.expires = self.expires.max(expires);
        self.first_used = match self.first_used {
            0 => used_at,
            held => held.min(used_at),
        };
        if !self.sources.contains(&source) {
            self.sources.push(source);
        }
    }
}

impl Op {
    /// The batches of a history, a day at a time.
    pub fn visits(history: &VisitorHistory) -> Self {
        let mut days: BTreeMap<Day, DayBatch> = BTreeMap::new();
        for (day, set) in history.v4.days() {
            days.entry(day).or_insert_with(|| DayBatch { day: day.0, ..Default::default() }).v4 =
                set.iter().collect();
        }
        for (day, set) in history.v6.days() {
            days.entry(day).or_insert_with(|| DayBatch { day: day.0, ..Default::default() }).v6 =
                set.iter().collect();
        }
        Self::Visits(days.into_values().collect())
    }
}

/// What the store holds: the daemon's desired state.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub history: VisitorHistory,
    pub rules: BTreeMap<(List, IpNet), StoredRule>,
    /// Set through the API; overrides the config file's mode.
    pub mode: Option<Mode>,
    /// Admitted sources (admission keys) and until when (unix seconds).
    pub admissions: std::collections::HashMap<Addr, u64>,
    /// The last Redis Stream id applied from the admission feed.
    pub feed_position: Option<String>,
    /// The day the window last rolled to (`Op::Roll`).
    pub rolled_to: Option<Day>,
    /// Stamps, tombstones and the stream cursor of the fleet (empty without one).
    pub fleet: FleetState,
    /// The sources each waiting-room token admitted (`Op::Redeem`), until the token expires.
    pub token_uses: std::collections::HashMap<ClaimId, TokenUses>,
}

impl State {
    /// Applies one change, live or on replay; returns the visitors it took out of the history
    /// entirely (what the kernel maps must drop).
    pub fn apply(&mut self, op: &Op) -> Departed {
        match op {
            Op::Visits(batches) => {
                for batch in batches {
                    self.history.v4.record_all(Day(batch.day), &mut batch.v4.clone());
                    self.history.v6.record_all(Day(batch.day), &mut batch.v6.clone());
                }
            }
            Op::RemoveVisitors { v4, v6 } => return self.history.remove_all(v4, v6),
            Op::PutRules(rules) => {
                for rule in rules {
                    self.rules.insert((rule.list, rule.net), rule.clone());
                }
            }
            Op::RemoveRules { list, nets } => {
                for net in nets {
                    self.rules.remove(&(*list, *net));
                }
            }
            Op::SetMode(mode) => self.mode = Some(*mode),
            Op::Admit { day, entries, feed } | Op::Redeem { day, entries, feed, .. } => {
                if feed.is_some() {
                    self.feed_position.clone_from(feed);
                }
                if let Op::Redeem { uses, .. } = op {
                    self.record_uses(uses);
                }
                for (key, until) in entries {
                    let held = self.admissions.entry(*key).or_insert(0);
                    *held = (*held).max(*until);
                    self.history.record_key(admission_visitor(key), Day(*day));
                }
            }
            Op::Roll { to, first } => {
                self.rolled_to = Some(Day(*to));
                // A removal before the window covers only visits that have left it too.
                self.fleet.removed.drop_before(Day(*first));
                return self.history.drop_before(Day(*first));
            }
            Op::Fleet { changes, position } => {
                let mut gone = Departed::default();
                for (_, departed) in self.apply_stamped(changes) {
                    gone.v4 |= departed.v4;
                    gone.v6 |= departed.v6;
                }
                match position {
                    None => self.fleet.made += changes.len() as u64,
                    Some(_) => self.fleet.cursor.position.clone_from(position),
                }
                return gone;
            }
            Op::FleetCursor(cursor) => self.fleet.cursor = cursor.clone(),
        }
        Departed::default()
    }

    pub fn record_uses(&mut self, uses: &[TokenUse]) {
        for u in uses {
            self.token_uses.entry(u.claim).or_default().add(u.expires, u.source, u.used_at);
        }
    }

    pub fn rules(&self, list: List) -> impl Iterator<Item = &StoredRule> {
        self.rules.values().filter(move |r| r.list == list)
    }
}
