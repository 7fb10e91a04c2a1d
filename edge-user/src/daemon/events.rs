//! What the kernel reports through its ring buffers: sampled drops (for `edge top`) and
//! completed handshakes (for visitor learning). Each ring is drained by a thread of its own
//! every 200 ms; the kernel writes without waking anyone, so a flood costs the daemon a
//! bounded amount of work (the ring's size per drain) and never a syscall per packet.
use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, RingBuf};
use edge_common::{
    events::{DropEvent, Handshake},
    keys::Addr,
    maps as names,
    reason::REASON_NAMES,
};
use tracing::{debug, info, warn};

use super::service::Handle;

const DRAIN_EVERY: Duration = Duration::from_millis(200);
/// Rates are over the last this long.
pub const TOP_WINDOW: Duration = Duration::from_secs(10);
/// At most this many samples are kept (the window's, newest first to go last).
const MAX_SAMPLES: usize = 200_000;
/// Peers waiting to be recorded while the daemon cannot take them (not ready, busy).
const MAX_PENDING_PEERS: usize = 100_000;

/// The sampled drops of the last `TOP_WINDOW`.
#[derive(Default)]
pub struct Top {
    samples: VecDeque<(Instant, DropEvent)>,
    started: Option<Instant>,
}

/// A source or prefix with its estimated drop rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Talker {
    pub key: String,
    pub pps: f64,
    pub samples: u64,
    /// The reason most of its samples were dropped for.
    pub reason: &'static str,
}

pub struct TopReport {
    pub window_s: f64,
    pub samples: u64,
    pub sources: Vec<Talker>,
    pub prefixes: Vec<Talker>,
}

impl Top {
    pub fn push(&mut self, at: Instant, event: DropEvent) {
        self.started.get_or_insert(at);
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((at, event));
    }

    fn expire(&mut self, now: Instant) {
        while self.samples.front().is_some_and(|(at, _)| now.duration_since(*at) > TOP_WINDOW) {
            self.samples.pop_front();
        }
    }

    /// The `limit` heaviest sources and prefixes (/24 for IPv4, /48 for IPv6), each sample
    /// standing for `sample_every` drops.
    pub fn report(&mut self, now: Instant, sample_every: u32, limit: usize) -> TopReport {
        self.expire(now);
        let window = self.started.map_or(TOP_WINDOW, |s| now.duration_since(s).min(TOP_WINDOW));
        let window_s = window.as_secs_f64().max(1.0);
        let mut sources: HashMap<Addr, (u64, [u32; REASON_NAMES.len()])> = HashMap::new();
        let mut prefixes: HashMap<(Addr, u8), (u64, [u32; REASON_NAMES.len()])> = HashMap::new();
        for (_, e) in &self.samples {
            let reason = (e.reason as usize).min(REASON_NAMES.len() - 1);
            let s = sources.entry(e.src).or_insert((0, [0; REASON_NAMES.len()]));
            s.0 += 1;
            s.1[reason] += 1;
            let p = prefixes.entry(prefix_of(&e.src)).or_insert((0, [0; REASON_NAMES.len()]));
            p.0 += 1;
            p.1[reason] += 1;
        }
        let rank = |entries: Vec<(String, (u64, [u32; REASON_NAMES.len()]))>| {
            let mut talkers: Vec<Talker> = entries
                .into_iter()
                .map(|(key, (samples, reasons))| Talker {
                    key,
                    pps: samples as f64 * f64::from(sample_every.max(1)) / window_s,
                    samples,
                    reason: REASON_NAMES
                        [(0..reasons.len()).max_by_key(|&r| reasons[r]).unwrap_or(0)],
                })
                .collect();
            talkers.sort_by(|a, b| b.samples.cmp(&a.samples).then_with(|| a.key.cmp(&b.key)));
            talkers.truncate(limit);
            talkers
        };
        TopReport {
            window_s,
            samples: self.samples.len() as u64,
            sources: rank(sources.into_iter().map(|(a, v)| (show(&a), v)).collect()),
            prefixes: rank(
                prefixes
                    .into_iter()
                    .map(|((a, len), v)| (format!("{}/{len}", show(&a)), v))
                    .collect(),
            ),
        }
    }
}

/// The address as users write it: dotted IPv4 for v4-mapped.
fn show(addr: &Addr) -> String {
    match IpAddr::from(*addr) {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(v6.to_string(), |v4| v4.to_string()),
        v4 => v4.to_string(),
    }
}

/// The /24 (IPv4) or /48 (IPv6) a source belongs to, as (masked address, length).
fn prefix_of(addr: &Addr) -> (Addr, u8) {
    let mut masked = *addr;
    let v4 = addr[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
    let (keep, len) = if v4 { (15, 24) } else { (6, 48) };
    masked[keep..].fill(0);
    (masked, len)
}

fn open_ring(iface: &str, name: &str) -> crate::Result<RingBuf<MapData>> {
    let path = crate::filter::pin_dir(iface)?.join(name);
    let data = MapData::from_pin(&path)
        .map_err(|e| crate::error::kernel(format!("opening {}", path.display()), e))?;
    RingBuf::try_from(Map::RingBuf(data))
        .map_err(|e| crate::error::kernel(format!("{} is not a ring buffer", path.display()), e))
}

/// Drains `ring` forever, handing each record to `each`, then `after_drain` once per drain.
fn drain<T: Copy>(mut ring: RingBuf<MapData>, mut each: impl FnMut(T), mut after: impl FnMut()) {
    loop {
        while let Some(item) = ring.next() {
            if item.len() >= std::mem::size_of::<T>() {
                // SAFETY: the kernel wrote a `T` (repr(C), plain data); read unaligned.
                each(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const T) });
            }
        }
        after();
        std::thread::sleep(DRAIN_EVERY);
    }
}

/// Starts the drop sampler's reader on the shared ring (pinned under `iface`).
pub fn read_drops(iface: &str, top: Arc<Mutex<Top>>) -> crate::Result<()> {
    let ring = open_ring(iface, names::DROP_EVENTS)?;
    std::thread::Builder::new()
        .name("edge-drops".into())
        .spawn(move || {
            drain::<DropEvent>(
                ring,
                |event| {
                    debug!(
                        target: "edge::events",
                        src = %show(&event.src),
                        reason = REASON_NAMES.get(event.reason as usize).copied().unwrap_or("?"),
                        would_drop = event.would_drop != 0,
                        "sampled drop"
                    );
                    top.lock().unwrap_or_else(|p| p.into_inner()).push(Instant::now(), event);
                },
                || {},
            )
        })
        .map_err(|e| crate::Error::Kernel { what: "starting the drop reader".into(), source: e })?;
    Ok(())
}

/// Starts visitor learning: reads completed handshakes and records their peers as today's
/// visitors through the daemon's one path for visits (store first, then the kernel), once per
/// drain. Peers already seen today are not written again.
pub fn learn_handshakes(
    iface: &str,
    handle: Handle,
    runtime: tokio::runtime::Handle,
) -> crate::Result<()> {
    let ring = open_ring(iface, names::HANDSHAKES)?;
    let batch = std::cell::RefCell::new(HashSet::<Addr>::new());
    std::thread::Builder::new()
        .name("edge-learning".into())
        .spawn(move || {
            drain::<Handshake>(
                ring,
                |h| {
                    batch.borrow_mut().insert(h.peer);
                },
                || {
                    let peers: Vec<Addr> = batch.borrow_mut().drain().collect();
                    if peers.is_empty() {
                        return;
                    }
                    let learned = runtime.block_on(handle.with({
                        let peers = peers.clone();
                        move |core| core.learn(&peers)
                    }));
                    match learned {
                        Ok(0) => {}
                        Ok(n) => info!(learned = n, "visitors learned from completed handshakes"),
                        // Not ready (an interface waiting) or busy: kept for the next drain,
                        // up to a bound (a ring's worth of new peers per drain at most).
                        Err(status) => {
                            warn!("learning postponed: {}", status.message());
                            let mut batch = batch.borrow_mut();
                            if batch.len() < MAX_PENDING_PEERS {
                                batch.extend(peers);
                            }
                        }
                    }
                },
            )
        })
        .map_err(|e| crate::Error::Kernel {
            what: "starting the learning reader".into(),
            source: e,
        })?;
    Ok(())
}

/// Checks the tracepoint's record layout against the offsets the kernel program reads, so a
/// kernel that moved a field is refused rather than misread.
pub fn check_tracepoint_format() -> Result<(), String> {
    const FORMAT: &str = "/sys/kernel/tracing/events/sock/inet_sock_set_state/format";
    if !std::path::Path::new("/sys/kernel/tracing/events").exists() {
        let (fs, target) = (c"tracefs", c"/sys/kernel/tracing");
        // SAFETY: valid NUL-terminated strings; failing leaves the read below to explain.
        unsafe { libc::mount(fs.as_ptr(), target.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    }
    let text = std::fs::read_to_string(FORMAT)
        .map_err(|e| format!("{FORMAT}: {e} (the sock:inet_sock_set_state tracepoint)"))?;
    check_format(&text).map_err(|e| format!("{FORMAT}: {e}"))
}

fn check_format(text: &str) -> Result<(), String> {
    use edge_common::events::tracepoint as tp;
    for (field, offset) in [
        ("int oldstate", tp::OLDSTATE),
        ("int newstate", tp::NEWSTATE),
        ("__u16 sport", tp::SPORT),
        ("__u16 family", tp::FAMILY),
        ("__u16 protocol", tp::PROTOCOL),
        ("__u8 daddr[4]", tp::DADDR),
        ("__u8 daddr_v6[16]", tp::DADDR_V6),
    ] {
        let want = format!("field:{field};\toffset:{offset};");
        if !text.contains(&want) {
            return Err(format!("`{field}` is not at offset {offset}: learning stays off"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_common::keys::v4_mapped;

    fn drop_from(src: Addr, reason: u32) -> DropEvent {
        DropEvent { src, reason, would_drop: 0 }
    }

    #[test]
    fn top_ranks_sources_and_prefixes_and_scales_by_the_sample_rate() {
        let mut top = Top::default();
        let t0 = Instant::now();
        let a = v4_mapped([203, 0, 113, 7]);
        let b = v4_mapped([203, 0, 113, 8]);
        let c = v4_mapped([198, 51, 100, 1]);
        for i in 0..30 {
            top.push(t0, drop_from(a, edge_common::reason::UNKNOWN_RATE));
            if i < 20 {
                top.push(t0, drop_from(b, edge_common::reason::DENY));
            }
            if i < 5 {
                top.push(t0, drop_from(c, edge_common::reason::UNKNOWN_GLOBAL));
            }
        }
        let r = top.report(t0 + TOP_WINDOW, 100, 2);
        assert_eq!(r.samples, 55);
        let keys: Vec<&str> = r.sources.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["203.0.113.7", "203.0.113.8"]);
        assert_eq!(r.sources[0].reason, "unknown_rate");
        assert_eq!(r.sources[1].reason, "deny");
        // 30 samples x 100 over 10 s.
        assert!((r.sources[0].pps - 300.0).abs() < 1e-9, "{:?}", r.sources[0]);
        assert_eq!(r.prefixes[0].key, "203.0.113.0/24");
        assert_eq!(r.prefixes[0].samples, 50);
        // Past the window, everything has expired.
        let r = top.report(t0 + TOP_WINDOW * 2, 100, 2);
        assert!(r.sources.is_empty() && r.samples == 0);
    }

    #[test]
    fn ipv6_sources_group_by_their_48() {
        let mut top = Top::default();
        let t0 = Instant::now();
        let addr: std::net::Ipv6Addr = "2001:db8:1:2::5".parse().unwrap();
        top.push(t0, drop_from(addr.octets(), 16));
        let r = top.report(t0, 1, 5);
        assert_eq!(r.prefixes[0].key, "2001:db8:1::/48");
        assert_eq!(r.sources[0].key, "2001:db8:1:2::5");
    }

    #[test]
    fn the_running_kernels_tracepoint_matches_the_offsets() {
        // Every machine this runs on has tracefs; a moved field would fail here first.
        if let Ok(text) =
            std::fs::read_to_string("/sys/kernel/tracing/events/sock/inet_sock_set_state/format")
        {
            check_format(&text).unwrap();
        }
        assert!(check_format("field:int oldstate;\toffset:99;").is_err());
    }
}
