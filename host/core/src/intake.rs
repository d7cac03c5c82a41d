//! Validation of intake records (one JSON object per NDJSON line).
//!
//! A line becomes an [`IntakeRecord`] or a [`LineError`] that names the field and the
//! problem. Whether the model is known is decided by the caller, which knows the models.

use crate::Source;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// A validated record, ready to be appended to intake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeRecord {
    pub model: String,
    pub source: Source,
    pub external_id: String,
    /// RFC 3339 in UTC.
    pub occurred_at: String,
    pub occurred_micros: i64,
    /// The payload object as JSON text, keys in the order sent.
    pub payload: String,
    /// SHA-256 (hex) of the payload in canonical form (keys sorted): two payloads equal as
    /// JSON values have the same hash.
    pub payload_hash: String,
}

/// What one record may hold; a line over a limit is refused with the limit named. Checked
/// before anything reaches the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntakeLimits {
    /// The longest `id`, in bytes.
    pub max_id_bytes: usize,
    /// The longest `source.system` and `source.adapter`, in bytes.
    pub max_system_bytes: usize,
    /// The largest payload, as compact JSON, in bytes.
    pub max_payload_bytes: usize,
    /// The deepest nesting of objects and arrays in a payload.
    pub max_depth: usize,
    /// The most values (leaves: strings, numbers, booleans, nulls) in one payload.
    pub max_values: usize,
    /// How far ahead of the intake clock `occurred_at` may be (a source's clock skew): a
    /// later time would win every `last` policy until then.
    pub max_future: std::time::Duration,
}

impl Default for IntakeLimits {
    fn default() -> Self {
        Self {
            max_id_bytes: 256,
            max_system_bytes: 64,
            max_payload_bytes: 1 << 20,
            max_depth: 32,
            max_values: 10_000,
            max_future: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

/// Why a line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("not valid UTF-8 (at byte {0})")]
    NotUtf8(usize),
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("a record must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` must be {expected}, got {got}")]
    Type {
        field: &'static str,
        expected: &'static str,
        got: &'static str,
    },
    #[error("field `{0}` must not be empty")]
    Empty(&'static str),
    #[error("field `occurred_at` is not an RFC 3339 time ({0:?}): {1}")]
    Time(String, String),
    #[error("line is {0} bytes, over the limit of {1} bytes")]
    TooLong(usize, usize),
    #[error("unknown model '{model}'; known: {known}")]
    UnknownModel { model: String, known: String },
    #[error("`{0}` contains a NUL character (\\u0000), which cannot be stored")]
    Nul(String),
    #[error("field `{field}` ({value:?}) may not contain {found}: {why}")]
    BadName {
        field: &'static str,
        value: String,
        /// The character found, as a person would name it.
        found: String,
        why: &'static str,
    },
    #[error("field `{field}` is {size} bytes, over the limit of {limit} bytes ({setting})")]
    TooLarge {
        field: &'static str,
        size: usize,
        limit: usize,
        setting: &'static str,
    },
    #[error("field `payload` nests {0} levels deep, over the limit of {1} (intake.max_depth)")]
    TooDeep(String, usize),
    #[error("field `payload` holds {0} values, over the limit of {1} (intake.max_values)")]
    TooManyValues(usize, usize),
    #[error("unknown field `{0}`; {1} has only {2}")]
    UnknownField(String, &'static str, &'static str),
    #[error(
        "number {text} at `payload.{path}` has an exponent beyond ±{} and cannot be compared exactly",
        flowhost_json::MAX_EXPONENT
    )]
    Number { path: String, text: String },
    #[error(
        "field `occurred_at` ({0}) is {1} s ahead of the intake clock, over the limit of {2} s (intake.max_future_s)"
    )]
    Future(String, i64, u64),
}

const RECORD_FIELDS: &[&str] = &["model", "source", "id", "occurred_at", "payload"];
const SOURCE_FIELDS: &[&str] = &["system", "adapter"];

/// Refuses a field that is not one of `known`.
fn only_fields(
    obj: &Map<String, Value>,
    prefix: &str,
    what: &'static str,
    known: &[&str],
    listed: &'static str,
) -> Result<(), LineError> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(LineError::UnknownField(
            format!("{prefix}{}", k.chars().take(60).collect::<String>()),
            what,
            listed,
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn required_string(
    obj: &Map<String, Value>,
    key: &'static str,
    field: &'static str,
) -> Result<String, LineError> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(LineError::Missing(field)),
        Some(Value::String(s)) if s.trim().is_empty() => Err(LineError::Empty(field)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(LineError::Type {
            field,
            expected: "a string",
            got: type_name(other),
        }),
    }
}

/// Validates one line under the default limits. `now` is the intake time, used when
/// `occurred_at` is absent.
pub fn parse_line(line: &[u8], now: DateTime<Utc>) -> Result<IntakeRecord, LineError> {
    parse_line_within(line, now, &IntakeLimits::default())
}

/// Unicode's bidirectional formatting characters (embeddings, overrides, isolates and the
/// implicit marks): invisible, they make the text around them display in another order.
fn reorders(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Refuses a source's `system` or `adapter` holding a character that would let two sources
/// share a name: ':' when it is part of source keys (`src:{system}:{id}`), '/' (lineage
/// names a source `system/adapter/id`), control characters and the characters that reorder
/// the text around them when shown.
fn name_allowed(field: &'static str, text: &str, in_source_key: bool) -> Result<(), LineError> {
    let flaw = text.chars().find_map(|c| {
        let (found, why) = if c == ':' && in_source_key {
            (
                "':'".to_string(),
                "source keys are `src:{system}:{id}`, and a ':' would let two sources share one",
            )
        } else if c == '/' {
            (
                "'/'".to_string(),
                "lineage names a source `system/adapter/id`, and a '/' would let two sources share a name",
            )
        } else if c.is_control() {
            (
                format!("the control character U+{:04X}", c as u32),
                "a name that is shown to people must show as what it is",
            )
        } else if reorders(c) {
            (
                format!("the bidirectional formatting character U+{:04X}", c as u32),
                "it reorders the text around it when shown, so one name could display as another's",
            )
        } else {
            return None;
        };
        Some((found, why))
    });
    match flaw {
        None => Ok(()),
        Some((found, why)) => Err(LineError::BadName {
            field,
            value: text.chars().take(64).collect(),
            found,
            why,
        }),
    }
}

/// Validates one line under `limits`.
pub fn parse_line_within(
    line: &[u8],
    now: DateTime<Utc>,
    limits: &IntakeLimits,
) -> Result<IntakeRecord, LineError> {
    let text = std::str::from_utf8(line).map_err(|e| LineError::NotUtf8(e.valid_up_to()))?;
    // Strict: an object with a key twice is refused (serde_json alone keeps one value).
    let value: Value = flowhost_json::parse_strict(text).map_err(|e| {
        // serde_json stops at 128 levels, before any limit of ours could be looked at.
        if e.to_string().starts_with("recursion limit exceeded") {
            LineError::TooDeep("more than 128".into(), limits.max_depth)
        } else {
            LineError::Json(flowhost_json::error_text(&e))
        }
    })?;
    // JSON can carry NUL only escaped; neither database stores it in text, and one such
    // record must not fail the batch it would be stored with.
    if text.contains("u0000") {
        let nul = |key: Option<&str>, v: &Value| {
            key.is_some_and(|k| k.contains('\0'))
                || matches!(v, Value::String(s) if s.contains('\0'))
        };
        if let Some((path, _)) = flowhost_json::find(&value, &nul) {
            return Err(LineError::Nul(path.replace('\0', "\\u0000")));
        }
    }
    let Value::Object(obj) = value else {
        return Err(LineError::NotAnObject(type_name(&value)));
    };
    // A misspelt field would otherwise be dropped in silence (`occured_at`: the record
    // would take the intake time).
    only_fields(
        &obj,
        "",
        "a record",
        RECORD_FIELDS,
        "model, source, id, occurred_at, payload",
    )?;
    let model = required_string(&obj, "model", "model")?;
    let source = match obj.get("source") {
        None | Some(Value::Null) => return Err(LineError::Missing("source")),
        Some(Value::Object(s)) => s,
        Some(other) => {
            return Err(LineError::Type {
                field: "source",
                expected: "an object",
                got: type_name(other),
            });
        }
    };
    only_fields(
        source,
        "source.",
        "`source`",
        SOURCE_FIELDS,
        "system, adapter",
    )?;
    let system = required_string(source, "system", "source.system")?;
    name_allowed("source.system", &system, true)?;
    let bounded = |field, text: &str, limit, setting| {
        if text.len() > limit {
            Err(LineError::TooLarge {
                field,
                size: text.len(),
                limit,
                setting,
            })
        } else {
            Ok(())
        }
    };
    bounded(
        "source.system",
        &system,
        limits.max_system_bytes,
        "intake.max_system_bytes",
    )?;
    let adapter = match source.get("adapter") {
        None | Some(Value::Null) => system.clone(),
        Some(Value::String(s)) if s.trim().is_empty() => system.clone(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(LineError::Type {
                field: "source.adapter",
                expected: "a string",
                got: type_name(other),
            });
        }
    };
    name_allowed("source.adapter", &adapter, false)?;
    bounded(
        "source.adapter",
        &adapter,
        limits.max_system_bytes,
        "intake.max_system_bytes",
    )?;
    let external_id = required_string(&obj, "id", "id")?;
    bounded(
        "id",
        &external_id,
        limits.max_id_bytes,
        "intake.max_id_bytes",
    )?;
    let payload = match obj.get("payload") {
        None | Some(Value::Null) => return Err(LineError::Missing("payload")),
        Some(Value::Object(p)) => p,
        Some(other) => {
            return Err(LineError::Type {
                field: "payload",
                expected: "an object",
                got: type_name(other),
            });
        }
    };
    let occurred: DateTime<Utc> = match obj.get("occurred_at") {
        None | Some(Value::Null) => now,
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s.trim())
            .map_err(|e| LineError::Time(s.clone(), e.to_string()))?
            .with_timezone(&Utc),
        Some(other) => {
            return Err(LineError::Type {
                field: "occurred_at",
                expected: "an RFC 3339 string",
                got: type_name(other),
            });
        }
    };
    let ahead = occurred.signed_duration_since(now);
    if ahead.num_seconds() > limits.max_future.as_secs() as i64 {
        return Err(LineError::Future(
            occurred.to_rfc3339_opts(SecondsFormat::Secs, true),
            ahead.num_seconds(),
            limits.max_future.as_secs(),
        ));
    }
    let (depth, values) = shape(payload);
    if depth > limits.max_depth {
        return Err(LineError::TooDeep(depth.to_string(), limits.max_depth));
    }
    if values > limits.max_values {
        return Err(LineError::TooManyValues(values, limits.max_values));
    }
    let payload_value = Value::Object(payload.clone());
    if let Some((path, text)) = flowhost_json::inexact_number(&payload_value) {
        return Err(LineError::Number {
            path,
            text: text.chars().take(40).collect(),
        });
    }
    // Numbers keep their text (serde_json's arbitrary_precision): the payload is stored as
    // sent, less insignificant whitespace.
    let payload_text = payload_value.to_string();
    bounded(
        "payload",
        &payload_text,
        limits.max_payload_bytes,
        "intake.max_payload_bytes",
    )?;
    Ok(IntakeRecord {
        model,
        source: Source { adapter, system },
        external_id,
        occurred_at: occurred.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        occurred_micros: occurred.timestamp_micros(),
        payload_hash: payload_hash(&payload_value),
        payload: payload_text,
    })
}

/// How deep a payload nests (the payload object itself is level 1) and how many values
/// (leaves) it holds.
fn shape(payload: &Map<String, Value>) -> (usize, usize) {
    fn walk(value: &Value, depth: usize, deepest: &mut usize, values: &mut usize) {
        match value {
            Value::Object(map) => {
                *deepest = (*deepest).max(depth + 1);
                for v in map.values() {
                    walk(v, depth + 1, deepest, values);
                }
            }
            Value::Array(items) => {
                *deepest = (*deepest).max(depth + 1);
                for v in items {
                    walk(v, depth + 1, deepest, values);
                }
            }
            _ => *values += 1,
        }
    }
    let (mut deepest, mut values) = (1, 0);
    for v in payload.values() {
        walk(v, 1, &mut deepest, &mut values);
    }
    (deepest, values)
}

/// SHA-256 (hex) of a JSON value in canonical form (keys sorted, numbers by exact value):
/// two payloads equal as JSON values have the same hash.
pub fn payload_hash(value: &Value) -> String {
    let mut hasher = Sha256::new();
    flowhost_json::canonical(value, &mut |bytes| hasher.update(bytes));
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn err(line: &str) -> String {
        parse_line(line.as_bytes(), now()).unwrap_err().to_string()
    }

    #[test]
    fn nul_characters_are_refused_with_their_place() {
        let base = r#"{"model":"device","source":{"system":"bms","adapter":"a"},"occurred_at":"2026-03-01T10:00:00Z","#;
        let e = err(&format!(
            r#"{base}"id":"D-1","payload":{{"tags":["ok","x\u0000"]}}}}"#
        ));
        assert!(e.contains("`payload.tags[1]` contains a NUL"), "{e}");
        let e = err(&format!(r#"{base}"id":"D\u0000","payload":{{}}}}"#));
        assert!(e.contains("`id` contains a NUL"), "{e}");
        // An escaped backslash before "u0000" is no NUL.
        parse_line(
            format!(r#"{base}"id":"D-1","payload":{{"path":"C:\\u0000"}}}}"#).as_bytes(),
            now(),
        )
        .unwrap();
    }

    #[test]
    fn a_full_record() {
        let r = parse_line(
            br#"{"model":"device","source":{"system":"bms","adapter":"bms-v2"},"id":"D-1","occurred_at":"2026-03-01T11:00:00+01:00","payload":{"b":1,"a":"x"}}"#,
            now(),
        )
        .unwrap();
        assert_eq!(r.model, "device");
        assert_eq!(r.source.adapter, "bms-v2");
        assert_eq!(r.occurred_at, "2026-03-01T10:00:00Z");
        assert_eq!(r.payload, r#"{"b":1,"a":"x"}"#);
    }

    #[test]
    fn defaults_and_hash_ignore_key_order() {
        let a = parse_line(
            br#"{"model":"m","source":{"system":"s"},"id":"1","payload":{"a":1,"b":[1,{"x":2,"y":3}]}}"#,
            now(),
        )
        .unwrap();
        let b = parse_line(
            br#"{"model":"m","source":{"system":"s","adapter":"z"},"id":"1","payload":{"b":[1,{"y":3,"x":2}],"a":1}}"#,
            now(),
        )
        .unwrap();
        assert_eq!(a.source.adapter, "s");
        assert_eq!(a.occurred_at, "2026-06-01T00:00:00Z");
        assert_eq!(a.payload_hash, b.payload_hash);
    }

    #[test]
    fn duplicates_compare_numbers_by_exact_value_and_payloads_keep_their_text() {
        let rec = |payload: &str| {
            parse_line(
                format!(
                    r#"{{"model":"m","source":{{"system":"s"}},"id":"1","payload":{payload}}}"#
                )
                .as_bytes(),
                now(),
            )
            .unwrap()
        };
        let one = rec(r#"{"n":1}"#);
        for same in [r#"{"n":1.0}"#, r#"{"n":1e0}"#, r#"{ "n" : 10E-1 }"#] {
            assert_eq!(rec(same).payload_hash, one.payload_hash, "{same}");
        }
        assert_ne!(rec(r#"{"n":"1"}"#).payload_hash, one.payload_hash);
        let big = rec(r#"{"n":100000000000000000001}"#);
        assert_eq!(
            big.payload, r#"{"n":100000000000000000001}"#,
            "kept as sent"
        );
        assert_ne!(
            big.payload_hash,
            rec(r#"{"n":100000000000000000000}"#).payload_hash
        );
        assert_eq!(
            rec(r#"{"n":-0}"#).payload_hash,
            rec(r#"{"n":0}"#).payload_hash
        );
        assert_eq!(rec(r#"{"n":1.50}"#).payload, r#"{"n":1.50}"#);
    }

    #[test]
    fn duplicate_keys_wild_exponents_and_far_future_times_are_refused() {
        let e = err(r#"{"model":"m","source":{"system":"s"},"id":"1","payload":{"a":1,"a":2}}"#);
        assert!(e.contains("duplicate key `a`"), "{e}");
        let e = err(
            r#"{"model":"m","source":{"system":"s"},"id":"1","payload":{"a":[1e99999999999]}}"#,
        );
        // serde_json writes an exponent's sign: the same value.
        assert!(e.contains("number 1e+99999999999 at `payload.a[0]`"), "{e}");
        let e = err(
            r#"{"model":"m","source":{"system":"s"},"id":"1","occurred_at":"2026-06-03T00:00:01Z","payload":{}}"#,
        );
        assert!(e.contains("172801 s ahead of the intake clock"), "{e}");
        assert!(
            parse_line(
                br#"{"model":"m","source":{"system":"s"},"id":"1","occurred_at":"2026-06-01T23:00:00Z","payload":{}}"#,
                now()
            )
            .is_ok(),
            "within a day is a clock's skew"
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err("{").starts_with("invalid JSON"));
        assert_eq!(err("[1]"), "a record must be a JSON object, got an array");
        let limited = |line: &str| {
            let limits = IntakeLimits {
                max_id_bytes: 4,
                max_system_bytes: 3,
                max_payload_bytes: 20,
                max_depth: 3,
                max_values: 4,
                max_future: std::time::Duration::from_secs(60),
            };
            parse_line_within(line.as_bytes(), now(), &limits)
                .map(|_| "ok".to_string())
                .unwrap_or_else(|e| e.to_string())
        };
        assert_eq!(
            limited(r#"{"model":"m","source":{"system":"s"},"id":"12345","payload":{}}"#),
            "field `id` is 5 bytes, over the limit of 4 bytes (intake.max_id_bytes)"
        );
        assert_eq!(
            limited(r#"{"model":"m","source":{"system":"sys1"},"id":"1","payload":{}}"#),
            "field `source.system` is 4 bytes, over the limit of 3 bytes (intake.max_system_bytes)"
        );
        assert_eq!(
            limited(
                r#"{"model":"m","source":{"system":"s","adapter":"long"},"id":"1","payload":{}}"#
            ),
            "field `source.adapter` is 4 bytes, over the limit of 3 bytes (intake.max_system_bytes)"
        );
        assert_eq!(
            limited(r#"{"model":"m","source":{"system":"s"},"id":"1","payload":{"a":{"b":[1]}}}"#),
            "ok"
        );
        assert_eq!(
            limited(
                r#"{"model":"m","source":{"system":"s"},"id":"1","payload":{"a":{"b":[[1]]}}}"#
            ),
            "field `payload` nests 4 levels deep, over the limit of 3 (intake.max_depth)"
        );
        assert_eq!(
            limited(
                r#"{"model":"m","source":{"system":"s"},"id":"1","payload":{"a":[1,2,3],"b":null,"c":true}}"#
            ),
            "field `payload` holds 5 values, over the limit of 4 (intake.max_values)"
        );
        assert_eq!(
            limited(
                r#"{"model":"m","source":{"system":"s"},"id":"1","payload":{"text":"abcdefghijklmnop"}}"#
            ),
            "field `payload` is 27 bytes, over the limit of 20 bytes (intake.max_payload_bytes)"
        );
        let deep = format!(
            r#"{{"model":"m","source":{{"system":"s"}},"id":"1","payload":{{"a":{}1{}}}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(
            err(&deep),
            "field `payload` nests more than 128 levels deep, over the limit of 32 (intake.max_depth)"
        );
        assert_eq!(
            err(r#"{"model":"m","source":{"system":"a:b"},"id":"c","payload":{}}"#),
            "field `source.system` (\"a:b\") may not contain ':': source keys are `src:{system}:{id}`, and a ':' would let two sources share one"
        );
        assert_eq!(
            err(r#"{"model":"m","source":{"system":"a\tb"},"id":"c","payload":{}}"#),
            "field `source.system` (\"a\\tb\") may not contain the control character U+0009: a name that is shown to people must show as what it is"
        );
        // System `a/b` with adapter `c`, and system `a` with adapter `b/c`, would both read
        // `a/b/c/<id>` in lineage.
        for (source, field) in [
            (r#"{"system":"a/b"}"#, "source.system"),
            (r#"{"system":"a","adapter":"b/c"}"#, "source.adapter"),
        ] {
            let line = format!(r#"{{"model":"m","source":{source},"id":"c","payload":{{}}}}"#);
            assert!(
                err(&line).starts_with(&format!("field `{field}`"))
                    && err(&line).contains(
                        "may not contain '/': lineage names a source `system/adapter/id`"
                    ),
                "{}",
                err(&line)
            );
        }
        // An adapter is not part of a source key: a ':' is fine there.
        assert!(
            parse_line(
                br#"{"model":"m","source":{"system":"a","adapter":"v:2"},"id":"c","payload":{}}"#,
                Utc::now()
            )
            .is_ok()
        );
        // A right-to-left override would show `bms\u{202E}mrc` as another name.
        for c in ['\u{202E}', '\u{2066}', '\u{200F}', '\u{061C}'] {
            for source in [
                format!(r#"{{"system":"bms{c}crm"}}"#),
                format!(r#"{{"system":"bms","adapter":"v{c}1"}}"#),
            ] {
                let line = format!(r#"{{"model":"m","source":{source},"id":"c","payload":{{}}}}"#);
                assert!(
                    err(&line).contains(&format!(
                        "may not contain the bidirectional formatting character U+{:04X}",
                        c as u32
                    )),
                    "{c:?}: {}",
                    err(&line)
                );
            }
        }
        assert!(
            err(
                r#"{"model":"m","source":{"system":"s","adapter":"a\u0007"},"id":"c","payload":{}}"#
            )
            .starts_with(
                "field `source.adapter` (\"a\\u{7}\") may not contain the control character U+0007"
            )
        );
        assert_eq!(
            err(r#"{"source":{"system":"s"},"id":"1","payload":{}}"#),
            "missing field `model`"
        );
        assert_eq!(
            err(r#"{"model":"m","source":{},"id":"1","payload":{}}"#),
            "missing field `source.system`"
        );
        assert_eq!(
            err(r#"{"model":"m","source":{"system":"s"},"payload":{}}"#),
            "missing field `id`"
        );
        assert_eq!(
            err(r#"{"model":"m","source":{"system":"s"},"id":7,"payload":{}}"#),
            "field `id` must be a string, got a number"
        );
        assert_eq!(
            err(r#"{"model":"m","source":{"system":"s"},"id":"1","payload":[]}"#),
            "field `payload` must be an object, got an array"
        );
        assert!(
            err(r#"{"model":"m","source":{"system":"s"},"id":"1","payload":{},"occurred_at":"yesterday"}"#)
                .starts_with("field `occurred_at` is not an RFC 3339 time")
        );
        assert_eq!(
            parse_line(b"{\"model\":\"\xff\"}", now()).unwrap_err(),
            LineError::NotUtf8(10)
        );
    }
}
