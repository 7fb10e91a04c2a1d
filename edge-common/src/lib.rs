//! Types shared by the edge XDP program (`edge-ebpf`) and its control library (`edge-user`).
//!
//! This crate is the one place where the kernel/userspace ABI lives: map names and capacities,
//! the config record, map keys and values, and the verdict reasons. Everything is `#[repr(C)]`
//! with explicit padding and a compile-time size check, and holds only integers and byte arrays
//! (never `bool`, enums or `Option`, which are unsound to read out of map memory).
//!
//! Byte order: addresses are stored as **network-order bytes** (`[u8; N]`), exactly as they sit in
//! the packet; numbers are native-endian integers.
#![no_std]

pub mod config;
pub mod events;
pub mod keys;
pub mod maps;
pub mod reason;
pub mod ticket;

/// Checks at compile time that a shared type has the size both sides expect.
#[macro_export]
macro_rules! assert_size {
    ($t:ty, $n:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $n);
    };
}
