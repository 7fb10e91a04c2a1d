//! The core, shared: every API call, the feed, learning and the periodic jobs take it through a
//! `Handle`, which waits a bounded time for the lock and runs the verb on a blocking thread.
use std::{sync::Arc, time::Duration};

use tokio::sync::{Mutex, Semaphore};
use tonic::Status;

use super::{clock::Clock, core::Core, endpoint::EndpointCounts, fault::Fault, tokens::Tokens};
use crate::visitors::Day;

/// Longest a request waits for the core before it is refused (fail fast: a client retries,
/// it does not queue behind a stuck change).
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// Imports buffered at once (each holds its parsed visitors in memory until it commits), and
/// exports streamed at once (each holds a copy of the history until its reader is done).
pub const MAX_IMPORTS: usize = 2;
pub const MAX_EXPORTS: usize = 2;

/// What every service and task shares.
#[derive(Clone)]
pub struct Handle {
    core: Arc<Mutex<Core>>,
    pub clock: Clock,
    /// The token verifiers: tokens are verified before the core is taken.
    pub tokens: Arc<Tokens>,
    /// The admission endpoint's answers, by outcome.
    pub endpoint: Arc<EndpointCounts>,
    pub imports: Arc<Semaphore>,
    pub exports: Arc<Semaphore>,
}

impl Handle {
    pub fn new(core: Core, clock: Clock) -> Self {
        Self {
            tokens: core.tokens.clone(),
            endpoint: core.endpoint.clone(),
            core: Arc::new(Mutex::new(core)),
            clock,
            imports: Arc::new(Semaphore::new(MAX_IMPORTS)),
            exports: Arc::new(Semaphore::new(MAX_EXPORTS)),
        }
    }

    /// The day undated visits are recorded on: the core's, which stays on the last rolled day
    /// while a clock jump is held (the clock's day would be refused as in the future).
    pub async fn today(&self) -> Result<Day, Status> {
        self.with(|core| Ok(core.today())).await
    }

    /// Runs `f` on the locked core on a blocking thread (the verbs write files and maps).
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Core) -> Result<T, Fault> + Send + 'static,
    ) -> Result<T, Status> {
        let guard = tokio::time::timeout(LOCK_WAIT, self.core.clone().lock_owned()).await.map_err(
            |_| {
                Status::unavailable(format!(
                    "the daemon is busy: another change held it for over {} s; retry",
                    LOCK_WAIT.as_secs()
                ))
            },
        )?;
        tokio::task::spawn_blocking(move || {
            let mut core = guard;
            f(&mut core)
        })
        .await
        .map_err(|e| Status::internal(format!("the daemon task failed: {e}")))?
        .map_err(Status::from)
    }
}
