//! Token buckets for unknown sources, as GCRA: a bucket is one "theoretical arrival time" word.
//! A packet fits if `tat - now <= tolerance`; taking it moves `tat` one interval later. Burst B
//! at rate R is interval 1e9/R and tolerance (B-1) * interval, both precomputed by userspace.
//!
//! `now` is the coarse monotonic clock (updated every scheduler tick, 1-4 ms). The precise one
//! reads the TSC with an ordering fence that waits for every load in flight, so under a flood
//! it serialized the cache misses of consecutive packets and cost about a third of the drop
//! rate. With a tick-old clock a budget admits its packets in tick-sized bursts (rate x tick),
//! and the rate over any second is the same.
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use edge_common::{
    config::Config,
    keys::Bucket,
    reason::{Reason, UNKNOWN_GLOBAL, UNKNOWN_PASS, UNKNOWN_RATE},
};

use crate::{
    maps::{UNKNOWN_BUCKETS, UNKNOWN_BUDGET},
    parse::Source,
};

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
        // The stable `AtomicU64::fetch_add` needs `target_has_atomic = "64"`, which the bpfel
        // target does not set (its spec has `atomic-cas: false`): the intrinsic beneath it is
        // used directly. The result is unused, so it compiles to the plain BPF atomic add
        // (opcode 0xdb, imm BPF_ADD, no fetch): both takes in the object are that.
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*bucket).tat_ns, interval);
    }
}

/// The unknown-traffic stage: the global budget first (a spent budget drops before any
/// per-source state is touched, so a random-source flood cannot churn the bucket table), then
/// the source's own bucket, created only for a packet that will pass.
#[inline(always)]
pub fn judge_unknown(src: &Source, mask: &[u64; 2], cfg: &Config) -> Reason {
    if cfg.source_interval_ns == 0 {
        return UNKNOWN_RATE;
    }
    if cfg.global_interval_ns == 0 {
        return UNKNOWN_GLOBAL;
    }
    let Some(global) = UNKNOWN_BUDGET.get_ptr_mut(0) else {
        return UNKNOWN_GLOBAL;
    };
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if !fits(global, now, cfg.global_tolerance_ns) {
        return UNKNOWN_GLOBAL;
    }

    let key = bucket_key(src, mask);
    match UNKNOWN_BUCKETS.get_ptr_mut(key.addr()) {
        Some(bucket) => {
            if !fits(bucket, now, cfg.source_tolerance_ns) {
                return UNKNOWN_RATE;
            }
            take(bucket, now, cfg.source_interval_ns);
        }
        None => {
            let fresh = Bucket { tat_ns: now + cfg.source_interval_ns };
            // A full LRU recycles its oldest entry; a failed insert only forgets a charge.
            let _ = UNKNOWN_BUCKETS.insert(key.addr(), &fresh, 0);
        }
    }
    take(global, now, cfg.global_interval_ns);
    UNKNOWN_PASS
}

/// The source masked to its aggregation prefix.
#[inline(always)]
fn bucket_key(src: &Source, mask: &[u64; 2]) -> Source {
    Source { words: [src.words[0] & mask[0], src.words[1] & mask[1]] }
}
