//! Admission tickets: the wire format and its keyed hash, shared by the XDP program (which
//! verifies knocks) and userspace (which mints and verifies tickets). Documented, with test
//! vectors, in docs/tickets.md.
//!
//! A ticket is 48 bytes, every integer little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version (1) |
//! | 1 | 1 | key id (1..=255) |
//! | 2 | 1 | family: 4 or 6 |
//! | 3 | 5 | zero |
//! | 8 | 8 | not after: unix seconds (UTC) |
//! | 16 | 16 | address: v4-mapped IPv4, or the IPv6 /64 followed by 8 zero bytes |
//! | 32 | 8 | ticket id (a nonce chosen by the issuer) |
//! | 40 | 8 | MAC: SipHash-2-4 of bytes 0..40 under the 128-bit key |
//!
//! Fixed size and whole 8-byte words keep the kernel's verification straight-line code.
use crate::{assert_size, keys::Addr};

pub const TICKET_LEN: usize = 48;
pub const TICKET_VERSION: u8 = 1;
/// Bytes covered by the MAC.
pub const SIGNED_LEN: usize = 40;

/// The ticket as it sits in a packet or a file: bytes, read through the accessors.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TicketBytes(pub [u8; TICKET_LEN]);
assert_size!(TicketBytes, 48);

#[inline(always)]
fn le64(b: &[u8; TICKET_LEN], at: usize) -> u64 {
    u64::from_le_bytes([
        b[at],
        b[at + 1],
        b[at + 2],
        b[at + 3],
        b[at + 4],
        b[at + 5],
        b[at + 6],
        b[at + 7],
    ])
}

impl TicketBytes {
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.0[0]
    }
    #[inline(always)]
    pub fn key_id(&self) -> u8 {
        self.0[1]
    }
    #[inline(always)]
    pub fn family(&self) -> u8 {
        self.0[2]
    }
    /// Version, family and the zero bytes are as the format says.
    #[inline(always)]
    pub fn well_formed(&self) -> bool {
        let b = &self.0;
        b[0] == TICKET_VERSION
            && (b[2] == 4 || b[2] == 6)
            && (b[3] | b[4] | b[5] | b[6] | b[7]) == 0
            && self.key_id() != 0
    }
    #[inline(always)]
    pub fn not_after(&self) -> u64 {
        le64(&self.0, 8)
    }
    #[inline(always)]
    pub fn addr(&self) -> Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.0[16..32]);
        a
    }
    #[inline(always)]
    pub fn ticket_id(&self) -> u64 {
        le64(&self.0, 32)
    }
    #[inline(always)]
    pub fn mac(&self) -> u64 {
        le64(&self.0, 40)
    }
    /// SipHash-2-4 of the signed bytes under `key`.
    #[inline(always)]
    pub fn compute_mac(&self, key: &TicketKey) -> u64 {
        let b = &self.0;
        siphash24(key.k0, key.k1, [le64(b, 0), le64(b, 8), le64(b, 16), le64(b, 24), le64(b, 32)])
    }
}

/// A ticket key as the kernel holds it (`ticket_keys` map, slots 0 = current, 1 = previous).
/// `id` 0 marks an empty slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TicketKey {
    pub id: u32,
    pub _pad: u32,
    /// The 16 key bytes as two little-endian words (SipHash's k0, k1).
    pub k0: u64,
    pub k1: u64,
}
assert_size!(TicketKey, 24);

/// Slots in the `ticket_keys` map: the current key and the previous one.
pub const TICKET_KEY_SLOTS: u32 = 2;

#[inline(always)]
fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-2-4 (Aumasson and Bernstein) of exactly five little-endian words (40 bytes), the
/// signed part of a ticket. Written out rather than taken from a crate because the same code
/// must run in the XDP program; userspace tests check it against the `siphasher` crate.
#[inline(always)]
pub fn siphash24(k0: u64, k1: u64, words: [u64; 5]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut compress = |m: u64| {
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    };
    compress(words[0]);
    compress(words[1]);
    compress(words[2]);
    compress(words[3]);
    compress(words[4]);
    // The last block: the message length (40) in the top byte, no tail bytes.
    compress((SIGNED_LEN as u64) << 56);
    v[2] ^= 0xff;
    round(&mut v);
    round(&mut v);
    round(&mut v);
    round(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C) structs of integers and bytes with no padding (sizes asserted above).
    unsafe impl aya::Pod for super::TicketKey {}
}
