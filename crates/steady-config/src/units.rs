//! Units written in `steady.yaml`: durations (`250ms`, `5s`, `1m30s`, `30d`)
//! and byte sizes (`65536`, `64KiB`, `10MiB`, `64KB`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Parses a duration such as `250ms`, `5s`, `1m`, `2h`, `30d` or `1m30s`.
///
/// A bare number is rejected: `5` could mean seconds or milliseconds, so the
/// error asks for a unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration; write a number with a unit, like `5s` or `250ms`".into());
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bare_number_hint(trimmed));
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        format!(
            "`{trimmed}` is not a duration ({e}); write a number with a unit: \
             `ms`, `s`, `m`, `h` or `d`, like `250ms`, `5s` or `1m30s`"
        )
    })
}

fn bare_number_hint(number: &str) -> String {
    format!(
        "`{number}` has no unit; write `{number}s` for seconds or `{number}ms` for milliseconds"
    )
}

/// Formats a duration the way the config accepts it, for example `1m 30s`.
pub fn format_duration(duration: Duration) -> String {
    if duration.is_zero() {
        return "0s".into();
    }
    humantime::format_duration(duration).to_string()
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration with a unit, like `250ms`, `5s` or `1m`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Err(E::custom(bare_number_hint(&v.to_string())))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        if v < 0 {
            return Err(E::custom(format!(
                "`{v}` is negative; a duration is at least `0s`"
            )));
        }
        Err(E::custom(bare_number_hint(&v.to_string())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(E::custom(format!(
            "`{v}` has no unit; write a whole number with a unit, like `1500ms` for 1.5 seconds"
        )))
    }
}

/// Deserializes a [`Duration`] from a string with a unit (serde `deserialize_with`).
pub fn de_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

/// Deserializes a list of [`Duration`]s (serde `deserialize_with`).
pub fn de_durations<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
    #[derive(serde::Deserialize)]
    struct One(#[serde(deserialize_with = "de_duration")] Duration);
    let list = <Vec<One> as serde::Deserialize>::deserialize(deserializer)?;
    Ok(list.into_iter().map(|One(d)| d).collect())
}

/// Deserializes an optional [`Duration`]; `null` is `None` (serde `deserialize_with`).
pub fn de_opt_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    struct OptVisitor;

    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<Duration>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration with a unit, like `250ms`, `5s` or `1m`, or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            de_duration(d).map(Some)
        }
    }

    deserializer.deserialize_option(OptVisitor)
}

/// A number of bytes, written as `65536`, `64KiB`, `10MiB`, `1GiB` (binary,
/// powers of 1024) or `64KB`, `64kb`, `10MB` (decimal, powers of 1000).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

/// Multipliers by suffix, matched case-insensitively; `i` marks binary units.
const UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let number = number.replace('_', "");
        let unit = unit.trim();
        if number.is_empty() {
            return Err(format!(
                "`{trimmed}` is not a size; write a number with an optional unit, like `65536`, `64KiB` or `10MB`"
            ));
        }
        let lower = unit.to_ascii_lowercase();
        let Some(&(_, multiplier)) = UNITS.iter().find(|(name, _)| *name == lower) else {
            let hint = match lower.as_str() {
                "k" | "m" | "g" | "t" => format!(
                    "; write `{n}{u}iB` for powers of 1024 or `{n}{u}B` for powers of 1000",
                    n = number,
                    u = lower.to_ascii_uppercase()
                ),
                _ => String::from(
                    "; units are B, KiB, MiB, GiB, TiB (1024) and KB, MB, GB, TB (1000)",
                ),
            };
            return Err(format!("`{trimmed}` has an unknown unit `{unit}`{hint}"));
        };
        let too_big = || format!("`{trimmed}` is too large");
        let (whole, fraction) = number.split_once('.').unwrap_or((&number, ""));
        if whole.is_empty()
            || fraction.contains('.')
            || (number.contains('.') && fraction.is_empty())
        {
            return Err(format!("`{trimmed}` is not a number"));
        }
        let whole: u128 = whole.parse().map_err(|_| too_big())?;
        let mut bytes = whole
            .checked_mul(u128::from(multiplier))
            .ok_or_else(too_big)?;
        if !fraction.is_empty() {
            // Exact decimal arithmetic; more than 18 digits cannot matter for a u64.
            let digits = &fraction[..fraction.len().min(18)];
            let numerator: u128 = digits
                .parse()
                .map_err(|_| format!("`{trimmed}` is not a number"))?;
            let denominator = 10u128.pow(digits.len() as u32);
            bytes += numerator * u128::from(multiplier) / denominator;
        }
        u64::try_from(bytes).map(ByteSize).map_err(|_| too_big())
    }
}

impl fmt::Display for ByteSize {
    /// Writes the largest unit that divides the size exactly, binary first,
    /// so that the output parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        const BINARY: &[(&str, u64)] = &[
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        const DECIMAL: &[(&str, u64)] = &[
            ("TB", 1_000_000_000_000),
            ("GB", 1_000_000_000),
            ("MB", 1_000_000),
            ("KB", 1_000),
        ];
        if self.0 != 0 {
            for table in [BINARY, DECIMAL] {
                for &(name, size) in table {
                    if self.0.is_multiple_of(size) {
                        return write!(f, "{}{name}", self.0 / size);
                    }
                }
            }
        }
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size, like `65536`, `64KiB` or `10MB`")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("`{v}` is negative; a size is at least `0`")))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ByteSize, E> {
                Err(E::custom(format!(
                    "`{v}` is not a whole number of bytes; write a size like `64KiB` or `10MB`"
                )))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units() {
        let cases = [
            ("250ms", Duration::from_millis(250)),
            ("5s", Duration::from_secs(5)),
            ("1m", Duration::from_secs(60)),
            ("2h", Duration::from_secs(7200)),
            ("30d", Duration::from_secs(30 * 86400)),
            ("1m30s", Duration::from_secs(90)),
            ("1m 30s", Duration::from_secs(90)),
            ("0s", Duration::ZERO),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bare_number_asks_for_a_unit() {
        let err = parse_duration("5").unwrap_err();
        assert!(err.contains("no unit") && err.contains("`5s`"), "{err}");
    }

    #[test]
    fn bad_duration_reads_well() {
        let err = parse_duration("5 parsecs").unwrap_err();
        assert!(err.contains("`5 parsecs` is not a duration"), "{err}");
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn sizes() {
        let cases = [
            ("65536", 65536),
            ("64KiB", 65536),
            ("64kib", 65536),
            ("10MiB", 10 << 20),
            ("1GiB", 1 << 30),
            ("64kb", 64_000),
            ("64KB", 64_000),
            ("1.5MiB", 3 << 19),
            ("0", 0),
            ("12 B", 12),
            ("1_000", 1000),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(want)), "{text}");
        }
    }

    #[test]
    fn size_errors_read_well() {
        let err = "64K".parse::<ByteSize>().unwrap_err();
        assert!(err.contains("`64KiB`") && err.contains("`64KB`"), "{err}");
        let err = "10 furlongs".parse::<ByteSize>().unwrap_err();
        assert!(err.contains("unknown unit `furlongs`"), "{err}");
        let err = "99999999999TiB".parse::<ByteSize>().unwrap_err();
        assert!(err.contains("too large"), "{err}");
        assert!("KiB".parse::<ByteSize>().is_err());
        assert!("1.2.3KiB".parse::<ByteSize>().is_err());
        assert!("1.KiB".parse::<ByteSize>().is_err());
        assert!("".parse::<ByteSize>().is_err());
        assert!("-1".parse::<ByteSize>().is_err());
    }

    #[test]
    fn size_display_round_trips() {
        for n in [
            0u64,
            1,
            1000,
            1024,
            65536,
            64_000,
            10 << 20,
            1 << 30,
            1536,
            12345,
            u64::MAX,
        ] {
            let shown = ByteSize(n).to_string();
            assert_eq!(shown.parse::<ByteSize>(), Ok(ByteSize(n)), "{shown}");
        }
        assert_eq!(ByteSize(65536).to_string(), "64KiB");
        assert_eq!(ByteSize(64_000).to_string(), "64KB");
        assert_eq!(ByteSize(12345).to_string(), "12345");
    }
}
