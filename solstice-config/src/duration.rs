//! Durations, written the same way in every file and variable: a string of numbers with
//! units (`"500ms"`, `"30s"`, `"1.5s"`, `"10m"`, `"1h"`, `"1h30m"`), or a bare integer
//! meaning seconds.
//!
//! Use it on a field as `#[serde(with = "solstice_config::duration")]`; a value it
//! refuses is reported at its file:line:column (or its variable) like any other.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// The units, longest name first so that `ms` is not read as `m`.
const UNITS: &[(&str, f64)] = &[("ms", 0.001), ("h", 3600.0), ("m", 60.0), ("s", 1.0)];

/// Parses `"1h30m"`, `"1.5s"`, `"500ms"`: one or more numbers, each followed by a unit
/// (`h`, `m`, `s`, `ms`).
///
/// # Errors
/// A message saying what is wrong, for the loader to place.
pub fn parse(text: &str) -> Result<Duration, String> {
    let expected = || format!("`{text}` is not a duration like \"30s\", \"1.5s\", \"10m\" or \"1h30m\"");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(expected());
    }
    let mut seconds = 0.0_f64;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(expected)?;
        let number: f64 = rest[..digits].parse().map_err(|_| expected())?;
        rest = &rest[digits..];
        let (unit, factor) = UNITS.iter().find(|(unit, _)| rest.starts_with(unit)).ok_or_else(expected)?;
        rest = &rest[unit.len()..];
        seconds += number * factor;
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| expected())
}

/// Writes `d` the way [`parse`] reads it, in the largest units that fit: `"10m"`,
/// `"1h30m"`, `"1500ms"`.
pub fn format(d: Duration) -> String {
    let millis = d.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    if !millis.is_multiple_of(1000) {
        return format!("{millis}ms");
    }
    let mut seconds = millis / 1000;
    let mut out = String::new();
    for (unit, size) in [("h", 3600), ("m", 60), ("s", 1)] {
        if seconds >= size {
            out.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    out
}

/// Serializes as [`format()`] writes it.
///
/// # Errors
/// The serializer's.
pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*d))
}

/// Deserializes a string with units, or an integer of seconds.
///
/// # Errors
/// A negative number, or a string [`parse`] refuses.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration like \"30s\", \"10m\" or \"1h30m\", or a number of seconds")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v).map(Duration::from_secs).map_err(|_| E::custom(format!("{v} is negative: a duration is at least 0")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_add_up_and_bad_text_is_refused() {
        let cases = [
            ("500ms", 500),
            ("30s", 30_000),
            ("1.5s", 1500),
            ("10m", 600_000),
            ("1h", 3_600_000),
            ("1h30m", 5_400_000),
            ("2m15s", 135_000),
        ];
        for (text, millis) in cases {
            assert_eq!(parse(text), Ok(Duration::from_millis(millis)), "{text}");
        }
        for bad in ["", "30", "s", "10 minutes", "1.2.3s", "-5s", "1d"] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains("is not a duration like"), "{bad}: {err}");
        }
    }

    #[test]
    fn formatting_reads_back() {
        for (millis, text) in [(0, "0s"), (1500, "1500ms"), (600_000, "10m"), (5_400_000, "1h30m"), (3_601_000, "1h1s")] {
            let d = Duration::from_millis(millis);
            assert_eq!(format(d), text);
            assert_eq!(parse(text), Ok(d));
        }
    }
}
