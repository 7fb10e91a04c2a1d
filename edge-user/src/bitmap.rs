//! The IPv4 visitor bitmap, written by userspace through mmap: setting 20 million bits is
//! memory writes, not 20 million syscalls, and the kernel sees each bit as soon as it is set.
use std::{
    net::Ipv4Addr,
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;
use edge_common::{keys::visitor_v4_slot, maps::VISITORS_V4_WORDS};
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

impl VisitorBitmap {
    pub fn map(map: &MapData) -> Result<Self> {
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: mapping a BPF_F_MMAPABLE array of exactly LEN bytes; checked for failure.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::Kernel {
                what: "mmap of the visitors_v4 bitmap".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        let words = NonNull::new(ptr.cast()).expect("mmap returned null");
        Ok(Self { words })
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
