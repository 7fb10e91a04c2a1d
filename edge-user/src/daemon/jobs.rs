//! The periodic work, once a second, and whether each job is failing.
//!
//! A job that fails keeps being retried, and says so: the log (once per distinct error),
//! `edge status`, the `edge_background_job_failing` metric and the health service
//! `edge.v1.Background`, which is NOT_SERVING while any job fails. No job waits on another:
//! each runs and reports on its own.
use std::collections::BTreeMap;

use tracing::{error, info};

use super::core::{Core, Mirror};

/// Compact the log into a snapshot once it holds this much.
const COMPACT_AT_BYTES: u64 = 256 << 20;

/// The jobs, in the order a tick runs them (the names `edge status` and metrics use).
pub const JOBS: [&str; 7] = [
    "window_roll",
    "rule_expiry",
    "admission_purge",
    "ticket_keys",
    "token_keys",
    "reconcile",
    "snapshot",
];

/// One job's record.
#[derive(Clone, Debug, Default)]
pub struct JobState {
    /// Failed runs since the daemon started.
    pub failures: u64,
    /// Unix seconds of the first failure of the current run of failures; `None` while it works.
    pub failing_since: Option<u64>,
    pub last_error: String,
}

#[derive(Debug, Default)]
pub struct Jobs {
    jobs: BTreeMap<&'static str, JobState>,
}

impl Jobs {
    /// Records a run of `job`.
    pub fn report<T, E: std::fmt::Display>(
        &mut self,
        job: &'static str,
        result: Result<T, E>,
        now: u64,
    ) {
        let state = self.jobs.entry(job).or_default();
        match result {
            Ok(_) => {
                if state.failing_since.take().is_some() {
                    info!(job, "background job works again");
                }
            }
            Err(e) => {
                let message = e.to_string();
                if state.failing_since.is_none() || state.last_error != message {
                    error!(job, "background job failed: {message}");
                }
                state.failing_since.get_or_insert(now);
                state.failures += 1;
                state.last_error = message;
            }
        }
    }

    /// The jobs failing now, with their state.
    pub fn failing(&self) -> impl Iterator<Item = (&'static str, &JobState)> {
        self.jobs.iter().filter(|(_, s)| s.failing_since.is_some()).map(|(n, s)| (*n, s))
    }

    pub fn get(&self, job: &str) -> JobState {
        self.jobs.get(job).cloned().unwrap_or_default()
    }
}

impl Core {
    /// The periodic work: roll the window at a day boundary, expire rules, purge admissions,
    /// reload the ticket keys, re-attach interfaces whose filter went away, rebuild the maps
    /// after a change that did not reach them, and compact the log.
    pub fn tick(&mut self) {
        let now = self.now();
        let rolled = self.roll_window(false);
        self.jobs.report("window_roll", rolled, now);
        // While the window is held the clock is suspect: nothing expires on its word.
        if self.window_hold.is_none() {
            let expired = self.expire_rules();
            self.jobs.report("rule_expiry", expired, now);
            let purged = self.purge_admissions();
            self.jobs.report("admission_purge", purged, now);
        }
        self.watch_unknown();
        let keys = self.reload_keys();
        self.jobs.report("ticket_keys", keys, now);
        let token_keys = self.reload_token_files();
        self.jobs.report("token_keys", token_keys, now);
        self.follow_links();
        if self.needs_reconcile {
            let rebuilt = self.mirror(Mirror::Everything);
            self.jobs.report("reconcile", rebuilt, now);
        }
        if self.store.wal_bytes() > COMPACT_AT_BYTES {
            let compacted = self.compact();
            if compacted.is_ok() {
                info!("compacted the log into a snapshot");
            }
            self.jobs.report("snapshot", compacted, now);
        }
    }

    pub fn compact(&mut self) -> Result<(), super::fault::Fault> {
        self.store.compact(&self.state).map_err(super::fault::Fault::store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_job_is_reported_until_it_works_again() {
        let mut jobs = Jobs::default();
        jobs.report::<(), _>("rule_expiry", Err("disk full"), 100);
        jobs.report::<(), _>("rule_expiry", Err("disk full"), 101);
        jobs.report("window_roll", Ok::<_, String>(()), 101);
        let failing: Vec<_> =
            jobs.failing().map(|(n, s)| (n, s.failing_since, s.failures)).collect();
        assert_eq!(failing, [("rule_expiry", Some(100), 2)]);
        jobs.report("rule_expiry", Ok::<_, String>(()), 102);
        assert_eq!(jobs.failing().count(), 0);
        assert_eq!(jobs.get("rule_expiry").failures, 2, "failures are counted, not forgotten");
    }
}
