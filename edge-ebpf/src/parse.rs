//! Header parsing: a cursor walks Ethernet (up to two VLAN tags), IPv4 (honouring IHL) or IPv6
//! (a bounded chain of extension headers), then reads the TCP/UDP destination port.
//!
//! Every read is bounds-checked against `data_end`; any header that does not fit, has an
//! impossible length, or nests deeper than the limits below is `Malformed`.
use aya_ebpf::programs::XdpContext;
use edge_common::keys::{Addr, IPPROTO_TCP, IPPROTO_UDP};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// VLAN tags we look through (802.1Q, and 802.1ad QinQ). A third tag is malformed: the filter
/// will not pass traffic it cannot see into.
const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked before the transport header; a longer chain is malformed.
const MAX_EXT_HEADERS: usize = 8;
/// Largest header offset accepted. Keeps offsets provably bounded for the verifier; real
/// packets put their transport header far earlier.
const MAX_HEADER_OFFSET: usize = 1024;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;

/// ICMPv6 router solicitation .. redirect (RFC 4861): neighbour discovery.
const ND_FIRST_TYPE: u8 = 133;
const ND_LAST_TYPE: u8 = 137;
/// The hop limit RFC 4861 requires on every neighbour discovery message: a router on the way
/// lowers it, so only a message from the link itself arrives with 255. Anything lower is
/// judged like any other packet (deny, scope, budgets).
const ND_HOP_LIMIT: u8 = 255;

pub struct Malformed;

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented, or the first fragment: ports are present.
    No,
    /// A later fragment: no transport header, so no ports.
    Later,
}

/// A source address in its key form (16 bytes, v4-mapped for IPv4) held as two native-endian
/// words: it lives in registers through the pipeline, and a map lookup takes it by reference
/// as an aligned `Addr` (a byte array would be carried, copied and compared byte by byte).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Source {
    pub words: [u64; 2],
}

impl Source {
    /// `::ffff:a.b.c.d` for IPv4 address bytes `v4`.
    #[inline(always)]
    fn v4_mapped(v4: [u8; 4]) -> Self {
        let [a, b, c, d] = v4;
        Self { words: [0, u64::from_ne_bytes([0, 0, 0xff, 0xff, a, b, c, d])] }
    }

    #[inline(always)]
    fn v6(bytes: &[u8; 16]) -> Self {
        let mut words = [0u64; 2];
        for (i, word) in words.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            *word = u64::from_ne_bytes(w);
        }
        Self { words }
    }

    /// The key as the maps take it.
    #[inline(always)]
    pub fn addr(&self) -> &Addr {
        // SAFETY: `Source` is 16 bytes of plain words; `Addr` is 16 bytes with alignment 1.
        unsafe { &*(self as *const Self).cast::<Addr>() }
    }

    /// The IPv4 address (host order) of a v4-mapped source.
    #[inline(always)]
    pub fn v4(&self) -> u32 {
        let b = self.words[1].to_ne_bytes();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }

    /// The first four bytes (an IPv6 /32), big-endian.
    #[inline(always)]
    pub fn prefix32(&self) -> u32 {
        let b = self.words[0].to_ne_bytes();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The first six bytes (an IPv6 /48), big-endian.
    #[inline(always)]
    pub fn prefix48(&self) -> u64 {
        u64::from_be(self.words[0]) >> 16
    }

    /// The first eight bytes (an IPv6 /64 prefix), as a key.
    #[inline(always)]
    pub fn prefix64(&self) -> &[u8; 8] {
        // SAFETY: the first word, 8 bytes of plain data.
        unsafe { &*(&self.words[0] as *const u64).cast::<[u8; 8]>() }
    }
}

pub struct Packet {
    /// Source address, v4-mapped for IPv4.
    pub src: Source,
    pub is_v4: bool,
    pub proto: u8,
    /// Destination port (TCP/UDP only; 0 otherwise).
    pub dport: u16,
    pub fragment: Fragment,
    /// Offset of the network header from the start of the frame.
    pub l3_offset: usize,
    /// Offset of the transport header from the start of the frame.
    pub l4_offset: usize,
    /// TCP flags (FIN .. CWR), 0 for other protocols and later fragments.
    pub tcp_flags: u8,
    /// UDP length field (header and payload); 0 for other protocols.
    pub udp_len: u16,
}

pub enum Parsed {
    NonIp,
    NeighborDiscovery,
    Ip(Packet),
}

#[repr(C)]
struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    tot_len: [u8; 2],
    id: [u8; 2],
    frag_off: [u8; 2],
    ttl: u8,
    protocol: u8,
    check: [u8; 2],
    saddr: [u8; 4],
    daddr: [u8; 4],
}

#[repr(C)]
struct Ipv6Hdr {
    version_class_flow: [u8; 4],
    payload_len: [u8; 2],
    next_header: u8,
    hop_limit: u8,
    saddr: [u8; 16],
    daddr: [u8; 16],
}

/// Minimal TCP header (20 bytes): ports, and the data offset to reject impossible headers.
#[repr(C)]
struct TcpHdr {
    sport: [u8; 2],
    dport: [u8; 2],
    seq: [u8; 4],
    ack: [u8; 4],
    doff_flags: [u8; 2],
    window: [u8; 2],
    check: [u8; 2],
    urg: [u8; 2],
}

#[repr(C)]
struct UdpHdr {
    sport: [u8; 2],
    dport: [u8; 2],
    len: [u8; 2],
    check: [u8; 2],
}

/// A pointer to a `T` at `offset`, if the whole `T` lies inside the packet.
#[inline(always)]
pub fn header<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, Malformed> {
    if offset > MAX_HEADER_OFFSET {
        return Err(Malformed);
    }
    let start = ctx.data();
    if start + offset + core::mem::size_of::<T>() > ctx.data_end() {
        return Err(Malformed);
    }
    Ok((start + offset) as *const T)
}

#[inline(always)]
pub fn packet(ctx: &XdpContext) -> Result<Parsed, Malformed> {
    let (ethertype, offset) = ethernet(ctx)?;
    match ethertype {
        ETH_P_IP => ipv4(ctx, offset),
        ETH_P_IPV6 => ipv6(ctx, offset),
        _ => Ok(Parsed::NonIp),
    }
}

/// Returns the ethertype after any VLAN tags and the offset of the network header.
#[inline(always)]
fn ethernet(ctx: &XdpContext) -> Result<(u16, usize), Malformed> {
    // The ethertype is the last field of the Ethernet header and of each VLAN tag.
    let mut offset = ETH_HLEN;
    let mut ethertype = u16::from_be_bytes(unsafe { *header::<[u8; 2]>(ctx, offset - 2)? });
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            return Ok((ethertype, offset));
        }
        offset += 4;
        ethertype = u16::from_be_bytes(unsafe { *header::<[u8; 2]>(ctx, offset - 2)? });
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return Err(Malformed);
    }
    Ok((ethertype, offset))
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, offset: usize) -> Result<Parsed, Malformed> {
    let ip = unsafe { &*header::<Ipv4Hdr>(ctx, offset)? };
    let ihl = (ip.version_ihl & 0x0f) as usize * 4;
    if ip.version_ihl >> 4 != 4 || ihl < core::mem::size_of::<Ipv4Hdr>() {
        return Err(Malformed);
    }
    if (u16::from_be_bytes(ip.tot_len) as usize) < ihl {
        return Err(Malformed);
    }
    let fragment =
        if u16::from_be_bytes(ip.frag_off) & 0x1fff != 0 { Fragment::Later } else { Fragment::No };
    let src = Source::v4_mapped(ip.saddr);
    transport(ctx, src, None, ip.protocol, (offset, offset + ihl), fragment)
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, offset: usize) -> Result<Parsed, Malformed> {
    let ip = unsafe { &*header::<Ipv6Hdr>(ctx, offset)? };
    if ip.version_class_flow[0] >> 4 != 6 {
        return Err(Malformed);
    }
    let src = Source::v6(&ip.saddr);
    let l3_offset = offset;
    let mut next = ip.next_header;
    let mut offset = offset + core::mem::size_of::<Ipv6Hdr>();
    let mut fragment = Fragment::No;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                // next header, length in 8-octet units not counting the first 8.
                let ext = unsafe { *header::<[u8; 2]>(ctx, offset)? };
                next = ext[0];
                offset += (ext[1] as usize + 1) * 8;
            }
            IPPROTO_AH => {
                // AH counts its length in 4-octet units, minus 2.
                let ext = unsafe { *header::<[u8; 2]>(ctx, offset)? };
                next = ext[0];
                offset += (ext[1] as usize + 2) * 4;
            }
            IPPROTO_FRAGMENT => {
                // Offset (13 bits) << 3 | M: a non-zero offset means no transport header here.
                let frag = unsafe { *header::<[u8; 8]>(ctx, offset)? };
                next = frag[0];
                offset += 8;
                if u16::from_be_bytes([frag[2], frag[3]]) & 0xfff8 != 0 {
                    fragment = Fragment::Later;
                    break;
                }
            }
            _ => break,
        }
    }
    if fragment == Fragment::No && is_extension(next) {
        // Still inside the chain after the limit: we cannot see the transport header.
        return Err(Malformed);
    }
    transport(ctx, src, Some(ip.hop_limit), next, (l3_offset, offset), fragment)
}

#[inline(always)]
fn is_extension(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH | IPPROTO_FRAGMENT
    )
}

/// Reads the destination port (TCP/UDP) or recognises neighbour discovery. `hop_limit` is the
/// IPv6 header's (`None` for IPv4); `offsets` are the network and transport headers'.
#[inline(always)]
fn transport(
    ctx: &XdpContext,
    src: Source,
    hop_limit: Option<u8>,
    proto: u8,
    (l3_offset, offset): (usize, usize),
    fragment: Fragment,
) -> Result<Parsed, Malformed> {
    let is_v4 = hop_limit.is_none();
    let mut dport = 0;
    let mut udp_len = 0;
    let mut tcp_flags = 0;
    if fragment == Fragment::No {
        match proto {
            IPPROTO_TCP => {
                let tcp = unsafe { &*header::<TcpHdr>(ctx, offset)? };
                if (tcp.doff_flags[0] >> 4) < 5 {
                    return Err(Malformed);
                }
                dport = u16::from_be_bytes(tcp.dport);
                tcp_flags = tcp.doff_flags[1];
            }
            IPPROTO_UDP => {
                let udp = unsafe { &*header::<UdpHdr>(ctx, offset)? };
                dport = u16::from_be_bytes(udp.dport);
                udp_len = u16::from_be_bytes(udp.len);
            }
            IPPROTO_ICMPV6 if hop_limit == Some(ND_HOP_LIMIT) => {
                // Type, code, checksum: read all four (the verifier cannot bound a 1-byte
                // read that LLVM turns into `p >= end`).
                let icmp = unsafe { *header::<[u8; 4]>(ctx, offset)? };
                if (ND_FIRST_TYPE..=ND_LAST_TYPE).contains(&icmp[0]) {
                    return Ok(Parsed::NeighborDiscovery);
                }
            }
            _ => {}
        }
    }
    Ok(Parsed::Ip(Packet {
        src,
        is_v4,
        proto,
        dport,
        fragment,
        l3_offset,
        l4_offset: offset,
        tcp_flags,
        udp_len,
    }))
}
