//! Visitor history and the rolling window.
//!
//! A visitor is an IPv4 address or an IPv6 /64 prefix with the UTC day it was last seen. A
//! visitor last seen on day D is inside a window of N days through day D+N-1 and outside from
//! day D+N (N = 21: D+20 passes, D+21 does not).
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
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
}
