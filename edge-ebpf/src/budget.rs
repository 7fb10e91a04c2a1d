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
use aya_ebpf::maps::{Array, LruHashMap};
use edge_common::{
    config::{Budget, Config},
    keys::{Addr, Bucket},
    reason::{
        Reason, ENDPOINT_GLOBAL, ENDPOINT_PASS, ENDPOINT_RATE, UNKNOWN_GLOBAL, UNKNOWN_PASS,
        UNKNOWN_RATE,
    },
};

use crate::{
    maps::{ENDPOINT_BUCKETS, ENDPOINT_BUDGET, UNKNOWN_BUCKETS, UNKNOWN_BUDGET},
    parse::Source,
};

/// One set of budgets: its maps, and the reasons for a pass, a source over its own budget and
/// the global budget spent.
struct Budgets {
    buckets: &'static LruHashMap<Addr, Bucket>,
    global: &'static Array<Bucket>,
    pass: Reason,
    rate: Reason,
    spent: Reason,
}

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

/// The unknown-traffic stage: the source masked to its aggregation prefix, against the
/// unknown budgets.
#[inline(always)]
pub fn judge_unknown(src: &Source, mask: &[u64; 2], cfg: &Config) -> Reason {
    let budget = Budget {
        source_interval_ns: cfg.source_interval_ns,
        source_tolerance_ns: cfg.source_tolerance_ns,
        global_interval_ns: cfg.global_interval_ns,
        global_tolerance_ns: cfg.global_tolerance_ns,
    };
    let budgets = Budgets {
        buckets: &UNKNOWN_BUCKETS,
        global: &UNKNOWN_BUDGET,
        pass: UNKNOWN_PASS,
        rate: UNKNOWN_RATE,
        spent: UNKNOWN_GLOBAL,
    };
    judge(&bucket_key(src, mask), &budget, &budgets)
}

/// The admission endpoint's port: its own budgets, per source (an IPv6 /64), so a flood
/// bounded here cannot spend the unknown budget (or the reverse).
#[inline(always)]
pub fn judge_endpoint(src: &Source, cfg: &Config) -> Reason {
    let budgets = Budgets {
        buckets: &ENDPOINT_BUCKETS,
        global: &ENDPOINT_BUDGET,
        pass: ENDPOINT_PASS,
        rate: ENDPOINT_RATE,
        spent: ENDPOINT_GLOBAL,
    };
    judge(src, &cfg.endpoint, &budgets)
}

/// The global budget first (a spent budget drops before any per-source state is touched, so a
/// random-source flood cannot churn the bucket table), then the source's own bucket, created
/// only for a packet that will pass.
#[inline(always)]
fn judge(key: &Source, budget: &Budget, budgets: &Budgets) -> Reason {
    if budget.source_interval_ns == 0 {
        return budgets.rate;
    }
    if budget.global_interval_ns == 0 {
        return budgets.spent;
    }
    let Some(global) = budgets.global.get_ptr_mut(0) else {
        return budgets.spent;
    };
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if !fits(global, now, budget.global_tolerance_ns) {
        return budgets.spent;
    }

    match budgets.buckets.get_ptr_mut(key.addr()) {
        Some(bucket) => {
            if !fits(bucket, now, budget.source_tolerance_ns) {
                return budgets.rate;
            }
            take(bucket, now, budget.source_interval_ns);
        }
        None => {
            let fresh = Bucket { tat_ns: now + budget.source_interval_ns };
            // A full LRU recycles its oldest entry; a failed insert only forgets a charge.
            let _ = budgets.buckets.insert(key.addr(), &fresh, 0);
        }
    }
    take(global, now, budget.global_interval_ns);
    budgets.pass
}

/// The source masked to its aggregation prefix.
#[inline(always)]
fn bucket_key(src: &Source, mask: &[u64; 2]) -> Source {
    Source { words: [src.words[0] & mask[0], src.words[1] & mask[1]] }
}
