//! The admission feed: the queue service appends admissions to a Redis Stream (fields `token`
//! or `ticket`, and optionally `kind` and `ip`); every edge daemon reads it from the position it stored last, verifies each
//! ticket, and stores the admissions together with the new position in one log record. So a
//! restart, a Redis outage or a network cut loses nothing and applies nothing twice. A fresh
//! daemon starts at the beginning of the stream (old tickets are refused as expired).
use std::time::Duration;

use redis::{
    streams::{StreamReadOptions, StreamReadReply},
    AsyncCommands as _,
};

use tracing::{error, warn};

use super::{core::Origin, handle::Handle, tokens::Batch};
use crate::{
    policy::Feed,
    token::{Kind, Refusal},
};

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
            // Verified before the core is taken; refused entries are counted and skipped (the
            // producer is not there to be told), and the position covers them too.
            let now = handle.clock.now();
            let mut accepted = Vec::new();
            let mut last = None;
            for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
                if let Some(token) = entry_token(&handle, &entry, now) {
                    accepted.push(token);
                }
                last = Some(entry.id);
            }
            let Some(last) = last else { continue };
            let applied = handle
                .with(move |core| {
                    core.feed.applied_up_to(&last);
                    core.redeem(&accepted, Batch::EachAlone, Some(last), Origin::Daemon)
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

/// An entry's token verified: fields `token` (or `ticket`, edge's first name for it), `kind`
/// (detected when absent) and `ip`.
fn entry_token(
    handle: &Handle,
    entry: &redis::streams::StreamId,
    now: u64,
) -> Option<crate::token::Accepted> {
    let refuse = |detail: String| {
        let refusal = Refusal { kind: None, reason: "malformed", detail };
        handle.tokens.count_refused(&refusal);
        None
    };
    let Some(token) = entry.get::<String>("token").or_else(|| entry.get::<String>("ticket")) else {
        return refuse(format!("entry {}: no `token` field", entry.id));
    };
    let kind = match entry.get::<String>("kind") {
        None => None,
        Some(name) => match Kind::parse(&name) {
            Ok(kind) => Some(kind),
            Err(e) => return refuse(format!("entry {}: {e}", entry.id)),
        },
    };
    let ip = match entry.get::<String>("ip") {
        None => None,
        Some(text) => match text.parse() {
            Ok(ip) => Some(ip),
            Err(_) => return refuse(format!("entry {}: `ip` is not an IP address", entry.id)),
        },
    };
    handle.tokens.verify(kind, &token, ip, now).ok()
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
