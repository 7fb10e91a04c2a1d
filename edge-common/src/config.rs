//! The single `Config` record the program reads once per packet.
use crate::assert_size;

/// Filter modes. Zero is `off` so that a loaded but not yet configured program passes traffic.
pub const MODE_OFF: u32 = 0;
/// Compute and count the verdict, but pass every packet.
pub const MODE_MONITOR: u32 = 1;
/// Apply the verdict.
pub const MODE_ENFORCE: u32 = 2;

/// `Config::lists` bits: which maps hold entries. An empty map costs no lookup; this matters
/// most under a random-source flood, where each lookup of a large hash map is a cache miss.
pub const LIST_DENY: u32 = 1 << 0;
pub const LIST_ALLOW: u32 = 1 << 1;
pub const LIST_VISITORS_V6: u32 = 1 << 2;
pub const LIST_ADMITTED: u32 = 1 << 3;

/// `Config::syn_cookies`: `[syn_cookies] mode`. `attack` answers SYNs only while the record's
/// mode is enforce (so also in the attack phase of `mode = "auto"`); `always` in monitor too.
pub const SYN_COOKIES_OFF: u32 = 0;
pub const SYN_COOKIES_ATTACK: u32 = 1;
pub const SYN_COOKIES_ALWAYS: u32 = 2;

/// `Config::syn_options` bits: the TCP options a cookie SYN-ACK may grant, as the host's
/// sysctls allow (`net.ipv4.tcp_timestamps`, `tcp_sack`, `tcp_window_scaling`). Bits 8..12
/// hold the window scale the host's listeners choose.
pub const SYN_OPT_TIMESTAMPS: u32 = 1 << 0;
pub const SYN_OPT_SACK: u32 = 1 << 1;
pub const SYN_OPT_WSCALE: u32 = 1 << 2;
pub const SYN_OPT_WSCALE_SHIFT: u32 = 8;

/// Fields are ordered by use: everything an IPv4 packet from an unknown source reads comes
/// first, in the first 64 bytes, and the map holding the record is page aligned (mmap-able), so
/// a flood touches one cache line of it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// One of `MODE_*`.
    pub mode: u32,
    /// `LIST_*` bits.
    pub lists: u32,
    /// UDP port where tickets are knocked (verified in the kernel); 0 = no knock.
    pub knock_port: u32,
    /// Report 1 in this many dropped packets to the daemon (`edge top`); 0 = none.
    pub sample_every: u32,
    /// Per-source bucket: ns between tokens (1e9 / rate_pps). 0 = strict, drop all unknown.
    pub source_interval_ns: u64,
    /// Per-source bucket: burst allowance, `(burst - 1) * source_interval_ns`.
    pub source_tolerance_ns: u64,
    /// Global unknown budget: ns between tokens (1e9 / global_pps). 0 = no unknown passes.
    pub global_interval_ns: u64,
    /// Global unknown budget: burst allowance, `(global_burst - 1) * global_interval_ns`.
    pub global_tolerance_ns: u64,
    /// Byte masks applied to a v4-mapped / IPv6 source to form its bucket key (aggregation
    /// prefix). Stored as two native words; AND is byte-order agnostic.
    pub bucket_mask_v4: [u64; 2],
    pub bucket_mask_v6: [u64; 2],
    /// CLOCK_TAI minus UTC in seconds at the time the control plane wrote this record.
    pub tai_offset_s: u64,
    /// TCP port of the admission endpoint (`admission.http.listen`); 0 = none. Packets to it
    /// from sources not otherwise let through take the endpoint's own budgets below.
    pub endpoint_port: u32,
    /// Tokens a CPU takes from the global unknown budget at once (1 = one per packet): at most
    /// a quarter of the burst over all CPUs, so the budget's overshoot stays bounded.
    pub global_batch: u32,
    pub endpoint: Budget,
    /// One of `SYN_COOKIES_*`.
    pub syn_cookies: u32,
    /// `SYN_OPT_*` bits and the window scale.
    pub syn_options: u32,
    /// The MSS a cookie SYN-ACK announces (`syn_cookies.mss_v4`, `.mss_v6`).
    pub syn_mss_v4: u16,
    pub syn_mss_v6: u16,
    pub _pad: u32,
    /// The global SYN-ACK reply budget (`syn_cookies.reply_pps`, `.reply_burst`), as GCRA.
    pub syn_reply_interval_ns: u64,
    pub syn_reply_tolerance_ns: u64,
}
assert_size!(Config, 160);

/// A per-source and a global budget, as GCRA intervals and tolerances (edge-ebpf/budget.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    pub source_interval_ns: u64,
    pub source_tolerance_ns: u64,
    pub global_interval_ns: u64,
    pub global_tolerance_ns: u64,
}
const _: () = assert!(core::mem::offset_of!(Config, bucket_mask_v6) == 64);

impl Config {
    /// Whether the program answers SYNs with cookies under this record.
    #[inline(always)]
    pub fn answers_syns(&self) -> bool {
        self.syn_cookies == SYN_COOKIES_ALWAYS
            || (self.syn_cookies == SYN_COOKIES_ATTACK && self.mode == MODE_ENFORCE)
    }
}

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, no padding (size asserted).
unsafe impl aya::Pod for Config {}
