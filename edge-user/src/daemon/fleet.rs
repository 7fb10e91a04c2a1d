//! This node's side of the fleet, in the core: which changes are shared and how they are
//! stamped, how the others' changes and states land (the same validate, store, apply and
//! mirror path as a local change), and the outbox of changes the stream has not taken yet.
//! How the fleet is doing is `fleet_health.rs`, the Redis side `fleet_sync.rs`, the merge
//! rules `store/fleet.rs`.
use std::collections::{BTreeMap, HashSet, VecDeque};

use edge_common::{keys::Addr, maps as names};
use ipnet::IpNet;

use tracing::{info, warn};

use super::{
    core::{check_capacity, Core, Mirror, Origin},
    fault::Fault,
};
use crate::{
    fleet::{stream_id, Refused},
    history::Departed,
    policy::{self, List, Mode},
    store::{Cursor, Op, Stamped, State},
    visitors::{admission_visitor, Day, VisitorKey},
};

/// Changes held for the stream while Redis is out, before the node gives up on the list and
/// publishes its whole state instead (which covers them all).
pub const OUTBOX_MAX: usize = 100_000;
/// A change stamped further ahead of this node's clock is refused: a node with a clock far
/// in the future would otherwise win every write and hold removals for as long.
pub const MAX_CLOCK_AHEAD_MS: u64 = 10 * 60 * 1000;

/// The fleet as this node sees it.
pub struct FleetLink {
    pub settings: policy::Fleet,
    /// Changes made here that the stream has not taken yet, oldest first, each numbered by
    /// the count of changes made here with it (`FleetState::made`).
    pub outbox: VecDeque<(u64, Stamped)>,
    /// The next publication is this node's whole state: it is owed (see `Cursor`), the
    /// outbox overflowed, or changes made before a restart may not have reached the stream.
    pub publish_state: bool,
    /// Unix seconds of the last round trip that worked, and whether one has since start.
    pub ok_at: u64,
    pub contacted: bool,
    pub degraded: bool,
    pub error: String,
    pub published: u64,
    pub applied: u64,
    pub refused: BTreeMap<&'static str, u64>,
    /// The nodes' last reports, and the snapshot's stream entry, time and size.
    pub nodes: Vec<NodeReport>,
    pub snapshot: Option<(String, u64, u64)>,
}

/// What a node reports to `<stream>:nodes` every few seconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeReport {
    pub node: String,
    /// This store's incarnation (two reports of one name with different ones: two nodes).
    #[serde(default)]
    pub incarnation: String,
    /// When it reported, on Redis's clock (unix seconds): liveness is judged on one clock.
    pub at: u64,
    pub position: String,
    pub visitors: u64,
    pub allow_rules: u64,
    pub deny_rules: u64,
    pub degraded: bool,
}

impl FleetLink {
    pub fn new(settings: policy::Fleet, state: &State, now: u64) -> Self {
        let fleet = &state.fleet;
        Self {
            settings,
            outbox: VecDeque::new(),
            publish_state: fleet.cursor.owes_state || fleet.made > fleet.cursor.published,
            ok_at: now,
            contacted: false,
            degraded: false,
            error: String::new(),
            published: 0,
            applied: 0,
            refused: BTreeMap::new(),
            nodes: Vec::new(),
            snapshot: None,
        }
    }

    /// Whether a change made here goes to the fleet. A rule's expiry does not: every node
    /// expires it on its own clock, and a stamped removal could undo an extension made
    /// elsewhere meanwhile.
    fn shares(&self, op: &Op, origin: Origin) -> bool {
        match op {
            Op::Visits(_) | Op::RemoveVisitors { .. } | Op::PutRules(_) => true,
            Op::RemoveRules { .. } => origin == Origin::Api,
            Op::SetMode(_) => !self.settings.local_mode,
            // The admission feed's entries reach every node from the feed itself.
            Op::Admit { feed, .. } | Op::Redeem { feed, .. } => feed.is_none(),
            Op::Roll { .. } | Op::Fleet { .. } | Op::FleetCursor(_) => false,
        }
    }

    pub fn refuse(&mut self, why: &Refused) {
        *self.refused.entry(why.reason()).or_default() += 1;
    }
}

/// What the changes of one read add, as far as the maps' capacities go.
#[derive(Default)]
struct Taking {
    v6: HashSet<u64>,
    admitted: HashSet<Addr>,
    /// Allow, then deny.
    rules: [HashSet<IpNet>; 2],
}

/// What the next publication carries, and the count of changes made here it covers.
pub enum Outgoing {
    Changes(Vec<Stamped>, u64),
    /// The whole state, encoded.
    State(Vec<u8>, u64),
}

impl Core {
    /// A change made here, as the store logs it: stamped for the fleet when it is shared.
    pub(super) fn stamp_for_fleet(&mut self, op: Op, origin: Origin) -> Op {
        let Some(link) = &self.fleet else { return op };
        if !link.shares(&op, origin) {
            return op;
        }
        let node = link.settings.node.clone();
        let stamp = self.state.fleet.next_stamp(self.now_ms(), &node);
        Op::Fleet { changes: vec![Stamped { stamp, op }], position: None }
    }

    /// After a stamped change made here is stored: the stream's turn.
    fn queue_for_fleet(&mut self, op: &Op) {
        let (Some(link), Op::Fleet { changes, position: None }) = (&mut self.fleet, op) else {
            return;
        };
        // Queued even while a whole state is due: one encoded before these does not hold them.
        if link.outbox.len() + changes.len() > OUTBOX_MAX {
            warn!(
                "fleet: over {OUTBOX_MAX} changes wait for Redis; the whole state goes out \
                 when it is back"
            );
            link.outbox.clear();
            link.publish_state = true;
            return;
        }
        let first = self.state.fleet.made - changes.len() as u64;
        for (n, change) in changes.iter().enumerate() {
            link.outbox.push_back((first + n as u64 + 1, change.clone()));
        }
    }

    /// Milliseconds since the epoch on the daemon's clock (its day, the system's time of day).
    pub(super) fn now_ms(&self) -> u64 {
        let sub_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_millis()));
        self.now() * 1000 + sub_ms
    }

    /// The next publication: up to `max_bytes` of changes from the front of the outbox (at
    /// least one), or the whole state. Nothing leaves the outbox until
    /// [`Core::fleet_published`] says the stream took it.
    pub fn fleet_outgoing(&self, max_bytes: usize) -> Option<Outgoing> {
        let link = self.fleet.as_ref()?;
        if link.publish_state {
            return Some(Outgoing::State(self.fleet_state_bytes(), self.state.fleet.made));
        }
        let mut changes = Vec::new();
        let (mut bytes, mut through) = (0, 0);
        for (seq, change) in &link.outbox {
            let size = postcard::experimental::serialized_size(change).unwrap_or(0);
            if !changes.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            through = *seq;
            changes.push(change.clone());
        }
        (!changes.is_empty()).then_some(Outgoing::Changes(changes, through))
    }

    /// The last entry this node added to the stream.
    pub fn fleet_last_added(&self) -> Option<String> {
        self.state.fleet.cursor.last_added.clone()
    }

    /// Whether this node's state may stand for the fleet's (the snapshot): not a canary's
    /// (it skips the fleet's mode), nor one that refused a change since it started.
    pub fn fleet_may_snapshot(&self) -> bool {
        self.fleet.as_ref().is_some_and(|link| {
            !link.settings.local_mode
                && ["invalid", "future_stamp"].iter().all(|r| !link.refused.contains_key(r))
        })
    }

    /// The highest clock reading this node has seen (its own changes are at or below it).
    pub fn fleet_clock(&self) -> u64 {
        self.state.fleet.clock
    }

    /// This node's whole state as the fleet gets it: without its mode on a canary.
    pub fn fleet_state_bytes(&self) -> Vec<u8> {
        if self.fleet.as_ref().is_some_and(|l| l.settings.local_mode) {
            let mut state = self.state.clone();
            state.mode = None;
            state.fleet.mode_stamp = None;
            return crate::store::encode_state(&state);
        }
        crate::store::encode_state(&self.state)
    }

    /// The stream took a publication (as entry `id`): what it covers leaves the outbox, and
    /// the cursor is logged, so a restart knows whether anything is still to publish and can
    /// tell whether Redis still holds what it took.
    pub fn fleet_published(
        &mut self,
        whole_state: bool,
        through: u64,
        id: String,
    ) -> Result<(), Fault> {
        let Some(link) = self.fleet.as_mut() else { return Ok(()) };
        link.published += 1;
        while link.outbox.front().is_some_and(|(seq, _)| *seq <= through) {
            link.outbox.pop_front();
        }
        if whole_state {
            link.publish_state = false;
        }
        let mut cursor = self.state.fleet.cursor.clone();
        cursor.published = cursor.published.max(through);
        cursor.owes_state &= !whole_state;
        cursor.last_added = Some(id);
        self.log_cursor(cursor)
    }

    fn log_cursor(&mut self, cursor: Cursor) -> Result<(), Fault> {
        if cursor == self.state.fleet.cursor {
            return Ok(());
        }
        let op = Op::FleetCursor(cursor);
        self.store.append(&op).map_err(Fault::store)?;
        self.state.apply(&op);
        Ok(())
    }

    /// The session's start: the fleet's Redis names its life `epoch`, and its stream has
    /// handed out ids up to `last_id`; `lost` says it no longer holds the last entry this node
    /// added (and did not trim it). A node that knew another epoch (Redis came back empty), or
    /// whose position is past `last_id` or whose last entry is lost (Redis lost the stream's
    /// tail), or that is new here with state of its own, owes the fleet its whole state and
    /// reads the stream from its start. Returns this store's incarnation and the position to
    /// read from.
    pub fn fleet_session(
        &mut self,
        epoch: &str,
        last_id: Option<&str>,
        lost: bool,
    ) -> Result<(String, Option<String>), Fault> {
        let mut cursor = self.state.fleet.cursor.clone();
        let incarnation = match &cursor.incarnation {
            Some(incarnation) => incarnation.clone(),
            None => {
                let id = crate::ticket::random_id()
                    .map_err(|e| Fault::Internal(format!("no random incarnation: {e}")))?;
                format!("{id:016x}")
            }
        };
        cursor.incarnation = Some(incarnation.clone());
        let lost_tail =
            lost || cursor.position.as_deref().and_then(stream_id) > last_id.and_then(stream_id);
        if cursor.epoch.as_deref() != Some(epoch) || lost_tail {
            let has_state = !self.state.history.is_empty() || !self.state.rules.is_empty();
            match &cursor.epoch {
                Some(old) if old != epoch => warn!(
                    old,
                    new = epoch,
                    "fleet: Redis lost the fleet's data; re-seeding it with this node's state"
                ),
                Some(_) => warn!(
                    position = cursor.position.as_deref().unwrap_or(""),
                    last = last_id.unwrap_or(""),
                    "fleet: the stream ends before this node's position (Redis lost its tail); \
                     re-seeding it with this node's state"
                ),
                None => info!(epoch, "fleet: joining"),
            }
            cursor.owes_state |= cursor.epoch.is_some() || has_state;
            cursor.epoch = Some(epoch.to_string());
            cursor.position = None;
        }
        if let Some(link) = self.fleet.as_mut() {
            link.publish_state |= cursor.owes_state;
        }
        let position = cursor.position.clone();
        self.log_cursor(cursor)?;
        Ok((incarnation, position))
    }

    /// Changes other nodes made, read from the stream through `position`: each validated as
    /// a local change would be (one that cannot be taken is refused and counted), then stored
    /// with the position in one record, applied and mirrored.
    pub fn fleet_apply(&mut self, changes: Vec<Stamped>, position: String) -> Result<(), Fault> {
        let Some(link) = self.fleet.as_ref() else { return Ok(()) };
        let local_mode = link.settings.local_mode;
        let horizon = (self.now_ms() + MAX_CLOCK_AHEAD_MS) << 16;
        let mut taken = Vec::with_capacity(changes.len());
        let mut taking = Taking::default();
        for change in changes {
            if local_mode && matches!(change.op, Op::SetMode(_)) {
                continue;
            }
            let checked = match change.stamp.hlc > horizon {
                true => Err(Refused::Future(change.stamp.node.clone())),
                false => self.validate_remote(&change.op, &mut taking).map_err(Refused::Invalid),
            };
            match checked {
                Ok(()) => taken.push(change),
                Err(why) => {
                    warn!(node = %change.stamp.node, "fleet: refused a change: {why}");
                    self.fleet.as_mut().expect("checked").refuse(&why);
                }
            }
        }
        let applied = taken.len() as u64;
        self.change_stamped(Op::Fleet { changes: taken, position: Some(position) })?;
        if let Some(link) = self.fleet.as_mut() {
            link.applied += applied;
        }
        Ok(())
    }

    /// A change from another node: what this node's maps and store can take, together with
    /// the changes of the same read already taken (`taking`). Removals of what is not here are
    /// no error (the fleet's order is not this node's).
    fn validate_remote(&self, op: &Op, taking: &mut Taking) -> Result<(), String> {
        match op {
            Op::Visits(batches) => {
                // A node whose clock is a little ahead may record tomorrow before we roll.
                let tomorrow = self.today().plus(1);
                if let Some(batch) = batches.iter().find(|b| Day(b.day) > tomorrow) {
                    return Err(format!("a visit on {}, after tomorrow", Day(batch.day)));
                }
                self.take_v6(batches.iter().flat_map(|b| b.v6.iter().copied()), taking)
            }
            Op::PutRules(rules) => {
                let policy = self.effective_policy();
                for (n, (list, held, capacity)) in [
                    (List::Allow, &policy.allow, names::ALLOW_CAPACITY),
                    (List::Deny, &policy.deny, names::DENY_CAPACITY),
                ]
                .into_iter()
                .enumerate()
                {
                    let held: HashSet<&IpNet> = held.iter().collect();
                    let new: HashSet<IpNet> = rules
                        .iter()
                        .filter(|r| r.list == list && !held.contains(&r.net))
                        .map(|r| r.net)
                        .filter(|net| !taking.rules[n].contains(net))
                        .collect();
                    let wanted = held.len() + taking.rules[n].len() + new.len();
                    check_capacity(list.name(), capacity, wanted).map_err(|f| f.to_string())?;
                    taking.rules[n].extend(new);
                }
                Ok(())
            }
            Op::Admit { entries, .. } | Op::Redeem { entries, .. } => {
                let new: HashSet<Addr> = entries
                    .iter()
                    .map(|(key, _)| *key)
                    .filter(|key| !self.state.admissions.contains_key(key))
                    .filter(|key| !taking.admitted.contains(key))
                    .collect();
                let wanted = self.state.admissions.len() + taking.admitted.len() + new.len();
                check_capacity(names::ADMITTED, names::ADMITTED_CAPACITY, wanted)
                    .map_err(|f| f.to_string())?;
                let v6 = entries.iter().filter_map(|(key, _)| match admission_visitor(key) {
                    VisitorKey::V6(prefix) => Some(u64::from_be_bytes(prefix)),
                    VisitorKey::V4(_) => None,
                });
                self.take_v6(v6, taking)?;
                taking.admitted.extend(new);
                Ok(())
            }
            Op::RemoveVisitors { .. } | Op::RemoveRules { .. } | Op::SetMode(_) => Ok(()),
            Op::Roll { .. } | Op::Fleet { .. } | Op::FleetCursor(_) => {
                Err("not a change the fleet carries".into())
            }
        }
    }

    /// New IPv6 visitor prefixes, if the map holds them with those known and being taken.
    fn take_v6(
        &self,
        prefixes: impl Iterator<Item = u64>,
        taking: &mut Taking,
    ) -> Result<(), String> {
        let known = self.state.history.v6.all();
        let new: HashSet<u64> =
            prefixes.filter(|p| !known.contains(*p) && !taking.v6.contains(p)).collect();
        let wanted = known.len() as usize + taking.v6.len() + new.len();
        check_capacity(names::VISITORS_V6, names::VISITORS_V6_CAPACITY, wanted)
            .map_err(|f| f.to_string())?;
        taking.v6.extend(new);
        Ok(())
    }

    /// Refuses a joined state the maps cannot hold.
    fn check_joined(&self, joined: &State) -> Result<(), Fault> {
        check_capacity(
            names::VISITORS_V6,
            names::VISITORS_V6_CAPACITY,
            joined.history.v6.len() as usize,
        )?;
        check_capacity(names::ADMITTED, names::ADMITTED_CAPACITY, joined.admissions.len())?;
        for (list, capacity) in
            [(List::Allow, names::ALLOW_CAPACITY), (List::Deny, names::DENY_CAPACITY)]
        {
            let mut nets: HashSet<IpNet> = self.config_list(list).iter().copied().collect();
            nets.extend(joined.rules(list).map(|r| r.net));
            check_capacity(list.name(), capacity, nets.len())?;
        }
        Ok(())
    }

    /// Stores, applies and mirrors a stamped record (made here or read from the stream).
    pub(super) fn change_stamped(&mut self, op: Op) -> Result<Departed, Fault> {
        self.store.append(&op).map_err(Fault::store)?;
        let Op::Fleet { changes, position } = &op else { unreachable!("a stamped record") };
        let (mode, kernel_mode) = (self.mode(), self.kernel_mode());
        let applied = self.state.apply_stamped(changes);
        match position {
            None => self.state.fleet.made += changes.len() as u64,
            Some(_) => self.state.fleet.cursor.position.clone_from(position),
        }
        self.follow_mode(mode, kernel_mode);
        let mut gone = Departed::default();
        let mut failed = None;
        for (op, departed) in &applied {
            if let Err(e) = self.mirror(Mirror::Change(op, departed)) {
                failed = Some(e);
            }
            gone.v4 |= &departed.v4;
            gone.v6 |= &departed.v6;
        }
        self.queue_for_fleet(&op);
        match failed {
            None => Ok(gone),
            Some(e) => Err(Fault::Internal(format!(
                "the change is stored but the kernel maps could not follow ({e}); the daemon \
                 rebuilds them from the store"
            ))),
        }
    }

    /// A mode that came from the fleet enters `auto` as a local switch does (keeping what the
    /// kernel runs).
    fn follow_mode(&mut self, before: Mode, kernel_before: Mode) {
        if self.mode() != before {
            self.entering_auto(self.mode(), before, kernel_before);
            info!(mode = %self.mode(), was = %before, "fleet: the mode changed");
        }
    }

    /// Another node's whole state (the fleet's snapshot through stream entry `covers`, or a
    /// `state` entry): joined under the merge rules, written as this node's snapshot (the log
    /// does not hold whole states), and mirrored whole.
    pub fn fleet_join(&mut self, other: &State, covers: Option<String>) -> Result<(), Fault> {
        let share_mode = self.fleet.as_ref().is_some_and(|l| !l.settings.local_mode);
        let mut joined = self.state.clone();
        joined.join(other, share_mode);
        self.check_joined(&joined)?;
        if let Some(covers) = covers {
            joined.fleet.cursor.position = Some(covers);
        }
        self.store.compact(&joined).map_err(Fault::store)?;
        let (mode, kernel_mode) = (self.mode(), self.kernel_mode());
        self.state = joined;
        self.follow_mode(mode, kernel_mode);
        self.mirror(Mirror::Everything)
    }
}
