//! The quick pass in front of [`crate::check_strict`]: one walk over the bytes that says
//! whether a text certainly passes the strict check, building nothing and allocating only
//! the list of keys of the objects open at a time.
//!
//! It only ever answers "passes" for a text the full check (serde_json's walk) accepts;
//! whatever it is unsure of (a key with an escape, a key that is serde_json's number token,
//! nesting near the recursion limit) it leaves to the full check, as it does every text it
//! refuses, so that the error and its position are serde_json's. The property test below and
//! the `canonical_json` fuzz target hold the two to the same answers.
//!
//! Views come back from every `project` call and are checked whole; serde_json's walk took
//! about ten instructions a byte of them, this pass a few.
//!
//! [`object_members`] is the same walk over one object that also says where each member's
//! key and value lie: the SDK locates a payload's members with it inside a plugin, where
//! serde_json's walk (through its generic visitor machinery) was several times slower than
//! natively.

use std::collections::HashSet;
use std::ops::Range;

/// Deeper nesting than this is left to the full check (serde_json stops at 128).
const MAX_DEPTH: usize = 100;

/// Above this many keys an object's keys are looked up in a hash set instead of by a scan.
const KEYS_SCANNED: usize = 16;

/// Whether `text` is one JSON value with no key twice in an object and no lone surrogate
/// escape. `false` means "not certain": the caller runs the full check.
pub(crate) fn passes(text: &str) -> bool {
    let mut walk = Walk {
        b: text.as_bytes(),
        i: 0,
        keys: Vec::new(),
        strict: true,
        members: None,
    };
    walk.value(0) && {
        walk.space();
        walk.i == walk.b.len()
    }
}

/// One member of an object located by [`object_members`]: where its key's text lies
/// (between the quotes), whether that text holds an escape, and where its value lies (from
/// its first byte to its last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSpan {
    pub key: Range<usize>,
    pub key_escaped: bool,
    pub value: Range<usize>,
}

/// The members of the one JSON object that `text` is, in document order, located in one
/// walk over the bytes that builds nothing; a key that appears twice is listed twice.
/// `None` means "not certain" (not an object, not valid JSON, or anything the quick pass
/// leaves to serde_json: a lone surrogate escape, nesting near the recursion limit): the
/// caller then locates the members with serde_json, whose verdict stands. Only the syntax
/// of nested values is checked (a nested object may hold a key twice, as a payload may).
pub fn object_members(text: &str) -> Option<Vec<MemberSpan>> {
    let mut walk = Walk {
        b: text.as_bytes(),
        i: 0,
        keys: Vec::new(),
        strict: false,
        members: Some(Vec::with_capacity(8)),
    };
    walk.space();
    if walk.peek() != Some(b'{') || !walk.object(1) {
        return None;
    }
    walk.space();
    if walk.i != walk.b.len() {
        return None;
    }
    walk.members
}

struct Walk<'a> {
    b: &'a [u8],
    i: usize,
    /// The keys of the objects open at a time, each object's after its parents'.
    keys: Vec<&'a [u8]>,
    /// Whether objects are checked for a key twice (and keys kept for that); otherwise
    /// only the syntax is.
    strict: bool,
    /// Where the members of the outermost object lie, when asked for ([`object_members`]).
    members: Option<Vec<MemberSpan>>,
}

impl<'a> Walk<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn value(&mut self, depth: usize) -> bool {
        self.space();
        match self.peek() {
            Some(b'{') => depth < MAX_DEPTH && self.object(depth + 1),
            Some(b'[') => depth < MAX_DEPTH && self.array(depth + 1),
            Some(b'"') => self.string().is_some(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => false,
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let found = self.b[self.i..].starts_with(word);
        self.i += word.len();
        found
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`; serde_json keeps any such text as
    /// a number (arbitrary precision), however long.
    fn number(&mut self) -> bool {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return false,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.some_digits() {
                return false;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !self.some_digits() {
                return false;
            }
        }
        true
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> bool {
        let from = self.i;
        self.digits();
        self.i > from
    }

    /// A string from its opening quote: its raw bytes between the quotes and whether it has
    /// an escape; `None` when it is not a valid string (an unescaped control character, a
    /// bad escape, a lone surrogate, no closing quote).
    fn string(&mut self) -> Option<(&'a [u8], bool)> {
        let b = self.b;
        self.i += 1;
        let from = self.i;
        let mut escaped = false;
        loop {
            self.skip_plain();
            match *b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some((&b[from..self.i - 1], escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.i += 1;
                    match *b.get(self.i)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => self.unicode()?,
                        _ => return None,
                    }
                }
                0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
    }

    /// Moves past the bytes of a string that need no attention, eight at a time: stops at
    /// the first quote, backslash or control character, or where fewer than eight bytes
    /// are left (the caller then goes byte by byte).
    fn skip_plain(&mut self) {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        // The high bit of each byte that is zero; the lowest one marked is always right
        // (a borrow only runs upwards from a zero byte, which is marked itself).
        let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            let marked = zero(word ^ (ONES * b'"' as u64))
                | zero(word ^ (ONES * b'\\' as u64))
                // Bytes below 0x20; again the lowest one marked is one.
                | (word.wrapping_sub(ONES * 0x20) & !word & HIGH);
            if marked != 0 {
                self.i += (marked.trailing_zeros() / 8) as usize;
                return;
            }
            self.i += 8;
        }
    }

    /// `\uXXXX` from its `u`; a high surrogate must be followed by `\u` and a low one.
    fn unicode(&mut self) -> Option<()> {
        let unit = self.hex4()?;
        match unit {
            0xD800..=0xDBFF => {
                if self.b.get(self.i..self.i + 2)? != b"\\u" {
                    return None;
                }
                self.i += 1;
                matches!(self.hex4()?, 0xDC00..=0xDFFF).then_some(())
            }
            0xDC00..=0xDFFF => None,
            _ => Some(()),
        }
    }

    /// The four hex digits after a `u` (the `u` included in what is consumed).
    fn hex4(&mut self) -> Option<u16> {
        let digits = self.b.get(self.i + 1..self.i + 5)?;
        let mut unit = 0u16;
        for &d in digits {
            unit = unit << 4 | (d as char).to_digit(16)? as u16;
        }
        self.i += 5;
        Some(unit)
    }

    fn array(&mut self, depth: usize) -> bool {
        self.i += 1;
        self.space();
        if self.peek() == Some(b']') {
            self.i += 1;
            return true;
        }
        loop {
            if !self.value(depth) {
                return false;
            }
            self.space();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return true;
                }
                _ => return false,
            }
        }
    }

    /// A key of the object whose keys start at `from` in `keys` (or are in `set`, once
    /// there are many): true when it is certainly not one of the object's earlier keys.
    fn strict_key(&mut self, from: usize, set: &mut Option<HashSet<&'a [u8]>>) -> bool {
        // Keys with escapes are compared decoded by the full check; so is serde_json's own
        // number token, which it reads as a number rather than as a key.
        let Some((key, false)) = self.string() else {
            return false;
        };
        if key == crate::NUMBER_TOKEN.as_bytes() {
            return false;
        }
        let seen = match set {
            Some(set) => !set.insert(key),
            None => self.keys[from..].contains(&key),
        };
        if seen {
            return false;
        }
        if set.is_none() && self.keys.len() - from >= KEYS_SCANNED {
            let mut large: HashSet<&[u8]> = self.keys.drain(from..).collect();
            large.insert(key);
            *set = Some(large);
        } else if set.is_none() {
            self.keys.push(key);
        }
        true
    }

    fn object(&mut self, depth: usize) -> bool {
        self.i += 1;
        self.space();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return true;
        }
        let from = self.keys.len();
        let mut set: Option<HashSet<&'a [u8]>> = None;
        loop {
            self.space();
            if self.peek() != Some(b'"') {
                return false;
            }
            let key_from = self.i + 1;
            let key_escaped = if !self.strict {
                match self.string() {
                    Some((_, escaped)) => escaped,
                    None => return false,
                }
            } else if self.strict_key(from, &mut set) {
                // The strict walk leaves keys with escapes to serde_json.
                false
            } else {
                return false;
            };
            // The key ends before its closing quote.
            let key = key_from..self.i - 1;
            self.space();
            if self.peek() != Some(b':') {
                return false;
            }
            self.i += 1;
            self.space();
            let value_from = self.i;
            if !self.value(depth) {
                return false;
            }
            if depth == 1
                && let Some(members) = &mut self.members
            {
                members.push(MemberSpan {
                    key,
                    key_escaped,
                    value: value_from..self.i,
                });
            }
            self.space();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    self.keys.truncate(from);
                    return true;
                }
                _ => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::passes;
    use proptest::prelude::*;

    /// What the full check alone says.
    fn walk(text: &str) -> bool {
        crate::check_strict_walk(text).is_ok()
    }

    #[test]
    fn passes_only_what_the_full_check_passes() {
        for text in [
            r#"{"a":"\ud83d\ude00","b":"\u00e9\\ud800","c":1}"#,
            r#"{"a":{"a":1,"b":[{"a":1},{"a":2}]},"b":{"a":{}},"c":[]}"#,
            r#" {"n":[1.50,-0,1e999999,0.5E+3,-12e-7],"t":true,"f":false,"z":null} "#,
            "[]",
            "\"text\"",
            "0",
            "\t[1, 2 ,3]\r\n",
        ] {
            assert!(passes(text), "{text}");
            assert!(walk(text), "{text}");
        }
        for text in [
            "",
            " ",
            r#"{"a":"\ud800"}"#,
            r#"{"a":"x\udc00y"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            r#"{"a":"\ud800x"}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"x":[{"k":{"a":1},"k":2}]}"#,
            r#"{"a":1} x"#,
            r#"{"a":1,}"#,
            "[1,]",
            "[01]",
            "[1.]",
            "[.5]",
            "[1e]",
            "[-]",
            "[+1]",
            "[tru]",
            "[nul]",
            "{\"a\":\"tab\there\"}",
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a""#,
            r#"{"a":}"#,
            r#"{"$serde_json::private::Number":"1"}"#,
        ] {
            assert!(!passes(text), "{text}");
        }
        // Left to the full check, which passes them.
        for text in [
            r#"{"\u0061":1,"b":2}"#,
            &("[".repeat(120) + &"]".repeat(120)),
        ] {
            assert!(!passes(text), "{text}");
            assert!(walk(text), "{text}");
        }
        // Strings long enough for the eight-byte steps, with what stops them at each place.
        for at in 0..20 {
            let plain = "é".repeat(at / 2) + &"x".repeat(at % 2);
            assert!(
                passes(&format!(r#"{{"a":"{plain}\n{plain}{plain}"}}"#)),
                "{at}"
            );
            assert!(passes(&format!(
                r#"{{"a":"{plain}\"{plain}","b":"{plain}"}}"#
            )));
            assert!(
                !passes(&format!("{{\"a\":\"{plain}\u{1f}{plain}\"}}")),
                "{at}"
            );
            assert!(
                !passes(&format!("{{\"a\":\"{plain}\t{plain}{plain}\"}}")),
                "{at}"
            );
            assert!(
                !passes(&format!(r#"{{"a":"{plain}{plain}"#)),
                "{at}: unterminated"
            );
            assert!(
                !passes(&format!(r#"{{"{plain}":1,"{plain}":2}}"#)),
                "{at}: twice"
            );
        }
        let many = |last: &str| {
            let mut text = String::from("{");
            for k in 0..1000 {
                text += &format!("\"k{k}\":{{\"v\":{k}}},");
            }
            text + &format!("\"{last}\":0}}")
        };
        assert!(passes(&many("end")));
        assert!(!passes(&many("k500")));
    }

    /// JSON-ish text: the pieces a JSON text is made of, in any order.
    fn jsonish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("{".to_string()),
            Just("}".to_string()),
            Just("[".to_string()),
            Just("]".to_string()),
            Just(",".to_string()),
            Just(":".to_string()),
            Just(" ".to_string()),
            Just("\"a\"".to_string()),
            Just("\"b\"".to_string()),
            Just("\"\\u0061\"".to_string()),
            Just("\"\\ud800\"".to_string()),
            Just("\"\\ud83d\\ude00\"".to_string()),
            Just("\"\\n\\\"\"".to_string()),
            Just("\"\u{1}\"".to_string()),
            Just("true".to_string()),
            Just("null".to_string()),
            "-?[0-9]{1,3}(\\.[0-9]{0,2})?([eE][+-]?[0-9]{0,2})?",
            "\"[a-c\\\\\"é]{0,3}\"",
        ];
        prop::collection::vec(piece, 0..24).prop_map(|p| p.concat())
    }

    /// Objects and arrays that are valid JSON more often than not.
    fn nested() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("1".to_string()),
            Just("\"x\"".to_string()),
            Just("null".to_string()),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec(("[a-d]", inner), 0..4).prop_map(|v| {
                    let members: Vec<String> =
                        v.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn never_passes_what_the_full_check_refuses(text in prop_oneof![jsonish(), nested()]) {
            if passes(&text) {
                prop_assert!(walk(&text), "{}", text);
            }
        }

        #[test]
        fn locates_members_only_of_what_serde_json_reads_as_an_object(
            text in prop_oneof![jsonish(), nested()],
        ) {
            if let Some(members) = super::object_members(&text) {
                let map: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&text).expect("an object");
                for m in &members {
                    let key = &text[m.key.clone()];
                    prop_assert_eq!(m.key_escaped, key.contains('\\'));
                    let value: serde_json::Value = serde_json::from_str(&text[m.value.clone()])
                        .expect("a member's value parses on its own");
                    if !m.key_escaped && members.iter().filter(|n| &text[n.key.clone()] == key).count() == 1 {
                        prop_assert_eq!(map.get(key), Some(&value));
                    }
                }
                prop_assert!(members.len() >= map.len());
            }
        }

        #[test]
        fn passes_plain_valid_objects(text in nested()) {
            // Without escaped keys or deep nesting, the quick pass decides alone.
            prop_assert_eq!(passes(&text), walk(&text), "{}", text);
        }
    }
}
