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
        // Labels are only written for a key that fails: this runs for every keyed record.
        let long = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (Label::Key(i), k))
            .chain(parents.iter().map(|p| (Label::Parent(&p.model), &p.key)))
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

/// Which key of a record a message is about.
#[derive(Clone, Copy)]
enum Label<'a> {
    /// An aggregation key, by its index.
    Key(usize),
    /// The key of a parent of this model.
    Parent(&'a str),
}

impl std::fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Label::Key(i) => write!(f, "key {}", i + 1),
            Label::Parent(model) => write!(f, "parent key of {model}"),
        }
    }
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
                key(Label::Key(i), k)?;
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
                key(Label::Parent(&p.model), &p.key)?;
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

fn key(what: Label, key: &str) -> Result<(), String> {
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
    // One strict pass builds nothing and refuses what readers of a view could not agree
    // on: a lone UTF-16 surrogate escape (`"\ud800"`, which names no character; strict
    // parsers refuse it, others garble it) and an object with the same key twice (which
    // readers resolve differently, first or last). Intake refuses both in records.
    if let Err(e) = flowhost_json::check_strict(text) {
        return Err(refusal(name, &e));
    }
    if memchr::memchr2(b'\n', b'\r', text.as_bytes()).is_some() {
        *text = compact(text);
    }
    Ok(())
}

/// Why a view's text was refused, in words a plugin author can act on.
fn refusal(name: &str, e: &serde_json::Error) -> String {
    match flowhost_json::flaw(e) {
        flowhost_json::Flaw::LoneSurrogate => {
            format!("{name} view has {}", flowhost_json::error_text(e))
        }
        flowhost_json::Flaw::DuplicateKey(key) => format!(
            "{name} view has an object with the key {key:?} twice, the second at line {} column {}",
            e.line(),
            e.column()
        ),
        flowhost_json::Flaw::Other(_) => format!(
            "{name} view is not a JSON object: {}",
            flowhost_json::error_text(e)
        ),
    }
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
            (r#"{"a":"\ud800"}"#, 13),
            (r#"{"a":"x\udc00y"}"#, 13),
            (r#"{"a":"\ud800\u0041"}"#, 18),
            (r#"{"\ud83d":1}"#, 9),
            (r#"{"a":["\ud83d\ude00\udfff"]}"#, 25),
        ] {
            let e = refused(bad);
            let want = format!(
                "root view has a lone UTF-16 surrogate escape, which names no character, at line 1 column {at}"
            );
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
            (r#"{"a":1,"a":2}"#, "a", 10),
            (r#"{"a":1,"\u0061":2}"#, "a", 15),
            (r#"{"x":[{"k":{"a":1},"k":2}]}"#, "k", 22),
            (r#"{"k`":1,"k`":2}"#, "k`", 12),
        ] {
            let e = refused(bad);
            let want = format!(
                "root view has an object with the key {key:?} twice, the second at line 1 column {at}"
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
        let e = refused(r#"{"a":1,}"#);
        assert!(
            e.starts_with("root view is not a JSON object: trailing comma"),
            "{e}"
        );
        let mut big = format!("{{\"a\":\"{}\"}}", "x".repeat(100));
        assert!(
            view("root", &mut big, 50)
                .unwrap_err()
                .contains("over the limit")
        );
    }
}
