//! The knock: a UDP datagram to the configured port carrying a 48-byte ticket. The ticket is
//! verified here, in the order userspace uses (form, key id, MAC, expiry, source), and a valid
//! one admits its source until the ticket's not-after time. Whatever the outcome, the knock
//! itself is dropped. This keeps working while the queue service and the daemon are down: the
//! keys are in a map, never in the object file.
use aya_ebpf::programs::XdpContext;
use edge_common::{
    config::Config,
    keys::{addr_words, AdmittedUntil},
    reason::*,
    ticket::{TicketBytes, TicketKey, TICKET_LEN},
};

use crate::{maps, now_utc, parse, parse::Packet};

const UDP_HEADER: usize = 8;

#[inline(always)]
pub fn knock(ctx: &XdpContext, pkt: &Packet, cfg: &Config) -> Reason {
    if pkt.udp_len as usize != UDP_HEADER + TICKET_LEN {
        return KNOCK_MALFORMED;
    }
    let Ok(ticket) = parse::header::<TicketBytes>(ctx, pkt.l4_offset + UDP_HEADER) else {
        return KNOCK_MALFORMED;
    };
    // SAFETY: bounds checked by `header`.
    let ticket = unsafe { &*ticket };
    if !ticket.well_formed() {
        return KNOCK_MALFORMED;
    }
    let Some(key) = key(ticket.key_id()) else {
        return KNOCK_UNKNOWN_KEY;
    };
    if ticket.compute_mac(&key) != ticket.mac() {
        return KNOCK_BAD_HASH;
    }
    let not_after = ticket.not_after();
    if not_after < now_utc(cfg) {
        return KNOCK_EXPIRED;
    }
    let source = crate::admission_key(pkt);
    if addr_words(&ticket.addr()) != source.words {
        return KNOCK_WRONG_IP;
    }
    // Valid through its not-after second. A replay from the same source renews nothing new;
    // an admission that already lasts longer is kept.
    let until = not_after + 1;
    if let Some(current) = maps::ADMITTED.get_ptr(source.addr()) {
        if unsafe { (*current).admitted_until } >= until {
            return KNOCK_OK;
        }
    }
    match maps::ADMITTED.insert(source.addr(), &AdmittedUntil { admitted_until: until }, 0) {
        Ok(()) => {
            crate::hint_admitted(&source);
            KNOCK_OK
        }
        Err(_) => INTERNAL,
    }
}

/// The key with this id: the current one (slot 0) or the previous (slot 1).
#[inline(always)]
fn key(id: u8) -> Option<TicketKey> {
    for slot in 0..2 {
        if let Some(key) = maps::TICKET_KEYS.get(slot) {
            if key.id != 0 && key.id == u32::from(id) {
                return Some(*key);
            }
        }
    }
    None
}
