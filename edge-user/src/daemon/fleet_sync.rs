//! The fleet's Redis side: one task that keeps this node and the fleet's Redis in step.
//!
//! A session: learn the Redis's epoch (re-seed it if it came back empty), join the fleet's
//! snapshot if this node is behind it, then loop: publish what the outbox holds, read the
//! others' entries after this node's position and apply them, report to `<stream>:nodes`,
//! and now and then offer a snapshot and trim the stream below it. Any failure ends the
//! session: the node reports it (degraded past `degraded_after_s`), keeps enforcing and
//! learning from its own store, and starts a new session a second later. Redis is never in
//! the packet path. Layout and merge rules: docs/fleet.md.
use std::{
    collections::HashMap,
    future::Future,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use redis::{aio::MultiplexedConnection, streams::StreamReadReply, AsyncCommands as _, Value};
use tracing::{error, info, warn};

use super::{
    fleet::{NodeReport, Outgoing},
    handle::Handle,
};
use crate::{
    fleet::{self, Keys, Kind, Refused},
    policy,
    store::Stamped,
    ticket::Keyring,
};

/// A round trip that takes longer than this is a failure; reading or writing a snapshot of
/// tens of megabytes gets longer.
const ROUND_TRIP: Duration = Duration::from_secs(3);
const BULK_TRIP: Duration = Duration::from_secs(60);
/// How long a read waits for new entries (the bound on how late a change is seen when the
/// outbox is idle), and entries per read.
const BLOCK_MS: usize = 100;
const READ_COUNT: usize = 1_000;
/// Changes per published entry.
const PUBLISH_MAX: usize = 10_000;
/// How often a node reports itself and reads the others' reports.
const REPORT_EVERY: Duration = Duration::from_secs(2);

pub async fn run(handle: Handle, settings: policy::Fleet) {
    let redis = settings.redis_url_redacted();
    let client = match redis::Client::open(settings.redis_url.as_str()) {
        Ok(client) => client,
        Err(e) => {
            error!(%redis, "fleet: {}; the fleet is off", e.detail().unwrap_or("bad URL"));
            return;
        }
    };
    let mut ring = KeyFile::new(&settings.key_file);
    let mut last_error = String::new();
    loop {
        let result = match ring.current() {
            Err(e) => Err(e),
            Ok(_) => match within(ROUND_TRIP, client.get_multiplexed_async_connection()).await {
                Ok(mut connection) => session(&handle, &settings, &mut ring, &mut connection).await,
                Err(e) => Err(e),
            },
        };
        let error = result.err().unwrap_or_else(|| "the session ended".into());
        if error != last_error {
            warn!(%redis, "fleet: {error}");
            last_error = error.clone();
        }
        report(&handle, Err(error)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs a Redis call with a deadline; errors become text (with no credentials in them).
async fn within<T>(
    limit: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!(
            "Redis: {}",
            e.detail().map_or(e.category().to_string(), |d| format!("{}: {d}", e.category()))
        )),
        Err(_) => Err(format!("Redis did not answer within {} s", limit.as_secs())),
    }
}

async fn session(
    handle: &Handle,
    settings: &policy::Fleet,
    ring: &mut KeyFile,
    conn: &mut MultiplexedConnection,
) -> Result<(), String> {
    let keys = Keys::new(&settings.stream);
    let epoch = epoch(conn, &keys).await?;
    let position = handle.with(move |core| core.fleet_epoch(&epoch)).await.map_err(message)?;
    report(handle, Ok(())).await;
    let mut position = catch_up(handle, settings, ring, conn, &keys, position).await?;
    // Reported, this node holds back the trim; a trim that passed it before that means the
    // snapshot again.
    exchange_reports(handle, settings, conn, &keys).await?;
    while trimmed_past(conn, &keys, &position).await? {
        let before = position.clone();
        position = catch_up(handle, settings, ring, conn, &keys, Some(position)).await?;
        if position == before {
            return Err(format!(
                "the stream was trimmed past this node ({before}) and no snapshot covers the gap"
            ));
        }
        exchange_reports(handle, settings, conn, &keys).await?;
    }
    let mut reported = Instant::now();
    let mut snapshot_tried = Instant::now();
    // Past this without a report the others may trim past this node: start over.
    let deadline = Duration::from_secs(u64::from(settings.node_timeout_s) / 2);
    loop {
        if reported.elapsed() >= REPORT_EVERY {
            if reported.elapsed() >= deadline {
                return Err("this node went unreported too long; joining again".into());
            }
            ring.reload_if_changed();
            exchange_reports(handle, settings, conn, &keys).await?;
            reported = Instant::now();
        }
        publish(handle, settings, ring, conn, &keys).await?;
        position = read(handle, settings, ring, conn, &keys, position).await?;
        report(handle, Ok(())).await;
        if snapshot_tried.elapsed() >= Duration::from_secs(settings.snapshot_interval_s.into()) {
            snapshot_tried = Instant::now();
            offer_snapshot(handle, settings, ring, conn, &keys, &position).await?;
        }
    }
}

fn message(status: tonic::Status) -> String {
    status.message().to_string()
}

async fn report(handle: &Handle, result: Result<(), String>) {
    let _ = handle
        .with(move |core| {
            core.fleet_report(result);
            Ok(())
        })
        .await;
}

/// The Redis's epoch; a Redis without one (new, or restarted empty) gets one.
async fn epoch(conn: &mut MultiplexedConnection, keys: &Keys) -> Result<String, String> {
    if let Some(epoch) = within(ROUND_TRIP, conn.get::<_, Option<String>>(&keys.epoch)).await? {
        return Ok(epoch);
    }
    let fresh = format!("{:016x}", crate::ticket::random_id().map_err(|e| e.to_string())?);
    let set = redis::cmd("SET").arg(&keys.epoch).arg(&fresh).arg("NX").clone();
    within(ROUND_TRIP, set.query_async::<Option<String>>(conn)).await?;
    // Another node may have set it first: its value is the epoch.
    within(ROUND_TRIP, conn.get::<_, Option<String>>(&keys.epoch))
        .await?
        .ok_or_else(|| "the epoch key vanished".into())
}

/// Joins the fleet's snapshot if this node is behind it (new, wiped, or down while the stream
/// was trimmed); returns the position to read the stream from.
async fn catch_up(
    handle: &Handle,
    settings: &policy::Fleet,
    ring: &mut KeyFile,
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    position: Option<String>,
) -> Result<String, String> {
    let covers: Option<String> =
        within(ROUND_TRIP, conn.hget(&keys.snapshot, fleet::COVERS)).await?;
    let behind = match (&position, &covers) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(at), Some(covers)) => fleet::stream_id(at) < fleet::stream_id(covers),
    };
    if !behind {
        return Ok(position.unwrap_or_else(|| "0-0".into()));
    }
    let started = Instant::now();
    let fields: HashMap<String, Vec<u8>> = within(BULK_TRIP, conn.hgetall(&keys.snapshot)).await?;
    let entry = fleet::from_fields(fields.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
        .and_then(|entry| {
            fleet::open(ring.current().map_err(Refused::Malformed)?, &settings.stream, &entry)?;
            if entry.kind != Some(Kind::Snapshot) {
                return Err(Refused::Malformed("the snapshot is not of kind snapshot".into()));
            }
            Ok(entry)
        });
    let entry = match entry {
        Ok(entry) => entry,
        Err(why) => {
            let counted = why.clone();
            let _ = handle
                .with(move |core| {
                    if let Some(link) = core.fleet.as_mut() {
                        link.refuse(&counted);
                    }
                    Ok(())
                })
                .await;
            return Err(format!("the fleet's snapshot is refused: {why}"));
        }
    };
    let covers = entry.covers.clone();
    let state = fleet::state(&entry).map_err(|e| format!("the fleet's snapshot: {e}"))?;
    let visitors = state.history.len();
    let joined = covers.clone();
    handle.with(move |core| core.fleet_join(&state, Some(joined))).await.map_err(message)?;
    info!(
        covers,
        visitors,
        bytes = entry.body.len(),
        ms = started.elapsed().as_millis() as u64,
        "fleet: joined the fleet's snapshot"
    );
    Ok(covers)
}

/// Whether the stream was trimmed past `position` (Redis 7's `max-deleted-entry-id`): entries
/// after it may be gone, and only the snapshot has them.
async fn trimmed_past(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    position: &str,
) -> Result<bool, String> {
    if !within(ROUND_TRIP, conn.exists::<_, bool>(&keys.stream)).await? {
        return Ok(false); // No stream yet: nothing was trimmed.
    }
    let info = redis::cmd("XINFO").arg("STREAM").arg(&keys.stream).clone();
    let info: HashMap<String, Value> = within(ROUND_TRIP, info.query_async(conn)).await?;
    let deleted = match info.get("max-deleted-entry-id") {
        Some(Value::BulkString(id)) => String::from_utf8_lossy(id).into_owned(),
        Some(Value::SimpleString(id)) => id.clone(),
        _ => return Ok(false),
    };
    Ok(fleet::stream_id(&deleted) > fleet::stream_id(position))
}

/// Publishes what the outbox holds (or the whole state, when that is due).
async fn publish(
    handle: &Handle,
    settings: &policy::Fleet,
    ring: &mut KeyFile,
    conn: &mut MultiplexedConnection,
    keys: &Keys,
) -> Result<(), String> {
    loop {
        let taken = handle.with(|core| Ok(core.fleet_outgoing(PUBLISH_MAX))).await;
        let Some((outgoing, through)) = taken.map_err(message)? else { return Ok(()) };
        let (kind, body) = match &outgoing {
            Outgoing::Changes(changes) => (Kind::Change, fleet::change_body(changes)),
            Outgoing::State(bytes) => (Kind::State, bytes.clone()),
        };
        let entry = fleet::seal(ring.current()?, &settings.stream, &settings.node, kind, "", body);
        let fields = fleet::fields(&entry);
        let limit = if kind == Kind::State { BULK_TRIP } else { ROUND_TRIP };
        let added =
            within(limit, conn.xadd::<_, _, _, _, String>(&keys.stream, "*", &fields)).await;
        if let Err(e) = added {
            let _ = handle
                .with(move |core| {
                    core.fleet_unsent(outgoing);
                    Ok(())
                })
                .await;
            return Err(e);
        }
        if kind == Kind::State {
            info!(bytes = entry.body.len(), "fleet: published this node's whole state");
        }
        handle.with(move |core| core.fleet_published(through)).await.map_err(message)?;
    }
}

/// Reads the entries after `position` and applies the others' (in order; a whole state joins
/// between changes). Returns the new position.
async fn read(
    handle: &Handle,
    settings: &policy::Fleet,
    ring: &mut KeyFile,
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    position: String,
) -> Result<String, String> {
    let options = redis::streams::StreamReadOptions::default().count(READ_COUNT).block(BLOCK_MS);
    let reply: StreamReadReply =
        within(ROUND_TRIP, conn.xread_options(&[&keys.stream], &[&position], &options)).await?;
    let mut changes: Vec<Stamped> = Vec::new();
    let mut refused: Vec<Refused> = Vec::new();
    let mut last = None;
    for id in reply.keys.into_iter().flat_map(|k| k.ids) {
        let fields = id.map.iter().filter_map(|(name, value)| match value {
            Value::BulkString(bytes) => Some((name.as_str(), bytes.as_slice())),
            _ => None,
        });
        let entry = fleet::from_fields(fields);
        last = Some(id.id.clone());
        if entry.as_ref().is_ok_and(|e| e.node == settings.node) {
            continue; // This node's own: applied when it was made.
        }
        let checked = entry.and_then(|entry| {
            fleet::open(ring.current().map_err(Refused::Malformed)?, &settings.stream, &entry)?;
            Ok(entry)
        });
        match checked {
            Err(why) => {
                warn!(entry = %id.id, "fleet: refused an entry: {why}");
                refused.push(why);
            }
            Ok(entry) if entry.kind == Some(Kind::Change) => match fleet::changes(&entry) {
                Ok(mut more) => changes.append(&mut more),
                Err(why) => refused.push(why),
            },
            Ok(entry) if entry.kind == Some(Kind::State) => {
                let state = match fleet::state(&entry) {
                    Ok(state) => state,
                    Err(why) => {
                        refused.push(why);
                        continue;
                    }
                };
                // What came before it lands first; the join then covers through this entry.
                let before = std::mem::take(&mut changes);
                let at = id.id.clone();
                handle
                    .with(move |core| {
                        core.fleet_apply(before, at.clone())?;
                        core.fleet_join(&state, Some(at))
                    })
                    .await
                    .map_err(message)?;
                info!(node = %entry.node, "fleet: joined a node's whole state");
            }
            Ok(_) => refused.push(Refused::Malformed("a snapshot in the stream".into())),
        }
    }
    let Some(last) = last else { return Ok(position) };
    let at = last.clone();
    handle
        .with(move |core| {
            if let Some(link) = core.fleet.as_mut() {
                refused.iter().for_each(|why| link.refuse(why));
            }
            core.fleet_apply(changes, at)
        })
        .await
        .map_err(message)?;
    Ok(last)
}

/// Writes this node's report and reads everyone's, and the snapshot's age and size.
async fn exchange_reports(
    handle: &Handle,
    settings: &policy::Fleet,
    conn: &mut MultiplexedConnection,
    keys: &Keys,
) -> Result<(), String> {
    let mine = handle.with(|core| Ok(core.fleet_node_report())).await.map_err(message)?;
    let json = serde_json::to_string(&mine).expect("a report encodes");
    within(ROUND_TRIP, conn.hset::<_, _, _, ()>(&keys.nodes, &settings.node, json)).await?;
    let all: HashMap<String, String> = within(ROUND_TRIP, conn.hgetall(&keys.nodes)).await?;
    let mut nodes: Vec<NodeReport> =
        all.values().filter_map(|json| serde_json::from_str(json).ok()).collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let (covers, at): (Option<String>, Option<u64>) = within(
        ROUND_TRIP,
        redis::cmd("HMGET")
            .arg(&keys.snapshot)
            .arg(fleet::COVERS)
            .arg(fleet::MADE_AT)
            .query_async(conn),
    )
    .await?;
    let strlen = redis::cmd("HSTRLEN").arg(&keys.snapshot).arg(fleet::BODY).clone();
    let bytes: u64 = within(ROUND_TRIP, strlen.query_async(conn)).await?;
    let snapshot = covers.map(|covers| (covers, at.unwrap_or(0), bytes));
    handle
        .with(move |core| {
            if let Some(link) = core.fleet.as_mut() {
                link.nodes = nodes;
                link.snapshot = snapshot;
            }
            Ok(())
        })
        .await
        .map_err(message)
}

/// Once per interval, one node of the fleet (whoever takes the lock) writes its state as the
/// fleet's snapshot, covering the stream through its position; then the stream is trimmed
/// below the snapshot and below every node still reporting.
async fn offer_snapshot(
    handle: &Handle,
    settings: &policy::Fleet,
    ring: &mut KeyFile,
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    position: &str,
) -> Result<(), String> {
    if fleet::stream_id(position).is_none_or(|id| id == (0, 0)) {
        return Ok(());
    }
    let mut covers: Option<String> =
        within(ROUND_TRIP, conn.hget(&keys.snapshot, fleet::COVERS)).await?;
    let lock = redis::cmd("SET")
        .arg(&keys.snapshot_lock)
        .arg(&settings.node)
        .arg("NX")
        .arg("EX")
        .arg(settings.snapshot_interval_s.max(2))
        .clone();
    if covers.as_deref() != Some(position)
        && within(ROUND_TRIP, lock.query_async::<Option<String>>(conn)).await?.is_some()
    {
        let started = Instant::now();
        // The state covers the stream through `position`: it applied every entry up to it.
        let body = handle
            .with(|core| Ok(crate::store::encode_state(core.state())))
            .await
            .map_err(message)?;
        let (node, stream) = (&settings.node, &settings.stream);
        let entry = fleet::seal(ring.current()?, stream, node, Kind::Snapshot, position, body);
        let mut fields = fleet::fields(&entry);
        fields.push((fleet::MADE_AT, unix_now().to_string().into_bytes()));
        within(BULK_TRIP, conn.hset_multiple::<_, _, _, ()>(&keys.snapshot, &fields)).await?;
        info!(
            covers = position,
            bytes = entry.body.len(),
            ms = started.elapsed().as_millis() as u64,
            "fleet: wrote the fleet's snapshot"
        );
        covers = Some(position.to_string());
    }
    // A live node that is behind reads on without a gap; one silent past `node_timeout_s`
    // rejoins from the snapshot.
    let Some(covers) = covers.as_deref().and_then(fleet::stream_id) else { return Ok(()) };
    let reports: HashMap<String, String> = within(ROUND_TRIP, conn.hgetall(&keys.nodes)).await?;
    let now = unix_now();
    let live = reports
        .values()
        .filter_map(|json| serde_json::from_str::<NodeReport>(json).ok())
        .filter(|r| now.saturating_sub(r.at) < u64::from(settings.node_timeout_s))
        .map(|r| fleet::stream_id(&r.position).unwrap_or((0, 0)));
    let trim_to = live.chain([covers]).min().expect("covers is one");
    if trim_to == (0, 0) {
        return Ok(());
    }
    let trim_id = format!("{}-{}", trim_to.0, trim_to.1);
    let trim = redis::cmd("XTRIM").arg(&keys.stream).arg("MINID").arg(&trim_id).clone();
    let trimmed: u64 = within(ROUND_TRIP, trim.query_async(conn)).await?;
    if trimmed > 0 {
        info!(below = trim_id, entries = trimmed, "fleet: trimmed the stream");
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The fleet key ring, read again when its file changes (`edge key rotate`).
struct KeyFile {
    path: std::path::PathBuf,
    ring: Result<Keyring, String>,
    modified: Option<SystemTime>,
}

impl KeyFile {
    fn new(path: &Path) -> Self {
        let mut file = Self { path: path.into(), ring: Err(String::new()), modified: None };
        file.load();
        file
    }

    fn load(&mut self) {
        self.modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        self.ring = Keyring::load(&self.path).map_err(|e| format!("fleet.key_file: {e}"));
        match &self.ring {
            Ok(ring) => info!(current = ring.current().id, "fleet: key ring loaded"),
            Err(e) => error!("{e}"),
        }
    }

    fn reload_if_changed(&mut self) {
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if modified != self.modified {
            self.load();
        }
    }

    fn current(&self) -> Result<&Keyring, String> {
        self.ring.as_ref().map_err(Clone::clone)
    }
}
