//! The fleet's Redis side: one task that keeps this node and the fleet's Redis in step.
//!
//! A session: learn the Redis's epoch and where its stream ends (re-seed a Redis that came
//! back empty or lost its tail), join the fleet's snapshot if this node is behind it, report,
//! then loop: publish what the outbox holds, read the others' entries after this node's
//! position and apply them, report to `<stream>:nodes`, and now and then offer a snapshot and
//! trim the stream below it and below every live node. Any failure ends the session with
//! nothing lost (the outbox keeps what the stream has not taken; the position moves only with
//! what was applied): the node reports it (degraded past `degraded_after_s`), keeps enforcing
//! and learning from its own store, and starts a new session a second later. Redis is never
//! in the packet path. Layout and merge rules: docs/fleet.md.
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
    fleet::{self, Keys, Kind, Refused, Writer},
    policy,
    store::Stamped,
    ticket::Keyring,
};

/// A round trip that takes longer than this is a failure; one that carries whole states or
/// big batches (imports) gets longer.
const ROUND_TRIP: Duration = Duration::from_secs(3);
const BULK_TRIP: Duration = Duration::from_secs(60);
/// Bodies past this size are sent with the longer limit.
const BULK_BYTES: usize = 1 << 20;
/// How long a read waits for new entries (the bound on how late a change is seen when the
/// outbox is idle), entries per read, and how long a read of that many may take.
const BLOCK_MS: usize = 100;
const READ_COUNT: usize = 32;
const READ_TRIP: Duration = Duration::from_secs(20);
/// The bytes of changes one published entry carries (a bigger single change goes alone).
const PUBLISH_BYTES: usize = 4 << 20;
/// Entries published before the loop reads again (so a busy node still reads the others').
const PUBLISH_ROUNDS: usize = 8;
/// How often a node reports itself and reads the others' reports.
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// Only the snapshot's writer replaces it, and never with one that covers less.
const PUT_SNAPSHOT: &str = r"
local held = redis.call('HGET', KEYS[1], 'covers')
if held then
  local hm, hs = string.match(held, '(%d+)-(%d+)')
  local nm, ns = string.match(ARGV[1], '(%d+)-(%d+)')
  hm, hs, nm, ns = tonumber(hm), tonumber(hs), tonumber(nm), tonumber(ns)
  if hm > nm or (hm == nm and hs >= ns) then return 0 end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
";

/// Trims the stream below the snapshot (ARGV[1]) and below the position of every node that
/// reported within ARGV[2] seconds (Redis's clock); returns the entries trimmed.
const TRIM: &str = r"
local now = tonumber(redis.call('TIME')[1])
local timeout = tonumber(ARGV[2])
local function id(text)
  local ms, seq = string.match(text or '', '^(%d+)-(%d+)$')
  if not ms then return nil end
  return {tonumber(ms), tonumber(seq)}
end
local function less(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end
local trim = id(ARGV[1])
if not trim then return 0 end
for _, json in ipairs(redis.call('HVALS', KEYS[2])) do
  local ok, report = pcall(cjson.decode, json)
  if ok and type(report) == 'table' and type(report.at) == 'number'
     and now - report.at < timeout then
    local at = id(report.position) or {0, 0}
    if less(at, trim) then trim = at end
  end
end
if trim[1] == 0 and trim[2] == 0 then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-%d', trim[1], trim[2]))
";

pub async fn run(handle: Handle, settings: policy::Fleet) {
    let redis = settings.redis_url_redacted();
    let client = match client(&settings) {
        Ok(client) => client,
        Err(e) => {
            error!(%redis, "fleet: {e}; the fleet is off");
            return;
        }
    };
    let mut ring = KeyFile::new(&settings.key_file);
    let mut last_error = String::new();
    loop {
        ring.reload_if_changed();
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

/// The Redis client: the URL's, with the configured CA and client certificate for TLS.
fn client(settings: &policy::Fleet) -> Result<redis::Client, String> {
    let url = settings.redis_url.as_str();
    let bad = |e: redis::RedisError| e.detail().unwrap_or("not a Redis URL").to_string();
    if settings.tls_ca_file.is_none() && settings.tls_client.is_none() {
        return redis::Client::open(url).map_err(bad);
    }
    let read = |path: &Path, what: &str| {
        std::fs::read(path).map_err(|e| format!("fleet.{what} {}: {e}", path.display()))
    };
    let root_cert = match &settings.tls_ca_file {
        Some(path) => Some(read(path, "tls_ca_file")?),
        None => None,
    };
    let client_tls = match &settings.tls_client {
        Some((cert, key)) => Some(redis::ClientTlsConfig {
            client_cert: read(cert, "tls_client_cert")?,
            client_key: read(key, "tls_client_key")?,
        }),
        None => None,
    };
    redis::Client::build_with_tls(url, redis::TlsCertificates { client_tls, root_cert })
        .map_err(bad)
}

/// Runs a Redis call with a deadline; errors become text (with no credentials in them).
async fn within<T>(
    limit: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        // redis-rs errors name the failure and the server's message, never the URL.
        Ok(Err(e)) => Err(format!("Redis: {e}")),
        Err(_) => Err(format!("Redis did not answer within {} s", limit.as_secs())),
    }
}

/// What a session works with.
struct Session<'a> {
    handle: &'a Handle,
    settings: &'a policy::Fleet,
    keys: Keys,
    writer: Writer,
    conn: &'a mut MultiplexedConnection,
}

async fn session(
    handle: &Handle,
    settings: &policy::Fleet,
    ring: &mut KeyFile,
    conn: &mut MultiplexedConnection,
) -> Result<(), String> {
    let keys = Keys::new(&settings.stream);
    let epoch = epoch(conn, &keys).await?;
    let ends = stream_ends(conn, &keys).await?;
    let last_id = ends.last_generated.clone();
    let added = handle.with(|core| Ok(core.fleet_last_added())).await.map_err(message)?;
    let lost = match &added {
        Some(id) if !ends.deleted_past(id) => {
            let range = redis::cmd("XRANGE").arg(&keys.stream).arg(id).arg(id).clone();
            let held: Vec<Value> = within(BULK_TRIP, range.query_async(conn)).await?;
            held.is_empty()
        }
        _ => false,
    };
    let (incarnation, position) = handle
        .with(move |core| core.fleet_session(&epoch, last_id.as_deref(), lost))
        .await
        .map_err(message)?;
    report(handle, Ok(())).await;
    let writer = Writer { node: settings.node.clone(), incarnation };
    let mut s = Session { handle, settings, keys, writer, conn };
    let mut position = s.catch_up(ring, position).await?;
    // Reported, this node holds back the trim; a trim that passed it before that means the
    // snapshot again.
    s.exchange_reports().await?;
    while stream_ends(s.conn, &s.keys).await?.deleted_past(&position) {
        let before = position.clone();
        position = s.catch_up(ring, Some(position)).await?;
        if position == before {
            return Err(format!(
                "the stream was trimmed past this node ({before}) and no snapshot covers the gap"
            ));
        }
        s.exchange_reports().await?;
    }
    let mut reported = Instant::now();
    let mut snapshot_tried = Instant::now();
    // Past this without a report the others may trim past this node: start over (and rejoin).
    let deadline = Duration::from_secs(u64::from(settings.node_timeout_s) / 2);
    loop {
        if reported.elapsed() >= REPORT_EVERY {
            ring.reload_if_changed();
            s.exchange_reports().await?;
            reported = Instant::now();
        }
        s.publish(ring.current()?).await?;
        if reported.elapsed() >= deadline {
            return Err("this node went unreported too long to read on; joining again".into());
        }
        position = s.read(ring.current()?, position).await?;
        report(handle, Ok(())).await;
        if snapshot_tried.elapsed() >= Duration::from_secs(settings.snapshot_interval_s.into()) {
            snapshot_tried = Instant::now();
            s.offer_snapshot(ring.current()?, &position).await?;
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

/// The last id the stream handed out and the last it deleted (Redis 7's `XINFO STREAM`).
struct Ends {
    last_generated: Option<String>,
    max_deleted: Option<String>,
}

impl Ends {
    /// Whether entries after `position` may have been trimmed: only the snapshot has them.
    fn deleted_past(&self, position: &str) -> bool {
        self.max_deleted.as_deref().and_then(fleet::stream_id) > fleet::stream_id(position)
    }
}

async fn stream_ends(conn: &mut MultiplexedConnection, keys: &Keys) -> Result<Ends, String> {
    if !within(ROUND_TRIP, conn.exists::<_, bool>(&keys.stream)).await? {
        return Ok(Ends { last_generated: None, max_deleted: None });
    }
    // The answer holds the first and last entries whole: a long limit.
    let info = redis::cmd("XINFO").arg("STREAM").arg(&keys.stream).clone();
    let info: HashMap<String, Value> = within(BULK_TRIP, info.query_async(conn)).await?;
    let id = |name: &str| match info.get(name) {
        Some(Value::BulkString(id)) => Some(String::from_utf8_lossy(id).into_owned()),
        Some(Value::SimpleString(id)) => Some(id.clone()),
        _ => None,
    };
    Ok(Ends { last_generated: id("last-generated-id"), max_deleted: id("max-deleted-entry-id") })
}

/// Why reading stopped short of the entries Redis gave: the position stays where it is.
fn stuck(id: &str, why: &Refused) -> String {
    format!(
        "stream entry {id}: {why}; not reading past it (install the fleet's current key ring \
         on this node)"
    )
}

impl Session<'_> {
    async fn count_refused(&self, why: Vec<Refused>) {
        if why.is_empty() {
            return;
        }
        let _ = self
            .handle
            .with(move |core| {
                if let Some(link) = core.fleet.as_mut() {
                    why.iter().for_each(|why| link.refuse(why));
                }
                Ok(())
            })
            .await;
    }

    /// Joins the fleet's snapshot if this node is behind it (new, wiped, or down while the
    /// stream was trimmed); returns the position to read the stream from.
    async fn catch_up(
        &mut self,
        ring: &mut KeyFile,
        position: Option<String>,
    ) -> Result<String, String> {
        let snapshot = &self.keys.snapshot;
        let covers: Option<String> =
            within(ROUND_TRIP, self.conn.hget(snapshot, fleet::COVERS)).await?;
        let behind = match (&position, &covers) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(at), Some(covers)) => fleet::stream_id(at) < fleet::stream_id(covers),
        };
        if !behind {
            return Ok(position.unwrap_or_else(|| "0-0".into()));
        }
        let started = Instant::now();
        let fields: HashMap<String, Vec<u8>> =
            within(BULK_TRIP, self.conn.hgetall(snapshot)).await?;
        let ring = ring.current()?;
        let entry = fleet::from_fields(fields.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .and_then(|entry| {
                fleet::open(ring, &self.settings.stream, &entry)?;
                if entry.kind != Some(Kind::Snapshot) {
                    return Err(Refused::Malformed("the snapshot is not of kind snapshot".into()));
                }
                Ok(entry)
            });
        let entry = match entry {
            Ok(entry) => entry,
            Err(why) => {
                let error = format!("the fleet's snapshot is refused: {why}");
                self.count_refused(vec![why]).await;
                return Err(error);
            }
        };
        let covers = entry.covers.clone();
        let state = fleet::state(&entry).map_err(|e| format!("the fleet's snapshot: {e}"))?;
        let visitors = state.history.len();
        let joined = covers.clone();
        let join = move |core: &mut super::core::Core| core.fleet_join(&state, Some(joined));
        self.handle.with(join).await.map_err(message)?;
        info!(
            covers,
            visitors,
            bytes = entry.body.len(),
            ms = started.elapsed().as_millis() as u64,
            "fleet: joined the fleet's snapshot"
        );
        Ok(covers)
    }

    /// Publishes what the outbox holds (or the whole state, when that is due), a few entries
    /// at a time. What the stream did not take stays in the outbox.
    async fn publish(&mut self, ring: &Keyring) -> Result<(), String> {
        for _ in 0..PUBLISH_ROUNDS {
            let taken = self.handle.with(|core| Ok(core.fleet_outgoing(PUBLISH_BYTES))).await;
            let Some(outgoing) = taken.map_err(message)? else { return Ok(()) };
            let (kind, body, through) = match outgoing {
                Outgoing::Changes(changes, through) => {
                    (Kind::Change, fleet::change_body(&changes), through)
                }
                Outgoing::State(bytes, through) => (Kind::State, bytes, through),
            };
            let entry = fleet::seal(ring, &self.settings.stream, &self.writer, kind, "", body);
            let fields = fleet::fields(&entry);
            let limit = if entry.body.len() > BULK_BYTES { BULK_TRIP } else { ROUND_TRIP };
            let add = self.conn.xadd::<_, _, _, _, String>(&self.keys.stream, "*", &fields);
            let id = within(limit, add).await?;
            let whole = kind == Kind::State;
            if whole {
                info!(bytes = entry.body.len(), "fleet: published this node's whole state");
            }
            let published =
                move |core: &mut super::core::Core| core.fleet_published(whole, through, id);
            self.handle.with(published).await.map_err(message)?;
        }
        Ok(())
    }

    /// Reads the entries after `position` and applies the others' in order (a whole state
    /// joins between changes). Returns the new position: the last entry applied or refused.
    /// An entry sealed with a key this node does not hold stops the read before it.
    async fn read(&mut self, ring: &Keyring, position: String) -> Result<String, String> {
        let options =
            redis::streams::StreamReadOptions::default().count(READ_COUNT).block(BLOCK_MS);
        let (streams, from) = ([&self.keys.stream], [&position]);
        let read = self.conn.xread_options(&streams, &from, &options);
        let reply: StreamReadReply = within(READ_TRIP, read).await?;
        if reply.keys.iter().all(|k| k.ids.is_empty()) {
            return Ok(position);
        }
        // This node's own changes are at or below its clock; a store restored from a backup
        // has an older clock, and applies what its former self published since.
        let clock = self.handle.with(|core| Ok(core.fleet_clock())).await.map_err(message)?;
        let mut changes: Vec<Stamped> = Vec::new();
        let mut refused: Vec<Refused> = Vec::new();
        let mut last: Option<String> = None;
        let mut stop = None;
        for id in reply.keys.into_iter().flat_map(|k| k.ids) {
            let fields = id.map.iter().filter_map(|(name, value)| match value {
                Value::BulkString(bytes) => Some((name.as_str(), bytes.as_slice())),
                _ => None,
            });
            let checked = fleet::from_fields(fields).and_then(|entry| {
                fleet::open(ring, &self.settings.stream, &entry)?;
                Ok(entry)
            });
            let entry = match checked {
                Err(why @ Refused::UnknownKey(_)) => {
                    stop = Some(stuck(&id.id, &why));
                    break;
                }
                Err(why) => {
                    warn!(entry = %id.id, "fleet: refused an entry: {why}");
                    refused.push(why);
                    last = Some(id.id);
                    continue;
                }
                Ok(entry) => entry,
            };
            let own =
                entry.incarnation == self.writer.incarnation && entry.node == self.writer.node;
            match entry.kind {
                Some(Kind::Change) => match fleet::changes(&entry) {
                    // Applied when it was made.
                    Ok(more) if own && more.iter().all(|c| c.stamp.hlc <= clock) => {}
                    Ok(mut more) => changes.append(&mut more),
                    Err(why) => refused.push(why),
                },
                Some(Kind::State) if own => {}
                Some(Kind::State) => match fleet::state(&entry) {
                    Ok(state) => {
                        // What came before lands first, through the entry before this one;
                        // the join then covers through this entry (in the snapshot it writes).
                        let before = std::mem::take(&mut changes);
                        let through = last.clone().unwrap_or_else(|| position.clone());
                        let at = id.id.clone();
                        let joined = self
                            .handle
                            .with(move |core| {
                                core.fleet_apply(before, through)?;
                                core.fleet_join(&state, Some(at))
                            })
                            .await;
                        match joined {
                            Ok(()) => {
                                info!(node = %entry.node, "fleet: joined a node's whole state")
                            }
                            // More than this node's maps hold: refused, as a change would be.
                            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                                warn!(node = %entry.node, "fleet: refused a whole state: {}", status.message());
                                refused.push(Refused::Invalid(status.message().to_string()));
                            }
                            Err(status) => return Err(message(status)),
                        }
                    }
                    Err(why) => refused.push(why),
                },
                _ => refused.push(Refused::Malformed("a snapshot in the stream".into())),
            }
            last = Some(id.id);
        }
        self.count_refused(refused).await;
        let Some(last) = last else {
            return match stop {
                Some(why) => Err(why),
                None => Ok(position),
            };
        };
        let at = last.clone();
        let apply = move |core: &mut super::core::Core| core.fleet_apply(changes, at);
        self.handle.with(apply).await.map_err(message)?;
        match stop {
            Some(why) => Err(why),
            None => Ok(last),
        }
    }

    /// Redis's clock (unix seconds): reports are stamped and judged on it, one clock for all.
    async fn redis_now(&mut self) -> Result<u64, String> {
        let (secs, _): (u64, u64) =
            within(ROUND_TRIP, redis::cmd("TIME").query_async(self.conn)).await?;
        Ok(secs)
    }

    /// Writes this node's report and reads everyone's, and the snapshot's age and size.
    async fn exchange_reports(&mut self) -> Result<(), String> {
        let now = self.redis_now().await?;
        let mut mine =
            self.handle.with(|core| Ok(core.fleet_node_report())).await.map_err(message)?;
        mine.at = now;
        let json = serde_json::to_string(&mine).expect("a report encodes");
        let nodes = &self.keys.nodes;
        let node = &self.settings.node;
        let held: Option<String> = within(ROUND_TRIP, self.conn.hget(nodes, node)).await?;
        if let Some(other) = held.and_then(|j| serde_json::from_str::<NodeReport>(&j).ok()) {
            let recent = now.saturating_sub(other.at) < u64::from(self.settings.node_timeout_s);
            if recent && !other.incarnation.is_empty() && other.incarnation != mine.incarnation {
                warn!(
                    node,
                    "fleet: another node reports under this node's name (or this node's state \
                     was wiped less than node_timeout_s ago); give each node its own name"
                );
            }
        }
        within(ROUND_TRIP, self.conn.hset::<_, _, _, ()>(nodes, node, json)).await?;
        let all: HashMap<String, String> = within(ROUND_TRIP, self.conn.hgetall(nodes)).await?;
        let mut reports: Vec<NodeReport> =
            all.values().filter_map(|json| serde_json::from_str(json).ok()).collect();
        reports.sort_by(|a, b| a.node.cmp(&b.node));
        let snapshot = &self.keys.snapshot;
        let meta = redis::cmd("HMGET").arg(snapshot).arg(fleet::COVERS).arg(fleet::MADE_AT).clone();
        let (covers, at): (Option<String>, Option<u64>) =
            within(ROUND_TRIP, meta.query_async(self.conn)).await?;
        let strlen = redis::cmd("HSTRLEN").arg(snapshot).arg(fleet::BODY).clone();
        let bytes: u64 = within(ROUND_TRIP, strlen.query_async(self.conn)).await?;
        let snapshot = covers.map(|covers| (covers, at.unwrap_or(0), bytes));
        self.handle
            .with(move |core| {
                if let Some(link) = core.fleet.as_mut() {
                    link.nodes = reports;
                    link.snapshot = snapshot;
                }
                Ok(())
            })
            .await
            .map_err(message)
    }

    /// Once per interval, one node of the fleet (whoever takes the lock) writes its state as
    /// the fleet's snapshot, covering the stream through its position; then the stream is
    /// trimmed below the snapshot and below every node still reporting.
    async fn offer_snapshot(&mut self, ring: &Keyring, position: &str) -> Result<(), String> {
        if fleet::stream_id(position).is_none_or(|id| id == (0, 0)) {
            return Ok(());
        }
        let snapshot = self.keys.snapshot.clone();
        let covers: Option<String> =
            within(ROUND_TRIP, self.conn.hget(&snapshot, fleet::COVERS)).await?;
        let lock = redis::cmd("SET")
            .arg(&self.keys.snapshot_lock)
            .arg(&self.settings.node)
            .arg("NX")
            .arg("EX")
            .arg(self.settings.snapshot_interval_s.max(2))
            .clone();
        let behind = covers.as_deref().and_then(fleet::stream_id) < fleet::stream_id(position);
        if behind
            && within(ROUND_TRIP, lock.query_async::<Option<String>>(self.conn)).await?.is_some()
        {
            let started = Instant::now();
            // The state covers the stream through `position`: it applied every entry up to it.
            let body =
                self.handle.with(|core| Ok(core.fleet_state_bytes())).await.map_err(message)?;
            let stream = &self.settings.stream;
            let entry = fleet::seal(ring, stream, &self.writer, Kind::Snapshot, position, body);
            let mut put = redis::cmd("EVAL");
            put.arg(PUT_SNAPSHOT).arg(1).arg(&snapshot).arg(position);
            for (name, value) in fleet::fields(&entry) {
                put.arg(name).arg(value);
            }
            put.arg(fleet::MADE_AT).arg(unix_now());
            let written: u64 = within(BULK_TRIP, put.query_async(self.conn)).await?;
            if written == 1 {
                info!(
                    covers = position,
                    bytes = entry.body.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "fleet: wrote the fleet's snapshot"
                );
            }
        }
        // A live node that is behind reads on without a gap; one silent past `node_timeout_s`
        // rejoins from the snapshot. One script: a node that reports meanwhile is either
        // counted or sees the trim (`deleted_past`) after its report.
        let covers: Option<String> =
            within(ROUND_TRIP, self.conn.hget(&snapshot, fleet::COVERS)).await?;
        let Some(covers) = covers else { return Ok(()) };
        let mut trim = redis::cmd("EVAL");
        trim.arg(TRIM).arg(2).arg(&self.keys.stream).arg(&self.keys.nodes);
        trim.arg(covers).arg(self.settings.node_timeout_s);
        let trimmed: u64 = within(ROUND_TRIP, trim.query_async(self.conn)).await?;
        if trimmed > 0 {
            info!(entries = trimmed, "fleet: trimmed the stream");
        }
        Ok(())
    }
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
