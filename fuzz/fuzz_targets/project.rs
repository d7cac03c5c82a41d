//! Any payloads through the SDK's default projection: never a panic; the views are JSON
//! objects; every canonical value has exactly one lineage entry, in the same order, whose
//! sources are among the records'; projecting the records in two parts and merging gives
//! the same views as projecting them at once.
#![no_main]

use flowhost_sdk::projection::{Projector, project};
use flowhost_sdk::{Group, KeyedRecord, Map, PathPolicy, Payload, Policy, Record, Source, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Up to four payloads, one per line.
    let mut records = Vec::new();
    for (i, line) in text.lines().take(4).enumerate() {
        let Ok(Value::Object(map)) = flowhost_json::parse_strict(line) else {
            continue;
        };
        // The plugin's lazily read payload over the same text reads as the whole parse.
        let payload = Payload::parse(line.to_string()).expect("an object intake takes");
        for (key, value) in &map {
            assert_eq!(payload.get(key), Some(value), "member {key}");
        }
        assert_eq!(*payload, map);
        records.push(KeyedRecord {
            record: Record {
                seq: i as u64 + 1,
                source: Source {
                    system: format!("s{}", i % 2),
                    adapter: "a".into(),
                },
                external_id: format!("id{i}"),
                occurred_at: String::new(),
                occurred_micros: (i as i64 * 7) % 3,
                payload,
            },
            parents: Vec::new(),
        });
    }
    if records.is_empty() {
        return;
    }
    let paths: Vec<String> = records
        .iter()
        .flat_map(|r| r.record.payload.keys().cloned())
        .collect();
    let policies: Vec<PathPolicy> = paths
        .iter()
        .enumerate()
        .map(|(i, path)| PathPolicy {
            path: path.clone(),
            policy: match i % 5 {
                0 => Policy::Last,
                1 => Policy::First,
                2 => Policy::Max,
                3 => Policy::Min,
                _ => Policy::Coalesce(vec!["s1".into()]),
            },
        })
        .collect();
    let group = Group {
        reference: "r".into(),
        records: records.clone(),
    };
    let whole = project(&group, &policies);
    for (path, values) in &whole.canonical {
        let values = values.as_array().expect("canonical values are a list");
        let entries = whole.lineage[path].as_array().expect("lineage is a list");
        assert_eq!(values.len(), entries.len(), "{path}");
        for (v, e) in values.iter().zip(entries) {
            assert_eq!(&e["value"], v);
            assert!(!e["sources"].as_array().unwrap().is_empty());
        }
    }
    let _: Map<String, Value> = whole.root.clone();
    // In two parts, merged.
    let (a, b) = records.split_at(records.len() / 2);
    let mut left = Projector::new(&policies);
    a.iter().for_each(|r| left.add(r));
    let mut right = Projector::new(&policies);
    b.iter().for_each(|r| right.add(r));
    left.merge(right);
    let merged = left.finish();
    assert_eq!(merged.canonical, whole.canonical);
    assert_eq!(merged.lineage, whole.lineage);
    assert_eq!(merged.root, whole.root);
});
