//! `[admission.jwt]` with `jwks_url`: the key set fetched every `jwks_refresh_s`, and at once
//! (at most every few seconds) when a token names a `kid` the set lacks, so a waiting room's new
//! key is picked up without a restart. Each good set is cached in the state directory; while
//! the URL fails the cached keys are used up to `jwks_max_age_s` after their fetch, and then
//! every JWT is refused (fail closed). The state shows in `edge status` and the metrics.
use std::{path::PathBuf, sync::Arc, time::Duration};

use tracing::{info, warn};

use super::handle::Handle;
use crate::token::jwks::{self, KeyStore};

/// The least time between two fetches asked for by unknown `kid`s (a flood of forged tokens
/// naming random kids must not turn into a flood of fetches).
const MIN_REFETCH_S: u64 = 10;
/// After a failed fetch, the next one this soon (or at the refresh interval if shorter).
const RETRY_S: u64 = 10;

/// The fetcher's latest outcome.
#[derive(Clone, Debug, Default)]
pub struct FetchState {
    pub last_error: Option<String>,
    pub failures: u64,
}

/// Where the cache lives in the state directory.
pub fn cache_path(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("jwks-cache.json")
}

pub async fn run(
    handle: Handle,
    keys: Arc<KeyStore>,
    url: String,
    ca_file: Option<PathBuf>,
    refresh_s: u64,
    cache: PathBuf,
) {
    let mut last_attempt: Option<u64> = None;
    let mut failed = false;
    loop {
        let now = handle.clock.now();
        let since = last_attempt.map(|t| now.saturating_sub(t));
        let interval = if failed { RETRY_S.min(refresh_s) } else { refresh_s };
        let due = match since {
            None => true,
            Some(since) => since >= interval || (since >= MIN_REFETCH_S && keys.take_refresh()),
        };
        if due {
            // Any fetch answers the requests made before it.
            keys.take_refresh();
            last_attempt = Some(now);
            match jwks::fetch(&url, ca_file.as_deref()).await {
                Ok((set, document)) => {
                    let kids = set.entries.len();
                    keys.put(set, now);
                    if let Err(e) = jwks::write_cache(&cache, &url, now, &document) {
                        warn!("admission.jwt: the fetched keys are in use but not cached: {e}");
                    }
                    if failed || since.is_none() {
                        info!(url = %url, keys = kids, "admission.jwt: key set fetched");
                    }
                    failed = false;
                    handle.tokens.fetched(None);
                }
                Err(e) => {
                    let e = format!("fetching {url}: {e}");
                    if !failed {
                        warn!(
                            "admission.jwt: {e}; the cached keys stay in use up to jwks_max_age_s"
                        );
                    }
                    failed = true;
                    handle.tokens.fetched(Some(e));
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
