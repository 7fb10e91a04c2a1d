//! How the admission feed is doing: when Redis last answered, how late its entries arrive,
//! and whether it is past its grace (degraded: the outage policy applies, never fail-open).
use tracing::{error, info, warn};

use super::core::{Core, Mirror};

pub struct FeedHealth {
    /// When the feed last answered (unix seconds).
    pub ok_at: u64,
    /// Past `outage_grace_s` without an answer.
    pub degraded: bool,
    /// Age in seconds of the newest feed entry when it was applied.
    pub lag_s: f64,
}

impl FeedHealth {
    pub fn new(now: u64) -> Self {
        Self { ok_at: now, degraded: false, lag_s: 0.0 }
    }

    /// Entries up to stream id `last` are being applied: their age, from the id (stream ids
    /// start with the milliseconds of the entry's append).
    pub fn applied_up_to(&mut self, last: &str) {
        if let Some(ms) = last.split('-').next().and_then(|ms| ms.parse::<u64>().ok()) {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            self.lag_s = now_ms.saturating_sub(ms) as f64 / 1000.0;
        }
    }
}

impl Core {
    pub fn feed_position(&self) -> Option<String> {
        self.state.feed_position.clone()
    }

    /// The feed answered (`ok`) or failed. Past the grace, the daemon is degraded: it says so
    /// and applies the outage policy (never fail-open); the first answer after ends it.
    pub fn feed_report(&mut self, ok: bool) {
        let Some(feed) = self.policy.admission.feed.clone() else { return };
        let now = self.clock.now();
        if ok {
            self.feed.ok_at = now;
            if self.feed.degraded {
                self.feed.degraded = false;
                self.mirror_budgets();
                info!("admission feed: recovered; normal budgets");
            }
            return;
        }
        if !self.feed.degraded
            && now.saturating_sub(self.feed.ok_at) >= u64::from(feed.outage_grace_s)
        {
            self.feed.degraded = true;
            self.mirror_budgets();
            warn!(
                redis = %feed.redis_url,
                grace_s = feed.outage_grace_s,
                on_outage = %feed.on_outage,
                "admission feed: DEGRADED, unreachable past the grace; outage policy applies \
                 (visitors and admitted sources keep passing)"
            );
        }
    }

    /// The outage budget in or out of the kernel's config record; a failure is logged and the
    /// reconcile job retries it.
    fn mirror_budgets(&mut self) {
        if let Err(e) = self.mirror(Mirror::Config) {
            error!("admission feed: writing the budgets to the kernel: {e}; retrying");
        }
    }

    /// "off", "ok", or "degraded: ...".
    pub fn feed_state(&self) -> String {
        match &self.policy.admission.feed {
            None => "off".into(),
            Some(_) if !self.feed.degraded => "ok".into(),
            Some(feed) => format!(
                "degraded: {} unreachable since unix {}; outage policy {}",
                feed.redis_url, self.feed.ok_at, feed.on_outage
            ),
        }
    }

    /// Whether the feed is configured (its timing means something).
    pub fn feed_configured(&self) -> bool {
        self.policy.admission.feed.is_some()
    }
}
