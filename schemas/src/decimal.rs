//! Decimals on the wire are strings (`"250.00"`), never JSON numbers: a number would pass
//! through a float in most JSON libraries. A JSON number where a decimal belongs is an error.

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serializer};

/// The JSON Schema of a decimal on the wire: a string of digits with an optional sign and
/// fraction.
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

/// `#[serde(with = "crate::decimal")]`: a decimal as a string.
pub fn serialize<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&value.to_string())
}

/// Accepts only a JSON string holding a plain decimal (no exponent, no spaces).
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    deserializer.deserialize_any(DecimalVisitor)
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

/// Parses `[-]digits[.digits]`.
pub fn parse(text: &str) -> Result<Decimal, String> {
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

/// The same for `Option<Decimal>`.
pub mod option {
    use super::*;

    /// Serializes `Some` as a string, `None` as null.
    pub fn serialize<S: Serializer>(
        value: &Option<Decimal>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::serialize(value, serializer),
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
        super::deserialize(value)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// A map of decimals as strings.
pub mod map {
    use std::collections::BTreeMap;

    use super::*;
    use serde::ser::SerializeMap;

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
                super::deserialize(value)
                    .map(|decimal| (key.clone(), decimal))
                    .map_err(|e: serde_json::Error| serde::de::Error::custom(format!("{key}: {e}")))
            })
            .collect()
    }
}
