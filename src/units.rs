//! Sizes and durations as people write them in configuration: `25Mi`, `10M`, `1048576`;
//! `30s`, `5m`, `12h`, `5d`. Used by the process configuration and by RelayPolicy.

use std::time::Duration;

/// A byte count: a plain number, or a number with a Kubernetes quantity suffix
/// (`Ki`, `Mi`, `Gi` for powers of 1024; `k`/`K`, `M`, `G` for powers of 1000).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let number: u64 = digits.parse().ok()?;
    let factor: u64 = match suffix {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// A duration: a number followed by `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().ok()?;
    let millis: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(Duration::from_millis(number.checked_mul(millis)?))
}

/// Serde helpers so that configuration structs can hold these as plain numbers.
pub mod serde_size {
    use serde::{Deserialize, Deserializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(n),
            Raw::Text(t) => super::parse_size(&t).ok_or_else(|| {
                D::Error::custom(format!("invalid size {t:?} (e.g. 25Mi, 10M, 1048576)"))
            }),
        }
    }
}

pub mod serde_duration {
    use serde::{Deserialize, Deserializer, de::Error};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).ok_or_else(|| {
            D::Error::custom(format!("invalid duration {text:?} (e.g. 30s, 5m, 12h, 5d)"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (text, want) in [
            ("1048576", Some(1 << 20)),
            ("25Mi", Some(25 << 20)),
            ("10M", Some(10_000_000)),
            ("2Ki", Some(2048)),
            ("1k", Some(1000)),
            ("1Gi", Some(1 << 30)),
            ("", None),
            ("Mi", None),
            ("5 Mi", None),
            ("5MB", None),
            ("99999999999999999999Gi", None),
        ] {
            assert_eq!(parse_size(text), want, "{text:?}");
        }
    }

    #[test]
    fn durations() {
        for (text, want) in [
            ("30s", Some(Duration::from_secs(30))),
            ("5m", Some(Duration::from_secs(300))),
            ("12h", Some(Duration::from_secs(43_200))),
            ("5d", Some(Duration::from_secs(432_000))),
            ("250ms", Some(Duration::from_millis(250))),
            ("30", None),
            ("s", None),
            ("1w", None),
        ] {
            assert_eq!(parse_duration(text), want, "{text:?}");
        }
    }
}
