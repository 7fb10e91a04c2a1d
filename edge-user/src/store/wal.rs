//! The write-ahead log's framing: how a record sits in a log file, and how a log is read back,
//! telling a torn tail (an unacknowledged write cut short by a crash) from damage (a bad frame
//! with valid frames after it, which no crash makes).
//!
//! Version 2 frames (docs/store.md):
//!
//! ```text
//! "EDGR" | u32 payload length | u64 sequence number | u32 CRC-32 of the 16 bytes before
//!        | u32 CRC-32 of the payload | payload = postcard(Op)
//! ```
//!
//! The mark and the header's own CRC let a reader find the next frame after a damaged one in
//! one pass: a candidate costs a 4-byte compare, and only a header whose CRC holds has its
//! payload hashed. Version 1 frames (`u32 length | u32 CRC | postcard((seq, Op))`) are still
//! read; finding a frame after damage in them means trying every offset, which only a damaged
//! version-1 log ever pays for.
use super::state::Op;

pub const MAGIC_V1: &[u8; 8] = b"EDGEWAL1";
pub const MAGIC: &[u8; 8] = b"EDGEWAL2";
const MARK: &[u8; 4] = b"EDGR";
const HEADER: usize = 24;
/// Largest record: an import of about 100 million visitors.
pub const MAX_RECORD: usize = 1 << 30;

/// The bytes of one version-2 frame holding `op` as record `seq`.
pub fn encode(seq: u64, op: &Op) -> Result<Vec<u8>, String> {
    let payload = postcard::to_stdvec(op).map_err(|e| format!("encoding a record: {e}"))?;
    if payload.len() > MAX_RECORD {
        return Err(format!(
            "a record of {} bytes is over the {MAX_RECORD}-byte limit",
            payload.len()
        ));
    }
    let mut frame = Vec::with_capacity(HEADER + payload.len());
    frame.extend_from_slice(MARK);
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&seq.to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&frame[..16]).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Bytes `at..next` of a log that hold no valid frame. `next` is where a valid frame starts
/// again, or `None` when nothing valid follows (a torn tail).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Damage {
    pub at: usize,
    pub next: Option<usize>,
}

/// What a log holds.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every valid record, in file order.
    pub records: Vec<(u64, Op)>,
    /// Where the frames end: the length to keep when the tail is torn.
    pub end: usize,
    /// The stretches without a valid frame, in file order; at most the last is a torn tail.
    pub damage: Vec<Damage>,
    /// The log's format version (1 or 2).
    pub version: u8,
}

impl Scan {
    /// The first damaged stretch that valid frames follow: corruption, not a crash.
    pub fn corruption(&self) -> Option<Damage> {
        self.damage.iter().copied().find(|d| d.next.is_some())
    }
}

/// Reads every valid frame of a log, resynchronising after damage.
pub fn scan(bytes: &[u8]) -> Result<Scan, String> {
    if bytes.len() < MAGIC.len() {
        // Created but its header never reached the disk: an empty log.
        return Ok(Scan { version: 2, ..Scan::default() });
    }
    let version = match &bytes[..8] {
        m if m == MAGIC => 2,
        m if m == MAGIC_V1 => 1,
        _ => return Err("not an edge write-ahead log (or a newer format version)".into()),
    };
    let frame_at = if version == 2 { frame_v2 } else { frame_v1 };
    let mut scan = Scan { version, ..Scan::default() };
    let mut at = MAGIC.len();
    while at < bytes.len() {
        if let Some((record, len)) = frame_at(bytes, at) {
            scan.records.push(record);
            at += len;
            scan.end = at;
            continue;
        }
        let after = scan.records.last().map_or(0, |(seq, _)| *seq);
        let next = (at + 1..bytes.len())
            .find(|&start| frame_at(bytes, start).is_some_and(|((seq, _), _)| seq > after));
        scan.damage.push(Damage { at, next });
        match next {
            Some(next) => at = next,
            None => break,
        }
    }
    scan.end = scan.end.max(MAGIC.len());
    Ok(scan)
}

/// The version-2 frame at `at`, if a whole, valid one is there: its record and length.
fn frame_v2(bytes: &[u8], at: usize) -> Option<((u64, Op), usize)> {
    let header = bytes.get(at..at + HEADER)?;
    if &header[..4] != MARK || crc32fast::hash(&header[..16]) != le32(&header[16..20]) {
        return None;
    }
    let len = le32(&header[4..8]) as usize;
    let seq = u64::from_le_bytes(header[8..16].try_into().unwrap());
    let payload = bytes.get(at + HEADER..(at + HEADER).checked_add(len)?)?;
    if crc32fast::hash(payload) != le32(&header[20..24]) {
        return None;
    }
    let op = postcard::from_bytes::<Op>(payload).ok()?;
    Some(((seq, op), HEADER + len))
}

/// The version-1 frame at `at`, if a whole, valid one is there.
fn frame_v1(bytes: &[u8], at: usize) -> Option<((u64, Op), usize)> {
    let header = bytes.get(at..at + 8)?;
    let len = le32(&header[..4]) as usize;
    let payload = bytes.get(at + 8..(at + 8).checked_add(len)?)?;
    if crc32fast::hash(payload) != le32(&header[4..8]) {
        return None;
    }
    let record = postcard::from_bytes::<(u64, Op)>(payload).ok()?;
    Some((record, 8 + len))
}

fn le32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes[..4].try_into().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::state::DayBatch;

    fn visit(v4: u32) -> Op {
        Op::Visits(vec![DayBatch { day: 20_000, v4: vec![v4], v6: vec![] }])
    }

    fn log(n: u64) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = MAGIC.to_vec();
        let mut starts = Vec::new();
        for seq in 1..=n {
            starts.push(bytes.len());
            bytes.extend(encode(seq, &visit(seq as u32)).unwrap());
        }
        (bytes, starts)
    }

    #[test]
    fn a_bad_frame_followed_by_valid_ones_is_damage_not_a_torn_tail() {
        let (bytes, starts) = log(300);
        // One bit flipped anywhere in record 150 (its mark, header, CRCs or payload).
        for offset in starts[149]..starts[150] {
            let mut damaged = bytes.clone();
            damaged[offset] ^= 0x10;
            let scan = scan(&damaged).unwrap();
            let corruption = scan.corruption().unwrap_or_else(|| panic!("flip at {offset}"));
            assert_eq!(corruption, Damage { at: starts[149], next: Some(starts[150]) });
            assert_eq!(scan.records.len(), 299, "every other record is found");
            assert_eq!(scan.end, bytes.len());
        }
    }

    #[test]
    fn a_cut_last_frame_is_a_torn_tail() {
        let (bytes, starts) = log(3);
        for cut in starts[2] + 1..bytes.len() {
            let scan = scan(&bytes[..cut]).unwrap();
            assert_eq!(scan.records.len(), 2);
            assert_eq!(scan.corruption(), None, "cut at {cut}");
            assert_eq!(scan.damage, [Damage { at: starts[2], next: None }]);
            assert_eq!(scan.end, starts[2]);
        }
        // A flipped bit in the last frame, nothing after it: torn as well.
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(scan(&flipped).unwrap().damage, [Damage { at: starts[2], next: None }]);
    }

    #[test]
    fn version_one_logs_are_read_and_their_damage_found() {
        let mut bytes = MAGIC_V1.to_vec();
        let mut starts = Vec::new();
        for seq in 1..=5u64 {
            starts.push(bytes.len());
            let payload = postcard::to_stdvec(&(seq, visit(seq as u32))).unwrap();
            bytes.extend((payload.len() as u32).to_le_bytes());
            bytes.extend(crc32fast::hash(&payload).to_le_bytes());
            bytes.extend(payload);
        }
        let whole = scan(&bytes).unwrap();
        assert_eq!((whole.version, whole.records.len(), whole.damage.len()), (1, 5, 0));
        bytes[starts[2] + 9] ^= 0x40;
        let damaged = scan(&bytes).unwrap();
        assert_eq!(damaged.corruption(), Some(Damage { at: starts[2], next: Some(starts[3]) }));
        assert_eq!(damaged.records.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2, 4, 5]);
    }
}
