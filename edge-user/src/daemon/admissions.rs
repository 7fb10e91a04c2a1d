//! Admissions: tickets verified (from `Admit` and the Redis feed) before their sources are
//! admitted, expired admissions purged, and the key ring reloaded when its file changes.
use std::{collections::BTreeMap, net::IpAddr, path::Path, time::SystemTime};

use edge_common::{keys::Addr, ticket::TicketBytes};
use tracing::info;

use super::{
    core::{Core, Origin},
    fault::Fault,
};
use crate::{
    store::Op,
    ticket::{self, Keyring, Rejected},
    visitors::admission_key,
};

/// Expired admissions are purged from the store's state and the kernel maps this often.
const PURGE_EVERY_S: u64 = 60;

/// Tickets the daemon verified and refused since it started.
#[derive(Debug, Default)]
pub struct TicketCounts {
    pub verified: u64,
    /// By `Rejected::reason`.
    pub rejections: BTreeMap<&'static str, u64>,
}

pub(super) fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Core {
    /// Verifies tickets and admits their sources (all or nothing). Refusals are counted by
    /// reason; the first one refuses the batch and changes nothing.
    pub fn admit(&mut self, tickets: &[(TicketBytes, Option<IpAddr>)]) -> Result<u64, Fault> {
        self.require_ready()?;
        let ring = self.ring()?;
        let mut entries = Vec::with_capacity(tickets.len());
        for (index, (ticket, presented)) in tickets.iter().enumerate() {
            let entry = self.verify(&ring, ticket, *presented);
            entries.push(entry.map_err(|refused| Fault::Refused { index, refused })?);
        }
        let n = entries.len() as u64;
        self.change(Op::Admit { day: self.today().0, entries, feed: None }, Origin::Api)?;
        Ok(n)
    }

    /// Admissions read from the feed up to stream id `last`: each ticket is verified, refused
    /// ones are counted and skipped (the producer is not there to be told), and the position
    /// is stored in the same record as the admissions it covers.
    pub fn admit_from_feed(
        &mut self,
        tickets: &[(TicketBytes, Option<IpAddr>)],
        last: String,
    ) -> Result<u64, Fault> {
        self.require_ready()?;
        let ring = self.ring()?;
        let entries: Vec<(Addr, u64)> = tickets
            .iter()
            .filter_map(|(ticket, presented)| self.verify(&ring, ticket, *presented).ok())
            .collect();
        self.feed.applied_up_to(&last);
        let n = entries.len() as u64;
        self.change(Op::Admit { day: self.today().0, entries, feed: Some(last) }, Origin::Daemon)?;
        Ok(n)
    }

    /// A ticket's admission entry (key, admitted until), or why not (counted).
    fn verify(
        &mut self,
        ring: &Keyring,
        ticket: &TicketBytes,
        presented: Option<IpAddr>,
    ) -> Result<(Addr, u64), Rejected> {
        match ticket::verify(ticket, ring, self.clock.now(), presented) {
            Ok(verified) => {
                self.tickets.verified += 1;
                Ok((admission_key(verified.ip), verified.not_after.saturating_add(1)))
            }
            Err(refused) => {
                *self.tickets.rejections.entry(refused.reason()).or_default() += 1;
                Err(refused)
            }
        }
    }

    /// A malformed ticket refused before it reached the core.
    pub fn count_malformed(&mut self) {
        *self.tickets.rejections.entry("malformed").or_default() += 1;
    }

    fn ring(&self) -> Result<Keyring, Fault> {
        match &self.keys {
            Some((ring, _)) => Ok(ring.clone()),
            None => Err(Fault::FailedPrecondition(
                "no ticket keys: set admission.keys in the config file".into(),
            )),
        }
    }

    /// Admissions held that have not expired.
    pub fn admissions(&self) -> u64 {
        let now = self.clock.now();
        self.state.admissions.values().filter(|until| **until > now).count() as u64
    }

    /// Drops expired admissions from the state (derived from the clock, so not logged: a
    /// replay re-adds them and the next purge drops them again) and from the kernel maps.
    pub(super) fn purge_admissions(&mut self) -> crate::Result<()> {
        let now = self.clock.now();
        if now < self.purged_at + PURGE_EVERY_S {
            return Ok(());
        }
        self.purged_at = now;
        let before = self.state.admissions.len();
        self.state.admissions.retain(|_, until| *until > now);
        let mut kernel = 0;
        if let Some(maps) = self.maps.as_mut() {
            kernel = maps.purge_admissions(now)?;
            maps.rebuild_admitted_hint()?;
        }
        let stored = before - self.state.admissions.len();
        if stored + kernel as usize > 0 {
            info!(stored, kernel, "purged expired admissions");
        }
        Ok(())
    }

    /// Reloads the key ring when its file changed (`edge key rotate`), into the kernel. A bad
    /// file is refused (the keys in use stay) and reported until it is mended.
    pub(super) fn reload_keys(&mut self) -> Result<(), String> {
        let Some(path) = self.policy.admission.keys.clone() else { return Ok(()) };
        let Some((_, seen)) = self.keys.as_ref() else { return Ok(()) };
        let now = modified(&path);
        if now == *seen {
            return Ok(());
        }
        let ring = Keyring::load(&path)
            .map_err(|e| format!("ticket keys not reloaded, the old ones stay: {e}"))?;
        if let Some(maps) = self.maps.as_mut() {
            maps.set_ticket_keys(Some(&ring))
                .map_err(|e| format!("writing the ticket keys: {e}"))?;
        }
        info!(
            file = %path.display(),
            current = ring.current().id,
            previous = ring.keys().get(1).map(|k| k.id),
            "ticket keys reloaded"
        );
        self.keys = Some((ring, now));
        Ok(())
    }
}
