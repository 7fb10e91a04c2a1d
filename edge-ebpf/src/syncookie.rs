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
#[repr(C)]
pub struct Scratch {
    ip: [u8; IPV6_HEADER],
    /// The whole TCP header with its options; 64 bytes so an index masked with 63 is in bounds.
    tcp: [u8; 64],
    reply_ip: [u8; IPV6_HEADER],
    pseudo: [u8; IPV6_HEADER],
    reply_tcp: [u8; 40],
    macs: [u8; 12],
    swapped: [u8; 12],
}

/// The network and TCP headers of a packet, copied to the scratch where the helpers take them.
struct Headers {
    s: &'static mut Scratch,
    ip_len: usize,
    tcp_len: usize,
}

impl Headers {
    /// The headers of `pkt`: the network header's fixed part (its addresses) and the TCP
    /// header, whole with its options for a SYN (`syn`). `None` for a SYN whose network header
    /// has options or extension headers: its reply would have to drop them, so it is left to
    /// the kernel, which answers it with its own cookie while the mode is on. An ACK is
    /// checked whatever its network header holds.
    #[inline(always)]
    fn read(ctx: &XdpContext, pkt: &Packet, syn: bool) -> Option<Self> {
        let ip_len = if pkt.is_v4 { IPV4_HEADER } else { IPV6_HEADER };
        if syn && pkt.l4_offset != pkt.l3_offset + ip_len {
            return None;
        }
        let s = unsafe { &mut *maps::SYN_SCRATCH.get_ptr_mut(0)? };
        load(ctx, pkt.l3_offset, &mut s.ip, ip_len)?;
        load(ctx, pkt.l4_offset, &mut s.tcp, TCP_HEADER)?;
        let mut tcp_len = TCP_HEADER;
        if syn {
            tcp_len = usize::from(s.tcp[12] >> 4) * 4;
            if !(TCP_HEADER..=TCP_HEADER_MAX).contains(&tcp_len) {
                return None;
            }
            load(ctx, pkt.l4_offset, &mut s.tcp, tcp_len)?;
        }
        Some(Headers { s, ip_len, tcp_len })
    }

    /// The listening socket (or connection) these headers are addressed to, if any. Released
    /// when the returned guard drops.
    #[inline(always)]
    fn socket(&self, ctx: &XdpContext) -> Option<Socket> {
        let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
        let size = if self.ip_len == IPV4_HEADER {
            let t = unsafe { &mut tuple.__bindgen_anon_1.ipv4 };
            t.saddr = u32::from_ne_bytes(word(&self.s.ip, 12));
            t.daddr = u32::from_ne_bytes(word(&self.s.ip, 16));
            t.sport = u16::from_ne_bytes([self.s.tcp[0], self.s.tcp[1]]);
            t.dport = u16::from_ne_bytes([self.s.tcp[2], self.s.tcp[3]]);
            core::mem::size_of_val(t)
        } else {
            let t = unsafe { &mut tuple.__bindgen_anon_1.ipv6 };
            for i in 0..4 {
                t.saddr[i] = u32::from_ne_bytes(word(&self.s.ip, 8 + i * 4));
                t.daddr[i] = u32::from_ne_bytes(word(&self.s.ip, 24 + i * 4));
            }
            t.sport = u16::from_ne_bytes([self.s.tcp[0], self.s.tcp[1]]);
            t.dport = u16::from_ne_bytes([self.s.tcp[2], self.s.tcp[3]]);
            core::mem::size_of_val(t)
        };
        let sk = unsafe {
            bpf_skc_lookup_tcp(ctx.ctx.cast(), &mut tuple, size as u32, CURRENT_NETNS, 0)
        };
        if sk.is_null() {
            return None;
        }
        Some(Socket(sk))
    }
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
    let Some(mut h) = Headers::read(ctx, pkt, true) else { return Answer::NotOurs };
    let cookie = {
        let Some(sk) = h.socket(ctx) else { return Answer::NotOurs };
        if !sk.listening() {
            return Answer::NotOurs;
        }
        let made = unsafe {
            bpf_tcp_gen_syncookie(
                sk.0.cast(),
                h.s.ip.as_mut_ptr().cast(),
                h.ip_len as u32,
                h.s.tcp.as_mut_ptr().cast::<tcphdr>(),
                h.tcp_len as u32,
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

/// An ACK (no SYN, no RST) to a protected port.
#[inline(always)]
pub fn check(ctx: &XdpContext, pkt: &Packet) -> Ack {
    let Some(h) = Headers::read(ctx, pkt, false) else { return Ack::NotAHandshake };
    let Some(sk) = h.socket(ctx) else { return Ack::NotAHandshake };
    if !sk.listening() {
        return Ack::NotAHandshake;
    }
    // 0: the kernel's cookie for this listener. -EACCES: a wrong cookie; -ENOENT: the
    // listener sent (and we made) no cookie in the last two minutes, so none can be valid.
    let checked = unsafe {
        bpf_tcp_check_syncookie(
            sk.0.cast(),
            h.s.ip.as_mut_ptr().cast(),
            h.ip_len as u32,
            h.s.tcp.as_mut_ptr().cast::<tcphdr>(),
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
    // The scratch holds the last reply: the checksum and urgent pointer must start at zero.
    *out = [0; 40];
    let client_seq = u32::from_be_bytes(word(t, 4));
    out[0..2].copy_from_slice(&t[2..4]);
    out[2..4].copy_from_slice(&t[0..2]);
    out[4..8].copy_from_slice(&cookie.to_be_bytes());
    out[8..12].copy_from_slice(&client_seq.wrapping_add(1).to_be_bytes());
    out[13] = TCP_SYN | TCP_ACK;
    out[14..16].copy_from_slice(&u16::MAX.to_be_bytes());

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
    if load(ctx, 0, &mut s.macs, 12).is_none() {
        return Answer::NotOurs;
    }
    s.swapped[..6].copy_from_slice(&s.macs[6..]);
    s.swapped[6..].copy_from_slice(&s.macs[..6]);

    let (ip, pseudo) = (&mut s.reply_ip, &mut s.pseudo);
    *ip = [0; IPV6_HEADER];
    *pseudo = [0; IPV6_HEADER];
    let pseudo_len;
    if h.ip_len == IPV4_HEADER {
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((IPV4_HEADER + tcp_len) as u16).to_be_bytes());
        ip[6] = 0x40; // don't fragment
        ip[8] = REPLY_TTL;
        ip[9] = IPPROTO_TCP;
        ip[12..16].copy_from_slice(&s.ip[16..20]);
        ip[16..20].copy_from_slice(&s.ip[12..16]);
        let check = fold(csum(ip, IPV4_HEADER, 0));
        ip[10..12].copy_from_slice(&check.to_ne_bytes());
        pseudo[0..8].copy_from_slice(&ip[12..20]);
        pseudo[9] = IPPROTO_TCP;
        pseudo[10..12].copy_from_slice(&(tcp_len as u16).to_be_bytes());
        pseudo_len = 12;
    } else {
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
        ip[6] = IPPROTO_TCP;
        ip[7] = REPLY_TTL;
        ip[8..24].copy_from_slice(&s.ip[24..40]);
        ip[24..40].copy_from_slice(&s.ip[8..24]);
        pseudo[0..32].copy_from_slice(&ip[8..40]);
        pseudo[34..36].copy_from_slice(&(tcp_len as u16).to_be_bytes());
        pseudo[39] = IPPROTO_TCP;
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
    let written = store(ctx, 0, &s.swapped, 12)
        .and_then(|()| store(ctx, pkt.l3_offset, &s.reply_ip, h.ip_len))
        .and_then(|()| store(ctx, pkt.l4_offset, &s.reply_tcp, tcp_len));
    match written {
        Some(()) => Answer::Sent,
        None => Answer::Broken,
    }
}

#[inline(always)]
fn word<const N: usize>(bytes: &[u8; N], at: usize) -> [u8; 4] {
    [bytes[at % N], bytes[(at + 1) % N], bytes[(at + 2) % N], bytes[(at + 3) % N]]
}

#[inline(always)]
fn load<const N: usize>(
    ctx: &XdpContext,
    offset: usize,
    buf: &mut [u8; N],
    len: usize,
) -> Option<()> {
    if len == 0 || len > N {
        return None;
    }
    let r = unsafe {
        bpf_xdp_load_bytes(ctx.ctx, offset as u32, buf.as_mut_ptr().cast::<c_void>(), len as u32)
    };
    (r == 0).then_some(())
}

#[inline(always)]
fn store<const N: usize>(ctx: &XdpContext, offset: usize, buf: &[u8; N], len: usize) -> Option<()> {
    if len == 0 || len > N {
        return None;
    }
    let r = unsafe {
        bpf_xdp_store_bytes(ctx.ctx, offset as u32, buf.as_ptr() as *mut c_void, len as u32)
    };
    (r == 0).then_some(())
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
