//! Map names (as the kernel and the bpffs pins know them), capacities, and the inventory: the
//! one list of the program's maps, which the loader takes its list from and a test checks
//! against the object the build produced.
//!
//! Names are at most 15 bytes (the kernel's `BPF_OBJ_NAME_LEN` minus the NUL).

/// How a daemon's interfaces hold a map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holding {
    /// One map for all of a daemon's interfaces, pinned in each interface's directory.
    Shared,
    /// One map per interface, pinned in its directory (the counters).
    PerInterface,
    /// Made fresh by whoever loads the program and never pinned (the handshake program's scope).
    Private,
}

/// Every map the program defines, by name, with how it is held.
pub const INVENTORY: [(&str, Holding); 22] = [
    (CONFIG, Holding::Shared),
    (PROTECTED, Holding::Shared),
    (DENY, Holding::Shared),
    (ALLOW, Holding::Shared),
    (LIST_NETS, Holding::Shared),
    (VISITORS_V4, Holding::Shared),
    (VISITORS_V6, Holding::Shared),
    (ADMITTED, Holding::Shared),
    (ADMITTED_HINT, Holding::Shared),
    (UNKNOWN_BUCKETS, Holding::Shared),
    (UNKNOWN_BUDGET, Holding::Shared),
    (UNKNOWN_CREDIT, Holding::Shared),
    (UNKNOWN_BLOCKED, Holding::Shared),
    (ENDPOINT_BUCKETS, Holding::Shared),
    (ENDPOINT_BUDGET, Holding::Shared),
    (SYN_REPLY_BUDGET, Holding::Shared),
    (TICKET_KEYS, Holding::Shared),
    (DROP_EVENTS, Holding::Shared),
    (HANDSHAKES, Holding::Shared),
    (STATS, Holding::PerInterface),
    (LEARN_SCOPE, Holding::Private),
    (SYN_SCRATCH, Holding::Private),
];

/// `Config` record, one entry.
pub const CONFIG: &str = "config";
/// Protected (protocol, port) pairs as a bitmap: see [`crate::keys::protected_slot`].
pub const PROTECTED: &str = "protected";
/// Deny list, LPM trie over v4-mapped 16-byte addresses.
pub const DENY: &str = "deny";
/// Allow list, LPM trie over v4-mapped 16-byte addresses.
pub const ALLOW: &str = "allow";
/// Per list (deny, then allow): one bit per IPv4 /24 that a prefix touches, one bit per hashed
/// IPv6 /32, and one bit per IPv4 /16; mmap-able. See [`LIST_NETS_REGION_WORDS`] and
/// [`LIST_NETS_BLOCK_WORDS`].
pub const LIST_NETS: &str = "list_nets";
/// IPv4 visitors: one bit per IPv4 address (the whole space), then one bit per /24 and one per
/// /16 that holds any visitor; mmap-able. See [`VISITORS_V4_WORDS`].
pub const VISITORS_V4: &str = "visitors_v4";
/// IPv6 visitors by /64 prefix.
pub const VISITORS_V6: &str = "visitors_v6";
/// Sources admitted by the queue service, until an expiry time.
pub const ADMITTED: &str = "admitted";
/// Per-source token buckets for unknown traffic (LRU).
pub const UNKNOWN_BUCKETS: &str = "unknown_buckets";
/// The global budget shared by all unknown sources, one entry.
pub const UNKNOWN_BUDGET: &str = "unknown_budget";
/// Per CPU: tokens taken from the global budget ahead, in batches of `Config::global_batch`.
pub const UNKNOWN_CREDIT: &str = "unknown_credit";
/// Sources found over their own budget, each remembered in one word of a line of eight until
/// its bucket would take a packet again (see [`unknown_blocked_slot`]); the first word of line
/// 0 is the epoch that forgets them all.
pub const UNKNOWN_BLOCKED: &str = "unknown_blocked";
/// The admission endpoint's port has budgets of its own (`admission.http`): per source, and
/// for all sources together.
pub const ENDPOINT_BUCKETS: &str = "endpoint_bucket";
pub const ENDPOINT_BUDGET: &str = "endpoint_budget";
/// Per-CPU packet and byte counters per reason and disposition.
pub const STATS: &str = "stats";
/// The global budget of SYN-ACKs the program sends with cookies, one entry.
pub const SYN_REPLY_BUDGET: &str = "syn_reply";
/// Per CPU: where the SYN cookie stage copies headers and builds its reply; never pinned.
pub const SYN_SCRATCH: &str = "syn_scratch";
/// Ticket keys for knock verification: slot 0 current, slot 1 previous.
pub const TICKET_KEYS: &str = "ticket_keys";

/// A cache-resident gate in front of `admitted`: one byte per hash slot, non-zero when some
/// admission may hash there. A zero byte proves a source is not admitted without touching the
/// admitted map's large bucket array (a cache miss per packet under a random-source flood).
/// Two generations and a last word that says which is live, so the daemon can rebuild one
/// from the admitted map while the kernel reads the other; writers set bytes in both.
pub const ADMITTED_HINT: &str = "admitted_hint";
pub const ADMITTED_HINT_BITS: u32 = 20;
/// Slots per generation (1 MiB of bytes).
pub const ADMITTED_HINT_SLOTS: u32 = 1 << ADMITTED_HINT_BITS;
/// Words in the map: two generations, then the generation word.
pub const ADMITTED_HINT_WORDS: u32 = 2 * ADMITTED_HINT_SLOTS / 8 + 1;
/// The index of the word that holds the live generation (0 or 1).
pub const ADMITTED_HINT_GENERATION: u32 = ADMITTED_HINT_WORDS - 1;

/// Sampled dropped packets, for `edge top` (ring buffer).
pub const DROP_EVENTS: &str = "drop_events";
/// Completed TCP handshakes on protected ports, for visitor learning (ring buffer).
pub const HANDSHAKES: &str = "handshakes";
/// The handshake program's scope (one `LearnScope`): its own, made fresh by each daemon that
/// learns, never pinned.
pub const LEARN_SCOPE: &str = "learn_scope";

/// The XDP program's name in the object file.
pub const PROGRAM: &str = "edge";
/// The tracepoint program (sock:inet_sock_set_state) that reports completed handshakes.
pub const HANDSHAKE_PROGRAM: &str = "handshake";

/// Words of IPv4 address bits in `visitors_v4`: 2^32 addresses / 64 bits per word (512 MiB).
pub const VISITORS_V4_ADDR_WORDS: u32 = 1 << 26;
/// Words of the net summary after them: one bit per /24, set while the /24 may hold a visitor
/// (2 MiB). A spoofed flood draws sources from the whole space, most of it in /24s where no
/// visitor lives: for those one read of this small, cache-friendly summary decides, instead
/// of a cache and TLB miss in the 512 MiB of address bits. A set bit with no visitor behind
/// it (after removals) only costs that second read; a visitor's net bit is never clear.
pub const VISITORS_V4_NET_WORDS: u32 = 1 << 18;
/// Words of the block summary after the net summary: one bit per /16, set while the /16 may
/// hold a visitor (8 KiB, resident in L1). Real visitor sets are concentrated (a national
/// site's visitors live in its country's address blocks) while a spoofed flood spans the whole
/// space: most of its sources fall in /16s with no visitor and are decided from this summary
/// without touching the net summary, which L3 may not hold under a flood. A visitor's block
/// bit is never clear.
pub const VISITORS_V4_BLOCK_WORDS: u32 = 1 << 10;
/// Words in `visitors_v4`.
pub const VISITORS_V4_WORDS: u32 =
    VISITORS_V4_ADDR_WORDS + VISITORS_V4_NET_WORDS + VISITORS_V4_BLOCK_WORDS;
/// Words of one region of `list_nets` (2 MiB): a list's IPv4 bits (one per /24) or its IPv6
/// bits (one per hash of a /32, or of a /48). A trie lookup walks a chain of nodes, one per
/// branch on the way to the longest match, each a likely cache miss once the list holds
/// thousands of prefixes, and every packet paid one walk per non-empty list before its
/// verdict. A clear bit proves the source is not listed; a set bit sends it on to the trie,
/// which decides. Writers set a prefix's bits before inserting it and clear them only after
/// removing it.
pub const LIST_NETS_REGION_WORDS: u32 = 1 << 18;
/// Words of a list's IPv4 block region, after its /24 and /32 regions: one bit per /16 that a
/// prefix touches (8 KiB, resident in L1), read before the /24 bit. Under a whole-space flood
/// most sources are in no listed /16, and the 2 MiB /24 region is more than L2 holds.
pub const LIST_NETS_BLOCK_WORDS: u32 = 1 << 10;
/// Words of one list in `list_nets`: its IPv4 /24 region, IPv6 /32 region, IPv4 /16 blocks
/// and IPv6 /48 region (a region's size, one bit per hash of a /48, read after the /32 bit).
pub const LIST_NETS_LIST_WORDS: u32 = 3 * LIST_NETS_REGION_WORDS + LIST_NETS_BLOCK_WORDS;
/// Words in `list_nets`: the deny list's, then the allow list's.
pub const LIST_NETS_WORDS: u32 = 2 * LIST_NETS_LIST_WORDS;
/// IPv6 visitor /64 prefixes.
pub const VISITORS_V6_CAPACITY: u32 = 2_000_000;
/// Admitted sources (IPv4 addresses and IPv6 /64 prefixes together).
pub const ADMITTED_CAPACITY: u32 = 4_000_000;
/// Allow-list prefixes.
pub const ALLOW_CAPACITY: u32 = 65_536;
/// Deny-list prefixes.
pub const DENY_CAPACITY: u32 = 65_536;
/// Per-source token buckets kept at once; the least recently used are recycled.
pub const UNKNOWN_BUCKETS_CAPACITY: u32 = 1_000_000;
/// Lines of [`UNKNOWN_BLOCKED`] (a power of two; 2 MiB, 262 k ways: a botnet of 100 k sources
/// fills them a third), plus the epoch's line before them.
pub const UNKNOWN_BLOCKED_LINES: u32 = 1 << UNKNOWN_BLOCKED_BITS;
pub const UNKNOWN_BLOCKED_BITS: u32 = 15;

/// A bucket key's line in [`UNKNOWN_BLOCKED`] (1-based: line 0 holds the epoch) and its tag
/// under `epoch`: a multiplicative hash of both words, its top bits the line and its low
/// [`BLOCKED_TAG_BITS`](crate::keys::BLOCKED_TAG_BITS) the tag (never 0, which is an empty way).
#[inline(always)]
pub const fn unknown_blocked_slot(words: [u64; 2], epoch: u64) -> (u32, u64) {
    let h = (words[0] ^ words[1].rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let h = (h ^ (h >> 31)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let line = 1 + (h >> (64 - UNKNOWN_BLOCKED_BITS)) as u32;
    // The epoch shifted past bit 0, which `| 1` sets: consecutive epochs always differ.
    let tag = ((h ^ epoch << 1) & ((1 << crate::keys::BLOCKED_TAG_BITS) - 1)) | 1;
    (line, tag)
}
/// Per-source buckets for the admission endpoint's port; the least recently used are recycled.
pub const ENDPOINT_BUCKETS_CAPACITY: u32 = 262_144;
/// Words in the protected-port bitmap: 2 protocols x 65536 ports / 64.
pub const PROTECTED_WORDS: u32 = 2 * 65_536 / 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_slots_stay_in_range_with_nonzero_tags_that_a_new_epoch_changes() {
        let mut seen = [false; 64];
        for i in 0..100_000u64 {
            let words = [0, 0xffff_0000_0000 | i.wrapping_mul(2_654_435_761) & 0xffff_ffff];
            let (slot, tag) = unknown_blocked_slot(words, 7);
            assert!((1..=UNKNOWN_BLOCKED_LINES).contains(&slot), "{slot}");
            assert_ne!(tag, 0);
            for epoch in [8, 9, u64::from(u32::MAX)] {
                let (again, other) = unknown_blocked_slot(words, epoch);
                assert_ne!(
                    other,
                    unknown_blocked_slot(words, epoch - 1).1,
                    "a new epoch, a new tag"
                );
                assert_eq!(again, slot, "the same slot");
            }
            seen[(slot >> (UNKNOWN_BLOCKED_BITS - 6)) as usize % 64] = true;
        }
        assert!(seen.iter().all(|s| *s), "IPv4 sources spread over the slots");
    }

    #[test]
    fn a_blocked_word_lapses_before_its_time_and_never_comes_back() {
        use crate::keys::{blocked_holds, blocked_way_free, blocked_word};
        let second = 1_000_000_000;
        let era = 1u64 << 44; // 2^24 units of 2^20 ns: 4.9 hours
        for tag in [1, 0x12_3456_789b, (1 << crate::keys::BLOCKED_TAG_BITS) - 1] {
            for now in [
                5 * second,
                3 * era + 7 * second,
                (u64::from(u32::MAX) << 20) - 9 * second,
                1 << 62,
            ] {
                let word = blocked_word(tag, now + second, now);
                assert_ne!(word, 0);
                let holds = |at: u64| blocked_holds(word, tag, at);
                assert!(holds(now) && holds(now + second - (2 << 20)), "{tag:x} at {now}");
                assert!(!holds(now + second), "never after its bucket's time");
                assert!(!blocked_holds(word, tag ^ 2, now), "another source's tag");
                assert!(!blocked_way_free(word, now) && blocked_way_free(word, now + second));
                // Left behind, it stays lapsed through every later era (the 24 bits of its
                // time wrap every era).
                for later in (1..200).map(|i| now + i * 997 * second) {
                    assert!(!holds(later), "{tag:x} came back at {later}");
                }
                // A long block is remembered to the end of the era, then its bucket decides.
                let long = blocked_word(tag, now + 1_000 * era, now);
                let end = now | (era - 1);
                assert!(blocked_holds(long, tag, end - (2 << 20)));
                assert!(!blocked_holds(long, tag, end + 1));
            }
            // Across the end of an era: cut there, never carried into the next.
            let now = 2 * era - second / 2;
            let word = blocked_word(tag, now + second, now);
            assert!(blocked_holds(word, tag, now) && !blocked_holds(word, tag, 2 * era));
        }
    }
}
