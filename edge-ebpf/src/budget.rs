//! Token buckets for unknown sources, as GCRA: a bucket is one "theoretical arrival time" word.
//! A packet fits if `tat - now <= tolerance`; taking it moves `tat` one interval later. Burst B
//! at rate R is interval 1e9/R and tolerance (B-1) * interval, both precomputed by userspace.
//!
//! `now` is the coarse monotonic clock (updated every scheduler tick, 1-4 ms). The precise one
//! reads the TSC with an ordering fence that waits for every load in flight, so under a flood
//! it serialized the cache misses of consecutive packets and cost about a third of the drop
//! rate. With a tick-old clock a budget admits its packets in tick-sized bursts (rate x tick),
//! and the rate over any second is the same.
//!
//! The global unknown budget is charged in batches: a CPU takes `global_batch` tokens at once
//! and spends them from a per-CPU credit, so CPUs passing unknown traffic write the shared word
//! once per batch, not once per packet (measured: two CPUs passing unknown traffic at once cost
//! 3.3x per packet with a shared write each). Userspace keeps the batches within a quarter of
//! the burst over all CPUs.
//!
//! A source found over its own budget is remembered in one word of `unknown_blocked` until its
//! bucket would take a packet again, and its next packets are dropped from that word: under a
//! botnet of many real addresses each over its budget, the bucket table (a million entries)
//! misses the caches on every packet, the 2 MiB of words much less (measured in the lab: 440
//! ns of program time per packet for the table lookup). A source's hash picks a line of eight
//! words, one cache line, and it takes any way of it: with one word per hash, half of a 100 k
//! botnet collided and went back to the table on every other packet. The word only ever says
//! what the bucket said: a bucket's time only moves later, so a source remembered as over
//! budget is over budget. Its time is rounded so that the word forgets a source before its
//! bucket would take a packet, never after (see `edge_common::keys::blocked_word`). A source
//! whose packet takes its bucket's last token is remembered then, with the bucket in hand: a
//! zombie at its budget costs one bucket lookup per period, not two.
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use aya_ebpf::maps::{Array, LruHashMap, PerCpuArray};
use edge_common::{
    config::{Budget, Config},
    keys::{
        blocked_holds, blocked_way_free, blocked_word, Addr, BlockedLine, Bucket, Credit,
        BLOCKED_WAYS,
    },
    maps::unknown_blocked_slot,
    reason::{
        Reason, ENDPOINT_GLOBAL, ENDPOINT_PASS, ENDPOINT_RATE, UNKNOWN_GLOBAL, UNKNOWN_PASS,
        UNKNOWN_RATE,
    },
};

use crate::{
    maps::{
        ENDPOINT_BUCKETS, ENDPOINT_BUDGET, UNKNOWN_BLOCKED, UNKNOWN_BUCKETS, UNKNOWN_BUDGET,
        UNKNOWN_CREDIT,
    },
    parse::Source,
};

/// One set of budgets: its maps, and the reasons for a pass, a source over its own budget and
/// the global budget spent.
struct Budgets {
    buckets: &'static LruHashMap<Addr, Bucket>,
    global: &'static Array<Bucket>,
    /// This CPU's tokens taken ahead from `global`, and how many to take at once; none: one
    /// per packet.
    credit: Option<(&'static PerCpuArray<Credit>, u32)>,
    /// Sources remembered over their own budget; none: the bucket table every time.
    blocked: Option<&'static Array<BlockedLine>>,
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
        credit: Some((&UNKNOWN_CREDIT, cfg.global_batch)),
        blocked: Some(&UNKNOWN_BLOCKED),
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
        credit: None,
        blocked: None,
        pass: ENDPOINT_PASS,
        rate: ENDPOINT_RATE,
        spent: ENDPOINT_GLOBAL,
    };
    judge(src, &cfg.endpoint, &budgets)
}

/// Whether one shared bucket alone (the SYN cookie reply budget) would take a packet now.
/// 0 interval: nothing is let through.
#[inline(always)]
pub fn shared_fits(bucket: &Array<Bucket>, interval_ns: u64, tolerance_ns: u64) -> bool {
    let Some(bucket) = bucket.get_ptr_mut(0) else { return false };
    interval_ns != 0 && fits(bucket, unsafe { bpf_ktime_get_coarse_ns() }, tolerance_ns)
}

/// Takes a token from that bucket (after `shared_fits`, once the packet is sure to use it).
#[inline(always)]
pub fn shared_take(bucket: &Array<Bucket>, interval_ns: u64) {
    if let Some(bucket) = bucket.get_ptr_mut(0) {
        take(bucket, unsafe { bpf_ktime_get_coarse_ns() }, interval_ns);
    }
}

/// The global budget first (a spent budget drops before any per-source state is touched, so a
/// random-source flood cannot churn the bucket table), then the source's own bucket, created
/// only for a packet that will pass; the global budget is charged last, from this CPU's
/// credit while it lasts.
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
    let credit = budgets.credit.and_then(|(map, batch)| Some((map.get_ptr_mut(0)?, batch)));
    let credited = credit.is_some_and(|(c, _)| unsafe { (*c).tokens } > 0);
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if !credited && !fits(global, now, budget.global_tolerance_ns) {
        return budgets.spent;
    }

    let blocked = budgets.blocked.map(|lines| (lines, blocked_slot(lines, key)));
    if let Some((lines, (line, tag))) = blocked {
        if still_blocked(lines, line, tag, now) {
            return budgets.rate;
        }
    }
    // A bucket's time once it is over budget: the word remembers the source until it is not.
    let remember = |tat: u64| {
        if let Some((lines, (line, tag))) = blocked {
            if tat.saturating_sub(now) > budget.source_tolerance_ns {
                remember_blocked(lines, line, tag, tat - budget.source_tolerance_ns, now);
            }
        }
    };
    match budgets.buckets.get_ptr_mut(key.addr()) {
        Some(bucket) => {
            if !fits(bucket, now, budget.source_tolerance_ns) {
                remember(unsafe { (*bucket).tat_ns });
                return budgets.rate;
            }
            take(bucket, now, budget.source_interval_ns);
            // That took its last token: its next packet is dropped from the word.
            remember(unsafe { (*bucket).tat_ns });
        }
        None => {
            let fresh = Bucket { tat_ns: now + budget.source_interval_ns };
            // A full LRU recycles its oldest entry; a failed insert only forgets a charge (and
            // remembers nothing: the next packet makes the bucket again).
            if budgets.buckets.insert(key.addr(), &fresh, 0).is_ok() {
                remember(fresh.tat_ns);
            }
        }
    }
    match credit {
        // Saturating: another run on this CPU (a test run is preemptible) may have spent the
        // last token since it was read; the count must never wrap to 2^64.
        Some((credit, _)) if credited => unsafe {
            (*credit).tokens = (*credit).tokens.saturating_sub(1)
        },
        Some((credit, batch)) if batch > 1 => {
            take(global, now, budget.global_interval_ns * u64::from(batch));
            unsafe { (*credit).tokens = u64::from(batch - 1) };
        }
        _ => take(global, now, budget.global_interval_ns),
    }
    budgets.pass
}

/// The key's line and tag in the over-budget words, under their current epoch.
#[inline(always)]
fn blocked_slot(lines: &Array<BlockedLine>, key: &Source) -> (u32, u64) {
    let epoch = lines.get(0).map_or(0, |line| line.ways[0]);
    unknown_blocked_slot(key.words, epoch)
}

/// Whether the line remembers this source over its budget at `now`.
#[inline(always)]
fn still_blocked(lines: &Array<BlockedLine>, line: u32, tag: u64, now: u64) -> bool {
    let Some(line) = lines.get(line) else { return false };
    line.ways.iter().any(|&word| blocked_holds(word, tag, now))
}

/// Remembers the source as over its budget until `until_ns` (when its bucket would take a
/// packet again). Its way: the one that holds it already, else the first that holds nobody now
/// (empty or lapsed), else one its tag picks. Another CPU may write the same line meanwhile;
/// each word is stored whole, so the worst is one source forgotten, which its bucket judges.
#[inline(always)]
fn remember_blocked(lines: &Array<BlockedLine>, line: u32, tag: u64, until_ns: u64, now: u64) {
    let Some(line) = lines.get_ptr_mut(line) else { return };
    let ways = unsafe { &mut (*line).ways };
    // The tag's bit 0 is always set: the victim comes from the bits above it.
    let mut way = (tag >> 1) as usize;
    let mut free = false;
    for (i, &word) in ways.iter().enumerate() {
        if blocked_holds(word, tag, now) {
            way = i;
            break;
        }
        if !free && blocked_way_free(word, now) {
            way = i;
            free = true;
        }
    }
    ways[way % BLOCKED_WAYS] = blocked_word(tag, until_ns, now);
}

/// The source masked to its aggregation prefix.
#[inline(always)]
fn bucket_key(src: &Source, mask: &[u64; 2]) -> Source {
    Source { words: [src.words[0] & mask[0], src.words[1] & mask[1]] }
}
