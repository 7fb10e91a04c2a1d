//! Visitor learning that cannot be spoofed: a peer counts as a visitor only once a local
//! server has completed a TCP handshake with it (the socket went SYN_RECV -> ESTABLISHED),
//! which needs the peer to have received our SYN-ACK at the address it claims. Raw ingress
//! packets prove nothing and are never used. Only handshakes on protected ports are reported.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use edge_common::{
    events::{tracepoint as tp, Handshake},
    keys::{v4_mapped, IPPROTO_TCP},
};

use crate::maps;

#[tracepoint]
pub fn handshake(ctx: TracePointContext) -> u32 {
    let _ = report(&ctx);
    0
}

#[inline(always)]
fn report(ctx: &TracePointContext) -> Result<(), i32> {
    // SAFETY: offsets of `sock:inet_sock_set_state`, checked by the daemon before attaching.
    let (old, new, protocol) = unsafe {
        (
            ctx.read_at::<i32>(tp::OLDSTATE)?,
            ctx.read_at::<i32>(tp::NEWSTATE)?,
            ctx.read_at::<u16>(tp::PROTOCOL)?,
        )
    };
    if protocol != u16::from(IPPROTO_TCP) || old != tp::TCP_SYN_RECV || new != tp::TCP_ESTABLISHED {
        return Ok(());
    }
    let local_port = unsafe { ctx.read_at::<u16>(tp::SPORT)? };
    if !crate::protected(IPPROTO_TCP, local_port) {
        return Ok(());
    }
    let peer = if unsafe { ctx.read_at::<u16>(tp::FAMILY)? } == tp::AF_INET {
        v4_mapped(unsafe { ctx.read_at::<[u8; 4]>(tp::DADDR)? })
    } else {
        // An IPv4 peer of a dual-stack socket is already v4-mapped here.
        unsafe { ctx.read_at::<[u8; 16]>(tp::DADDR_V6)? }
    };
    let event = Handshake { peer, local_port: u32::from(local_port), _pad: 0 };
    maps::HANDSHAKES.output::<Handshake>(&event, maps::BPF_RB_NO_WAKEUP)
}
