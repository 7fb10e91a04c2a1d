//! The fleet feed: the queue service appends admissions to a Redis Stream (fields `ticket`, and
//! optionally `ip`); every edge daemon reads it from the position it stored last, verifies each
//! ticket, and stores the admissions together with the new position in one log record. So a
//! restart, a Redis outage or a network cut loses nothing and applies nothing twice. A fresh
//! daemon starts at the beginning of the stream (old tickets are refused as expired).
use std::time::Duration;

use redis::{
    streams::{StreamReadOptions, StreamReadReply},
    AsyncCommands as _,
};

use tracing::{error, warn};

use super::handle::Handle;
use crate::{policy::Feed, ticket};

/// Entries read per round trip, and how long a read waits for new ones.
const BATCH: usize = 1_000;
const BLOCK_MS: usize = 1_000;
/// A round trip that takes longer than this counts as a failure.
const ROUND_TRIP: Duration = Duration::from_secs(3);

pub async fn run(handle: Handle, feed: Feed) {
    let client = match redis::Client::open(feed.redis_url.as_str()) {
        Ok(client) => client,
        Err(e) => {
            error!(redis = %feed.redis_url, "admission feed: {e}; the feed is off");
            return;
        }
    };
    let mut last_error = String::new();
    loop {
        // The client's own response timeout must outlast a blocking read.
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(ROUND_TRIP))
            .set_response_timeout(Some(ROUND_TRIP));
        let connection = tokio::time::timeout(
            ROUND_TRIP,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        let mut connection = match connection {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                report(&handle, false, &mut last_error, &e.to_string()).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(_) => {
                report(&handle, false, &mut last_error, "connect timed out").await;
                continue;
            }
        };
        loop {
            let position = handle
                .with(|core| Ok(core.feed_position()))
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| "0".into());
            let options = StreamReadOptions::default().count(BATCH).block(BLOCK_MS);
            let read = tokio::time::timeout(
                ROUND_TRIP,
                connection.xread_options::<_, _, StreamReadReply>(
                    &[&feed.stream],
                    &[&position],
                    &options,
                ),
            )
            .await;
            let reply = match read {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => {
                    report(&handle, false, &mut last_error, &e.to_string()).await;
                    break;
                }
                Err(_) => {
                    report(&handle, false, &mut last_error, "read timed out").await;
                    break;
                }
            };
            report(&handle, true, &mut last_error, "").await;
            let mut batch = Vec::new();
            let mut last = None;
            let mut malformed = 0;
            for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
                let ticket = entry.get::<String>("ticket").and_then(|t| ticket::decode(&t).ok());
                let ip = entry.get::<String>("ip").and_then(|ip| ip.parse().ok());
                match ticket {
                    Some(ticket) => batch.push((ticket, ip)),
                    None => malformed += 1,
                }
                last = Some(entry.id);
            }
            let Some(last) = last else { continue };
            let applied = handle
                .with(move |core| {
                    for _ in 0..malformed {
                        core.count_malformed();
                    }
                    core.admit_from_feed(&batch, last)
                })
                .await;
            if let Err(status) = applied {
                // Not stored, so not lost: the same entries are read again.
                warn!("admission feed: not applied yet ({}); retrying", status.message());
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Tells the core how the feed is doing; logs changes (not every failed retry).
async fn report(handle: &Handle, ok: bool, last_error: &mut String, error: &str) {
    if !ok && *last_error != error {
        warn!("admission feed: {error}");
    }
    *last_error = error.to_string();
    let _ = handle
        .with(move |core| {
            core.feed_report(ok);
            Ok(())
        })
        .await;
}
