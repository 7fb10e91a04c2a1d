//! The config record the program reads once per packet, made from a policy.
use edge_common::config::{
    Budget, Config, LIST_ADMITTED, LIST_ALLOW, LIST_DENY, SYN_COOKIES_ALWAYS, SYN_COOKIES_ATTACK,
    SYN_COOKIES_OFF,
};

use crate::{
    policy::{Policy, SynCookieMode},
    syncookies::host_options,
};

/// Network-order byte mask of a prefix length over 16 bytes, as the two words `Config` holds.
fn mask_words(bits: u32) -> [u64; 2] {
    let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
    let bytes = mask.to_be_bytes();
    [
        u64::from_ne_bytes(bytes[..8].try_into().unwrap()),
        u64::from_ne_bytes(bytes[8..].try_into().unwrap()),
    ]
}

/// A rate and burst per source and for all sources, as GCRA intervals and tolerances.
fn budget(rate_pps: u32, burst: u32, global_pps: u32, global_burst: u32) -> Budget {
    let interval = |pps: u32| if pps == 0 { 0 } else { 1_000_000_000 / u64::from(pps) };
    let (source, global) = (interval(rate_pps), interval(global_pps));
    Budget {
        source_interval_ns: source,
        source_tolerance_ns: u64::from(burst.saturating_sub(1)) * source,
        global_interval_ns: global,
        global_tolerance_ns: u64::from(global_burst.saturating_sub(1)) * global,
    }
}

/// The kernel's view of a policy.
pub fn kernel_config(policy: &Policy) -> Config {
    let u = &policy.unknown;
    let unknown = budget(u.rate_pps, u.burst, u.global_pps, u.global_burst);
    let endpoint = policy.admission.http.as_ref();
    let c = &policy.syn_cookies;
    let reply = budget(1, 1, c.reply_pps, c.reply_burst);
    let (mss_v4, mss_v6) = if c.mode == SynCookieMode::Off { (0, 0) } else { syn_mss(policy) };
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
        source_interval_ns: unknown.source_interval_ns,
        source_tolerance_ns: unknown.source_tolerance_ns,
        global_interval_ns: unknown.global_interval_ns,
        global_tolerance_ns: unknown.global_tolerance_ns,
        tai_offset_s: tai_offset_s(),
        bucket_mask_v4: mask_words(96 + u32::from(u.prefix_v4)),
        bucket_mask_v6: mask_words(u32::from(u.prefix_v6)),
        knock_port: policy.admission.knock_port.map_or(0, u32::from),
        sample_every: policy.drop_sample,
        endpoint_port: endpoint.map_or(0, |h| u32::from(h.listen.port())),
        global_batch: global_batch(u.global_burst, nr_cpus()),
        endpoint: endpoint.map_or(Budget::default(), |h| {
            budget(h.source_pps, h.source_burst, h.global_pps, h.global_burst)
        }),
        syn_cookies: match c.mode {
            SynCookieMode::Off => SYN_COOKIES_OFF,
            SynCookieMode::Attack => SYN_COOKIES_ATTACK,
            SynCookieMode::Always => SYN_COOKIES_ALWAYS,
        },
        syn_options: if c.mode == SynCookieMode::Off { 0 } else { host_options() },
        syn_mss_v4: mss_v4,
        syn_mss_v6: mss_v6,
        _pad: 0,
        syn_reply_interval_ns: reply.global_interval_ns,
        syn_reply_tolerance_ns: reply.global_tolerance_ns,
    }
}

/// The MSS our SYN-ACKs announce: as configured, or what the smallest MTU of the daemon's
/// interfaces carries (less the IPv4 or IPv6 and TCP headers), as the kernel announces it.
fn syn_mss(policy: &Policy) -> (u16, u16) {
    let c = &policy.syn_cookies;
    let interfaces = policy.daemon.iter().flat_map(|d| d.interfaces.iter());
    let mtu = interfaces.filter_map(|i| crate::ifaddrs::mtu(i)).min().unwrap_or(1500);
    let carried =
        |headers: u32, floor: u32| (mtu.saturating_sub(headers)).clamp(floor, 65_495) as u16;
    (c.mss_v4.unwrap_or_else(|| carried(40, 536)), c.mss_v6.unwrap_or_else(|| carried(60, 1220)))
}

/// Most tokens a CPU takes from the global budget at once.
const MAX_GLOBAL_BATCH: u32 = 64;

/// Tokens a CPU takes from the global budget at once: a quarter of the burst shared by every
/// CPU (so what CPUs hold ahead never exceeds a quarter of the burst), at most 64, at least 1
/// (one per packet, exactly as configured, for small budgets).
fn global_batch(global_burst: u32, cpus: u32) -> u32 {
    (global_burst / 4 / cpus.max(1)).clamp(1, MAX_GLOBAL_BATCH)
}

/// The CPUs the kernel may run the program on (per-CPU maps have one slot each).
fn nr_cpus() -> u32 {
    aya::util::nr_cpus().map_or(1, |n| n as u32)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_batches_hold_at_most_a_quarter_of_the_burst() {
        assert_eq!(global_batch(3, 2), 1, "small budgets charge one token a packet");
        assert_eq!(global_batch(2_000, 2), 64);
        assert_eq!(global_batch(200, 2), 25);
        assert_eq!(global_batch(200, 64), 1);
        for (burst, cpus) in [(16, 2), (1_000, 8), (20_000, 32), (7, 3)] {
            let held = global_batch(burst, cpus) * cpus;
            assert!(held <= (burst / 4).max(cpus), "{burst} over {cpus} CPUs: {held}");
        }
    }

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
