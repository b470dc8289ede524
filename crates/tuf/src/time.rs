//! TUF's times: `YYYY-MM-DDTHH:MM:SSZ`, UTC, as seconds since the Unix epoch.

use crate::TufError;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `2030-01-01T00:00:00Z` (fractions of a second are allowed and
/// dropped, as python-tuf reads them).
pub fn parse(s: &str) -> Result<i64, TufError> {
    let bad = || TufError::Invalid {
        what: "metadata".into(),
        reason: format!("expires {s:?} is not a UTC time of the form 2030-01-01T00:00:00Z"),
    };
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return Err(bad());
    }
    if b[16] != b':' || *b.last().expect("long") != b'Z' {
        return Err(bad());
    }
    let frac = &s[19..s.len() - 1];
    if !(frac.is_empty()
        || (frac.len() > 1
            && frac.starts_with('.')
            && frac[1..].bytes().all(|c| c.is_ascii_digit())))
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, TufError> {
        let t = &s[r];
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    Ok(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Formats seconds since the epoch as TUF writes them.
pub fn format(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil from days (inverse of days_from_civil).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Now, in seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_forms() {
        for t in [0, 951_782_400, 1_798_761_599, 4_102_444_800] {
            assert_eq!(parse(&format(t)).unwrap(), t, "{}", format(t));
        }
        assert_eq!(format(1_798_761_600), "2027-01-01T00:00:00Z");
        assert_eq!(parse("2027-01-01T00:00:00.123Z").unwrap(), 1_798_761_600);
        for bad in [
            "2027-01-01 00:00:00Z",
            "2027-13-01T00:00:00Z",
            "2027-01-01T00:00:00",
            "x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
