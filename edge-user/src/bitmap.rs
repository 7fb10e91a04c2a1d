//! The maps userspace writes through mmap: the IPv4 visitor bitmap with its /24 summary
//! (setting 20 million bits is memory writes, not 20 million syscalls, and the kernel sees each
//! bit as soon as it is set)
//! and the admitted map's hint (single-byte stores, so the kernel's own stores are never
//! overwritten by a read-modify-write).
use std::{
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, AtomicU8, Ordering},
};

use aya::maps::MapData;
use edge_common::{
    keys::{admitted_hint_byte, admitted_hint_slot, visitor_v4_net_slot, visitor_v4_slot, Addr},
    maps::{
        ADMITTED_HINT_GENERATION, ADMITTED_HINT_SLOTS, ADMITTED_HINT_WORDS, VISITORS_V4_ADDR_WORDS,
        VISITORS_V4_WORDS,
    },
};
use roaring::RoaringBitmap;

use crate::error::{Error, Result};

/// A shared mapping of `visitors_v4`; the mapping holds its own reference on the map.
pub struct VisitorBitmap {
    words: NonNull<AtomicU64>,
}

// SAFETY: the mapping is shared memory accessed only through atomics.
unsafe impl Send for VisitorBitmap {}
unsafe impl Sync for VisitorBitmap {}

const LEN: usize = VISITORS_V4_WORDS as usize * 8;

/// Maps `len` bytes of a BPF_F_MMAPABLE array, shared with the kernel.
fn map_shared(map: &MapData, len: usize, what: &str) -> Result<NonNull<u8>> {
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
    Ok(NonNull::new(ptr.cast()).expect("mmap returned null"))
}

impl VisitorBitmap {
    pub fn map(map: &MapData) -> Result<Self> {
        Ok(Self { words: map_shared(map, LEN, "the visitors_v4 bitmap")?.cast() })
    }

    fn at(&self, index: u32) -> &AtomicU64 {
        debug_assert!(index < VISITORS_V4_WORDS);
        // SAFETY: every index comes from visitor_v4_slot or visitor_v4_net_slot, both below
        // VISITORS_V4_WORDS, the length of the mapping in words.
        unsafe { &*self.words.as_ptr().add(index as usize) }
    }

    /// The four words of address bits of `net` (a /24: the address >> 8).
    fn net_words(&self, net: u32) -> [&AtomicU64; 4] {
        std::array::from_fn(|i| self.at(net * 4 + i as u32))
    }

    /// Visitors are added address bit first, then net bit (SeqCst, like the net bit's clear
    /// in `settle_net`): the kernel reads the net bit first, so it never trusts a net bit
    /// with no address bit it should see.
    pub fn insert(&self, addr: Ipv4Addr) {
        let addr = u32::from(addr);
        let (index, bit) = visitor_v4_slot(addr);
        self.at(index).fetch_or(bit, Ordering::SeqCst);
        let (index, bit) = visitor_v4_net_slot(addr);
        self.at(index).fetch_or(bit, Ordering::SeqCst);
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

    /// Sets or clears the net bit of `net`. A clear is checked afterwards: an `insert` that
    /// raced with it set its address bit before we looked (and the bit is restored here) or
    /// sets its net bit after the clear. Either way a visitor's net bit ends up set.
    fn settle_net(&self, net: u32, live: bool) {
        let (index, bit) = visitor_v4_net_slot(net << 8);
        let word = self.at(index);
        if live {
            word.fetch_or(bit, Ordering::SeqCst);
            return;
        }
        if word.load(Ordering::Relaxed) & bit == 0 {
            return;
        }
        word.fetch_and(!bit, Ordering::SeqCst);
        if self.net_words(net).iter().any(|w| w.load(Ordering::SeqCst) != 0) {
            word.fetch_or(bit, Ordering::SeqCst);
        }
    }

    /// Makes the bitmap hold exactly `want`, one word at a time: a word's new bits are set
    /// before its stale bits are cleared, so an address in both old and new sets never reads
    /// as absent. Each /24's net bit is settled once its four words are: set if it holds a
    /// visitor, cleared if not. Returns (bits set, bits cleared), address bits only. Reads the
    /// whole 512 MiB once; words with nothing wanted are only loaded, and written if they hold
    /// stale bits.
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
        let (index, bit) = visitor_v4_slot(u32::from(addr));
        self.at(index).load(Ordering::Relaxed) & bit != 0
    }

    /// Whether the net bit of `addr`'s /24 is set (what the kernel checks first).
    pub fn net_marked(&self, addr: Ipv4Addr) -> bool {
        let (index, bit) = visitor_v4_net_slot(u32::from(addr));
        self.at(index).load(Ordering::Relaxed) & bit != 0
    }
}

impl Drop for VisitorBitmap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what map() mapped.
        unsafe { libc::munmap(self.words.as_ptr().cast(), LEN) };
    }
}

/// A shared mapping of `admitted_hint` (see `edge_common::maps::ADMITTED_HINT`).
pub struct AdmittedHint {
    bytes: NonNull<AtomicU8>,
}

// SAFETY: shared memory accessed only through atomics.
unsafe impl Send for AdmittedHint {}
unsafe impl Sync for AdmittedHint {}

const HINT_LEN: usize = ADMITTED_HINT_WORDS as usize * 8;

impl AdmittedHint {
    pub fn map(map: &MapData) -> Result<Self> {
        Ok(Self { bytes: map_shared(map, HINT_LEN, "the admitted_hint map")?.cast() })
    }

    fn byte(&self, generation: u32, key: &Addr) -> &AtomicU8 {
        let (word, byte) = admitted_hint_byte(generation, admitted_hint_slot(key));
        // SAFETY: word < ADMITTED_HINT_GENERATION and byte < 8, inside the mapping.
        unsafe { &*self.bytes.as_ptr().add(word as usize * 8 + byte as usize) }
    }

    fn generation_word(&self) -> &AtomicU64 {
        // SAFETY: the last word of the mapping, 8-byte aligned (the mapping is page aligned).
        unsafe { &*self.bytes.as_ptr().add(ADMITTED_HINT_GENERATION as usize * 8).cast() }
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
            // SAFETY: words of the spare generation, inside the mapping.
            let word = unsafe { &*self.bytes.as_ptr().add(word * 8).cast::<AtomicU64>() };
            word.store(0, Ordering::Relaxed);
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        for key in admitted()? {
            self.byte(spare, &key).store(1, Ordering::Release);
        }
        self.generation_word().store(u64::from(spare), Ordering::Release);
        Ok(())
    }
}

impl Drop for AdmittedHint {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what map() mapped.
        unsafe { libc::munmap(self.bytes.as_ptr().cast(), HINT_LEN) };
    }
}
