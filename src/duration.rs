//! Human-readable durations, the one format every duration key of the configuration uses:
//! `"500ms"`, `"10s"`, `"40m"`, `"6h"`, `"1d"`, or several parts such as `"1h30m"`.
//!
//! One format for every key means an operator never has to remember whether a key counts in
//! milliseconds, seconds or minutes, and a unit is always written next to the number.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Why a duration could not be read; the message shows the accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a duration: {reason} (write e.g. \"500ms\", \"10s\", \"40m\", \"6h\", \"1d\" or \"1h30m\")")]
pub struct DurationError {
    text: String,
    reason: &'static str,
}

/// Reads a duration such as `"10s"` or `"1h30m"`.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let error = |reason| DurationError {
        text: text.to_owned(),
        reason,
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(error("it is empty"));
    }
    let mut total = Duration::ZERO;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(error("each part must start with a whole number"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| error("the number is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            "" => return Err(error("a unit (ms, s, m, h or d) must follow the number")),
            _ => return Err(error("the unit must be one of ms, s, m, h, d")),
        };
        rest = &rest[unit_len..];
        let part = u32::try_from(number)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .ok_or_else(|| error("the number is too large"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| error("the number is too large"))?;
    }
    Ok(total)
}

/// Writes a duration in the form [`parse`] reads, with the largest units that fit exactly.
pub fn format(duration: Duration) -> String {
    const UNITS: [(u128, &str); 5] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
        (1, "ms"),
    ];
    let mut millis = duration.as_millis();
    if millis == 0 {
        return "0s".into();
    }
    let mut text = String::new();
    for (size, unit) in UNITS {
        if millis >= size {
            text.push_str(&format!("{}{unit}", millis / size));
            millis %= size;
        }
    }
    text
}

/// `#[serde(deserialize_with = "crate::duration::deserialize")]` for a `Duration` field.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// As [`deserialize`], for an `Option<Duration>` field (use with `#[serde(default)]`).
pub fn deserialize_option<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(|text| parse(&text).map_err(serde::de::Error::custom))
        .transpose()
}

/// Serializes a `Duration` in the form [`parse`] reads.
pub fn serialize<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_and_combinations_read() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("40m"), Ok(Duration::from_secs(2400)));
        assert_eq!(parse("6h"), Ok(Duration::from_secs(21_600)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn numbers_without_units_and_unknown_units_are_refused_with_the_form() {
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "10 s",
            "10sec",
            "-1s",
            "1y",
            "99999999999h",
        ] {
            let error = parse(bad).expect_err(bad).to_string();
            assert!(error.contains("\"40m\""), "{bad}: {error}");
        }
    }

    #[test]
    fn format_round_trips() {
        for text in ["500ms", "10s", "40m", "6h", "1d", "1h30m", "1m1s1ms"] {
            assert_eq!(format(parse(text).unwrap()), text);
        }
        assert_eq!(format(Duration::ZERO), "0s");
    }
}
