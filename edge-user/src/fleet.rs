//! What the fleet's Redis holds, and the MAC that makes every entry the fleet's own.
//!
//! The stream (`[fleet] stream`, default `edge:fleet`) carries entries of two kinds: `change`
//! (a batch of stamped changes one node made) and `state` (a node's whole state, published
//! when it cannot tell which of its changes the fleet missed). Beside it, `<stream>:snapshot`
//! holds the fleet's state up to a stream entry (a new node starts there), `<stream>:epoch`
//! names this Redis's life (a Redis that restarts empty gets a new one, and the nodes re-seed
//! it), and `<stream>:nodes` holds each node's last report. Every entry and the snapshot carry
//! an HMAC-SHA256 under the fleet key ring's current key, over the stream's name, the kind,
//! the node and the body: a host that can write to Redis but has no key cannot make one.
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use crate::{
    store::{Op, Stamped, StoreError},
    ticket::Keyring,
};

/// The fields of a stream entry and of the snapshot hash.
pub const NODE: &str = "node";
pub const INCARNATION: &str = "incarnation";
pub const KIND: &str = "kind";
pub const KEY_ID: &str = "key";
pub const BODY: &str = "body";
pub const MAC: &str = "mac";
/// The snapshot's: the last stream entry it covers, and when it was made (unix seconds).
pub const COVERS: &str = "covers";
pub const MADE_AT: &str = "at";

/// The largest body a node accepts: a state of 20 million visitors encodes to about 80 MB.
pub const BODY_MAX: usize = 512 << 20;

const DOMAIN: &[u8] = b"edge-fleet/1\0";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Change,
    State,
    Snapshot,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Change => "change",
            Self::State => "state",
            Self::Snapshot => "snapshot",
        }
    }

    pub fn parse(name: &[u8]) -> Option<Self> {
        [Self::Change, Self::State, Self::Snapshot]
            .into_iter()
            .find(|k| k.name().as_bytes() == name)
    }
}

/// The Redis keys of one fleet, named after its stream.
#[derive(Clone, Debug)]
pub struct Keys {
    pub stream: String,
    pub snapshot: String,
    pub epoch: String,
    pub nodes: String,
    pub snapshot_lock: String,
}

impl Keys {
    pub fn new(stream: &str) -> Self {
        Self {
            stream: stream.into(),
            snapshot: format!("{stream}:snapshot"),
            epoch: format!("{stream}:epoch"),
            nodes: format!("{stream}:nodes"),
            snapshot_lock: format!("{stream}:snapshot-lock"),
        }
    }
}

/// Why an entry is refused. Each is counted (`edge_fleet_refused_total{reason}`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("malformed entry: {0}")]
    Malformed(String),
    #[error("MAC made with key id {0}, which the fleet key ring does not hold")]
    UnknownKey(u8),
    #[error("bad MAC: not made with the fleet key, or altered")]
    BadMac,
    #[error("a change stamped by {stamped} in an entry from {node}")]
    WrongNode { node: String, stamped: String },
    #[error("a change from {0} stamped more than 10 minutes ahead of this node's clock")]
    Future(String),
    #[error("a change this node cannot take: {0}")]
    Invalid(String),
}

impl Refused {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::UnknownKey(_) => "unknown_key",
            Self::BadMac => "bad_mac",
            Self::WrongNode { .. } => "wrong_node",
            Self::Future(_) => "future_stamp",
            Self::Invalid(_) => "invalid",
        }
    }
}

/// An entry as Redis holds it (field values are bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub node: String,
    /// The writing store's incarnation (`store::Cursor`): a reader skips only its own.
    pub incarnation: String,
    pub kind: Option<Kind>,
    pub key_id: u8,
    pub body: Vec<u8>,
    pub mac: Vec<u8>,
    /// The snapshot's: the stream entry it covers.
    pub covers: String,
}

fn mac_of(ring: &Keyring, key_id: u8, stream: &str, entry: &Entry) -> Option<Hmac<Sha256>> {
    let key = ring.get(key_id)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key.secret()).expect("HMAC takes any key");
    for part in [
        DOMAIN,
        stream.as_bytes(),
        entry.kind.map_or("", Kind::name).as_bytes(),
        entry.node.as_bytes(),
        entry.incarnation.as_bytes(),
        entry.covers.as_bytes(),
    ] {
        mac.update(&(part.len() as u64).to_le_bytes());
        mac.update(part);
    }
    mac.update(&entry.body);
    Some(mac)
}

/// Who writes an entry: the node's name and its store's incarnation.
#[derive(Clone, Debug)]
pub struct Writer {
    pub node: String,
    pub incarnation: String,
}

/// Signs an entry with the ring's current key.
pub fn seal(
    ring: &Keyring,
    stream: &str,
    writer: &Writer,
    kind: Kind,
    covers: &str,
    body: Vec<u8>,
) -> Entry {
    let mut entry = Entry {
        node: writer.node.clone(),
        incarnation: writer.incarnation.clone(),
        kind: Some(kind),
        key_id: ring.current().id,
        body,
        mac: Vec::new(),
        covers: covers.into(),
    };
    let mac = mac_of(ring, entry.key_id, stream, &entry).expect("the current key is in the ring");
    entry.mac = mac.finalize().into_bytes().to_vec();
    entry
}

/// Checks an entry's MAC (in constant time) under the ring.
pub fn open(ring: &Keyring, stream: &str, entry: &Entry) -> Result<(), Refused> {
    if entry.kind.is_none() {
        return Err(Refused::Malformed("no known kind".into()));
    }
    if entry.body.len() > BODY_MAX {
        return Err(Refused::Malformed(format!("a body of {} bytes", entry.body.len())));
    }
    let mac = mac_of(ring, entry.key_id, stream, entry).ok_or(Refused::UnknownKey(entry.key_id))?;
    mac.verify_slice(&entry.mac).map_err(|_| Refused::BadMac)
}

/// The changes of a `change` entry whose MAC checked; each must be stamped by its node.
pub fn changes(entry: &Entry) -> Result<Vec<Stamped>, Refused> {
    let mut changes: Vec<Stamped> = postcard::from_bytes(&entry.body)
        .map_err(|e| Refused::Malformed(format!("changes: {e}")))?;
    for change in &mut changes {
        if let Op::Visits(batches) = &mut change.op {
            for batch in batches {
                undelta(&mut batch.v4);
                undelta(&mut batch.v6);
            }
        }
    }
    if let Some(other) = changes.iter().find(|c| c.stamp.node != entry.node) {
        return Err(Refused::WrongNode {
            node: entry.node.clone(),
            stamped: other.stamp.node.clone(),
        });
    }
    Ok(changes)
}

/// The body of a `change` entry. A day's visitors travel sorted, each as its distance from
/// the one before: postcard writes small numbers in fewer bytes, and the stream is most of
/// what Redis holds between snapshots (docs/fleet.md).
pub fn change_body(changes: &[Stamped]) -> Vec<u8> {
    let packed: Vec<Stamped> = changes
        .iter()
        .map(|change| match &change.op {
            Op::Visits(batches) => {
                let batches = batches
                    .iter()
                    .map(|batch| {
                        let mut batch = batch.clone();
                        delta(&mut batch.v4);
                        delta(&mut batch.v6);
                        batch
                    })
                    .collect();
                Stamped { stamp: change.stamp.clone(), op: Op::Visits(batches) }
            }
            _ => change.clone(),
        })
        .collect();
    postcard::to_stdvec(&packed).expect("encoding changes")
}

/// Sorts keys and makes each the distance from the one before.
fn delta<K: Copy + Ord + Default + WrappingSub>(keys: &mut [K]) {
    keys.sort_unstable();
    let mut before = K::default();
    for key in keys {
        (*key, before) = (key.wrapping_sub_(before), *key);
    }
}

/// Undoes [`delta`] (wrapping, so any input decodes to some set of keys).
fn undelta<K: Copy + Default + WrappingSub>(keys: &mut [K]) {
    let mut sum = K::default();
    for key in keys {
        sum = sum.wrapping_add_(*key);
        *key = sum;
    }
}

trait WrappingSub {
    fn wrapping_sub_(self, other: Self) -> Self;
    fn wrapping_add_(self, other: Self) -> Self;
}

macro_rules! wrapping {
    ($($t:ty),*) => {$(
        impl WrappingSub for $t {
            fn wrapping_sub_(self, other: Self) -> Self {
                self.wrapping_sub(other)
            }
            fn wrapping_add_(self, other: Self) -> Self {
                self.wrapping_add(other)
            }
        }
    )*};
}
wrapping!(u32, u64);

/// The state of a `state` entry or the snapshot whose MAC checked.
pub fn state(entry: &Entry) -> Result<crate::store::State, Refused> {
    crate::store::decode_state(&entry.body, "fleet state").map_err(|e| match e {
        StoreError::Corrupt { reason, .. } => Refused::Malformed(format!("state: {reason}")),
        other => Refused::Malformed(other.to_string()),
    })
}

/// Reads an entry from its fields (a stream entry's or the snapshot hash's).
pub fn from_fields<'a>(
    fields: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Result<Entry, Refused> {
    let mut entry = Entry::default();
    let text = |name: &str, v: &[u8]| {
        String::from_utf8(v.to_vec()).map_err(|_| Refused::Malformed(format!("{name} is not text")))
    };
    for (name, value) in fields {
        match name {
            NODE => entry.node = text(NODE, value)?,
            INCARNATION => entry.incarnation = text(INCARNATION, value)?,
            KIND => entry.kind = Kind::parse(value),
            KEY_ID => {
                entry.key_id = text(KEY_ID, value)?
                    .parse()
                    .map_err(|_| Refused::Malformed("key id is not 1..=255".into()))?
            }
            BODY => entry.body = value.to_vec(),
            MAC => entry.mac = value.to_vec(),
            COVERS => entry.covers = text(COVERS, value)?,
            _ => {}
        }
    }
    Ok(entry)
}

/// The fields to write (stream entry or snapshot hash).
pub fn fields(entry: &Entry) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = vec![
        (NODE, entry.node.clone().into_bytes()),
        (INCARNATION, entry.incarnation.clone().into_bytes()),
        (KIND, entry.kind.map_or("", Kind::name).as_bytes().to_vec()),
        (KEY_ID, entry.key_id.to_string().into_bytes()),
        (BODY, entry.body.clone()),
        (MAC, entry.mac.clone()),
    ];
    if !entry.covers.is_empty() {
        out.push((COVERS, entry.covers.clone().into_bytes()));
    }
    out
}

/// A stream id's milliseconds and sequence (`1700000000000-3`), for order and lag.
pub fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        store::{Op, Stamp},
        ticket::Key,
    };

    fn writer(node: &str) -> Writer {
        Writer { node: node.into(), incarnation: "i1".into() }
    }

    fn ring(byte: u8) -> Keyring {
        Keyring::new(vec![Key::new(1, [byte; 16])])
    }

    fn change(node: &str) -> Vec<u8> {
        let stamp = Stamp { hlc: 1 << 40, node: node.into() };
        change_body(&[Stamped { stamp, op: Op::SetMode(crate::Mode::Enforce) }])
    }

    #[test]
    fn a_sealed_entry_opens_and_any_alteration_is_refused() {
        let entry = seal(&ring(7), "edge:fleet", &writer("a"), Kind::Change, "", change("a"));
        assert_eq!(open(&ring(7), "edge:fleet", &entry), Ok(()));
        assert_eq!(changes(&entry).unwrap().len(), 1);
        assert_eq!(open(&ring(8), "edge:fleet", &entry), Err(Refused::BadMac));
        assert_eq!(open(&ring(7), "other:fleet", &entry), Err(Refused::BadMac));
        let mut renamed = entry.clone();
        renamed.node = "b".into();
        assert_eq!(open(&ring(7), "edge:fleet", &renamed), Err(Refused::BadMac));
        let mut reborn = entry.clone();
        reborn.incarnation = "i2".into();
        assert_eq!(open(&ring(7), "edge:fleet", &reborn), Err(Refused::BadMac));
        let mut altered = entry.clone();
        *altered.body.last_mut().unwrap() ^= 1;
        assert_eq!(open(&ring(7), "edge:fleet", &altered), Err(Refused::BadMac));
        let mut rekeyed = entry.clone();
        rekeyed.key_id = 9;
        assert_eq!(open(&ring(7), "edge:fleet", &rekeyed), Err(Refused::UnknownKey(9)));
        let read = from_fields(fields(&entry).iter().map(|(n, v)| (*n, v.as_slice()))).unwrap();
        assert_eq!(read, entry);
    }

    #[test]
    fn visits_travel_as_sorted_distances_and_arrive_as_sent() {
        let batch = crate::store::DayBatch {
            day: 20_000,
            v4: vec![u32::MAX, 7, 0x0a00_0001, 0x0a00_0000],
            v6: vec![u64::MAX, 1 << 40, 3],
        };
        let stamp = Stamp { hlc: 1, node: "a".into() };
        let change = Stamped { stamp, op: Op::Visits(vec![batch.clone()]) };
        let entry = seal(&ring(7), "s", &writer("a"), Kind::Change, "", change_body(&[change]));
        let Op::Visits(back) = &changes(&entry).unwrap()[0].op else { panic!("not visits") };
        let (mut v4, mut v6) = (batch.v4.clone(), batch.v6.clone());
        v4.sort_unstable();
        v6.sort_unstable();
        assert_eq!((&back[0].v4, &back[0].v6), (&v4, &v6));
        // Close addresses cost a byte or two each instead of five.
        let dense = crate::store::DayBatch {
            day: 20_000,
            v4: (0..1000).map(|i| 0x0a00_0000 + i * 3).collect(),
            v6: vec![],
        };
        let op = Op::Visits(vec![dense]);
        let body = change_body(&[Stamped { stamp: Stamp { hlc: 1, node: "a".into() }, op }]);
        assert!(body.len() < 1100, "{} bytes", body.len());
    }

    #[test]
    fn a_node_cannot_pass_off_another_nodes_change() {
        let entry = seal(&ring(7), "edge:fleet", &writer("a"), Kind::Change, "", change("b"));
        assert_eq!(open(&ring(7), "edge:fleet", &entry), Ok(()));
        assert!(matches!(changes(&entry), Err(Refused::WrongNode { .. })));
    }
}
