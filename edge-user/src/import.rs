//! Reading visitor files: plain lists, `IP,YYYY-MM-DD` CSV, and nginx/Apache combined access
//! logs. Parsing is streaming (the daemon receives files in chunks) and all or nothing: the
//! first bad line fails the whole file with `file:line: reason`.
use std::{net::IpAddr, path::Path};

use crate::{
    history::{HistoryBuilder, VisitorHistory},
    visitors::{Day, VisitorKey},
};

/// A line of a visitors file that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct ImportError {
    pub file: String,
    pub line: usize,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One IP per line; the day is today.
    Plain,
    /// `IP` or `IP,YYYY-MM-DD` per line.
    Csv,
    /// Combined access log; the day is the request's UTC date.
    Combined,
    /// Guessed from the first line that is not blank or a comment.
    Auto,
}

impl Format {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "plain" => Some(Self::Plain),
            "csv" => Some(Self::Csv),
            "combined" => Some(Self::Combined),
            "auto" | "" => Some(Self::Auto),
            _ => None,
        }
    }

    fn guess(line: &str) -> Self {
        if line.contains(" [") && line.contains('"') {
            Self::Combined
        } else {
            Self::Csv
        }
    }
}

/// Parses a file fed in chunks of any size into a history.
pub struct Importer {
    file: String,
    format: Format,
    today: Day,
    lines: usize,
    partial: Vec<u8>,
    history: HistoryBuilder,
}

impl Importer {
    pub fn new(file: &str, format: Format, today: Day) -> Self {
        Self {
            file: file.into(),
            format,
            today,
            lines: 0,
            partial: Vec::new(),
            history: HistoryBuilder::default(),
        }
    }

    /// Longest line accepted: a combined log line with a long user agent fits; a binary file
    /// fed by mistake does not make the daemon buffer it whole.
    pub const MAX_LINE: usize = 64 * 1024;

    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ImportError> {
        let mut rest = chunk;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(nl);
            rest = &tail[1..];
            if self.partial.is_empty() {
                self.line(line)?;
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(&whole)?;
            }
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > Self::MAX_LINE {
            return Err(
                self.error(self.lines + 1, format!("line longer than {} bytes", Self::MAX_LINE))
            );
        }
        Ok(())
    }

    /// The history read, once the last chunk is in.
    pub fn finish(mut self) -> Result<(VisitorHistory, usize), ImportError> {
        if !self.partial.is_empty() {
            let last = std::mem::take(&mut self.partial);
            self.line(&last)?;
        }
        Ok((self.history.finish(), self.lines))
    }

    fn error(&self, line: usize, reason: String) -> ImportError {
        ImportError { file: self.file.clone(), line, reason }
    }

    fn line(&mut self, bytes: &[u8]) -> Result<(), ImportError> {
        self.lines += 1;
        let number = self.lines;
        // The same refusal whether the line arrived whole or in chunks.
        if bytes.len() > Self::MAX_LINE {
            return Err(self.error(number, format!("line longer than {} bytes", Self::MAX_LINE)));
        }
        let mut text = std::str::from_utf8(bytes)
            .map_err(|_| self.error(number, "not UTF-8 text".into()))?
            .trim_end_matches('\r');
        if number == 1 {
            // A byte-order mark (some editors and exports write one) is not part of line 1,
            // however the file was cut into chunks.
            text = text.strip_prefix('\u{feff}').unwrap_or(text);
        }
        let text = match self.format {
            Format::Combined => text.trim(),
            _ => text.split('#').next().unwrap_or("").trim(),
        };
        if text.is_empty() {
            return Ok(());
        }
        if self.format == Format::Auto {
            self.format = Format::guess(text);
        }
        let (key, day) = match self.format {
            Format::Plain => visitor_key(text).map(|key| (key, self.today)),
            Format::Csv | Format::Auto => parse_csv_line(text, self.today),
            Format::Combined => parse_combined_line(text),
        }
        .map_err(|reason| self.error(number, reason))?;
        if day > self.today {
            return Err(self.error(
                number,
                format!("last-seen day {day} is after today ({}, UTC)", self.today),
            ));
        }
        self.history.push(key, day);
        Ok(())
    }
}

/// Parses text in one go (files, tests).
pub fn parse(
    text: &str,
    file: &str,
    format: Format,
    today: Day,
) -> Result<VisitorHistory, ImportError> {
    let mut importer = Importer::new(file, format, today);
    importer.feed(text.as_bytes())?;
    Ok(importer.finish()?.0)
}

/// Reads a visitors file (CSV or plain).
pub fn load(path: &Path, format: Format, today: Day) -> Result<VisitorHistory, ImportError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ImportError {
        file: file.clone(),
        line: 0,
        reason: format!("cannot read: {e}"),
    })?;
    parse(&text, &file, format, today)
}

type Parsed = Result<(VisitorKey, Day), String>;

/// An IPv4 address, an IPv6 address (its /64) or an IPv6 `/64` prefix.
pub fn visitor_key(text: &str) -> Result<VisitorKey, String> {
    if let Some((addr, len)) = text.split_once('/') {
        return match (addr.parse::<std::net::Ipv6Addr>(), len) {
            (Ok(v6), "64") if v6.to_ipv4_mapped().is_none() => {
                let key = VisitorKey::from(IpAddr::V6(v6));
                if v6.segments()[4..].iter().any(|s| *s != 0) {
                    return Err(format!("`{text}` has host bits set (a /64 ends in ::)"));
                }
                Ok(key)
            }
            _ => Err(format!("`{text}` is not an IP address or an IPv6 /64 prefix")),
        };
    }
    text.parse::<IpAddr>()
        .map(VisitorKey::from)
        .map_err(|_| format!("`{text}` is not an IP address"))
}

fn parse_csv_line(text: &str, today: Day) -> Parsed {
    let mut fields = text.split(',').map(str::trim);
    let key = visitor_key(fields.next().unwrap_or(""))?;
    let day = match fields.next() {
        None | Some("") => today,
        Some(date) => Day::parse(date)?,
    };
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected third field `{extra}` (want IP[,YYYY-MM-DD])"));
    }
    Ok((key, day))
}

/// `203.0.113.5 - - [22/Nov/2026:10:00:00 +0900] "GET / HTTP/1.1" 200 512 "-" "curl"`: the
/// client address is the first field, the day is the timestamp's date in UTC.
fn parse_combined_line(text: &str) -> Parsed {
    let ip = text.split_whitespace().next().unwrap_or("");
    let key = ip
        .parse::<IpAddr>()
        .map(VisitorKey::from)
        .map_err(|_| format!("`{ip}` is not a client IP address"))?;
    let stamp = text
        .split_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(stamp, _)| stamp)
        .ok_or("no [timestamp] (not a combined log line)")?;
    let format = time::macros::format_description!(
        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] [offset_hour sign:mandatory][offset_minute]"
    );
    let at = time::OffsetDateTime::parse(stamp, &format)
        .map_err(|_| format!("`[{stamp}]` is not a dd/Mon/yyyy:HH:MM:SS +zzzz timestamp"))?;
    let days = at.unix_timestamp().div_euclid(86_400);
    let day = u32::try_from(days).map_err(|_| format!("`[{stamp}]` is before 1970"))?;
    Ok((key, Day(day)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> Day {
        Day::parse("2026-11-22").unwrap()
    }

    fn v4(s: &str) -> VisitorKey {
        VisitorKey::V4(s.parse().unwrap())
    }

    #[test]
    fn csv_forms_duplicates_and_comments() {
        let h = parse(
            "# visitors\n192.0.2.1\n192.0.2.1,2026-11-01\n2001:db8::1,2026-11-20\n\
             2001:db8::2 , 2026-11-21  # same /64\n::ffff:192.0.2.9,2026-11-02\n\
             2001:db8:0:7::/64\n\r\n",
            "v.csv",
            Format::Auto,
            today(),
        )
        .unwrap();
        assert_eq!(h.len(), 4);
        assert_eq!(h.last_seen(v4("192.0.2.1")), Some(today()));
        assert_eq!(
            h.last_seen(VisitorKey::V6([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0])),
            Some(Day::parse("2026-11-21").unwrap())
        );
        assert!(h.contains(v4("192.0.2.9")), "a v4-mapped address is the IPv4 visitor");
        assert!(h.contains(VisitorKey::V6([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 7])));
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("192.0.2.1\n192.0.2.300\n", "v.csv", Format::Csv, today()).unwrap_err();
        assert_eq!(e.to_string(), "v.csv:2: `192.0.2.300` is not an IP address");
        let e = parse("192.0.2.1,2026-13-01\n", "v.csv", Format::Csv, today()).unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse("\n192.0.2.1,2026-11-23\n", "v.csv", Format::Csv, today()).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("after today"), "{e}");
        let e = parse("192.0.2.1,2026-11-01,x\n", "v.csv", Format::Csv, today()).unwrap_err();
        assert!(e.reason.contains("third field"));
        let e = parse("192.0.2.1,2026-11-01\n", "v.txt", Format::Plain, today()).unwrap_err();
        assert_eq!(e.to_string(), "v.txt:1: `192.0.2.1,2026-11-01` is not an IP address");
        let e = parse("2001:db8::/48\n", "v", Format::Plain, today()).unwrap_err();
        assert!(e.reason.contains("IPv6 /64"), "{e}");
        let e = parse("2001:db8::1/64\n", "v", Format::Plain, today()).unwrap_err();
        assert!(e.reason.contains("host bits"), "{e}");
        let e = parse("fe80::1%eth0\n", "v", Format::Plain, today()).unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse("ok\n\u{0}\u{ff}", "v", Format::Plain, today()).unwrap_err();
        assert_eq!(e.line, 1);
    }

    #[test]
    fn combined_log_days_are_utc() {
        let log = "203.0.113.5 - - [22/Nov/2026:08:59:59 +0900] \"GET / HTTP/1.1\" 200 512 \"-\" \"curl/8\"\n\
                   2001:db8::9 - alice [21/Nov/2026:23:30:00 -0100] \"GET /a HTTP/2\" 404 0 \"-\" \"x\"\n\
                   203.0.113.5 - - [01/Nov/2026:12:00:00 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"y\"\n";
        let h = parse(log, "access.log", Format::Auto, today()).unwrap();
        // 08:59:59 +09:00 is the previous day in UTC; 23:30 -01:00 is the next.
        assert_eq!(h.last_seen(v4("203.0.113.5")), Some(Day::parse("2026-11-21").unwrap()));
        let v6 = VisitorKey::from("2001:db8::9".parse::<IpAddr>().unwrap());
        assert_eq!(h.last_seen(v6), Some(today()));
        let e = parse(
            "203.0.113.5 - - [22/Nov/2026:08:00:00] \"GET /\"\n",
            "a.log",
            Format::Combined,
            today(),
        )
        .unwrap_err();
        assert!(e.reason.contains("timestamp"), "{e}");
        let e = parse(
            "- - - [22/Nov/2026:08:00:00 +0000] \"GET /\"\n",
            "a.log",
            Format::Combined,
            today(),
        )
        .unwrap_err();
        assert!(e.reason.contains("client IP"), "{e}");
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_line() {
        let h = parse("\u{feff}192.0.2.1,2026-11-01\n192.0.2.2\n", "v.csv", Format::Auto, today())
            .unwrap();
        assert!(h.contains(v4("192.0.2.1")) && h.contains(v4("192.0.2.2")));
        // Found by fuzzing: a mark split across chunks is the same mark.
        let text = "\u{feff} [2.1\n0020\n\n";
        let mut importer = Importer::new("v", Format::Auto, today());
        importer.feed(&text.as_bytes()[..1]).unwrap();
        let e = importer.feed(&text.as_bytes()[1..]).unwrap_err();
        assert_eq!(e.reason, "`[2.1` is not an IP address");
        let mut whole = Importer::new("v", Format::Auto, today());
        assert_eq!(whole.feed(text.as_bytes()).unwrap_err().reason, "`[2.1` is not an IP address");
        // Only at the very start: one in the middle of a file is an error on its line.
        let e = parse("192.0.2.1\n\u{feff}192.0.2.2\n", "v", Format::Plain, today()).unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn chunks_split_anywhere_read_the_same() {
        let text = "192.0.2.1,2026-11-01\n192.0.2.2\n2001:db8::1,2026-11-20\n192.0.2.3";
        let whole = parse(text, "v", Format::Csv, today()).unwrap();
        for size in 1..text.len() {
            let mut importer = Importer::new("v", Format::Csv, today());
            for chunk in text.as_bytes().chunks(size) {
                importer.feed(chunk).unwrap();
            }
            let (h, lines) = importer.finish().unwrap();
            assert_eq!(lines, 4);
            assert_eq!(h.iter().collect::<Vec<_>>(), whole.iter().collect::<Vec<_>>());
        }
        let mut importer = Importer::new("v", Format::Csv, today());
        assert!(importer.feed(&vec![b'1'; Importer::MAX_LINE + 1]).is_err());
    }
}
