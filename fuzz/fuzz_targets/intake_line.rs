//! Any bytes as an intake line: never a panic; an accepted record is within every limit,
//! its payload text parses back to the same value (same hash), and its source key is
//! unambiguous.
#![no_main]

use flowhost_core::intake::{IntakeLimits, parse_line_within, payload_hash};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = IntakeLimits {
        max_payload_bytes: 4096,
        max_depth: 8,
        max_values: 64,
        ..IntakeLimits::default()
    };
    let now = chrono::DateTime::from_timestamp(1_780_000_000, 0).expect("a time");
    let Ok(record) = parse_line_within(data, now, &limits) else {
        return;
    };
    assert!(!record.model.trim().is_empty());
    assert!(!record.external_id.trim().is_empty());
    assert!(record.external_id.len() <= limits.max_id_bytes);
    assert!(record.source.system.len() <= limits.max_system_bytes);
    assert!(!record.source.system.contains(':'));
    assert!(!record.source.system.chars().any(char::is_control));
    assert!(record.payload.len() <= limits.max_payload_bytes);
    assert!(!record.external_id.contains('\0'));
    let again = flowhost_json::parse_strict(&record.payload).expect("the kept payload parses");
    assert!(again.is_object());
    assert_eq!(
        payload_hash(&again),
        record.payload_hash,
        "{}",
        record.payload
    );
    assert_eq!(again.to_string(), record.payload, "kept text is stable");
    assert!(record.occurred_micros <= now.timestamp_micros() + 86_400_000_000);
});
