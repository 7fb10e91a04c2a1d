//! The maps userspace writes through mmap: the IPv4 visitor bitmap (setting 20 million bits is
//! memory writes, not 20 million syscalls, and the kernel sees each bit as soon as it is set)
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
    keys::{admitted_hint_byte, admitted_hint_slot, visitor_v4_slot, Addr},
    maps::{ADMITTED_HINT_GENERATION, ADMITTED_HINT_SLOTS, ADMITTED_HINT_WORDS, VISITORS_V4_WORDS},
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

    fn word(&self, addr: Ipv4Addr) -> (&AtomicU64, u64) {
        let (index, bit) = visitor_v4_slot(u32::from(addr));
        // SAFETY: index < VISITORS_V4_WORDS by construction of visitor_v4_slot.
        (unsafe { &*self.words.as_ptr().add(index as usize) }, bit)
    }

    pub fn insert(&self, addr: Ipv4Addr) {
        let (word, bit) = self.word(addr);
        word.fetch_or(bit, Ordering::Relaxed);
    }

    pub fn remove(&self, addr: Ipv4Addr) {
        let (word, bit) = self.word(addr);
        word.fetch_and(!bit, Ordering::Relaxed);
    }

    /// Makes the bitmap hold exactly `want`, one word at a time: a word's new bits are set
    /// before its stale bits are cleared, so an address in both old and new sets never reads
    /// as absent. Returns (bits set, bits cleared). Reads the whole 512 MiB once; words with
    /// nothing wanted are only loaded, and written if they hold stale bits.
    pub fn reconcile(&self, want: &RoaringBitmap) -> (u64, u64) {
        // SAFETY: the mapping is VISITORS_V4_WORDS words long and lives as long as self.
        let words =
            unsafe { std::slice::from_raw_parts(self.words.as_ptr(), VISITORS_V4_WORDS as usize) };
        let (mut set, mut cleared) = (0u64, 0u64);
        let mut fix = |word: &AtomicU64, target: u64| {
            let current = word.load(Ordering::Relaxed);
            if current != target {
                let (add, drop) = (target & !current, current & !target);
                word.fetch_or(add, Ordering::Relaxed);
                word.fetch_and(!drop, Ordering::Relaxed);
                set += u64::from(add.count_ones());
                cleared += u64::from(drop.count_ones());
            }
        };
        // Words [done..) are not reconciled yet; `pending` is the word being assembled.
        let mut done = 0usize;
        let mut pending: Option<(usize, u64)> = None;
        for addr in want {
            let (index, bit) = visitor_v4_slot(addr);
            let index = index as usize;
            match &mut pending {
                Some((at, target)) if *at == index => *target |= bit,
                _ => {
                    if let Some((at, target)) = pending {
                        fix(&words[at], target);
                        done = at + 1;
                    }
                    for word in &words[done..index] {
                        fix(word, 0);
                    }
                    pending = Some((index, bit));
                }
            }
        }
        if let Some((at, target)) = pending {
            fix(&words[at], target);
            done = at + 1;
        }
        for word in &words[done..] {
            fix(word, 0);
        }
        (set, cleared)
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let (word, bit) = self.word(addr);
        word.load(Ordering::Relaxed) & bit != 0
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
