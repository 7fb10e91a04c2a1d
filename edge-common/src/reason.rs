//! Why the filter passed or dropped a packet: the one table of reasons, in pipeline order.
//!
//! The stats map has `2 * REASON_COUNT` slots: slot `r` counts packets whose verdict was applied,
//! slot `REASON_COUNT + r` counts packets that `monitor` mode would have dropped for reason `r`
//! but passed.

pub type Reason = u32;

/// `mode = off`: passed without inspection.
pub const OFF: Reason = 0;
/// Not IPv4/IPv6 (ARP, LLDP, ...): passed.
pub const NON_IP: Reason = 1;
/// ICMPv6 neighbour/router discovery from the link itself (hop limit 255, RFC 4861): passed,
/// or the host loses its neighbours. With a lower hop limit it crossed a router and is judged
/// like any other packet.
pub const NEIGHBOR_DISCOVERY: Reason = 2;
/// Source on the deny list: dropped, whatever the port.
pub const DENY: Reason = 3;
/// A ticket knocked on the knock port was valid: its source is admitted; the knock is dropped.
pub const KNOCK_OK: Reason = 4;
/// Knock refused: not a 48-byte version-1 ticket.
pub const KNOCK_MALFORMED: Reason = 5;
/// Knock refused: the key id is neither the current nor the previous key.
pub const KNOCK_UNKNOWN_KEY: Reason = 6;
/// Knock refused: the MAC does not match (altered, or another key).
pub const KNOCK_BAD_HASH: Reason = 7;
/// Knock refused: past its not-after time.
pub const KNOCK_EXPIRED: Reason = 8;
/// Knock refused: issued for another address (or /64).
pub const KNOCK_WRONG_IP: Reason = 9;
/// Destination is not a protected (protocol, port): passed.
pub const PASS_UNPROTECTED: Reason = 10;
/// Source on the allow list: passed.
pub const ALLOW: Reason = 11;
/// Source seen within the visitor window: passed.
pub const VISITOR: Reason = 12;
/// Source admitted by the queue service and not yet expired: passed.
pub const ADMITTED: Reason = 13;
/// Non-first fragment (no ports to judge) from a source that is not known: dropped.
pub const FRAGMENT: Reason = 14;
/// Unknown source, but the global unknown budget is spent: dropped, no per-source state made.
pub const UNKNOWN_GLOBAL: Reason = 15;
/// Unknown source over its own token bucket, or `rate_pps = 0`: dropped.
pub const UNKNOWN_RATE: Reason = 16;
/// Unknown source within both budgets: passed.
pub const UNKNOWN_PASS: Reason = 17;
/// Truncated or malformed headers: dropped.
pub const MALFORMED: Reason = 18;
/// The program could not read or write its own maps (should never happen): XDP_ABORTED.
pub const INTERNAL: Reason = 19;
/// TCP to the admission endpoint's port from a source on no list, within the endpoint's
/// budgets: passed (the daemon verifies what it brings).
pub const ENDPOINT_PASS: Reason = 20;
/// To the endpoint's port, over the source's own endpoint budget: dropped.
pub const ENDPOINT_RATE: Reason = 21;
/// To the endpoint's port, the endpoint's global budget spent: dropped, no per-source state.
pub const ENDPOINT_GLOBAL: Reason = 22;
/// SYN cookies on (`[syn_cookies]`): a SYN to a protected TCP port with a listener, answered
/// by the program with a SYN-ACK carrying a cookie (XDP_TX). Nothing is kept.
pub const SYN_COOKIE_SENT: Reason = 23;
/// SYN cookies on, the global reply budget spent: a SYN from a source edge knows, or one
/// within its unknown budgets, passed unanswered to the kernel, which answers it with its own
/// cookie (`tcp_syncookies = 2`). Spent replies never cost a known source its SYN.
pub const SYN_REPLY_BUDGET: Reason = 24;
/// SYN cookies on: an ACK to a listener (no connection yet) whose cookie is valid, from a
/// source edge knows or one within its unknown budgets: passed, and the kernel makes the
/// connection.
pub const COOKIE_VALID: Reason = 25;
/// SYN cookies on: an ACK to a listener whose cookie is wrong, stale or another source's:
/// dropped.
pub const COOKIE_INVALID: Reason = 26;

pub const REASON_COUNT: u32 = 27;

/// Stats slots: applied verdicts, then monitor-mode would-drops.
pub const STATS_SLOTS: u32 = 2 * REASON_COUNT;

/// Reason names as users see them (`edge stats`, `edge replay --json`), indexed by reason.
pub const REASON_NAMES: [&str; REASON_COUNT as usize] = [
    "off",
    "non_ip",
    "neighbor_discovery",
    "deny",
    "knock_ok",
    "knock_malformed",
    "knock_unknown_key",
    "knock_bad_hash",
    "knock_expired",
    "knock_wrong_ip",
    "pass_unprotected",
    "allow",
    "visitor",
    "admitted",
    "fragment",
    "unknown_global",
    "unknown_rate",
    "unknown_pass",
    "malformed",
    "internal_error",
    "endpoint_pass",
    "endpoint_rate",
    "endpoint_global",
    "syn_cookie_sent",
    "syn_reply_budget",
    "cookie_valid",
    "cookie_invalid",
];

/// Whether a reason's verdict is a drop (in `enforce`; a would-drop in `monitor`).
#[inline(always)]
pub const fn is_drop(reason: Reason) -> bool {
    // Knocks are dropped whatever their outcome: they are addressed to edge, not the host.
    matches!(
        reason,
        DENY | KNOCK_OK
            | KNOCK_MALFORMED
            | KNOCK_UNKNOWN_KEY
            | KNOCK_BAD_HASH
            | KNOCK_EXPIRED
            | KNOCK_WRONG_IP
            | FRAGMENT
            | UNKNOWN_GLOBAL
            | UNKNOWN_RATE
            | ENDPOINT_RATE
            | ENDPOINT_GLOBAL
            | COOKIE_INVALID
            | MALFORMED
            | INTERNAL
    )
}
