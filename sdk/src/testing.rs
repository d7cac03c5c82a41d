//! Running a model natively in its own tests, on NDJSON records, without a host: what it
//! decides for each record, and the views of records projected together.
//!
//! ```
//! use flowhost_sdk::{Description, Model, Record, Rejection, testing};
//! struct Pump;
//! impl Model for Pump {
//!     fn describe() -> Description { Description::entity("pump", "0.1.0") }
//!     fn keys(r: &Record) -> Result<Vec<String>, Rejection> {
//!         Ok(r.strings("serial").map(|s| format!("serial:{}", s.trim().to_uppercase())).collect())
//!     }
//! }
//! let records = testing::records(
//!     r#"{"model":"pump","source":{"system":"bms"},"id":"P-1","occurred_at":"2026-03-01T10:00:00Z","payload":{"serial":"sn-1"}}"#,
//!     "pump",
//! );
//! let keyed = testing::associate::<Pump>(&records);
//! assert_eq!(keyed[0].as_ref().unwrap().keys, ["serial:SN-1"]);
//! let views = testing::project_together::<Pump>(&records);
//! assert_eq!(views.canonical["serial"], serde_json::json!(["sn-1"]));
//! ```

use crate::{Group, Keyed, KeyedRecord, Model, Projection, Record, Rejection, Source, Value};

/// The records of `model` in NDJSON text (one record a line, in the intake format; lines of
/// other models and blank lines are skipped), numbered in line order as intake would.
///
/// # Panics
/// On a line that is not a record, naming the line: this is for tests.
pub fn records(ndjson: &str, model: &str) -> Vec<Record> {
    let mut out = Vec::new();
    for (n, line) in ndjson.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: &str| -> ! { panic!("line {}: {what}: {line}", n + 1) };
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| bad(&e.to_string()));
        let text = |field: &str| v.get(field).and_then(Value::as_str).map(str::to_string);
        if text("model").as_deref() != Some(model) {
            continue;
        }
        let system = v["source"]["system"]
            .as_str()
            .unwrap_or_else(|| bad("source.system is missing"))
            .to_string();
        let adapter = v["source"]["adapter"]
            .as_str()
            .map_or_else(|| system.clone(), str::to_string);
        let occurred_at = text("occurred_at").unwrap_or_else(|| "1970-01-01T00:00:00Z".into());
        out.push(Record {
            seq: n as u64 + 1,
            source: Source { system, adapter },
            external_id: text("id").unwrap_or_else(|| bad("id is missing")),
            occurred_micros: micros(&occurred_at)
                .unwrap_or_else(|| bad("occurred_at is not RFC 3339 UTC (…Z)")),
            occurred_at,
            payload: v["payload"]
                .as_object()
                .cloned()
                .unwrap_or_else(|| bad("payload is not an object"))
                .into(),
        });
    }
    out
}

/// What the model decides for each record: its keys and parents, or its rejection.
pub fn associate<M: Model>(records: &[Record]) -> Vec<Result<Keyed, Rejection>> {
    records.iter().map(M::associate).collect()
}

/// The views of `records` projected as one reference (as if they all shared a key), in
/// their order, read back as maps.
///
/// # Panics
/// When a view the model wrote is not a JSON object: this is for tests.
pub fn project_together<M: Model>(records: &[Record]) -> Projection {
    let group = Group {
        reference: "test-reference".into(),
        records: records
            .iter()
            .map(|r| KeyedRecord {
                record: r.clone(),
                parents: Vec::new(),
            })
            .collect(),
    };
    M::project(&group, &M::describe())
        .projection()
        .unwrap_or_else(|e| panic!("the model's views are not JSON objects: {e}"))
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` in microseconds since the Unix epoch.
fn micros(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !text.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let fraction = &text[19..text.len() - 1];
    let micros = match fraction.strip_prefix('.') {
        None if fraction.is_empty() => 0,
        Some(digits) if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) => {
            format!("{:0<6}", &digits[..digits.len().min(6)])
                .parse()
                .ok()?
        }
        _ => return None,
    };
    // Days from 1970-01-01 to the date (the proleptic Gregorian calendar).
    let (y, mo) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000_000 + s * 1_000_000 + micros)
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_read_as_intake_reads_them() {
        use super::micros;
        assert_eq!(micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(micros("2026-03-01T10:00:00Z"), Some(1_772_359_200_000_000));
        assert_eq!(
            micros("2026-03-01T10:00:00.5Z"),
            Some(1_772_359_200_500_000)
        );
        assert_eq!(micros("2026-03-01 10:00:00Z"), None);
        assert_eq!(micros("2026-03-01T10:00:00+01:00"), None);
    }
}
