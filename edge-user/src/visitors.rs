//! Visitor history and the rolling window.
//!
//! A visitor is an IPv4 address or an IPv6 /64 prefix with the UTC day it was last seen. A
//! visitor last seen on day D is inside a window of N days through day D+N-1 and outside from
//! day D+N (N = 21: D+20 passes, D+21 does not).
use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, Ipv4Addr},
    path::Path,
};

/// A UTC calendar day, counted from 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub u32);

const UNIX_EPOCH_JULIAN: i32 = 2_440_588;

impl Day {
    pub fn today_utc() -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self((secs / 86_400) as u32)
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        let date = time::Date::parse(s, &format)
            .map_err(|_| format!("`{s}` is not a date in YYYY-MM-DD form"))?;
        let days = date.to_julian_day() - UNIX_EPOCH_JULIAN;
        u32::try_from(days).map(Self).map_err(|_| format!("`{s}` is before 1970-01-01"))
    }

    pub fn plus(self, days: u32) -> Self {
        Self(self.0 + days)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let date = time::Date::from_julian_day(self.0 as i32 + UNIX_EPOCH_JULIAN)
            .map_err(|_| fmt::Error)?;
        write!(f, "{date}")
    }
}

/// Whether a visitor last seen on `last_seen` passes on `today` with a window of `days`.
pub fn in_window(last_seen: Day, today: Day, days: u16) -> bool {
    last_seen <= today && today.0 - last_seen.0 < u32::from(days)
}

/// The key a visitor is stored under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VisitorKey {
    V4(Ipv4Addr),
    /// The /64 prefix, network order.
    V6([u8; 8]),
}

impl From<IpAddr> for VisitorKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4),
            // An IPv4-mapped IPv6 address is the IPv4 visitor it names.
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4),
                None => {
                    let mut prefix = [0; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    Self::V6(prefix)
                }
            },
        }
    }
}

/// Visitors and the day each was last seen.
#[derive(Clone, Debug, Default)]
pub struct VisitorHistory {
    last_seen: HashMap<VisitorKey, Day>,
}

/// A line of a visitors file that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct ImportError {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

impl VisitorHistory {
    /// Records a visit; an older day never overwrites a newer one.
    pub fn record(&mut self, ip: IpAddr, day: Day) {
        let seen = self.last_seen.entry(ip.into()).or_insert(day);
        *seen = (*seen).max(day);
    }

    pub fn len(&self) -> usize {
        self.last_seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last_seen.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (VisitorKey, Day)> + '_ {
        self.last_seen.iter().map(|(k, d)| (*k, *d))
    }

    /// Reads a visitors file: one `IP` or `IP,YYYY-MM-DD` per line (the day defaults to
    /// `today`); blank lines and `#` comments are skipped. All or nothing: the first bad line
    /// fails the whole file.
    pub fn load_csv(path: &Path, today: Day) -> Result<Self, ImportError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ImportError {
            file: file.clone(),
            line: 0,
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse_csv(&text, &file, today)
    }

    pub fn parse_csv(text: &str, file: &str, today: Day) -> Result<Self, ImportError> {
        let mut history = Self::default();
        for (index, raw) in text.lines().enumerate() {
            let fail =
                |reason: String| ImportError { file: file.to_string(), line: index + 1, reason };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut fields = line.split(',').map(str::trim);
            let ip_field = fields.next().unwrap_or("");
            let ip: IpAddr =
                ip_field.parse().map_err(|_| fail(format!("`{ip_field}` is not an IP address")))?;
            let day = match fields.next() {
                None | Some("") => today,
                Some(date) => Day::parse(date).map_err(fail)?,
            };
            if let Some(extra) = fields.next() {
                return Err(fail(format!(
                    "unexpected third field `{extra}` (want IP[,YYYY-MM-DD])"
                )));
            }
            if day > today {
                return Err(fail(format!("last-seen day {day} is after today ({today}, UTC)")));
            }
            history.record(ip, day);
        }
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_boundary_is_d_plus_20_for_21_days() {
        let d = Day::parse("2026-11-01").unwrap();
        assert!(in_window(d, d, 21));
        assert!(in_window(d, d.plus(20), 21));
        assert!(!in_window(d, d.plus(21), 21));
        assert!(!in_window(d.plus(1), d, 21), "a day in the future is not in the window");
        assert!(in_window(d, d, 1) && !in_window(d, d.plus(1), 1));
    }

    #[test]
    fn days_round_trip() {
        assert_eq!(Day::parse("1970-01-01").unwrap(), Day(0));
        assert_eq!(Day::parse("2026-11-22").unwrap().to_string(), "2026-11-22");
        assert!(Day::parse("2026-02-30").is_err());
        assert!(Day::parse("1969-12-31").is_err());
    }

    #[test]
    fn csv_forms_duplicates_and_comments() {
        let today = Day::parse("2026-11-22").unwrap();
        let h = VisitorHistory::parse_csv(
            "# visitors\n192.0.2.1\n192.0.2.1,2026-11-01\n2001:db8::1,2026-11-20\n\
             2001:db8::2 , 2026-11-21  # same /64\n::ffff:192.0.2.9,2026-11-02\n\n",
            "v.csv",
            today,
        )
        .unwrap();
        assert_eq!(h.len(), 3);
        let get = |k| h.iter().find(|(key, _)| *key == k).map(|(_, d)| d);
        assert_eq!(get(VisitorKey::V4("192.0.2.1".parse().unwrap())), Some(today));
        assert_eq!(
            get(VisitorKey::V6([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0])),
            Some(Day::parse("2026-11-21").unwrap())
        );
        assert!(get(VisitorKey::V4("192.0.2.9".parse().unwrap())).is_some());
    }

    #[test]
    fn csv_errors_name_the_line() {
        let today = Day::parse("2026-11-22").unwrap();
        let e = VisitorHistory::parse_csv("192.0.2.1\n192.0.2.300\n", "v.csv", today).unwrap_err();
        assert_eq!(e.to_string(), "v.csv:2: `192.0.2.300` is not an IP address");
        let e = VisitorHistory::parse_csv("192.0.2.1,2026-13-01\n", "v.csv", today).unwrap_err();
        assert_eq!(e.line, 1);
        let e = VisitorHistory::parse_csv("\n192.0.2.1,2026-11-23\n", "v.csv", today).unwrap_err();
        assert!(e.reason.contains("after today"), "{e}");
        let e = VisitorHistory::parse_csv("192.0.2.1,2026-11-01,x\n", "v.csv", today).unwrap_err();
        assert!(e.reason.contains("third field"));
    }
}
