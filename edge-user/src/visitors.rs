//! Visitor history and the rolling window.
//!
//! A visitor is an IPv4 address or an IPv6 /64 prefix with the UTC day it was last seen. A
//! visitor last seen on day D is inside a window of N days through day D+N-1 and outside from
//! day D+N (N = 21: D+20 passes, D+21 does not).
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
};

use edge_common::keys::{v4_mapped, Addr};

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

impl VisitorKey {
    /// The key of the `admitted` map: the v4-mapped IPv4 address, or the IPv6 /64 followed by
    /// eight zero bytes.
    pub fn admission_key(self) -> Addr {
        match self {
            Self::V4(v4) => v4_mapped(v4.octets()),
            Self::V6(prefix) => {
                let mut key = [0; 16];
                key[..8].copy_from_slice(&prefix);
                key
            }
        }
    }
}

/// The `admitted` key of a source: its IPv4 address, or its IPv6 /64.
pub fn admission_key(ip: IpAddr) -> Addr {
    VisitorKey::from(ip).admission_key()
}

/// How a visitor key is written in answers: `192.0.2.1` or `2001:db8::/64`.
pub fn display_key(key: VisitorKey) -> String {
    match key {
        VisitorKey::V4(a) => a.to_string(),
        VisitorKey::V6(p) => {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&p);
            format!("{}/64", IpAddr::from(bytes))
        }
    }
}

/// A 16-byte address as users write it: IPv4 for a v4-mapped one.
pub fn plain_ip(addr: &Addr) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(*addr);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

/// The visitor an admission key stands for (an IPv4 address or an IPv6 /64).
pub fn admission_visitor(key: &Addr) -> VisitorKey {
    VisitorKey::from(IpAddr::from(*key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admissions_key_ipv6_by_its_64() {
        let a = admission_key("2001:db8:1:2::1".parse().unwrap());
        let b = admission_key("2001:db8:1:2:ffff::9".parse().unwrap());
        assert_eq!(a, b);
        assert_eq!(admission_key("192.0.2.1".parse().unwrap()), v4_mapped([192, 0, 2, 1]));
        assert_eq!(admission_key("::ffff:192.0.2.1".parse().unwrap()), v4_mapped([192, 0, 2, 1]));
        assert_eq!(admission_visitor(&a), VisitorKey::V6([0x20, 1, 0xd, 0xb8, 0, 1, 0, 2]));
    }

    #[test]
    fn days_round_trip() {
        assert_eq!(Day::parse("1970-01-01").unwrap(), Day(0));
        assert_eq!(Day::parse("2026-11-22").unwrap().to_string(), "2026-11-22");
        assert!(Day::parse("2026-02-30").is_err());
        assert!(Day::parse("1969-12-31").is_err());
    }
}
