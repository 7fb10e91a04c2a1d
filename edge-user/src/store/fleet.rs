//! The fleet's merge rules: how a change stamped by any node, or another node's whole state,
//! lands in this node's state, so that every node that has seen the same changes holds the
//! same state whatever order they arrived in and however often (docs/fleet.md).
//!
//! - Visits: a visitor's last day is the latest day any node saw it (a union of day sets).
//! - Visitor removals: a removal made on day D removes the visits of day D and before, and
//!   is remembered (a tombstone, rolled out with the window) so that a visit of day D or
//!   before that arrives later stays removed; a visit on a later day brings the visitor back.
//! - Rules and the mode: the last writer wins, by a hybrid logical clock stamp with the node
//!   name as the tie-break; a removal is a write (its stamp is kept).
//! - Admissions: the latest expiry wins.
use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::state::{Op, State, StoredRule};
use crate::{
    history::{Days, Departed, VisitorHistory},
    policy::List,
    visitors::{admission_visitor, Day, VisitorKey},
};

/// A hybrid logical clock reading and the node that made it: the order of writes to one rule
/// or to the mode. `hlc` is milliseconds since the epoch shifted left 16 bits, plus a counter.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub hlc: u64,
    pub node: String,
}

impl Stamp {
    /// The stamp of a rule stored before the fleet stamped it: derived from the rule itself,
    /// so every node computes the same one.
    pub fn implicit(rule: &StoredRule) -> Self {
        Self { hlc: rule.added_at.saturating_mul(1000) << 16, node: String::new() }
    }

    /// The UTC day the stamp was made on (a visitor removal holds through it).
    pub fn day(&self) -> Day {
        Day(((self.hlc >> 16) / 86_400_000) as u32)
    }
}

/// One change as the fleet carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped {
    pub stamp: Stamp,
    pub op: Op,
}

/// What the store keeps for the fleet besides the state every node shares.
#[derive(Clone, Debug, Default)]
pub struct FleetState {
    /// The stamp of the last write to each rule, kept after a removal.
    pub rule_stamps: BTreeMap<(List, IpNet), Stamp>,
    pub mode_stamp: Option<Stamp>,
    /// Removed visitors, by the day of the removal.
    pub removed: VisitorHistory,
    /// The highest clock reading seen.
    pub clock: u64,
    /// Changes stamped here (the outbox numbers them by this count).
    pub made: u64,
    pub cursor: Cursor,
}

/// Where this node stands in the fleet, logged whenever it moves (`Op::FleetCursor`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The fleet this store last joined (the id its Redis holds).
    pub epoch: Option<String>,
    /// The last stream entry applied.
    pub position: Option<String>,
    /// How many of the changes made here reached the stream.
    pub published: u64,
    /// This store's whole state is owed to the fleet (it joined with state of its own, or the
    /// fleet's Redis came back empty): published before anything else.
    pub owes_state: bool,
    /// A random name for this store's life in the fleet: entries from it are this node's own.
    /// A wiped or rebuilt node gets a new one, so it applies what its former self published.
    pub incarnation: Option<String>,
    /// The last stream entry this node added: a Redis that lost it lost the stream's tail.
    pub last_added: Option<String>,
}

impl FleetState {
    /// The next stamp for a change made here at `now_ms`.
    pub fn next_stamp(&mut self, now_ms: u64, node: &str) -> Stamp {
        self.clock = (now_ms << 16).max(self.clock + 1);
        Stamp { hlc: self.clock, node: node.to_string() }
    }

    fn rule_stamp(&self, key: &(List, IpNet), held: Option<&StoredRule>) -> Option<Stamp> {
        self.rule_stamps.get(key).cloned().or_else(|| held.map(Stamp::implicit))
    }
}

impl State {
    /// Applies stamped changes under the merge rules. Returns, per change, what it changed
    /// here (the part that won, for the kernel to follow) and the visitors it took away.
    pub fn apply_stamped(&mut self, changes: &[Stamped]) -> Vec<(Op, Departed)> {
        let mut applied = Vec::new();
        for Stamped { stamp, op } in changes {
            self.fleet.clock = self.fleet.clock.max(stamp.hlc);
            applied.extend(self.apply_one(stamp, op));
        }
        applied
    }

    fn apply_one(&mut self, stamp: &Stamp, op: &Op) -> Vec<(Op, Departed)> {
        let removed = &self.fleet.removed;
        match op {
            Op::Visits(batches) => {
                let kept: Vec<_> = batches
                    .iter()
                    .map(|batch| {
                        let mut batch = batch.clone();
                        Days::retain_not_removed(&mut batch.v4, Day(batch.day), &removed.v4);
                        Days::retain_not_removed(&mut batch.v6, Day(batch.day), &removed.v6);
                        batch
                    })
                    .filter(|b| !b.v4.is_empty() || !b.v6.is_empty())
                    .collect();
                let op = Op::Visits(kept);
                let departed = self.apply(&op);
                vec![(op, departed)]
            }
            Op::RemoveVisitors { v4, v6 } => {
                let day = stamp.day();
                for addr in v4 {
                    self.fleet.removed.v4.record(day, *addr);
                }
                for prefix in v6 {
                    self.fleet.removed.v6.record(day, *prefix);
                }
                let departed = self.history.remove_through(day, v4, v6);
                vec![(op.clone(), departed)]
            }
            Op::PutRules(rules) => {
                let won: Vec<StoredRule> = rules
                    .iter()
                    .filter(|rule| self.claim_rule((rule.list, rule.net), stamp))
                    .cloned()
                    .collect();
                if won.is_empty() {
                    return Vec::new();
                }
                let op = Op::PutRules(won);
                let departed = self.apply(&op);
                vec![(op, departed)]
            }
            Op::RemoveRules { list, nets } => {
                let won: Vec<IpNet> = nets
                    .iter()
                    .filter(|net| self.claim_rule((*list, **net), stamp))
                    .copied()
                    .collect();
                if won.is_empty() {
                    return Vec::new();
                }
                let op = Op::RemoveRules { list: *list, nets: won };
                let departed = self.apply(&op);
                vec![(op, departed)]
            }
            Op::SetMode(_) => {
                if self.fleet.mode_stamp.as_ref().is_some_and(|held| held >= stamp) {
                    return Vec::new();
                }
                self.fleet.mode_stamp = Some(stamp.clone());
                vec![(op.clone(), self.apply(op))]
            }
            Op::Admit { day, entries, .. } | Op::Redeem { day, entries, .. } => {
                // The admissions all stand (a removal takes away the visitor, not the
                // admission); the visits a removal covers are taken back at once. A token's
                // uses are a union: every node then counts every source it admitted.
                let op = match op {
                    Op::Redeem { uses, .. } => Op::Redeem {
                        day: *day,
                        entries: entries.clone(),
                        uses: uses.clone(),
                        feed: None,
                    },
                    _ => Op::Admit { day: *day, entries: entries.clone(), feed: None },
                };
                let departed = self.apply(&op);
                let (mut v4, mut v6) = (Vec::new(), Vec::new());
                for (key, _) in entries {
                    let visitor = admission_visitor(key);
                    if !self.removed_on_or_after(visitor, Day(*day)) {
                        continue;
                    }
                    match visitor {
                        VisitorKey::V4(addr) => v4.push(u32::from(addr)),
                        VisitorKey::V6(prefix) => v6.push(u64::from_be_bytes(prefix)),
                    }
                }
                let mut done = vec![(op, departed)];
                if !v4.is_empty() || !v6.is_empty() {
                    let departed = self.history.remove_through(Day(*day), &v4, &v6);
                    done.push((Op::RemoveVisitors { v4, v6 }, departed));
                }
                done
            }
            // Each node rolls its own window and records its own cursor: never carried.
            Op::Roll { .. } | Op::Fleet { .. } | Op::FleetCursor(_) => Vec::new(),
        }
    }

    /// True if a write stamped `stamp` to the rule `key` wins (and records its stamp).
    fn claim_rule(&mut self, key: (List, IpNet), stamp: &Stamp) -> bool {
        let held = self.fleet.rule_stamp(&key, self.rules.get(&key));
        if held.is_some_and(|held| held >= *stamp) {
            return false;
        }
        self.fleet.rule_stamps.insert(key, stamp.clone());
        true
    }

    fn removed_on_or_after(&self, key: VisitorKey, day: Day) -> bool {
        self.fleet.removed.last_seen(key).is_some_and(|removed| removed >= day)
    }

    /// Merges another node's whole state into this one under the same rules (joining a fleet
    /// from its snapshot, or a node re-publishing what it holds). `share_mode` is false on a
    /// node that keeps its own mode.
    pub fn join(&mut self, other: &State, share_mode: bool) {
        self.fleet.clock = self.fleet.clock.max(other.fleet.clock);
        // Tombstones first, so visits they cover are not brought back.
        for (day, set) in other.fleet.removed.v4.days() {
            self.fleet.removed.v4.record_all(day, &mut set.iter().collect());
        }
        for (day, set) in other.fleet.removed.v6.days() {
            self.fleet.removed.v6.record_all(day, &mut set.iter().collect());
        }
        let removed = &self.fleet.removed;
        for (day, set) in other.history.v4.days() {
            let mut keys: Vec<u32> = set.iter().collect();
            Days::retain_not_removed(&mut keys, day, &removed.v4);
            self.history.v4.record_all(day, &mut keys);
        }
        for (day, set) in other.history.v6.days() {
            let mut keys: Vec<u64> = set.iter().collect();
            Days::retain_not_removed(&mut keys, day, &removed.v6);
            self.history.v6.record_all(day, &mut keys);
        }
        for (day, set) in self.fleet.removed.v4.days() {
            let keys: Vec<u32> = set.iter().collect();
            self.history.remove_through(day, &keys, &[]);
        }
        for (day, set) in self.fleet.removed.v6.days() {
            let keys: Vec<u64> = set.iter().collect();
            self.history.remove_through(day, &[], &keys);
        }
        // Rules: every rule the other holds or has a stamp for, last writer wins.
        let keys: std::collections::BTreeSet<(List, IpNet)> =
            other.rules.keys().chain(other.fleet.rule_stamps.keys()).copied().collect();
        for key in keys {
            let theirs = other.rules.get(&key);
            let Some(stamp) = other.fleet.rule_stamp(&key, theirs) else { continue };
            if !self.claim_rule(key, &stamp) {
                continue;
            }
            match theirs {
                Some(rule) => self.rules.insert(key, rule.clone()),
                None => self.rules.remove(&key),
            };
        }
        if let (true, Some(stamp), Some(mode)) = (share_mode, &other.fleet.mode_stamp, other.mode) {
            if self.fleet.mode_stamp.as_ref().is_none_or(|held| held < stamp) {
                self.fleet.mode_stamp = Some(stamp.clone());
                self.mode = Some(mode);
            }
        }
        for (key, until) in &other.admissions {
            let held = self.admissions.entry(*key).or_insert(0);
            *held = (*held).max(*until);
        }
        // A token's sources: the union, so the replay limit counts every node's.
        for (claim, theirs) in &other.token_uses {
            let held = self.token_uses.entry(*claim).or_default();
            for source in &theirs.sources {
                held.add(theirs.expires, *source, theirs.first_used);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{policy::Mode, store::state::DayBatch};

    const DAY: u32 = 20_000;

    /// A change from a small universe, so that changes collide: 4 addresses, 3 days, 2 rules,
    /// 3 nodes.
    fn change() -> impl Strategy<Value = Stamped> {
        let op = prop_oneof![
            (0u32..3, 0u32..4).prop_map(|(d, a)| Op::Visits(vec![DayBatch {
                day: DAY + d,
                v4: vec![a],
                v6: vec![u64::from(a) << 40],
            }])),
            (0u32..4)
                .prop_map(|a| Op::RemoveVisitors { v4: vec![a], v6: vec![u64::from(a) << 40] }),
            (0u8..2, any::<bool>(), 0u64..3).prop_map(|(n, allow, expires)| {
                let list = if allow { List::Allow } else { List::Deny };
                Op::PutRules(vec![StoredRule {
                    list,
                    net: format!("10.0.{n}.0/24").parse().unwrap(),
                    comment: format!("c{expires}"),
                    expires_at: expires,
                    added_at: 1,
                }])
            }),
            (0u8..2, any::<bool>()).prop_map(|(n, allow)| Op::RemoveRules {
                list: if allow { List::Allow } else { List::Deny },
                nets: vec![format!("10.0.{n}.0/24").parse().unwrap()],
            }),
            prop_oneof![Just(Mode::Enforce), Just(Mode::Monitor), Just(Mode::Auto)]
                .prop_map(Op::SetMode),
            (0u32..3, 0u8..4, 0u64..5).prop_map(|(d, a, until)| Op::Admit {
                day: DAY + d,
                entries: vec![(crate::visitors::admission_key([10, 1, 1, a].into()), until)],
                feed: None,
            }),
            (0u32..3, 0u8..4, 0u8..2, 0u64..5).prop_map(|(d, a, claim, until)| {
                let source = crate::visitors::admission_key([10, 1, 1, a].into());
                Op::Redeem {
                    day: DAY + d,
                    entries: vec![(source, until)],
                    uses: vec![crate::store::TokenUse {
                        claim: crate::token::ClaimId([claim; 16]),
                        expires: until + 1,
                        source,
                        used_at: u64::from(d) + 1,
                    }],
                    feed: None,
                }
            }),
        ];
        // The stamp's day is one of the visit days, so removals and visits interleave.
        (op, 0u64..3, 0u64..1000, 0usize..3).prop_map(|(op, day, ms, node)| Stamped {
            stamp: Stamp {
                hlc: ((u64::from(DAY) + day) * 86_400_000 + ms) << 16,
                node: ["a", "b", "c"][node].into(),
            },
            op,
        })
    }

    /// Everything the merge rules decide, in a comparable form.
    fn digest(state: &State) -> String {
        let visitors: Vec<_> = state.history.iter().collect();
        let admissions: std::collections::BTreeMap<_, _> = state.admissions.iter().collect();
        // A token's sources are a set: the order they arrived in is not part of the state.
        let uses: std::collections::BTreeMap<_, _> = state
            .token_uses
            .iter()
            .map(|(claim, u)| {
                let sources: std::collections::BTreeSet<_> = u.sources.iter().collect();
                (claim, (u.expires, u.first_used, sources))
            })
            .collect();
        format!(
            "{visitors:?}\n{:?}\n{:?}\n{admissions:?}\n{:?}\n{uses:?}",
            state.rules,
            state.mode,
            state.fleet.removed.iter().collect::<Vec<_>>()
        )
    }

    fn applied(changes: &[Stamped]) -> State {
        let mut state = State::default();
        for change in changes {
            state.apply(&Op::Fleet { changes: vec![change.clone()], position: Some("1-0".into()) });
        }
        state
    }

    proptest! {
        /// Any order, any repeats, in batches or one at a time, or as two states joined: the
        /// same changes give the same state.
        #[test]
        fn the_same_changes_in_any_order_give_the_same_state(
            changes in proptest::collection::vec(change(), 1..24),
            order in any::<proptest::sample::Index>(),
            repeats in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
            split in any::<proptest::sample::Index>(),
        ) {
            // A stamp is one change's: a node's clock never gives the same reading twice.
            let mut changes = changes;
            for (n, change) in changes.iter_mut().enumerate() {
                change.stamp.hlc += n as u64;
            }
            let reference = digest(&applied(&changes));

            // Shuffled (a rotation and a reversal of halves), with some delivered again.
            let mut shuffled = changes.clone();
            shuffled.rotate_left(order.index(changes.len()));
            let half = shuffled.len() / 2;
            shuffled[..half].reverse();
            for r in &repeats {
                shuffled.push(changes[r.index(changes.len())].clone());
            }
            prop_assert_eq!(&digest(&applied(&shuffled)), &reference);

            // One record holding them all.
            let mut batched = State::default();
            batched.apply(&Op::Fleet { changes: shuffled.clone(), position: None });
            prop_assert_eq!(&digest(&batched), &reference);

            // Two nodes that saw different parts, joined either way round, and again.
            let at = split.index(changes.len());
            let (left, right) = (applied(&changes[..at]), applied(&changes[at..]));
            let mut joined = left.clone();
            joined.join(&right, true);
            prop_assert_eq!(&digest(&joined), &reference);
            let mut joined = right.clone();
            joined.join(&left, true);
            joined.join(&left, true);
            prop_assert_eq!(&digest(&joined), &reference);
        }
    }

    #[test]
    fn a_removal_holds_through_its_day_and_a_later_visit_outlives_it() {
        let stamp = |day: u32, node: &str| Stamp {
            hlc: (u64::from(day) * 86_400_000) << 16,
            node: node.into(),
        };
        let visit = |day| Op::Visits(vec![DayBatch { day, v4: vec![7], v6: vec![] }]);
        let remove = Op::RemoveVisitors { v4: vec![7], v6: vec![] };
        let mut state = State::default();
        state.apply_stamped(&[Stamped { stamp: stamp(DAY + 1, "a"), op: remove.clone() }]);
        // A visit of the removal's day, arriving after it: stays removed.
        state.apply_stamped(&[Stamped { stamp: stamp(DAY + 1, "b"), op: visit(DAY + 1) }]);
        assert!(!state.history.v4.contains(7));
        // A visit of a later day: back.
        state.apply_stamped(&[Stamped { stamp: stamp(DAY + 2, "b"), op: visit(DAY + 2) }]);
        assert_eq!(state.history.v4.last_seen(7), Some(Day(DAY + 2)));
    }

    #[test]
    fn the_last_writer_wins_a_rule_and_ties_go_to_the_greater_node() {
        let net: IpNet = "10.0.0.0/24".parse().unwrap();
        let rule = |comment: &str| StoredRule {
            list: List::Deny,
            net,
            comment: comment.into(),
            expires_at: 0,
            added_at: 1,
        };
        let at = |hlc, node: &str| Stamp { hlc, node: node.into() };
        let put = |c: &str| Op::PutRules(vec![rule(c)]);
        let remove = Op::RemoveRules { list: List::Deny, nets: vec![net] };
        let mut state = State::default();
        state.apply_stamped(&[
            Stamped { stamp: at(5 << 16, "b"), op: put("b") },
            Stamped { stamp: at(5 << 16, "a"), op: put("a") },
            Stamped { stamp: at(4 << 16, "c"), op: remove.clone() },
        ]);
        assert_eq!(state.rules[&(List::Deny, net)].comment, "b");
        state.apply_stamped(&[Stamped { stamp: at(6 << 16, "a"), op: remove }]);
        assert!(state.rules.is_empty());
        // An older write after the removal does not bring it back.
        state.apply_stamped(&[Stamped { stamp: at(5 << 16, "c"), op: put("c") }]);
        assert!(state.rules.is_empty());
    }
}
