//! Sequential equivalence end to end: for random record sequences (overlapping keys,
//! parents that come late or never, rejections, re-sends), the views after processing in
//! batches of a random size equal the views after processing one record per batch.

use flowhost_tests::{Host, Scratch, block_until_ok, snapshot};
use proptest::prelude::*;
use serde_json::{Value, json};

fn arb_line() -> impl Strategy<Value = String> {
    let serial = prop_oneof![
        Just(Value::Null),
        prop::sample::select(vec!["s1", "S1 ", "s2", "s3"]).prop_map(|s| json!(s)),
        Just(json!(["s1", "s2"])),
        Just(json!(7)),
    ];
    let device = (
        prop::sample::select(vec!["bms", "oem"]),
        1..5u8,
        serial,
        0..3u8,
    )
        .prop_map(|(system, id, serial, name)| {
            let mut payload = json!({"name": format!("n{name}")});
            if !serial.is_null() {
                payload["serial"] = serial;
            }
            ("device", system, format!("D{id}"), payload)
        });
    let sensor = (
        prop::sample::select(vec!["bms", "oem"]),
        1..4u8,
        prop::option::of(prop::sample::select(vec!["t1", "T2"])),
        prop::option::of(1..5u8),
    )
        .prop_map(|(system, id, code, device)| {
            let mut payload = json!({"unit": "C"});
            if let Some(code) = code {
                payload["code"] = json!(code);
            }
            if let Some(d) = device {
                payload["device_id"] = json!(format!("D{d}"));
            }
            ("sensor", system, format!("S{id}"), payload)
        });
    let reading = (prop::sample::select(vec!["bms", "oem"]), 1..4u8, 0..50u8).prop_map(
        |(system, sensor, n)| {
            (
                "reading",
                system,
                format!("R{n}"),
                json!({"sensor_id": format!("S{sensor}"), "value": n}),
            )
        },
    );
    (
        prop_oneof![3 => device, 2 => sensor, 2 => reading],
        0..60u32,
    )
        .prop_map(|((model, system, id, payload), minute)| {
            json!({"model": model, "source": {"system": system}, "id": id,
                   "occurred_at": format!("2026-03-01T10:{:02}:00Z", minute), "payload": payload})
            .to_string()
        })
}

fn arb_input() -> impl Strategy<Value = String> {
    prop::collection::vec((arb_line(), any::<bool>()), 1..40).prop_map(|lines| {
        let mut out = String::new();
        let mut resend = Vec::new();
        for (line, again) in lines {
            out.push_str(&line);
            out.push('\n');
            if again {
                resend.push(line);
            }
        }
        for line in resend {
            out.push_str(&line);
            out.push('\n');
        }
        out
    })
}

fn run(input: &str, batch: usize) -> Value {
    let db = Scratch::sqlite();
    let host = Host::new(&db.url);
    let out = host.ingest(input);
    assert!(out.status.code().is_some());
    block_until_ok(&host.run(&[
        "process",
        "--until-idle",
        "--batch-size",
        &batch.to_string(),
    ]));
    snapshot(&host)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn batched_processing_equals_one_record_per_batch(input in arb_input(), batch in 2usize..40) {
        prop_assert_eq!(run(&input, batch), run(&input, 1));
    }
}
