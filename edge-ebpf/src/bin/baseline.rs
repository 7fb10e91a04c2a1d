//! Reference programs for `cargo xtask bench`, never attached by edge itself:
//! `empty` (the BPF_PROG_TEST_RUN floor), `drop_all` (the lab's ceiling), `read_headers` (reads
//! what any filter must, the source and the ports, then drops: the ceiling with the header's
//! cache miss), and `anchor_hash` (a one-lookup whitelist on a plain preallocated hash map, the
//! design edge's visitor bitmap is measured against); and the lab's packet generator
//! (`generate_fixed`, `generate_random`, `generate_random_v6`, `generate_botnet`), run with
//! BPF_PROG_TEST_RUN in live frames mode: each run transmits its frame (XDP_TX) out of the
//! generator's veth.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::{bpf_get_prandom_u32, bpf_xdp_adjust_head},
    macros::{map, xdp},
    maps::{Array, HashMap},
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
