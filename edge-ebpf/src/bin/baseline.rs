//! Reference programs for `cargo xtask bench`, never attached by edge itself:
//! `empty` (the BPF_PROG_TEST_RUN floor) and `anchor_hash` (a one-lookup whitelist on a plain
//! preallocated hash map, the design edge's visitor bitmap is measured against).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::{map, xdp},
    maps::HashMap,
    programs::XdpContext,
};

/// Sized by the benchmark at load time (`set_max_entries`).
#[map(name = "anchor_v4")]
static ANCHOR_V4: HashMap<[u8; 4], u8> = HashMap::with_max_entries(1, 0);

#[xdp]
pub fn empty(_ctx: XdpContext) -> u32 {
    XDP_PASS
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
