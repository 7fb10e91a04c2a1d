//! Records the kernel sends to the daemon through ring buffers. Both are bounded: the ring has
//! a fixed size, a full ring drops the record (never blocks a packet), and the daemon drains it
//! on a timer (records are written without wakeups, so a flood costs no extra syscalls).
use crate::{assert_size, keys::Addr};

/// One sampled dropped packet (1 in `Config::sample_every` drops; would-drops in monitor mode
/// too): who sent it and why. `edge top` aggregates these.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropEvent {
    /// Source, v4-mapped for IPv4.
    pub src: Addr,
    /// `crate::reason` of the drop.
    pub reason: u32,
    /// 1 if monitor mode passed it (a would-drop).
    pub would_drop: u32,
}
assert_size!(DropEvent, 24);

/// A TCP handshake a local server completed (SYN_RECV -> ESTABLISHED) on a protected port, in
/// the network namespace the daemon protects: the peer answered our SYN-ACK, so it owns its
/// address. Recorded as a visitor when learning is on (and the local address is one of the
/// protected interfaces').
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handshake {
    /// The peer, v4-mapped for IPv4.
    pub peer: Addr,
    /// The local (server) address the peer connected to, v4-mapped for IPv4.
    pub local: Addr,
    /// The local (server) port.
    pub local_port: u32,
    pub _pad: u32,
}
assert_size!(Handshake, 40);

/// Which sockets the handshake program reports: those of one network namespace, told by its
/// cookie (`SO_NETNS_COOKIE`), which the program reads through two kernel pointers at offsets
/// the daemon takes from the kernel's BTF. A zero cookie reports nothing: the tracepoint sees
/// every namespace on the host, and any local user can complete a handshake in one of their
/// own with any address they like.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LearnScope {
    pub netns_cookie: u64,
    /// Offset of the `struct net *` in a `struct sock`.
    pub sock_net: u32,
    /// Offset of `net_cookie` in a `struct net`.
    pub net_cookie: u32,
}
assert_size!(LearnScope, 16);

/// Ring sizes in bytes (a power of two, a multiple of the page size): room for about 10k
/// records between two drains.
pub const DROP_EVENTS_BYTES: u32 = 256 * 1024;
pub const HANDSHAKES_BYTES: u32 = 256 * 1024;

/// `inet_sock_set_state` tracepoint: the fields the handshake program reads, at their offsets
/// in the record (the daemon checks them against the kernel's format file before attaching).
pub mod tracepoint {
    pub const SKADDR: usize = 8;
    pub const OLDSTATE: usize = 16;
    pub const NEWSTATE: usize = 20;
    pub const SPORT: usize = 24;
    pub const FAMILY: usize = 28;
    pub const PROTOCOL: usize = 30;
    pub const SADDR: usize = 32;
    pub const DADDR: usize = 36;
    pub const SADDR_V6: usize = 40;
    pub const DADDR_V6: usize = 56;
    pub const TCP_ESTABLISHED: i32 = 1;
    pub const TCP_SYN_RECV: i32 = 3;
    pub const AF_INET: u16 = 2;
}

#[cfg(feature = "user")]
// SAFETY: repr(C), integers and byte arrays only, no padding (sizes asserted).
unsafe impl aya::Pod for DropEvent {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for Handshake {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for LearnScope {}
