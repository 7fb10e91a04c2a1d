//! Reference programs for `cargo xtask bench`, never attached by edge itself:
//! `empty` (the BPF_PROG_TEST_RUN floor), `drop_all` (the lab's ceiling), `read_headers` (reads
//! what any filter must, the source and the ports, then drops: the ceiling with the header's
//! cache miss), and `anchor_hash` (a one-lookup whitelist on a plain preallocated hash map, the
//! design edge's visitor bitmap is measured against); and the lab's packet generator
//! (`generate_fixed`, `generate_random`, `generate_random_v6`, `generate_botnet`,
//! `generate_visitor_syn`), run with BPF_PROG_TEST_RUN in live frames mode: each run transmits
//! its frame (XDP_TX) out of the generator's veth; and `reply_sink`, on the generator's side of
//! the SYN flood, counting the SYN-ACKs that come back.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::{bpf_get_prandom_u32, bpf_xdp_adjust_head},
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray},
    programs::XdpContext,
};

/// Sized by the benchmark at load time (`set_max_entries`).
#[map(name = "anchor_v4")]
static ANCHOR_V4: HashMap<[u8; 4], u8> = HashMap::with_max_entries(1, 0);

#[xdp]
pub fn empty(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// Drops every frame without reading it: the most any filter could drop in the lab, whatever
/// it does per packet (the lab's ceiling).
#[xdp]
pub fn drop_all(_ctx: XdpContext) -> u32 {
    XDP_DROP
}

/// Reads the frame's source address and ports (IPv4 or IPv6, no options or extension headers),
/// then drops it: what a filter cannot avoid touching, the header's cache line, and nothing
/// else. drop_all reads nothing, which hides that miss.
#[xdp]
pub fn read_headers(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 14 > end {
        return XDP_DROP;
    }
    let ethertype = unsafe { *((start + 12) as *const [u8; 2]) };
    // (source offset, source length, ports offset)
    let (src, ports) = match ethertype {
        [0x08, 0x00] => (26, 34),
        [0x86, 0xdd] => (22, 54),
        _ => return XDP_DROP,
    };
    if start + ports + 4 > end {
        return XDP_DROP;
    }
    let first = unsafe { core::ptr::read_volatile((start + src) as *const u32) };
    let ports = unsafe { core::ptr::read_volatile((start + ports) as *const u32) };
    if first == ports {
        // Never true for the lab's frames; keeps both reads live.
        return XDP_PASS;
    }
    XDP_DROP
}

#[xdp]
pub fn anchor_hash(ctx: XdpContext) -> u32 {
    // Ethernet (14) + IPv4 without options: source address at 26..30.
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 34 > end {
        return XDP_DROP;
    }
    let src = unsafe { *((start + 26) as *const [u8; 4]) };
    if ANCHOR_V4.get_ptr(&src).is_some() {
        XDP_PASS
    } else {
        XDP_DROP
    }
}

/// The share of runs that transmit, out of u32::MAX (set at load time): a paced flood that is
/// smooth at any rate, where pacing by sleeping between calls would send bursts.
#[unsafe(no_mangle)]
static TX_SHARE: u32 = u32::MAX;

/// Bytes the generator strips from the front of each frame before sending it (set at load
/// time): live-frames pages start packet data part-way into a cache line, which no NIC driver
/// does; the padding puts the Ethernet header at the start of a line, as on a real receive.
#[unsafe(no_mangle)]
static HEAD_PAD: u32 = 0;

/// Where the generator's frames start in live-frames mode (`data_alignment`): the address
/// (a privileged program may store a pointer; it may not mask one).
#[map(name = "alignment")]
static ALIGNMENT: Array<u64> = Array::with_max_entries(1, 0);

/// Frames the generator transmitted (it runs on one CPU: a plain add is exact).
#[map(name = "generated")]
static GENERATED: Array<u64> = Array::with_max_entries(1, 0);

#[inline(always)]
fn transmit() -> bool {
    let share = unsafe { core::ptr::read_volatile(&TX_SHARE) };
    let send = share == u32::MAX || unsafe { bpf_get_prandom_u32() } < share;
    if send {
        if let Some(sent) = GENERATED.get_ptr_mut(0) {
            unsafe { *sent += 1 };
        }
    }
    send
}

/// Records the address where live-frames packet data starts (its offset in a cache line is
/// what `HEAD_PAD` makes up for); sends nothing.
#[xdp]
pub fn data_alignment(ctx: XdpContext) -> u32 {
    if let Some(slot) = ALIGNMENT.get_ptr_mut(0) {
        unsafe { *slot = ctx.data() as u64 };
    }
    XDP_DROP
}

/// Strips the padding in front of the frame (see `HEAD_PAD`).
#[inline(always)]
fn strip_pad(ctx: &XdpContext) -> bool {
    let pad = unsafe { core::ptr::read_volatile(&HEAD_PAD) };
    pad == 0 || unsafe { bpf_xdp_adjust_head(ctx.ctx, pad as i32) } == 0
}

/// The frame as given: one source.
#[xdp]
pub fn generate_fixed(ctx: XdpContext) -> u32 {
    if strip_pad(&ctx) && transmit() {
        XDP_TX
    } else {
        XDP_DROP
    }
}

/// A random IPv4 source per frame (Ethernet + IPv4 without options), with the header checksum
/// recomputed so the receiver's stack accepts what passes the filter. Frames may be recycled
/// with their last contents, so the checksum is computed afresh, never patched.
#[xdp]
pub fn generate_random(ctx: XdpContext) -> u32 {
    if !strip_pad(&ctx) || !transmit() {
        return XDP_DROP;
    }
    // 11.0.0.0 - 223.255.255.255 without 127.0.0.0/8: unicast, so the receiver's stack takes
    // what passes (a multicast or loopback source would be dropped as martian). It spans the
    // benchmark whitelist's 128.0.0.0/2, as a spoofed flood spans where visitors live.
    let mut src = unsafe { bpf_get_prandom_u32() } % 0xd400_0000 + 0x0b00_0000;
    if src >= 0x7f00_0000 {
        src += 0x0100_0000;
    }
    if set_source_v4(&ctx, src) {
        XDP_TX
    } else {
        XDP_DROP
    }
}

/// Writes `src` as the frame's IPv4 source and recomputes the header checksum (frames may be
/// recycled with their last contents, so the checksum is computed afresh, never patched).
#[inline(always)]
fn set_source_v4(ctx: &XdpContext, src: u32) -> bool {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 34 > end {
        return false;
    }
    let header = unsafe { &mut *((start + 14) as *mut [u8; 20]) };
    header[12..16].copy_from_slice(&src.to_be_bytes());
    header[10] = 0;
    header[11] = 0;
    let mut sum = 0u32;
    let mut i = 0;
    while i < 20 {
        sum += u32::from(u16::from_be_bytes([header[i], header[i + 1]]));
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    let check = (!(sum as u16)).to_be_bytes();
    header[10] = check[0];
    header[11] = check[1];
    true
}

/// Sources of the botnet case: a fixed set (the same every run, as a botnet's zombies are).
const BOTNET: u32 = 100_000;

/// A source drawn from a fixed set of BOTNET real addresses per frame: a botnet of zombie
/// PCs, each sending far more than its budget. The set lies in 11.0.0.0 - 126.255.255.255,
/// away from the whitelist (128.0.0.0/2) and the lab's addresses.
#[xdp]
pub fn generate_botnet(ctx: XdpContext) -> u32 {
    if !strip_pad(&ctx) || !transmit() {
        return XDP_DROP;
    }
    let zombie = unsafe { bpf_get_prandom_u32() } % BOTNET;
    let src = 0x0b00_0000 + zombie.wrapping_mul(2_246_822_519) % (0x7f00_0000 - 0x0b00_0000);
    if set_source_v4(&ctx, src) {
        XDP_TX
    } else {
        XDP_DROP
    }
}

/// A random IPv6 source per frame (Ethernet + IPv6): a random /64 in 2001:db8::/32 and a
/// random interface id, as a spoofed IPv6 flood rotates both. The frame carries no UDP
/// checksum to keep: the filters drop it before any stack would check it.
#[xdp]
pub fn generate_random_v6(ctx: XdpContext) -> u32 {
    if !strip_pad(&ctx) {
        return XDP_DROP;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 54 > end || !transmit() {
        return XDP_DROP;
    }
    let src = unsafe { &mut *((start + 22) as *mut [u32; 4]) };
    src[0] = u32::to_be(0x2001_0db8);
    for word in &mut src[1..] {
        *word = unsafe { bpf_get_prandom_u32() };
    }
    XDP_TX
}

/// How many visitors the lab's whitelist holds (set at load time: the bench's `LAB_VISITORS`).
#[unsafe(no_mangle)]
static LAB_VISITORS: u32 = 1;

/// A TCP SYN per frame from a random member of the lab's visitor whitelist, with a random
/// source port and sequence number: a SYN flood forging addresses the whitelist passes. Both
/// checksums are computed afresh, so the listener of a host without cookies in XDP takes each
/// SYN as a real one. The frame is Ethernet + IPv4 (no options) + TCP with 20 bytes of options.
#[xdp]
pub fn generate_visitor_syn(ctx: XdpContext) -> u32 {
    if !strip_pad(&ctx) || !transmit() {
        return XDP_DROP;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + SYN_FRAME > end {
        return XDP_DROP;
    }
    // A live frame comes back to the generator as the receiver left it: edge turns a SYN into
    // its SYN-ACK in place. The frame is written whole, then its fields changed.
    // Word by word: a whole-array copy would go through the stack.
    let template = &raw const SYN_TEMPLATE as *const u8;
    let mut i = 0;
    while i + 8 <= SYN_FRAME {
        unsafe {
            let word = core::ptr::read_volatile(template.add(i) as *const [u8; 8]);
            *((start + i) as *mut [u8; 8]) = word;
        }
        i += 8;
    }
    while i < SYN_FRAME {
        unsafe { *((start + i) as *mut u8) = core::ptr::read_volatile(template.add(i)) };
        i += 1;
    }
    let visitors = unsafe { core::ptr::read_volatile(&LAB_VISITORS) }.max(1);
    let visitor = unsafe { bpf_get_prandom_u32() } % visitors;
    // The bench's `lab_visitor(i)`.
    let src = visitor.wrapping_mul(2_654_435_761) & 0x3fff_ffff | 0x8000_0000;
    if !set_source_v4(&ctx, src) {
        return XDP_DROP;
    }
    let ip = unsafe { &*((start + 14) as *const [u8; 20]) };
    let tcp = unsafe { &mut *((start + 34) as *mut [u8; SYN_FRAME - 34]) };
    let random = unsafe { bpf_get_prandom_u32() };
    // Ports 1024-65535, as clients use.
    let port = 1024 + (random % 64_512) as u16;
    tcp[0..2].copy_from_slice(&port.to_be_bytes());
    tcp[4..8].copy_from_slice(&unsafe { bpf_get_prandom_u32() }.to_be_bytes());
    tcp[16] = 0;
    tcp[17] = 0;
    // The pseudo-header (addresses, protocol, TCP length), then the segment.
    let mut sum = 6 + (SYN_FRAME - 34) as u32;
    let mut i = 12;
    while i < 20 {
        sum += u32::from(u16::from_be_bytes([ip[i], ip[i + 1]]));
        i += 2;
    }
    let mut i = 0;
    while i < SYN_FRAME - 34 {
        sum += u32::from(u16::from_be_bytes([tcp[i], tcp[i + 1]]));
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    tcp[16..18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    XDP_TX
}

/// Ethernet (14) + IPv4 (20) + TCP with Linux's SYN options (40).
const SYN_FRAME: usize = 74;

/// The SYN flood's frame, as the generator is given it without its padding (set at load
/// time).
#[unsafe(no_mangle)]
static SYN_TEMPLATE: [u8; SYN_FRAME] = [0; SYN_FRAME];

/// SYN-ACKs that reached the generator's side, per CPU.
#[map(name = "replies")]
static REPLIES: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// On the generator's veth during the SYN flood: counts the SYN-ACKs that come back, passes
/// what is addressed to the lab's own clients (192.0.2.0/24: the real visitors' connections)
/// and drops the rest, the replies to forged sources, which have nowhere to go.
#[xdp]
pub fn reply_sink(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + 34 > end || unsafe { *((start + 12) as *const [u8; 2]) } != [0x08, 0x00] {
        return XDP_PASS;
    }
    let ip = unsafe { &*((start + 14) as *const [u8; 20]) };
    // Both the program's and the kernel's SYN-ACKs carry no IP options.
    if ip[0] == 0x45 && ip[9] == 6 && start + 34 + 14 <= end {
        let flags = unsafe { *((start + 34 + 13) as *const u8) };
        if flags & 0x12 == 0x12 {
            if let Some(count) = REPLIES.get_ptr_mut(0) {
                unsafe { *count += 1 };
            }
        }
    }
    if ip[16..19] == [192, 0, 2] {
        XDP_PASS
    } else {
        XDP_DROP
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
