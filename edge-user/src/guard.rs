//! `edge attach` must not cut the operator off: when run over SSH, the session's own packets
//! are judged by the real program with the policy about to be attached, before attaching.
//!
//! The check asks the loaded program (BPF_PROG_TEST_RUN), not a copy of its rules, so it can
//! never disagree with what the filter will do. A session is safe only if its packets pass
//! for a reason that does not run out: unprotected port, allow list, visitor, admission, or a
//! mode that drops nothing. An unknown source that a budget lets through today is rate-limited
//! tomorrow, so it counts as cut.
use std::net::{IpAddr, SocketAddr};

use edge_common::reason;

use crate::{filter::XDP_PASS, Error, Filter, Result};

/// The operator's SSH session, from `SSH_CONNECTION` ("client port server port").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SshSession {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

impl SshSession {
    pub fn parse(value: &str) -> Option<Self> {
        let mut f = value.split_whitespace();
        let mut addr = || -> Option<SocketAddr> {
            let ip: IpAddr = f.next()?.split('%').next()?.parse().ok()?;
            Some(SocketAddr::new(ip, f.next()?.parse().ok()?))
        };
        let (client, server) = (addr()?, addr()?);
        Some(Self { client, server })
    }

    pub fn from_env() -> Option<Self> {
        Self::parse(&std::env::var("SSH_CONNECTION").ok()?)
    }
}

/// Why attaching would cut `session`, if it would; `None` if the session stays up.
pub fn would_cut(filter: &mut Filter, session: &SshSession, iface: &str) -> Result<Option<String>> {
    // A session that does not arrive on `iface` is not affected. If the address is not found
    // (it may be on a bridge or bond above `iface`), judge it anyway.
    if let Some(owner) = interface_of(session.server.ip()) {
        if owner != iface {
            return Ok(None);
        }
    }
    // The client's segments as the server sees them: an ACK within the established session.
    let judged = filter.judge(&tcp_ack(session.client, session.server))?;
    let lasting = matches!(
        judged.reason,
        reason::OFF | reason::PASS_UNPROTECTED | reason::ALLOW | reason::VISITOR | reason::ADMITTED
    );
    if judged.action == XDP_PASS && (lasting || judged.would_drop) {
        return Ok(None);
    }
    let how = if judged.action == XDP_PASS {
        "passed only within the unknown-source rate limit".to_string()
    } else {
        format!("dropped ({})", judged.reason_name())
    };
    Ok(Some(format!(
        "your SSH session from {} to {} would be {how} once edge is attached to {iface}; \
         put the client on [lists] allow (or record it as a visitor), or pass --force",
        session.client, session.server
    )))
}

fn tcp_ack(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    use etherparse::PacketBuilder;
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let ip = match (client.ip(), server.ip()) {
        (IpAddr::V4(c), IpAddr::V4(s)) => eth.ipv4(c.octets(), s.octets(), 64),
        (c, s) => eth.ipv6(v6(c), v6(s), 64),
    };
    let builder = ip.tcp(client.port(), server.port(), 1, 65535).ack(1);
    let mut frame = Vec::with_capacity(builder.size(0));
    builder.write(&mut frame, &[]).expect("writing to a Vec");
    frame
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The interface that holds `ip`.
fn interface_of(ip: IpAddr) -> Option<String> {
    crate::ifaddrs::all().into_iter().find(|(_, addr)| *addr == ip).map(|(name, _)| name)
}

impl From<etherparse::err::packet::BuildWriteError> for Error {
    fn from(e: etherparse::err::packet::BuildWriteError) -> Self {
        Error::Load(format!("building a test frame: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ssh_connection() {
        let s = SshSession::parse("198.51.100.7 52144 192.0.2.1 22").unwrap();
        assert_eq!(s.client, "198.51.100.7:52144".parse().unwrap());
        assert_eq!(s.server, "192.0.2.1:22".parse().unwrap());
        let s = SshSession::parse("2001:db8::7 40000 fe80::1%eth0 22").unwrap();
        assert_eq!(s.server, "[fe80::1]:22".parse().unwrap());
        assert_eq!(SshSession::parse(""), None);
        assert_eq!(SshSession::parse("1.2.3.4 x 5.6.7.8 22"), None);
        assert_eq!(SshSession::parse("1.2.3.4 1"), None);
    }

    #[test]
    fn the_frame_is_the_sessions_tcp_segment() {
        let client = "198.51.100.7:52144".parse().unwrap();
        let server = "192.0.2.1:22".parse().unwrap();
        let frame = tcp_ack(client, server);
        let p = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport else { panic!() };
        assert_eq!((tcp.source_port(), tcp.destination_port(), tcp.ack()), (52144, 22, true));
    }
}
