//! A ticket's text form and its bytes: never a panic, and nothing but a ticket minted with
//! the ring's key verifies.
#![no_main]
use edge::ticket::{self, Key, Keyring};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ring = Keyring::new(vec![Key::new(1, [7; 16])]);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(ticket) = ticket::decode(text) {
            let _ = ticket::verify(&ticket, &ring, 1_800_000_000, None);
        }
    }
    if let Ok(ticket) = ticket::from_bytes(data) {
        if let Ok(valid) = ticket::verify(&ticket, &ring, 1_800_000_000, None) {
            // Only a ticket whose MAC the key made verifies: minting its fields again gives it.
            let again = ticket::issue(ring.current(), valid.ip, valid.not_after, valid.ticket_id);
            assert_eq!(again, ticket, "a ticket verified that the key did not make");
        }
    }
});
