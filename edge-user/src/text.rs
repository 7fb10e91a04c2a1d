//! Values as operators write and read them: times (`2026-11-22T10:00:00Z`), durations
//! (`90s`, `30m`, `12h`, `7d`) and free text shown on one line.

/// The longest duration a command takes: ten years.
pub const MAX_DURATION_S: u64 = 3650 * 86_400;

/// Unix seconds as `2026-11-22T10:00:00Z`.
pub fn utc(at: u64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    i64::try_from(at)
        .ok()
        .and_then(|at| time::OffsetDateTime::from_unix_timestamp(at).ok())
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("unix {at}"))
}

/// `90s`, `30m`, `12h`, `7d` in seconds, from 1 s to 3650 days.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "" => return Err(format!("`{text}` has no unit: write it like 90s, 30m, 12h or 7d")),
        _ => return Err(format!("`{text}`: the unit must be s, m, h or d")),
    };
    if number.is_empty() {
        return Err(format!("`{text}` is not a duration like 30m"));
    }
    let out_of_range = || format!("`{text}` is outside 1s..=3650d");
    let n: u64 = number.parse().map_err(|_| out_of_range())?;
    n.checked_mul(scale).filter(|s| (1..=MAX_DURATION_S).contains(s)).ok_or_else(out_of_range)
}

/// `text` with control characters escaped (`\u{1b}`), so what a client stored cannot move a
/// terminal's cursor or forge a line of output.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_within_their_range() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("7d"), Ok(7 * 86_400));
        assert_eq!(parse_duration("3650d"), Ok(MAX_DURATION_S));
        for bad in ["0s", "3651d", "213503982334602d", "99999999999999999999999s"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("outside 1s..=3650d"), "{bad}: {e}");
        }
        assert!(parse_duration("7w").unwrap_err().contains("unit"));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("12").unwrap_err().contains("no unit"));
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(printable("abuse \u{1b}[2J\nfake"), "abuse \\u{1b}[2J\\nfake");
        assert_eq!(printable("plain"), "plain");
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(utc(1_798_761_600), "2027-01-01T00:00:00Z");
        assert_eq!(utc(u64::MAX), format!("unix {}", u64::MAX));
    }
}
