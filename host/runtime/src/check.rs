//! Guest output is checked before it reaches the database or a log: what a plugin returns
//! for one record (or one reference) either passes these checks or fails for that item
//! alone, with a message that says what was wrong.

use crate::CallError;
use flowhost_core::{Association, Description, Group, Projection};

/// Bounds on what a plugin may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// The longest aggregation or parent key, in bytes (a key must fit the key index).
    pub max_key_bytes: usize,
    /// The most aggregation keys of one record.
    pub max_keys: usize,
    /// The most parents one record may name.
    pub max_parents: usize,
    /// The longest rejection code and message, in bytes.
    pub max_code_bytes: usize,
    pub max_message_bytes: usize,
    /// The largest view (canonical, lineage or root) of one reference, in bytes.
    pub max_view_bytes: usize,
}

impl Default for OutputLimits {
    fn default() -> Self {
        Self {
            max_key_bytes: 512,
            max_keys: 256,
            max_parents: 64,
            max_code_bytes: 64,
            max_message_bytes: 2048,
            max_view_bytes: 4 << 20,
        }
    }
}

/// Checks one record's association. A key longer than the key index takes is
/// [`CallError::KeyTooLong`] (the record's data, not the plugin, is at fault); any other
/// broken rule is [`CallError::Invalid`].
pub(crate) fn association(
    a: &Association,
    d: &Description,
    limits: &OutputLimits,
) -> Result<(), CallError> {
    if let Association::Keyed { keys, parents } = a {
        let long = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (format!("key {}", i + 1), k))
            .chain(
                parents
                    .iter()
                    .map(|p| (format!("parent key of {}", p.model), &p.key)),
            )
            .find(|(_, k)| k.len() > limits.max_key_bytes);
        if let Some((what, k)) = long {
            return Err(CallError::KeyTooLong(format!(
                "{what} is {} bytes long, over the limit of {} bytes of the key index (plugins.max_key_bytes) ({:?}…)",
                k.len(),
                limits.max_key_bytes,
                shorten(k)
            )));
        }
    }
    rules(a, d, limits).map_err(CallError::Invalid)
}

fn rules(a: &Association, d: &Description, limits: &OutputLimits) -> Result<(), String> {
    match a {
        Association::Keyed { keys, parents } => {
            if keys.len() > limits.max_keys {
                return Err(format!(
                    "{} keys for one record, over the limit of {}",
                    keys.len(),
                    limits.max_keys
                ));
            }
            for (i, k) in keys.iter().enumerate() {
                key(&format!("key {}", i + 1), k)?;
            }
            if parents.len() > limits.max_parents {
                return Err(format!(
                    "{} parents for one record, over the limit of {}",
                    parents.len(),
                    limits.max_parents
                ));
            }
            for p in parents {
                if !d.parents.contains(&p.model) {
                    return Err(format!(
                        "parent model {:?} is not one it declared ({})",
                        shorten(&p.model),
                        if d.parents.is_empty() {
                            "none".to_string()
                        } else {
                            d.parents.join(", ")
                        }
                    ));
                }
                key(&format!("parent key of {}", p.model), &p.key)?;
            }
            Ok(())
        }
        Association::Rejected { code, message } => {
            if code.is_empty() || code.len() > limits.max_code_bytes {
                return Err(format!(
                    "rejection code of {} bytes; it must have 1 to {}",
                    code.len(),
                    limits.max_code_bytes
                ));
            }
            if code.chars().any(char::is_control) {
                return Err(format!(
                    "rejection code {:?} contains a control character",
                    shorten(code)
                ));
            }
            if message.len() > limits.max_message_bytes {
                return Err(format!(
                    "rejection message of {} bytes, over the limit of {}",
                    message.len(),
                    limits.max_message_bytes
                ));
            }
            if message.contains('\0') {
                return Err(format!(
                    "rejection message {:?} contains a NUL character",
                    shorten(message)
                ));
            }
            Ok(())
        }
    }
}

fn key(what: &str, key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if key.chars().any(char::is_control) {
        return Err(format!(
            "{what} {:?} contains a control character",
            shorten(key)
        ));
    }
    Ok(())
}

/// The first characters of a guest string, for a message.
fn shorten(text: &str) -> String {
    text.chars().take(40).collect()
}

/// Checks one reference's projection and makes each view one compact line.
pub(crate) fn projection(
    p: &mut Projection,
    group: &Group,
    limits: &OutputLimits,
) -> Result<(), String> {
    if p.reference != group.reference {
        return Err(format!(
            "project returned reference {:?} for group {}",
            shorten(&p.reference),
            group.reference
        ));
    }
    for (name, text) in [
        ("canonical", &mut p.canonical),
        ("lineage", &mut p.lineage),
        ("root", &mut p.root),
    ] {
        view(name, text, limits.max_view_bytes)?;
    }
    for link in &p.parents {
        let known = group.records.iter().any(|k| {
            k.parents
                .iter()
                .any(|l| l.model == link.model && l.reference == link.reference)
        });
        if !known {
            return Err(format!(
                "project named parent {} {:?}, which none of the reference's records has",
                shorten(&link.model),
                shorten(&link.reference)
            ));
        }
    }
    Ok(())
}

/// A view must be one JSON object within the size limit; it is stored and exported as one
/// line, so insignificant whitespace with line breaks is taken out.
fn view(name: &str, text: &mut String, max: usize) -> Result<(), String> {
    if text.len() > max {
        return Err(format!(
            "{name} view of {} bytes, over the limit of {max} bytes",
            text.len()
        ));
    }
    if !text.trim_start().starts_with('{') {
        return Err(format!("{name} view is not a JSON object"));
    }
    // Parsing into `IgnoredAny` checks the text without building values.
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return Err(format!("{name} view is not a JSON object: {e}"));
    }
    // Skipping a value neither decodes its `\u` escapes nor compares an object's keys, so
    // two things pass that readers of a view cannot agree on: a lone UTF-16 surrogate
    // (`"\ud800"`, which names no character; strict parsers refuse it, others garble it)
    // and an object with the same key twice (which readers resolve differently, first or
    // last). Intake refuses both in records; views are held to the same. Intake's
    // `flowhost_json::parse_strict` would find both too, but it builds a `Value` of every
    // view; this pass over the text allocates only for escaped keys and large objects.
    match flaw(text) {
        Some(Flaw::LoneSurrogate(at)) => {
            return Err(format!(
                "{name} view has a lone UTF-16 surrogate escape at byte {at}, which names no character"
            ));
        }
        Some(Flaw::DuplicateKey(at, key)) => {
            return Err(format!(
                "{name} view has an object with the key {:?} twice (the second at byte {at})",
                shorten(&key)
            ));
        }
        None => {}
    }
    if text.bytes().any(|b| b == b'\n' || b == b'\r') {
        *text = compact(text);
    }
    Ok(())
}

/// What [`flaw`] found, at a byte offset.
#[derive(Debug, PartialEq)]
enum Flaw {
    LoneSurrogate(usize),
    DuplicateKey(usize, String),
}

/// Above this many keys an object's keys are looked up in a hash set instead of by a scan.
const KEYS_SCANNED: usize = 16;

/// An open object or array while [`flaw`] walks the text.
struct Open<'a> {
    /// Where this object's keys start in the shared key list (`None` for an array).
    keys_from: Option<usize>,
    /// The keys of a large object, once it has more than [`KEYS_SCANNED`].
    set: Option<std::collections::HashSet<std::borrow::Cow<'a, str>>>,
    /// Whether the next string is a key.
    expect_key: bool,
}

/// One pass over JSON text that serde_json has already found valid: the first `\u` escape
/// of a UTF-16 surrogate that is not half of a high–low pair, or the first object with a
/// key it already has (keys compared as decoded text, so `"a"` and `"\u0061"` are the
/// same). Work and memory grow with the text (keys kept for the objects open at a time).
fn flaw(json: &str) -> Option<Flaw> {
    use std::borrow::Cow;
    let bytes = json.as_bytes();
    let unit = |at: usize| -> Option<u16> {
        let hex = bytes.get(at..at + 4)?;
        u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    };
    let mut open: Vec<Open> = Vec::new();
    let mut keys: Vec<Cow<str>> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'[' => open.push(Open {
                keys_from: (bytes[i] == b'{').then_some(keys.len()),
                set: None,
                expect_key: bytes[i] == b'{',
            }),
            b'}' | b']' => {
                if let Some(Open {
                    keys_from: Some(from),
                    ..
                }) = open.pop()
                {
                    keys.truncate(from);
                }
            }
            b',' => {
                if let Some(top) = open.last_mut() {
                    top.expect_key = top.keys_from.is_some();
                }
            }
            b'"' => {
                let start = i + 1;
                let mut escaped = false;
                i = start;
                // Indexing through `get`: the text is valid, but a host must not panic on
                // what a plugin wrote even if it were not.
                loop {
                    match *bytes.get(i)? {
                        b'"' => break,
                        b'\\' => {}
                        _ => {
                            i += 1;
                            continue;
                        }
                    }
                    escaped = true;
                    if *bytes.get(i + 1)? != b'u' {
                        i += 2;
                        continue;
                    }
                    match unit(i + 2)? {
                        0xD800..=0xDBFF => {
                            let low = (bytes.get(i + 6..i + 8) == Some(b"\\u".as_slice()))
                                .then(|| unit(i + 8))
                                .flatten();
                            if !matches!(low, Some(0xDC00..=0xDFFF)) {
                                return Some(Flaw::LoneSurrogate(i));
                            }
                            i += 12;
                        }
                        0xDC00..=0xDFFF => return Some(Flaw::LoneSurrogate(i)),
                        _ => i += 6,
                    }
                }
                // `i` is at the closing quote.
                if let Some(top) = open.last_mut()
                    && top.expect_key
                {
                    top.expect_key = false;
                    let key: Cow<str> = if escaped {
                        Cow::Owned(serde_json::from_str(&json[start - 1..=i]).ok()?)
                    } else {
                        Cow::Borrowed(&json[start..i])
                    };
                    let from = top.keys_from.unwrap_or(keys.len());
                    let seen = match &mut top.set {
                        Some(set) => !set.insert(key.clone()),
                        None => keys[from..].contains(&key),
                    };
                    if seen {
                        return Some(Flaw::DuplicateKey(start - 1, key.into_owned()));
                    }
                    if top.set.is_none() && keys.len() - from >= KEYS_SCANNED {
                        let mut set: std::collections::HashSet<Cow<str>> =
                            keys.drain(from..).collect();
                        set.insert(key);
                        top.set = Some(set);
                    } else if top.set.is_none() {
                        keys.push(key);
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Valid JSON text without the whitespace between tokens (strings, numbers kept as written).
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowhost_core::{Kind, ParentKey};

    fn description() -> Description {
        Description {
            model: "sensor".into(),
            kind: Kind::Entity,
            version: "1".into(),
            parents: vec!["device".into()],
            policies: Vec::new(),
        }
    }

    fn keyed(keys: &[&str]) -> Association {
        Association::Keyed {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            parents: Vec::new(),
        }
    }

    #[test]
    fn keys_are_bounded_and_clean() {
        let (d, l) = (description(), OutputLimits::default());
        assert!(association(&keyed(&["serial:A"]), &d, &l).is_ok());
        let long = "k".repeat(513);
        let e = association(&keyed(&["a", &long]), &d, &l).unwrap_err();
        assert!(
            !e.is_plugin_fault(),
            "a long key is the data's, not the plugin's"
        );
        assert!(
            e.to_string()
                .contains("key 2 is 513 bytes long, over the limit of 512"),
            "{e}"
        );
        let e = association(&keyed(&["a\0b"]), &d, &l).unwrap_err();
        assert!(e.is_plugin_fault());
        let e = e.to_string();
        assert!(e.contains("control character"), "{e}");
        assert!(association(&keyed(&[""]), &d, &l).is_err());
        let parent = Association::Keyed {
            keys: Vec::new(),
            parents: vec![ParentKey {
                model: "building".into(),
                key: "src:a:b".into(),
            }],
        };
        let e = association(&parent, &d, &l).unwrap_err().to_string();
        assert!(e.contains("not one it declared (device)"), "{e}");
    }

    #[test]
    fn rejections_are_bounded_and_have_no_nul() {
        let (d, l) = (description(), OutputLimits::default());
        let reject = |code: &str, message: &str| Association::Rejected {
            code: code.into(),
            message: message.into(),
        };
        assert!(association(&reject("BAD", "no serial"), &d, &l).is_ok());
        assert!(
            association(&reject("BAD", "a\0b"), &d, &l)
                .unwrap_err()
                .to_string()
                .contains("NUL")
        );
        assert!(association(&reject("", "m"), &d, &l).is_err());
        assert!(association(&reject("BAD", &"m".repeat(3000)), &d, &l).is_err());
    }

    #[test]
    fn views_become_one_compact_line() {
        let mut text = "{\n  \"a b\": [1, \"x\\n y\"],\n  \"n\": 1.50\n}".to_string();
        view("canonical", &mut text, 1 << 20).unwrap();
        assert_eq!(text, r#"{"a b":[1,"x\n y"],"n":1.50}"#);
        let mut list = "[1]".to_string();
        assert!(view("root", &mut list, 1 << 20).is_err());
        let passes = |text: &str| view("canonical", &mut text.to_string(), 1 << 20).is_ok();
        let refused = |text: &str| view("root", &mut text.to_string(), 1 << 20).unwrap_err();
        // Escapes: pairs and plain characters pass, a surrogate alone does not, wherever it is.
        for good in [
            r#"{"a":"\ud83d\ude00","b":"\u00e9\\ud800","\u0041":1}"#,
            r#"{"a":"\\\\u","b":"\"\\"}"#,
        ] {
            assert!(passes(good), "{good}");
        }
        for (bad, at) in [
            (r#"{"a":"\ud800"}"#, 6),
            (r#"{"a":"x\udc00y"}"#, 7),
            (r#"{"a":"\ud800\u0041"}"#, 6),
            (r#"{"\ud83d":1}"#, 2),
            (r#"{"a":["\ud83d\ude00\udfff"]}"#, 19),
        ] {
            let e = refused(bad);
            let want = format!("root view has a lone UTF-16 surrogate escape at byte {at}");
            assert!(e.contains(&want), "{bad}: {e}");
        }
        // Keys: the same key twice in one object is refused, compared as decoded text, in
        // small objects and in large ones; the same key in different objects is not.
        for good in [
            r#"{"a":{"a":1,"b":[{"a":1},{"a":2}]},"b":{"a":{}},"c":[]}"#,
            r#"{"a":"a","b":"a","\\u0061":1}"#,
        ] {
            assert!(passes(good), "{good}");
        }
        for (bad, key, at) in [
            (r#"{"a":1,"a":2}"#, "a", 7),
            (r#"{"a":1,"\u0061":2}"#, "a", 7),
            (r#"{"x":[{"k":{"a":1},"k":2}]}"#, "k", 19),
            (r#"{"a":{"b":1},"c":2,"a":3}"#, "a", 19),
        ] {
            let e = refused(bad);
            let want = format!(
                "root view has an object with the key {key:?} twice (the second at byte {at})"
            );
            assert!(e.contains(&want), "{bad}: {e}");
        }
        let many = |last: &str| {
            let mut text = String::from("{");
            for k in 0..1000 {
                text += &format!("\"k{k}\":{{\"v\":{k}}},");
            }
            text + &format!("\"{last}\":0}}")
        };
        assert!(passes(&many("end")));
        let e = refused(&many("k500"));
        assert!(e.contains("the key \"k500\" twice"), "{e}");
        let mut big = format!("{{\"a\":\"{}\"}}", "x".repeat(100));
        assert!(
            view("root", &mut big, 50)
                .unwrap_err()
                .contains("over the limit")
        );
    }

    use proptest::prelude::*;

    /// JSON values with objects (keys drawn from a few, so that nesting repeats them),
    /// arrays, text of any characters, and numbers.
    fn values() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<String>().prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                prop::collection::vec(("[a-e\u{e9}\u{1f600}\"\\\\]{0,3}", inner), 0..24)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// What serde_json writes from a value has no flaw (its maps hold each key once,
        /// Rust text has no lone surrogates); the same object with one of its keys written
        /// again is found, at that key.
        #[test]
        fn written_values_pass_and_a_repeated_key_is_found(v in values(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            };
            prop_assert_eq!(flaw(&text), None, "{}", text);
            if let serde_json::Value::Object(map) = &v
                && let Some((key, _)) = map.iter().next()
            {
                let inner = serde_json::to_string(&v).unwrap();
                let again = format!("{},{}:0}}", &inner[..inner.len() - 1], serde_json::to_string(key).unwrap());
                let found = flaw(&again);
                prop_assert!(
                    matches!(&found, Some(Flaw::DuplicateKey(_, k)) if k == key),
                    "{} -> {:?}", again, found
                );
            }
        }
    }
}
