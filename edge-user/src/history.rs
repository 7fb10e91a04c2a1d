//! Visitor history by UTC day: for each day, the set of IPv4 addresses and the set of IPv6 /64
//! prefixes seen that day, as compressed (roaring) bitmaps.
//!
//! Keeping sets per day rather than a last-seen day per visitor makes the day roll a set
//! difference (the visitors of the day that leaves the window, minus everyone seen since) and
//! keeps memory proportional to daily uniques: 20 million IPv4 visitors on one day take about
//! 40 MB. The union of the days in the window is kept up to date so counting and listing cost
//! no recomputation. IPv4 and IPv6 share every line of this code through [`KeySet`].
use std::{borrow::Cow, collections::BTreeMap, io};

use roaring::{RoaringBitmap, RoaringTreemap};

use crate::visitors::{Day, VisitorKey};

/// A set of visitor keys: IPv4 addresses as `u32`, IPv6 /64 prefixes as `u64` (both in
/// network order read as big-endian, so the set's order is address order).
pub trait KeySet: Default + Clone {
    type Key: Copy + Ord + Into<u64>;
    fn insert(&mut self, key: Self::Key) -> bool;
    fn remove(&mut self, key: Self::Key) -> bool;
    fn contains(&self, key: Self::Key) -> bool;
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn union_with(&mut self, other: &Self);
    fn intersection(&self, other: &Self) -> Self;
    fn difference_with(&mut self, other: &Self);
    /// Keys in order, starting at `from` (inclusive).
    fn iter_from(&self, from: Self::Key) -> Box<dyn Iterator<Item = Self::Key> + '_>;
    fn write_to(&self, out: &mut Vec<u8>);
    /// Reads what `write_to` wrote. Not validated: the caller has checked its checksum.
    fn read_from(bytes: &[u8]) -> io::Result<Self>;
    /// A set of keys given in increasing order without repeats.
    fn from_sorted(keys: &[Self::Key]) -> Self;
    /// The union of many sets in one pass (much faster than folding them pairwise).
    fn union_of<'a>(sets: impl Iterator<Item = &'a Self>) -> Self
    where
        Self: 'a;
}

macro_rules! key_set {
    ($set:ty, $key:ty) => {
        impl KeySet for $set {
            type Key = $key;
            fn insert(&mut self, key: $key) -> bool {
                <$set>::insert(self, key)
            }
            fn remove(&mut self, key: $key) -> bool {
                <$set>::remove(self, key)
            }
            fn contains(&self, key: $key) -> bool {
                <$set>::contains(self, key)
            }
            fn len(&self) -> u64 {
                <$set>::len(self)
            }
            fn union_with(&mut self, other: &Self) {
                *self |= other;
            }
            fn intersection(&self, other: &Self) -> Self {
                self & other
            }
            fn difference_with(&mut self, other: &Self) {
                *self -= other;
            }
            fn iter_from(&self, from: $key) -> Box<dyn Iterator<Item = $key> + '_> {
                let mut iter = self.iter();
                iter.advance_to(from);
                Box::new(iter)
            }
            fn write_to(&self, out: &mut Vec<u8>) {
                self.serialize_into(out).expect("writing to a Vec cannot fail");
            }
            fn read_from(bytes: &[u8]) -> io::Result<Self> {
                <$set>::deserialize_unchecked_from(bytes)
            }
            fn from_sorted(keys: &[$key]) -> Self {
                <$set>::from_sorted_iter(keys.iter().copied()).expect("sorted, distinct keys")
            }
            fn union_of<'a>(sets: impl Iterator<Item = &'a Self>) -> Self {
                roaring::MultiOps::union(sets)
            }
        }
    };
}
key_set!(RoaringBitmap, u32);
key_set!(RoaringTreemap, u64);

/// One address family's history: a set per day, and their union.
#[derive(Clone, Debug, Default)]
pub struct Days<S> {
    days: BTreeMap<Day, S>,
    all: S,
}

impl<S: KeySet> Days<S> {
    pub fn record(&mut self, day: Day, key: S::Key) {
        self.days.entry(day).or_default().insert(key);
        self.all.insert(key);
    }

    /// Records many keys seen on `day`. Sorting first matters: a roaring bitmap fed random
    /// keys one by one shifts its container array on nearly every new key.
    pub fn record_all(&mut self, day: Day, keys: &mut Vec<S::Key>) {
        keys.sort_unstable();
        keys.dedup();
        let set = S::from_sorted(keys);
        self.days.entry(day).or_default().union_with(&set);
        self.all.union_with(&set);
    }

    /// Forgets `key` on every day; false if it was not there.
    pub fn remove(&mut self, key: S::Key) -> bool {
        if !self.all.remove(key) {
            return false;
        }
        for set in self.days.values_mut() {
            set.remove(key);
        }
        true
    }

    pub fn contains(&self, key: S::Key) -> bool {
        self.all.contains(key)
    }

    /// Forgets `key` on `through` and every day before it (a fleet removal: a visit on a later
    /// day outlives it); true if `key` is now on no day.
    pub fn remove_through(&mut self, through: Day, key: S::Key) -> bool {
        if !self.all.contains(key) {
            return false;
        }
        for set in self.days.range_mut(..=through).map(|(_, set)| set) {
            set.remove(key);
        }
        let later = (std::ops::Bound::Excluded(through), std::ops::Bound::Unbounded);
        if self.days.range(later).any(|(_, set)| set.contains(key)) {
            return false;
        }
        self.all.remove(key)
    }

    /// Keeps only the keys not removed on `day` or later by `removed` (fleet tombstones).
    pub fn retain_not_removed(keys: &mut Vec<S::Key>, day: Day, removed: &Self) {
        if removed.is_empty() {
            return;
        }
        keys.retain(|key| {
            !removed.all.contains(*key)
                || removed.days.range(day..).all(|(_, set)| !set.contains(*key))
        });
    }

    pub fn len(&self) -> u64 {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Every key on any day.
    pub fn all(&self) -> &S {
        &self.all
    }

    pub fn last_seen(&self, key: S::Key) -> Option<Day> {
        self.days.iter().rev().find(|(_, set)| set.contains(key)).map(|(day, _)| *day)
    }

    /// The keys seen on any day in `first..=last` (borrowed when that is every day held).
    pub fn seen_between(&self, first: Day, last: Day) -> Cow<'_, S> {
        let held = self.days.keys();
        if held.clone().next().is_none_or(|d| *d >= first) && held.last().is_none_or(|d| *d <= last)
        {
            return Cow::Borrowed(&self.all);
        }
        Cow::Owned(S::union_of(self.days.range(first..=last).map(|(_, s)| s)))
    }

    /// Drops the days before `first`; returns the keys that are now gone entirely.
    pub fn drop_before(&mut self, first: Day) -> S {
        let kept = self.days.split_off(&first);
        let dropped = std::mem::replace(&mut self.days, kept);
        if dropped.is_empty() {
            return S::default();
        }
        // Who left: seen on a dropped day and on no day kept. Intersecting the (small) dropped
        // set with each kept day is far cheaper than re-uniting all the kept days.
        let mut gone = S::union_of(dropped.values());
        let seen_since = S::union_of(
            self.days.values().map(|day| day.intersection(&gone)).collect::<Vec<_>>().iter(),
        );
        gone.difference_with(&seen_since);
        self.all.difference_with(&gone);
        gone
    }

    pub fn get(&self, day: Day) -> Option<&S> {
        self.days.get(&day)
    }

    pub fn days(&self) -> impl Iterator<Item = (Day, &S)> {
        self.days.iter().map(|(d, s)| (*d, s))
    }

    /// A history read back from a snapshot: its days and their union (stored beside them,
    /// because computing a 20-million-key union costs more than reading it).
    pub fn from_parts(days: BTreeMap<Day, S>, all: S) -> Self {
        Self { days, all }
    }
}

/// Every visitor, by day.
#[derive(Clone, Debug, Default)]
pub struct VisitorHistory {
    pub v4: Days<RoaringBitmap>,
    pub v6: Days<RoaringTreemap>,
}

/// Builds a history from visits in any order, in bounded batches of sorted keys.
#[derive(Default)]
pub struct HistoryBuilder {
    pending: BTreeMap<Day, (Vec<u32>, Vec<u64>)>,
    count: usize,
    history: VisitorHistory,
}

impl HistoryBuilder {
    const FLUSH_AT: usize = 1 << 20;

    pub fn push(&mut self, key: VisitorKey, day: Day) {
        let (v4, v6) = self.pending.entry(day).or_default();
        match key {
            VisitorKey::V4(addr) => v4.push(u32::from(addr)),
            VisitorKey::V6(prefix) => v6.push(u64::from_be_bytes(prefix)),
        }
        self.count += 1;
        if self.count >= Self::FLUSH_AT {
            self.flush();
        }
    }

    fn flush(&mut self) {
        for (day, (mut v4, mut v6)) in std::mem::take(&mut self.pending) {
            self.history.v4.record_all(day, &mut v4);
            self.history.v6.record_all(day, &mut v6);
        }
        self.count = 0;
    }

    pub fn finish(mut self) -> VisitorHistory {
        self.flush();
        self.history
    }
}

/// Visitors no longer in the history at all (removed, or rolled out of the window): what the
/// kernel maps must drop.
#[derive(Debug, Default)]
pub struct Departed {
    pub v4: RoaringBitmap,
    pub v6: RoaringTreemap,
}

impl Departed {
    pub fn len(&self) -> u64 {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl VisitorHistory {
    /// Records a visit of `ip` (its /64 for IPv6) on `day`.
    pub fn record(&mut self, ip: std::net::IpAddr, day: Day) {
        self.record_key(ip.into(), day);
    }

    pub fn record_key(&mut self, key: VisitorKey, day: Day) {
        match key {
            VisitorKey::V4(addr) => self.v4.record(day, u32::from(addr)),
            VisitorKey::V6(prefix) => self.v6.record(day, u64::from_be_bytes(prefix)),
        }
    }

    pub fn remove(&mut self, key: VisitorKey) -> bool {
        match key {
            VisitorKey::V4(addr) => self.v4.remove(u32::from(addr)),
            VisitorKey::V6(prefix) => self.v6.remove(u64::from_be_bytes(prefix)),
        }
    }

    pub fn contains(&self, key: VisitorKey) -> bool {
        match key {
            VisitorKey::V4(addr) => self.v4.contains(u32::from(addr)),
            VisitorKey::V6(prefix) => self.v6.contains(u64::from_be_bytes(prefix)),
        }
    }

    pub fn last_seen(&self, key: VisitorKey) -> Option<Day> {
        match key {
            VisitorKey::V4(addr) => self.v4.last_seen(u32::from(addr)),
            VisitorKey::V6(prefix) => self.v6.last_seen(u64::from_be_bytes(prefix)),
        }
    }

    /// Distinct visitors (IPv4 addresses plus IPv6 /64s).
    pub fn len(&self) -> u64 {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the days that are outside a window of `window_days` ending on `today`.
    pub fn roll(&mut self, today: Day, window_days: u16) -> Departed {
        self.drop_before(window_start(today, window_days))
    }

    /// Drops the days before `first`; returns the visitors seen on no day kept.
    pub fn drop_before(&mut self, first: Day) -> Departed {
        Departed { v4: self.v4.drop_before(first), v6: self.v6.drop_before(first) }
    }

    /// Forgets visitors on `through` and every day before; returns those now on no day.
    pub fn remove_through(&mut self, through: Day, v4: &[u32], v6: &[u64]) -> Departed {
        let mut gone = Departed::default();
        for addr in v4 {
            if self.v4.remove_through(through, *addr) {
                gone.v4.insert(*addr);
            }
        }
        for prefix in v6 {
            if self.v6.remove_through(through, *prefix) {
                gone.v6.insert(*prefix);
            }
        }
        gone
    }

    /// Forgets visitors on every day; returns those that were there.
    pub fn remove_all(&mut self, v4: &[u32], v6: &[u64]) -> Departed {
        self.remove_through(Day(u32::MAX), v4, v6)
    }

    /// Visitors in order (IPv4 first), starting at `from`, with the day each was last seen.
    pub fn iter_from(
        &self,
        from: Option<VisitorKey>,
    ) -> impl Iterator<Item = (VisitorKey, Day)> + '_ {
        let (v4_from, v6_from) = match from {
            None => (Some(0), 0),
            Some(VisitorKey::V4(a)) => (Some(u32::from(a)), 0),
            Some(VisitorKey::V6(p)) => (None, u64::from_be_bytes(p)),
        };
        let v4 = v4_from.into_iter().flat_map(move |from| {
            self.v4.all().iter_from(from).map(|k| (VisitorKey::V4(k.into()), k))
        });
        let v4 = v4.map(|(key, k)| (key, self.v4.last_seen(k).expect("in the union")));
        let v6 = self.v6.all().iter_from(v6_from).map(|k| {
            (VisitorKey::V6(k.to_be_bytes()), self.v6.last_seen(k).expect("in the union"))
        });
        v4.chain(v6)
    }

    pub fn iter(&self) -> impl Iterator<Item = (VisitorKey, Day)> + '_ {
        self.iter_from(None)
    }
}

/// The first day of a window of `days` ending on `today`.
pub fn window_start(today: Day, days: u16) -> Day {
    Day(today.0.saturating_sub(u32::from(days).saturating_sub(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Day {
        Day::parse(s).unwrap()
    }

    #[test]
    fn roll_expires_only_visitors_not_seen_since() {
        let mut h = VisitorHistory::default();
        let day0 = d("2026-11-01");
        h.record("192.0.2.1".parse().unwrap(), day0);
        h.record("192.0.2.2".parse().unwrap(), day0);
        h.record("192.0.2.2".parse().unwrap(), day0.plus(5));
        h.record("2001:db8::1".parse().unwrap(), day0);
        assert_eq!(h.len(), 3);
        // Day D+20 is still inside a 21-day window: nothing leaves.
        assert!(h.roll(day0.plus(20), 21).is_empty());
        assert_eq!(h.len(), 3);
        // On D+21, the two seen only on D leave; the one seen again on D+5 stays.
        let gone = h.roll(day0.plus(21), 21);
        assert_eq!(
            gone.v4.iter().collect::<Vec<_>>(),
            vec![u32::from(std::net::Ipv4Addr::new(192, 0, 2, 1))]
        );
        assert_eq!(gone.v6.len(), 1);
        assert_eq!(h.len(), 1);
        assert_eq!(h.last_seen(VisitorKey::V4([192, 0, 2, 2].into())), Some(day0.plus(5)));
        assert!(h.roll(day0.plus(25), 21).is_empty());
        assert_eq!(h.roll(day0.plus(26), 21).v4.len(), 1);
        assert!(h.is_empty());
    }

    #[test]
    fn a_window_of_21_days_ending_on_d_plus_20_starts_on_d() {
        let day = d("2026-11-01");
        assert_eq!(window_start(day.plus(20), 21), day, "D+20 still holds D");
        assert_eq!(window_start(day.plus(21), 21), day.plus(1), "D+21 does not");
        assert_eq!(window_start(day, 1), day);
        assert_eq!(window_start(Day(3), 21), Day(0), "no day before 1970");
    }

    #[test]
    fn iteration_is_ordered_and_resumable() {
        let mut h = VisitorHistory::default();
        let day = d("2026-11-20");
        for ip in ["2001:db8:0:2::1", "192.0.2.9", "10.0.0.1", "2001:db8:0:1::5"] {
            h.record(ip.parse().unwrap(), day);
        }
        h.record("10.0.0.1".parse().unwrap(), day.plus(1));
        let all: Vec<_> = h.iter().collect();
        assert_eq!(all.len(), 4);
        assert_eq!(all[0], (VisitorKey::V4([10, 0, 0, 1].into()), day.plus(1)));
        assert_eq!(all[1].0, VisitorKey::V4([192, 0, 2, 9].into()));
        assert_eq!(all[2].0, VisitorKey::V6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 1]));
        let rest: Vec<_> = h.iter_from(Some(all[2].0)).collect();
        assert_eq!(rest, all[2..]);
        assert!(h.remove(all[0].0));
        assert!(!h.remove(all[0].0));
        assert_eq!(h.last_seen(all[0].0), None);
    }
}
