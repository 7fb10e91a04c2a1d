//! Token buckets for unknown sources, as GCRA: a bucket is one "theoretical arrival time" word.
//! A packet fits if `tat - now <= tolerance`; taking it moves `tat` one interval later. Burst B
//! at rate R is interval 1e9/R and tolerance (B-1) * interval, both precomputed by userspace.
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::helpers::bpf_ktime_get_ns;
use edge_common::{
    config::Config,
    keys::{Addr, Bucket},
    reason::{Reason, UNKNOWN_GLOBAL, UNKNOWN_PASS, UNKNOWN_RATE},
};

use crate::maps::{UNKNOWN_BUCKETS, UNKNOWN_BUDGET};

#[inline(always)]
fn fits(bucket: *const Bucket, now: u64, tolerance: u64) -> bool {
    unsafe { (*bucket).tat_ns }.saturating_sub(now) <= tolerance
}

/// Takes one token. The add is atomic so CPUs sharing a bucket do not lose each other's
/// charges; the catch-up store after an idle period may race, which only forgives one interval.
#[inline(always)]
fn take(bucket: *mut Bucket, now: u64, interval: u64) {
    unsafe {
        if (*bucket).tat_ns < now {
            (*bucket).tat_ns = now;
        }
        // BPF has atomic add (no compare-and-swap on older ISAs, so core's AtomicU64 offers
        // no fetch_add here); the result is unused, which compiles to a plain `lock xadd`.
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*bucket).tat_ns, interval);
    }
}

/// The unknown-traffic stage: the global budget first (a spent budget drops before any
/// per-source state is touched, so a random-source flood cannot churn the bucket table), then
/// the source's own bucket, created only for a packet that will pass.
#[inline(always)]
pub fn judge_unknown(src: &Addr, mask: &[u64; 2], cfg: &Config) -> Reason {
    if cfg.source_interval_ns == 0 {
        return UNKNOWN_RATE;
    }
    if cfg.global_interval_ns == 0 {
        return UNKNOWN_GLOBAL;
    }
    let Some(global) = UNKNOWN_BUDGET.get_ptr_mut(0) else {
        return UNKNOWN_GLOBAL;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    if !fits(global, now, cfg.global_tolerance_ns) {
        return UNKNOWN_GLOBAL;
    }

    let key = bucket_key(src, mask);
    match UNKNOWN_BUCKETS.get_ptr_mut(&key) {
        Some(bucket) => {
            if !fits(bucket, now, cfg.source_tolerance_ns) {
                return UNKNOWN_RATE;
            }
            take(bucket, now, cfg.source_interval_ns);
        }
        None => {
            let fresh = Bucket { tat_ns: now + cfg.source_interval_ns };
            // A full LRU recycles its oldest entry; a failed insert only forgets a charge.
            let _ = UNKNOWN_BUCKETS.insert(&key, &fresh, 0);
        }
    }
    take(global, now, cfg.global_interval_ns);
    UNKNOWN_PASS
}

/// The source masked to its aggregation prefix.
#[inline(always)]
fn bucket_key(src: &Addr, mask: &[u64; 2]) -> Addr {
    let hi = u64::from_ne_bytes([src[0], src[1], src[2], src[3], src[4], src[5], src[6], src[7]]);
    let lo =
        u64::from_ne_bytes([src[8], src[9], src[10], src[11], src[12], src[13], src[14], src[15]]);
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&(hi & mask[0]).to_ne_bytes());
    key[8..].copy_from_slice(&(lo & mask[1]).to_ne_bytes());
    key
}
