//! The default projection, checked natively: the documented view rules (README: the views), and that the result
//! depends only on the set of records, never on their batching or order.

use flowhost_sdk::projection::{Projector, flatten, project, project_views};
use flowhost_sdk::{
    Group, KeyedRecord, Map, ParentLink, PathPolicy, Policy, Record, Source, Value, json,
};
use proptest::prelude::*;

fn rec(seq: u64, system: &str, id: &str, micros: i64, payload: Value) -> KeyedRecord {
    let Value::Object(payload) = payload else {
        panic!("payload must be an object")
    };
    KeyedRecord {
        record: Record {
            seq,
            source: Source {
                system: system.into(),
                adapter: format!("{system}-v1"),
            },
            external_id: id.into(),
            occurred_at: String::new(),
            occurred_micros: micros,
            payload: payload.into(),
        },
        parents: Vec::new(),
    }
}

fn group(records: Vec<KeyedRecord>) -> Group {
    Group {
        reference: "r".into(),
        records,
    }
}

#[test]
fn worked_example_merge() {
    let p = project(
        &group(vec![
            rec(
                1,
                "bms",
                "D-1",
                1,
                json!({"serial":"sn-001","name":"Chiller 1"}),
            ),
            rec(
                2,
                "oem",
                "X-9",
                2,
                json!({"serial":"SN-001 ","firmware":"1.2"}),
            ),
        ]),
        &[],
    );
    assert_eq!(
        Value::Object(p.canonical),
        json!({"serial":["sn-001"],"name":["Chiller 1"],"firmware":["1.2"]})
    );
    assert_eq!(
        p.lineage["serial"],
        json!([{"value":"sn-001","sources":["bms/bms-v1/D-1","oem/oem-v1/X-9"]}])
    );
    // last: the latest occurred_at wins, as sent.
    assert_eq!(p.root["serial"], json!("SN-001 "));
}

#[test]
fn flatten_paths_arrays_and_nulls() {
    let Value::Object(m) = json!({
        "location": {"floor": 3, "room": null},
        "items": [{"name": "a"}, {"name": "b"}],
        "tags": [],
        "flag": true
    }) else {
        unreachable!()
    };
    let flat: Vec<(String, Value, bool)> = flatten(&m);
    assert_eq!(
        flat,
        vec![
            ("location.floor".into(), json!(3), false),
            ("items.name".into(), json!("a"), true),
            ("items.name".into(), json!("b"), true),
            ("flag".into(), json!(true), false),
        ]
    );
}

/// Values of one path that lie apart in a payload (objects inside a list) are one path's
/// values all the same, in document order: the record's own value at the path is all of
/// them, as a list.
#[test]
fn a_path_met_apart_in_one_record_gathers_its_values() {
    let p = project(
        &group(vec![rec(
            1,
            "bms",
            "D-1",
            1,
            json!({
                "parts": [{"name": "Pump", "n": 1}, {"n": 2}, {"name": "Fan", "n": 3}],
                "name": "Chiller",
                "z": {"name": "Valve"}
            }),
        )]),
        &[],
    );
    assert_eq!(
        Value::Object(p.canonical),
        json!({
            "parts.name": ["Pump", "Fan"],
            "parts.n": [1, 2, 3],
            "name": ["Chiller"],
            "z.name": ["Valve"]
        })
    );
    assert_eq!(p.root["parts.name"], json!(["Pump", "Fan"]));
    assert_eq!(p.root["parts.n"], json!([1, 2, 3]));
    assert_eq!(p.root["name"], json!("Chiller"));
}

#[test]
fn distinct_values_rules() {
    let p = project(
        &group(vec![
            rec(1, "a", "1", 1, json!({"v": [" Foo", 1, "1", 1.0, true]})),
            rec(2, "b", "2", 2, json!({"v": ["foo ", 2.5, "FOO"]})),
        ]),
        &[],
    );
    // " Foo" kept as first sent; 1 and 1.0 are one number; "1" is a string, not 1.
    assert_eq!(p.canonical["v"], json!([" Foo", 1, "1", true, 2.5]));
    // An array stays a list in the root view.
    assert_eq!(p.root["v"], json!(["foo ", 2.5, "FOO"]));
}

#[test]
fn text_beyond_ascii_folds_by_the_unicode_rules() {
    let p = project(
        &group(vec![
            rec(1, "a", "1", 1, json!({"city": " Ärhus", "word": "ΟΔΟΣ"})),
            rec(2, "b", "2", 2, json!({"city": "ärhus ", "word": "οδος"})),
            rec(3, "c", "3", 3, json!({"city": "ARHUS", "word": "οδοσ"})),
        ]),
        &[],
    );
    // Ä and ä are one letter; A is another. A final capital sigma lowers to ς, as the whole
    // word is lowered: "ΟΔΟΣ" is "οδος", not "οδοσ".
    assert_eq!(p.canonical["city"], json!([" Ärhus", "ARHUS"]));
    assert_eq!(p.canonical["word"], json!(["ΟΔΟΣ", "οδοσ"]));
    assert_eq!(
        p.lineage["city"][0]["sources"],
        json!(["a/a-v1/1", "b/b-v1/2"])
    );
}

#[test]
fn root_policies() {
    let policies = vec![
        PathPolicy {
            path: "first".into(),
            policy: Policy::First,
        },
        PathPolicy {
            path: "max".into(),
            policy: Policy::Max,
        },
        PathPolicy {
            path: "min".into(),
            policy: Policy::Min,
        },
        PathPolicy {
            path: "pref".into(),
            policy: Policy::Coalesce(vec!["oem".into(), "bms".into()]),
        },
    ];
    let p = project(
        &group(vec![
            // intake order differs from occurred_at order on purpose
            rec(
                1,
                "bms",
                "D",
                50,
                json!({"last":"b","first":"b","max":3,"min":3,"pref":"bms"}),
            ),
            rec(
                2,
                "oem",
                "X",
                10,
                json!({"last":"a","first":"a","max":7,"min":-2,"pref":null}),
            ),
            rec(3, "crm", "C", 99, json!({"pref":"crm","max":"x"})),
        ]),
        &policies,
    );
    assert_eq!(p.root["last"], json!("b"));
    assert_eq!(p.root["first"], json!("a"));
    // strings sort above numbers
    assert_eq!(p.root["max"], json!("x"));
    assert_eq!(p.root["min"], json!(-2));
    // oem asserted null (nothing), so the next priority, bms, wins over unlisted crm
    assert_eq!(p.root["pref"], json!("bms"));
}

#[test]
fn last_ties_on_time_go_to_latest_intake_and_parents_follow_latest() {
    let mut a = rec(1, "bms", "S", 5, json!({"unit":"C"}));
    a.parents = vec![ParentLink {
        model: "device".into(),
        reference: "old".into(),
    }];
    let mut b = rec(2, "bms", "S", 5, json!({"unit":"F"}));
    b.parents = vec![ParentLink {
        model: "device".into(),
        reference: "new".into(),
    }];
    let p = project(&group(vec![a, b]), &[]);
    assert_eq!(p.root["unit"], json!("F"));
    assert_eq!(p.parents[0].reference, "new");
}

#[test]
fn lineage_lists_each_source_once_in_intake_order() {
    let p = project(
        &group(vec![
            rec(1, "oem", "X", 1, json!({"s":"A"})),
            rec(2, "bms", "D", 2, json!({"s":"a"})),
            rec(3, "oem", "X", 3, json!({"s":"a ", "n": 2})),
        ]),
        &[],
    );
    assert_eq!(
        p.lineage["s"],
        json!([{"value":"A","sources":["oem/oem-v1/X","bms/bms-v1/D"]}])
    );
    assert_eq!(
        p.lineage["n"],
        json!([{"value":2,"sources":["oem/oem-v1/X"]}])
    );
}

#[test]
fn lineage_keeps_a_string_and_a_number_of_the_same_text_apart() {
    let p = project(
        &group(vec![
            rec(1, "bms", "D", 1, json!({"n":"1"})),
            rec(2, "oem", "X", 2, json!({"n": 1})),
            rec(3, "crm", "C", 3, json!({"n": 1.0})),
        ]),
        &[],
    );
    assert_eq!(p.canonical["n"], json!(["1", 1]));
    assert_eq!(
        p.lineage["n"],
        json!([
            {"value":"1","sources":["bms/bms-v1/D"]},
            {"value":1,"sources":["oem/oem-v1/X","crm/crm-v1/C"]}
        ])
    );
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec!["a", "A", " a", "b", "B ", "c", "1", "É\"\\\u{1}"])
            .prop_map(|s| json!(s)),
        (0i64..4).prop_map(|n| json!(n)),
        prop::sample::select(vec![0.5f64, 1.0, 2.0]).prop_map(|f| json!(f)),
        any::<bool>().prop_map(|b| json!(b)),
        Just(Value::Null),
    ]
}

fn arb_payload() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["x", "y", "z.w", "list", "q\"é"]),
            prop::collection::vec(arb_value(), 1..3),
        ),
        0..4,
    )
    .prop_map(|fields| {
        let mut m = Map::new();
        for (k, vs) in fields {
            let v = if k == "list" {
                Value::Array(vs)
            } else {
                vs.into_iter().next().unwrap_or(Value::Null)
            };
            if let Some((outer, inner)) = k.split_once('.') {
                let mut o = Map::new();
                o.insert(inner.into(), v);
                m.insert(outer.into(), Value::Object(o));
            } else {
                m.insert(k.into(), v);
            }
        }
        m
    })
}

fn arb_records() -> impl Strategy<Value = Vec<KeyedRecord>> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["bms", "oem", "crm"]),
            // An id that JSON must escape, so that a source label is written escaped.
            prop::sample::select(vec!["1", "2", "q\"\\\u{e9}\n"]),
            0i64..5,
            arb_payload(),
        ),
        0..12,
    )
    .prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(|(i, (system, id, micros, payload))| {
                rec(i as u64 + 1, system, id, micros, Value::Object(payload))
            })
            .collect()
    })
}

fn all_policies() -> Vec<PathPolicy> {
    vec![
        PathPolicy {
            path: "x".into(),
            policy: Policy::Max,
        },
        PathPolicy {
            path: "y".into(),
            policy: Policy::Min,
        },
        PathPolicy {
            path: "z.w".into(),
            policy: Policy::Coalesce(vec!["oem".into()]),
        },
        PathPolicy {
            path: "list".into(),
            policy: Policy::First,
        },
    ]
}

proptest! {
    /// Projecting all records at once equals merging projections of any split into batches,
    /// whatever order the batches come in.
    #[test]
    fn batching_and_order_do_not_matter(
        records in arb_records(),
        cuts in prop::collection::vec(0usize..12, 0..4),
        reverse in any::<bool>(),
    ) {
        let policies = all_policies();
        let whole = project(&group(records.clone()), &policies);

        let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c.min(records.len())).collect();
        bounds.push(0);
        bounds.push(records.len());
        bounds.sort();
        let mut batches: Vec<&[KeyedRecord]> =
            bounds.windows(2).map(|w| &records[w[0]..w[1]]).collect();
        if reverse {
            batches.reverse();
        }
        let mut total = Projector::new(&policies);
        for batch in batches {
            let mut part = Projector::new(&policies);
            for r in batch.iter().rev() {
                part.add(r);
            }
            total.merge(part);
        }
        prop_assert_eq!(total.finish(), whole);
    }

    /// The views a plugin hands back, written straight to text, are the maps' JSON text byte
    /// for byte, and read back as the same maps.
    #[test]
    fn views_written_as_text_are_the_maps_serialised(records in arb_records()) {
        let policies = all_policies();
        let maps = project(&group(records.clone()), &policies);
        let views = project_views(&group(records), &policies);
        prop_assert_eq!(&views, &flowhost_sdk::Views::from(maps.clone()));
        prop_assert_eq!(views.projection().unwrap(), maps);
    }

    /// Projection is idempotent: adding the same records twice changes nothing.
    #[test]
    fn projecting_twice_changes_nothing(records in arb_records()) {
        let policies = all_policies();
        let once = project(&group(records.clone()), &policies);
        let mut twice = Projector::new(&policies);
        for r in records.iter().chain(records.iter()) {
            twice.add(r);
        }
        prop_assert_eq!(twice.finish(), once);
    }
}
