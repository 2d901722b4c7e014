//! Sizes and durations as people write them in configuration: `25Mi`, `10M`, `1048576`;
//! `30s`, `5m`, `12h`, `5d`. Used by the process configuration and by RelayPolicy.

use std::time::Duration;

/// A byte count: a plain number, or a Kubernetes quantity with a decimal (`k`, `M`, `G`,
/// `T`, `P`, `E`) or binary (`Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei`) suffix. Fractions are
/// refused rather than rounded.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "{text:?} is not a quantity like 1048576, 10M or 25Mi (suffixes k M G T P E, Ki Mi Gi Ti Pi Ei)"
        )
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let factor: u64 = match suffix {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        _ => return Err(bad()),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A duration: one or more `<number><unit>` with units `ms`, `s`, `m`, `h`, `d`, `w`, as in
/// `250ms`, `30s`, `5m`, `12h`, `5d` or `1d12h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 250ms, 30s, 5m, 12h, 5d or 1d12h");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let number: u64 = rest[..split].parse().map_err(|_| bad())?;
        let unit_len = rest[split..]
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len() - split);
        let millis: u64 = match &rest[split..split + unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return Err(bad()),
        };
        let part = number.checked_mul(millis).ok_or_else(bad)?;
        total = total
            .checked_add(Duration::from_millis(part))
            .ok_or_else(bad)?;
        rest = &rest[split + unit_len..];
    }
    Ok(total)
}

/// Serde helpers so that configuration structs can hold these as plain numbers.
/// The CRD schema of a size written either way (`1048576` or `25Mi`): an int-or-string
/// as Kubernetes writes quantities. For `#[schemars(with = ...)]` on fields that read
/// through [`serde_size`]; `policy::model::Quantity` says the same for its own type.
pub struct IntOrString;

impl schemars::JsonSchema for IntOrString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IntOrString".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
        })
    }
}

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
            Raw::Text(t) => super::parse_size(&t).map_err(D::Error::custom),
        }
    }

    /// For a size that has a computed default when left out (`#[serde(default)]`).
    pub fn deserialize_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        deserialize(d).map(Some)
    }
}

pub mod serde_duration {
    use serde::{Deserialize, Deserializer, de::Error};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(D::Error::custom)
    }

    pub fn deserialize_option<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        deserialize(d).map(Some)
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
            ("1.5Mi", None),
            ("99999999999999999999Gi", None),
            ("20Ei", None),
        ] {
            assert_eq!(parse_size(text).ok(), want, "{text:?}");
        }
    }

    #[test]
    fn durations() {
        for (text, want) in [
            ("30s", Some(30_000)),
            ("5m", Some(300_000)),
            ("12h", Some(43_200_000)),
            ("5d", Some(432_000_000)),
            ("1w", Some(604_800_000)),
            ("1d12h", Some(129_600_000)),
            ("250ms", Some(250)),
            ("1s500ms", Some(1_500)),
            ("30", None),
            ("s", None),
            ("5x", None),
            ("5 m", None),
        ] {
            let got = parse_duration(text).ok().map(|d| d.as_millis() as u64);
            assert_eq!(got, want, "{text:?}");
        }
    }
}
