//! `edge top`: the sampled drops of the last seconds, ranked by source and by prefix.
use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    time::{Duration, Instant},
};

use edge_common::{events::DropEvent, keys::Addr, reason::REASON_NAMES};

/// Rates are over the last this long.
pub const TOP_WINDOW: Duration = Duration::from_secs(10);
/// At most this many samples are kept (the window's, newest first to go last).
const MAX_SAMPLES: usize = 200_000;

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
pub fn show(addr: &Addr) -> String {
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
}
