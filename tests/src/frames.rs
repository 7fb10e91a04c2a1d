//! Frames built with etherparse, so tests say what a packet is rather than spell its bytes.
use std::net::IpAddr;

use etherparse::{
    IpFragOffset, IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv4Options, Ipv6Extensions,
    Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, Ipv6RoutingExtensions, PacketBuilder, VlanId,
};

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
pub const DST_V4: [u8; 4] = [192, 0, 2, 1];
pub const DST_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp(u16),
    Udp(u16),
    /// ICMP echo (v4) or echo request (v6).
    Echo,
    /// ICMPv6 neighbour solicitation.
    NeighborSolicitation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fragment {
    #[default]
    None,
    /// Offset 0, more fragments: carries the transport header.
    First,
    /// Offset > 0: no transport header.
    Later,
}

/// A packet description; `build()` turns it into an Ethernet frame.
#[derive(Clone, Debug)]
pub struct Frame {
    pub src: IpAddr,
    pub l4: L4,
    pub vlans: usize,
    /// IPv4 options bytes (a multiple of 4, at most 40).
    pub ipv4_options: usize,
    /// IPv6 extension headers before the transport header, by protocol number (0, 43, 60, 51).
    pub ipv6_ext: Vec<u8>,
    pub fragment: Fragment,
    pub payload: usize,
    /// Exact payload bytes (overrides `payload`).
    pub payload_bytes: Option<Vec<u8>>,
    /// IPv4 TTL or IPv6 hop limit: 64, or 255 for neighbour discovery (RFC 4861 requires it).
    pub hop_limit: u8,
}

pub fn frame(src: &str, l4: L4) -> Frame {
    Frame {
        src: src.parse().expect("test address"),
        l4,
        vlans: 0,
        ipv4_options: 0,
        ipv6_ext: Vec::new(),
        fragment: Fragment::None,
        payload: 8,
        payload_bytes: None,
        hop_limit: if l4 == L4::NeighborSolicitation { 255 } else { 64 },
    }
}

impl Frame {
    pub fn vlans(mut self, n: usize) -> Self {
        self.vlans = n;
        self
    }
    pub fn ipv4_options(mut self, bytes: usize) -> Self {
        self.ipv4_options = bytes;
        self
    }
    pub fn ipv6_ext(mut self, chain: &[u8]) -> Self {
        self.ipv6_ext = chain.to_vec();
        self
    }
    pub fn fragment(mut self, f: Fragment) -> Self {
        self.fragment = f;
        self
    }
    pub fn hop_limit(mut self, hops: u8) -> Self {
        self.hop_limit = hops;
        self
    }
    pub fn payload_bytes(mut self, bytes: &[u8]) -> Self {
        self.payload_bytes = Some(bytes.to_vec());
        self
    }

    /// Length of all headers (where truncation makes the frame malformed).
    pub fn header_len(&self) -> usize {
        let mut with_payload = self.clone();
        with_payload.payload = 0;
        with_payload.payload_bytes = None;
        with_payload.build().len()
    }

    pub fn build(&self) -> Vec<u8> {
        let payload = self.payload_bytes.clone().unwrap_or_else(|| vec![0xab; self.payload]);
        let mut out = Vec::new();
        let ip = self.ip_headers();
        let eth = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
        let step = match self.vlans {
            0 => eth.ip(ip),
            1 => eth.single_vlan(VlanId::try_new(10).unwrap()).ip(ip),
            2 => eth.double_vlan(VlanId::try_new(10).unwrap(), VlanId::try_new(20).unwrap()).ip(ip),
            n => {
                // etherparse stops at two tags; a third is spliced in by hand.
                let mut f = self.clone();
                f.vlans = 2;
                let mut bytes = f.build();
                let extra = [0x81, 0x00, 0x00, 30 + n as u8];
                for _ in 2..n {
                    bytes.splice(12..12, extra);
                }
                return bytes;
            }
        };
        if self.fragment == Fragment::Later {
            // No transport header in a later fragment: just payload.
            let proto = match self.l4 {
                L4::Tcp(_) => IpNumber::TCP,
                L4::Udp(_) => IpNumber::UDP,
                _ => IpNumber::ICMP,
            };
            step.write(&mut out, proto, &payload).unwrap();
            return out;
        }
        let v6 = self.src.is_ipv6();
        match self.l4 {
            L4::Tcp(port) => {
                step.tcp(40000, port, 1, 1024).syn().write(&mut out, &payload).unwrap()
            }
            L4::Udp(port) => step.udp(40000, port).write(&mut out, &payload).unwrap(),
            L4::Echo if v6 => step.icmpv6_echo_request(1, 1).write(&mut out, &payload).unwrap(),
            L4::Echo => step.icmpv4_echo_request(1, 1).write(&mut out, &payload).unwrap(),
            L4::NeighborSolicitation => {
                step.icmpv6_raw(135, 0, [0; 4]).write(&mut out, &payload).unwrap()
            }
        }
        out
    }

    fn ip_headers(&self) -> IpHeaders {
        let (offset, more) = match self.fragment {
            Fragment::None => (0, false),
            Fragment::First => (0, true),
            Fragment::Later => (64, false),
        };
        match self.src {
            IpAddr::V4(src) => {
                let mut h = Ipv4Header::new(0, self.hop_limit, IpNumber::TCP, src.octets(), DST_V4)
                    .unwrap();
                h.options = Ipv4Options::try_from(&vec![1u8; self.ipv4_options][..]).unwrap();
                h.more_fragments = more;
                h.fragment_offset = IpFragOffset::try_new(offset).unwrap();
                IpHeaders::Ipv4(h, Ipv4Extensions::default())
            }
            IpAddr::V6(src) => {
                let h = Ipv6Header {
                    traffic_class: 0,
                    flow_label: Default::default(),
                    payload_length: 0,
                    next_header: IpNumber::TCP,
                    hop_limit: self.hop_limit,
                    source: src.octets(),
                    destination: DST_V6,
                };
                IpHeaders::Ipv6(h, self.ipv6_extensions(offset, more))
            }
        }
    }

    fn ipv6_extensions(&self, offset: u16, more: bool) -> Ipv6Extensions {
        let raw = || Ipv6RawExtHeader::new_raw(IpNumber::TCP, &[0; 6]).unwrap();
        let mut ext = Ipv6Extensions::default();
        for kind in &self.ipv6_ext {
            match kind {
                0 => ext.hop_by_hop_options = Some(raw()),
                60 => ext.destination_options = Some(raw()),
                43 => {
                    ext.routing = Some(Ipv6RoutingExtensions {
                        routing: raw(),
                        final_destination_options: None,
                    })
                }
                51 => {
                    ext.auth =
                        Some(etherparse::IpAuthHeader::new(IpNumber::TCP, 1, 1, &[0; 4]).unwrap())
                }
                other => panic!("unsupported extension header {other} in a test frame"),
            }
        }
        if self.fragment != Fragment::None {
            ext.fragment = Some(Ipv6FragmentHeader::new(
                IpNumber::TCP,
                IpFragOffset::try_new(offset).unwrap(),
                more,
                7,
            ));
        }
        ext
    }
}

/// An ARP request.
pub fn arp() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&[192, 0, 2, 10]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&DST_V4);
    f
}

/// An IPv6 frame with `n` hop-by-hop/destination-option headers chained (more than etherparse
/// will build), then TCP to `port`.
pub fn ipv6_long_chain(src: &str, n: usize, port: u16) -> Vec<u8> {
    let base = frame(src, L4::Tcp(port)).build();
    // Ethernet (14) + IPv6 (40), then the TCP header and payload.
    let (head, tcp) = base.split_at(54);
    let mut out = head.to_vec();
    out[20] = 60; // first next header: destination options
    for i in 0..n {
        let next = if i + 1 == n { 6 } else { 60 };
        out.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    out.extend_from_slice(tcp);
    let payload_len = (out.len() - 54) as u16;
    out[18..20].copy_from_slice(&payload_len.to_be_bytes());
    out
}
