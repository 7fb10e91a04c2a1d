//! The daemon's state and the one path every change takes.
//!
//! One `Core` owns the store, the state it recovered, the config file's policy and the kernel
//! maps every interface shares. The API, the admission feed, visitor learning and the periodic
//! jobs call it with the core locked, so changes are serialized. Every change is an [`Op`],
//! and [`Core::change`] is the only way one lands: validated against the state and the policy,
//! written to the store (fsync), applied to the state, then mirrored to the kernel by
//! [`Core::mirror`], which also fills the maps at start-up and after a reload. The verbs that
//! build operations live beside this file, one concern each (visitors, rules, admissions,
//! window, mode, reload, interfaces, jobs).
use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use edge_common::{keys::Addr, maps as names};
use ipnet::IpNet;
use tracing::error;

use super::{
    auto::{Phase, Watch},
    clock::Clock,
    endpoint::EndpointCounts,
    fault::Fault,
    feed_health::FeedHealth,
    fleet::FleetLink,
    interfaces::{Interface, Link},
    jobs::Jobs,
    tokens::Tokens,
    top::Top,
};
use crate::{
    filter::{kernel_config, Maps},
    history::{Departed, VisitorHistory},
    policy::{Policy, XdpModeSetting},
    store::{List, Op, Recovery, State, Store, StoredRule},
    ticket::Keyring,
    visitors::{admission_visitor, display_key, Day, VisitorKey},
    Error,
};

pub struct Core {
    pub config_path: PathBuf,
    /// The config file's policy; the effective one adds the API's mode and rules.
    pub policy: Policy,
    pub(super) store: Store,
    pub(super) state: State,
    pub(super) clock: Clock,
    pub interfaces: Vec<Interface>,
    /// The maps all interfaces share (one set), once the first interface is attached.
    pub(super) maps: Option<Maps>,
    pub(super) xdp_mode: XdpModeSetting,
    /// The ticket key ring and the modification time it was read at.
    pub(super) keys: Option<(Keyring, Option<SystemTime>)>,
    /// The token verifiers and their counts, shared with the API, the feed and the endpoint.
    pub tokens: Arc<Tokens>,
    /// The admission endpoint's answers by outcome (daemon/endpoint.rs).
    pub endpoint: Arc<EndpointCounts>,
    /// When expired admissions were last purged (unix seconds).
    pub(super) purged_at: u64,
    /// The admission feed's health.
    pub feed: FeedHealth,
    /// The unknown-source rate, and under `mode = "auto"` the phase it has put the kernel in.
    pub auto: Watch,
    /// Sampled drops of the last seconds (filled by the ring reader), for `edge top`.
    pub top: Arc<Mutex<Top>>,
    /// Visitors recorded from completed handshakes since start.
    pub learned: u64,
    /// The periodic jobs and whether each is failing.
    pub jobs: Jobs,
    /// The clock's day while the window is held back from it (the clock jumped forward by more
    /// than `window.max_jump_days`); `None` while the window follows the clock.
    pub window_hold: Option<Day>,
    /// A change reached the store but not the kernel maps: the next tick rebuilds them.
    pub(super) needs_reconcile: bool,
    /// `[fleet]`: this node's side of the fleet.
    pub fleet: Option<FleetLink>,
}

/// Where a change comes from. The API answers UNAVAILABLE until every interface is attached
/// (its contract); the daemon's own jobs apply regardless, and the maps catch up when an
/// interface comes up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Api,
    Daemon,
}

/// What the kernel maps must follow.
pub enum Mirror<'a> {
    /// One change just applied to the state, with the visitors it took out of the history.
    Change(&'a Op, &'a Departed),
    /// The config record only: the auto phase or the outage budget moved.
    Config,
    /// Everything: the maps made to hold exactly the state under the effective policy
    /// (start-up, a running filter adopted, a reload, a reconcile after a failed mirror).
    Everything,
}

impl Core {
    pub fn open(
        config_path: &Path,
        policy: Policy,
        clock: Clock,
    ) -> anyhow::Result<(Self, Recovery)> {
        let settings = policy.daemon.clone().expect("the daemon config has a [daemon] table");
        let (store, state, recovery) = Store::open(&settings.state_dir)?;
        let keys = match &policy.admission.keys {
            Some(path) => Some((Keyring::load(path)?, super::admissions::modified(path))),
            None => None,
        };
        let fleet = match &policy.fleet {
            Some(settings) => {
                // Read here so a missing or exposed key refuses the start; the fleet task
                // reads it again when it changes.
                Keyring::load(&settings.key_file)
                    .map_err(|e| anyhow::anyhow!("fleet.key_file: {e}"))?;
                Some(FleetLink::new(settings.clone(), &state, clock.now()))
            }
            None => None,
        };
        let interfaces = settings.interfaces.iter().map(|name| Interface::new(name)).collect();
        let policy_admission = policy.admission.clone();
        let mut core = Self {
            config_path: config_path.to_path_buf(),
            policy,
            store,
            state,
            clock: clock.clone(),
            interfaces,
            maps: None,
            xdp_mode: settings.xdp_mode,
            keys,
            tokens: Arc::new(Tokens::load(&policy_admission, &settings.state_dir)?),
            endpoint: Arc::default(),
            purged_at: 0,
            feed: FeedHealth::new(clock.now()),
            auto: Watch::new(Phase::Calm, clock.now()),
            top: Default::default(),
            learned: 0,
            jobs: Jobs::default(),
            window_hold: None,
            needs_reconcile: false,
            fleet,
        };
        let rolled = core.roll_window(false);
        core.jobs.report("window_roll", rolled, core.clock.now());
        core.resume_auto();
        Ok((core, recovery))
    }

    /// The daemon's UTC day: the clock's, or while the window is held the day it holds at.
    pub fn today(&self) -> Day {
        match self.window_hold {
            Some(clock) => self.reference_day().unwrap_or(clock),
            None => self.clock.today(),
        }
    }

    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn history(&self) -> &VisitorHistory {
        &self.state.history
    }

    pub fn wal_bytes(&self) -> u64 {
        self.store.wal_bytes()
    }

    pub fn state_dir(&self) -> &Path {
        self.store.dir()
    }

    /// The policy the kernel runs: the config file's, with the mode and rules set through the
    /// API (a prefix on both lists of a kind is one entry), and the outage budget while the
    /// admission feed is degraded.
    pub fn effective_policy(&self) -> Policy {
        let mut policy =
            if self.feed.degraded { self.policy.during_outage() } else { self.policy.clone() };
        policy.mode = self.kernel_mode();
        let mut seen: [HashSet<IpNet>; 2] =
            [policy.allow.iter().copied().collect(), policy.deny.iter().copied().collect()];
        for rule in self.state.rules.values() {
            let (list, seen) = match rule.list {
                List::Allow => (&mut policy.allow, &mut seen[0]),
                List::Deny => (&mut policy.deny, &mut seen[1]),
            };
            if seen.insert(rule.net) {
                list.push(rule.net);
            }
        }
        policy
    }

    /// The config file's list of a kind.
    pub(super) fn config_list(&self, list: List) -> &[IpNet] {
        match list {
            List::Allow => &self.policy.allow,
            List::Deny => &self.policy.deny,
        }
    }

    /// Every change needs every interface: the API refuses one until all are attached.
    pub(super) fn require_ready(&self) -> Result<(), Fault> {
        match self.interfaces.iter().find_map(|i| match &i.link {
            Link::Waiting(why) => Some((i.name.as_str(), why.as_str())),
            Link::Attached { .. } => None,
        }) {
            Some((name, why)) => Err(Fault::Unavailable(format!(
                "the filter is not attached to {name} yet ({why}); nothing was changed"
            ))),
            None => Ok(()),
        }
    }

    /// The one path for a change: validate, commit to the store, apply to the state, mirror
    /// to the kernel. Returns the visitors it took out of the history.
    pub fn change(&mut self, op: Op, origin: Origin) -> Result<Departed, Fault> {
        if origin == Origin::Api {
            self.require_ready()?;
        }
        self.validate(&op)?;
        let op = self.stamp_for_fleet(op, origin);
        if matches!(op, Op::Fleet { .. }) {
            return self.change_stamped(op);
        }
        self.store.append(&op).map_err(Fault::store)?;
        let departed = self.state.apply(&op);
        if let Err(e) = self.mirror(Mirror::Change(&op, &departed)) {
            // Stored and in force for the daemon; the kernel catches up on the next tick.
            error!("a stored change did not reach the kernel maps: {e}; rebuilding them");
            return Err(Fault::Internal(format!(
                "the change is stored but the kernel maps could not follow ({e}); the daemon \
                 rebuilds them from the store"
            )));
        }
        Ok(departed)
    }

    /// Refuses a change the state or the maps cannot take, before anything is written.
    fn validate(&self, op: &Op) -> Result<(), Fault> {
        match op {
            Op::Visits(batches) => {
                let today = self.today();
                if let Some(batch) = batches.iter().find(|b| Day(b.day) > today) {
                    return Err(Fault::InvalidArgument(format!(
                        "a visit on {} is after today ({today}, UTC)",
                        Day(batch.day)
                    )));
                }
                self.check_v6_visitors(batches.iter().flat_map(|b| b.v6.iter().copied()))
            }
            Op::RemoveVisitors { v4, v6 } => {
                let keys = v4.iter().map(|a| VisitorKey::V4((*a).into()));
                let keys = keys.chain(v6.iter().map(|p| VisitorKey::V6(p.to_be_bytes())));
                for key in keys {
                    if !self.state.history.contains(key) {
                        return Err(Fault::NotFound(format!(
                            "{} is not a visitor",
                            display_key(key)
                        )));
                    }
                }
                Ok(())
            }
            Op::PutRules(rules) => {
                for rule in rules {
                    if self.config_list(rule.list).contains(&rule.net) {
                        return Err(Fault::FailedPrecondition(format!(
                            "{} is on the {} list of the config file {}; change it there",
                            rule.net,
                            rule.list.name(),
                            self.config_path.display()
                        )));
                    }
                }
                self.check_rule_capacity(rules)
            }
            Op::RemoveRules { list, nets } => {
                for net in nets {
                    if self.state.rules.contains_key(&(*list, *net)) {
                        continue;
                    }
                    return Err(if self.config_list(*list).contains(net) {
                        Fault::FailedPrecondition(format!(
                            "{net} is on the {} list of the config file {}; remove it there",
                            list.name(),
                            self.config_path.display()
                        ))
                    } else {
                        Fault::NotFound(format!("{net} is not on the {} list", list.name()))
                    });
                }
                Ok(())
            }
            Op::Admit { entries, .. } | Op::Redeem { entries, .. } => {
                self.check_admission_capacity(entries)
            }
            Op::SetMode(_) | Op::Roll { .. } => Ok(()),
            Op::Fleet { .. } | Op::FleetCursor(_) => {
                Err(Fault::Internal("a fleet record is not a change to validate".into()))
            }
        }
    }

    /// Refuses rules that would not fit their maps with those in force.
    fn check_rule_capacity(&self, rules: &[StoredRule]) -> Result<(), Fault> {
        let policy = self.effective_policy();
        for (list, held, capacity) in [
            (List::Allow, &policy.allow, names::ALLOW_CAPACITY),
            (List::Deny, &policy.deny, names::DENY_CAPACITY),
        ] {
            let held: HashSet<&IpNet> = held.iter().collect();
            let new: HashSet<&IpNet> = rules
                .iter()
                .filter(|r| r.list == list && !held.contains(&r.net))
                .map(|r| &r.net)
                .collect();
            check_capacity(list.name(), capacity, held.len() + new.len())?;
        }
        Ok(())
    }

    /// Refuses admissions that would not fit the admitted map, or (as today's visitors) the
    /// IPv6 visitor map.
    fn check_admission_capacity(&self, entries: &[(Addr, u64)]) -> Result<(), Fault> {
        let new = entries.iter().filter(|(k, _)| !self.state.admissions.contains_key(k));
        let wanted = self.state.admissions.len() + new.count();
        check_capacity(names::ADMITTED, names::ADMITTED_CAPACITY, wanted)?;
        self.check_v6_visitors(entries.iter().filter_map(|(key, _)| match admission_visitor(key) {
            VisitorKey::V6(prefix) => Some(u64::from_be_bytes(prefix)),
            VisitorKey::V4(_) => None,
        }))
    }

    /// Refuses IPv6 visitor prefixes that would not fit the kernel's map with those it holds.
    fn check_v6_visitors(&self, prefixes: impl Iterator<Item = u64>) -> Result<(), Fault> {
        let known = self.state.history.v6.all();
        let new: HashSet<u64> = prefixes.filter(|p| !known.contains(*p)).collect();
        let wanted = known.len() as usize + new.len();
        check_capacity(names::VISITORS_V6, names::VISITORS_V6_CAPACITY, wanted)
    }

    /// Makes the kernel maps follow the state: one change, the config record, or everything.
    /// Without maps yet (no interface attached) there is nothing to follow: the first attach
    /// fills them with everything. Whatever fails here leaves maps that may be half-written,
    /// whoever the caller: the reconcile job rebuilds them all from the state until it works.
    pub(super) fn mirror(&mut self, what: Mirror) -> Result<(), Fault> {
        let mirrored = self.mirror_once(what);
        if mirrored.is_err() {
            self.needs_reconcile = true;
        }
        mirrored
    }

    fn mirror_once(&mut self, what: Mirror) -> Result<(), Fault> {
        if self.maps.is_none() {
            return Ok(());
        }
        match what {
            Mirror::Everything => {
                let mut policy = self.effective_policy();
                if !host_ready_for(&kernel_config(&policy)) {
                    policy.syn_cookies.mode = crate::policy::SynCookieMode::Off;
                }
                let (today, now) = (self.today(), self.now());
                let ring = self.keys.as_ref().map(|(ring, _)| ring.clone());
                let maps = self.maps.as_mut().expect("checked above");
                maps.apply(&policy, &self.state.history, today)?;
                maps.set_ticket_keys(ring.as_ref())?;
                // Admissions the store holds; knocks the kernel verified itself stay as they are.
                for (key, until) in self.state.admissions.iter().filter(|(_, until)| **until > now)
                {
                    maps.admit_key(*key, *until)?;
                }
                maps.rebuild_admitted_hint()?;
                self.needs_reconcile = false;
                put_host_back_unless(&kernel_config(&policy));
            }
            Mirror::Config => {
                let mut config = kernel_config(&self.effective_policy());
                if !host_ready_for(&config) {
                    config.syn_cookies = edge_common::config::SYN_COOKIES_OFF;
                }
                self.maps.as_mut().expect("checked above").set_config(config)?;
                put_host_back_unless(&config);
            }
            Mirror::Change(op, departed) => self.mirror_change(op, departed)?,
        }
        Ok(())
    }

    fn mirror_change(&mut self, op: &Op, departed: &Departed) -> Result<(), Fault> {
        let history = &self.state.history;
        let today = self.today();
        let day_of = |prefix: u64| history.v6.last_seen(prefix).unwrap_or(today);
        match op {
            Op::Visits(batches) => {
                let v4 = batches.iter().flat_map(|b| b.v4.iter().copied());
                let v6: Vec<(u64, Day)> =
                    batches.iter().flat_map(|b| b.v6.iter()).map(|p| (*p, day_of(*p))).collect();
                let maps = self.maps.as_mut().expect("mirror checked");
                maps.insert_visitors(v4, v6)?;
            }
            Op::RemoveVisitors { .. } | Op::Roll { .. } => {
                let maps = self.maps.as_mut().expect("mirror checked");
                maps.remove_visitors(departed.v4.iter(), departed.v6.iter())?;
            }
            Op::PutRules(rules) => {
                let maps = self.maps.as_mut().expect("mirror checked");
                for list in [List::Allow, List::Deny] {
                    let nets: Vec<IpNet> =
                        rules.iter().filter(|r| r.list == list).map(|r| r.net).collect();
                    if !nets.is_empty() {
                        maps.insert_rules(list, &nets)?;
                    }
                }
            }
            Op::RemoveRules { list, nets } => {
                // A prefix the config file lists too stays in the kernel: it is still on the list.
                let config = self.config_list(*list);
                let gone: Vec<IpNet> =
                    nets.iter().filter(|n| !config.contains(n)).copied().collect();
                self.maps.as_mut().expect("mirror checked").remove_rules(*list, &gone)?;
            }
            Op::SetMode(_) => self.mirror(Mirror::Config)?,
            // Fleet records are mirrored change by change (`change_stamped`).
            Op::Fleet { .. } | Op::FleetCursor(_) => {}
            Op::Admit { entries, .. } | Op::Redeem { entries, .. } => {
                let mut v4 = Vec::new();
                let mut v6 = Vec::new();
                for (key, _) in entries {
                    match admission_visitor(key) {
                        VisitorKey::V4(addr) => v4.push(u32::from(addr)),
                        VisitorKey::V6(prefix) => {
                            let prefix = u64::from_be_bytes(prefix);
                            v6.push((prefix, day_of(prefix)));
                        }
                    }
                }
                let maps = self.maps.as_mut().expect("mirror checked");
                for (key, until) in entries {
                    maps.admit_key(*key, *until)?;
                }
                // Admitted sources are today's visitors (the record stored them as such).
                maps.insert_visitors(v4, v6)?;
            }
        }
        Ok(())
    }
}

pub(super) fn check_capacity(map: &'static str, capacity: u32, wanted: usize) -> Result<(), Fault> {
    if wanted > capacity as usize {
        return Err(Fault::from(Error::MapFull { map, capacity, wanted }));
    }
    Ok(())
}

/// Before a record that answers SYNs is written: sets the host up for the program's cookies
/// (docs/syn-cookies.md). `false` if that failed (logged): the record must then leave SYNs to
/// the kernel, or the program would make cookies the host's sysctls do not back.
fn host_ready_for(config: &edge_common::config::Config) -> bool {
    if !config.answers_syns() {
        return true;
    }
    match crate::syncookies::Host::current().and_then(|host| host.turn_on()) {
        Ok(()) => true,
        Err(e) => {
            error!(error = %e, "syn_cookies: setting up the host failed; SYNs are left to the kernel");
            false
        }
    }
}

/// After a record that answers no SYNs is written (the program has stopped making cookies):
/// puts the host's sysctls back if they were set up.
fn put_host_back_unless(config: &edge_common::config::Config) {
    if config.answers_syns() {
        return;
    }
    let done = crate::syncookies::Host::current().and_then(|host| {
        if host.is_on() {
            host.turn_off()
        } else {
            Ok(())
        }
    });
    if let Err(e) = done {
        error!(error = %e, "syn_cookies: putting the host's sysctls back");
    }
}
