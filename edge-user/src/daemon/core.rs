//! The daemon's state and the verbs that change it. One `Core` owns the store, the desired
//! state it recovered, and the kernel maps of every interface; the API calls these verbs with
//! the core locked, so changes are serialized. Each change is validated first, written to the
//! store (fsync) second, and put in the kernel maps third; the caller answers after all three.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};
use tracing::{error, info, warn};

use aya::programs::XdpMode;
use edge_common::maps as names;
use edge_common::{keys::Addr, ticket::TicketBytes};
use ipnet::IpNet;

use super::{
    auto::{Phase, Watch},
    clock::Clock,
    Fault,
};
use crate::{
    filter::{admission_key, kernel_config, pin_dir, Counters, Maps},
    history::{Expired, HistoryBuilder, VisitorHistory},
    policy::{Mode, Policy, XdpModeSetting},
    stats::Stats,
    store::{admission_visitor, List, Op, Recovery, State, Store, StoredRule},
    ticket::{self, Keyring},
    visitors::{Day, VisitorKey},
    Error,
};

/// Compact the log into a snapshot once it holds this much.
const COMPACT_AT_BYTES: u64 = 256 << 20;

pub struct Core {
    pub config_path: PathBuf,
    /// The config file's policy; the effective one adds the API's mode and rules.
    pub policy: Policy,
    store: Store,
    state: State,
    clock: Clock,
    rolled_to: Day,
    pub interfaces: Vec<Interface>,
    /// The maps all interfaces share (one set), once the first interface is attached.
    maps: Option<Maps>,
    xdp_mode: XdpModeSetting,
    /// The ticket key ring and the modification time it was read at.
    keys: Option<(Keyring, Option<std::time::SystemTime>)>,
    /// Tickets refused since start, by reason (`Rejected::reason`), and verified.
    pub rejections: std::collections::BTreeMap<&'static str, u64>,
    pub verified: u64,
    /// When expired admissions were last purged (unix seconds).
    purged_at: u64,
    /// The admission feed: when it last answered (unix seconds) and whether it is past its grace.
    feed_ok_at: u64,
    feed_degraded: bool,
    /// Age in seconds of the newest feed entry when it was applied.
    feed_lag_s: f64,
    /// The unknown-source rate, and under `mode = "auto"` the phase it has put the kernel in.
    pub auto: Watch,
    /// Sampled drops of the last seconds (filled by the ring reader), for `edge top`.
    pub top: std::sync::Arc<std::sync::Mutex<super::events::Top>>,
    /// Visitors recorded from completed handshakes since start.
    pub learned: u64,
}

/// Expired admissions are purged from the store's state and the kernel maps this often.
const PURGE_EVERY_S: u64 = 60;

pub struct Interface {
    pub name: String,
    pub link: Link,
}

pub enum Link {
    Waiting(String),
    /// `adopted`: the program replaced one an earlier run left running (hitless restart).
    Attached {
        counters: Counters,
        adopted: bool,
    },
}

impl Interface {
    /// Not attached, and why; logged when the reason changes.
    fn wait(&mut self, why: &str) {
        let previous = match &self.link {
            Link::Waiting(previous) => previous.as_str(),
            Link::Attached { .. } => "",
        };
        if previous != why {
            warn!(iface = %self.name, "waiting: {why}");
        }
        self.link = Link::Waiting(why.to_string());
    }
}

pub struct FeedTiming {
    pub last_contact: u64,
    pub lag_s: f64,
}

/// Counts of a change to the visitors.
#[derive(Clone, Copy, Debug, Default)]
pub struct Recorded {
    pub recorded: u64,
    pub outside_window: u64,
}

/// A rule as listed: from the config file or from the API.
pub struct ListedRule {
    pub rule: StoredRule,
    pub from_config: bool,
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
            Some(path) => Some((Keyring::load(path)?, modified(path))),
            None => None,
        };
        let interfaces = settings
            .interfaces
            .iter()
            .map(|name| Interface { name: name.clone(), link: Link::Waiting("starting".into()) })
            .collect();
        let mut core = Self {
            config_path: config_path.to_path_buf(),
            policy,
            store,
            state,
            rolled_to: Day(0),
            clock: clock.clone(),
            interfaces,
            maps: None,
            xdp_mode: settings.xdp_mode,
            keys,
            rejections: Default::default(),
            verified: 0,
            purged_at: 0,
            feed_ok_at: clock.now(),
            feed_degraded: false,
            feed_lag_s: 0.0,
            auto: Watch::new(Phase::Calm, clock.now()),
            top: Default::default(),
            learned: 0,
        };
        core.roll();
        core.resume_auto();
        Ok((core, recovery))
    }

    pub fn today(&self) -> Day {
        self.clock.today()
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

    pub fn rolled_to(&self) -> Day {
        self.rolled_to
    }

    pub fn wal_bytes(&self) -> u64 {
        self.store.wal_bytes()
    }

    pub fn state_dir(&self) -> &Path {
        self.store.dir()
    }

    pub fn ready(&self) -> bool {
        self.interfaces.iter().all(|i| matches!(i.link, Link::Attached { .. }))
    }

    /// The mode asked for (config or API); `auto` included.
    pub fn mode(&self) -> Mode {
        self.state.mode.unwrap_or(self.policy.mode)
    }

    /// The mode the kernel runs: `auto` resolved to its current phase.
    pub fn kernel_mode(&self) -> Mode {
        match (self.mode(), self.auto.phase) {
            (Mode::Auto, Phase::Attack) => Mode::Enforce,
            (Mode::Auto, Phase::Calm) => Mode::Monitor,
            (mode, _) => mode,
        }
    }

    /// Under `auto`, a daemon restarted during an attack keeps enforcing: if a pinned filter
    /// was enforcing, the phase starts as attack (a restart never opens the gates).
    fn resume_auto(&mut self) {
        if self.mode() != Mode::Auto {
            return;
        }
        let enforcing = self
            .interfaces
            .iter()
            .any(|i| crate::filter::pinned_mode(&i.name).is_ok_and(|m| m == Mode::Enforce));
        if enforcing {
            self.auto.phase = Phase::Attack;
            warn!("auto: the filter was enforcing when the daemon stopped; resuming in enforce");
        }
    }

    /// Measures the unknown-source rate; under `auto`, switches the kernel's mode when the
    /// hysteresis says so.
    fn watch_unknown(&mut self) {
        let Ok(stats) = self.stats("") else { return };
        let auto = (self.mode() == Mode::Auto).then_some(self.policy.auto);
        let switched = self.auto.observe(
            auto.as_ref(),
            stats.unknown_packets(),
            std::time::Instant::now(),
            self.clock.now(),
        );
        if let (Some(phase), Some(cfg)) = (switched, auto) {
            let pps = self.auto.unknown_pps.round();
            match phase {
                Phase::Attack => warn!(
                    unknown_pps = pps,
                    enter_pps = cfg.enter_pps,
                    sustain_s = cfg.sustain_s,
                    "auto: unknown sources flood; switching to enforce"
                ),
                Phase::Calm => info!(
                    unknown_pps = pps,
                    exit_pps = cfg.exit_pps,
                    cool_down_s = cfg.cool_down_s,
                    "auto: calm again; switching back to monitor"
                ),
            }
            if let Err(e) = self.write_config() {
                error!("auto: writing the mode to the kernel: {e}");
            }
        }
    }

    /// The policy the kernel runs: the config file's, with the mode and rules set through the
    /// API.
    pub fn effective_policy(&self) -> Policy {
        let mut policy =
            if self.feed_degraded { self.policy.during_outage() } else { self.policy.clone() };
        policy.mode = self.kernel_mode();
        for rule in self.state.rules.values() {
            match rule.list {
                List::Allow => policy.allow.push(rule.net),
                List::Deny => policy.deny.push(rule.net),
            }
        }
        policy
    }

    /// The maps every interface shares, once made.
    fn attached(&mut self) -> impl Iterator<Item = &mut Maps> {
        self.maps.iter_mut()
    }

    /// Every change needs every interface: a change applied to some would leave them
    /// disagreeing, so it is refused until all are attached.
    fn require_ready(&self) -> Result<(), Fault> {
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

    /// Attaches, or adopts the pins an earlier run left, on every interface still waiting.
    /// Logs the interfaces whose state changed.
    pub fn bring_up(&mut self) {
        let policy = self.effective_policy();
        let today = self.today();
        let mode = match self.xdp_mode {
            XdpModeSetting::Auto => XdpMode::Default,
            XdpModeSetting::Native => XdpMode::Driver,
            XdpModeSetting::Skb => XdpMode::Skb,
        };
        let keys = self.keys.as_ref().map(|(ring, _)| ring);
        if self.ready() {
            return;
        }
        if self.maps.is_none() {
            let names = self.interfaces.iter().map(|i| i.name.as_str());
            match shared_maps(names, &policy, &self.state, today, keys, self.clock.now()) {
                Ok(maps) => self.maps = Some(maps),
                Err(e) => {
                    let why = e.to_string();
                    for iface in &mut self.interfaces {
                        iface.wait(&why);
                    }
                    return;
                }
            }
        }
        let maps = self.maps.as_ref().expect("made above");
        for iface in &mut self.interfaces {
            if !matches!(iface.link, Link::Waiting(_)) {
                continue;
            }
            match crate::filter::attach_shared(maps, &iface.name, mode) {
                Ok((counters, adopted)) => {
                    let what = if adopted {
                        "replaced the running program in its pinned link (no detach)"
                    } else {
                        "attached"
                    };
                    info!(iface = %iface.name, adopted, "{what}");
                    iface.link = Link::Attached { counters, adopted };
                }
                Err(e) => iface.wait(&e.to_string()),
            }
        }
    }

    /// Drops expired admissions from the state (derived from the clock, so not logged: a
    /// replay re-adds them and the next purge drops them again) and from the kernel maps.
    fn purge_admissions(&mut self) {
        let now = self.clock.now();
        if now < self.purged_at + PURGE_EVERY_S {
            return;
        }
        self.purged_at = now;
        let before = self.state.admissions.len();
        self.state.admissions.retain(|_, until| *until > now);
        let mut kernel = 0;
        for maps in self.attached() {
            match maps.purge_admissions(now).and_then(|n| {
                maps.rebuild_admitted_hint()?;
                Ok(n)
            }) {
                Ok(n) => kernel += n,
                Err(e) => return error!("purging expired admissions: {e}"),
            }
        }
        let stored = before - self.state.admissions.len();
        if stored + kernel as usize > 0 {
            info!(stored, kernel, "purged expired admissions");
        }
    }

    /// Reloads the key ring when its file changed (`edge key rotate`), into every filter. A
    /// bad file is logged and the keys in use are kept.
    fn reload_keys(&mut self) {
        let Some(path) = self.policy.admission.keys.clone() else { return };
        let Some((_, seen)) = self.keys.as_mut() else { return };
        let now = modified(&path);
        if now == *seen {
            return;
        }
        let ring = match Keyring::load(&path) {
            Ok(ring) => ring,
            Err(e) => {
                *seen = now;
                return error!("ticket keys not reloaded, the old ones stay: {e}");
            }
        };
        for maps in self.attached() {
            if let Err(e) = maps.set_ticket_keys(Some(&ring)) {
                return error!("writing the ticket keys: {e}");
            }
        }
        info!(
            file = %path.display(),
            current = ring.current().id,
            previous = ring.keys().get(1).map(|k| k.id),
            "ticket keys reloaded"
        );
        self.keys = Some((ring, now));
    }

    /// An interface whose link pin vanished was detached from outside (`edge detach`, or its
    /// pins removed): it is no longer filtered, so it goes back to waiting and is re-attached
    /// from the store like after a reboot. Stop the daemon first to take the filter off.
    fn notice_detached(&mut self) {
        for iface in &mut self.interfaces {
            if !matches!(iface.link, Link::Attached { .. }) {
                continue;
            }
            let pinned = pin_dir(&iface.name).is_ok_and(|dir| dir.join("link").exists());
            if !pinned {
                warn!(
                    iface = %iface.name,
                    "the filter was detached from outside the daemon; re-attaching \
                     (stop the daemon first to take it off)"
                );
                iface.link = Link::Waiting("detached from outside the daemon".into());
            } else if !crate::filter::pinned_link_live(&iface.name).unwrap_or(true) {
                // The kernel detached the link with the device: nothing filters this name.
                warn!(
                    iface = %iface.name,
                    "the interface was deleted or re-created and its XDP link went with it; \
                     re-attaching"
                );
                iface.link = Link::Waiting("the interface was deleted or re-created".into());
            }
        }
    }

    /// Moves the window to today: the days that left it are dropped, and the visitors seen
    /// only on them leave the kernel maps. Returns them.
    pub fn roll(&mut self) -> Option<Expired> {
        let today = self.today();
        if today <= self.rolled_to {
            return None;
        }
        let expired = self.state.history.roll(today, self.policy.window_days);
        self.rolled_to = today;
        Some(expired)
    }

    /// The periodic work: roll the window at a day boundary, expire rules, retry interfaces,
    /// compact the log.
    pub fn tick(&mut self) {
        if let Some(expired) = self.roll() {
            let n = expired.len();
            if let Err(e) = self.remove_from_kernel(&expired) {
                error!("day roll: {e}");
            }
            info!(today = %self.rolled_to, left = n, "rolled the window");
        }
        let now = self.now();
        for list in [List::Allow, List::Deny] {
            let nets: Vec<IpNet> = self
                .state
                .rules(list)
                .filter(|r| r.expires_at != 0 && r.expires_at <= now)
                .map(|r| r.net)
                .collect();
            if !nets.is_empty() {
                match self.remove_rules(list, &nets) {
                    Ok(n) => info!(list = list.name(), expired = n, "rules expired"),
                    Err(e) => error!("expiring {} rules: {e}", list.name()),
                }
            }
        }
        self.watch_unknown();
        self.purge_admissions();
        self.reload_keys();
        self.notice_detached();
        self.bring_up();
        if self.store.wal_bytes() > COMPACT_AT_BYTES {
            match self.compact() {
                Ok(()) => info!("compacted the log into a snapshot"),
                Err(e) => error!("compacting: {e}"),
            }
        }
    }

    pub fn compact(&mut self) -> Result<(), Fault> {
        self.store.compact(&self.state).map_err(Fault::store)
    }

    fn commit(&mut self, op: &Op) -> Result<(), Fault> {
        self.store.append(op).map_err(Fault::store)?;
        self.state.apply(op);
        Ok(())
    }

    /// Records visits (all or nothing). Days after today are the caller's to refuse.
    pub fn record(&mut self, visits: VisitorHistory) -> Result<Recorded, Fault> {
        self.require_ready()?;
        let today = self.today();
        let mut in_window = visits.clone();
        in_window.roll(today, self.policy.window_days);
        let counts = Recorded {
            recorded: count_visits(&in_window),
            outside_window: count_visits(&visits) - count_visits(&in_window),
        };
        // Capacity first: nothing is written if the IPv6 map cannot take the new prefixes.
        let known = self.state.history.v6.all();
        let new_v6 = in_window.v6.all().iter().filter(|k| !known.contains(*k)).count() as u64;
        let wanted = known.len() + new_v6;
        if wanted > u64::from(names::VISITORS_V6_CAPACITY) {
            return Err(Fault::from(Error::MapFull {
                map: names::VISITORS_V6,
                capacity: names::VISITORS_V6_CAPACITY,
                wanted: wanted as usize,
            }));
        }
        if in_window.is_empty() {
            return Ok(counts);
        }
        self.commit(&Op::visits(&in_window))?;
        self.visitors_to_kernel(&in_window)?;
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
            self.record(fresh.finish())?;
            self.learned += n;
        }
        Ok(n)
    }

    /// The first attached interface: where the shared maps' pins can be opened.
    pub fn first_attached(&self) -> Option<String> {
        self.interfaces
            .iter()
            .find(|i| matches!(i.link, Link::Attached { .. }))
            .map(|i| i.name.clone())
    }

    /// Puts visitors just committed into every filter's maps (IPv6 with its last-seen day).
    fn visitors_to_kernel(&mut self, visitors: &VisitorHistory) -> Result<(), Fault> {
        let today = self.today();
        let v4: Vec<u32> = visitors.v4.all().iter().collect();
        let v6: Vec<(u64, Day)> = visitors
            .v6
            .all()
            .iter()
            .map(|k| (k, self.state.history.v6.last_seen(k).unwrap_or(today)))
            .collect();
        for maps in self.attached() {
            maps.insert_visitors(v4.iter().copied(), v6.iter().copied()).map_err(Fault::from)?;
        }
        Ok(())
    }

    /// Verifies tickets and admits their sources (all or nothing). Refusals are counted by
    /// reason; the first one refuses the batch and changes nothing.
    pub fn admit(&mut self, tickets: &[(TicketBytes, Option<IpAddr>)]) -> Result<u64, Fault> {
        self.require_ready()?;
        let ring = self.ring()?;
        let mut entries = Vec::with_capacity(tickets.len());
        for (index, (ticket, presented)) in tickets.iter().enumerate() {
            let entry = self.verify(&ring, ticket, *presented);
            entries.push(entry.map_err(|refused| Fault::Refused { index, refused })?);
        }
        self.apply_admissions(entries, None)
    }

    /// Admissions read from the feed up to stream id `last`: each ticket is verified, refused
    /// ones are counted and skipped (the producer is not there to be told), and the position
    /// is stored in the same record as the admissions it covers.
    pub fn admit_from_feed(
        &mut self,
        tickets: &[(TicketBytes, Option<IpAddr>)],
        last: String,
    ) -> Result<u64, Fault> {
        self.require_ready()?;
        let ring = self.ring()?;
        let entries = tickets
            .iter()
            .filter_map(|(ticket, presented)| self.verify(&ring, ticket, *presented).ok())
            .collect();
        // Stream ids start with the milliseconds of the entry's append.
        if let Some(ms) = last.split('-').next().and_then(|ms| ms.parse::<u64>().ok()) {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            self.feed_lag_s = now_ms.saturating_sub(ms) as f64 / 1000.0;
        }
        self.apply_admissions(entries, Some(last))
    }

    /// A ticket's admission entry (key, admitted until), or why not (counted).
    fn verify(
        &mut self,
        ring: &Keyring,
        ticket: &TicketBytes,
        presented: Option<IpAddr>,
    ) -> Result<(Addr, u64), ticket::Rejected> {
        match ticket::verify(ticket, ring, self.clock.now(), presented) {
            Ok(admission) => {
                self.verified += 1;
                Ok((admission_key(admission.ip), admission.not_after + 1))
            }
            Err(refused) => {
                *self.rejections.entry(refused.reason()).or_default() += 1;
                Err(refused)
            }
        }
    }

    /// A malformed ticket refused before it reached the core.
    pub fn count_malformed(&mut self) {
        *self.rejections.entry("malformed").or_default() += 1;
    }

    fn ring(&self) -> Result<Keyring, Fault> {
        match &self.keys {
            Some((ring, _)) => Ok(ring.clone()),
            None => Err(Fault::FailedPrecondition(
                "no ticket keys: set admission.keys in the config file".into(),
            )),
        }
    }

    fn apply_admissions(
        &mut self,
        entries: Vec<(Addr, u64)>,
        feed: Option<String>,
    ) -> Result<u64, Fault> {
        let today = self.today();
        self.commit(&Op::Admit { day: today.0, entries: entries.clone(), feed })?;
        for maps in self.attached() {
            for (key, until) in &entries {
                maps.admit_key(*key, *until).map_err(Fault::from)?;
            }
        }
        // Admitted sources are today's visitors (the record above stored them as such).
        let mut visitors = HistoryBuilder::default();
        for (key, _) in &entries {
            visitors.push(admission_visitor(key), today);
        }
        self.visitors_to_kernel(&visitors.finish())?;
        Ok(entries.len() as u64)
    }

    pub fn feed_position(&self) -> Option<String> {
        self.state.feed_position.clone()
    }

    /// The feed answered (`ok`) or failed. Past the grace, the daemon is degraded: it says so
    /// and applies the outage policy (never fail-open); the first answer after ends it.
    pub fn feed_report(&mut self, ok: bool) {
        let Some(feed) = self.policy.admission.feed.clone() else { return };
        let now = self.clock.now();
        if ok {
            self.feed_ok_at = now;
            if self.feed_degraded {
                self.feed_degraded = false;
                let _ = self.write_config();
                info!("admission feed: recovered; normal budgets");
            }
            return;
        }
        if !self.feed_degraded
            && now.saturating_sub(self.feed_ok_at) >= u64::from(feed.outage_grace_s)
        {
            self.feed_degraded = true;
            let _ = self.write_config();
            warn!(
                redis = %feed.redis_url,
                grace_s = feed.outage_grace_s,
                on_outage = ?feed.on_outage,
                "admission feed: DEGRADED, unreachable past the grace; outage policy applies \
                 (visitors and admitted sources keep passing)"
            );
        }
    }

    /// When the feed last answered, and how late its newest entry was applied.
    pub fn feed_timing(&self) -> Option<FeedTiming> {
        self.policy
            .admission
            .feed
            .as_ref()
            .map(|_| FeedTiming { last_contact: self.feed_ok_at, lag_s: self.feed_lag_s })
    }

    /// "off", "ok", or "degraded: ...".
    pub fn feed_state(&self) -> String {
        match &self.policy.admission.feed {
            None => "off".into(),
            Some(_) if !self.feed_degraded => "ok".into(),
            Some(feed) => format!(
                "degraded: {} unreachable since unix {}; outage policy {:?}",
                feed.redis_url, self.feed_ok_at, feed.on_outage
            ),
        }
    }

    pub fn feed_degraded(&self) -> bool {
        self.feed_degraded
    }

    /// Admissions held that have not expired.
    pub fn admissions(&self) -> u64 {
        let now = self.clock.now();
        self.state.admissions.values().filter(|until| **until > now).count() as u64
    }

    /// Removes visitors (all or nothing: NOT_FOUND if any is not in the history).
    pub fn remove_visitors(&mut self, keys: &[VisitorKey]) -> Result<u64, Fault> {
        self.require_ready()?;
        if let Some(missing) = keys.iter().find(|k| !self.state.history.contains(**k)) {
            return Err(Fault::NotFound(format!("{} is not a visitor", display_key(*missing))));
        }
        let mut gone = Expired::default();
        for key in keys {
            match *key {
                VisitorKey::V4(a) => gone.v4.insert(a.into()),
                VisitorKey::V6(p) => gone.v6.insert(u64::from_be_bytes(p)),
            };
        }
        self.commit(&Op::RemoveVisitors {
            v4: gone.v4.iter().collect(),
            v6: gone.v6.iter().collect(),
        })?;
        self.remove_from_kernel(&gone)?;
        Ok(gone.len())
    }

    fn remove_from_kernel(&mut self, gone: &Expired) -> Result<(), Fault> {
        for maps in self.attached() {
            maps.remove_visitors(gone.v4.iter(), gone.v6.iter()).map_err(Fault::from)?;
        }
        Ok(())
    }

    /// Re-reads the config file and puts it in force: validated first (the file, what a
    /// reload may change, the keys, the lists' capacity), then applied to every attached
    /// filter. Any failure before the kernel leaves the running config as it was. Returns
    /// what changed, one line per section.
    pub fn reload(&mut self) -> Result<Vec<String>, Fault> {
        let refused = |why: String| {
            Fault::FailedPrecondition(format!("config not reloaded, the running one stays: {why}"))
        };
        let new = Policy::load(&self.config_path).map_err(|e| refused(e.to_string()))?;
        let old = &self.policy;
        if let Some(field) = restart_only_change(old, &new) {
            return Err(refused(format!(
                "{}: {field} changed, and only a restart of the daemon applies it",
                self.config_path.display()
            )));
        }
        let keys = match &new.admission.keys {
            Some(path) if old.admission.keys.as_ref() != Some(path) => {
                Some((Keyring::load(path).map_err(|e| refused(e.to_string()))?, modified(path)))
            }
            Some(_) => self.keys.clone(),
            None => None,
        };
        let mut changes = describe_changes(old, &new);
        if new.mode != old.mode && self.state.mode.is_some() {
            changes.push(format!(
                "note: the mode set with `edge mode` ({}) stays in force over the file's",
                self.mode()
            ));
        }
        let (mode, was) = (self.mode(), self.kernel_mode());
        let previous = std::mem::replace(&mut self.policy, new);
        let previous_keys = std::mem::replace(&mut self.keys, keys);
        let phase = self.auto.phase;
        self.entering_auto(mode, was);
        let policy = self.effective_policy();
        for (list, capacity, len) in [
            (names::ALLOW, names::ALLOW_CAPACITY, policy.allow.len()),
            (names::DENY, names::DENY_CAPACITY, policy.deny.len()),
        ] {
            if len > capacity as usize {
                self.policy = previous;
                self.keys = previous_keys;
                self.auto.phase = phase;
                return Err(refused(
                    Error::MapFull { map: list, capacity, wanted: len }.to_string(),
                ));
            }
        }
        // Past validation: the new config is in force; the kernel follows.
        let (history, today) = (self.state.history.clone(), self.today());
        let ring = self.keys.as_ref().map(|(ring, _)| ring.clone());
        for maps in self.attached() {
            maps.apply(&policy, &history, today).map_err(Fault::from)?;
            maps.set_ticket_keys(ring.as_ref()).map_err(Fault::from)?;
        }
        info!(file = %self.config_path.display(), changes = changes.len(), "config reloaded");
        for change in &changes {
            info!("config: {change}");
        }
        Ok(changes)
    }

    pub fn set_mode(&mut self, mode: Mode) -> Result<Mode, Fault> {
        self.require_ready()?;
        let (previous, was) = (self.mode(), self.kernel_mode());
        self.commit(&Op::SetMode(mode))?;
        self.entering_auto(previous, was);
        self.write_config()?;
        Ok(previous)
    }

    /// Switching to `auto` keeps what the kernel runs: from enforce it starts in the attack
    /// phase (leaving it takes the cool-down), otherwise calm.
    fn entering_auto(&mut self, previous: Mode, was: Mode) {
        if self.mode() == Mode::Auto && previous != Mode::Auto {
            self.auto.phase = if was == Mode::Enforce { Phase::Attack } else { Phase::Calm };
            self.auto.since = self.clock.now();
            info!(phase = self.auto.phase.name(), "auto: watching unknown sources");
        }
    }

    fn write_config(&mut self) -> Result<(), Fault> {
        let config = kernel_config(&self.effective_policy());
        for maps in self.attached() {
            maps.set_config(config).map_err(Fault::from)?;
        }
        Ok(())
    }

    fn config_rule(&self, list: List, net: &IpNet) -> bool {
        match list {
            List::Allow => self.policy.allow.contains(net),
            List::Deny => self.policy.deny.contains(net),
        }
    }

    /// Adds or updates rules (all or nothing). Returns (added, updated).
    pub fn add_rules(&mut self, rules: Vec<StoredRule>) -> Result<(u64, u64), Fault> {
        self.require_ready()?;
        for rule in &rules {
            if self.config_rule(rule.list, &rule.net) {
                return Err(Fault::FailedPrecondition(format!(
                    "{} is on the {} list of the config file {}; change it there",
                    rule.net,
                    rule.list.name(),
                    self.config_path.display()
                )));
            }
        }
        let added =
            rules.iter().filter(|r| !self.state.rules.contains_key(&(r.list, r.net))).count();
        for (list, capacity) in
            [(List::Allow, names::ALLOW_CAPACITY), (List::Deny, names::DENY_CAPACITY)]
        {
            let policy = self.effective_policy();
            let current = if list == List::Allow { policy.allow.len() } else { policy.deny.len() };
            let new = rules
                .iter()
                .filter(|r| r.list == list && !self.state.rules.contains_key(&(r.list, r.net)))
                .map(|r| r.net)
                .collect::<std::collections::HashSet<_>>()
                .len();
            if current + new > capacity as usize {
                return Err(Fault::from(Error::MapFull {
                    map: list.name(),
                    capacity,
                    wanted: current + new,
                }));
            }
        }
        self.commit(&Op::PutRules(rules.clone()))?;
        for list in [List::Allow, List::Deny] {
            let nets: Vec<IpNet> = rules.iter().filter(|r| r.list == list).map(|r| r.net).collect();
            if !nets.is_empty() {
                for maps in self.attached() {
                    maps.insert_rules(list.name(), &nets).map_err(Fault::from)?;
                }
            }
        }
        Ok((added as u64, (rules.len() - added) as u64))
    }

    /// Removes rules set through the API (all or nothing).
    pub fn remove_rules(&mut self, list: List, nets: &[IpNet]) -> Result<u64, Fault> {
        self.require_ready()?;
        for net in nets {
            if self.config_rule(list, net) {
                return Err(Fault::FailedPrecondition(format!(
                    "{net} is on the {} list of the config file {}; remove it there",
                    list.name(),
                    self.config_path.display()
                )));
            }
            if !self.state.rules.contains_key(&(list, *net)) {
                return Err(Fault::NotFound(format!("{net} is not on the {} list", list.name())));
            }
        }
        self.commit(&Op::RemoveRules { list, nets: nets.to_vec() })?;
        for maps in self.attached() {
            maps.remove_rules(list.name(), nets).map_err(Fault::from)?;
        }
        Ok(nets.len() as u64)
    }

    pub fn list_rules(&self, list: List) -> Vec<ListedRule> {
        let config = match list {
            List::Allow => &self.policy.allow,
            List::Deny => &self.policy.deny,
        };
        let from_config = config.iter().map(|net| ListedRule {
            rule: StoredRule {
                list,
                net: *net,
                comment: String::new(),
                expires_at: 0,
                added_at: 0,
            },
            from_config: true,
        });
        let from_api =
            self.state.rules(list).map(|r| ListedRule { rule: r.clone(), from_config: false });
        from_config.chain(from_api).collect()
    }

    /// Counters summed over `interface` (or every attached interface).
    pub fn stats(&mut self, interface: &str) -> Result<Stats, Fault> {
        if !interface.is_empty() && !self.interfaces.iter().any(|i| i.name == interface) {
            return Err(Fault::NotFound(format!("the daemon does not run on {interface}")));
        }
        let mut total: Option<Stats> = None;
        for iface in &mut self.interfaces {
            if !interface.is_empty() && iface.name != interface {
                continue;
            }
            if let Link::Attached { counters, .. } = &iface.link {
                let stats = counters.read().map_err(Fault::from)?;
                total = Some(match total {
                    Some(sum) => sum.plus(&stats),
                    None => stats,
                });
            }
        }
        total.ok_or_else(|| {
            Fault::Unavailable("the filter is not attached to any interface yet".into())
        })
    }
}

/// The maps every interface shares, made to match the store before any program uses them:
/// those of the first interface an earlier run left filtering (adopted: reconciled, never
/// cleared, so kernel-only state such as knocked admissions and budgets survives a restart),
/// or new ones.
fn shared_maps<'a>(
    mut interfaces: impl Iterator<Item = &'a str>,
    policy: &Policy,
    state: &State,
    today: Day,
    keys: Option<&Keyring>,
    now: u64,
) -> crate::Result<Maps> {
    let running =
        interfaces.find_map(|name| pin_dir(name).ok().filter(|dir| dir.join("link").exists()));
    let mut maps = match running {
        Some(dir) => {
            let refuse = |why: String| {
                Error::Load(format!(
                    "{}: the running filter was built with other map layouts ({why}); this \
                     binary cannot take it over in place. Stop the daemon, `edge detach` each \
                     interface, and start again (visitors and rules come back from the store)",
                    dir.display()
                ))
            };
            if let Some(name) = crate::filter::SHARED_MAPS.iter().find(|n| !dir.join(n).exists()) {
                return Err(refuse(format!("it has no `{name}` map")));
            }
            let maps = Maps::open_pinned(&dir)?;
            if let Some(why) =
                crate::filter::layout_mismatch(&crate::filter::defined_maps()?, &maps)?
            {
                return Err(refuse(why));
            }
            maps
        }
        None => Maps::create()?,
    };
    maps.apply(policy, &state.history, today)?;
    maps.set_ticket_keys(keys)?;
    // Admissions the store holds; knocks the kernel verified itself are left as they are.
    for (key, until) in state.admissions.iter().filter(|(_, until)| **until > now) {
        maps.admit_key(*key, *until)?;
    }
    maps.rebuild_admitted_hint()?;
    Ok(maps)
}

/// The first setting that differs and that only a restart can change: the `[daemon]` table
/// (sockets, interfaces, state) and the feed (its task is started once).
fn restart_only_change(old: &Policy, new: &Policy) -> Option<&'static str> {
    let (Some(a), Some(b)) = (&old.daemon, &new.daemon) else {
        return Some("[daemon]");
    };
    let fields: [(&'static str, bool); 7] = [
        ("daemon.interfaces", a.interfaces != b.interfaces),
        ("daemon.state_dir", a.state_dir != b.state_dir),
        ("daemon.socket", a.socket != b.socket),
        ("daemon.tcp_listen", a.tcp_listen != b.tcp_listen),
        ("daemon.token_file", a.token_file != b.token_file),
        ("daemon.xdp_mode", a.xdp_mode != b.xdp_mode),
        ("daemon.metrics_listen", a.metrics_listen != b.metrics_listen),
    ];
    if let Some((field, _)) = fields.iter().find(|(_, changed)| *changed) {
        return Some(field);
    }
    if old.learn_handshakes != new.learn_handshakes {
        return Some("learning.handshakes");
    }
    (old.admission.feed != new.admission.feed).then_some("the admission feed (redis_url, ...)")
}

/// One line per section that a reload changes.
fn describe_changes(old: &Policy, new: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    let mut note = |what: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{what}: {a} -> {b}"));
        }
    };
    note("mode", old.mode.to_string(), new.mode.to_string());
    note("auto", format!("{:?}", old.auto), format!("{:?}", new.auto));
    let protect =
        |p: &Policy| p.protect.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(" ");
    note("scope.protect", protect(old), protect(new));
    note("unknown", format!("{:?}", old.unknown), format!("{:?}", new.unknown));
    note("window.days", old.window_days.to_string(), new.window_days.to_string());
    let list = |l: &[IpNet]| format!("{} prefixes", l.len());
    if old.allow != new.allow {
        note("lists.allow", list(&old.allow), format!("{} (changed)", list(&new.allow)));
    }
    if old.deny != new.deny {
        note("lists.deny", list(&old.deny), format!("{} (changed)", list(&new.deny)));
    }
    note(
        "admission.keys",
        format!("{:?}", old.admission.keys),
        format!("{:?}", new.admission.keys),
    );
    note(
        "admission.knock_port",
        format!("{:?}", old.admission.knock_port),
        format!("{:?}", new.admission.knock_port),
    );
    out
}

/// Distinct (visitor, day) pairs.
fn count_visits(history: &VisitorHistory) -> u64 {
    history.v4.days().map(|(_, s)| s.len()).sum::<u64>()
        + history.v6.days().map(|(_, s)| s.len()).sum::<u64>()
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// How a visitor key is written in answers: `192.0.2.1` or `2001:db8::/64`.
pub fn display_key(key: VisitorKey) -> String {
    match key {
        VisitorKey::V4(a) => a.to_string(),
        VisitorKey::V6(p) => {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&p);
            format!("{}/64", IpAddr::from(bytes))
        }
    }
}
