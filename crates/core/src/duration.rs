//! Durations as people write them: `250ms`, `30s`, `5m`, `2h`, `1d`.
//!
//! Configuration, the CLI and JSON all spell durations this way; [`serde`] makes
//! config fields accept either such a string or a whole number of milliseconds.

use std::time::Duration;

/// Why a string is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: expected a number and a unit, such as 250ms, 30s, 5m, 2h or 1d"
)]
pub struct InvalidDuration {
    /// The text given, cut to 64 characters.
    pub input: String,
}

/// Parses `250ms`, `30s`, `5m`, `2h` or `1d` (a whole number and one unit).
pub fn parse(input: &str) -> Result<Duration, InvalidDuration> {
    let invalid = || InvalidDuration {
        input: input.chars().take(64).collect(),
    };
    let text = input.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let unit_millis: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(unit_millis)
        .map(Duration::from_millis)
        .ok_or_else(invalid)
}

/// Formats a duration in the largest unit that divides it exactly (`90s`, `2h`, `1500ms`).
pub fn format(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if millis.is_multiple_of(size) {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

/// Serde support for `Duration` fields: writes the [`format()`] string, reads it or a number of
/// milliseconds. Use with `#[serde(with = "floodway_core::duration::serde")]`.
pub mod serde {
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    /// Writes the duration as a string such as `30s`.
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format(*duration))
    }

    /// Reads a string such as `30s` or a number of milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"30s\" or a number of milliseconds")
            }
            fn visit_u64<E: de::Error>(self, millis: u64) -> Result<Duration, E> {
                Ok(Duration::from_millis(millis))
            }
            fn visit_i64<E: de::Error>(self, millis: i64) -> Result<Duration, E> {
                u64::try_from(millis)
                    .map(Duration::from_millis)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
                super::parse(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }

    /// The same for `Option<Duration>`, with `null` for `None`.
    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        /// Writes `null` or the duration string.
        pub fn serialize<S: Serializer>(
            duration: &Option<Duration>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match duration {
                Some(duration) => super::serialize(duration, serializer),
                None => serializer.serialize_none(),
            }
        }

        /// Reads `null`, a duration string or a number of milliseconds.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Duration>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapper(#[serde(with = "super")] Duration);
            Ok(Option::<Wrapper>::deserialize(deserializer)?.map(|Wrapper(d)| d))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse("1d").unwrap(), Duration::from_secs(86_400));
    }

    #[test]
    fn rejects_malformed_durations_by_name() {
        for bad in ["", "s", "10", "10x", "-5s", "1.5s", "99999999999999999999d"] {
            let err = parse(bad).unwrap_err();
            assert!(err.to_string().contains("invalid duration"), "{bad}");
        }
    }

    #[test]
    fn format_round_trips() {
        for millis in [0, 1, 999, 1000, 1500, 60_000, 90_000, 3_600_000, 86_400_000] {
            let d = Duration::from_millis(millis);
            assert_eq!(parse(&format(d)).unwrap(), d, "{}", format(d));
        }
        assert_eq!(format(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn serde_reads_strings_and_millis() {
        #[derive(::serde::Deserialize, ::serde::Serialize)]
        struct Config {
            #[serde(with = "super::serde")]
            lease: Duration,
            #[serde(with = "super::serde::option", default)]
            ttl: Option<Duration>,
        }
        let a: Config = serde_json::from_str(r#"{"lease":"30s","ttl":1500}"#).unwrap();
        assert_eq!(a.lease, Duration::from_secs(30));
        assert_eq!(a.ttl, Some(Duration::from_millis(1500)));
        let b: Config = serde_json::from_str(r#"{"lease":250}"#).unwrap();
        assert_eq!(b.ttl, None);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"lease":"30s","ttl":"1500ms"}"#
        );
        assert!(serde_json::from_str::<Config>(r#"{"lease":"soon"}"#).is_err());
    }
}
