//! Any text as JSON: the canonical form is JSON again, a fixed point, the same for the
//! value re-read from its own text, and numbers keep their order and value through it. The
//! strict check's quick pass never passes a text its full walk refuses, and the quick
//! member walk locates members only in a text serde_json reads as one object.
#![no_main]

use flowhost_json::{Decimal, canonical_string, check_strict_parts, object_members, parse_strict};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn numbers<'a>(v: &'a Value, out: &mut Vec<&'a serde_json::Number>) {
    match v {
        Value::Number(n) => out.push(n),
        Value::Array(items) => items.iter().for_each(|i| numbers(i, out)),
        Value::Object(map) => map.values().for_each(|i| numbers(i, out)),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (quick, walk) = check_strict_parts(text);
    assert!(walk || !quick, "the quick pass passed what the walk refuses: {text:?}");
    if let Some(members) = object_members(text) {
        assert!(
            serde_json::from_str::<Box<serde_json::value::RawValue>>(text)
                .is_ok_and(|raw| raw.get().starts_with('{')),
            "members located in what serde_json does not read as an object: {text:?}"
        );
        for m in members {
            assert!(
                serde_json::from_str::<Box<serde_json::value::RawValue>>(&text[m.value.clone()])
                    .is_ok(),
                "a member's value is not one JSON value: {text:?}"
            );
        }
    }
    let Ok(value) = parse_strict(text) else {
        return;
    };
    let canonical = canonical_string(&value);
    let reread = parse_strict(&value.to_string()).expect("written JSON parses");
    assert_eq!(canonical_string(&reread), canonical, "{text}");
    let parsed = parse_strict(&canonical).expect("canonical JSON parses");
    assert_eq!(
        canonical_string(&parsed),
        canonical,
        "a fixed point: {text}"
    );
    let mut found = Vec::new();
    numbers(&value, &mut found);
    let decimals: Vec<Option<Decimal>> = found.iter().map(|n| Decimal::of(n)).collect();
    for d in decimals.iter().flatten() {
        let back = Decimal::parse(&d.to_string()).expect("canonical number parses");
        assert_eq!(&back, d);
    }
    for pair in decimals.windows(2) {
        if let [Some(a), Some(b)] = pair {
            // Order and equality agree.
            assert_eq!(a == b, a.cmp(b).is_eq());
            assert_eq!(a.cmp(b), b.cmp(a).reverse());
        }
    }
});
