//! Visitor learning that cannot be spoofed: a peer counts as a visitor only once a local
//! server has completed a TCP handshake with it (the socket went SYN_RECV -> ESTABLISHED),
//! which needs the peer to have received our SYN-ACK at the address it claims. Raw ingress
//! packets prove nothing and are never used. Only handshakes on protected ports, of sockets in
//! the network namespace the daemon protects, are reported: the tracepoint fires for every
//! namespace on the host, and a user can make one of their own with any address in it.
use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::tracepoint, programs::TracePointContext};
use edge_common::{
    events::{tracepoint as tp, Handshake},
    keys::{v4_mapped, Addr, IPPROTO_TCP},
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
    if !crate::protected(IPPROTO_TCP, local_port) || !in_scope(ctx)? {
        return Ok(());
    }
    let (peer, local) = if unsafe { ctx.read_at::<u16>(tp::FAMILY)? } == tp::AF_INET {
        let address = |offset| -> Result<Addr, i32> {
            Ok(v4_mapped(unsafe { ctx.read_at::<[u8; 4]>(offset)? }))
        };
        (address(tp::DADDR)?, address(tp::SADDR)?)
    } else {
        // An IPv4 peer of a dual-stack socket is already v4-mapped here.
        let address = |offset| unsafe { ctx.read_at::<[u8; 16]>(offset) };
        (address(tp::DADDR_V6)?, address(tp::SADDR_V6)?)
    };
    let event = Handshake { peer, local, local_port: u32::from(local_port), _pad: 0 };
    maps::HANDSHAKES.output::<Handshake>(&event, maps::BPF_RB_NO_WAKEUP)
}

/// Whether the socket belongs to the network namespace the daemon protects: its
/// `sk->__sk_common.skc_net.net->net_cookie` against the daemon's own (0: nothing is).
#[inline(always)]
fn in_scope(ctx: &TracePointContext) -> Result<bool, i32> {
    let Some(scope) = maps::LEARN_SCOPE.get(0) else { return Ok(false) };
    if scope.netns_cookie == 0 {
        return Ok(false);
    }
    let sk = unsafe { ctx.read_at::<u64>(tp::SKADDR)? };
    let read = |at: u64| unsafe { bpf_probe_read_kernel(at as *const u64).map_err(|e| e as i32) };
    let net = read(sk + u64::from(scope.sock_net))?;
    Ok(read(net + u64::from(scope.net_cookie))? == scope.netns_cookie)
}
