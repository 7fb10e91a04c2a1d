//! Admissions held: expired ones purged (with the token uses that no longer matter), and the
//! ticket key ring reloaded when its file changes. Tokens are verified and redeemed in
//! daemon/tokens.rs.
use std::{path::Path, time::SystemTime};

use tracing::info;

use super::core::Core;
use crate::ticket::Keyring;

/// Expired admissions are purged from the store's state and the kernel maps this often.
const PURGE_EVERY_S: u64 = 60;

pub(super) fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Core {
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
        self.state.token_uses.retain(|_, uses| uses.expires > now);
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
        self.tokens.set_edge_ring(Some(ring.clone()));
        self.keys = Some((ring, now));
        Ok(())
    }
}
