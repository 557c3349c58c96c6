//! Durations as people write them in definitions: `500ms`, `30s`, `1m`, `1h30m`, `24h`, `7d`.
//!
//! A bare number is rejected on purpose: `timeout: 30` could mean seconds or milliseconds,
//! and a definition is easier to review when the unit is on the page.

use std::fmt;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative span of time written with units, e.g. `"1m30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub StdDuration);

impl Duration {
    /// The wrapped standard duration.
    pub fn get(self) -> StdDuration {
        self.0
    }

    /// Convenience constructor.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(StdDuration::from_secs(secs))
    }
}

/// Why a duration string was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing to parse.
    #[error("empty duration; write it with a unit, like `30s`")]
    Empty,
    /// A number with no unit after it.
    #[error("`{0}` has no unit; write it like `30s`, `5m` or `500ms`")]
    MissingUnit(String),
    /// A unit that is not one of `ms`, `s`, `m`, `h`, `d`.
    #[error("`{unit}` in `{input}` is not a unit; use ms, s, m, h or d")]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The offending unit.
        unit: String,
    },
    /// Something that is neither a digit nor a unit.
    #[error("`{0}` is not a duration; write it like `30s`, `1m30s` or `24h`")]
    Malformed(String),
    /// Larger than any duration we would honour.
    #[error("`{0}` is too long")]
    Overflow(String),
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let s = input.trim();
        if s.is_empty() {
            return Err(DurationError::Empty);
        }
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut total_ms: u128 = 0;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if start == i {
                return Err(DurationError::Malformed(input.to_owned()));
            }
            let number: u128 = s[start..i]
                .parse()
                .map_err(|_| DurationError::Overflow(input.to_owned()))?;
            let unit_start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let unit = &s[unit_start..i];
            let factor: u128 = match unit {
                "" if i == bytes.len() => return Err(DurationError::MissingUnit(input.to_owned())),
                "" => return Err(DurationError::Malformed(input.to_owned())),
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                other => {
                    return Err(DurationError::UnknownUnit {
                        input: input.to_owned(),
                        unit: other.to_owned(),
                    });
                }
            };
            total_ms = number
                .checked_mul(factor)
                .and_then(|v| total_ms.checked_add(v))
                .filter(|v| *v <= u128::from(u64::MAX))
                .ok_or_else(|| DurationError::Overflow(input.to_owned()))?;
        }
        let ms = u64::try_from(total_ms).map_err(|_| DurationError::Overflow(input.to_owned()))?;
        Ok(Duration(StdDuration::from_millis(ms)))
    }
}

impl fmt::Display for Duration {
    /// Formats in the largest units that divide exactly: `90s` → `1m30s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        if ms > 0 {
            write!(f, "{ms}ms")?;
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, like \"30s\", \"5m\" or \"1h30m\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(DurationError::MissingUnit(v.to_string())))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(DurationError::MissingUnit(v.to_string())))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^\\s*([0-9]+(ms|s|m|h|d))+\\s*$",
            "description": "A duration with units, e.g. `500ms`, `30s`, `1m30s`, `24h`, `7d`.",
            "examples": ["30s", "5m", "1h30m"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compound_durations_parse() {
        let d: Duration = "1h30m15s250ms".parse().unwrap();
        assert_eq!(d.0, StdDuration::from_millis(5_415_250));
        assert_eq!(d.to_string(), "1h30m15s250ms");
    }

    #[test]
    fn bare_numbers_and_unknown_units_are_rejected() {
        assert_eq!(
            "30".parse::<Duration>(),
            Err(DurationError::MissingUnit("30".into()))
        );
        assert!(matches!(
            "3 weeks".parse::<Duration>(),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            "3w".parse::<Duration>(),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            "99999999999999999999999d".parse::<Duration>(),
            Err(DurationError::Overflow(_))
        ));
    }
}
