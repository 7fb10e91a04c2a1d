//! The daemon's clock: the system's, or, for tests and drills, days read from a file.
//!
//! `EDGE_CLOCK_FILE=/path` makes the daemon take the date from that file (`YYYY-MM-DD`, read
//! at every use) and the time of day from the system clock, so a test can walk the window
//! forward day by day with real processes. Only the daemon's notion of "today" (window rolls,
//! rule expiry, import dates) moves; the XDP program never reads it.
use std::path::PathBuf;

use crate::visitors::Day;

#[derive(Clone, Debug)]
pub enum Clock {
    System,
    File(PathBuf),
}

pub const CLOCK_FILE_ENV: &str = "EDGE_CLOCK_FILE";

impl Clock {
    pub fn from_env() -> Self {
        match std::env::var_os(CLOCK_FILE_ENV) {
            Some(path) => Self::File(path.into()),
            None => Self::System,
        }
    }

    /// Unix seconds.
    pub fn now(&self) -> u64 {
        let system = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match self.file_day() {
            Some(day) => u64::from(day.0) * 86_400 + system % 86_400,
            None => system,
        }
    }

    pub fn today(&self) -> Day {
        Day((self.now() / 86_400) as u32)
    }

    /// The file's day; an unreadable file falls back to the system clock (and says so once).
    fn file_day(&self) -> Option<Day> {
        let Self::File(path) = self else { return None };
        let text = std::fs::read_to_string(path);
        match text.as_deref().map(|t| Day::parse(t.trim())) {
            Ok(Ok(day)) => Some(day),
            _ => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(
                        "{CLOCK_FILE_ENV}={} does not hold a YYYY-MM-DD date; \
                         using the system clock",
                        path.display()
                    )
                });
                None
            }
        }
    }
}
