//! The projections' hot path: reads only `movements` and `billables` out of a stored payload.
//!
//! serde_json spends most of a rebuild's time on its per-field machinery: it walks every field
//! of the payload to find the two it wants, and a movement is six short strings. Stored payloads
//! are canonical: `Event::to_payload` wrote them (compact serde_json) and they were validated
//! before they were appended. So this reader finds the key `"movements"` with one SIMD search
//! (`memchr::memmem`) and reads just that array; the same for `"billables"`.
//!
//! Why a search finds only the key: inside a JSON string every `"` is escaped, so the bytes
//! `"movements"` preceded by `{` or `,` and followed by `:` can only be an object key; and no
//! event type has a nested object with such a key (a test over the event schemas holds that).
//! Movements and billables are read in their canonical form only: serde_json's compact output
//! of the struct, fields in declaration order. Anything else — the word twice, a key not in
//! compact form, fields in another order, an escape inside a movement, a field it does not
//! know, a missing field — makes it give up (`None`), and
//! `Effects::from_payload` falls back to serde_json, which is the definition: tests compare the
//! two on every event type and on payloads built to trip the search.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use rust_decimal::Decimal;
use serde::de::IntoDeserializer;
use serde::de::value::{Error as ValueError, StrDeserializer};
use serde::{Deserialize, Serialize};

use crate::{Billable, BillableKind, Bucket, Effects, Movement, MovementKind};

/// Reads the effects of a canonical payload, or `None` to let serde_json decide.
#[cfg(test)]
pub(crate) fn read(payload: &[u8]) -> Option<Effects> {
    let mut effects = Effects::default();
    read_into(payload, &mut effects).map(|()| effects)
}

/// Reads the effects of a canonical payload into `effects`, reusing its vectors and strings (a
/// rebuild reads a million payloads into one buffer without allocating); `None` to let
/// serde_json decide, with `effects` left half-written.
pub(crate) fn read_into(payload: &[u8], effects: &mut Effects) -> Option<()> {
    if payload.first() != Some(&b'{') || payload.last() != Some(&b'}') {
        return None;
    }
    static MOVEMENTS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"movements\""));
    static BILLABLES: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"billables\""));
    section(
        payload,
        &MOVEMENTS,
        &mut effects.movements,
        Reader::movement,
        blank_movement,
    )?;
    section(
        payload,
        &BILLABLES,
        &mut effects.billables,
        Reader::billable,
        blank_billable,
    )
}

/// Reads the array under the top-level key `quoted_key` (a searcher built once) into `items`:
/// empty when the key is absent.
fn section<'a, T>(
    payload: &'a [u8],
    quoted_key: &Finder<'static>,
    items: &mut Vec<T>,
    item: fn(&mut Reader<'a>, &mut T) -> Option<()>,
    blank: fn() -> T,
) -> Option<()> {
    let mut found = quoted_key.find_iter(payload);
    let Some(at) = found.next() else {
        items.clear();
        return Some(());
    };
    if found.next().is_some() || at == 0 || !matches!(payload[at - 1], b'{' | b',') {
        return None;
    }
    let mut reader = Reader {
        bytes: payload,
        at: at + quoted_key.needle().len(),
    };
    if reader.bytes.get(reader.at) != Some(&b':') {
        return None;
    }
    reader.at += 1;
    reader.array(items, item, blank)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        self.whitespace();
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    /// A string without escapes, borrowed; `None` for anything else. (Control characters, which
    /// JSON forbids unescaped, cannot be in a stored payload: it was validated when written.)
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let rest = self.bytes.get(self.at..)?;
        let end = memchr::memchr2(b'"', b'\\', rest)?;
        if rest[end] != b'"' {
            return None;
        }
        self.at += end + 1;
        Some(&rest[..end])
    }

    /// An array read into `items`, overwriting the items it already holds (their strings keep
    /// their capacity) and truncating what is left over.
    fn array<T>(
        &mut self,
        items: &mut Vec<T>,
        item: fn(&mut Self, &mut T) -> Option<()>,
        blank: fn() -> T,
    ) -> Option<()> {
        self.expect(b'[')?;
        let mut count = 0;
        if !self.eat(b']') {
            loop {
                if count == items.len() {
                    items.push(blank());
                }
                item(self, &mut items[count])?;
                count += 1;
                if self.eat(b']') {
                    break;
                }
                self.expect(b',')?;
            }
        }
        items.truncate(count);
        Some(())
    }

    /// `literal` exactly, with no whitespace: the canonical form's punctuation and keys.
    fn literal(&mut self, literal: &[u8]) -> Option<()> {
        let rest = self.bytes.get(self.at..)?;
        rest.starts_with(literal).then(|| self.at += literal.len())
    }

    /// A movement in its canonical form: the struct's fields in declaration order, as serde_json
    /// writes them. Any other form is serde's to read.
    fn movement(&mut self, movement: &mut Movement) -> Option<()> {
        self.literal(b"{\"bucket\":")?;
        movement.bucket = lookup(&BUCKETS, self.plain_string()?)?;
        self.literal(b",\"kind\":")?;
        movement.kind = lookup(&KINDS, self.plain_string()?)?;
        self.literal(b",\"lot\":")?;
        copy(&mut movement.lot, self.plain_string()?)?;
        self.literal(b",\"quantity\":")?;
        movement.quantity = decimal(self.plain_string()?)?;
        self.literal(b",\"unit_price\":")?;
        movement.unit_price = decimal(self.plain_string()?)?;
        self.literal(b",\"value\":")?;
        movement.value = decimal(self.plain_string()?)?;
        self.literal(b"}")
    }

    /// A billable in its canonical form (see `movement`).
    fn billable(&mut self, billable: &mut Billable) -> Option<()> {
        self.literal(b"{\"kind\":")?;
        billable.kind = name::<BillableKind>(self.plain_string()?)?;
        self.literal(b",\"period\":")?;
        copy(&mut billable.period, self.plain_string()?)?;
        self.literal(b",\"amount\":")?;
        billable.amount = decimal(self.plain_string()?)?;
        self.literal(b",\"currency\":")?;
        copy(&mut billable.currency, self.plain_string()?)?;
        self.literal(b"}")
    }
}

/// A slot for `Reader::movement` to overwrite.
fn blank_movement() -> Movement {
    Movement {
        bucket: Bucket::ProactiveCredits,
        kind: MovementKind::Purchased,
        lot: String::new(),
        quantity: Decimal::ZERO,
        unit_price: Decimal::ZERO,
        value: Decimal::ZERO,
    }
}

/// A slot for `Reader::billable` to overwrite.
fn blank_billable() -> Billable {
    Billable {
        kind: BillableKind::SabShortfall,
        period: String::new(),
        amount: Decimal::ZERO,
        currency: String::new(),
    }
}

/// Replaces `target`'s text with `text`, keeping its allocation.
fn copy(target: &mut String, text: &[u8]) -> Option<()> {
    target.clear();
    target.push_str(utf8(text)?);
    Some(())
}

/// The wire names of the buckets and movement kinds, as serde writes them (so they cannot
/// drift from it); a name not in a table makes the fast path give up.
static BUCKETS: LazyLock<Vec<(Vec<u8>, Bucket)>> = LazyLock::new(|| names(&Bucket::ALL));
static KINDS: LazyLock<Vec<(Vec<u8>, MovementKind)>> = LazyLock::new(|| names(&MovementKind::ALL));

fn names<T: Serialize + Copy>(variants: &[T]) -> Vec<(Vec<u8>, T)> {
    variants
        .iter()
        .map(|&variant| {
            let quoted = serde_json::to_vec(&variant).expect("a unit variant serializes");
            (quoted[1..quoted.len() - 1].to_vec(), variant)
        })
        .collect()
}

/// A unit variant by its name, compared as bytes (no UTF-8 check, no deserializer).
fn lookup<T: Copy>(table: &[(Vec<u8>, T)], text: &[u8]) -> Option<T> {
    table
        .iter()
        .find(|(name, _)| name.as_slice() == text)
        .map(|&(_, variant)| variant)
}

/// A unit enum from its serde name (the derive's own table, no JSON involved).
fn name<'de, T: Deserialize<'de>>(text: &'de [u8]) -> Option<T> {
    let deserializer: StrDeserializer<'de, ValueError> = utf8(text)?.into_deserializer();
    T::deserialize(deserializer).ok()
}

fn decimal(text: &[u8]) -> Option<Decimal> {
    crate::decimal::parse_bytes(text)
}

fn utf8(text: &[u8]) -> Option<&str> {
    std::str::from_utf8(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    /// Every example event, re-encoded canonically as the log stores it.
    fn canonical_examples() -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("json/examples/events");
        let mut examples = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("the examples exist") {
            let path = entry.expect("a directory entry").path();
            let text = std::fs::read_to_string(&path).expect("an example reads");
            let event = Event::from_payload(text.as_bytes()).expect("an example parses");
            examples.push((path.display().to_string(), event.to_payload()));
        }
        assert_eq!(examples.len(), crate::json_schema::EVENT_TYPES.len());
        examples
    }

    fn by_serde(payload: &[u8]) -> Effects {
        serde_json::from_slice(payload).expect("serde reads it")
    }

    #[test]
    fn reads_every_event_type_as_serde_does() {
        let mut moved = 0;
        for (name, payload) in canonical_examples() {
            let fast = read(&payload).unwrap_or_else(|| panic!("{name}: the fast path gave up"));
            assert_eq!(fast, by_serde(&payload), "{name}");
            moved += fast.movements.len() + fast.billables.len();
        }
        assert!(moved > 10, "the examples move and bill something: {moved}");
    }

    /// One buffer read through every example in turn, twice and in both orders, holds what a
    /// fresh read gives: nothing of the previous payload survives (a longer lot, more movements).
    #[test]
    fn a_reused_buffer_reads_like_a_fresh_one() {
        let examples = canonical_examples();
        let mut buffer = Effects::default();
        let forward = examples.iter().chain(examples.iter().rev());
        for (name, payload) in forward.chain(examples.iter()) {
            buffer.read_payload(payload).expect("an example reads");
            assert_eq!(buffer, by_serde(payload), "{name}");
        }
        // And after a payload only serde reads, which replaces the buffer.
        let escaped = br#"{"movements":[{"bucket":"das_hours","kind":"fee","lot":"L\u0037","quantity":"1","unit_price":"1","value":"1"}]}"#;
        buffer
            .read_payload(escaped)
            .expect("serde reads the escape");
        assert_eq!(buffer.movements[0].lot, "L7");
        let (_, last) = &examples[0];
        buffer.read_payload(last).expect("an example reads");
        assert_eq!(buffer, by_serde(last));
    }

    /// The name tables hold every variant the schema lists, under serde's name.
    #[test]
    fn name_tables_list_every_variant_by_its_serde_name() {
        fn schema_names<T: schemars::JsonSchema>() -> Vec<String> {
            let schema = serde_json::to_value(schemars::schema_for!(T)).unwrap();
            let mut names: Vec<String> = schema["enum"]
                .as_array()
                .or_else(|| schema["oneOf"].as_array())
                .expect("a unit enum's schema lists its names")
                .iter()
                .map(|v| v.get("const").or(v.get("enum").map(|e| &e[0])).unwrap_or(v))
                .map(|v| v.as_str().expect("a name").to_owned())
                .collect();
            names.sort();
            names
        }
        fn table_names<T>(table: &[(Vec<u8>, T)]) -> Vec<String> {
            let mut names: Vec<String> = table
                .iter()
                .map(|(n, _)| String::from_utf8(n.clone()).unwrap())
                .collect();
            names.sort();
            names
        }
        assert_eq!(table_names(&BUCKETS), schema_names::<Bucket>());
        assert_eq!(table_names(&KINDS), schema_names::<MovementKind>());
        for (text, kind) in KINDS.iter() {
            assert_eq!(name::<MovementKind>(text), Some(*kind));
            assert_eq!(lookup(&KINDS, text), Some(*kind));
        }
        for (text, bucket) in BUCKETS.iter() {
            assert_eq!(name::<Bucket>(text), Some(*bucket));
        }
        assert_eq!(lookup(&KINDS, b"consumed "), None);
    }

    #[test]
    fn strings_and_nested_keys_that_look_like_effects_are_not_read_as_them() {
        let movement = r#"{"bucket":"das_hours","kind":"fee","lot":"L7","quantity":"1.5","unit_price":"10","value":"15.0"}"#;
        let billable =
            r#"{"kind":"sab_shortfall","period":"year-1","amount":"-5.00","currency":"EUR"}"#;
        let payloads = [
            // In strings: every quote is escaped, so the search cannot match.
            format!(
                r#"{{"type":"event_reversed","reason":"was ,\"movements\":[] \\ {{\"billables\":[]","movements":[{movement}],"billables":[{billable}]}}"#
            ),
            // A key ending in the word, with an escaped quote before it: not `{` or `,` before.
            format!(r#"{{"rates":{{"x\"movements":"1"}},"movements":[{movement}]}}"#),
            // The word as a value.
            format!(r#"{{"reason":"movements","movements":[{movement}]}}"#),
            // The key twice (nested): the fast path gives up, serde reads the top level.
            format!(r#"{{"nested":{{"movements":[]}},"movements":[{movement}]}}"#),
            // Fields in another order.
            r#"{"movements":[{"kind":"fee","bucket":"das_hours","lot":"L7","quantity":"1.5","unit_price":"10","value":"15.0"}]}"#.to_owned(),
            // Not compact.
            format!(r#"{{"movements" : [ {movement} ] , "billables":[{billable}]}}"#),
        ];
        for payload in payloads {
            let payload = payload.as_bytes();
            let serde = by_serde(payload);
            assert_eq!(
                serde.movements.len(),
                1,
                "{}",
                String::from_utf8_lossy(payload)
            );
            if let Some(fast) = read(payload) {
                assert_eq!(fast, serde, "{}", String::from_utf8_lossy(payload));
            }
            assert_eq!(Effects::from_payload(payload).unwrap(), serde);
        }
    }

    #[test]
    fn reads_pretty_printed_payloads_through_serde() {
        for (name, payload) in canonical_examples() {
            let value: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            let pretty = serde_json::to_vec_pretty(&value).unwrap();
            assert_eq!(
                Effects::from_payload(&pretty).unwrap(),
                by_serde(&pretty),
                "{name}"
            );
        }
    }

    /// The search relies on `movements` and `billables` being keys of the event object only.
    #[test]
    fn no_event_type_nests_a_movements_or_billables_key() {
        /// Checks every object schema below the event's own.
        fn walk(value: &serde_json::Value, path: &str) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(properties) = map.get("properties").and_then(|p| p.as_object()) {
                        for name in ["movements", "billables"] {
                            assert!(!properties.contains_key(name), "{path} nests {name}");
                        }
                    }
                    for (key, child) in map {
                        walk(child, &format!("{path}/{key}"));
                    }
                }
                serde_json::Value::Array(items) => items.iter().for_each(|c| walk(c, path)),
                _ => {}
            }
        }
        let mut top_level = 0;
        for (name, schema) in crate::json_schema::event_schemas() {
            let root = schema.as_object().expect("an object schema");
            top_level += root["properties"]
                .as_object()
                .map_or(0, |p| p.contains_key("movements") as usize);
            for (key, child) in root {
                walk(child, &format!("{name}/{key}"));
            }
        }
        assert!(
            top_level >= 8,
            "the search looks for top-level keys that exist"
        );
    }

    #[test]
    fn gives_up_on_what_it_does_not_expect() {
        let cases: [&[u8]; 7] = [
            br#"{"movements":[{"bucket":"das_hours","kind":"fee","lot":"L\u0037","quantity":"1","unit_price":"1","value":"1"}]}"#,
            br#"{"movements":[{"bucket":"das_hours","kind":"fee","lot":"L7","quantity":"1","unit_price":"1","value":"1","extra":"x"}]}"#,
            br#"{"movements":[{"bucket":"das_hours","kind":"fee","lot":"L7","quantity":"1","unit_price":"1"}]}"#,
            br#"{"movements":[{"bucket":"nope","kind":"fee","lot":"L7","quantity":"1","unit_price":"1","value":"1"}]}"#,
            br#"{"movements":[]} trailing"#,
            br#"{"movements":[{"bucket":"das_hours","kind":"fee","lot":"L7","quantity":"1","unit_price":"1","value":"1"},]}"#,
            br#"[1,2]"#,
        ];
        for payload in cases {
            assert_eq!(read(payload), None, "{}", String::from_utf8_lossy(payload));
        }
        // Through the public entry point the escape is still read, by serde.
        let effects = Effects::from_payload(cases[0]).expect("serde reads the escape");
        assert_eq!(effects.movements[0].lot, "L7");
        assert!(
            Effects::from_payload(cases[1]).is_err(),
            "unknown fields are refused"
        );
    }

    /// The fast path does not validate what it skips (the payload was validated when it was
    /// written, and the hash chain guards it since): on anything serde accepts it must agree.
    #[test]
    fn agrees_with_serde_on_every_prefix_serde_accepts() {
        for (name, payload) in canonical_examples() {
            for end in 0..=payload.len() {
                let cut = &payload[..end];
                if let (Some(fast), Ok(serde)) = (read(cut), serde_json::from_slice::<Effects>(cut))
                {
                    assert_eq!(fast, serde, "{name} cut at {end}");
                }
            }
        }
    }
}
