//! The filter: the XDP program loaded into the kernel with its maps, and the verbs that
//! configure it, run packets through it, and attach it to interfaces.
use std::{
    collections::HashSet,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData, PerCpuArray},
    programs::{
        links::FdLink, links::PinnedLink, xdp::XdpLink, TestRun, TestRunOptions, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use edge_common::{
    config::{Config, LIST_ADMITTED, LIST_ALLOW, LIST_DENY, LIST_VISITORS_V6},
    keys::{
        v4_mapped, v4_mapped_prefix_len, Addr, AdmittedUntil, Bucket, Counter, Rule, V6Prefix,
        VisitorDay,
    },
    maps as names,
    reason::Reason,
};
use ipnet::IpNet;

use crate::{
    bitmap::{AdmittedHint, ListNets, VisitorBitmap},
    error::{chain, errno, kernel, Error, Result},
    history::{window_start, VisitorHistory},
    policy::{Policy, Protected},
    stats::Stats,
    visitors::{admission_key, Day},
};
use edge_common::ticket::{TicketKey, TICKET_KEY_SLOTS};
use roaring::RoaringTreemap;

use crate::ticket::Keyring;

/// The XDP program, built from `edge-ebpf` by build.rs.
pub static PROGRAM_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/edge"));

/// Reference programs for benchmarks (`empty`, `anchor_hash`); never attached by edge.
pub static BASELINE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baseline"));

/// Where `edge attach` pins the program, link and maps: `PIN_ROOT/<iface>/`.
pub const PIN_ROOT: &str = "/sys/fs/bpf/edge";

/// The maps every interface of one daemon shares: all but the per-interface counters.
pub const SHARED_MAPS: [&str; 14] = [
    names::CONFIG,
    names::PROTECTED,
    names::DENY,
    names::ALLOW,
    names::LIST_NETS,
    names::VISITORS_V4,
    names::VISITORS_V6,
    names::ADMITTED,
    names::ADMITTED_HINT,
    names::UNKNOWN_BUCKETS,
    names::UNKNOWN_BUDGET,
    names::TICKET_KEYS,
    names::DROP_EVENTS,
    names::HANDSHAKES,
];

/// Every map the program has, by name (these are also the pin file names): the shared ones and
/// the per-interface counters.
pub const MAP_NAMES: [&str; SHARED_MAPS.len() + 1] = {
    let mut all = [names::STATS; SHARED_MAPS.len() + 1];
    let mut i = 0;
    while i < SHARED_MAPS.len() {
        all[i] = SHARED_MAPS[i];
        i += 1;
    }
    all
};

/// One interface's packet and byte counters (its program's own `stats` map).
pub struct Counters(PerCpuArray<MapData, Counter>);

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

    fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self> {
        Self::new(|name| {
            ebpf.take_map(name)
                .ok_or_else(|| Error::Load(format!("the program has no `{name}` map")))
        })
    }

    fn data(&self, name: &str) -> Result<&MapData> {
        let map = self.maps.get(name).ok_or_else(|| Error::Load(format!("no `{name}` map")))?;
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

    /// The kernel's id of a map: two pins name the same map when their ids are equal.
    pub fn map_id(&self, name: &str) -> Result<u32> {
        let info = self.data(name)?.info().map_err(|e| kernel(format!("the {name} map"), e))?;
        Ok(info.id())
    }

    /// Pins the shared maps in `dir`. A pin there that names another map (an interface that
    /// had maps of its own) is replaced; its program keeps using the old map until it is
    /// itself replaced.
    fn pin_shared(&self, dir: &Path) -> Result<()> {
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

    fn list(&mut self, name: &'static str) -> Result<LpmTrie<&mut MapData, Addr, Rule>> {
        view(&mut self.maps, name)
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
        self.set_list(names::DENY, &policy.deny)?;
        self.set_list(names::ALLOW, &policy.allow)?;
        self.visitors_v4.reconcile(&history.v4.seen_between(first, today));
        self.set_visitors_v6(&v6, history)?;
        self.set_config(kernel_config(policy))
    }

    /// Writes the config record, with the lookups of non-empty hash maps turned on.
    pub fn set_config(&mut self, mut config: Config) -> Result<()> {
        config.lists |= self.occupied_lists()?;
        self.config()?.set(0, config, 0).map_err(|e| kernel("writing the config map", e))
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
    fn set_list(&mut self, name: &'static str, nets: &[IpNet]) -> Result<()> {
        self.insert_rules(name, nets)?;
        let mut trie = self.list(name)?;
        let wanted: HashSet<(u32, Addr)> = nets.iter().map(lpm_key).collect();
        let stale: Vec<Key<Addr>> = trie
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !wanted.contains(&(k.prefix_len(), k.data())))
            .collect();
        for key in stale {
            trie.remove(&key).map_err(|e| kernel(format!("removing from the {name} list"), e))?;
        }
        self.list_nets.settle(list_spec(name).nets, wanted.iter().map(|(len, addr)| (*len, addr)));
        Ok(())
    }

    /// Adds prefixes to the `allow` or `deny` trie (an existing prefix is left as it is).
    pub fn insert_rules(&mut self, name: &'static str, nets: &[IpNet]) -> Result<()> {
        let spec = list_spec(name);
        let keys: Vec<(u32, Addr)> = nets.iter().map(lpm_key).collect();
        // Their list bits first: while a bit is clear the kernel does not look in the trie.
        self.list_nets.mark(spec.nets, keys.iter().map(|(len, addr)| (*len, addr)));
        let mut trie = self.list(name)?;
        for (len, addr) in keys {
            trie.insert(&Key::new(len, addr), Rule { id: 0 }, 0)
                .map_err(|e| full_or(e, name, spec.capacity, nets.len()))?;
        }
        self.enable_lists(spec.config_bit)
    }

    /// Takes prefixes out of the `allow` or `deny` trie, then clears the list bits no prefix
    /// left in it touches.
    pub fn remove_rules(&mut self, name: &'static str, nets: &[IpNet]) -> Result<()> {
        let mut trie = self.list(name)?;
        for net in nets {
            let (len, addr) = lpm_key(net);
            absent_ok(trie.remove(&Key::new(len, addr)), &format!("removing from {name}"))?;
        }
        let left: Vec<(u32, Addr)> =
            trie.keys().filter_map(|k| k.ok()).map(|k| (k.prefix_len(), k.data())).collect();
        self.list_nets.settle(list_spec(name).nets, left.iter().map(|(len, addr)| (*len, addr)));
        Ok(())
    }

    /// Whether the kernel would look `addr` up in the `allow` or `deny` trie.
    pub fn list_net_marked(&self, name: &'static str, addr: IpAddr) -> bool {
        self.list_nets.contains(list_spec(name).nets, addr)
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
            .map_err(|e| kernel("resetting the unknown budget", e))
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

/// What tells the `allow` and `deny` lists apart besides their trie.
struct ListSpec {
    capacity: u32,
    /// Its `LIST_*` bit in the config record.
    config_bit: u32,
    /// Its regions of `list_nets`.
    nets: u32,
}

fn list_spec(name: &str) -> ListSpec {
    if name == names::ALLOW {
        ListSpec {
            capacity: names::ALLOW_CAPACITY,
            config_bit: LIST_ALLOW,
            nets: edge_common::keys::LIST_NETS_ALLOW,
        }
    } else {
        ListSpec {
            capacity: names::DENY_CAPACITY,
            config_bit: LIST_DENY,
            nets: edge_common::keys::LIST_NETS_DENY,
        }
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

/// Network-order byte mask of a prefix length over 16 bytes, as the two words `Config` holds.
fn mask_words(bits: u32) -> [u64; 2] {
    let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
    let bytes = mask.to_be_bytes();
    [
        u64::from_ne_bytes(bytes[..8].try_into().unwrap()),
        u64::from_ne_bytes(bytes[8..].try_into().unwrap()),
    ]
}

/// The kernel's view of a policy.
pub fn kernel_config(policy: &Policy) -> Config {
    let u = &policy.unknown;
    let interval = |pps: u32| if pps == 0 { 0 } else { 1_000_000_000 / u64::from(pps) };
    let (source, global) = (interval(u.rate_pps), interval(u.global_pps));
    let mut lists = 0;
    if !policy.deny.is_empty() {
        lists |= LIST_DENY;
    }
    // Knocks add admissions from the kernel, which cannot turn the lookup on itself.
    if policy.admission.knock_port.is_some() {
        lists |= LIST_ADMITTED;
    }
    if !policy.allow.is_empty() {
        lists |= LIST_ALLOW;
    }
    Config {
        mode: policy.mode.to_kernel(),
        lists,
        source_interval_ns: source,
        source_tolerance_ns: u64::from(u.burst.saturating_sub(1)) * source,
        global_interval_ns: global,
        global_tolerance_ns: u64::from(u.global_burst.saturating_sub(1)) * global,
        tai_offset_s: tai_offset_s(),
        bucket_mask_v4: mask_words(96 + u32::from(u.prefix_v4)),
        bucket_mask_v6: mask_words(u32::from(u.prefix_v6)),
        knock_port: policy.admission.knock_port.map_or(0, u32::from),
        sample_every: policy.drop_sample,
    }
}

/// CLOCK_TAI minus UTC, in whole seconds (37 on a host that knows the leap seconds, 0 otherwise).
fn tai_offset_s() -> u64 {
    let now = |clock| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: valid clock id and pointer.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
    };
    let diff = now(libc::CLOCK_TAI) - now(libc::CLOCK_REALTIME);
    ((diff + 500_000_000) / 1_000_000_000).max(0) as u64
}

/// What the program did with one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Judgement {
    /// XDP action: 1 drop, 2 pass, 0 aborted.
    pub action: u32,
    pub reason: Reason,
    /// Counted as a monitor-mode would-drop.
    pub would_drop: bool,
}

impl Judgement {
    pub fn verdict(&self) -> &'static str {
        match self.action {
            XDP_PASS => "pass",
            XDP_DROP => "drop",
            _ => "aborted",
        }
    }

    pub fn reason_name(&self) -> &'static str {
        edge_common::reason::REASON_NAMES[self.reason as usize]
    }
}

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// The XDP program loaded into the kernel, not attached.
pub struct Filter {
    ebpf: Ebpf,
    pub maps: Maps,
}

impl Filter {
    /// Loads the embedded program. The kernel verifies it here.
    pub fn load() -> Result<Self> {
        let mut ebpf = EbpfLoader::new().load(PROGRAM_OBJECT).map_err(|e| load_error(&e))?;
        program(&mut ebpf)?.load().map_err(|e| load_error(&e))?;
        let maps = Maps::from_ebpf(&mut ebpf)?;
        Ok(Self { ebpf, maps })
    }

    /// Runs one frame through the program (BPF_PROG_TEST_RUN) and reports the verdict and the
    /// reason it was counted under.
    pub fn judge(&mut self, frame: &[u8]) -> Result<Judgement> {
        let before = self.maps.stats()?;
        let action = self.run(frame, 1)?.0;
        let delta = self.maps.stats()?.since(&before);
        let (reason, would_drop) = delta
            .only_reason()
            .ok_or_else(|| Error::Load("test run counted no single reason".into()))?;
        Ok(Judgement { action, reason, would_drop })
    }

    /// Runs a frame `repeat` times in the kernel; returns the action and the mean time per run.
    pub fn run(&mut self, frame: &[u8], repeat: u32) -> Result<(u32, Duration)> {
        let prog = program(&mut self.ebpf)?;
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = repeat;
        let result = prog.test_run(opts).map_err(|e| {
            if errno(&e) == Some(libc::EINVAL) && frame.len() < 14 {
                Error::Kernel {
                    what: format!("test run of a {}-byte frame", frame.len()),
                    source: std::io::Error::other(
                        "the kernel refuses frames shorter than an Ethernet header",
                    ),
                }
            } else {
                kernel("BPF_PROG_TEST_RUN", e)
            }
        })?;
        Ok((result.return_value, result.duration))
    }

    /// Pins program and maps under `PIN_ROOT/<iface>/`, attaches, and pins the link, so the
    /// filter stays after this process exits. On any failure, nothing is left behind.
    /// Returns the pin directory and the maps, which stay usable.
    pub fn attach(self, iface: &str, mode: XdpMode) -> Result<(PathBuf, Maps)> {
        let dir = pin_dir(iface)?;
        // Pins whose link is defunct (the interface was deleted) enforce nothing: replaced.
        if dir.join("link").exists() && pinned_link_live(iface)? {
            return Err(Error::AlreadyAttached { iface: iface.into(), pins: dir });
        }
        // The daemon's path with these maps as the set: one way to pin and attach.
        attach_shared(&self.maps, iface, mode)?;
        Ok((dir, self.maps))
    }
}

/// Puts a daemon's filter on `iface`, against maps it shares with its other interfaces: the
/// shared maps are pinned in the interface's directory, and a program loaded for it uses them
/// and its own counters (kept from an earlier run if pinned). If a filter is attached already,
/// the new program replaces it in the pinned link, atomically (BPF_LINK_UPDATE): there is no
/// moment without a filter, which makes restarts and binary upgrades hitless. Otherwise it is
/// attached and the link pinned. Returns the counters and whether a running filter was
/// replaced. The maps must be filled before: the program never runs with empty maps.
pub fn attach_shared(maps: &Maps, iface: &str, mode: XdpMode) -> Result<(Counters, bool)> {
    attach_loaded(maps, load_for(maps, iface)?, iface, mode)
}

/// The program loaded (verified) for `iface` against `maps` and the interface's counters, not
/// attached: what [`attach_loaded`] attaches in a few system calls. The daemon keeps one ready
/// per interface, so an interface that is deleted and made again is filtered again as soon as
/// the kernel says it exists, not a program load (tens of milliseconds) later.
pub struct Loaded {
    ebpf: Ebpf,
}

/// Loads the program for `iface` (see [`Loaded`]); pins the shared maps in its directory.
pub fn load_for(maps: &Maps, iface: &str) -> Result<Loaded> {
    let dir = pin_dir(iface)?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Kernel { what: format!("creating {}", dir.display()), source: e })?;
    maps.pin_shared(&dir)?;
    let mut loader = EbpfLoader::new();
    for name in SHARED_MAPS.iter().chain([&names::STATS]) {
        loader.map_pin_path(name, dir.join(name));
    }
    let mut ebpf = loader.load(PROGRAM_OBJECT).map_err(|e| load_error(&e))?;
    program(&mut ebpf)?.load().map_err(|e| load_error(&e))?;
    Ok(Loaded { ebpf })
}

/// Attaches a loaded program to `iface` (see [`attach_shared`]). On a failed first attach,
/// nothing is left behind.
pub fn attach_loaded(
    maps: &Maps,
    mut loaded: Loaded,
    iface: &str,
    mode: XdpMode,
) -> Result<(Counters, bool)> {
    let if_index = if_index(iface)?;
    let dir = pin_dir(iface)?;
    let had_link = dir.join("link").exists();
    let running = had_link && pinned_link_live(iface)?;
    if !running {
        // A link pin without a live link enforces nothing: the leftover of an interface that
        // was deleted (its link went with it), or of a failed attach. Its counters stay: the
        // interface made again counts on from where it was (and `auto` sees no drop to zero).
        for stale in ["link", "prog"] {
            let _ = std::fs::remove_file(dir.join(stale));
        }
    }
    let attached = (|| {
        maps.pin_shared(&dir)?;
        let prog = program(&mut loaded.ebpf)?;
        if running {
            let link = PinnedLink::from_pin(dir.join("link"))
                .map_err(|e| kernel("opening the pinned link", e))?;
            let link = XdpLink::try_from(FdLink::from(link))
                .map_err(|e| kernel("the pinned link is not an XDP link", e))?;
            let id = prog.attach_to_link(link).map_err(|e| kernel("replacing the program", e))?;
            // Ours to drop: the link lives on through its pin.
            prog.take_link(id).map_err(|e| kernel("taking the XDP link", e))?;
        } else {
            let id = prog.attach_to_if_index(if_index, mode).map_err(|e| attach_error(iface, e))?;
            let link = prog.take_link(id).map_err(|e| kernel("taking the XDP link", e))?;
            let link =
                FdLink::try_from(link).map_err(|e| kernel("the XDP link is not a bpf_link", e))?;
            link.pin(dir.join("link")).map_err(|e| kernel("pinning the XDP link", e))?;
        }
        let _ = std::fs::remove_file(dir.join("prog"));
        prog.pin(dir.join("prog")).map_err(|e| kernel("pinning the program", e))?;
        let stats = loaded
            .ebpf
            .take_map(names::STATS)
            .ok_or_else(|| Error::Load("the program has no `stats` map".into()))?;
        let stats = PerCpuArray::try_from(stats).map_err(|e| kernel("the stats map", e))?;
        Ok(Counters(stats))
    })();
    match attached {
        Ok(counters) => Ok((counters, running)),
        Err(e) => {
            // A first attach leaves nothing behind; an interface made again keeps its counters.
            if !had_link {
                let _ = std::fs::remove_dir_all(&dir);
            }
            Err(e)
        }
    }
}

/// Loads and attaches the handshake tracepoint (visitor learning) against the shared maps
/// pinned under `iface`, scoped to this process's network namespace (its cookie, and where the
/// kernel's BTF says a socket keeps its namespace). It lives as long as the returned object:
/// learning is the daemon's job, so it stops with the daemon (the filter does not).
pub fn attach_handshakes(iface: &str) -> Result<Ebpf> {
    use aya::programs::TracePoint;
    use edge_common::events::LearnScope;
    let dir = attached_dir(iface)?;
    let (sock_net, net_cookie) = crate::btf::Btf::kernel()
        .and_then(|btf| crate::btf::netns_cookie_offsets(&btf))
        .map_err(|e| Error::Kernel {
            what: "finding where a socket keeps its network namespace".into(),
            source: std::io::Error::other(e),
        })?;
    let netns_cookie = crate::ifaddrs::netns_cookie().map_err(|e| Error::Kernel {
        what: "reading this network namespace's cookie".into(),
        source: e,
    })?;
    let mut loader = EbpfLoader::new();
    for name in SHARED_MAPS.iter().chain([&names::STATS]) {
        loader.map_pin_path(name, dir.join(name));
    }
    let mut ebpf = loader.load(PROGRAM_OBJECT).map_err(|e| load_error(&e))?;
    let scope = ebpf
        .map_mut(names::LEARN_SCOPE)
        .ok_or_else(|| Error::Load(format!("the program has no `{}` map", names::LEARN_SCOPE)))?;
    let mut scope: Array<&mut MapData, LearnScope> =
        Array::try_from(scope).map_err(|e| kernel("the learn_scope map", e))?;
    scope
        .set(0, LearnScope { netns_cookie, sock_net, net_cookie }, 0)
        .map_err(|e| kernel("writing the learn_scope map", e))?;
    let prog: &mut TracePoint = ebpf
        .program_mut(names::HANDSHAKE_PROGRAM)
        .ok_or_else(|| Error::Load("the object has no `handshake` program".into()))?
        .try_into()
        .map_err(|e| kernel("the `handshake` program", e))?;
    prog.load().map_err(|e| load_error(&e))?;
    prog.attach("sock", "inet_sock_set_state").map_err(|e| match errno(&e) {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            Error::NoPrivilege { what: "attaching the handshake tracepoint (CAP_PERFMON)" }
        }
        _ => kernel("attaching to the sock:inet_sock_set_state tracepoint", e),
    })?;
    Ok(ebpf)
}

/// The maps this build's program defines (name → definition), from the embedded object.
pub fn defined_maps() -> Result<std::collections::HashMap<String, aya_obj::Map>> {
    let object = aya_obj::Object::parse(PROGRAM_OBJECT)
        .map_err(|e| Error::Load(format!("parsing the embedded program: {e}")))?;
    Ok(object.maps)
}

/// How `maps` (pinned by an earlier build) differ from `defined`, if they do: a new binary
/// reuses pinned maps, so a changed key, value or size must stop it rather than be misread.
pub fn layout_mismatch(
    defined: &std::collections::HashMap<String, aya_obj::Map>,
    maps: &Maps,
) -> Result<Option<String>> {
    for name in SHARED_MAPS {
        let Some(want) = defined.get(name) else {
            return Ok(Some(format!("this build has no `{name}` map")));
        };
        let have = maps.data(name)?.info().map_err(|e| kernel(format!("the {name} map"), e))?;
        let want = (want.key_size(), want.value_size(), want.max_entries(), want.map_flags());
        let have = (have.key_size(), have.value_size(), have.max_entries(), have.map_flags());
        if want != have {
            return Ok(Some(format!(
                "the pinned `{name}` map has (key, value, entries, flags) {have:?}, this build \
                 {want:?}"
            )));
        }
    }
    Ok(None)
}

/// The ids of the link pinned for `iface` and of the program it runs.
pub fn pinned_link_ids(iface: &str) -> Result<(u32, u32)> {
    let dir = attached_dir(iface)?;
    let link =
        PinnedLink::from_pin(dir.join("link")).map_err(|e| kernel("opening the pinned link", e))?;
    let info = FdLink::from(link).info().map_err(|e| kernel("the pinned link's info", e))?;
    Ok((info.id(), info.program_id()))
}

fn attach_error(iface: &str, e: aya::programs::ProgramError) -> Error {
    match errno(&e) {
        Some(libc::EBUSY) | Some(libc::EEXIST) => Error::InterfaceBusy { iface: iface.into() },
        Some(libc::EPERM) => Error::NoPrivilege { what: "attaching an XDP program" },
        Some(libc::EOPNOTSUPP) => kernel(format!("{iface} does not support this XDP mode"), e),
        _ => kernel(format!("attaching to {iface}"), e),
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(names::PROGRAM)
        .ok_or_else(|| Error::Load("the object has no `edge` program".into()))?
        .try_into()
        .map_err(|e| kernel("the `edge` program", e))
}

fn load_error(e: &(dyn std::error::Error + 'static)) -> Error {
    // EACCES is the verifier refusing the program; only EPERM is about privileges.
    match errno(e) {
        Some(libc::EPERM) => Error::NoPrivilege { what: "loading the XDP program" },
        _ => Error::Load(chain(e)),
    }
}

/// The interface's index in this network namespace, or why there is none.
pub fn if_index(iface: &str) -> Result<u32> {
    let name = std::ffi::CString::new(iface).map_err(|_| Error::NoInterface(iface.into()))?;
    // SAFETY: NUL-terminated string.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(Error::NoInterface(iface.into())),
        index => Ok(index),
    }
}

/// `PIN_ROOT/<iface>`, after making sure bpffs is mounted (mounting it if it is not).
pub fn pin_dir(iface: &str) -> Result<PathBuf> {
    if iface.is_empty() || iface.contains('/') || iface.len() > 15 {
        return Err(Error::NoInterface(iface.into()));
    }
    ensure_bpffs(Path::new(PIN_ROOT).parent().unwrap())?;
    Ok(Path::new(PIN_ROOT).join(iface))
}

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

fn ensure_bpffs(mount_point: &Path) -> Result<()> {
    let path = std::ffi::CString::new(mount_point.as_os_str().as_encoded_bytes()).unwrap();
    let is_bpffs = || {
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid path and out pointer.
        unsafe { libc::statfs(path.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
    };
    if is_bpffs() {
        return Ok(());
    }
    if mount_namespace_is_ours_alone() {
        return Err(Error::PrivateBpffs { path: mount_point.display().to_string() });
    }
    let fstype = c"bpf";
    // SAFETY: valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(fstype.as_ptr(), path.as_ptr(), fstype.as_ptr(), 0, std::ptr::null())
    };
    if rc != 0 || !is_bpffs() {
        return Err(Error::NoBpffs {
            path: mount_point.display().to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Whether no other process shares this process's mount namespace, as under `ip netns exec`
/// (which also mounts a fresh /sys, hiding the host's bpffs). A bpffs mounted there dies with
/// the namespace when edge exits, and every pin in it: the XDP link too, so the filter would
/// be detached the moment `edge attach` reported it attached. Processes whose namespace we
/// cannot read do not count as sharing it.
fn mount_namespace_is_ours_alone() -> bool {
    let Ok(own) = std::fs::read_link("/proc/self/ns/mnt") else { return false };
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return false };
    !entries.flatten().any(|entry| {
        let other = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok());
        other.is_some_and(|pid| pid != me)
            && std::fs::read_link(entry.path().join("ns/mnt")).is_ok_and(|ns| ns == own)
    })
}

fn open_pinned_map(path: &Path) -> Result<Map> {
    let data = MapData::from_pin(path).map_err(|e| match errno(&e) {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            Error::NoPrivilege { what: "opening the pinned maps" }
        }
        _ => kernel(format!("opening {}", path.display()), e),
    })?;
    Map::from_map_data(data).map_err(|e| kernel(format!("opening {}", path.display()), e))
}

/// The stats of the filter attached to `iface`, from its pins.
pub fn pinned_stats(iface: &str) -> Result<Stats> {
    let dir = attached_dir(iface)?;
    let map = open_pinned_map(&dir.join(names::STATS))?;
    let map: PerCpuArray<MapData, Counter> =
        PerCpuArray::try_from(map).map_err(|e| kernel("the pinned stats map", e))?;
    Stats::read(&map)
}

/// Sources holding a token bucket in the filter on `iface`, from its pins. The kernel makes
/// these (the control plane does not track them), so this walks the map's keys: call it
/// without holding anything others wait for.
pub fn pinned_bucket_count(iface: &str) -> Result<u64> {
    let dir = attached_dir(iface)?;
    let map = open_pinned_map(&dir.join(names::UNKNOWN_BUCKETS))?;
    let map: HashMap<MapData, Addr, Bucket> =
        HashMap::try_from(map).map_err(|e| kernel("the pinned unknown_buckets map", e))?;
    Ok(map.keys().filter(|k| k.is_ok()).count() as u64)
}

/// The interfaces edge is attached to, from the pins.
pub fn pinned_interfaces() -> Result<Vec<String>> {
    ensure_bpffs(Path::new(PIN_ROOT).parent().unwrap())?;
    let Ok(entries) = std::fs::read_dir(PIN_ROOT) else { return Ok(Vec::new()) };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("link").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// The mode the filter attached to `iface` runs in, from its pinned config map.
pub fn pinned_mode(iface: &str) -> Result<crate::Mode> {
    let dir = attached_dir(iface)?;
    let map = open_pinned_map(&dir.join(names::CONFIG))?;
    let map: Array<MapData, Config> =
        Array::try_from(map).map_err(|e| kernel("the pinned config map", e))?;
    let config = map.get(&0, 0).map_err(|e| kernel("reading the pinned config map", e))?;
    Ok(crate::Mode::from_kernel(config.mode))
}

fn attached_dir(iface: &str) -> Result<PathBuf> {
    let dir = pin_dir(iface)?;
    if !dir.join("link").exists() {
        return Err(Error::NotAttached { iface: iface.into(), pins: dir });
    }
    Ok(dir)
}

/// Whether the XDP link pinned for `iface` still filters a device. The kernel detaches a link
/// when its device is deleted (a driver reload, a re-created veth or bond) but the pin stays:
/// such a link enforces nothing, even once a device of the same name is back (a new device).
/// A live link may be on a device in another network namespace (pins are not per namespace),
/// so only the kernel's word counts, not a lookup of the name here.
pub fn pinned_link_live(iface: &str) -> Result<bool> {
    let dir = attached_dir(iface)?;
    let ifindex = xdp_link_ifindex(&dir.join("link"))
        .map_err(|e| Error::Kernel { what: "reading the pinned link".into(), source: e })?;
    Ok(ifindex != 0)
}

/// The interface index of the XDP link pinned at `path`; 0 once the kernel detached it. aya's
/// `LinkInfo` does not expose it, hence two raw bpf(2) calls (uapi `union bpf_attr` and
/// `struct bpf_link_info`, whose per-type union starts at byte 16; `xdp.ifindex` is its first
/// word).
fn xdp_link_ifindex(path: &Path) -> std::io::Result<u32> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const BPF_LINK_TYPE_XDP: u32 = 6;
    let bpf = |cmd: libc::c_long, attr: &mut [u64; 16]| -> std::io::Result<libc::c_long> {
        // SAFETY: a zero-padded bpf_attr of 128 bytes whose pointers outlive the call.
        let rc = unsafe {
            libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), std::mem::size_of_val(attr))
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(rc)
    };
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut attr = [0u64; 16];
    attr[0] = path.as_ptr() as u64;
    // SAFETY: BPF_OBJ_GET returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(bpf(BPF_OBJ_GET, &mut attr)? as i32) };
    let mut info = [0u32; 16];
    let mut attr = [0u64; 16];
    attr[0] = u64::from(fd.as_raw_fd() as u32) | (std::mem::size_of_val(&info) as u64) << 32;
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    if info[0] != BPF_LINK_TYPE_XDP {
        return Err(std::io::Error::other(format!("link type {} is not XDP", info[0])));
    }
    Ok(info[4])
}

/// Detaches the filter from `iface` and removes its pins (program and maps go with them).
pub fn detach(iface: &str) -> Result<()> {
    let dir = attached_dir(iface)?;
    let link = PinnedLink::from_pin(dir.join("link")).map_err(|e| match errno(&e) {
        Some(libc::EPERM) | Some(libc::EACCES) => Error::NoPrivilege { what: "detaching" },
        _ => kernel("opening the pinned link", e),
    })?;
    let link = link.unpin().map_err(|e| kernel("unpinning the link", e))?;
    aya::programs::links::Link::detach(link).map_err(|e| kernel("detaching", e))?;
    std::fs::remove_dir_all(&dir)
        .map_err(|e| Error::Kernel { what: format!("removing {}", dir.display()), source: e })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(words: [u64; 2]) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&words[0].to_ne_bytes());
        out[8..].copy_from_slice(&words[1].to_ne_bytes());
        out
    }

    #[test]
    fn bucket_masks_keep_the_aggregation_prefix() {
        let mut policy = Policy::default();
        policy.unknown.prefix_v4 = 24;
        policy.unknown.prefix_v6 = 56;
        let c = kernel_config(&policy);
        // v4-mapped: the ::ffff: prefix and the first three octets survive.
        let v4 = bytes(c.bucket_mask_v4);
        assert_eq!(&v4[..15], &[0xff; 15]);
        assert_eq!(v4[15], 0);
        let v6 = bytes(c.bucket_mask_v6);
        assert_eq!(&v6[..7], &[0xff; 7]);
        assert_eq!(&v6[7..], &[0; 9]);
        assert_eq!(mask_words(0), [0, 0]);
        assert_eq!(mask_words(128), [u64::MAX, u64::MAX]);
    }

    #[test]
    fn budgets_become_gcra_intervals() {
        let mut policy = Policy::default();
        policy.unknown.rate_pps = 50;
        policy.unknown.burst = 100;
        policy.unknown.global_pps = 20_000;
        policy.unknown.global_burst = 2_000;
        let c = kernel_config(&policy);
        assert_eq!(c.source_interval_ns, 20_000_000);
        assert_eq!(c.source_tolerance_ns, 99 * 20_000_000);
        assert_eq!(c.global_interval_ns, 50_000);
        assert_eq!(c.global_tolerance_ns, 1_999 * 50_000);
        policy.unknown.rate_pps = 0;
        assert_eq!(kernel_config(&policy).source_interval_ns, 0, "0 pps is strict");
        assert_eq!(c.lists, 0, "empty lists cost no lookups");
    }
}
