//! A record's payload, parsed only as far as a plugin reads it.
//!
//! Association usually reads one or two fields of a payload, and parsing the whole object
//! into a map (every key hashed, every value allocated) was most of a plugin's `associate`.
//! A [`Payload`] is instead scanned once when the record crosses into the plugin: the text
//! is checked to be one JSON object and its members are located, with nothing built. A
//! member is parsed into a [`Value`] the first time it is read ([`Payload::get`],
//! [`crate::Record::get`]), and kept for the next read. The whole object is parsed only when
//! a plugin asks for it as a map (the payload dereferences to `Map<String, Value>`); the
//! default projection walks the members one by one and never builds the top-level map.
//!
//! A key that appears twice keeps its first position and its last value, as a parsed map
//! does.

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashMap;
use std::fmt;
use std::ops::{Deref, Range};

/// A payload object: its text, where its members are, and what has been parsed of it.
#[derive(Clone)]
pub struct Payload {
    text: String,
    members: Vec<Member>,
    object: OnceCell<Map<String, Value>>,
}

#[derive(Clone)]
struct Member {
    key: Key,
    value: Range<usize>,
    /// `None` inside: the member's text does not parse on its own (deeper than
    /// serde_json's nesting limit, or a string with a lone surrogate). The host never hands
    /// such a payload to a plugin: intake refuses it.
    parsed: OnceCell<Option<Value>>,
}

#[derive(Clone)]
enum Key {
    /// The key as it stands in the text (no escapes in it).
    Span(Range<usize>),
    /// The key with its escapes decoded.
    Decoded(Box<str>),
}

/// Why a text is not a payload.
#[derive(Debug)]
pub enum PayloadError {
    /// Valid JSON, but not an object.
    NotObject,
    /// Not valid JSON.
    Invalid(serde_json::Error),
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::NotObject => write!(f, "payload is not a JSON object"),
            PayloadError::Invalid(e) => write!(f, "payload is not valid JSON: {e}"),
        }
    }
}

impl std::error::Error for PayloadError {}

impl Payload {
    /// Checks that `text` is one JSON object and locates its members; parses none of them.
    pub fn parse(text: String) -> Result<Self, PayloadError> {
        if !text.trim_start().starts_with('{') {
            return Err(match serde_json::from_str::<IgnoredAny>(&text) {
                Ok(_) => PayloadError::NotObject,
                Err(e) => PayloadError::Invalid(e),
            });
        }
        let members = scan(&text).map_err(PayloadError::Invalid)?;
        Ok(Self {
            text,
            members,
            object: OnceCell::new(),
        })
    }

    /// The payload's JSON text, as the host handed it over.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The value of a top-level member, parsed on first read.
    pub fn get(&self, key: &str) -> Option<&Value> {
        if let Some(object) = self.object.get() {
            return object.get(key);
        }
        let index = self.members.iter().position(|m| self.key(m) == key)?;
        self.value(index)
    }

    /// The members in document order, each parsed (and kept) on the way.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        (0..self.members.len())
            .filter_map(move |i| Some((self.key(&self.members[i]), self.value(i)?)))
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the object has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn key<'a>(&'a self, member: &'a Member) -> &'a str {
        key_text(&self.text, &member.key)
    }

    fn value(&self, index: usize) -> Option<&Value> {
        let member = &self.members[index];
        member
            .parsed
            .get_or_init(|| parse_member(&self.text[member.value.clone()]))
            .as_ref()
    }

    /// The whole object as a map (parsed on first use, then kept).
    pub fn object(&self) -> &Map<String, Value> {
        self.object.get_or_init(|| {
            self.iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        })
    }
}

impl Deref for Payload {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Map<String, Value> {
        self.object()
    }
}

impl From<Map<String, Value>> for Payload {
    fn from(object: Map<String, Value>) -> Self {
        let text = serde_json::to_string(&object).expect("a map serialises");
        let payload = Self::parse(text).expect("a serialised map is a JSON object");
        let _ = payload.object.set(object);
        payload
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.object() == other.object()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A member's value from its text, which the scan has found to be one JSON value. A string
/// without escapes (most of them) is its text between the quotes, and `true`, `false` and
/// `null` are themselves: serde_json, whose every call has a cost of its own, reads only the
/// rest.
fn parse_member(text: &str) -> Option<Value> {
    match text.as_bytes() {
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => {
            Some(Value::String(text[1..text.len() - 1].to_owned()))
        }
        b"true" => Some(Value::Bool(true)),
        b"false" => Some(Value::Bool(false)),
        b"null" => Some(Value::Null),
        _ => serde_json::from_str(text).ok(),
    }
}

/// Locates the members of the object in `text`: keys decoded only when they hold escapes,
/// values as ranges of the text. A repeated key keeps its first place and its last value.
fn scan(text: &str) -> Result<Vec<Member>, serde_json::Error> {
    // Most payloads are located by a quick walk over the bytes; what it is not sure of (or
    // refuses) is located by serde_json, whose error is the one reported.
    let found = match quick_scan(text) {
        Some(found) => found,
        None => serde_scan(text)?,
    };
    Ok(dedupe(text, found))
}

/// The members as serde_json locates them (keys decoded only when they hold escapes).
fn serde_scan(text: &str) -> Result<Vec<(Key, Range<usize>)>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let found = (&mut de).deserialize_map(Members { base: text })?;
    de.end()?;
    Ok(found)
}

/// The members as [`flowhost_json::object_members`] finds them, with escaped keys decoded;
/// `None` when serde_json is to decide.
fn quick_scan(text: &str) -> Option<Vec<(Key, Range<usize>)>> {
    flowhost_json::object_members(text)?
        .into_iter()
        .map(|m| {
            let key = if m.key_escaped {
                // The quotes around the key are the bytes on either side of its span.
                let quoted = &text[m.key.start - 1..m.key.end + 1];
                Key::Decoded(serde_json::from_str::<String>(quoted).ok()?.into())
            } else {
                Key::Span(m.key)
            };
            Some((key, m.value))
        })
        .collect()
}

/// Members with one place per key. Small objects compare keys directly; larger ones use an
/// index, so an object of many keys costs linear time, not quadratic.
fn dedupe(base: &str, found: Vec<(Key, Range<usize>)>) -> Vec<Member> {
    const DIRECT: usize = 16;
    let mut members: Vec<Member> = Vec::with_capacity(found.len());
    let mut index: HashMap<&str, usize, foldhash::fast::RandomState> = HashMap::default();
    for (key, value) in &found {
        let text = key_text(base, key);
        let seen = if found.len() <= DIRECT {
            members.iter().position(|m| key_text(base, &m.key) == text)
        } else {
            index.get(text).copied()
        };
        match seen {
            Some(i) => members[i].value = value.clone(),
            None => {
                if found.len() > DIRECT {
                    index.insert(text, members.len());
                }
                members.push(Member {
                    key: key.clone(),
                    value: value.clone(),
                    parsed: OnceCell::new(),
                });
            }
        }
    }
    members
}

fn key_text<'a>(base: &'a str, key: &'a Key) -> &'a str {
    match key {
        Key::Span(range) => &base[range.clone()],
        Key::Decoded(key) => key,
    }
}

/// Collects an object's members without parsing their values.
struct Members<'a> {
    base: &'a str,
}

impl<'de> Visitor<'de> for Members<'de> {
    type Value = Vec<(Key, Range<usize>)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(8);
        while let Some(KeyText(key)) = map.next_key::<KeyText<'de>>()? {
            let value: &'de RawValue = map.next_value()?;
            let key = match key {
                Cow::Borrowed(k) => Key::Span(span(self.base, k)),
                Cow::Owned(k) => Key::Decoded(k.into()),
            };
            out.push((key, span(self.base, value.get())));
        }
        Ok(out)
    }
}

/// Where `part` (a slice of `base`) lies in `base`.
fn span(base: &str, part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    start..start + part.len()
}

/// A key, borrowed from the text when it has no escapes.
struct KeyText<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for KeyText<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyText<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(KeyText(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(KeyText(Cow::Owned(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
                Ok(KeyText(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parsed(text: &str) -> Payload {
        Payload::parse(text.to_string()).unwrap()
    }

    #[test]
    fn a_read_parses_only_its_member() {
        let p = parsed(r#" {"serial": "SN-1", "big": [1, 2, {"x": "y"}], "n": 1.50} "#);
        assert_eq!(p.get("serial"), Some(&Value::String("SN-1".into())));
        let parsed: Vec<bool> = p.members.iter().map(|m| m.parsed.get().is_some()).collect();
        assert_eq!(parsed, [true, false, false]);
        assert!(p.object.get().is_none());
        assert_eq!(p.get("missing"), None);
        // Numbers keep their digits.
        assert_eq!(p.get("n").unwrap().to_string(), "1.50");
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn a_repeated_key_keeps_its_first_place_and_last_value() {
        let p = parsed(r#"{"a": 1, "b": 2, "a": 3}"#);
        let expected: Map<String, Value> =
            serde_json::from_str(r#"{"a": 1, "b": 2, "a": 3}"#).unwrap();
        assert_eq!(p.get("a"), Some(&Value::from(3)));
        assert_eq!(*p, expected);
        assert_eq!(p.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["a", "b"]);

        // The same past the size where keys are compared directly.
        let mut text = String::from("{");
        for i in 0..40 {
            text.push_str(&format!("\"k{}\": {i},", i % 20));
        }
        text.push_str("\"last\": true}");
        let p = parsed(&text);
        let expected: Map<String, Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(p.len(), 21);
        assert_eq!(p.get("k3"), Some(&Value::from(23)));
        assert_eq!(*p, expected);
        assert!(
            p.iter()
                .map(|(k, _)| k)
                .eq(expected.keys().map(String::as_str))
        );
    }

    #[test]
    fn escaped_keys_are_decoded() {
        let p = parsed(r#"{"se\u0072ial": "x", "tab\tkey": 1}"#);
        assert_eq!(p.get("serial"), Some(&Value::String("x".into())));
        assert_eq!(p.get("tab\tkey"), Some(&Value::from(1)));
    }

    #[test]
    fn what_is_not_an_object_is_told_apart_from_what_is_not_json() {
        for text in ["[1]", "5", "\"s\"", "null", " true "] {
            let e = Payload::parse(text.into()).err().unwrap();
            assert_eq!(e.to_string(), "payload is not a JSON object", "{text}");
        }
        for text in [
            "{",
            "{\"a\": tru}",
            "{\"a\": 1} x",
            "",
            "{\"a\" 1}",
            "{1: 2}",
            "{\"a\": 01}",
        ] {
            let e = Payload::parse(text.into()).err().unwrap();
            assert!(
                e.to_string().starts_with("payload is not valid JSON: "),
                "{text}: {e}"
            );
            // The same verdict as parsing the whole text.
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text}");
        }
    }

    #[test]
    fn a_member_too_deep_to_parse_reads_as_absent() {
        let deep = format!(
            "{{\"a\": 1, \"deep\": {}{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        let p = parsed(&deep);
        assert_eq!(p.get("a"), Some(&Value::from(1)));
        assert_eq!(p.get("deep"), None);
    }

    #[test]
    fn a_payload_from_a_map_reads_the_same() {
        let map: Map<String, Value> =
            serde_json::from_str(r#"{"a": {"b": [1, "x"]}, "c": null}"#).unwrap();
        let p = Payload::from(map.clone());
        assert_eq!(*p, map);
        assert_eq!(p.get("a"), map.get("a"));
        assert_eq!(Payload::parse(p.text().to_string()).unwrap(), p);
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-c\\\\\"é ]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-c.\"]{0,2}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// Members as (key text, value text), to compare the two ways of locating them.
    fn texts<'a>(text: &'a str, found: &'a [(Key, Range<usize>)]) -> Vec<(&'a str, &'a str)> {
        found
            .iter()
            .map(|(k, v)| (key_text(text, k), &text[v.clone()]))
            .collect()
    }

    #[test]
    fn the_quick_scan_locates_what_serde_json_locates() {
        for text in [
            r#"{"serial": "SN-1", "tags": ["a", {"b": null}], "n": -1.5e3, "t": true}"#,
            " {\"a\" :1 ,\"a\":\t[ ] , \"b\" : {} }\n",
            r#"{"se\u0072ial": "x", "tab\tkey": 1, "q\"": "\u00e9\ud83d\ude00"}"#,
            r#"{"$serde_json::private::Number": "1"}"#,
            r#"{"a": {"k": 1, "k": 2, "\u006b": 3}}"#,
            "{}",
        ] {
            let quick = quick_scan(text).unwrap_or_else(|| panic!("{text}"));
            let serde = serde_scan(text).unwrap();
            assert_eq!(texts(text, &quick), texts(text, &serde), "{text}");
        }
        // Left to serde_json: nesting near the limit, a lone surrogate, and whatever is not
        // one valid object.
        let deep = format!("{{\"a\": {}{}}}", "[".repeat(120), "]".repeat(120));
        for text in [
            deep.as_str(),
            "[1]",
            "{\"a\": 1} x",
            "{\"a\": 1,}",
            r#"{"a": "\ud800"}"#,
        ] {
            assert!(quick_scan(text).is_none(), "{text}");
        }
    }

    proptest! {
        /// The quick scan finds the members serde_json finds, however the object is spaced,
        /// whatever its keys and values hold.
        #[test]
        fn the_quick_scan_agrees_with_serde_json(
            members in prop::collection::vec(("[a-d\"\\\\é]{0,3}", json()), 0..12),
            spaces in prop::collection::vec("[ \t\r\n]{0,2}", 4),
        ) {
            let body: Vec<String> = members
                .iter()
                .map(|(k, v)| format!("{}{}:{}{v}", Value::String(k.clone()), spaces[0], spaces[1]))
                .collect();
            let text = format!("{}{{{}}}{}", spaces[2], body.join(&format!(",{}", spaces[3])), spaces[3]);
            let serde = serde_scan(&text).unwrap();
            // Nothing here is left to serde_json: nesting is shallow and every escape names a
            // character.
            let quick = quick_scan(&text).unwrap_or_default();
            prop_assert_eq!(texts(&text, &quick), texts(&text, &serde), "{}", text);
        }

        /// Any object, written with or without repeated keys, reads as parsing it whole does.
        #[test]
        fn reads_as_a_whole_parse(
            members in prop::collection::vec(("[a-d\"\\\\]{0,2}", json()), 0..24),
        ) {
            let text = format!(
                "{{{}}}",
                members
                    .iter()
                    .map(|(k, v)| format!("{}: {v}", Value::String(k.clone())))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let whole: Map<String, Value> = serde_json::from_str(&text).unwrap();
            let p = parsed(&text);
            for (key, _) in &members {
                prop_assert_eq!(p.get(key), whole.get(key));
            }
            prop_assert!(p.iter().map(|(k, v)| (k.to_string(), v.clone())).eq(whole.clone()));
            prop_assert_eq!(&*p, &whole);
        }
    }
}
