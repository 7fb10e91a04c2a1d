//! The maps userspace writes through mmap: the IPv4 visitor bitmap with its /24 and /16 summaries
//! (setting 20 million bits is memory writes, not 20 million syscalls, and the kernel sees each
//! bit as soon as it is set), the admitted map's hint (single-byte stores, so the kernel's own
//! stores are never overwritten by a read-modify-write), and the /24s the allow and deny
//! prefixes touch (IPv4 /24s, hashed IPv6 /32s).
use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, AtomicU8, Ordering},
};

use aya::maps::MapData;
use edge_common::{
    keys::{
        admitted_hint_byte, admitted_hint_slot, list_block_v4_slot, list_net48_v6_slot,
        list_net_v4_slot, list_net_v6_slot, visitor_v4_block_slot, visitor_v4_net_slot,
        visitor_v4_slot, Addr,
    },
    maps::{
        ADMITTED_HINT_GENERATION, ADMITTED_HINT_SLOTS, ADMITTED_HINT_WORDS, LIST_NETS_BLOCK_WORDS,
        LIST_NETS_LIST_WORDS, LIST_NETS_REGION_WORDS, LIST_NETS_WORDS, VISITORS_V4_ADDR_WORDS,
        VISITORS_V4_WORDS,
    },
};
use roaring::RoaringBitmap;

use crate::error::{Error, Result};

/// A shared, writable mapping of a BPF_F_MMAPABLE array, unmapped on drop; it holds its own
/// reference on the map. Accessed only through atomics.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: shared memory accessed only through atomics.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `words` words of `map`, which must be a BPF_F_MMAPABLE array at least that long.
    fn new(map: &MapData, words: u32, what: &str) -> Result<Self> {
        let len = words as usize * 8;
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: mapping a BPF_F_MMAPABLE array of at least `len` bytes; checked for failure.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::Kernel {
                what: format!("mmap of {what}"),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self { ptr: NonNull::new(ptr.cast()).expect("mmap returned null"), len })
    }

    /// Word `index` of the mapping.
    fn word(&self, index: usize) -> &AtomicU64 {
        assert!(index * 8 < self.len);
        // SAFETY: inside the mapping (checked), 8-byte aligned (the mapping is page aligned).
        unsafe { &*self.ptr.as_ptr().add(index * 8).cast() }
    }

    /// Byte `index` of the mapping.
    fn byte(&self, index: usize) -> &AtomicU8 {
        assert!(index < self.len);
        // SAFETY: inside the mapping (checked).
        unsafe { &*self.ptr.as_ptr().add(index).cast() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A shared mapping of `visitors_v4`.
pub struct VisitorBitmap {
    words: Mapping,
}

impl VisitorBitmap {
    pub fn map(map: &MapData) -> Result<Self> {
        Ok(Self { words: Mapping::new(map, VISITORS_V4_WORDS, "the visitors_v4 bitmap")? })
    }

    fn at(&self, index: u32) -> &AtomicU64 {
        self.words.word(index as usize)
    }

    /// The four words of address bits of `net` (a /24: the address >> 8).
    fn net_words(&self, net: u32) -> [&AtomicU64; 4] {
        std::array::from_fn(|i| self.at(net * 4 + i as u32))
    }

    /// The four words of net bits of `block` (a /16: the address >> 16).
    fn block_words(&self, block: u32) -> [&AtomicU64; 4] {
        let (first, _) = visitor_v4_net_slot(block << 16);
        std::array::from_fn(|i| self.at(first + i as u32))
    }

    /// Visitors are added address bit first, then net bit, then block bit (SeqCst, like the
    /// clears in `settle_net` and `settle_block`): the kernel reads the coarsest bit first, so
    /// it never trusts a summary bit with no finer bit it should see.
    pub fn insert(&self, addr: Ipv4Addr) {
        let addr = u32::from(addr);
        let (index, bit) = visitor_v4_slot(addr);
        self.at(index).fetch_or(bit, Ordering::SeqCst);
        self.settle_net(addr >> 8, true);
    }

    pub fn remove(&self, addr: Ipv4Addr) {
        let addr = u32::from(addr);
        let (index, bit) = visitor_v4_slot(addr);
        self.at(index).fetch_and(!bit, Ordering::SeqCst);
        let net = addr >> 8;
        if self.net_words(net).iter().all(|w| w.load(Ordering::SeqCst) == 0) {
            self.settle_net(net, false);
        }
    }

    /// Sets or clears the net bit of `net`, then its block's bit to match. A clear is checked
    /// afterwards: an `insert` that raced with it set its address bit before we looked (and
    /// the bits are restored here) or sets its net and block bits after the clear. Either way
    /// a visitor's net and block bits end up set.
    fn settle_net(&self, net: u32, live: bool) {
        let (index, bit) = visitor_v4_net_slot(net << 8);
        let word = self.at(index);
        if !live {
            if word.load(Ordering::Relaxed) & bit == 0 {
                return;
            }
            word.fetch_and(!bit, Ordering::SeqCst);
            if self.net_words(net).iter().all(|w| w.load(Ordering::SeqCst) == 0) {
                return self.settle_block(net >> 8);
            }
        }
        self.mark((index, bit));
        self.mark(visitor_v4_block_slot(net << 8));
    }

    /// Sets a summary bit, without writing when it is already set (a reconcile marks every
    /// occupied /24 and /16 again). The load is SeqCst: it sees any clear ordered before this
    /// thread's finer bit, so a clearing thread's recheck or this set always restores the bit.
    fn mark(&self, (index, bit): (u32, u64)) {
        let word = self.at(index);
        if word.load(Ordering::SeqCst) & bit == 0 {
            word.fetch_or(bit, Ordering::SeqCst);
        }
    }

    /// Clears the bit of `block` if none of its nets is marked, checked again after the clear
    /// as in `settle_net`: a net marked meanwhile gets its block bit back (here, or from the
    /// `settle_net` that marked it, which sets the block bit after the net bit).
    fn settle_block(&self, block: u32) {
        let (index, bit) = visitor_v4_block_slot(block << 16);
        let word = self.at(index);
        if word.load(Ordering::Relaxed) & bit == 0
            || self.block_words(block).iter().any(|w| w.load(Ordering::SeqCst) != 0)
        {
            return;
        }
        word.fetch_and(!bit, Ordering::SeqCst);
        if self.block_words(block).iter().any(|w| w.load(Ordering::SeqCst) != 0) {
            word.fetch_or(bit, Ordering::SeqCst);
        }
    }

    /// Makes the bitmap hold exactly `want`, one word at a time: a word's new bits are set
    /// before its stale bits are cleared, so an address in both old and new sets never reads
    /// as absent. Each /24's net bit is settled once its four words are: set if it holds a
    /// visitor, cleared if not, and its /16's block bit with it. Returns (bits set, bits
    /// cleared), address bits only. Reads the whole 512 MiB once; words with nothing wanted are
    /// only loaded, and written if they hold stale bits.
    pub fn reconcile(&self, want: &RoaringBitmap) -> (u64, u64) {
        let (mut set, mut cleared) = (0u64, 0u64);
        let mut net_live = false;
        let mut settle = |index: u32, target: u64| {
            let word = self.at(index);
            let current = word.load(Ordering::Relaxed);
            if current != target {
                let (add, drop) = (target & !current, current & !target);
                word.fetch_or(add, Ordering::Relaxed);
                word.fetch_and(!drop, Ordering::Relaxed);
                set += u64::from(add.count_ones());
                cleared += u64::from(drop.count_ones());
            }
            net_live |= target != 0;
            if index % 4 == 3 {
                self.settle_net(index / 4, net_live);
                net_live = false;
            }
        };
        // Words [next..) are not settled yet; `pending` is the word being assembled.
        let mut next = 0u32;
        let mut pending: Option<(u32, u64)> = None;
        for addr in want {
            let (index, bit) = visitor_v4_slot(addr);
            match &mut pending {
                Some((at, target)) if *at == index => *target |= bit,
                _ => {
                    if let Some((at, target)) = pending {
                        settle(at, target);
                        next = at + 1;
                    }
                    for i in next..index {
                        settle(i, 0);
                    }
                    pending = Some((index, bit));
                }
            }
        }
        if let Some((at, target)) = pending {
            settle(at, target);
            next = at + 1;
        }
        for i in next..VISITORS_V4_ADDR_WORDS {
            settle(i, 0);
        }
        (set, cleared)
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.marked(visitor_v4_slot(u32::from(addr)))
    }

    /// Whether the net bit of `addr`'s /24 is set (what the kernel checks second).
    pub fn net_marked(&self, addr: Ipv4Addr) -> bool {
        self.marked(visitor_v4_net_slot(u32::from(addr)))
    }

    /// Whether the block bit of `addr`'s /16 is set (what the kernel checks first).
    pub fn block_marked(&self, addr: Ipv4Addr) -> bool {
        self.marked(visitor_v4_block_slot(u32::from(addr)))
    }

    fn marked(&self, (index, bit): (u32, u64)) -> bool {
        self.at(index).load(Ordering::Relaxed) & bit != 0
    }
}

/// A shared mapping of `admitted_hint` (see `edge_common::maps::ADMITTED_HINT`).
pub struct AdmittedHint {
    bytes: Mapping,
}

impl AdmittedHint {
    pub fn map(map: &MapData) -> Result<Self> {
        Ok(Self { bytes: Mapping::new(map, ADMITTED_HINT_WORDS, "the admitted_hint map")? })
    }

    fn byte(&self, generation: u32, key: &Addr) -> &AtomicU8 {
        let (word, byte) = admitted_hint_byte(generation, admitted_hint_slot(key));
        self.bytes.byte(word as usize * 8 + byte as usize)
    }

    fn generation_word(&self) -> &AtomicU64 {
        self.bytes.word(ADMITTED_HINT_GENERATION as usize)
    }

    /// The generation the kernel reads.
    pub fn live(&self) -> u32 {
        (self.generation_word().load(Ordering::Acquire) & 1) as u32
    }

    /// Marks `key` in both generations; call after the admission is in the map.
    pub fn set(&self, key: &Addr) {
        for generation in 0..2 {
            self.byte(generation, key).store(1, Ordering::Release);
        }
    }

    pub fn contains(&self, key: &Addr) -> bool {
        self.byte(self.live(), key).load(Ordering::Acquire) != 0
    }

    /// Rebuilds the spare generation from `admitted()` (the keys in the admitted map, read
    /// after the clear) and makes it live. Anyone who admits meanwhile sets both generations
    /// after inserting, so a key is either seen by the scan or set after the clear: never lost.
    pub fn rebuild(&self, admitted: impl FnOnce() -> Result<Vec<Addr>>) -> Result<()> {
        let spare = 1 - self.live();
        let first = admitted_hint_byte(spare, 0).0 as usize;
        for word in first..first + ADMITTED_HINT_SLOTS as usize / 8 {
            self.bytes.word(word).store(0, Ordering::Relaxed);
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        for key in admitted()? {
            self.byte(spare, &key).store(1, Ordering::Release);
        }
        self.generation_word().store(u64::from(spare), Ordering::Release);
        Ok(())
    }
}

/// A shared mapping of `list_nets`: per list, one bit per IPv4 /24, per hashed IPv6 /32, per
/// IPv4 /16 and per hashed IPv6 /48 that a prefix touches (see
/// `edge_common::maps::LIST_NETS_REGION_WORDS`). Only the control plane writes it.
pub struct ListNets {
    words: Mapping,
}

/// Words of one list's regions (IPv4 /24s, IPv6 /32s, IPv4 /16s, IPv6 /48s), which are
/// adjacent in the map.
const LIST_WORDS: usize = LIST_NETS_LIST_WORDS as usize;

impl ListNets {
    pub fn map(map: &MapData) -> Result<Self> {
        Ok(Self { words: Mapping::new(map, LIST_NETS_WORDS, "the list_nets map")? })
    }

    /// Word `index` of `list`'s regions.
    fn word(&self, list: u32, index: usize) -> &AtomicU64 {
        self.words.word(list_base(list) + index)
    }

    /// Sets the bits of `prefixes` (LPM keys: length over 128 bits, v4-mapped for IPv4) in
    /// `list`'s regions. Call before inserting them: the kernel skips the trie while a bit is
    /// clear.
    pub fn mark<'a>(&self, list: u32, prefixes: impl IntoIterator<Item = (u32, &'a Addr)>) {
        let bits = list_bits(list, prefixes);
        for (index, bits) in bits.iter().enumerate().filter(|(_, b)| **b != 0) {
            self.word(list, index).fetch_or(*bits, Ordering::SeqCst);
        }
    }

    /// Makes `list`'s regions hold exactly the bits of `prefixes`, the list as it now is in the
    /// trie. Call after removing prefixes from the trie, so a bit is cleared only once no
    /// prefix behind it is left.
    pub fn settle<'a>(&self, list: u32, prefixes: impl IntoIterator<Item = (u32, &'a Addr)>) {
        let bits = list_bits(list, prefixes);
        for (index, bits) in bits.iter().enumerate() {
            let word = self.word(list, index);
            if word.load(Ordering::Relaxed) != *bits {
                word.store(*bits, Ordering::SeqCst);
            }
        }
    }

    /// Whether the kernel would look `addr` up in `list`'s trie (the bits it reads, in order).
    pub fn contains(&self, list: u32, addr: IpAddr) -> bool {
        let marked = |(word, bit): (u32, u64)| {
            self.words.word(word as usize).load(Ordering::Acquire) & bit != 0
        };
        match addr {
            IpAddr::V4(v4) => {
                let a = u32::from(v4);
                marked(list_block_v4_slot(list, a >> 16)) && marked(list_net_v4_slot(list, a >> 8))
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                marked(list_net_v6_slot(list, (bits >> 96) as u32))
                    && marked(list_net48_v6_slot(list, (bits >> 80) as u64))
            }
        }
    }
}

/// The first word of `list`'s regions in the map.
fn list_base(list: u32) -> usize {
    list_net_v4_slot(list, 0).0 as usize
}

/// `list`'s regions for `prefixes`: the bit of every IPv4 /24, IPv6 /32, IPv4 /16 and IPv6
/// /48 each prefix touches.
fn list_bits<'a>(list: u32, prefixes: impl IntoIterator<Item = (u32, &'a Addr)>) -> Vec<u64> {
    let base = list_base(list);
    let mut bits = vec![0u64; LIST_WORDS];
    let set = |bits: &mut [u64], (word, bit): (u32, u64)| bits[word as usize - base] |= bit;
    for (len, addr) in prefixes {
        if let Some((first, count)) = v4_nets(len, addr) {
            (first..first + count).for_each(|net| set(&mut bits, list_net_v4_slot(list, net)));
            let blocks = first >> 8..=(first + count - 1) >> 8;
            blocks.for_each(|block| set(&mut bits, list_block_v4_slot(list, block)));
        }
        match v6_nets48(len, addr) {
            // Wider than a /32: every /48 bit (most would be set anyway).
            None => bits[V6_48..V6_48 + LIST_NETS_REGION_WORDS as usize].fill(u64::MAX),
            Some((first, count)) => {
                (first..first + count).for_each(|net| set(&mut bits, list_net48_v6_slot(list, net)))
            }
        }
        let (first, count) = v6_nets(len, addr);
        if count > WIDE_V6 {
            // Wider than a /16: most of the region's bits would be set anyway. All of them is
            // correct (a set bit only sends a source on to the trie) and quick to write.
            let v6 = LIST_NETS_REGION_WORDS as usize;
            bits[v6..2 * v6].fill(u64::MAX);
            continue;
        }
        for i in 0..count {
            set(&mut bits, list_net_v6_slot(list, first.wrapping_add(i as u32)));
        }
    }
    bits
}

/// Where the IPv6 /48 region starts among a list's words.
const V6_48: usize = 2 * LIST_NETS_REGION_WORDS as usize + LIST_NETS_BLOCK_WORDS as usize;

/// The IPv6 /48s an LPM key touches, as (first /48, how many); `None` past 2^16 of them (a
/// prefix shorter than /32), which marks the whole region.
fn v6_nets48(len: u32, addr: &Addr) -> Option<(u64, u64)> {
    let first = u64::from_be_bytes([0, 0, addr[0], addr[1], addr[2], addr[3], addr[4], addr[5]]);
    if len >= 48 {
        return Some((first, 1));
    }
    if len < 32 {
        return None;
    }
    let count = 1u64 << (48 - len);
    Some((first & !(count - 1), count))
}

/// IPv6 prefixes touching more /32s than this mark their list's whole IPv6 region.
const WIDE_V6: u64 = 1 << 16;

/// The IPv6 /32s an LPM key touches, as (first /32, how many). An IPv4 key is inside
/// `::ffff:0:0/96`, in the /32 `::`; a prefix shorter than /32 touches every /32 under it.
fn v6_nets(len: u32, addr: &Addr) -> (u32, u64) {
    let first = u32::from_be_bytes([addr[0], addr[1], addr[2], addr[3]]);
    if len >= 32 {
        return (first, 1);
    }
    let count = 1u64 << (32 - len);
    (first & !((count - 1) as u32), count)
}

/// The IPv4 /24s an LPM key touches, as (first /24, how many): a prefix of length `len` over
/// 128 bits touches IPv4 only through `::ffff:0:0/96`. A short IPv6 prefix that covers all of
/// it (`::/0`) touches every /24; an IPv4 prefix of 24 bits or more, one.
fn v4_nets(len: u32, addr: &Addr) -> Option<(u32, u32)> {
    const MAPPED: u128 = 0xffff << 32;
    let len = len.min(128);
    let key = u128::from_be_bytes(*addr);
    let mask = |bits: u32| if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
    let covering = len.min(96);
    if key & mask(covering) != MAPPED & mask(covering) {
        return None;
    }
    let v4_len = len.saturating_sub(96);
    let first = (key as u32) >> 8;
    if v4_len >= 24 {
        return Some((first, 1));
    }
    let count = 1u32 << (24 - v4_len);
    Some((first & !(count - 1), count))
}

#[cfg(test)]
mod tests {
    use super::v4_nets;

    /// The LPM key the control plane writes for a prefix.
    fn key(prefix: &str) -> (u32, [u8; 16]) {
        crate::filter::lpm_key(&prefix.parse().unwrap())
    }

    fn nets(prefix: &str) -> Option<(u32, u32)> {
        let (len, key) = key(prefix);
        v4_nets(len, &key)
    }

    #[test]
    fn ipv4_prefixes_touch_their_24s() {
        assert_eq!(nets("10.0.0.0/8"), Some((0x0a_0000, 1 << 16)));
        assert_eq!(nets("100.64.0.0/23"), Some((0x64_4000, 2)));
        assert_eq!(nets("192.0.2.128/25"), Some((0xc0_0002, 1)));
        assert_eq!(nets("192.0.2.7/32"), Some((0xc0_0002, 1)));
        assert_eq!(nets("0.0.0.0/0"), Some((0, 1 << 24)));
    }

    #[test]
    fn ipv6_prefixes_touch_ipv4_only_through_the_mapped_range() {
        assert_eq!(nets("::/0"), Some((0, 1 << 24)));
        assert_eq!(nets("::ffff:0:0/96"), Some((0, 1 << 24)));
        assert_eq!(nets("::fffe:0:0/95"), Some((0, 1 << 24)), "covers ::ffff:0:0/96");
        assert_eq!(nets("::/95"), None, "stops short of ::ffff:0:0");
        assert_eq!(nets("::ffff:198.18.0.0/111"), Some((0xc6_1200, 1 << 9)));
        assert_eq!(nets("2001:db8::/32"), None);
        assert_eq!(nets("::198.18.0.0/112"), None, "IPv4-compatible, not mapped");
    }

    #[test]
    fn prefixes_touch_their_ipv6_32s() {
        let v6 = |prefix: &str| {
            let (len, key) = key(prefix);
            super::v6_nets(len, &key)
        };
        assert_eq!(v6("2001:db8:dead::/48"), (0x2001_0db8, 1));
        assert_eq!(v6("2001:db8::/32"), (0x2001_0db8, 1));
        assert_eq!(v6("2001:db8::/31"), (0x2001_0db8, 2));
        assert_eq!(v6("2001:db9::/29"), (0x2001_0db8, 8));
        assert_eq!(v6("::/0"), (0, 1 << 32));
        assert_eq!(v6("10.0.0.0/8"), (0, 1), "IPv4 keys live in the /32 ::");
    }

    #[test]
    fn prefixes_touch_their_ipv6_48s() {
        let v6 = |prefix: &str| {
            let (len, key) = key(prefix);
            super::v6_nets48(len, &key)
        };
        assert_eq!(v6("2001:db8:dead:beef::/64"), Some((0x2001_0db8_dead, 1)));
        assert_eq!(v6("2001:db8:dead::/48"), Some((0x2001_0db8_dead, 1)));
        assert_eq!(v6("2001:db8:de00::/40"), Some((0x2001_0db8_de00, 256)));
        assert_eq!(v6("2001:db8::/32"), Some((0x2001_0db8_0000, 1 << 16)));
        assert_eq!(v6("2001:db8::/31"), None, "wider than a /32: the whole region");
        assert_eq!(v6("10.0.0.0/8"), Some((0, 1)), "IPv4 keys live in the /48 ::");
    }

    /// A listed /48 sends its own /48 to the trie and leaves the rest of its /32 out.
    #[test]
    fn a_listed_48_leaves_the_rest_of_its_32_out_of_the_trie() {
        use edge_common::keys::{list_net48_v6_slot, list_net_v6_slot, LIST_NETS_DENY};
        let (len, key) = key("2001:db8:dead::/48");
        let list = LIST_NETS_DENY;
        let bits = super::list_bits(list, [(len, &key)]);
        let base = super::list_base(list);
        let marked = |(word, bit): (u32, u64)| bits[word as usize - base] & bit != 0;
        assert!(marked(list_net_v6_slot(list, 0x2001_0db8)));
        assert!(marked(list_net48_v6_slot(list, 0x2001_0db8_dead)));
        let neighbours = (0..1000u64).filter(|i| *i != 0xdead);
        let listed = neighbours.filter(|i| marked(list_net48_v6_slot(list, 0x2001_0db8_0000 | i)));
        assert_eq!(listed.count(), 0, "other /48s of 2001:db8::/32");
    }

    /// The /16 bits a list's prefixes set: those of every /16 a prefix touches, and only
    /// those, whatever the prefix's length; a wide IPv6 prefix fills the IPv6 region only.
    #[test]
    fn list_prefixes_touch_their_16s() {
        use edge_common::keys::{list_block_v4_slot, list_net_v4_slot, LIST_NETS_ALLOW};
        let list = LIST_NETS_ALLOW;
        let base = super::list_base(list);
        let bits_of = |prefixes: &[&str]| {
            let keys: Vec<_> = prefixes.iter().map(|p| key(p)).collect();
            super::list_bits(list, keys.iter().map(|(len, addr)| (*len, addr)))
        };
        let blocks = |bits: &[u64]| -> Vec<u32> {
            (0..1u32 << 16)
                .filter(|b| {
                    let (word, bit) = list_block_v4_slot(list, *b);
                    bits[word as usize - base] & bit != 0
                })
                .collect()
        };
        let bits = bits_of(&["10.0.0.0/8", "172.16.5.0/24", "192.0.2.7/32", "100.64.0.0/15"]);
        let mut want: Vec<u32> = (0x0a00..0x0b00).collect();
        want.extend([0x6440, 0x6441, 0xac10, 0xc000]);
        want.sort();
        assert_eq!(blocks(&bits), want);
        assert_eq!(blocks(&bits_of(&["0.0.0.0/0"])).len(), 1 << 16);
        assert_eq!(blocks(&bits_of(&["2001:db8::/32"])), Vec::<u32>::new());
        let wide = bits_of(&["2001::/8"]);
        assert_eq!(blocks(&wide), Vec::<u32>::new(), "an IPv6 prefix marks no IPv4 /16");
        let (net0, _) = list_net_v4_slot(list, 0);
        assert!(wide[net0 as usize - base..][..1 << 18].iter().all(|w| *w == 0));
    }
}
