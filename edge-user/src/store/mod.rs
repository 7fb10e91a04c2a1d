//! The daemon's crash-safe store: a snapshot plus a write-ahead log, in `state_dir`.
//!
//! Every change is one log record, written and `fdatasync`ed before the daemon acknowledges
//! it, so an acknowledged change survives kill -9 and power loss; a change that was not
//! acknowledged is either whole in the log or not there (a torn record at the end of the log
//! fails its CRC and is cut off on recovery). An import is one record: all or nothing.
//! Snapshots are written beside the log and renamed into place, then the log restarts.
//! The format is documented in docs/store.md.
//!
//! Why not an embedded database: the bulk of the state is sets of integers per day, which
//! roaring bitmaps store in about 2 bytes per visitor in a documented, portable format and
//! load in tens of milliseconds; the log adds framing and a CRC. A general key-value store
//! would hold 20 million rows at several times the size and take seconds to scan on a cold
//! start, where the target is 2 s for everything.
use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{self, Read, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use edge_common::keys::Addr;
use ipnet::IpNet;
use roaring::{RoaringBitmap, RoaringTreemap};
use serde::{Deserialize, Serialize};

use crate::{
    history::{Days, KeySet, VisitorHistory},
    policy::Mode,
    visitors::Day,
};

const SNAPSHOT_MAGIC: &[u8; 8] = b"EDGESNAP";
const WAL_MAGIC: &[u8; 8] = b"EDGEWAL1";
/// 2 added admissions to the snapshot's metadata; version 1 snapshots are still read.
pub const FORMAT_VERSION: u32 = 2;
/// Largest log record: an import of about 100 million visitors.
const MAX_RECORD: usize = 1 << 30;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum List {
    Allow,
    Deny,
}

impl List {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Self::Allow),
            "deny" => Some(Self::Deny),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Allow => edge_common::maps::ALLOW,
            Self::Deny => edge_common::maps::DENY,
        }
    }
}

/// An allow or deny entry managed through the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRule {
    pub list: List,
    pub net: IpNet,
    pub comment: String,
    /// Unix seconds; 0 never expires.
    pub expires_at: u64,
    pub added_at: u64,
}

/// Visitors seen on one day.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayBatch {
    pub day: u32,
    /// IPv4 addresses, host order.
    pub v4: Vec<u32>,
    /// IPv6 /64 prefixes, big-endian.
    pub v6: Vec<u64>,
}

/// One change: one log record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Visits(Vec<DayBatch>),
    RemoveVisitors {
        v4: Vec<u32>,
        v6: Vec<u64>,
    },
    PutRules(Vec<StoredRule>),
    RemoveRules {
        list: List,
        nets: Vec<IpNet>,
    },
    SetMode(Mode),
    /// Verified admissions: (admission key, admitted until in unix seconds), each also a
    /// visit on `day`. `feed` is the Redis Stream id read up to, when they came from the feed:
    /// stored in the same record, so a restart resumes exactly after what was applied.
    Admit {
        day: u32,
        entries: Vec<(Addr, u64)>,
        feed: Option<String>,
    },
}

impl Op {
    /// The batches of a history, a day at a time.
    pub fn visits(history: &VisitorHistory) -> Self {
        let mut days: BTreeMap<Day, DayBatch> = BTreeMap::new();
        for (day, set) in history.v4.days() {
            days.entry(day).or_insert_with(|| DayBatch { day: day.0, ..Default::default() }).v4 =
                set.iter().collect();
        }
        for (day, set) in history.v6.days() {
            days.entry(day).or_insert_with(|| DayBatch { day: day.0, ..Default::default() }).v6 =
                set.iter().collect();
        }
        Self::Visits(days.into_values().collect())
    }
}

/// What the store holds: the daemon's desired state.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub history: VisitorHistory,
    pub rules: BTreeMap<(List, IpNet), StoredRule>,
    /// Set through the API; overrides the config file's mode.
    pub mode: Option<Mode>,
    /// Admitted sources (admission keys) and until when (unix seconds).
    pub admissions: std::collections::HashMap<Addr, u64>,
    /// The last Redis Stream id applied from the admission feed.
    pub feed_position: Option<String>,
}

impl State {
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Visits(batches) => {
                for batch in batches {
                    self.history.v4.record_all(Day(batch.day), &mut batch.v4.clone());
                    self.history.v6.record_all(Day(batch.day), &mut batch.v6.clone());
                }
            }
            Op::RemoveVisitors { v4, v6 } => {
                for addr in v4 {
                    self.history.v4.remove(*addr);
                }
                for prefix in v6 {
                    self.history.v6.remove(*prefix);
                }
            }
            Op::PutRules(rules) => {
                for rule in rules {
                    self.rules.insert((rule.list, rule.net), rule.clone());
                }
            }
            Op::RemoveRules { list, nets } => {
                for net in nets {
                    self.rules.remove(&(*list, *net));
                }
            }
            Op::SetMode(mode) => self.mode = Some(*mode),
            Op::Admit { day, entries, feed } => {
                if feed.is_some() {
                    self.feed_position.clone_from(feed);
                }
                for (key, until) in entries {
                    let held = self.admissions.entry(*key).or_insert(0);
                    *held = (*held).max(*until);
                    self.history.record_key(admission_visitor(key), Day(*day));
                }
            }
        }
    }

    pub fn rules(&self, list: List) -> impl Iterator<Item = &StoredRule> {
        self.rules.values().filter(move |r| r.list == list)
    }
}

/// The visitor an admission key stands for (an IPv4 address or an IPv6 /64).
pub fn admission_visitor(key: &Addr) -> crate::visitors::VisitorKey {
    crate::visitors::VisitorKey::from(std::net::IpAddr::from(*key))
}

/// Small state kept in the snapshot beside the visitor bitmaps.
#[derive(Serialize, Deserialize)]
struct Meta {
    mode: Option<Mode>,
    rules: Vec<StoredRule>,
    admissions: Vec<(Addr, u64)>,
    feed_position: Option<String>,
}

/// The metadata of a version-1 snapshot (no admissions). Built by deserialization only.
#[derive(Deserialize)]
#[allow(dead_code)] // constructed by serde, which the lint does not see
struct MetaV1 {
    mode: Option<Mode>,
    rules: Vec<StoredRule>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("another edge daemon is using {0} (it holds the lock)")]
    Locked(PathBuf),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// What recovery found, for the log and the status.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    pub snapshot_seq: u64,
    pub replayed: u64,
    /// Bytes of a torn record cut off the end of the log.
    pub torn_bytes: u64,
}

pub struct Store {
    dir: PathBuf,
    wal: File,
    wal_path: PathBuf,
    next_seq: u64,
    wal_bytes: u64,
    _lock: File,
}

impl Store {
    /// Opens (creating if needed) the store in `dir` and recovers its state.
    pub fn open(dir: &Path) -> Result<(Self, State, Recovery), StoreError> {
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        // SAFETY: valid fd.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(StoreError::Locked(dir.to_path_buf()));
        }

        let mut state = State::default();
        let mut recovery = Recovery::default();
        let snapshot = dir.join("snapshot");
        if snapshot.exists() {
            recovery.snapshot_seq = read_snapshot(&snapshot, &mut state)?;
        }
        let mut last_seq = recovery.snapshot_seq;
        let wals = wal_files(dir)?;
        for (index, path) in wals.iter().enumerate() {
            let is_last = index + 1 == wals.len();
            let bytes = std::fs::read(path).map_err(io_at(path))?;
            let (records, good_len) = parse_wal(path, &bytes)?;
            if good_len < bytes.len() {
                if !is_last {
                    return Err(StoreError::Corrupt {
                        path: path.clone(),
                        reason: format!(
                            "bad record at byte {good_len} of a log that is not the last"
                        ),
                    });
                }
                recovery.torn_bytes = (bytes.len() - good_len) as u64;
                let file = OpenOptions::new().write(true).open(path).map_err(io_at(path))?;
                file.set_len(good_len as u64).map_err(io_at(path))?;
                file.sync_all().map_err(io_at(path))?;
            }
            for (seq, op) in records {
                if seq <= recovery.snapshot_seq {
                    continue;
                }
                if seq != last_seq + 1 {
                    return Err(StoreError::Corrupt {
                        path: path.clone(),
                        reason: format!("record {seq} follows {last_seq}: the log has a gap"),
                    });
                }
                state.apply(&op);
                last_seq = seq;
                recovery.replayed += 1;
            }
        }

        let wal_path = match wals.last() {
            Some(path) => path.clone(),
            None => new_wal(dir, last_seq + 1)?,
        };
        let wal = OpenOptions::new().append(true).open(&wal_path).map_err(io_at(&wal_path))?;
        let wal_bytes = wal.metadata().map_err(io_at(&wal_path))?.len();
        let store =
            Self { dir: dir.into(), wal, wal_path, next_seq: last_seq + 1, wal_bytes, _lock: lock };
        Ok((store, state, recovery))
    }

    /// Appends a change and waits until it is on disk.
    pub fn append(&mut self, op: &Op) -> Result<(), StoreError> {
        let payload =
            postcard::to_stdvec(&(self.next_seq, op)).map_err(|e| StoreError::Corrupt {
                path: self.wal_path.clone(),
                reason: format!("encoding a record: {e}"),
            })?;
        if payload.len() > MAX_RECORD {
            return Err(StoreError::Corrupt {
                path: self.wal_path.clone(),
                reason: format!(
                    "a record of {} bytes is over the {MAX_RECORD}-byte limit",
                    payload.len()
                ),
            });
        }
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        let result = self.wal.write_all(&frame).and_then(|()| self.wal.sync_data());
        if let Err(e) = result {
            // Whatever part of the frame reached the file is cut off, so the log stays whole.
            let _ = self.wal.set_len(self.wal_bytes);
            return Err(StoreError::Io { path: self.wal_path.clone(), source: e });
        }
        self.wal_bytes += frame.len() as u64;
        self.next_seq += 1;
        Ok(())
    }

    /// Bytes of log since the last snapshot.
    pub fn wal_bytes(&self) -> u64 {
        self.wal_bytes.saturating_sub(WAL_MAGIC.len() as u64)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a snapshot of `state` (which must include every appended record) and starts an
    /// empty log.
    pub fn compact(&mut self, state: &State) -> Result<(), StoreError> {
        let last_seq = self.next_seq - 1;
        let tmp = self.dir.join("snapshot.tmp");
        let bytes = encode_snapshot(state, last_seq);
        let mut file = File::create(&tmp).map_err(io_at(&tmp))?;
        file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(io_at(&tmp))?;
        let snapshot = self.dir.join("snapshot");
        std::fs::rename(&tmp, &snapshot).map_err(io_at(&snapshot))?;
        sync_dir(&self.dir)?;
        // The snapshot covers every record: start the next log, then drop the old ones.
        let old = wal_files(&self.dir)?;
        self.wal_path = new_wal(&self.dir, self.next_seq)?;
        self.wal =
            OpenOptions::new().append(true).open(&self.wal_path).map_err(io_at(&self.wal_path))?;
        self.wal_bytes = WAL_MAGIC.len() as u64;
        for path in old.into_iter().filter(|p| *p != self.wal_path) {
            std::fs::remove_file(&path).map_err(io_at(&path))?;
        }
        sync_dir(&self.dir)
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_at(dir))
}

/// Log files in sequence order: `wal-<first seq, 16 hex digits>.log`.
fn wal_files(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_at(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("wal-") && n.ends_with(".log"))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn new_wal(dir: &Path, first_seq: u64) -> Result<PathBuf, StoreError> {
    let path = dir.join(format!("wal-{first_seq:016x}.log"));
    let mut file = File::create(&path).map_err(io_at(&path))?;
    file.write_all(WAL_MAGIC).and_then(|()| file.sync_all()).map_err(io_at(&path))?;
    sync_dir(dir)?;
    Ok(path)
}

/// The whole records of a log and the length they cover; a torn or corrupt record ends it.
fn parse_wal(path: &Path, bytes: &[u8]) -> Result<(Vec<(u64, Op)>, usize), StoreError> {
    if bytes.len() < WAL_MAGIC.len() {
        // Created but its header never reached the disk: an empty log.
        return Ok((Vec::new(), 0));
    }
    if &bytes[..8] != WAL_MAGIC {
        return Err(StoreError::Corrupt {
            path: path.into(),
            reason: "not an edge write-ahead log (or a newer format version)".into(),
        });
    }
    let mut records = Vec::new();
    let mut at = WAL_MAGIC.len();
    while bytes.len() - at >= 8 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else { break };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Ok(record) = postcard::from_bytes::<(u64, Op)>(payload) else { break };
        records.push(record);
        at += 8 + len;
    }
    Ok((records, at))
}

fn encode_snapshot(state: &State, last_seq: u64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&last_seq.to_le_bytes());
    let meta = Meta {
        mode: state.mode,
        rules: state.rules.values().cloned().collect(),
        admissions: state.admissions.iter().map(|(k, u)| (*k, *u)).collect(),
        feed_position: state.feed_position.clone(),
    };
    put_section(&mut out, &postcard::to_stdvec(&meta).expect("encoding snapshot metadata"));
    let history = &state.history;
    section_of(&mut out, Some(history.v4.all()));
    section_of(&mut out, Some(history.v6.all()));
    let days: std::collections::BTreeSet<Day> =
        history.v4.days().map(|(d, _)| d).chain(history.v6.days().map(|(d, _)| d)).collect();
    out.extend_from_slice(&(days.len() as u32).to_le_bytes());
    for day in days {
        out.extend_from_slice(&day.0.to_le_bytes());
        section_of(&mut out, history.v4.get(day));
        section_of(&mut out, history.v6.get(day));
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn section_of<S: KeySet>(out: &mut Vec<u8>, set: Option<&S>) {
    let mut bytes = Vec::new();
    match set {
        Some(set) => set.write_to(&mut bytes),
        None => S::default().write_to(&mut bytes),
    }
    put_section(out, &bytes);
}

fn put_section(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads a snapshot into `state`; returns the last log sequence number it covers.
fn read_snapshot(path: &Path, state: &mut State) -> Result<u64, StoreError> {
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(io_at(path))?;
    let corrupt = |reason: &str| StoreError::Corrupt { path: path.into(), reason: reason.into() };
    if bytes.len() < 24 || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(corrupt("not an edge snapshot"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().unwrap()) {
        return Err(corrupt("checksum mismatch"));
    }
    let version = u32::from_le_bytes(body[8..12].try_into().unwrap());
    if !(1..=FORMAT_VERSION).contains(&version) {
        return Err(corrupt(&format!(
            "format version {version}; this edge reads {FORMAT_VERSION}"
        )));
    }
    let last_seq = u64::from_le_bytes(body[12..20].try_into().unwrap());
    let mut cursor = Cursor { bytes: body, at: 20 };
    let meta = cursor.section().ok_or_else(|| corrupt("truncated metadata"))?;
    let meta: Meta = if version == 1 {
        let v1: MetaV1 =
            postcard::from_bytes(meta).map_err(|e| corrupt(&format!("metadata: {e}")))?;
        Meta { mode: v1.mode, rules: v1.rules, admissions: Vec::new(), feed_position: None }
    } else {
        postcard::from_bytes(meta).map_err(|e| corrupt(&format!("metadata: {e}")))?
    };
    state.mode = meta.mode;
    state.rules = meta.rules.into_iter().map(|r| ((r.list, r.net), r)).collect();
    state.admissions = meta.admissions.into_iter().collect();
    state.feed_position = meta.feed_position;
    let v4_all = cursor.section().ok_or_else(|| corrupt("truncated IPv4 union"))?;
    let v4_all =
        RoaringBitmap::read_from(v4_all).map_err(|e| corrupt(&format!("IPv4 union: {e}")))?;
    let v6_all = cursor.section().ok_or_else(|| corrupt("truncated IPv6 union"))?;
    let v6_all =
        RoaringTreemap::read_from(v6_all).map_err(|e| corrupt(&format!("IPv6 union: {e}")))?;
    let days = cursor.u32().ok_or_else(|| corrupt("truncated day count"))?;
    let (mut v4_days, mut v6_days) = (BTreeMap::new(), BTreeMap::new());
    for _ in 0..days {
        let day = Day(cursor.u32().ok_or_else(|| corrupt("truncated day"))?);
        let v4 = cursor.section().ok_or_else(|| corrupt("truncated IPv4 set"))?;
        let v6 = cursor.section().ok_or_else(|| corrupt("truncated IPv6 set"))?;
        let v4 = RoaringBitmap::read_from(v4)
            .map_err(|e| corrupt(&format!("IPv4 set of {day}: {e}")))?;
        let v6 = RoaringTreemap::read_from(v6)
            .map_err(|e| corrupt(&format!("IPv6 set of {day}: {e}")))?;
        if !v4.is_empty() {
            v4_days.insert(day, v4);
        }
        if !v6.is_empty() {
            v6_days.insert(day, v6);
        }
    }
    state.history.v4 = Days::from_parts(v4_days, v4_all);
    state.history.v6 = Days::from_parts(v6_days, v6_all);
    Ok(last_seq)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    }

    fn section(&mut self) -> Option<&'a [u8]> {
        let len = self.take(8).map(|b| u64::from_le_bytes(b.try_into().unwrap()))?;
        self.take(usize::try_from(len).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visits(day: u32, v4: &[u32], v6: &[u64]) -> Op {
        Op::Visits(vec![DayBatch { day, v4: v4.to_vec(), v6: v6.to_vec() }])
    }

    fn rule(net: &str) -> StoredRule {
        StoredRule {
            list: List::Deny,
            net: net.parse().unwrap(),
            comment: "abuse".into(),
            expires_at: 0,
            added_at: 1,
        }
    }

    fn summary(state: &State) -> (Vec<(crate::visitors::VisitorKey, Day)>, usize, Option<Mode>) {
        (state.history.iter().collect(), state.rules.len(), state.mode)
    }

    #[test]
    fn acknowledged_records_survive_reopen_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let ops = [
            visits(20_000, &[1, 2, 3], &[7]),
            Op::PutRules(vec![rule("203.0.113.0/24")]),
            Op::SetMode(Mode::Enforce),
            Op::RemoveVisitors { v4: vec![2], v6: vec![] },
            visits(20_001, &[3], &[]),
            Op::Admit { day: 20_001, entries: vec![([9; 16], 77)], feed: Some("5-0".into()) },
        ];
        let mut expected = State::default();
        {
            let (mut store, state, _) = Store::open(dir.path()).unwrap();
            assert!(state.history.is_empty());
            for op in &ops[..3] {
                store.append(op).unwrap();
                expected.apply(op);
            }
            store.compact(&expected).unwrap();
            for op in &ops[3..] {
                store.append(op).unwrap();
                expected.apply(op);
            }
        }
        let (mut store, state, recovery) = Store::open(dir.path()).unwrap();
        assert_eq!(recovery.snapshot_seq, 3);
        assert_eq!(recovery.replayed, 3);
        assert_eq!(summary(&state), summary(&expected));
        // And everything, admissions and the feed position included, through a snapshot.
        store.compact(&state).unwrap();
        drop(store);
        let (_, again, _) = Store::open(dir.path()).unwrap();
        assert_eq!(summary(&again), summary(&expected));
        assert_eq!(again.admissions, expected.admissions);
        assert_eq!(again.feed_position.as_deref(), Some("5-0"));
        assert_eq!(
            state.history.last_seen(crate::visitors::VisitorKey::V4(3.into())),
            Some(Day(20_001))
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_everything_before_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut store, _, _) = Store::open(dir.path()).unwrap();
            store.append(&visits(20_000, &[1], &[])).unwrap();
            store.append(&visits(20_000, &[2], &[])).unwrap();
        }
        let wal = wal_files(dir.path()).unwrap().pop().unwrap();
        let full = std::fs::read(&wal).unwrap();
        // Cut the last record at every possible byte: the first record always survives.
        let first_end = WAL_MAGIC.len()
            + 8
            + postcard::to_stdvec(&(1u64, visits(20_000, &[1], &[]))).unwrap().len();
        for cut in first_end..full.len() {
            std::fs::write(&wal, &full[..cut]).unwrap();
            let (mut store, state, recovery) = Store::open(dir.path()).unwrap();
            assert_eq!(state.history.len(), 1, "cut at {cut}");
            assert_eq!(recovery.torn_bytes as usize, cut - first_end);
            // The log is usable after the cut: the next record gets the next sequence number.
            store.append(&visits(20_000, &[9], &[])).unwrap();
            drop(store);
            let (_, state, _) = Store::open(dir.path()).unwrap();
            assert_eq!(state.history.len(), 2);
            std::fs::write(&wal, &full).unwrap();
        }
        // A flipped bit in the last record is the same as a torn one.
        let mut flipped = full.clone();
        *flipped.last_mut().unwrap() ^= 1;
        std::fs::write(&wal, &flipped).unwrap();
        assert_eq!(Store::open(dir.path()).unwrap().1.history.len(), 1);
    }

    #[test]
    fn corruption_is_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut store, _, _) = Store::open(dir.path()).unwrap();
            store.append(&visits(20_000, &[1], &[])).unwrap();
            store
                .compact(&{
                    let mut s = State::default();
                    s.apply(&visits(20_000, &[1], &[]));
                    s
                })
                .unwrap();
        }
        let snapshot = dir.path().join("snapshot");
        let mut bytes = std::fs::read(&snapshot).unwrap();
        bytes[30] ^= 0xff;
        std::fs::write(&snapshot, &bytes).unwrap();
        let e = Store::open(dir.path()).err().unwrap();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
    }

    #[test]
    fn one_daemon_per_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        assert!(matches!(Store::open(dir.path()), Err(StoreError::Locked(_))));
    }
}
