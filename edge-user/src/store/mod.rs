//! The daemon's crash-safe store: a snapshot plus a write-ahead log, in `state_dir`.
//!
//! Every change is one log record, written and `fdatasync`ed before the daemon acknowledges
//! it, so an acknowledged change survives kill -9 and power loss; a change that was not
//! acknowledged is either whole in the log or not there (a torn record at the end of the log
//! fails its CRC and is cut off on recovery). A bad record with valid records after it is not
//! a crash but damage: the store refuses to open and names the file and byte, and
//! [`salvage`] keeps every valid record. An import is one record: all or nothing.
//! Snapshots are written beside the log and renamed into place, then the log restarts.
//! The format is documented in docs/store.md.
//!
//! Why not an embedded database: the bulk of the state is sets of integers per day, which
//! roaring bitmaps store in about 2 bytes per visitor in a documented, portable format and
//! load in tens of milliseconds; the log adds framing and a CRC. A general key-value store
//! would hold 20 million rows at several times the size and take seconds to scan on a cold
//! start, where the target is 2 s for everything.
mod fleet;
mod snapshot;
mod state;
mod wal;

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

pub use crate::policy::List;
pub use fleet::{Cursor, FleetState, Stamp, Stamped};
pub use snapshot::FORMAT_VERSION;
pub use state::{DayBatch, Op, State, StoredRule, TokenUse, TokenUses};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{path}: the record at byte {at} is damaged and valid records follow it (from byte \
         {next}): this is not a crash's torn write, so nothing was read past it and nothing on \
         disk was changed. `edge store salvage --state-dir {dir}` keeps every valid record \
         (and moves the damaged files aside); see docs/store.md",
        dir = path.parent().map_or(String::new(), |d| d.display().to_string())
    )]
    Damaged { path: PathBuf, at: usize, next: usize },
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
    /// A failed write left bytes past `wal_bytes` that could not be cut off yet: no record is
    /// written after them (it would read as damage) until they are, or a new log starts.
    stray_tail: bool,
    _lock: File,
}

/// A store's state recovered from its files' bytes, and what opening it must do on disk.
pub struct Recovered {
    pub state: State,
    pub recovery: Recovery,
    /// The last log's torn tail: cut it to this length.
    pub torn: Option<(PathBuf, usize)>,
    /// The log new records are appended to (none: start a new one).
    pub append_to: Option<PathBuf>,
    pub last_seq: u64,
}

/// Recovers a store from the bytes of its snapshot and of its logs (in sequence order): the
/// snapshot, then every log record after it. A bad frame at the end of the last log is a torn
/// tail (an unacknowledged write); any other damage, a bad record in an earlier log or a gap in
/// sequence numbers refuses the store. Pure: `Store::open` reads the files and acts on the
/// answer, and the fuzz target feeds it arbitrary bytes.
pub fn recover(
    snapshot: Option<(&Path, &[u8])>,
    logs: &[(PathBuf, Vec<u8>)],
) -> Result<Recovered, StoreError> {
    let mut state = State::default();
    let mut recovery = Recovery::default();
    if let Some((path, bytes)) = snapshot {
        recovery.snapshot_seq = snapshot::decode(path, bytes, &mut state)?;
    }
    let mut last_seq = recovery.snapshot_seq;
    let mut scans = Vec::with_capacity(logs.len());
    for (index, (path, bytes)) in logs.iter().enumerate() {
        let scan = wal::scan(bytes)
            .map_err(|reason| StoreError::Corrupt { path: path.clone(), reason })?;
        if let Some(damage) = scan.corruption() {
            let next = damage.next.expect("corruption has valid frames after it");
            return Err(StoreError::Damaged { path: path.clone(), at: damage.at, next });
        }
        if let Some(torn) = scan.damage.first() {
            if index + 1 != logs.len() {
                return Err(StoreError::Corrupt {
                    path: path.clone(),
                    reason: format!("bad record at byte {} of a log that is not the last", torn.at),
                });
            }
        }
        for (seq, _) in &scan.records {
            if *seq <= recovery.snapshot_seq {
                continue;
            }
            if *seq != last_seq + 1 {
                return Err(StoreError::Corrupt {
                    path: path.clone(),
                    reason: format!("record {seq} follows {last_seq}: the log has a gap"),
                });
            }
            last_seq = *seq;
        }
        scans.push(scan);
    }
    let (mut torn, mut append_to) = (None, None);
    for ((path, bytes), scan) in logs.iter().zip(scans) {
        if scan.end < bytes.len() && scan.end >= wal::MAGIC.len() {
            recovery.torn_bytes = (bytes.len() - scan.end) as u64;
            torn = Some((path.clone(), scan.end));
        }
        for (seq, op) in scan.records {
            if seq > recovery.snapshot_seq {
                state.apply(&op);
                recovery.replayed += 1;
            }
        }
        // Only a log of this version, whose header is on disk, is appended to.
        append_to = (scan.version == 2 && bytes.len() >= wal::MAGIC.len()).then(|| path.clone());
    }
    Ok(Recovered { state, recovery, torn, append_to, last_seq })
}

/// Takes the state directory's lock: one process per store.
fn lock(dir: &Path) -> Result<File, StoreError> {
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
    Ok(lock)
}

/// Reads a log file and scans its frames (for `salvage`).
fn read_log(path: &Path) -> Result<(Vec<u8>, wal::Scan), StoreError> {
    let bytes = std::fs::read(path).map_err(io_at(path))?;
    let scan = wal::scan(&bytes)
        .map_err(|reason| StoreError::Corrupt { path: path.to_path_buf(), reason })?;
    Ok((bytes, scan))
}

impl Store {
    /// Opens (creating if needed) the store in `dir` and recovers its state. A torn tail of
    /// the last log is cut off; any other damage refuses the store with nothing changed.
    pub fn open(dir: &Path) -> Result<(Self, State, Recovery), StoreError> {
        let lock = lock(dir)?;
        let snapshot_path = dir.join("snapshot");
        let snapshot = match snapshot_path.exists() {
            true => Some(std::fs::read(&snapshot_path).map_err(io_at(&snapshot_path))?),
            false => None,
        };
        let mut logs = Vec::new();
        for path in wal_files(dir)? {
            let bytes = std::fs::read(&path).map_err(io_at(&path))?;
            logs.push((path, bytes));
        }
        // Everything is read and checked before anything on disk changes.
        let recovered = recover(snapshot.as_deref().map(|b| (snapshot_path.as_path(), b)), &logs)?;
        if let Some((path, keep)) = &recovered.torn {
            let file = OpenOptions::new().write(true).open(path).map_err(io_at(path))?;
            file.set_len(*keep as u64).map_err(io_at(path))?;
            file.sync_all().map_err(io_at(path))?;
        }
        let Recovered { state, recovery, append_to, last_seq, .. } = recovered;
        let wal_path = match append_to {
            Some(path) => path,
            None => new_wal(dir, last_seq + 1)?,
        };
        let wal = OpenOptions::new().append(true).open(&wal_path).map_err(io_at(&wal_path))?;
        let wal_bytes = wal.metadata().map_err(io_at(&wal_path))?.len();
        let store = Self {
            dir: dir.into(),
            wal,
            wal_path,
            next_seq: last_seq + 1,
            wal_bytes,
            stray_tail: false,
            _lock: lock,
        };
        Ok((store, state, recovery))
    }

    /// Appends a change and waits until it is on disk.
    pub fn append(&mut self, op: &Op) -> Result<(), StoreError> {
        let frame = wal::encode(self.next_seq, op)
            .map_err(|reason| StoreError::Corrupt { path: self.wal_path.clone(), reason })?;
        if self.stray_tail {
            self.wal.set_len(self.wal_bytes).map_err(io_at(&self.wal_path))?;
            self.stray_tail = false;
        }
        let result = self.wal.write_all(&frame).and_then(|()| self.wal.sync_data());
        if let Err(e) = result {
            // Whatever part of the frame reached the file is cut off, so the log stays whole.
            self.stray_tail = self.wal.set_len(self.wal_bytes).is_err();
            return Err(StoreError::Io { path: self.wal_path.clone(), source: e });
        }
        self.wal_bytes += frame.len() as u64;
        self.next_seq += 1;
        Ok(())
    }

    /// Bytes of log since the last snapshot.
    pub fn wal_bytes(&self) -> u64 {
        self.wal_bytes.saturating_sub(wal::MAGIC.len() as u64)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a snapshot of `state` (which must include every appended record) and starts an
    /// empty log. A snapshot that cannot be written whole (a full disk) leaves nothing behind.
    pub fn compact(&mut self, state: &State) -> Result<(), StoreError> {
        write_snapshot(&self.dir, state, self.next_seq - 1)?;
        // The snapshot covers every record: start the next log, then drop the old ones.
        let old = wal_files(&self.dir)?;
        self.wal_path = new_wal(&self.dir, self.next_seq)?;
        self.wal =
            OpenOptions::new().append(true).open(&self.wal_path).map_err(io_at(&self.wal_path))?;
        self.wal_bytes = wal::MAGIC.len() as u64;
        self.stray_tail = false;
        for path in old.into_iter().filter(|p| *p != self.wal_path) {
            std::fs::remove_file(&path).map_err(io_at(&path))?;
        }
        sync_dir(&self.dir)
    }
}

/// A whole state in the snapshot's format (what the fleet's snapshot in Redis holds).
pub fn encode_state(state: &State) -> Vec<u8> {
    snapshot::encode(state, 0)
}

/// Reads what [`encode_state`] wrote, checking its checksum; `name` names it in errors.
pub fn decode_state(bytes: &[u8], name: &str) -> Result<State, StoreError> {
    let mut state = State::default();
    snapshot::decode(Path::new(name), bytes, &mut state)?;
    Ok(state)
}

/// Writes `snapshot.tmp`, fsyncs it and renames it over `snapshot`; on failure the temporary
/// file is removed (on a full disk it would hold the last free space).
fn write_snapshot(dir: &Path, state: &State, last_seq: u64) -> Result<(), StoreError> {
    let tmp = dir.join("snapshot.tmp");
    let bytes = snapshot::encode(state, last_seq);
    let written = File::create(&tmp)
        .and_then(|mut file| file.write_all(&bytes).and_then(|()| file.sync_all()))
        .map_err(io_at(&tmp));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let snapshot = dir.join("snapshot");
    std::fs::rename(&tmp, &snapshot).map_err(io_at(&snapshot))?;
    sync_dir(dir)
}

/// What `salvage` kept and skipped.
#[derive(Debug, Default)]
pub struct Salvage {
    /// Records kept from the logs (after the snapshot).
    pub kept: u64,
    /// Damaged stretches skipped: file, first byte, bytes.
    pub skipped: Vec<(PathBuf, usize, usize)>,
    /// Sequence numbers missing between kept records (the damaged records').
    pub missing: Vec<u64>,
    /// Where the files that were replaced now are.
    pub moved_to: Option<PathBuf>,
}

/// Rebuilds a damaged store: reads the snapshot and every valid record of every log
/// (skipping damaged stretches and torn tails), writes a new snapshot of the result, and moves
/// the old snapshot and logs into `salvaged-<unix time>/` beside them, so nothing is
/// destroyed. The daemon must be stopped (the lock says so). A damaged snapshot cannot be
/// salvaged: its records are not framed one by one.
pub fn salvage(dir: &Path) -> Result<Salvage, StoreError> {
    let _lock = lock(dir)?;
    let mut state = State::default();
    let snapshot = dir.join("snapshot");
    let mut last_seq = if snapshot.exists() { snapshot::read(&snapshot, &mut state)? } else { 0 };
    let mut report = Salvage::default();
    let wals = wal_files(dir)?;
    for path in &wals {
        let (bytes, scan) = read_log(path)?;
        for damage in &scan.damage {
            let end = damage.next.unwrap_or(bytes.len());
            report.skipped.push((path.clone(), damage.at, end - damage.at));
        }
        for (seq, op) in scan.records {
            if seq <= last_seq {
                continue;
            }
            report.missing.extend(last_seq + 1..seq);
            state.apply(&op);
            last_seq = seq;
            report.kept += 1;
        }
    }
    if report.skipped.is_empty() {
        return Ok(report);
    }
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // A fresh directory, also when salvage runs again within the same second.
    let mut aside = dir.join(format!("salvaged-{unix}"));
    for again in 2.. {
        match std::fs::create_dir(&aside) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                aside = dir.join(format!("salvaged-{unix}-{again}"));
            }
            created => {
                created.map_err(io_at(&aside))?;
                break;
            }
        }
    }
    write_snapshot_at(dir, &aside, &state, last_seq, &wals)?;
    report.moved_to = Some(aside);
    Ok(report)
}

/// Keeps the old snapshot and logs in `aside` (hard links: nothing is copied, no space is
/// needed), then puts the salvaged snapshot in place of the old one (an atomic rename), drops
/// the old logs and starts an empty one. A crash at any step leaves a store that opens to the
/// salvaged state, or one that is still refused as damaged (salvage again): never an empty one.
fn write_snapshot_at(
    dir: &Path,
    aside: &Path,
    state: &State,
    last_seq: u64,
    wals: &[PathBuf],
) -> Result<(), StoreError> {
    let snapshot = dir.join("snapshot");
    let mut old: Vec<PathBuf> = wals.to_vec();
    if snapshot.exists() {
        old.push(snapshot);
    }
    for path in &old {
        let to = aside.join(path.file_name().expect("a file in the state directory"));
        std::fs::hard_link(path, &to).map_err(io_at(path))?;
    }
    sync_dir(aside)?;
    write_snapshot(dir, state, last_seq)?;
    for path in wals {
        std::fs::remove_file(path).map_err(io_at(path))?;
    }
    sync_dir(dir)?;
    new_wal(dir, last_seq + 1)?;
    Ok(())
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
    file.write_all(wal::MAGIC).and_then(|()| file.sync_all()).map_err(io_at(&path))?;
    sync_dir(dir)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{policy::Mode, visitors::Day};

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
            Op::Redeem {
                day: 20_001,
                entries: vec![([8; 16], 78)],
                uses: vec![super::state::TokenUse {
                    claim: crate::token::ClaimId([3; 16]),
                    expires: 90,
                    source: [8; 16],
                    used_at: 70,
                }],
                feed: None,
            },
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
        assert_eq!(recovery.replayed, 4);
        assert_eq!(summary(&state), summary(&expected));
        assert_eq!(state.token_uses, expected.token_uses);
        // And everything, admissions and the feed position included, through a snapshot.
        store.compact(&state).unwrap();
        drop(store);
        let (_, again, _) = Store::open(dir.path()).unwrap();
        assert_eq!(summary(&again), summary(&expected));
        assert_eq!(again.admissions, expected.admissions);
        assert_eq!(again.token_uses, expected.token_uses);
        assert_eq!(again.token_uses.len(), 1);
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
        let first_end =
            wal::MAGIC.len() + wal::encode(1, &visits(20_000, &[1], &[])).unwrap().len();
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

    /// A store of `records` single visits whose log has one bit flipped in its middle: the
    /// directory, the log, its damaged bytes and the flipped byte's offset.
    fn damaged_store(records: u32) -> (tempfile::TempDir, PathBuf, Vec<u8>, usize) {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut store, _, _) = Store::open(dir.path()).unwrap();
            for i in 0..records {
                store.append(&visits(20_000, &[i], &[])).unwrap();
            }
        }
        let wal = wal_files(dir.path()).unwrap().pop().unwrap();
        let mut bytes = std::fs::read(&wal).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x04;
        std::fs::write(&wal, &bytes).unwrap();
        (dir, wal, bytes, middle)
    }

    #[test]
    fn damage_refuses_the_store_unchanged_and_salvage_keeps_every_valid_record() {
        let (dir, wal, bytes, middle) = damaged_store(300);
        let e = Store::open(dir.path()).err().expect("a damaged log is refused");
        let StoreError::Damaged { at, next, .. } = e else { panic!("{e}") };
        assert!(at <= middle && middle < next, "{at}..{next} holds byte {middle}");
        let text = e.to_string();
        assert!(text.contains(&wal.display().to_string()) && text.contains("salvage"), "{text}");
        assert_eq!(std::fs::read(&wal).unwrap(), bytes, "nothing on disk changed");

        let report = salvage(dir.path()).unwrap();
        assert_eq!(report.kept, 299);
        assert_eq!(report.missing.len(), 1);
        assert_eq!(report.skipped.len(), 1);
        let aside = report.moved_to.unwrap();
        assert_eq!(std::fs::read(aside.join(wal.file_name().unwrap())).unwrap(), bytes);
        let (mut store, state, _) = Store::open(dir.path()).unwrap();
        assert_eq!(state.history.len(), 299);
        // The salvaged store takes new records after the old ones.
        store.append(&visits(20_000, &[1000], &[])).unwrap();
        drop(store);
        assert_eq!(Store::open(dir.path()).unwrap().1.history.len(), 300);
        // A store with nothing damaged is left alone.
        assert!(salvage(dir.path()).unwrap().moved_to.is_none());
    }

    #[test]
    fn a_salvage_that_cannot_finish_leaves_the_damaged_store_not_an_empty_one() {
        let (dir, wal, bytes, _) = damaged_store(100);
        // The disk is full when the salvaged snapshot is written.
        let tmp = dir.path().join("snapshot.tmp");
        std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
        assert!(salvage(dir.path()).is_err());
        let refused = Store::open(dir.path()).err().expect("still refused, not opened empty");
        assert!(matches!(refused, StoreError::Damaged { .. }), "{refused}");
        assert_eq!(std::fs::read(&wal).unwrap(), bytes);
        // With space again, salvage finishes (in the same second: a second aside directory).
        let report = salvage(dir.path()).unwrap();
        assert_eq!(report.kept, 99);
        assert_eq!(Store::open(dir.path()).unwrap().1.history.len(), 99);
    }

    #[test]
    fn a_snapshot_that_cannot_be_written_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, state, _) = Store::open(dir.path()).unwrap();
        // /dev/full refuses every write with ENOSPC, as a full disk does.
        let tmp = dir.path().join("snapshot.tmp");
        std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
        assert!(store.compact(&state).is_err());
        assert!(!tmp.exists() && std::fs::symlink_metadata(&tmp).is_err(), "snapshot.tmp is gone");
    }

    #[test]
    fn one_daemon_per_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        assert!(matches!(Store::open(dir.path()), Err(StoreError::Locked(_))));
    }
}
