//! JSON as flowhost compares it, shared by the host (intake, duplicates) and the guest SDK
//! (canonical views, `max`/`min`):
//!
//! - [`Decimal`]: a JSON number by its exact decimal value. `1`, `1.0`, `1e0` and `10e-1` are
//!   one value; `100000000000000000001` and `100000000000000000000` are two; `-0` is `0`.
//!   Nothing goes through a 64-bit float.
//! - [`canonical`]: a value written with object keys sorted, numbers in their canonical
//!   decimal form and no insignificant whitespace: two values that are equal as JSON values
//!   have the same canonical text (what the payload hash is taken of).
//! - [`parse_strict`]: parsing that refuses an object with the same key twice (which would
//!   otherwise keep one of the two values silently), and [`check_strict`]: the same check of
//!   a text without building its value; [`flaw`] sorts what they refuse.
//! - [`object_members`]: where each member of an object lies in its text, found in one walk
//!   over the bytes (the SDK locates a payload's members with it).
//!
//! The workspace builds `serde_json` with `arbitrary_precision`, so a parsed number keeps
//! its text and comes back out exactly as sent.

mod fast;

pub use fast::{MemberSpan, object_members};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

/// The largest exponent magnitude a number may have to be compared exactly (`1e999999999`
/// is fine; an exponent of twenty digits is not a measurement).
pub const MAX_EXPONENT: i64 = 1_000_000_000;

/// A JSON number by its exact value: sign, significant digits (no leading or trailing
/// zeros; empty for zero) and the power of ten of the last digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decimal {
    negative: bool,
    digits: String,
    exponent: i64,
}

impl Decimal {
    /// Parses JSON number text (`-12.50e3`). `None` when it is not a JSON number or the
    /// exponent of its canonical form (its significant digits as an integer: `10e5` is
    /// `1e6`, `0.5` is `5e-1`) is beyond ±[`MAX_EXPONENT`] — the exponent the canonical text
    /// is written with, so that text always parses back to the same value.
    pub fn parse(text: &str) -> Option<Decimal> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (int, frac) = match mantissa.split_once('.') {
            Some((int, frac)) => (int, frac),
            None => (mantissa, ""),
        };
        let digits_only = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits_only(int) || (mantissa.contains('.') && !digits_only(frac)) {
            return None;
        }
        if int.len() > 1 && int.starts_with('0') {
            return None;
        }
        let mut exp: i64 = match exponent {
            None => 0,
            Some(e) => {
                let (sign, body) = match e.as_bytes().first() {
                    Some(b'-') => (-1, &e[1..]),
                    Some(b'+') => (1, &e[1..]),
                    _ => (1, e),
                };
                if !digits_only(body) {
                    return None;
                }
                let body = body.trim_start_matches('0');
                // Ten digits at most: past any limit below, and far inside an i64.
                if body.len() > 10 {
                    return None;
                }
                let magnitude: i64 = if body.is_empty() {
                    0
                } else {
                    body.parse().ok()?
                };
                sign * magnitude
            }
        };
        // value = (int ++ frac) × 10^(exp − len(frac)); the mantissa is at most a line long.
        exp -= frac.len() as i64;
        let all: String = [int, frac].concat();
        let significant = all.trim_start_matches('0');
        let trimmed = significant.trim_end_matches('0');
        exp += (significant.len() - trimmed.len()) as i64;
        if trimmed.is_empty() {
            return Some(Decimal {
                negative: false,
                digits: String::new(),
                exponent: 0,
            });
        }
        if exp.abs() > MAX_EXPONENT {
            return None;
        }
        Some(Decimal {
            negative,
            digits: trimmed.to_string(),
            exponent: exp,
        })
    }

    /// The exact value of a parsed JSON number (its text, kept by `arbitrary_precision`;
    /// read as it is, not through `Display`, which is dear in a plugin).
    pub fn of(n: &Number) -> Option<Decimal> {
        Decimal::parse(n.as_str())
    }

    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// The power of ten of the leading digit (`123` → 2, `0.05` → -2).
    fn magnitude(&self) -> i64 {
        self.exponent + self.digits.len() as i64 - 1
    }

    fn cmp_abs(&self, other: &Decimal) -> Ordering {
        match (self.is_zero(), other.is_zero()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            _ => {}
        }
        // Without trailing zeros, the digit strings compare as written once the leading
        // digits are aligned; a string that is a prefix of the other is the smaller.
        self.magnitude()
            .cmp(&other.magnitude())
            .then_with(|| self.digits.cmp(&other.digits))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_abs(other),
            (true, true) => other.cmp_abs(self),
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The canonical text: `0`, or `[-]DIGITSeEXP` (`1.50` → `15e-1`).
impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0");
        }
        let sign = if self.negative { "-" } else { "" };
        write!(f, "{sign}{}e{}", self.digits, self.exponent)
    }
}

/// Writes `value` in canonical form to `out`: object keys sorted (by their UTF-8 bytes),
/// numbers as [`Decimal`]s, strings escaped as `serde_json` writes them, no whitespace.
/// Equal JSON values give equal text.
pub fn canonical(value: &Value, out: &mut impl FnMut(&[u8])) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out(b"{");
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out(b",");
                }
                out(string_text(key).as_bytes());
                out(b":");
                canonical(&map[key], out);
            }
            out(b"}");
        }
        Value::Array(items) => {
            out(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out(b",");
                }
                canonical(item, out);
            }
            out(b"]");
        }
        Value::Number(n) => match Decimal::of(n) {
            Some(d) => out(d.to_string().as_bytes()),
            // Not reachable for parsed input (intake refuses such numbers); its text then.
            None => out(n.to_string().as_bytes()),
        },
        scalar => out(scalar.to_string().as_bytes()),
    }
}

/// The canonical text of a value, as a string.
pub fn canonical_string(value: &Value) -> String {
    let mut out = Vec::new();
    canonical(value, &mut |b| out.extend_from_slice(b));
    String::from_utf8(out).expect("canonical JSON is UTF-8")
}

fn string_text(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// The first place in `value` (depth first, in document order) where `hit` holds, with its
/// path (`a.b[2]`, empty for `value` itself). `hit` sees each value with the object key it
/// stands under, if any.
pub fn find<'v>(
    value: &'v Value,
    hit: &impl Fn(Option<&str>, &Value) -> bool,
) -> Option<(String, &'v Value)> {
    fn walk<'v>(
        key: Option<&str>,
        value: &'v Value,
        path: &mut String,
        hit: &impl Fn(Option<&str>, &Value) -> bool,
    ) -> Option<&'v Value> {
        if hit(key, value) {
            return Some(value);
        }
        let mut child = |step: &dyn Fn(&mut String), key: Option<&str>, v: &'v Value| {
            let len = path.len();
            step(path);
            let found = walk(key, v, path, hit);
            if found.is_none() {
                path.truncate(len);
            }
            found
        };
        match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| child(&|p: &mut String| p.push_str(&format!("[{i}]")), None, v)),
            Value::Object(map) => map.iter().find_map(|(k, v)| {
                let step = |p: &mut String| {
                    if !p.is_empty() {
                        p.push('.');
                    }
                    p.push_str(k);
                };
                child(&step, Some(k), v)
            }),
            _ => None,
        }
    }
    let mut path = String::new();
    walk(None, value, &mut path, hit).map(|v| (path, v))
}

/// The first number in `value` that cannot be compared exactly (its exponent is beyond
/// ±[`MAX_EXPONENT`]), with its path (`a.b[2]`) and text.
pub fn inexact_number(value: &Value) -> Option<(String, String)> {
    find(
        value,
        &|_, v| matches!(v, Value::Number(n) if Decimal::of(n).is_none()),
    )
    .map(|(path, v)| (path, v.to_string()))
}

/// Parses JSON text into a value, refusing an object that has the same key twice
/// ("duplicate key `a`"). Nesting is bounded by `serde_json`'s recursion limit (128).
pub fn parse_strict(text: &str) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictValue::deserialize_from(&mut de)?;
    de.end()?;
    Ok(value)
}

/// A value deserialised with duplicate keys refused.
struct StrictValue;

impl StrictValue {
    fn deserialize_from<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        StrictValue::deserialize_from(d).map(Strict)
    }
}

/// The key under which `serde_json` (with `arbitrary_precision`) hands a number's text to a
/// visitor.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        let Some(first) = access.next_key::<String>()? else {
            return Ok(Value::Object(map));
        };
        if first == NUMBER_TOKEN {
            let text: String = access.next_value()?;
            return text
                .parse::<Number>()
                .map(Value::Number)
                .map_err(de::Error::custom);
        }
        let mut key = first;
        loop {
            let Strict(value) = access.next_value()?;
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key `{}`",
                    key.chars().take(60).collect::<String>()
                )));
            }
            map.insert(key, value);
            match access.next_key::<String>()? {
                Some(next) => key = next,
                None => return Ok(Value::Object(map)),
            }
        }
    }
}

/// Checks JSON text as [`parse_strict`] reads it, in one pass that builds no value: the
/// text is one JSON value, no object has the same key twice (keys compared as decoded text,
/// so `"a"` and `"\u0061"` are one key), and every string decodes to text (a `\u` escape of a
/// lone UTF-16 surrogate, such as `"\ud800"`, names no character and is refused). Work grows
/// with the text; memory with the keys of the objects open at a time. Nesting is bounded by
/// `serde_json`'s recursion limit (128).
pub fn check_strict(text: &str) -> Result<(), serde_json::Error> {
    // Most texts pass; a quick pass over the bytes says so. Whatever it does not pass is
    // walked by serde_json, whose error (and its position) is the one reported.
    if fast::passes(text) {
        return Ok(());
    }
    check_strict_walk(text)
}

/// Whether the quick pass of [`check_strict`] passes `text` alone, and whether serde_json's
/// walk does: for the fuzz target that holds the first to never pass what the second
/// refuses. Not an API.
#[doc(hidden)]
pub fn check_strict_parts(text: &str) -> (bool, bool) {
    (fast::passes(text), check_strict_walk(text).is_ok())
}

/// [`check_strict`] by serde_json's walk alone.
fn check_strict_walk(text: &str) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let mut keys = Vec::new();
    Check { keys: &mut keys }.deserialize(&mut de)?;
    de.end()
}

/// What a strict read ([`parse_strict`], [`check_strict`]) refused, sorted into the flaws
/// that callers word themselves; where in the text is the error's `line()` and `column()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flaw {
    /// A `\u` escape of a lone UTF-16 surrogate, which names no character.
    LoneSurrogate,
    /// An object with this key twice (at most its first 60 characters).
    DuplicateKey(String),
    /// Anything else, in serde_json's words (without the position).
    Other(String),
}

/// Sorts a strict read's error. serde_json words a lone surrogate as "lone leading
/// surrogate in hex escape" (also for a low one) or "unexpected end of hex escape" (a high
/// one with no `\u` after it); the strict reads word a repeated key as "duplicate key `k`".
/// This is the one place that reads those words.
pub fn flaw(e: &serde_json::Error) -> Flaw {
    let text = e.to_string();
    let message = match text.rsplit_once(" at line ") {
        Some((message, _)) if e.line() > 0 => message,
        _ => &text,
    };
    if message.starts_with("lone leading surrogate") || message.starts_with("unexpected end of hex")
    {
        Flaw::LoneSurrogate
    } else if let Some(key) = message
        .strip_prefix("duplicate key `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        Flaw::DuplicateKey(key.to_string())
    } else {
        Flaw::Other(message.to_string())
    }
}

/// serde_json's error in words a person can act on: a lone surrogate is named as such;
/// other errors are serde_json's own. Both end with where in the text (`at line L column
/// C`).
pub fn error_text(e: &serde_json::Error) -> String {
    match flaw(e) {
        Flaw::LoneSurrogate => format!(
            "a lone UTF-16 surrogate escape, which names no character, at line {} column {}",
            e.line(),
            e.column()
        ),
        _ => e.to_string(),
    }
}

/// Above this many keys an object's keys are looked up in a hash set instead of by a scan.
const KEYS_SCANNED: usize = 16;

/// [`check_strict`]'s walk: `keys` holds the keys of the objects open at a time, each
/// object's after its parents', borrowed from the text unless they had escapes.
struct Check<'k, 'de> {
    keys: &'k mut Vec<Cow<'de, str>>,
}

impl<'de> DeserializeSeed<'de> for Check<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    /// Strings reach the visitor decoded, which is where serde_json refuses a lone
    /// surrogate (skipping a value with `IgnoredAny` does not decode its escapes).
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(Check {
                keys: &mut *self.keys,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<(), A::Error> {
        let from = self.keys.len();
        let mut set: Option<std::collections::HashSet<Cow<'de, str>>> = None;
        while let Some(key) = access.next_key_seed(Key)? {
            if from == self.keys.len() && set.is_none() && key == NUMBER_TOKEN {
                // A number, as serde_json with `arbitrary_precision` hands it over; checked
                // as `parse_strict` checks it.
                let text = access.next_value_seed(Key)?;
                return text.parse::<Number>().map(drop).map_err(de::Error::custom);
            }
            let seen = match &mut set {
                Some(set) => !set.insert(key.clone()),
                None => self.keys[from..].contains(&key),
            };
            if seen {
                return Err(de::Error::custom(format_args!(
                    "duplicate key `{}`",
                    key.chars().take(60).collect::<String>()
                )));
            }
            if set.is_none() && self.keys.len() - from >= KEYS_SCANNED {
                let mut large: std::collections::HashSet<_> = self.keys.drain(from..).collect();
                large.insert(key);
                set = Some(large);
            } else if set.is_none() {
                self.keys.push(key);
            }
            access.next_value_seed(Check {
                keys: &mut *self.keys,
            })?;
        }
        self.keys.truncate(from);
        Ok(())
    }
}

/// An object's key, borrowed from the text when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse(s).unwrap_or_else(|| panic!("{s} parses"))
    }

    #[test]
    fn equal_values_are_one_whatever_the_spelling() {
        for same in [
            ["1", "1.0", "1e0"],
            ["10e-1", "0.1e1", "1.000"],
            ["0", "-0", "0.0e5"],
            ["120", "1.2e2", "12E1"],
            ["-0.05", "-5e-2", "-50E-3"],
        ] {
            for s in same {
                assert_eq!(d(s), d(same[0]), "{s} = {}", same[0]);
                assert_eq!(d(s).to_string(), d(same[0]).to_string());
            }
        }
        assert_ne!(
            d("100000000000000000001"),
            d("100000000000000000000"),
            "beyond a float's precision"
        );
        assert_eq!(
            d("100000000000000000001").to_string(),
            "100000000000000000001e0"
        );
    }

    #[test]
    fn order_is_by_value() {
        let ordered = [
            "-1e400",
            "-2",
            "-1.5",
            "-1",
            "-0.001",
            "0",
            "1e-400",
            "0.001",
            "0.01",
            "1",
            "1.5",
            "2",
            "10",
            "99",
            "100",
            "100000000000000000000",
            "100000000000000000001",
            "1e400",
        ];
        for pair in ordered.windows(2) {
            assert!(d(pair[0]) < d(pair[1]), "{} < {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn not_numbers_and_wild_exponents_are_refused() {
        for bad in [
            "",
            "-",
            "01",
            "1.",
            ".5",
            "1e",
            "1e+",
            "+1",
            "0x10",
            "1e99999999999",
        ] {
            assert!(Decimal::parse(bad).is_none(), "{bad}");
        }
        assert!(Decimal::parse("1e999999999").is_some());
        assert!(Decimal::parse("1e1000000000").is_some());
        assert!(Decimal::parse("-1e-1000000000").is_some());
        // The canonical exponent counts: `10e1000000000` is `1e1000000001`, beyond; and
        // `0.001e1000000002` is `1e999999999`, within.
        assert!(Decimal::parse("10E1000000000").is_none());
        assert!(Decimal::parse("0.5e-1000000000").is_none());
        assert_eq!(
            Decimal::parse("0.001e1000000002").map(|d| d.to_string()),
            Some("1e999999999".into())
        );
        assert!(
            Decimal::parse("1e0000000000000000005").is_some(),
            "leading zeros"
        );
    }

    #[test]
    fn canonical_text_is_a_fixed_point_at_the_exponent_limit() {
        // Found by the fuzzer: `10E…` normalised past the limit was written in canonical form
        // and read back as a number that cannot be compared exactly.
        let text = r#"{"b":1e5,"c":-11,"W":10E000001000000000,";":10E00000000,"d":10E00600000000}"#;
        let once = canonical_string(&parse_strict(text).unwrap());
        let twice = canonical_string(&parse_strict(&once).unwrap());
        assert_eq!(once, twice);
    }

    #[test]
    fn canonical_text_ignores_order_whitespace_and_spelling() {
        let a = parse_strict(r#"{"b": [1.0, {"y": 2, "x": "é"}], "a": 1e0}"#).unwrap();
        let b = parse_strict(r#"{"a":1,"b":[1,{"x":"é","y":2.00}]}"#).unwrap();
        assert_eq!(canonical_string(&a), canonical_string(&b));
        assert_eq!(
            canonical_string(&a),
            r#"{"a":1e0,"b":[1e0,{"x":"é","y":2e0}]}"#
        );
        let c = parse_strict(r#"{"a":"1"}"#).unwrap();
        let n = parse_strict(r#"{"a":1}"#).unwrap();
        assert_ne!(
            canonical_string(&c),
            canonical_string(&n),
            "a string is not a number"
        );
    }

    #[test]
    fn numbers_keep_their_text() {
        let v = parse_strict(r#"{"n":100000000000000000001,"f":1.50,"e":-0}"#).unwrap();
        assert_eq!(
            v.to_string(),
            r#"{"n":100000000000000000001,"f":1.50,"e":-0}"#
        );
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let e = parse_strict(r#"{"a":1,"a":2}"#).unwrap_err().to_string();
        assert!(e.contains("duplicate key `a`"), "{e}");
        assert!(parse_strict(r#"{"x":[{"b":1,"b":1}]}"#).is_err());
        assert!(
            parse_strict(r#"{"a":{"a":1}}"#).is_ok(),
            "same key at two depths"
        );
        assert!(parse_strict(r#"{"a":1} x"#).is_err(), "trailing text");
    }

    #[test]
    fn checking_refuses_what_strict_parsing_refuses() {
        for good in [
            r#"{"a":"\ud83d\ude00","b":"\u00e9\\ud800","\u0041":1}"#,
            r#"{"a":{"a":1,"b":[{"a":1},{"a":2}]},"b":{"a":{}},"c":[]}"#,
            r#"{"a":"a","b":"a","\\u0061":1,"n":[1.50,-0,1e999999]}"#,
            "[]",
            "\"text\"",
        ] {
            assert!(check_strict(good).is_ok(), "{good}");
            assert!(parse_strict(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            (
                r#"{"a":"\ud800"}"#,
                "surrogate escape, which names no character, at line 1 column 13",
            ),
            (r#"{"a":"x\udc00y"}"#, "surrogate escape"),
            (r#"{"a":"\ud800\u0041"}"#, "surrogate escape"),
            (r#"{"a":"\ud800x"}"#, "surrogate escape"),
            (r#"{"\ud83d":1}"#, "surrogate escape"),
            (r#"{"a":1,"a":2}"#, "duplicate key `a` at line 1 column 10"),
            (r#"{"a":1,"\u0061":2}"#, "duplicate key `a`"),
            (r#"{"x":[{"k":{"a":1},"k":2}]}"#, "duplicate key `k`"),
            (r#"{"a":1} x"#, "trailing characters"),
            (r#"{"a":1,}"#, "trailing comma"),
        ] {
            let e = error_text(&check_strict(bad).unwrap_err());
            assert!(e.contains(says), "{bad}: {e}");
            assert!(parse_strict(bad).is_err(), "{bad}");
        }
        assert_eq!(
            flaw(&check_strict(r#"{"a":"\udc00"}"#).unwrap_err()),
            Flaw::LoneSurrogate
        );
        assert_eq!(
            flaw(&parse_strict(r#"{"k":1,"k":2}"#).unwrap_err()),
            Flaw::DuplicateKey("k".into())
        );
        assert_eq!(
            flaw(&check_strict(r#"{"a at line 9":1,"a at line 9":2}"#).unwrap_err()),
            Flaw::DuplicateKey("a at line 9".into())
        );
        assert_eq!(
            flaw(&check_strict("{").unwrap_err()),
            Flaw::Other("EOF while parsing an object".into())
        );
        let many = |last: &str| {
            let mut text = String::from("{");
            for k in 0..1000 {
                text += &format!("\"k{k}\":{{\"v\":{k}}},");
            }
            text + &format!("\"{last}\":0}}")
        };
        assert!(check_strict(&many("end")).is_ok());
        let e = check_strict(&many("k500")).unwrap_err().to_string();
        assert!(e.contains("duplicate key `k500`"), "{e}");
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(check_strict(&deep).is_err(), "nesting is bounded");
    }

    #[test]
    fn inexact_numbers_are_found_with_their_path() {
        let v = parse_strict(r#"{"a":{"b":[1,1e99999999999]}}"#).unwrap();
        assert_eq!(
            inexact_number(&v),
            Some(("a.b[1]".to_string(), "1e+99999999999".to_string()))
        );
        assert_eq!(inexact_number(&parse_strict(r#"{"a":1e5}"#).unwrap()), None);
    }

    /// JSON values with objects (keys drawn from a few, so that nesting repeats them),
    /// arrays, text of any characters, and numbers.
    fn values() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
                prop::collection::vec(("[a-e\u{e9}\u{1f600}\"\\\\]{0,3}", inner), 0..24)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// What serde_json writes from a value passes the check, compact or pretty; the
        /// same object with one of its keys written again is refused for that key.
        #[test]
        fn written_values_pass_and_a_repeated_key_is_refused(v in values(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            };
            prop_assert!(check_strict(&text).is_ok(), "{}", text);
            if let Value::Object(map) = &v
                && let Some((key, _)) = map.iter().next()
            {
                let again = format!("{},{}:0}}", &text[..text.len() - 1], serde_json::to_string(key).unwrap());
                let e = check_strict(&again).unwrap_err().to_string();
                let want = format!("duplicate key `{}`", key.chars().take(60).collect::<String>());
                prop_assert!(e.contains(&want), "{} -> {}", again, e);
            }
        }

        /// On any text made of JSON's own characters, checking and strict parsing agree.
        #[test]
        fn checking_agrees_with_strict_parsing(text in r#"[{}\[\]":,a\\u0-9dD8Ce. -]{0,40}"#) {
            prop_assert_eq!(check_strict(&text).is_ok(), parse_strict(&text).is_ok(), "{}", text);
        }

        /// Any integer and any float agree with their Decimal: same order, and equal when
        /// equal.
        #[test]
        fn decimals_order_like_integers(a in any::<i64>(), b in any::<i64>()) {
            prop_assert_eq!(d(&a.to_string()).cmp(&d(&b.to_string())), a.cmp(&b));
        }

        #[test]
        fn decimals_order_like_floats(a in -1e300f64..1e300, b in -1e300f64..1e300) {
            let text = |f: f64| serde_json::to_string(&f).unwrap();
            prop_assert_eq!(
                d(&text(a)).cmp(&d(&text(b))),
                a.partial_cmp(&b).unwrap()
            );
        }

        /// Scaling the spelling (moving the point, padding zeros) never changes the value.
        #[test]
        fn respelling_keeps_the_value(digits in "[1-9][0-9]{0,30}", shift in -40i64..40, pad in 0usize..5) {
            let plain = format!("{digits}e{shift}");
            let padded = format!("{digits}{}e{}", "0".repeat(pad), shift - pad as i64);
            prop_assert_eq!(d(&plain), d(&padded));
        }
    }
}
