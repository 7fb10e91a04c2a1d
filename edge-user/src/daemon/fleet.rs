//! This node's side of the fleet, in the core: which changes are shared and how they are
//! stamped, how the others' changes and states land (the same validate, store, apply and
//! mirror path as a local change), the outbox of changes the stream has not taken yet, and
//! how the fleet is doing. The Redis side is `fleet_sync.rs`; the merge rules are
//! `store/fleet.rs`.
use std::collections::{BTreeMap, VecDeque};

use tracing::{info, warn};

use super::{
    core::{Core, Mirror},
    fault::Fault,
};
use crate::{
    api,
    fleet::{stream_id, Refused},
    history::Departed,
    policy::{self, List},
    store::{Op, Stamped, State},
    visitors::Day,
};

/// Changes held for the stream while Redis is out, before the node gives up on the list and
/// publishes its whole state instead (which covers them all).
pub const OUTBOX_MAX: usize = 100_000;

/// The fleet as this node sees it.
pub struct FleetLink {
    pub settings: policy::Fleet,
    /// Changes made here that the stream has not taken yet, oldest first.
    pub outbox: VecDeque<Stamped>,
    /// The next publication is this node's whole state: the outbox overflowed, or changes
    /// made before a restart may not have reached the stream, or Redis lost them.
    pub publish_state: bool,
    /// Unix seconds of the last round trip that worked.
    pub ok_at: u64,
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
    pub at: u64,
    pub position: String,
    pub visitors: u64,
    pub allow_rules: u64,
    pub deny_rules: u64,
    pub degraded: bool,
}

impl FleetLink {
    pub fn new(settings: policy::Fleet, state: &State, now: u64) -> Self {
        // Changes made and not known to be in the stream: the whole state goes out instead.
        let publish_state = state.fleet.made > state.fleet.published;
        Self {
            settings,
            outbox: VecDeque::new(),
            publish_state,
            ok_at: now,
            degraded: false,
            error: String::new(),
            published: 0,
            applied: 0,
            refused: BTreeMap::new(),
            nodes: Vec::new(),
            snapshot: None,
        }
    }

    fn shares(&self, op: &Op) -> bool {
        match op {
            Op::Visits(_)
            | Op::RemoveVisitors { .. }
            | Op::PutRules(_)
            | Op::RemoveRules { .. } => true,
            Op::SetMode(_) => !self.settings.local_mode,
            // The admission feed's entries reach every node from the feed itself.
            Op::Admit { feed, .. } => feed.is_none(),
            Op::Roll { .. } | Op::Fleet { .. } | Op::FleetCursor { .. } => false,
        }
    }

    pub fn refuse(&mut self, why: &Refused) {
        *self.refused.entry(why.reason()).or_default() += 1;
    }
}

/// What the next publication carries.
pub enum Outgoing {
    Changes(Vec<Stamped>),
    /// The whole state (encoded), and how many changes made here it covers.
    State(Vec<u8>),
}

impl Core {
    /// A change made here, as the store logs it: stamped for the fleet when it is shared.
    pub(super) fn stamp_for_fleet(&mut self, op: Op) -> Op {
        let Some(link) = &self.fleet else { return op };
        if !link.shares(&op) {
            return op;
        }
        let node = link.settings.node.clone();
        let stamp = self.state.fleet.next_stamp(self.now_ms(), &node);
        Op::Fleet { changes: vec![Stamped { stamp, op }], position: None }
    }

    /// After a stamped change made here is stored: the stream's turn.
    pub(super) fn queue_for_fleet(&mut self, op: &Op) {
        let (Some(link), Op::Fleet { changes, position: None }) = (&mut self.fleet, op) else {
            return;
        };
        if link.outbox.len() + changes.len() > OUTBOX_MAX {
            if !link.publish_state {
                warn!("fleet: over {OUTBOX_MAX} changes wait for Redis; the whole state goes out when it is back");
            }
            link.outbox.clear();
            link.publish_state = true;
            return;
        }
        if !link.publish_state {
            link.outbox.extend(changes.iter().cloned());
        }
    }

    /// Milliseconds since the epoch on the daemon's clock (its day, the system's time of day).
    pub(super) fn now_ms(&self) -> u64 {
        let sub_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_millis()));
        self.now() * 1000 + sub_ms
    }

    /// The next publication, taken out of the outbox (`max` changes at most). Nothing is
    /// marked published until [`Core::fleet_published`].
    pub fn fleet_outgoing(&mut self, max: usize) -> Option<(Outgoing, u64)> {
        let link = self.fleet.as_mut()?;
        if link.publish_state {
            link.publish_state = false;
            link.outbox.clear();
            return Some((
                Outgoing::State(crate::store::encode_state(&self.state)),
                self.state.fleet.made,
            ));
        }
        if link.outbox.is_empty() {
            return None;
        }
        let n = link.outbox.len().min(max);
        let changes: Vec<Stamped> = link.outbox.drain(..n).collect();
        let through = self.state.fleet.made - link.outbox.len() as u64;
        Some((Outgoing::Changes(changes), through))
    }

    /// A publication did not reach the stream: it goes out again, first.
    pub fn fleet_unsent(&mut self, outgoing: Outgoing) {
        let Some(link) = self.fleet.as_mut() else { return };
        match outgoing {
            Outgoing::State(_) => link.publish_state = true,
            Outgoing::Changes(changes) if !link.publish_state => {
                for change in changes.into_iter().rev() {
                    link.outbox.push_front(change);
                }
            }
            Outgoing::Changes(_) => {}
        }
    }

    /// The stream took the changes made here through the `through`th: logged, so a restart
    /// knows whether anything is still to publish.
    pub fn fleet_published(&mut self, through: u64) -> Result<(), Fault> {
        if let Some(link) = self.fleet.as_mut() {
            link.published += 1;
        }
        if through <= self.state.fleet.published {
            return Ok(());
        }
        let fleet = &self.state.fleet;
        let op = Op::FleetCursor {
            epoch: fleet.epoch.clone(),
            position: fleet.position.clone(),
            published: through,
        };
        self.store.append(&op).map_err(Fault::store)?;
        self.state.apply(&op);
        Ok(())
    }

    /// The fleet's Redis names its life `epoch`. A node that knew another one (Redis came
    /// back empty) or none (it is new here, with state of its own) publishes its whole state,
    /// and reads the stream from its start. Returns the position to read from.
    pub fn fleet_epoch(&mut self, epoch: &str) -> Result<Option<String>, Fault> {
        let fleet = &self.state.fleet;
        if fleet.epoch.as_deref() == Some(epoch) {
            return Ok(fleet.position.clone());
        }
        let link = self.fleet.as_mut().expect("the fleet task runs with [fleet]");
        match &fleet.epoch {
            Some(old) => warn!(
                old,
                new = epoch,
                "fleet: Redis lost the fleet's data; re-seeding it with this node's state"
            ),
            None => info!(epoch, "fleet: joining"),
        }
        if fleet.epoch.is_some() || !self.state.history.is_empty() || !self.state.rules.is_empty() {
            link.publish_state = true;
            link.outbox.clear();
        }
        let op = Op::FleetCursor {
            epoch: Some(epoch.to_string()),
            position: None,
            published: fleet.published,
        };
        self.store.append(&op).map_err(Fault::store)?;
        self.state.apply(&op);
        Ok(None)
    }

    /// Changes other nodes made, read from the stream through `position`: each validated as
    /// a local change would be (one that cannot be taken is refused and counted), then stored
    /// with the position in one record, applied and mirrored.
    pub fn fleet_apply(&mut self, changes: Vec<Stamped>, position: String) -> Result<(), Fault> {
        let Some(link) = self.fleet.as_ref() else { return Ok(()) };
        let local_mode = link.settings.local_mode;
        let mut taken = Vec::with_capacity(changes.len());
        for change in changes {
            if local_mode && matches!(change.op, Op::SetMode(_)) {
                continue;
            }
            match self.validate_remote(&change.op) {
                Ok(()) => taken.push(change),
                Err(why) => {
                    warn!(node = %change.stamp.node, "fleet: refused a change: {why}");
                    self.fleet.as_mut().expect("checked").refuse(&Refused::Malformed(why));
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

    /// A change from another node: what this node's maps and store can take. Removals of what
    /// is not here are no error (the fleet's order is not this node's).
    fn validate_remote(&self, op: &Op) -> Result<(), String> {
        match op {
            Op::Visits(batches) => {
                // A node whose clock is a little ahead may record tomorrow before we roll.
                let tomorrow = self.today().plus(1);
                if let Some(batch) = batches.iter().find(|b| Day(b.day) > tomorrow) {
                    return Err(format!("a visit on {}, after tomorrow", Day(batch.day)));
                }
                let v6 = batches.iter().flat_map(|b| b.v6.iter().copied());
                self.check_v6_visitors(v6).map_err(|f| f.to_string())
            }
            Op::PutRules(rules) => self.check_rule_capacity(rules).map_err(|f| f.to_string()),
            Op::Admit { entries, .. } => {
                self.check_admission_capacity(entries).map_err(|f| f.to_string())
            }
            Op::RemoveVisitors { .. } | Op::RemoveRules { .. } | Op::SetMode(_) => Ok(()),
            Op::Roll { .. } | Op::Fleet { .. } | Op::FleetCursor { .. } => {
                Err("not a change the fleet carries".into())
            }
        }
    }

    /// Stores, applies and mirrors a stamped record (made here or read from the stream).
    pub(super) fn change_stamped(&mut self, op: Op) -> Result<Departed, Fault> {
        self.store.append(&op).map_err(Fault::store)?;
        let Op::Fleet { changes, position } = &op else { unreachable!("a stamped record") };
        let applied = self.state.apply_stamped(changes);
        if position.is_none() {
            self.state.fleet.made += changes.len() as u64;
        } else {
            self.state.fleet.position.clone_from(position);
        }
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

    /// Another node's whole state (the fleet's snapshot through stream entry `covers`, or a
    /// `state` entry): joined under the merge rules, written as this node's snapshot (the log
    /// does not hold whole states), and mirrored whole.
    pub fn fleet_join(&mut self, other: &State, covers: Option<String>) -> Result<(), Fault> {
        let share_mode = self.fleet.as_ref().is_some_and(|l| !l.settings.local_mode);
        let mut joined = self.state.clone();
        joined.join(other, share_mode);
        if let Some(covers) = covers {
            joined.fleet.position = Some(covers);
        }
        self.store.compact(&joined).map_err(Fault::store)?;
        self.state = joined;
        self.mirror(Mirror::Everything)
    }

    /// Redis answered (`Ok`) or failed. Past `degraded_after_s` the fleet is degraded: said
    /// once in the log, in status, health and metrics; enforcement goes on from the store.
    pub fn fleet_report(&mut self, result: Result<(), String>) {
        let now = self.now();
        let Some(link) = self.fleet.as_mut() else { return };
        match result {
            Ok(()) => {
                link.ok_at = now;
                link.error.clear();
                if link.degraded {
                    link.degraded = false;
                    info!("fleet: Redis is back; publishing what was learned meanwhile");
                }
            }
            Err(error) => {
                link.error = error;
                let down = now.saturating_sub(link.ok_at);
                if !link.degraded && down >= u64::from(link.settings.degraded_after_s) {
                    link.degraded = true;
                    warn!(
                        redis = %link.settings.redis_url_redacted(),
                        "fleet: degraded: {} (for {down} s); enforcing and learning locally",
                        link.error
                    );
                }
            }
        }
    }

    /// `fleet` in status: off, ok, or degraded and why.
    pub fn fleet_state(&self) -> String {
        match &self.fleet {
            None => "off".into(),
            Some(link) if !link.degraded => "ok".into(),
            Some(link) => format!(
                "degraded: {} unreachable since unix {} ({}); enforcing and learning locally",
                link.settings.redis_url_redacted(),
                link.ok_at,
                link.error
            ),
        }
    }

    /// What this node reports to the others.
    pub fn fleet_node_report(&self) -> NodeReport {
        let count = |list| self.state.rules(list).count() as u64;
        NodeReport {
            node: self.fleet.as_ref().map_or(String::new(), |l| l.settings.node.clone()),
            at: self.now(),
            position: self.state.fleet.position.clone().unwrap_or_default(),
            visitors: self.state.history.len(),
            allow_rules: count(List::Allow),
            deny_rules: count(List::Deny),
            degraded: self.fleet.as_ref().is_some_and(|l| l.degraded),
        }
    }

    /// `edge fleet status`: this node's view of the fleet.
    pub fn fleet_status(&self) -> Result<api::GetFleetStatusResponse, Fault> {
        let link = self.fleet.as_ref().ok_or_else(|| {
            Fault::FailedPrecondition(format!(
                "this node is in no fleet: {} has no [fleet] table",
                self.config_path.display()
            ))
        })?;
        let newest = link.nodes.iter().filter_map(|n| stream_id(&n.position)).max();
        let nodes = link
            .nodes
            .iter()
            .map(|n| api::FleetNode {
                node: n.node.clone(),
                last_contact: n.at,
                position: n.position.clone(),
                lag_ms: match (newest, stream_id(&n.position)) {
                    (Some(newest), Some(at)) => newest.0.saturating_sub(at.0),
                    (Some(newest), None) => newest.0,
                    _ => 0,
                },
                visitors: n.visitors,
                allow_rules: n.allow_rules,
                deny_rules: n.deny_rules,
                degraded: n.degraded,
            })
            .collect();
        let (covers, made_at, bytes) = link.snapshot.clone().unwrap_or_default();
        Ok(api::GetFleetStatusResponse {
            node: link.settings.node.clone(),
            stream: link.settings.stream.clone(),
            redis: link.settings.redis_url_redacted(),
            degraded: link.degraded,
            error: link.error.clone(),
            last_contact: link.ok_at,
            nodes,
            snapshot_covers: covers,
            snapshot_age_s: if made_at == 0 { 0 } else { self.now().saturating_sub(made_at) },
            snapshot_bytes: bytes,
            published: link.published,
            applied: link.applied,
            refused: link
                .refused
                .iter()
                .map(|(reason, count)| api::RejectionCount {
                    reason: (*reason).into(),
                    count: *count,
                })
                .collect(),
            unpublished: self.fleet_unpublished(),
        })
    }

    pub fn fleet_position(&self) -> Option<String> {
        self.state.fleet.position.clone()
    }

    pub fn fleet_unpublished(&self) -> u64 {
        self.state.fleet.made.saturating_sub(self.state.fleet.published)
    }
}
