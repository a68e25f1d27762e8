//! Humane units in job files: durations (`90s`, `20m`, `1h30m`) and sizes (`512m`, `2g`).
//!
//! Parsing is strict (a typo is an error, not a surprise) and errors are lowercase, say what was
//! wrong and show a correct value. `format_duration` writes what `parse_duration` reads.

use super::spec::ByteSize;
use std::time::Duration;

/// Duration units, largest first, with their length in milliseconds.
const DURATION_UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

const DURATION_HINT: &str =
    "write a number with a unit (ms, s, m, h, d), like `90s`, `20m` or `1h30m`";

/// Parses `90s`, `20m`, `1h30m`, `2h`, `1d`, `500ms`; a bare integer is seconds.
///
/// Units go from largest to smallest and appear at most once; precision is one millisecond.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty duration: {DURATION_HINT}"));
    }
    if s.starts_with('-') {
        return Err(format!("duration `{s}` is negative: {DURATION_HINT}"));
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s
            .parse()
            .map_err(|_| format!("duration `{s}` is too large: {DURATION_HINT}"))?;
        return Ok(Duration::from_secs(secs));
    }
    let too_large = || format!("duration `{s}` is too large: {DURATION_HINT}");
    let mut rest = s;
    let mut total_ms: u64 = 0;
    // Index into DURATION_UNITS of the previous component, to keep units in order.
    let mut last_unit: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("invalid duration `{s}`: {DURATION_HINT}"));
        }
        let number: u64 = rest[..digits].parse().map_err(|_| too_large())?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = rest[..letters].to_ascii_lowercase();
        rest = &rest[letters..];
        let Some(index) = DURATION_UNITS.iter().position(|(name, _)| *name == unit) else {
            let what = if unit.is_empty() {
                "a number without a unit"
            } else {
                "an unknown unit"
            };
            return Err(format!("invalid duration `{s}` ({what}): {DURATION_HINT}"));
        };
        if last_unit.is_some_and(|last| index <= last) {
            return Err(format!(
                "invalid duration `{s}`: units must go from largest to smallest, each at most once, like `1h30m`"
            ));
        }
        last_unit = Some(index);
        let ms = number
            .checked_mul(DURATION_UNITS[index].1)
            .ok_or_else(too_large)?;
        total_ms = total_ms.checked_add(ms).ok_or_else(too_large)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Writes a duration the way job files do (`30m`, `1h30m`, `1s500ms`, `0s`).
///
/// Sub-millisecond parts are dropped, so the result always parses back with [`parse_duration`].
pub fn format_duration(duration: Duration) -> String {
    let mut remaining = duration.as_millis();
    if remaining == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (name, size) in DURATION_UNITS {
        let size = u128::from(size);
        let count = remaining / size;
        if count > 0 {
            out.push_str(&format!("{count}{name}"));
            remaining %= size;
        }
    }
    out
}

/// Size units (binary: `k` is 1024 bytes), each with its accepted spellings.
const SIZE_UNITS: [(&[&str], u64); 5] = [
    (&["", "b"], 1),
    (&["k", "kb", "kib"], 1 << 10),
    (&["m", "mb", "mib"], 1 << 20),
    (&["g", "gb", "gib"], 1 << 30),
    (&["t", "tb", "tib"], 1 << 40),
];

const SIZE_HINT: &str =
    "write a number with a unit (k, m, g, t; 1k = 1024 bytes), like `512m` or `2g`";

/// Parses `512m`, `2g`, `2G`, `512MiB`, `1.5g`, `100k`; a bare integer is bytes.
///
/// Units are binary (`k` = 1024). A fractional result is rounded down to whole bytes.
pub fn parse_size(text: &str) -> Result<ByteSize, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty size: {SIZE_HINT}"));
    }
    if s.starts_with('-') {
        return Err(format!("size `{s}` is negative: {SIZE_HINT}"));
    }
    let number_len = s
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (number, unit) = s.split_at(number_len);
    let unit = unit.trim_start().to_ascii_lowercase();
    let Some(multiplier) = SIZE_UNITS
        .iter()
        .find(|(names, _)| names.contains(&unit.as_str()))
        .map(|(_, size)| *size)
    else {
        return Err(format!(
            "invalid size `{s}` (unknown unit `{unit}`): {SIZE_HINT}"
        ));
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let well_formed = !whole.is_empty()
        && !fraction.contains('.')
        && (number.len() == whole.len() || !fraction.is_empty());
    if !well_formed {
        return Err(format!("invalid size `{s}`: {SIZE_HINT}"));
    }
    let too_large = || format!("size `{s}` is too large: {SIZE_HINT}");
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let mut bytes = whole
        .checked_mul(u128::from(multiplier))
        .ok_or_else(too_large)?;
    if !fraction.is_empty() {
        // At most 18 fractional digits matter for a u64 number of bytes; more are noise.
        let digits = &fraction[..fraction.len().min(18)];
        let numerator: u128 = digits.parse().map_err(|_| too_large())?;
        let denominator = 10u128.pow(digits.len() as u32);
        bytes += numerator * u128::from(multiplier) / denominator;
    }
    u64::try_from(bytes).map(ByteSize).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn durations_accept_humane_forms() {
        assert_eq!(parse_duration("90s"), Ok(secs(90)));
        assert_eq!(parse_duration("20m"), Ok(secs(1200)));
        assert_eq!(parse_duration("1h30m"), Ok(secs(5400)));
        assert_eq!(parse_duration("2h"), Ok(secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(secs(86_400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2H"), Ok(secs(7200)));
    }

    #[test]
    fn bare_integer_duration_is_seconds() {
        assert_eq!(parse_duration("45"), Ok(secs(45)));
        assert_eq!(parse_duration(" 0 "), Ok(secs(0)));
    }

    #[test]
    fn bad_durations_explain_with_an_example() {
        for bad in [
            "", "  ", "abc", "10x", "1.5h", "h", "30m30m", "30m1h", "1h 30m", "5m3",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("duration"), "{bad}: {err}");
            assert!(err.contains("`1h30m`"), "{bad}: {err}");
            assert_eq!(err, err.to_lowercase(), "{bad}: {err}");
        }
    }

    #[test]
    fn negative_and_overflowing_durations_are_refused() {
        assert!(parse_duration("-5m").unwrap_err().contains("negative"));
        assert!(parse_duration("99999999999999999999")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_duration("999999999999999999d")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn formatted_durations_are_humane() {
        assert_eq!(format_duration(secs(1800)), "30m");
        assert_eq!(format_duration(secs(90)), "1m30s");
        assert_eq!(format_duration(secs(5400)), "1h30m");
        assert_eq!(format_duration(secs(86_400 * 7)), "7d");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn durations_round_trip() {
        let samples = [
            0, 1, 999, 1000, 1500, 60_000, 90_000, 5_400_000, 86_400_000, 90_061_001,
        ];
        for ms in samples {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{ms}ms");
        }
        let big = Duration::from_millis(u64::MAX);
        assert_eq!(parse_duration(&format_duration(big)), Ok(big));
    }

    #[test]
    fn sizes_accept_humane_forms() {
        assert_eq!(parse_size("512m"), Ok(ByteSize(512 << 20)));
        assert_eq!(parse_size("2g"), Ok(ByteSize(2 << 30)));
        assert_eq!(parse_size("2G"), Ok(ByteSize(2 << 30)));
        assert_eq!(parse_size("512MiB"), Ok(ByteSize(512 << 20)));
        assert_eq!(parse_size("512 MB"), Ok(ByteSize(512 << 20)));
        assert_eq!(parse_size("1.5g"), Ok(ByteSize(3 << 29)));
        assert_eq!(parse_size("100k"), Ok(ByteSize(102_400)));
        assert_eq!(parse_size("1t"), Ok(ByteSize(1 << 40)));
        assert_eq!(parse_size("0.5k"), Ok(ByteSize(512)));
    }

    #[test]
    fn bare_integer_size_is_bytes() {
        assert_eq!(parse_size("4096"), Ok(ByteSize(4096)));
        assert_eq!(parse_size("10b"), Ok(ByteSize(10)));
    }

    #[test]
    fn bad_sizes_explain_with_an_example() {
        for bad in [
            "", "g", "12q", "1..5g", "1.g", ".5g", "1.2.3m", "two", "5 gigs",
        ] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains("size"), "{bad}: {err}");
            assert!(err.contains("`512m`"), "{bad}: {err}");
        }
    }

    #[test]
    fn negative_and_overflowing_sizes_are_refused() {
        assert!(parse_size("-1g").unwrap_err().contains("negative"));
        assert!(parse_size("16777216t").unwrap_err().contains("too large"));
        assert!(parse_size("99999999999999999999999999999999999999999")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn sizes_round_trip_through_display() {
        for bytes in [
            0,
            1,
            1023,
            1024,
            1536,
            512 << 20,
            3 << 29,
            1 << 40,
            u64::MAX,
        ] {
            let size = ByteSize(bytes);
            assert_eq!(parse_size(&size.to_string()), Ok(size), "{bytes}");
        }
    }
}
