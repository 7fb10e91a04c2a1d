//! edge: the XDP admission filter. The pipeline reads top to bottom in `edge()` and `judge()`:
//! mode, parse, deny, knock, admission endpoint, scope, SYN cookies, allow, visitors, admitted,
//! fragment, unknown budgets. The first
//! stage that decides wins. The stage order with every reason and action is documented once,
//! in the README ("Verdict pipeline"); reason numbers live in `edge_common::reason`.
//!
//! Every packet is counted exactly once, under its reason. In `monitor` mode a drop is counted
//! as a would-drop and the packet passes.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod budget;
mod handshake;
mod knock;
mod maps;
mod parse;
mod syncookie;

use aya_ebpf::{
    bindings::xdp_action::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX},
    helpers::bpf_ktime_get_tai_ns,
    macros::xdp,
    programs::XdpContext,
};
use edge_common::{
    config::{
        Config, LIST_ADMITTED, LIST_ALLOW, LIST_DENY, LIST_VISITORS_V6, MODE_ENFORCE, MODE_OFF,
    },
    events::DropEvent,
    keys::{
        admitted_hint_byte, admitted_hint_slot_words, list_block_v4_slot, list_net48_v6_slot,
        list_net_v4_slot, list_net_v6_slot, protected_slot, visitor_v4_block_slot,
        visitor_v4_net_slot, visitor_v4_slot, Addr, Rule, IPPROTO_TCP, IPPROTO_UDP,
        LIST_NETS_ALLOW, LIST_NETS_DENY,
    },
    maps::ADMITTED_HINT_GENERATION,
    reason::*,
};
use parse::{Fragment, Packet, Parsed, Source};
use syncookie::{Ack, Answer, TCP_ACK, TCP_RST, TCP_SYN};

#[xdp]
pub fn edge(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let Some(cfg) = maps::CONFIG.get(0) else {
        let _ = count(INTERNAL, false, bytes);
        return XDP_ABORTED;
    };
    if cfg.mode == MODE_OFF {
        let _ = count(OFF, false, bytes);
        return XDP_PASS;
    }
    let (reason, src) = match parse::packet(&ctx) {
        Ok(Parsed::NonIp) => (NON_IP, None),
        Ok(Parsed::NeighborDiscovery) => (NEIGHBOR_DISCOVERY, None),
        Ok(Parsed::Ip(pkt)) => (judge(&ctx, &pkt, cfg), Some(pkt.src)),
        Err(parse::Malformed) => (MALFORMED, None),
    };
    let (action, seen) = apply(reason, cfg.mode, bytes);
    if let Some(src) = src {
        if cfg.sample_every != 0 && is_drop(reason) && reason != KNOCK_OK {
            sample(&src, reason, seen, cfg);
        }
    }
    action
}

/// The admission pipeline for a parsed IP packet.
#[inline(always)]
fn judge(ctx: &XdpContext, pkt: &Packet, cfg: &Config) -> Reason {
    if cfg.lists & LIST_DENY != 0 && listed(&maps::DENY_LIST, LIST_NETS_DENY, pkt) {
        return DENY;
    }
    if cfg.knock_port != 0
        && pkt.proto == IPPROTO_UDP
        && u32::from(pkt.dport) == cfg.knock_port
        && pkt.fragment == Fragment::No
    {
        return knock::knock(ctx, pkt, cfg);
    }
    if cfg.endpoint_port != 0
        && pkt.proto == IPPROTO_TCP
        && u32::from(pkt.dport) == cfg.endpoint_port
        && pkt.fragment == Fragment::No
    {
        return endpoint(pkt, cfg);
    }
    // A later fragment has no ports, so it cannot be out of scope: it must prove its source.
    if pkt.fragment == Fragment::No && !protected(pkt.proto, pkt.dport) {
        return PASS_UNPROTECTED;
    }
    let step = handshake_step(pkt, cfg);
    let mut spent = false;
    if step == Step::Syn {
        match syncookie::answer(ctx, pkt, cfg) {
            Answer::Sent => return SYN_COOKIE_SENT,
            Answer::Broken => return INTERNAL,
            Answer::BudgetSpent => spent = true,
            Answer::NotOurs => {}
        }
    }
    let judged = match known(pkt, cfg) {
        Some(known) => known,
        None if pkt.fragment == Fragment::Later => FRAGMENT,
        None => {
            let mask = if pkt.is_v4 { &cfg.bucket_mask_v4 } else { &cfg.bucket_mask_v6 };
            budget::judge_unknown(&pkt.src, mask, cfg)
        }
    };
    if is_drop(judged) {
        // Dropped before any cookie work: a random-source ACK flood costs what any unknown
        // flood costs.
        return judged;
    }
    if step == Step::Ack {
        if let Some(checked) = cookie_check(ctx, pkt) {
            return checked;
        }
    }
    // A SYN the reply budget left unanswered is counted as such when it passes.
    if spent {
        SYN_REPLY_BUDGET
    } else {
        judged
    }
}

/// What a TCP packet is to the SYN cookie stage (`Step::None` while cookies are off).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    None,
    /// A SYN (no ACK, no RST): answered by the program.
    Syn,
    /// An ACK (no SYN, no RST): if it is to a listener, it must bring a valid cookie.
    Ack,
}

#[inline(always)]
fn handshake_step(pkt: &Packet, cfg: &Config) -> Step {
    if pkt.proto != IPPROTO_TCP || pkt.fragment != Fragment::No || !cfg.answers_syns() {
        return Step::None;
    }
    match pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) {
        TCP_SYN => Step::Syn,
        TCP_ACK => Step::Ack,
        _ => Step::None,
    }
}

/// An ACK to a listener (no connection for its addresses): its cookie decides. `None`: part
/// of a connection, or to no listener, which the pipeline judges as before.
#[inline(always)]
fn cookie_check(ctx: &XdpContext, pkt: &Packet) -> Option<Reason> {
    match syncookie::check(ctx, pkt) {
        Ack::Valid => Some(COOKIE_VALID),
        Ack::Invalid => Some(COOKIE_INVALID),
        Ack::NotAHandshake => None,
    }
}

/// A source edge knows: on the allow list, a visitor, or admitted (in that order).
#[inline(always)]
fn known(pkt: &Packet, cfg: &Config) -> Option<Reason> {
    if cfg.lists & LIST_ALLOW != 0 && listed(&maps::ALLOW_LIST, LIST_NETS_ALLOW, pkt) {
        return Some(ALLOW);
    }
    if visitor(pkt, cfg) {
        return Some(VISITOR);
    }
    if cfg.lists & LIST_ADMITTED != 0 && admitted(pkt, cfg) {
        return Some(ADMITTED);
    }
    None
}

/// The admission endpoint's port: the sources edge knows pass as anywhere; the rest take the
/// endpoint's own budgets, so what reaches the daemon's endpoint is bounded whatever arrives.
#[inline(always)]
fn endpoint(pkt: &Packet, cfg: &Config) -> Reason {
    if let Some(known) = known(pkt, cfg) {
        return known;
    }
    // Keyed as admissions are (an IPv6 /64 is one source), so rotating addresses inside a
    // /64 gains nothing.
    budget::judge_endpoint(&admission_key(pkt), cfg)
}

/// Whether a prefix of `list` holds the source. The list's bits for the source's IPv4 /16
/// and /24, or its IPv6 /32 and /48, first (see `list_nets`): most sources are in no listed
/// network, and a bit is one read where the trie walk is several dependent misses once the
/// list is large.
#[inline(always)]
fn listed(list: &aya_ebpf::maps::LpmTrie<Addr, Rule>, which: u32, pkt: &Packet) -> bool {
    let marked = |(word, bit): (u32, u64)| maps::LIST_NETS.get(word).is_some_and(|w| w & bit != 0);
    let touched = if pkt.is_v4 {
        let addr = pkt.src.v4();
        marked(list_block_v4_slot(which, addr >> 16)) && marked(list_net_v4_slot(which, addr >> 8))
    } else {
        marked(list_net_v6_slot(which, pkt.src.prefix32()))
            && marked(list_net48_v6_slot(which, pkt.src.prefix48()))
    };
    touched && list.get(aya_ebpf::maps::lpm_trie::Key::new(128, *pkt.src.addr())).is_some()
}

#[inline(always)]
pub fn protected(proto: u8, port: u16) -> bool {
    match protected_slot(proto, port) {
        Some((word, bit)) => maps::PROTECTED.get(word).is_some_and(|w| w & bit != 0),
        None => false,
    }
}

#[inline(always)]
fn visitor(pkt: &Packet, cfg: &Config) -> bool {
    if pkt.is_v4 {
        // The source's /16 bit, its /24 bit, then its own: each read only if the coarser one
        // is set, so most of a spoofed flood is decided from the 8 KiB block summary.
        let addr = pkt.src.v4();
        let marked =
            |(word, bit): (u32, u64)| maps::VISITORS_V4.get(word).is_some_and(|w| w & bit != 0);
        marked(visitor_v4_block_slot(addr))
            && marked(visitor_v4_net_slot(addr))
            && marked(visitor_v4_slot(addr))
    } else if cfg.lists & LIST_VISITORS_V6 != 0 {
        maps::VISITORS_V6.get_ptr(pkt.src.prefix64()).is_some()
    } else {
        false
    }
}

/// The key a source is admitted under: the v4-mapped address, or the IPv6 /64.
#[inline(always)]
fn admission_key(pkt: &Packet) -> Source {
    let mut key = pkt.src;
    if !pkt.is_v4 {
        key.words[1] = 0;
    }
    key
}

/// The slot of `key` in each generation of the hint.
#[inline(always)]
fn hint_slot(key: &Source) -> u32 {
    admitted_hint_slot_words(key.words[0], key.words[1])
}

/// Whether an admission may exist for `key`: its byte in the live generation of the hint.
#[inline(always)]
fn hinted(key: &Source) -> bool {
    let generation =
        maps::ADMITTED_HINT.get(ADMITTED_HINT_GENERATION).map_or(0, |g| (*g & 1) as u32);
    let (word, byte) = admitted_hint_byte(generation, hint_slot(key));
    maps::ADMITTED_HINT.get(word).is_some_and(|w| (w >> (byte * 8)) & 0xff != 0)
}

/// Marks `key` in both generations of the hint (after the admission is in the map, so a
/// rebuild that scans the map after clearing cannot lose it). Byte stores: no word is
/// read-modified-written, so concurrent writers never erase each other.
#[inline(always)]
pub fn hint_admitted(key: &Source) {
    let slot = hint_slot(key);
    for generation in 0..2 {
        let (word, byte) = admitted_hint_byte(generation, slot);
        if let Some(w) = maps::ADMITTED_HINT.get_ptr_mut(word) {
            unsafe { *(w as *mut u8).add(byte as usize) = 1 };
        }
    }
}

/// Unix seconds (UTC) from the kernel's TAI clock and the offset the control plane wrote.
#[inline(always)]
fn now_utc(cfg: &Config) -> u64 {
    (unsafe { bpf_ktime_get_tai_ns() } / 1_000_000_000).wrapping_sub(cfg.tai_offset_s)
}

/// Admissions are keyed by IPv4 address or IPv6 /64 and expire on the kernel's UTC clock.
/// The hint is checked first: for a source that was never admitted it is one cache-resident
/// byte instead of a miss in the admitted map.
#[inline(always)]
fn admitted(pkt: &Packet, cfg: &Config) -> bool {
    let key = admission_key(pkt);
    if !hinted(&key) {
        return false;
    }
    let Some(admission) = maps::ADMITTED.get_ptr(key.addr()) else {
        return false;
    };
    now_utc(cfg) < unsafe { (*admission).admitted_until }
}

/// Reports 1 in `sample_every` drops to the daemon (`edge top`), on average: those whose
/// per-CPU count under their reason (`seen`, just counted) hashes below 2^32 / N. No state and
/// no random number per drop, and the count is the kernel's own, so an attack cannot time
/// itself around the samples. No wakeup: the daemon drains the ring on a timer; a full ring
/// drops the sample, never the decision.
#[inline(always)]
fn sample(src: &Source, reason: Reason, seen: u64, cfg: &Config) {
    let hash = seen.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
    if (hash * u64::from(cfg.sample_every)) >> 32 != 0 {
        return;
    }
    let event =
        DropEvent { src: *src.addr(), reason, would_drop: u32::from(cfg.mode != MODE_ENFORCE) };
    let _ = maps::DROP_EVENTS.output::<DropEvent>(&event, maps::BPF_RB_NO_WAKEUP);
}

/// Turns a reason into an action under the mode, counting it once. Also returns the count
/// the packet reached (this CPU's, under its reason and disposition).
#[inline(always)]
fn apply(reason: Reason, mode: u32, bytes: u64) -> (u32, u64) {
    if reason == SYN_COOKIE_SENT {
        return (XDP_TX, count(reason, false, bytes));
    }
    if !is_drop(reason) {
        return (XDP_PASS, count(reason, false, bytes));
    }
    if mode != MODE_ENFORCE {
        return (XDP_PASS, count(reason, true, bytes));
    }
    let seen = count(reason, false, bytes);
    (if reason == INTERNAL { XDP_ABORTED } else { XDP_DROP }, seen)
}

#[inline(always)]
fn count(reason: Reason, would_drop: bool, bytes: u64) -> u64 {
    let slot = if would_drop { REASON_COUNT + reason } else { reason };
    match maps::STATS.get_ptr_mut(slot) {
        // SAFETY: this CPU's counter; XDP runs to completion on its CPU.
        Some(counter) => unsafe {
            (*counter).packets += 1;
            (*counter).bytes += bytes;
            (*counter).packets
        },
        None => 0,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
