//! Map keys and values.
use crate::assert_size;

/// A source address as the filter keys it: 16 network-order bytes, IPv4 in its v4-mapped form
/// (`::ffff:a.b.c.d`), so one LPM trie, one admitted map and one bucket map serve both families.
pub type Addr = [u8; 16];

/// The v4-mapped form of an IPv4 address (network-order bytes).
#[inline(always)]
pub const fn v4_mapped(v4: [u8; 4]) -> Addr {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3]]
}

/// Prefix length of a v4-mapped IPv4 prefix of length `len` (0..=32).
#[inline(always)]
pub const fn v4_mapped_prefix_len(len: u32) -> u32 {
    96 + len
}

/// Value of the allow and deny tries. The kernel only tests presence; comments, sources and
/// expiry live in the control plane. `id` is reserved (written as 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub id: u32,
}
assert_size!(Rule, 4);

/// The /64 prefix an IPv6 visitor is keyed by (network-order bytes).
pub type V6Prefix = [u8; 8];

/// Value of `visitors_v6`: the UTC day (days since 1970-01-01) the prefix was last seen.
/// Informational: membership alone passes; the control plane removes prefixes as they age out
/// of the window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VisitorDay {
    pub last_seen_day: u32,
}
assert_size!(VisitorDay, 4);

/// Value of `admitted`: the source passes while the kernel's UTC clock is before this.
///
/// Clock basis: unix seconds (UTC). The kernel derives UTC from `bpf_ktime_get_tai_ns()` minus
/// `Config::tai_offset_s`, which the control plane writes whenever it applies a policy.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdmittedUntil {
    pub admitted_until: u64,
}
assert_size!(AdmittedUntil, 8);

/// A token bucket kept as a GCRA "theoretical arrival time" (monotonic ns): one word, no
/// division on the packet path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub tat_ns: u64,
}
assert_size!(Bucket, 8);

/// Tokens one CPU took from the global budget ahead (`unknown_credit`, per CPU): the CPU
/// charges the shared budget once per batch instead of once per packet, so CPUs passing
/// unknown traffic do not bounce the budget's cache line between them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Credit {
    pub tokens: u64,
}
assert_size!(Credit, 8);

/// Ways in one line of `unknown_blocked`.
pub const BLOCKED_WAYS: usize = 8;

/// One line of `unknown_blocked`: up to eight sources remembered over their own budget, each
/// in one word (see [`blocked_word`]). A source's hash picks the line and it may sit in any
/// way: a botnet of many sources fills lines without evicting each other, as one word per slot
/// did (half of 100 k sources collided in 131 k slots), and a lookup reads one cache line.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockedLine {
    pub ways: [u64; BLOCKED_WAYS],
}
assert_size!(BlockedLine, 64);

/// Bits of a source's tag in its word: a source that is not remembered matches another's tag
/// in its line once in 2^36 lookups (eight ways, bit 0 always set).
pub const BLOCKED_TAG_BITS: u32 = 40;
/// The clock unit of a word's time: 2^20 ns (about a millisecond).
const BLOCKED_UNIT_SHIFT: u32 = 20;
/// A word keeps the low 24 bits of its time; the rest, the era (2^24 units, 4.9 hours), is
/// mixed into its tag.
const BLOCKED_TIME_BITS: u32 = 64 - BLOCKED_TAG_BITS;
const BLOCKED_TIME_MASK: u64 = (1 << BLOCKED_TIME_BITS) - 1;

/// The tag a source's word carries in the era of `now` (2^24 units): its own, mixed with a
/// hash of the era (bit 0 clear, so the tag stays odd and never 0). A word left behind cannot
/// come back to life when the 24 bits of its time wrap: in a later era it is another tag.
#[inline(always)]
const fn blocked_era_tag(tag: u64, now: u64) -> u64 {
    let era = now >> BLOCKED_TIME_BITS;
    tag ^ (era.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> BLOCKED_TIME_BITS) & !1
}

/// A way's word for the source tagged `tag`, over its budget until `until_ns`: its tag in the
/// era of `now_ns` in the high 40 bits, the time's low 24 bits below. The time is in units of
/// 2^20 ns rounded down, so the word forgets the source before its bucket would take a packet,
/// never after, and it is cut at the end of the era (a source blocked across it is looked up
/// in its bucket once more then).
#[inline(always)]
pub const fn blocked_word(tag: u64, until_ns: u64, now_ns: u64) -> u64 {
    let now = now_ns >> BLOCKED_UNIT_SHIFT;
    let era_end = now | BLOCKED_TIME_MASK;
    let until = until_ns >> BLOCKED_UNIT_SHIFT;
    let until = if until < era_end { until } else { era_end };
    blocked_era_tag(tag, now) << BLOCKED_TIME_BITS | until & BLOCKED_TIME_MASK
}

/// Whether `word` holds the source tagged `tag` over its budget at `now_ns`: written in this
/// era, with a time still ahead.
#[inline(always)]
pub const fn blocked_holds(word: u64, tag: u64, now_ns: u64) -> bool {
    let now = now_ns >> BLOCKED_UNIT_SHIFT;
    word >> BLOCKED_TIME_BITS == blocked_era_tag(tag, now)
        && word & BLOCKED_TIME_MASK > now & BLOCKED_TIME_MASK
}

/// Whether a way may be given to another source at `now_ns`: empty, or its time, read as of
/// this era, passed. Only a guess for a word of an earlier era, whose source no longer matches
/// it anyway.
#[inline(always)]
pub const fn blocked_way_free(word: u64, now_ns: u64) -> bool {
    word == 0 || word & BLOCKED_TIME_MASK <= (now_ns >> BLOCKED_UNIT_SHIFT) & BLOCKED_TIME_MASK
}

/// Packet and byte counter (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
assert_size!(Counter, 16);

/// IP protocol numbers the scope stage knows.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// Where (protocol, port) lives in the `protected` bitmap: (word index, bit in word).
/// Returns `None` for protocols without ports in scope.
#[inline(always)]
pub const fn protected_slot(proto: u8, port: u16) -> Option<(u32, u64)> {
    let base = match proto {
        IPPROTO_TCP => 0u32,
        IPPROTO_UDP => 65_536u32,
        _ => return None,
    };
    let bit = base + port as u32;
    Some((bit / 64, 1u64 << (bit % 64)))
}

/// Where an IPv4 address (host order) lives in `visitors_v4`: (word index, bit in word).
#[inline(always)]
pub const fn visitor_v4_slot(addr: u32) -> (u32, u64) {
    (addr >> 6, 1u64 << (addr & 63))
}

/// Where the /24 of an IPv4 address (host order) lives in the net summary that follows the
/// address bits in `visitors_v4`: (word index in the map, bit in word). A /24's 256 address
/// bits are the four words `4 * (addr >> 8)..+4`.
#[inline(always)]
pub const fn visitor_v4_net_slot(addr: u32) -> (u32, u64) {
    let net = addr >> 8;
    (crate::maps::VISITORS_V4_ADDR_WORDS + (net >> 6), 1u64 << (net & 63))
}

/// Where the /16 of an IPv4 address (host order) lives in the block summary that follows the
/// net summary in `visitors_v4`: (word index in the map, bit in word). A /16's 256 net bits
/// are the four net words from `visitor_v4_net_slot(addr & 0xffff_0000)`.
#[inline(always)]
pub const fn visitor_v4_block_slot(addr: u32) -> (u32, u64) {
    let block = addr >> 16;
    let base = crate::maps::VISITORS_V4_ADDR_WORDS + crate::maps::VISITORS_V4_NET_WORDS;
    (base + (block >> 6), 1u64 << (block & 63))
}

/// Which list's regions of `list_nets` a lookup reads.
pub const LIST_NETS_DENY: u32 = 0;
pub const LIST_NETS_ALLOW: u32 = 1;

/// Where the bit of IPv4 /24 `net` (the address >> 8) lives in `list`'s IPv4 region of
/// `list_nets`: (word index in the map, bit in word).
#[inline(always)]
pub const fn list_net_v4_slot(list: u32, net: u32) -> (u32, u64) {
    list_net_slot(list, 0, net)
}

/// Where the bit of IPv4 /16 `block` (the address >> 16) lives in `list`'s block region of
/// `list_nets`: (word index in the map, bit in word). Set for every /16 a prefix touches.
#[inline(always)]
pub const fn list_block_v4_slot(list: u32, block: u32) -> (u32, u64) {
    list_net_slot(list, 2 * crate::maps::LIST_NETS_REGION_WORDS, block)
}

/// Where the bit of an IPv6 /32 (its first four bytes, big-endian) lives in `list`'s IPv6
/// region: its 24-bit multiply-shift hash. /32 is what registries allocate, so a listed prefix
/// marks one or a few bits, and a source in an unlisted /32 almost always finds its bit clear.
#[inline(always)]
pub const fn list_net_v6_slot(list: u32, prefix32: u32) -> (u32, u64) {
    list_net_slot(
        list,
        crate::maps::LIST_NETS_REGION_WORDS,
        prefix32.wrapping_mul(0x9e37_79b1) >> 8,
    )
}

/// Where the bit of an IPv6 /48 (its first six bytes, big-endian) lives in `list`'s IPv6 /48
/// region: its 24-bit multiply-shift hash. Read after the /32 bit: a /32 is an ISP's or a
/// host's whole allocation, and a listed /48 in it (what one site is given) would otherwise
/// send every visitor of that ISP to the trie.
#[inline(always)]
pub const fn list_net48_v6_slot(list: u32, prefix48: u64) -> (u32, u64) {
    let offset = 2 * crate::maps::LIST_NETS_REGION_WORDS + crate::maps::LIST_NETS_BLOCK_WORDS;
    list_net_slot(list, offset, (prefix48.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as u32)
}

/// Bit `index` of the region at word `offset` of `list`'s words.
#[inline(always)]
const fn list_net_slot(list: u32, offset: u32, index: u32) -> (u32, u64) {
    (list * crate::maps::LIST_NETS_LIST_WORDS + offset + (index >> 6), 1u64 << (index & 63))
}

/// Where an admission key lives in one generation of `admitted_hint`: a byte index in
/// `0..ADMITTED_HINT_SLOTS`. A multiply-shift hash of the key's two words: cheap, and the
/// kernel and the daemon compute the same.
#[inline(always)]
pub fn admitted_hint_slot(key: &Addr) -> u32 {
    let [a, b] = addr_words(key);
    admitted_hint_slot_words(a, b)
}

/// `admitted_hint_slot` of a key given as its two native-endian words (see [`addr_words`]),
/// as the kernel carries it.
#[inline(always)]
pub const fn admitted_hint_slot_words(a: u64, b: u64) -> u32 {
    let x = (a ^ b.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> (64 - crate::maps::ADMITTED_HINT_BITS)) as u32
}

/// An address key as two native-endian words: bytes 0..8 and 8..16, the key's own memory.
#[inline(always)]
pub const fn addr_words(key: &Addr) -> [u64; 2] {
    [
        u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7]]),
        u64::from_ne_bytes([key[8], key[9], key[10], key[11], key[12], key[13], key[14], key[15]]),
    ]
}

/// The byte of `admitted_hint` for `slot` in generation `generation` (0 or 1): (word, byte in
/// word). Words are little-endian in the map (bpfel), so byte `i` is bits `8i..8i+8`.
#[inline(always)]
pub const fn admitted_hint_byte(generation: u32, slot: u32) -> (u32, u32) {
    let index = generation * crate::maps::ADMITTED_HINT_SLOTS + slot;
    (index / 8, index % 8)
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all are repr(C) structs of integers with no padding (sizes asserted above).
    unsafe impl aya::Pod for Rule {}
    unsafe impl aya::Pod for VisitorDay {}
    unsafe impl aya::Pod for AdmittedUntil {}
    unsafe impl aya::Pod for Bucket {}
    unsafe impl aya::Pod for Credit {}
    unsafe impl aya::Pod for BlockedLine {}
    unsafe impl aya::Pod for Counter {}
}
