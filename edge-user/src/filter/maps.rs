//! Every map of a loaded or pinned program, typed on use, and the verbs that make them hold
//! what the control plane wants: a policy, visitors, rules, admissions, ticket keys.
use std::{collections::HashSet, net::IpAddr, path::Path};

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData, PerCpuArray},
    Ebpf, EbpfLoader,
};
use edge_common::{
    config::{Config, LIST_ADMITTED, LIST_ALLOW, LIST_DENY, LIST_VISITORS_V6},
    keys::{
        v4_mapped, v4_mapped_prefix_len, Addr, AdmittedUntil, BlockedLine, Bucket, Counter, Credit,
        Rule, V6Prefix, VisitorDay,
    },
    maps as names,
    ticket::{TicketKey, TICKET_KEY_SLOTS},
};
use ipnet::IpNet;
use roaring::RoaringTreemap;

use super::{
    load_error, pins::open_pinned_map, record::kernel_config, MAP_NAMES, PROGRAM_OBJECT,
    SHARED_MAPS,
};
use crate::{
    bitmap::{AdmittedHint, ListNets, VisitorBitmap},
    error::{errno, kernel, Error, Result},
    history::{window_start, VisitorHistory},
    policy::{List, Policy, Protected},
    stats::Stats,
    ticket::Keyring,
    visitors::{admission_key, Day},
};

/// One interface's packet and byte counters (its program's own `stats` map).
pub struct Counters(pub(super) PerCpuArray<MapData, Counter>);

impl Counters {
    pub fn read(&self) -> Result<Stats> {
        Stats::read(&self.0)
    }
}

/// The maps of a loaded or pinned program. Held untyped so they can be pinned; typed views are
/// made on use (cheap: a size check).
pub struct Maps {
    maps: std::collections::HashMap<&'static str, Map>,
    visitors_v4: VisitorBitmap,
    admitted_hint: AdmittedHint,
    list_nets: ListNets,
}

fn view<'a, T>(
    maps: &'a mut std::collections::HashMap<&'static str, Map>,
    name: &'static str,
) -> Result<T>
where
    T: TryFrom<&'a mut Map, Error = aya::maps::MapError>,
{
    let map = maps
        .get_mut(name)
        .ok_or_else(|| Error::Load(format!("the program has no `{name}` map")))?;
    T::try_from(map).map_err(|e| kernel(format!("the `{name}` map"), e))
}

/// The kernel map under one of the types the program uses.
fn map_data<'a>(name: &str, map: &'a Map) -> Result<&'a MapData> {
    match map {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::RingBuf(d)
        | Map::PerCpuArray(d) => Ok(d),
        _ => Err(Error::Load(format!("`{name}` has an unexpected type"))),
    }
}

impl Maps {
    fn new(mut take: impl FnMut(&'static str) -> Result<Map>) -> Result<Self> {
        let maps = MAP_NAMES
            .iter()
            .map(|name| Ok((*name, take(name)?)))
            .collect::<Result<std::collections::HashMap<_, _>>>()?;
        let Some(Map::Array(bitmap)) = maps.get(names::VISITORS_V4) else {
            return Err(Error::Load("visitors_v4 is not an array".into()));
        };
        let visitors_v4 = VisitorBitmap::map(bitmap)?;
        let Some(Map::Array(hint)) = maps.get(names::ADMITTED_HINT) else {
            return Err(Error::Load("admitted_hint is not an array".into()));
        };
        let admitted_hint = AdmittedHint::map(hint)?;
        let Some(Map::Array(nets)) = maps.get(names::LIST_NETS) else {
            return Err(Error::Load("list_nets is not an array".into()));
        };
        let list_nets = ListNets::map(nets)?;
        Ok(Self { maps, visitors_v4, admitted_hint, list_nets })
    }

    /// New, empty maps of the program's definition, not pinned.
    pub fn create() -> Result<Self> {
        let mut ebpf = EbpfLoader::new().load(PROGRAM_OBJECT).map_err(|e| load_error(&e))?;
        Self::from_ebpf(&mut ebpf)
    }

    /// The maps pinned in `dir` by an earlier attach.
    pub fn open_pinned(dir: &Path) -> Result<Self> {
        Self::new(|name| open_pinned_map(&dir.join(name)))
    }

    /// The maps pinned in `dir` by a running filter, each where this build lays it out alike,
    /// and new, empty ones where it does not (an earlier build's map that changed, or one it
    /// lacked): with why each shared map was made new. The caller fills them from the store
    /// before any program of this build uses them; kernel-only state in them (budgets, knocked
    /// admissions) starts over, everything else comes from the store. A pin that is there but
    /// cannot be opened is an error, never a reason to start a map over.
    pub fn adopt(dir: &Path) -> Result<(Self, Vec<String>)> {
        let defined = super::defined_maps()?;
        let mut renewed = Vec::new();
        let maps = Self::new(|name| {
            let want = defined
                .get(name)
                .ok_or_else(|| Error::Load(format!("this build defines no `{name}` map")))?;
            let path = dir.join(name);
            let why = if path.exists() {
                let map = open_pinned_map(&path)?;
                match super::layout_difference(name, want, map_data(name, &map)?)? {
                    None => return Ok(map),
                    Some(why) => why,
                }
            } else {
                format!("the running filter has no `{name}` map")
            };
            // The counters are each interface's own, renewed where it is loaded.
            if name != names::STATS {
                renewed.push(why);
            }
            // Only this map: loading the whole object would make every map again (the
            // visitor bitmap alone is 512 MiB).
            let made = MapData::create(want.clone(), name, None)
                .map_err(|e| kernel(format!("making the `{name}` map"), e))?;
            Map::from_map_data(made).map_err(|e| kernel(format!("the `{name}` map"), e))
        })?;
        Ok((maps, renewed))
    }

    pub(super) fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self> {
        Self::new(|name| {
            ebpf.take_map(name)
                .ok_or_else(|| Error::Load(format!("the program has no `{name}` map")))
        })
    }

    pub(super) fn data(&self, name: &str) -> Result<&MapData> {
        let map = self.maps.get(name).ok_or_else(|| Error::Load(format!("no `{name}` map")))?;
        map_data(name, map)
    }

    /// The kernel's id of a map: two pins name the same map when their ids are equal.
    pub fn map_id(&self, name: &str) -> Result<u32> {
        let info = self.data(name)?.info().map_err(|e| kernel(format!("the {name} map"), e))?;
        Ok(info.id())
    }

    /// Pins the shared maps in `dir`. A pin there that names another map (an interface that
    /// had maps of its own) is replaced; its program keeps using the old map until it is
    /// itself replaced.
    pub(super) fn pin_shared(&self, dir: &Path) -> Result<()> {
        for name in SHARED_MAPS {
            let path = dir.join(name);
            if path.exists() {
                let same = MapData::from_pin(&path)
                    .ok()
                    .and_then(|m| m.info().ok())
                    .is_some_and(|info| Some(info.id()) == self.map_id(name).ok());
                if same {
                    continue;
                }
                std::fs::remove_file(&path).map_err(|e| Error::Kernel {
                    what: format!("replacing {}", path.display()),
                    source: e,
                })?;
            }
            self.data(name)?
                .pin(&path)
                .map_err(|e| kernel(format!("pinning the {name} map"), e))?;
        }
        Ok(())
    }

    /// Kernel memory charged for a map (`memlock` in its fdinfo), in bytes.
    pub fn kernel_bytes(&self, name: &str) -> Result<u64> {
        use std::os::fd::{AsFd, AsRawFd};
        let data = self.data(name)?;
        let fd = data.fd().as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
            .map_err(|e| Error::Kernel { what: format!("reading fdinfo of {name}"), source: e })?;
        info.lines()
            .find_map(|l| l.strip_prefix("memlock:").and_then(|v| v.trim().parse().ok()))
            .ok_or_else(|| Error::Load(format!("no memlock in the fdinfo of {name}")))
    }

    pub fn visitors_v4(&self) -> &VisitorBitmap {
        &self.visitors_v4
    }

    /// Another, owned mapping of the IPv4 bitmap: for a thread that writes visitors while
    /// another runs packets through the program.
    pub fn map_visitors_v4(&self) -> Result<VisitorBitmap> {
        match self.maps.get(names::VISITORS_V4) {
            Some(Map::Array(data)) => VisitorBitmap::map(data),
            _ => Err(Error::Load("visitors_v4 is not an array".into())),
        }
    }

    pub fn config(&mut self) -> Result<Array<&mut MapData, Config>> {
        view(&mut self.maps, names::CONFIG)
    }

    fn protected(&mut self) -> Result<Array<&mut MapData, u64>> {
        view(&mut self.maps, names::PROTECTED)
    }

    fn list(&mut self, list: List) -> Result<LpmTrie<&mut MapData, Addr, Rule>> {
        view(&mut self.maps, list.name())
    }

    pub fn visitors_v6(&mut self) -> Result<HashMap<&mut MapData, V6Prefix, VisitorDay>> {
        view(&mut self.maps, names::VISITORS_V6)
    }

    pub fn admitted(&mut self) -> Result<HashMap<&mut MapData, Addr, AdmittedUntil>> {
        view(&mut self.maps, names::ADMITTED)
    }

    fn unknown_buckets(&mut self) -> Result<HashMap<&mut MapData, Addr, Bucket>> {
        view(&mut self.maps, names::UNKNOWN_BUCKETS)
    }

    fn unknown_budget(&mut self) -> Result<Array<&mut MapData, Bucket>> {
        view(&mut self.maps, names::UNKNOWN_BUDGET)
    }

    pub fn stats(&mut self) -> Result<Stats> {
        let map: PerCpuArray<&mut MapData, Counter> = view(&mut self.maps, names::STATS)?;
        Stats::read(&map)
    }

    /// Makes the kernel state match `policy` and the visitors in `history` as of `today`.
    /// Everything is validated before the first write; the mode is written last so that
    /// switching to `enforce` happens with the lists already in place.
    pub fn apply(&mut self, policy: &Policy, history: &VisitorHistory, today: Day) -> Result<()> {
        check_capacity(names::ALLOW, names::ALLOW_CAPACITY, policy.allow.len())?;
        check_capacity(names::DENY, names::DENY_CAPACITY, policy.deny.len())?;
        let first = window_start(today, policy.window_days);
        let v6 = history.v6.seen_between(first, today);
        check_capacity(names::VISITORS_V6, names::VISITORS_V6_CAPACITY, v6.len() as usize)?;

        self.set_protected(&policy.protect)?;
        self.set_list(List::Deny, &policy.deny)?;
        self.set_list(List::Allow, &policy.allow)?;
        self.visitors_v4.reconcile(&history.v4.seen_between(first, today));
        self.set_visitors_v6(&v6, history)?;
        self.set_config(kernel_config(policy))
    }

    /// Writes the config record, with the lookups of non-empty hash maps turned on. A changed
    /// global unknown budget also takes back what the CPUs hold of the old one ahead (their
    /// credit): a lowered ceiling holds from the next packet.
    pub fn set_config(&mut self, mut config: Config) -> Result<()> {
        config.lists |= self.occupied_lists()?;
        let old = self.config()?.get(&0, 0).map_err(|e| kernel("reading the config map", e))?;
        self.config()?.set(0, config, 0).map_err(|e| kernel("writing the config map", e))?;
        let global = |c: &Config| (c.global_interval_ns, c.global_tolerance_ns, c.global_batch);
        if global(&old) != global(&config) {
            self.clear_credit()?;
        }
        let source = |c: &Config| (c.source_interval_ns, c.source_tolerance_ns);
        if source(&old) != source(&config) {
            self.forget_blocked()?;
        }
        Ok(())
    }

    /// Forgets every source remembered over its budget (a new epoch: their tags no longer
    /// match), as a changed per-source budget or a reset of the buckets must.
    fn forget_blocked(&mut self) -> Result<()> {
        let mut lines: Array<&mut MapData, BlockedLine> =
            view(&mut self.maps, names::UNKNOWN_BLOCKED)?;
        let mut first = lines.get(&0, 0).map_err(|e| kernel("reading the blocked epoch", e))?;
        first.ways[0] = first.ways[0].wrapping_add(1);
        lines.set(0, first, 0).map_err(|e| kernel("writing the blocked epoch", e))
    }

    /// Line `line` of `unknown_blocked`, the sources it remembers over their budget.
    pub fn blocked_line(&mut self, line: u32) -> Result<BlockedLine> {
        let lines: Array<&mut MapData, BlockedLine> = view(&mut self.maps, names::UNKNOWN_BLOCKED)?;
        lines.get(&line, 0).map_err(|e| kernel("reading unknown_blocked", e))
    }

    /// The epoch the tags in `unknown_blocked` are made under: the first word of line 0.
    pub fn blocked_epoch(&mut self) -> Result<u64> {
        Ok(self.blocked_line(0)?.ways[0])
    }

    /// Empties every CPU's credit of the global unknown budget.
    fn clear_credit(&mut self) -> Result<()> {
        let mut credit: PerCpuArray<&mut MapData, Credit> =
            view(&mut self.maps, names::UNKNOWN_CREDIT)?;
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| kernel(what, e))?;
        let none = aya::maps::PerCpuValues::try_from(vec![Credit::default(); cpus])
            .map_err(|e| kernel("the unknown credit", e))?;
        credit.set(0, none, 0).map_err(|e| kernel("clearing the unknown credit", e))
    }

    /// `LIST_*` bits for the hash maps that hold entries now.
    fn occupied_lists(&mut self) -> Result<u32> {
        let mut lists = 0;
        if self.visitors_v6()?.keys().next().is_some() {
            lists |= LIST_VISITORS_V6;
        }
        if self.admitted()?.keys().next().is_some() {
            lists |= LIST_ADMITTED;
        }
        Ok(lists)
    }

    /// Turns on the lookups of maps that just gained entries (bits are only added here;
    /// `set_config` recomputes them all).
    fn enable_lists(&mut self, bits: u32) -> Result<()> {
        let mut config = self.config()?;
        let mut current = config.get(&0, 0).map_err(|e| kernel("reading the config map", e))?;
        if current.lists & bits != bits {
            current.lists |= bits;
            config.set(0, current, 0).map_err(|e| kernel("writing the config map", e))?;
        }
        Ok(())
    }

    fn set_protected(&mut self, protect: &[Protected]) -> Result<()> {
        let mut words = vec![0u64; names::PROTECTED_WORDS as usize];
        for p in protect {
            for port in p.ports.0..=p.ports.1 {
                if let Some((word, bit)) = edge_common::keys::protected_slot(p.proto, port) {
                    words[word as usize] |= bit;
                }
            }
        }
        let mut map = self.protected()?;
        for (index, word) in words.into_iter().enumerate() {
            map.set(index as u32, word, 0).map_err(|e| kernel("writing the protected map", e))?;
        }
        Ok(())
    }

    /// Makes an allow or deny trie hold exactly `nets`: inserts first, then removes the rest,
    /// so a prefix present before and after is never missing in between.
    fn set_list(&mut self, list: List, nets: &[IpNet]) -> Result<()> {
        self.insert_rules(list, nets)?;
        let name = list.name();
        let mut trie = self.list(list)?;
        let wanted: HashSet<(u32, Addr)> = nets.iter().map(lpm_key).collect();
        let stale: Vec<Key<Addr>> = trie
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !wanted.contains(&(k.prefix_len(), k.data())))
            .collect();
        for key in stale {
            trie.remove(&key).map_err(|e| kernel(format!("removing from the {name} list"), e))?;
        }
        self.list_nets.settle(list_spec(list).nets, wanted.iter().map(|(len, addr)| (*len, addr)));
        Ok(())
    }

    /// Adds prefixes to the `allow` or `deny` trie (an existing prefix is left as it is).
    pub fn insert_rules(&mut self, list: List, nets: &[IpNet]) -> Result<()> {
        let (spec, name) = (list_spec(list), list.name());
        let keys: Vec<(u32, Addr)> = nets.iter().map(lpm_key).collect();
        // Their list bits first: while a bit is clear the kernel does not look in the trie.
        self.list_nets.mark(spec.nets, keys.iter().map(|(len, addr)| (*len, addr)));
        let mut trie = self.list(list)?;
        for (len, addr) in keys {
            trie.insert(&Key::new(len, addr), Rule { id: 0 }, 0)
                .map_err(|e| full_or(e, name, spec.capacity, nets.len()))?;
        }
        self.enable_lists(spec.config_bit)
    }

    /// Takes prefixes out of the `allow` or `deny` trie, then clears the list bits no prefix
    /// left in it touches.
    pub fn remove_rules(&mut self, list: List, nets: &[IpNet]) -> Result<()> {
        let name = list.name();
        let mut trie = self.list(list)?;
        for net in nets {
            let (len, addr) = lpm_key(net);
            absent_ok(trie.remove(&Key::new(len, addr)), &format!("removing from {name}"))?;
        }
        let left: Vec<(u32, Addr)> =
            trie.keys().filter_map(|k| k.ok()).map(|k| (k.prefix_len(), k.data())).collect();
        self.list_nets.settle(list_spec(list).nets, left.iter().map(|(len, addr)| (*len, addr)));
        Ok(())
    }

    /// Whether the kernel would look `addr` up in the `allow` or `deny` trie.
    pub fn list_net_marked(&self, list: List, addr: IpAddr) -> bool {
        self.list_nets.contains(list_spec(list).nets, addr)
    }

    /// Makes `visitors_v6` hold exactly `want`: inserts first, then removes the rest.
    fn set_visitors_v6(&mut self, want: &RoaringTreemap, history: &VisitorHistory) -> Result<()> {
        let have: RoaringTreemap =
            self.visitors_v6()?.keys().filter_map(|k| k.ok()).map(u64::from_be_bytes).collect();
        let missing = want - &have;
        let stale = &have - want;
        let day = |k: u64| history.v6.last_seen(k).map_or(0, |d| d.0);
        self.insert_visitors(std::iter::empty(), missing.iter().map(|k| (k, Day(day(k)))))?;
        self.remove_visitors(std::iter::empty(), stale.iter())
    }

    /// Puts visitors in the kernel maps: IPv4 addresses (host order) and IPv6 /64 prefixes
    /// (as big-endian `u64`) with the day each was last seen.
    pub fn insert_visitors(
        &mut self,
        v4: impl IntoIterator<Item = u32>,
        v6: impl IntoIterator<Item = (u64, Day)>,
    ) -> Result<()> {
        for addr in v4 {
            self.visitors_v4.insert(addr.into());
        }
        let mut map = self.visitors_v6()?;
        let mut any_v6 = false;
        for (prefix, day) in v6 {
            map.insert(prefix.to_be_bytes(), VisitorDay { last_seen_day: day.0 }, 0)
                .map_err(|e| full_or(e, names::VISITORS_V6, names::VISITORS_V6_CAPACITY, 1))?;
            any_v6 = true;
        }
        if any_v6 {
            self.enable_lists(LIST_VISITORS_V6)?;
        }
        Ok(())
    }

    /// Takes visitors out of the kernel maps (the history itself is the caller's).
    pub fn remove_visitors(
        &mut self,
        v4: impl IntoIterator<Item = u32>,
        v6: impl IntoIterator<Item = u64>,
    ) -> Result<()> {
        for addr in v4 {
            self.visitors_v4.remove(addr.into());
        }
        let mut map = self.visitors_v6()?;
        for prefix in v6 {
            absent_ok(map.remove(&prefix.to_be_bytes()), "removing from visitors_v6")?;
        }
        Ok(())
    }

    /// The sources (masked to their aggregation prefix) that have a token bucket.
    pub fn bucket_keys(&mut self) -> Result<Vec<Addr>> {
        Ok(self.unknown_buckets()?.keys().filter_map(|k| k.ok()).collect())
    }

    /// Loads the ticket keys the knock is verified with (slot 0 current, slot 1 previous);
    /// `None` empties both.
    pub fn set_ticket_keys(&mut self, ring: Option<&Keyring>) -> Result<()> {
        let keys = ring.map(|r| r.keys()).unwrap_or_default();
        let mut map: Array<&mut MapData, TicketKey> = view(&mut self.maps, names::TICKET_KEYS)?;
        for slot in 0..TICKET_KEY_SLOTS {
            let key = keys.get(slot as usize).map(|k| k.kernel()).unwrap_or_default();
            map.set(slot, key, 0).map_err(|e| kernel("writing the ticket_keys map", e))?;
        }
        Ok(())
    }

    /// Admits `ip` (its /64 for IPv6) until `until` (unix seconds).
    pub fn admit(&mut self, ip: IpAddr, until: u64) -> Result<()> {
        self.admit_key(admission_key(ip), until)
    }

    /// Admits an admission key until `until`; an admission that already lasts longer stays.
    pub fn admit_key(&mut self, key: Addr, until: u64) -> Result<()> {
        let mut admitted = self.admitted()?;
        if !admitted.get(&key, 0).is_ok_and(|a| a.admitted_until >= until) {
            admitted
                .insert(key, AdmittedUntil { admitted_until: until }, 0)
                .map_err(|e| full_or(e, names::ADMITTED, names::ADMITTED_CAPACITY, 1))?;
        }
        // After the insert: the hint gates the kernel's lookup.
        self.admitted_hint.set(&key);
        self.enable_lists(LIST_ADMITTED)
    }

    /// Rebuilds the admitted map's hint from its current keys (drops slots of admissions that
    /// expired or were revoked); the kernel keeps reading the other generation meanwhile.
    pub fn rebuild_admitted_hint(&mut self) -> Result<()> {
        let (maps, hint) = (&mut self.maps, &self.admitted_hint);
        // The keys are read inside `rebuild`, after it cleared the spare generation.
        hint.rebuild(|| {
            let admitted: HashMap<&mut MapData, Addr, AdmittedUntil> = view(maps, names::ADMITTED)?;
            Ok(admitted.keys().filter_map(|k| k.ok()).collect())
        })
    }

    /// Whether the hint lets the kernel look `key` up in the admitted map.
    pub fn admitted_hinted(&self, key: &Addr) -> bool {
        self.admitted_hint.contains(key)
    }

    /// Deletes admissions that expired at or before `now` (knocks' included); returns how many.
    pub fn purge_admissions(&mut self, now: u64) -> Result<u64> {
        let mut admitted = self.admitted()?;
        let expired: Vec<Addr> = admitted
            .iter()
            .filter_map(|entry| entry.ok())
            .filter(|(_, a)| a.admitted_until <= now)
            .map(|(key, _)| key)
            .collect();
        for key in &expired {
            absent_ok(admitted.remove(key), "removing an expired admission")?;
        }
        Ok(expired.len() as u64)
    }

    /// Withdraws an admission.
    pub fn revoke(&mut self, ip: IpAddr) -> Result<()> {
        absent_ok(self.admitted()?.remove(&admission_key(ip)), "removing from admitted")
    }

    /// Forgets all per-source and global unknown budget state (tests and replays start clean).
    pub fn reset_budgets(&mut self) -> Result<()> {
        let mut buckets = self.unknown_buckets()?;
        let keys: Vec<Addr> = buckets.keys().filter_map(|k| k.ok()).collect();
        for key in keys {
            let _ = buckets.remove(&key);
        }
        self.unknown_budget()?
            .set(0, Bucket::default(), 0)
            .map_err(|e| kernel("resetting the unknown budget", e))?;
        self.clear_credit()?;
        self.forget_blocked()?;
        let mut buckets: HashMap<&mut MapData, Addr, Bucket> =
            view(&mut self.maps, names::ENDPOINT_BUCKETS)?;
        let keys: Vec<Addr> = buckets.keys().filter_map(|k| k.ok()).collect();
        for key in keys {
            let _ = buckets.remove(&key);
        }
        let mut budget: Array<&mut MapData, Bucket> = view(&mut self.maps, names::ENDPOINT_BUDGET)?;
        budget
            .set(0, Bucket::default(), 0)
            .map_err(|e| kernel("resetting the endpoint budget", e))?;
        let mut replies: Array<&mut MapData, Bucket> =
            view(&mut self.maps, names::SYN_REPLY_BUDGET)?;
        replies
            .set(0, Bucket::default(), 0)
            .map_err(|e| kernel("resetting the SYN reply budget", e))
    }
}

/// A delete of a key that is not there (ENOENT) is not an error for an idempotent remove.
fn absent_ok(result: Result<(), aya::maps::MapError>, what: &str) -> Result<()> {
    match result {
        Err(e)
            if errno(&e) != Some(libc::ENOENT)
                && !matches!(e, aya::maps::MapError::KeyNotFound) =>
        {
            Err(kernel(what, e))
        }
        _ => Ok(()),
    }
}

/// What tells the `allow` and `deny` lists apart in the kernel besides their trie.
struct ListSpec {
    capacity: u32,
    /// Its `LIST_*` bit in the config record.
    config_bit: u32,
    /// Its regions of `list_nets`.
    nets: u32,
}

fn list_spec(list: List) -> ListSpec {
    match list {
        List::Allow => ListSpec {
            capacity: names::ALLOW_CAPACITY,
            config_bit: LIST_ALLOW,
            nets: edge_common::keys::LIST_NETS_ALLOW,
        },
        List::Deny => ListSpec {
            capacity: names::DENY_CAPACITY,
            config_bit: LIST_DENY,
            nets: edge_common::keys::LIST_NETS_DENY,
        },
    }
}

fn check_capacity(map: &'static str, capacity: u32, wanted: usize) -> Result<()> {
    if wanted > capacity as usize {
        return Err(Error::MapFull { map, capacity, wanted });
    }
    Ok(())
}

/// E2BIG from a map insert means the map is full: say so by name.
fn full_or(e: aya::maps::MapError, map: &'static str, capacity: u32, wanted: usize) -> Error {
    if errno(&e) == Some(libc::E2BIG) {
        Error::MapFull { map, capacity, wanted }
    } else {
        kernel(format!("writing the {map} map"), e)
    }
}

/// The LPM key of a prefix: IPv4 in v4-mapped form.
pub(crate) fn lpm_key(net: &IpNet) -> (u32, Addr) {
    match net {
        IpNet::V4(n) => {
            (v4_mapped_prefix_len(u32::from(n.prefix_len())), v4_mapped(n.network().octets()))
        }
        IpNet::V6(n) => (u32::from(n.prefix_len()), n.network().octets()),
    }
}
