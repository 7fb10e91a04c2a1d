//! Every map the program uses, with its purpose. Names and capacities come from
//! `edge_common::maps`; a userspace test checks the names below match.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use edge_common::{
    config::Config,
    events::{LearnScope, DROP_EVENTS_BYTES, HANDSHAKES_BYTES},
    keys::{Addr, AdmittedUntil, BlockedLine, Bucket, Counter, Credit, Rule, V6Prefix, VisitorDay},
    maps::*,
    reason::STATS_SLOTS,
    ticket::{TicketKey, TICKET_KEY_SLOTS},
};

const BPF_F_NO_PREALLOC: u32 = 1 << 0;
const BPF_F_MMAPABLE: u32 = 1 << 10;
/// Ring buffer output flag: no wakeup; the daemon drains the rings on a timer.
pub const BPF_RB_NO_WAKEUP: u64 = 1;

/// Mode, budgets and clock offset; written by the control plane, read once per packet.
/// Mmap-able only for its page-aligned value: the record's hot fields share one cache line.
#[map(name = "config")]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Bitmap of protected (protocol, port) pairs: one array lookup decides scope.
#[map(name = "protected")]
pub static PROTECTED: Array<u64> = Array::with_max_entries(PROTECTED_WORDS, 0);

/// Deny list (v4-mapped and IPv6 prefixes).
#[map(name = "deny")]
pub static DENY_LIST: LpmTrie<Addr, Rule> =
    LpmTrie::with_max_entries(DENY_CAPACITY, BPF_F_NO_PREALLOC);

/// Allow list (v4-mapped and IPv6 prefixes).
#[map(name = "allow")]
pub static ALLOW_LIST: LpmTrie<Addr, Rule> =
    LpmTrie::with_max_entries(ALLOW_CAPACITY, BPF_F_NO_PREALLOC);

/// The IPv4 /16s and /24s and the hashed IPv6 /32s the deny and allow prefixes touch: a source
/// in none skips the trie.
#[map(name = "list_nets")]
pub static LIST_NETS: Array<u64> = Array::with_max_entries(LIST_NETS_WORDS, BPF_F_MMAPABLE);

/// One bit per IPv4 address, behind one bit per /24 and one per /16: at most three memory
/// accesses per lookup (most of a flood stops at the first, in L1) whatever the number of visitors, and userspace writes it through mmap (no per-entry
/// syscalls to load tens of millions).
#[map(name = "visitors_v4")]
pub static VISITORS_V4: Array<u64> = Array::with_max_entries(VISITORS_V4_WORDS, BPF_F_MMAPABLE);

/// IPv6 visitors by /64 prefix; grows with use instead of preallocating.
#[map(name = "visitors_v6")]
pub static VISITORS_V6: HashMap<V6Prefix, VisitorDay> =
    HashMap::with_max_entries(VISITORS_V6_CAPACITY, BPF_F_NO_PREALLOC);

/// Sources admitted by the queue service (IPv4 v4-mapped, IPv6 /64 with the host half zeroed).
#[map(name = "admitted")]
pub static ADMITTED: HashMap<Addr, AdmittedUntil> =
    HashMap::with_max_entries(ADMITTED_CAPACITY, BPF_F_NO_PREALLOC);

/// The gate in front of `admitted` (see `edge_common::maps::ADMITTED_HINT`); mmap-able so
/// the daemon sets and clears single bytes, never a read-modify-write of a word.
#[map(name = "admitted_hint")]
pub static ADMITTED_HINT: Array<u64> = Array::with_max_entries(ADMITTED_HINT_WORDS, BPF_F_MMAPABLE);

/// Per-source buckets for unknown traffic, keyed by the masked source (aggregation prefix).
#[map(name = "unknown_buckets")]
pub static UNKNOWN_BUCKETS: LruHashMap<Addr, Bucket> =
    LruHashMap::with_max_entries(UNKNOWN_BUCKETS_CAPACITY, 0);

/// The single bucket all unknown sources share.
#[map(name = "unknown_budget")]
pub static UNKNOWN_BUDGET: Array<Bucket> = Array::with_max_entries(1, 0);

/// Per CPU: tokens taken from the global budget ahead of the packets that use them.
#[map(name = "unknown_credit")]
pub static UNKNOWN_CREDIT: PerCpuArray<Credit> = PerCpuArray::with_max_entries(1, 0);

/// Sources over their own budget until their bucket would take a packet again: lines of eight
/// words (tag, until), line 0 the epoch (see `edge_common::maps::unknown_blocked_slot`).
/// Mmap-able for its page-aligned values: each line is one cache line.
#[map(name = "unknown_blocked")]
pub static UNKNOWN_BLOCKED: Array<BlockedLine> =
    Array::with_max_entries(UNKNOWN_BLOCKED_LINES + 1, BPF_F_MMAPABLE);

/// The admission endpoint's port: per-source buckets (whole addresses) and the shared one.
#[map(name = "endpoint_bucket")]
pub static ENDPOINT_BUCKETS: LruHashMap<Addr, Bucket> =
    LruHashMap::with_max_entries(ENDPOINT_BUCKETS_CAPACITY, 0);

#[map(name = "endpoint_budget")]
pub static ENDPOINT_BUDGET: Array<Bucket> = Array::with_max_entries(1, 0);

/// The one bucket every SYN-ACK the program sends with a cookie is charged to.
#[map(name = "syn_reply")]
pub static SYN_REPLY: Array<Bucket> = Array::with_max_entries(1, 0);

/// Per CPU: where the cookie stage copies headers and builds its reply (too big for the stack).
#[map(name = "syn_scratch")]
pub static SYN_SCRATCH: PerCpuArray<crate::syncookie::Scratch> =
    PerCpuArray::with_max_entries(1, 0);

/// The current and previous ticket keys (knocks are verified here, so they keep working while
/// the daemon is down). Written only by the control plane; never in the object file.
#[map(name = "ticket_keys")]
pub static TICKET_KEYS: Array<TicketKey> = Array::with_max_entries(TICKET_KEY_SLOTS, 0);

/// Packets and bytes per reason and disposition, per CPU (no atomics on the hot path).
#[map(name = "stats")]
pub static STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(STATS_SLOTS, 0);

/// Sampled drops for `edge top` (see `edge_common::events`).
#[map(name = "drop_events")]
pub static DROP_EVENTS: RingBuf = RingBuf::with_byte_size(DROP_EVENTS_BYTES, 0);

/// Completed handshakes on protected ports, for visitor learning.
#[map(name = "handshakes")]
pub static HANDSHAKES: RingBuf = RingBuf::with_byte_size(HANDSHAKES_BYTES, 0);

/// Which namespace's handshakes are reported (see `edge_common::events::LearnScope`).
#[map(name = "learn_scope")]
pub static LEARN_SCOPE: Array<LearnScope> = Array::with_max_entries(1, 0);
