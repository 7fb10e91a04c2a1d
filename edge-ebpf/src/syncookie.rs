//! SYN cookies answered by the program (`[syn_cookies]`): a forged source cannot answer a
//! SYN-ACK, so a SYN flood from addresses edge lets through (visitors, allowed, admitted)
//! reaches no listener and leaves no state anywhere.
//!
//! The design rests on the kernel's own cookies, which this kernel's helpers make and check
//! from XDP (docs/syn-cookies.md says why not netfilter's SYNPROXY or a TC program):
//!
//! - A SYN to a protected port with a listener is answered here: `bpf_tcp_gen_syncookie`
//!   makes the kernel's cookie for that listener and marks the listener as "sending cookies"
//!   (so the kernel accepts cookie ACKs for two minutes), and the frame is turned into the
//!   SYN-ACK in place and sent back out (XDP_TX). The daemon sets `tcp_syncookies = 2`, which
//!   the helper needs, while the mode is on.
//! - An ACK to a listener (no connection for its addresses yet) must carry a valid cookie
//!   (`bpf_tcp_check_syncookie`, the kernel's own check): then it goes on through the
//!   pipeline (an unknown source still pays its budget) and the kernel makes the connection
//!   from it. Otherwise it is dropped.
//! - Everything else (packets of connections, RSTs, ports without a listener) is untouched.
//!
//! The options a client asked for are kept the way the kernel keeps them with cookies: in the
//! low 6 bits of the timestamp we send (window scale, SACK), which the client echoes. The
//! kernel subtracts a per-address timestamp offset before it reads them unless
//! `tcp_timestamps = 2`, which the daemon sets while the mode is on. Without a timestamp (a
//! client that does not send one) window scaling and SACK are lost, as with the kernel's own
//! cookies. ECN is not offered.
use aya_ebpf::{
    bindings::{bpf_sock, bpf_sock_tuple, tcphdr},
    helpers::{
        bpf_ktime_get_coarse_ns,
        generated::{
            bpf_csum_diff, bpf_loop, bpf_sk_release, bpf_skc_lookup_tcp, bpf_tcp_check_syncookie,
            bpf_tcp_gen_syncookie, bpf_xdp_adjust_tail, bpf_xdp_load_bytes, bpf_xdp_store_bytes,
        },
    },
    programs::XdpContext,
};
use core::ffi::c_void;
use edge_common::config::{
    Config, SYN_OPT_SACK, SYN_OPT_TIMESTAMPS, SYN_OPT_WSCALE, SYN_OPT_WSCALE_SHIFT,
};
use edge_common::keys::IPPROTO_TCP;

use crate::{budget, maps, parse::Packet};

pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// `BPF_TCP_LISTEN` (include/uapi/linux/bpf.h).
const TCP_LISTEN: u32 = 10;
/// `BPF_F_CURRENT_NETNS`: the lookup happens in the receiving device's namespace.
const CURRENT_NETNS: u64 = -1i64 as u64;

const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const TCP_HEADER: usize = 20;
/// The longest TCP header (data offset 15).
const TCP_HEADER_MAX: usize = 60;
/// TTL / hop limit of our replies, as Linux's default.
const REPLY_TTL: u8 = 64;

/// Timestamp bits that carry the client's options to the kernel (include/net/tcp.h).
const TS_OPT_WSCALE_MASK: u32 = 0xf;
const TS_OPT_SACK: u32 = 1 << 4;
const TSBITS: u32 = 6;
/// The largest window scale (RFC 7323).
const MAX_WSCALE: u8 = 14;

/// What an ACK to a protected port is to the cookie stage.
pub enum Ack {
    /// To a listener, with the kernel's cookie: the third packet of a handshake we answered.
    Valid,
    /// To a listener, with no valid cookie.
    Invalid,
    /// Part of a connection, or to no listener at all: not ours to judge.
    NotAHandshake,
}

/// Where the headers are copied and the reply is built: per CPU, since the program's 512
/// bytes of stack cannot hold them. Offsets are masked into the arrays (the verifier and the
/// compiler then need no bounds checks).
///
/// A network header ends where its TCP header starts: IPv6's fills `ip`, IPv4's its last 20
/// bytes (see [`ip_start`]). A SYN is then read with one helper call, and its reply written
/// with one. (An ACK is checked in place, without a copy.)
#[repr(C, align(8))]
pub struct Scratch {
    ip: [u8; IPV6_HEADER],
    /// The whole TCP header with its options; 64 bytes so an index masked with 63 is in bounds.
    tcp: [u8; 64],
    reply_ip: [u8; IPV6_HEADER],
    reply_tcp: [u8; 40],
    pseudo: [u8; IPV6_HEADER],
}

/// Where a network header of `ip_len` bytes starts in `Scratch::ip` or `Scratch::reply_ip`.
#[inline(always)]
fn ip_start(ip_len: usize) -> usize {
    IPV6_HEADER - ip_len
}

/// The network and TCP headers of a SYN, copied to the scratch where the reply is built.
struct Headers {
    s: &'static mut Scratch,
    ip_len: usize,
    tcp_len: usize,
}

impl Headers {
    /// The headers of a SYN: the network header and the TCP header with its options, read
    /// with one helper call. `None` for a SYN whose network header has options or extension
    /// headers: its reply would have to drop them, so it is left to the kernel, which answers
    /// it with its own cookie while the mode is on.
    #[inline(always)]
    fn read(ctx: &XdpContext, pkt: &Packet) -> Option<Self> {
        let ip_len = if pkt.is_v4 { IPV4_HEADER } else { IPV6_HEADER };
        if pkt.l4_offset != pkt.l3_offset + ip_len {
            return None;
        }
        let tcp_len = syn_header_len(ctx, pkt)?;
        let s = unsafe { &mut *maps::SYN_SCRATCH.get_ptr_mut(0)? };
        let ip = unsafe { (s as *mut Scratch).cast::<u8>().add(ip_start(ip_len)) };
        // SAFETY: `ip` (40 bytes) ends where `tcp` (64) starts (repr(C), byte arrays): the
        // network header read at `ip` ends there, and the TCP header goes on into `tcp`.
        unsafe { load(ctx, pkt.l3_offset, ip, ip_len + tcp_len)? };
        Some(Headers { s, ip_len, tcp_len })
    }

    /// The network header in the scratch, as the cookie helpers take it.
    #[inline(always)]
    fn ip_header(&mut self) -> *mut c_void {
        unsafe { self.s.ip.as_mut_ptr().add(ip_start(self.ip_len)).cast() }
    }

    /// The listening socket (or connection) these headers are addressed to, if any.
    #[inline(always)]
    fn socket(&self, ctx: &XdpContext) -> Option<Socket> {
        let ip = unsafe { self.s.ip.as_ptr().add(ip_start(self.ip_len)) };
        socket(ctx, ip, self.ip_len, self.s.tcp.as_ptr())
    }
}

/// The listening socket (or connection) a packet with these headers is addressed to, if any;
/// released when the returned guard drops. `ip` points at a network header of `ip_len` bytes
/// and `tcp` at a TCP header, in the scratch or in the packet (the caller has checked them).
#[inline(always)]
fn socket(ctx: &XdpContext, ip: *const u8, ip_len: usize, tcp: *const u8) -> Option<Socket> {
    // Zeroed with five word stores: `mem::zeroed()` compiles to a call to a byte-wise memset,
    // and filling only the family's variant lets the compiler merge the two families' stores
    // into code the verifier refuses.
    let mut words = core::mem::MaybeUninit::<[u64; 5]>::uninit();
    let zeroed = words.as_mut_ptr().cast::<u64>();
    for i in 0..5 {
        unsafe { core::ptr::write_volatile(zeroed.add(i), 0) };
    }
    // SAFETY: 40 zeroed, 8-aligned bytes hold the 36-byte, 4-aligned tuple.
    let tuple = unsafe { &mut *zeroed.cast::<bpf_sock_tuple>() };
    let read = |at: usize| unsafe { ip.add(at).cast::<u32>().read_unaligned() };
    let [sport, dport] = unsafe { tcp.cast::<[u16; 2]>().read_unaligned() };
    let size = if ip_len == IPV4_HEADER {
        let t = unsafe { &mut tuple.__bindgen_anon_1.ipv4 };
        (t.saddr, t.daddr, t.sport, t.dport) = (read(12), read(16), sport, dport);
        core::mem::size_of_val(t)
    } else {
        let t = unsafe { &mut tuple.__bindgen_anon_1.ipv6 };
        for i in 0..4 {
            t.saddr[i] = read(8 + i * 4);
            t.daddr[i] = read(24 + i * 4);
        }
        (t.sport, t.dport) = (sport, dport);
        core::mem::size_of_val(t)
    };
    let sk = unsafe { bpf_skc_lookup_tcp(ctx.ctx.cast(), tuple, size as u32, CURRENT_NETNS, 0) };
    if sk.is_null() {
        return None;
    }
    Some(Socket(sk))
}

/// A socket reference from a lookup; the verifier requires every one to be released.
struct Socket(*mut bpf_sock);

impl Socket {
    #[inline(always)]
    fn listening(&self) -> bool {
        unsafe { (*self.0).state == TCP_LISTEN }
    }
}

impl Drop for Socket {
    #[inline(always)]
    fn drop(&mut self) {
        unsafe { bpf_sk_release(self.0.cast()) };
    }
}

/// What became of a SYN.
pub enum Answer {
    /// Answered: the frame is now the SYN-ACK.
    Sent,
    /// The reply budget is spent: the SYN goes on through the pipeline and, if it passes, to
    /// the kernel, which answers it with its own cookie (`tcp_syncookies = 2`).
    BudgetSpent,
    /// No listener, or the kernel would make no cookie for it: the pipeline as before.
    NotOurs,
    /// The frame was cut to the reply's length but could not be written: it must not go on.
    Broken,
}

/// A SYN (no ACK, no RST) to a protected port. The budget is looked at first, so a flood
/// past it costs no lookup, and charged only for a reply that goes out.
#[inline(always)]
pub fn answer(ctx: &XdpContext, pkt: &Packet, cfg: &Config) -> Answer {
    let (interval, tolerance) = (cfg.syn_reply_interval_ns, cfg.syn_reply_tolerance_ns);
    if !budget::shared_fits(&maps::SYN_REPLY, interval, tolerance) {
        return Answer::BudgetSpent;
    }
    let Some(mut h) = Headers::read(ctx, pkt) else { return Answer::NotOurs };
    let cookie = {
        let Some(sk) = h.socket(ctx) else { return Answer::NotOurs };
        if !sk.listening() {
            return Answer::NotOurs;
        }
        let made = unsafe {
            bpf_tcp_gen_syncookie(
                sk.0.cast(),
                h.ip_header(),
                h.ip_len as u32,
                h.s.tcp.as_mut_ptr().cast::<tcphdr>(),
                // Clamped again where the verifier sees it: the compiler checked the length
                // on a copy the verifier learns nothing from, and would drop a plain clamp.
                core::hint::black_box(h.tcp_len).clamp(TCP_HEADER, TCP_HEADER_MAX) as u32,
            )
        };
        if made < 0 {
            return Answer::NotOurs;
        }
        made as u32
    };
    budget::shared_take(&maps::SYN_REPLY, interval);
    let asked = Asked::parse(&h);
    let reply_len = synack(&mut h, &asked, cookie, cfg);
    send(ctx, pkt, &mut h, reply_len)
}

/// An ACK (no SYN, no RST) to a protected port. Its headers are read in place: the helpers
/// take packet memory, and an ACK needs no copy to build on.
#[inline(always)]
pub fn check(ctx: &XdpContext, pkt: &Packet) -> Ack {
    let (start, end) = (ctx.data(), ctx.data_end());
    let (ip, tcp) = (start + pkt.l3_offset, start + pkt.l4_offset);
    if tcp + TCP_HEADER > end {
        return Ack::NotAHandshake;
    }
    // Each family checks its own header's length against the packet: the verifier learns a
    // pointer's range only from a compare with a constant added to it.
    if pkt.is_v4 {
        if ip + IPV4_HEADER > end {
            return Ack::NotAHandshake;
        }
        cookie(ctx, ip, IPV4_HEADER, tcp)
    } else {
        if ip + IPV6_HEADER > end {
            return Ack::NotAHandshake;
        }
        cookie(ctx, ip, IPV6_HEADER, tcp)
    }
}

/// The cookie an ACK to a listener brings back, checked by the kernel; the headers are in the
/// packet, checked by the caller.
#[inline(always)]
fn cookie(ctx: &XdpContext, ip: usize, ip_len: usize, tcp: usize) -> Ack {
    let Some(sk) = socket(ctx, ip as *const u8, ip_len, tcp as *const u8) else {
        return Ack::NotAHandshake;
    };
    if !sk.listening() {
        return Ack::NotAHandshake;
    }
    // 0: the kernel's cookie for this listener. -EACCES: a wrong cookie; -ENOENT: the
    // listener sent (and we made) no cookie in the last two minutes, so none can be valid.
    let checked = unsafe {
        bpf_tcp_check_syncookie(
            sk.0.cast(),
            ip as *mut c_void,
            ip_len as u32,
            tcp as *mut tcphdr,
            TCP_HEADER as u32,
        )
    };
    if checked == 0 {
        Ack::Valid
    } else {
        Ack::Invalid
    }
}

/// The options a client's SYN asked for.
struct Asked {
    /// Its window scale, if it offered scaling.
    wscale: Option<u8>,
    sack: bool,
    /// Its timestamp value, if it sent the option.
    tsval: Option<u32>,
}

impl Asked {
    /// Walks the SYN's options with `bpf_loop`, one option a call: the verifier checks the
    /// step once, where an unrolled or bounded loop over 40 bytes of options with data-
    /// dependent lengths is more paths than it will explore.
    #[inline(always)]
    fn parse(h: &Headers) -> Self {
        if let Some(linux) = Self::linux_layout(h) {
            return linux;
        }
        let mut walk = OptionWalk {
            at: TCP_HEADER as u32,
            end: h.tcp_len as u32,
            wscale: NO_WSCALE,
            sack: 0,
            has_tsval: 0,
            tsval: 0,
        };
        unsafe {
            bpf_loop(
                (TCP_HEADER_MAX - TCP_HEADER) as u32,
                option_step as *mut c_void,
                (&raw mut walk).cast(),
                0,
            )
        };
        Asked {
            wscale: (walk.wscale != NO_WSCALE).then_some(walk.wscale),
            sack: walk.sack != 0,
            tsval: (walk.has_tsval != 0).then_some(walk.tsval),
        }
    }
}

impl Asked {
    /// The options as Linux (and Android) lay them out in every SYN: MSS, SACK-permitted,
    /// timestamps, a no-op, window scale. Read at fixed places: most SYNs need no walk.
    #[inline(always)]
    fn linux_layout(h: &Headers) -> Option<Self> {
        let t = &h.s.tcp;
        let layout = h.tcp_len == 40
            && t[20..22] == [2, 4]
            && t[24..28] == [4, 2, 8, 10]
            && t[36..39] == [1, 3, 3];
        layout.then(|| Asked {
            wscale: Some(t[39].min(MAX_WSCALE)),
            sack: true,
            tsval: Some(u32::from_be_bytes(word(t, 28))),
        })
    }
}

const NO_WSCALE: u8 = 0xff;

/// Where the option walk is and what it found (the loop callback's context, on the stack).
#[repr(C)]
struct OptionWalk {
    at: u32,
    end: u32,
    wscale: u8,
    sack: u8,
    has_tsval: u8,
    tsval: u32,
}

/// One option of the SYN in the scratch's TCP header: notes it and moves past it. 1 stops the
/// loop (end of the options, or a malformed one: what was found so far stands).
extern "C" fn option_step(_index: u64, walk: *mut c_void) -> i64 {
    let walk = unsafe { &mut *walk.cast::<OptionWalk>() };
    let Some(s) = maps::SYN_SCRATCH.get_ptr(0) else { return 1 };
    let t = unsafe { &(*s).tcp };
    let (at, end) = (walk.at as usize & 63, walk.end as usize);
    if at >= end {
        return 1;
    }
    match t[at] {
        0 => return 1,
        1 => {
            walk.at = next(at + 1);
            return 0;
        }
        _ => {}
    }
    let len = usize::from(t[(at + 1) & 63]);
    if len < 2 || at + len > end {
        return 1;
    }
    match (t[at], len) {
        (3, 3) => walk.wscale = t[(at + 2) & 63].min(MAX_WSCALE),
        (4, 2) => walk.sack = 1,
        (8, 10) => {
            walk.has_tsval = 1;
            walk.tsval = u32::from_be_bytes(word(t, (at + 2) & 63));
        }
        _ => {}
    }
    walk.at = next(at + len);
    0
}

/// The next option's offset, masked as the header's bytes are: a no-op at run time (it is at
/// most the header's 60 bytes), but it keeps the verifier's idea of it to 64 values, so its
/// check of the loop's step settles instead of growing with every call.
#[inline(always)]
fn next(at: usize) -> u32 {
    (at & 63) as u32
}

/// Writes the SYN-ACK's TCP header with its options into the scratch; returns its length.
/// The options are laid out as Linux lays out its own: MSS, SACK-permitted with the
/// timestamps, window scale.
#[inline(always)]
fn synack(h: &mut Headers, asked: &Asked, cookie: u32, cfg: &Config) -> usize {
    let t = &h.s.tcp;
    let out = &mut h.s.reply_tcp;
    // The scratch holds the last reply: every byte up to the reply's length is written below
    // (a whole-array zeroing would cost a call to a byte-wise memset).
    let client_seq = u32::from_be_bytes(word(t, 4));
    out[0..2].copy_from_slice(&t[2..4]);
    out[2..4].copy_from_slice(&t[0..2]);
    out[4..8].copy_from_slice(&cookie.to_be_bytes());
    out[8..12].copy_from_slice(&client_seq.wrapping_add(1).to_be_bytes());
    out[13] = TCP_SYN | TCP_ACK;
    out[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
    // The checksum (computed over zero) and the urgent pointer.
    out[16..20].copy_from_slice(&[0; 4]);

    let allowed = |bit: u32| cfg.syn_options & bit != 0;
    let wscale = asked.wscale.filter(|_| allowed(SYN_OPT_WSCALE));
    let sack = asked.sack && allowed(SYN_OPT_SACK);
    let tsval = asked.tsval.filter(|_| allowed(SYN_OPT_TIMESTAMPS));
    let mss = if h.ip_len == IPV4_HEADER { cfg.syn_mss_v4 } else { cfg.syn_mss_v6 };
    out[20..24].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
    let mut len = 24;
    if let Some(echo) = tsval {
        // Without a timestamp to carry them, the kernel cannot know scaling or SACK.
        let mine = timestamp(wscale, sack);
        out[24..28].copy_from_slice(&if sack { [4, 2, 8, 10] } else { [1, 1, 8, 10] });
        out[28..32].copy_from_slice(&mine.to_be_bytes());
        out[32..36].copy_from_slice(&echo.to_be_bytes());
        len = 36;
        if wscale.is_some() {
            let ours = ((cfg.syn_options >> SYN_OPT_WSCALE_SHIFT) & 0xf) as u8;
            out[36..40].copy_from_slice(&[1, 3, 3, ours]);
            len = 40;
        }
    }
    out[12] = ((len / 4) as u8) << 4;
    len
}

/// Our timestamp: the kernel's TCP clock in ms (CLOCK_MONOTONIC) with the client's window
/// scale and SACK in its low bits, never ahead of the clock (as the kernel's
/// `cookie_init_timestamp`), so the connection's later timestamps never go back. The coarse
/// clock (a tick behind at most, and never ahead) spares the precise clock's serializing
/// read; the kernel already rounds the value down by up to 63 ms.
#[inline(always)]
fn timestamp(wscale: Option<u8>, sack: bool) -> u32 {
    let now = (unsafe { bpf_ktime_get_coarse_ns() } / 1_000_000) as u32;
    let mut options = wscale.map_or(TS_OPT_WSCALE_MASK, u32::from);
    if sack {
        options |= TS_OPT_SACK;
    }
    let ts = (now >> TSBITS << TSBITS) | options;
    if ts > now {
        ts.wrapping_sub(1 << TSBITS)
    } else {
        ts
    }
}

/// Turns the frame into the reply: MAC and IP addresses swapped (VLAN tags untouched), a new
/// IP header, and the reply's TCP header (with checksums) in place of the SYN's TCP header and
/// any payload.
#[inline(always)]
fn send(ctx: &XdpContext, pkt: &Packet, h: &mut Headers, tcp_len: usize) -> Answer {
    let s = &mut *h.s;
    // Every byte of the headers and the pseudo-header is written: the scratch holds the last
    // reply, and zeroing it first would cost a call to a byte-wise memset.
    let (ip, pseudo) = (&mut s.reply_ip, &mut s.pseudo);
    let pseudo_len;
    if h.ip_len == IPV4_HEADER {
        // The last 20 bytes of the slot (see `ip_start`).
        let Ok(ip) = <&mut [u8; IPV4_HEADER]>::try_from(&mut ip[ip_start(IPV4_HEADER)..]) else {
            return Answer::NotOurs;
        };
        let syn_ip = &s.ip[ip_start(IPV4_HEADER)..];
        let total = ((IPV4_HEADER + tcp_len) as u16).to_be_bytes();
        // Version and length, TOS, total length, ID, don't fragment, TTL, protocol, checksum.
        ip[0..12].copy_from_slice(&[
            0x45,
            0,
            total[0],
            total[1],
            0,
            0,
            0x40,
            0,
            REPLY_TTL,
            IPPROTO_TCP,
            0,
            0,
        ]);
        ip[12..16].copy_from_slice(&syn_ip[16..20]);
        ip[16..20].copy_from_slice(&syn_ip[12..16]);
        let check = fold(csum(ip, IPV4_HEADER, 0));
        ip[10..12].copy_from_slice(&check.to_ne_bytes());
        pseudo[0..8].copy_from_slice(&ip[12..20]);
        let length = (tcp_len as u16).to_be_bytes();
        pseudo[8..12].copy_from_slice(&[0, IPPROTO_TCP, length[0], length[1]]);
        pseudo_len = 12;
    } else {
        let length = (tcp_len as u16).to_be_bytes();
        // Version, class and flow label, payload length, next header, hop limit.
        ip[0..8].copy_from_slice(&[0x60, 0, 0, 0, length[0], length[1], IPPROTO_TCP, REPLY_TTL]);
        ip[8..24].copy_from_slice(&s.ip[24..40]);
        ip[24..40].copy_from_slice(&s.ip[8..24]);
        pseudo[0..32].copy_from_slice(&ip[8..40]);
        pseudo[32..40].copy_from_slice(&[0, 0, length[0], length[1], 0, 0, 0, IPPROTO_TCP]);
        pseudo_len = IPV6_HEADER;
    }
    let tcp = &mut s.reply_tcp;
    let check = fold(csum(tcp, tcp_len, csum(pseudo, pseudo_len, 0)));
    tcp[16..18].copy_from_slice(&check.to_ne_bytes());

    let frame = (ctx.data_end() - ctx.data()) as i32;
    let delta = (pkt.l4_offset + tcp_len) as i32 - frame;
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        return Answer::NotOurs;
    }
    // The MACs swapped in place (the packet's first 12 bytes), then both headers in one store:
    // `reply_ip` ends where `reply_tcp` starts, as `ip` and `tcp` do (the SYN's headers are
    // contiguous, so are the reply's).
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 12 > end {
        return Answer::Broken;
    }
    unsafe {
        let (dst, src) = (start as *mut [u8; 6], (start + 6) as *mut [u8; 6]);
        let (to, from) = (dst.read_unaligned(), src.read_unaligned());
        dst.write_unaligned(from);
        src.write_unaligned(to);
    }
    // From the whole scratch, since the store spans two fields: `reply_ip` (40 bytes) ends
    // where `reply_tcp` (40) starts (repr(C), byte arrays).
    let at = core::mem::offset_of!(Scratch, reply_ip) + ip_start(h.ip_len);
    let reply = unsafe { (s as *const Scratch).cast::<u8>().add(at) };
    match unsafe { store(ctx, pkt.l3_offset, reply, h.ip_len + tcp_len) } {
        Some(()) => Answer::Sent,
        None => Answer::Broken,
    }
}

#[inline(always)]
fn word<const N: usize>(bytes: &[u8; N], at: usize) -> [u8; 4] {
    [bytes[at % N], bytes[(at + 1) % N], bytes[(at + 2) % N], bytes[(at + 3) % N]]
}

/// Copies `len` bytes of the packet from `offset` to `to`.
///
/// # Safety
/// `to` must be valid for `len` bytes.
#[inline(always)]
unsafe fn load(ctx: &XdpContext, offset: usize, to: *mut u8, len: usize) -> Option<()> {
    let r = unsafe { bpf_xdp_load_bytes(ctx.ctx, offset as u32, to.cast(), len as u32) };
    (r == 0).then_some(())
}

/// Writes `len` bytes from `from` into the packet at `offset`.
///
/// # Safety
/// `from` must be valid for `len` bytes.
#[inline(always)]
unsafe fn store(ctx: &XdpContext, offset: usize, from: *const u8, len: usize) -> Option<()> {
    let r = unsafe { bpf_xdp_store_bytes(ctx.ctx, offset as u32, from as *mut c_void, len as u32) };
    (r == 0).then_some(())
}

/// A SYN's TCP header length, read from the packet (its data offset), if it is one a TCP
/// header can have.
#[inline(always)]
fn syn_header_len(ctx: &XdpContext, pkt: &Packet) -> Option<usize> {
    let at = ctx.data() + pkt.l4_offset + 12;
    if at + 1 > ctx.data_end() {
        return None;
    }
    let len = usize::from(unsafe { *(at as *const u8) } >> 4) * 4;
    (TCP_HEADER..=TCP_HEADER_MAX).contains(&len).then_some(len)
}

/// The ones' complement sum of the first `len` bytes of `buf` (a multiple of 4), on `seed`.
#[inline(always)]
fn csum<const N: usize>(buf: &[u8; N], len: usize, seed: u32) -> u32 {
    if len == 0 || len > N {
        return seed;
    }
    unsafe {
        bpf_csum_diff(core::ptr::null_mut(), 0, buf.as_ptr() as *mut u32, len as u32, seed) as u32
    }
}

/// A 32-bit ones' complement sum folded to the 16-bit checksum (in the buffer's byte order).
#[inline(always)]
fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
