//! The snapshot file: everything up to one log record, written whole (docs/store.md).
use std::{collections::BTreeMap, fs::File, io::Read, path::Path};

use edge_common::keys::Addr;
use roaring::{RoaringBitmap, RoaringTreemap};
use serde::{Deserialize, Serialize};

use ipnet::IpNet;

use super::{
    fleet::{Cursor as FleetCursor, FleetState, Stamp},
    io_at,
    state::{State, StoredRule, TokenUses},
    StoreError,
};
use crate::{
    history::{Days, KeySet, VisitorHistory},
    policy::{List, Mode},
    token::ClaimId,
    visitors::Day,
};

const SNAPSHOT_MAGIC: &[u8; 8] = b"EDGESNAP";
/// 2 added admissions to the snapshot's metadata, 3 the day the window rolled to, 4 the fleet,
/// 5 the tokens' uses; earlier versions are still read.
pub const FORMAT_VERSION: u32 = 5;

/// Small state kept in the snapshot beside the visitor bitmaps.
#[derive(Serialize, Deserialize)]
struct Meta {
    mode: Option<Mode>,
    rules: Vec<StoredRule>,
    admissions: Vec<(Addr, u64)>,
    feed_position: Option<String>,
    rolled_to: Option<u32>,
}

/// Version 4 adds the fleet's stamps and cursor after the history, and its tombstones
/// (a second history) after those.
#[derive(Serialize, Deserialize)]
struct FleetMeta {
    rule_stamps: Vec<((List, IpNet), Stamp)>,
    mode_stamp: Option<Stamp>,
    clock: u64,
    made: u64,
    cursor: FleetCursor,
}

/// The metadata of a version-2 snapshot (no roll day).
#[derive(Deserialize)]
struct MetaV2 {
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

pub(super) fn encode(state: &State, last_seq: u64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&last_seq.to_le_bytes());
    let meta = Meta {
        mode: state.mode,
        rules: state.rules.values().cloned().collect(),
        admissions: state.admissions.iter().map(|(k, u)| (*k, *u)).collect(),
        feed_position: state.feed_position.clone(),
        rolled_to: state.rolled_to.map(|d| d.0),
    };
    put_section(&mut out, &postcard::to_stdvec(&meta).expect("encoding snapshot metadata"));
    put_history(&mut out, &state.history);
    let fleet = &state.fleet;
    let meta = FleetMeta {
        rule_stamps: fleet.rule_stamps.iter().map(|(k, s)| (*k, s.clone())).collect(),
        mode_stamp: fleet.mode_stamp.clone(),
        clock: fleet.clock,
        made: fleet.made,
        cursor: fleet.cursor.clone(),
    };
    put_section(&mut out, &postcard::to_stdvec(&meta).expect("encoding fleet metadata"));
    put_history(&mut out, &fleet.removed);
    let uses: Vec<(&ClaimId, &TokenUses)> = state.token_uses.iter().collect();
    put_section(&mut out, &postcard::to_stdvec(&uses).expect("encoding token uses"));
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A history: each family's union, then each day's sets.
fn put_history(out: &mut Vec<u8>, history: &VisitorHistory) {
    section_of(out, Some(history.v4.all()));
    section_of(out, Some(history.v6.all()));
    let days: std::collections::BTreeSet<Day> =
        history.v4.days().map(|(d, _)| d).chain(history.v6.days().map(|(d, _)| d)).collect();
    out.extend_from_slice(&(days.len() as u32).to_le_bytes());
    for day in days {
        out.extend_from_slice(&day.0.to_le_bytes());
        section_of(out, history.v4.get(day));
        section_of(out, history.v6.get(day));
    }
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
pub(super) fn read(path: &Path, state: &mut State) -> Result<u64, StoreError> {
    let mut bytes = Vec::new();
    File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(io_at(path))?;
    decode(path, &bytes, state)
}

/// Reads snapshot bytes (named `path` in errors) into `state`; returns the last log sequence
/// number they cover.
pub(super) fn decode(path: &Path, bytes: &[u8], state: &mut State) -> Result<u64, StoreError> {
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
        Meta {
            mode: v1.mode,
            rules: v1.rules,
            admissions: Vec::new(),
            feed_position: None,
            rolled_to: None,
        }
    } else if version == 2 {
        let v2: MetaV2 =
            postcard::from_bytes(meta).map_err(|e| corrupt(&format!("metadata: {e}")))?;
        Meta {
            mode: v2.mode,
            rules: v2.rules,
            admissions: v2.admissions,
            feed_position: v2.feed_position,
            rolled_to: None,
        }
    } else {
        postcard::from_bytes(meta).map_err(|e| corrupt(&format!("metadata: {e}")))?
    };
    state.mode = meta.mode;
    state.rules = meta.rules.into_iter().map(|r| ((r.list, r.net), r)).collect();
    state.admissions = meta.admissions.into_iter().collect();
    state.feed_position = meta.feed_position;
    state.rolled_to = meta.rolled_to.map(Day);
    state.history = read_history(&mut cursor).map_err(|e| corrupt(&e))?;
    if version >= 4 {
        let meta = cursor.section().ok_or_else(|| corrupt("truncated fleet metadata"))?;
        let meta: FleetMeta =
            postcard::from_bytes(meta).map_err(|e| corrupt(&format!("fleet metadata: {e}")))?;
        let removed = read_history(&mut cursor).map_err(|e| corrupt(&format!("fleet: {e}")))?;
        state.fleet = FleetState {
            rule_stamps: meta.rule_stamps.into_iter().collect(),
            mode_stamp: meta.mode_stamp,
            removed,
            clock: meta.clock,
            made: meta.made,
            cursor: meta.cursor,
        };
    }
    if version >= 5 {
        let uses = cursor.section().ok_or_else(|| corrupt("truncated token uses"))?;
        let uses: Vec<(ClaimId, TokenUses)> =
            postcard::from_bytes(uses).map_err(|e| corrupt(&format!("token uses: {e}")))?;
        state.token_uses = uses.into_iter().collect();
    }
    if cursor.at != body.len() {
        return Err(corrupt("unexpected bytes after the last section"));
    }
    Ok(last_seq)
}

fn read_history(cursor: &mut Cursor) -> Result<VisitorHistory, String> {
    let v4_all = cursor.section().ok_or("truncated IPv4 union")?;
    let v4_all = RoaringBitmap::read_from(v4_all).map_err(|e| format!("IPv4 union: {e}"))?;
    let v6_all = cursor.section().ok_or("truncated IPv6 union")?;
    let v6_all = RoaringTreemap::read_from(v6_all).map_err(|e| format!("IPv6 union: {e}"))?;
    let days = cursor.u32().ok_or("truncated day count")?;
    let (mut v4_days, mut v6_days) = (BTreeMap::new(), BTreeMap::new());
    for _ in 0..days {
        let day = Day(cursor.u32().ok_or("truncated day")?);
        let v4 = cursor.section().ok_or("truncated IPv4 set")?;
        let v6 = cursor.section().ok_or("truncated IPv6 set")?;
        let v4 = RoaringBitmap::read_from(v4).map_err(|e| format!("IPv4 set of {day}: {e}"))?;
        let v6 = RoaringTreemap::read_from(v6).map_err(|e| format!("IPv6 set of {day}: {e}"))?;
        if !v4.is_empty() {
            v4_days.insert(day, v4);
        }
        if !v6.is_empty() {
            v6_days.insert(day, v6);
        }
    }
    Ok(VisitorHistory {
        v4: Days::from_parts(v4_days, v4_all),
        v6: Days::from_parts(v6_days, v6_all),
    })
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
