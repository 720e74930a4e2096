//! Decimals on the wire are strings (`"250.00"`), never JSON numbers: a number would pass
//! through a float in most JSON libraries. A JSON number where a decimal belongs is an error.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serializer};

/// A decimal on the wire, for `#[serde(with = "crate::decimal::DecimalString")]` on a `Decimal`
/// field: one attribute gives serde the string form and schemars its schema (schemars reads
/// serde's `with` as the type to describe the field by).
pub struct DecimalString;

impl schemars::JsonSchema for DecimalString {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DecimalString".into()
    }

    fn json_schema(_generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^-?[0-9]+(\\.[0-9]+)?$",
            "description": "A decimal as a string, e.g. \"250.00\"; never a JSON number."
        })
    }
}

impl DecimalString {
    /// Writes the decimal as a string.
    pub fn serialize<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.to_string())
    }

    /// Accepts only a JSON string holding a plain decimal (no exponent, no spaces).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
        deserializer.deserialize_any(DecimalVisitor)
    }
}

/// Visits a decimal string without building an intermediate `serde_json::Value`: the fold of
/// every movement in a rebuild parses three of these. A JSON float is refused by serde's default
/// ("invalid type: floating point …, expected a decimal string").
struct DecimalVisitor;

impl serde::de::Visitor<'_> for DecimalVisitor {
    type Value = Decimal;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a decimal string like \"250.00\"")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Decimal, E> {
        parse(text).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Decimal, E> {
        Err(E::custom(format!(
            "decimal {n} must be a string, e.g. \"{n}\", not a JSON number"
        )))
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Decimal, E> {
        Err(E::custom(format!(
            "decimal {n} must be a string, e.g. \"{n}\", not a JSON number"
        )))
    }
}

/// Parses `[-]digits[.digits]`, keeping the written scale (`"150.00"` has scale 2), as
/// `Decimal::from_str` does.
pub fn parse(text: &str) -> Result<Decimal, String> {
    fast(text.as_bytes()).map_or_else(|| checked(text), Ok)
}

/// `parse` for bytes that should be a decimal string; `None` where `parse` errs.
pub(crate) fn parse_bytes(bytes: &[u8]) -> Option<Decimal> {
    fast(bytes).or_else(|| checked(std::str::from_utf8(bytes).ok()?).ok())
}

/// Up to 18 digits, the common case, without `from_str`'s generality: the digits make an exact
/// `i64` mantissa and the fraction's length is the scale. `None` for anything else.
fn fast(bytes: &[u8]) -> Option<Decimal> {
    let (negative, body) = match bytes.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, bytes),
    };
    if body.is_empty() || body.len() > 19 {
        return None;
    }
    let mut mantissa: i64 = 0;
    let mut scale: Option<u32> = None;
    for (index, &byte) in body.iter().enumerate() {
        match byte {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + i64::from(byte - b'0');
                if let Some(scale) = scale.as_mut() {
                    *scale += 1;
                }
            }
            b'.' if scale.is_none() && index > 0 && index + 1 < body.len() => scale = Some(0),
            _ => return None,
        }
    }
    let value = Decimal::new(mantissa, scale.unwrap_or(0));
    // `from_str` gives no negative zero: "-0.00" is 0.00.
    Some(if negative && mantissa != 0 {
        -value
    } else {
        value
    })
}

/// The general path, for long or malformed input: validation with a message, then `from_str`.
fn checked(text: &str) -> Result<Decimal, String> {
    let body = text.strip_prefix('-').unwrap_or(text);
    let mut parts = body.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let fraction = parts.next();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || fraction.is_some_and(|f| !digits(f)) {
        return Err(format!("{text:?} is not a decimal like \"250.00\""));
    }
    text.parse::<Decimal>()
        .map_err(|e| format!("{text:?} is not a decimal: {e}"))
}

/// `Option<Decimal>` on the wire: a decimal string or null.
pub struct OptionalDecimalString;

impl schemars::JsonSchema for OptionalDecimalString {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        <Option<DecimalString>>::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <Option<DecimalString>>::json_schema(generator)
    }
}

impl OptionalDecimalString {
    /// Serializes `Some` as a string, `None` as null.
    pub fn serialize<S: Serializer>(
        value: &Option<Decimal>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => DecimalString::serialize(value, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Null or a decimal string.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Decimal>, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        if value.is_null() {
            return Ok(None);
        }
        DecimalString::deserialize(value)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// A map of names to decimals on the wire, each value a decimal string.
pub struct DecimalMap;

impl schemars::JsonSchema for DecimalMap {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        <BTreeMap<String, DecimalString>>::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <BTreeMap<String, DecimalString>>::json_schema(generator)
    }
}

impl DecimalMap {
    /// Serializes each value as a string.
    pub fn serialize<S: Serializer>(
        value: &BTreeMap<String, Decimal>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(value.len()))?;
        for (key, decimal) in value {
            map.serialize_entry(key, &decimal.to_string())?;
        }
        map.end()
    }

    /// Each value must be a decimal string.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, Decimal>, D::Error> {
        let raw = BTreeMap::<String, serde_json::Value>::deserialize(deserializer)?;
        raw.into_iter()
            .map(|(key, value)| {
                DecimalString::deserialize(value)
                    .map(|decimal| (key.clone(), decimal))
                    .map_err(|e: serde_json::Error| serde::de::Error::custom(format!("{key}: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path gives what `from_str` gives: the same value, scale and sign (so the same
    /// text when printed), on every shape it takes; it declines everything else.
    #[test]
    fn fast_path_matches_from_str() {
        let mut cases: Vec<String> = [
            "0",
            "-0",
            "0.00",
            "-0.00",
            "1",
            "150.00",
            "0.02",
            "3.0000",
            "-700.0000",
            "999999999999999999",
            "-99999999999999999.9",
            "0.00000000000000001",
            "12345.6789",
        ]
        .map(str::to_owned)
        .to_vec();
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        for _ in 0..20_000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let digits = (seed >> 60) as usize + 1;
            let point = (seed >> 40) as usize % (digits + 1);
            let mut text = String::new();
            if seed & 1 == 1 {
                text.push('-');
            }
            for i in 0..digits {
                if i == point && i > 0 {
                    text.push('.');
                }
                text.push(char::from(b'0' + ((seed >> (i % 40)) % 10) as u8));
            }
            cases.push(text);
        }
        for text in &cases {
            let expected: Decimal = text.parse().unwrap();
            let fast = fast(text.as_bytes()).unwrap_or_else(|| panic!("{text}: declined"));
            assert_eq!(
                (fast, fast.scale(), fast.to_string()),
                (expected, expected.scale(), expected.to_string()),
                "{text}"
            );
        }
        for declined in [
            "",
            "-",
            ".5",
            "5.",
            "1.2.3",
            "1e3",
            " 1",
            "+1",
            "1_0",
            "12345678901234567890",
        ] {
            assert!(fast(declined.as_bytes()).is_none(), "{declined:?}");
        }
        assert!(parse("1e3").is_err() && parse(".5").is_err() && parse("").is_err());
        assert_eq!(
            parse("12345678901234567890.5").unwrap().to_string(),
            "12345678901234567890.5"
        );
    }
}
