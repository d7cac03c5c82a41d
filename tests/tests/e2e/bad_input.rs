//! Bad input: every refused line is reported with its line number and problem, and nothing
//! good is lost.

use flowhost_tests::{Host, Scratch, line, text};
use serde_json::json;

#[test]
fn every_kind_of_bad_line_is_named_and_good_lines_are_kept() {
    let db = Scratch::sqlite();
    let host = Host::new(&db.url);
    let mut input = Vec::new();
    input.extend(line("device", "bms", "D-1", json!({"serial":"A"})).as_bytes()); // 1 ok
    input.extend(b"{not json\n"); // 2
    input.extend(br#"{"source":{"system":"bms"},"id":"x","payload":{}}"#); // 3
    input.push(b'\n');
    input.extend(br#"{"model":"device","source":{"system":"bms"},"payload":{}}"#); // 4
    input.push(b'\n');
    input.extend(br#"{"model":"device","source":{},"id":"x","payload":{}}"#); // 5
    input.push(b'\n');
    input.extend(br#"{"model":"device","source":{"system":"bms"},"id":"x","payload":[1]}"#); // 6
    input.push(b'\n');
    input.extend(line("devcie", "bms", "D-2", json!({})).as_bytes()); // 7
    input.extend(b"{\"model\":\"device\",\"id\":\"\xff\xfe\"}\n"); // 8
    input.extend(b"\n"); // 9: blank, skipped
    input.extend(line("device", "bms", "D-3", json!({"serial":"C"})).as_bytes()); // 10 ok
    input.extend(br#"{"model":"device","source":{"system":"bms"},"id":"x","payload":{},"occurred_at":"noon"}"#); // 11
    input.push(b'\n');

    let first = host.ingest(&String::from_utf8_lossy(&input));
    assert_eq!(
        text(&first.stdout).trim(),
        "accepted 2, duplicates 0, refused 8"
    );
    // The same input as raw bytes (the text above replaced the invalid UTF-8).
    let raw = host.ingest_bytes(&input);
    assert!(
        !raw.status.success(),
        "refused lines make the exit non-zero"
    );
    let stderr = text(&raw.stderr);
    let expect = [
        "line 2: invalid JSON",
        "line 3: missing field `model`",
        "line 4: missing field `id`",
        "line 5: missing field `source.system`",
        "line 6: field `payload` must be an object, got an array",
        "line 7: unknown model 'devcie'; known: device, reading, sensor",
        "line 8: not valid UTF-8",
        "line 11: field `occurred_at` is not an RFC 3339 time",
    ];
    for e in expect {
        assert!(stderr.contains(e), "missing {e:?} in:\n{stderr}");
    }
    assert_eq!(
        text(&raw.stdout).trim(),
        "accepted 0, duplicates 2, refused 8",
        "the two good lines were accepted by the first run already"
    );
    host.process();
    assert_eq!(
        host.export("canonical", "device").len(),
        2,
        "good lines kept"
    );
}

#[test]
fn an_empty_file_and_a_huge_line_get_clear_messages() {
    let db = Scratch::sqlite();
    let host = Host::new(&db.url);
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.ndjson");
    std::fs::write(&empty, "").unwrap();
    let out = host.run(&["ingest", empty.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        "accepted 0, duplicates 0, refused 0"
    );
    assert!(text(&out.stderr).contains("no records (the input is empty)"));

    let big = dir.path().join("big.ndjson");
    let huge = format!(
        r#"{{"model":"device","source":{{"system":"bms"}},"id":"H","payload":{{"blob":"{}"}}}}"#,
        "x".repeat(10 << 20)
    );
    let content = line("device", "bms", "D-1", json!({"serial":"A"}))
        + &huge
        + "\n"
        + &line("device", "bms", "D-2", json!({"serial":"B"}));
    std::fs::write(&big, content).unwrap();
    let out = host.run(&["ingest", big.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    let expected = format!(
        "line 2: line is {} bytes, over the limit of 4194304 bytes",
        huge.len()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert_eq!(
        text(&out.stdout).trim(),
        "accepted 2, duplicates 0, refused 1"
    );
}

#[test]
fn a_model_whose_plugin_is_missing_is_accepted_and_waits() {
    let db = Scratch::sqlite();
    let host = Host::new(&db.url);
    flowhost_tests::block_until_ok(&host.ingest(&line(
        "device",
        "bms",
        "D-1",
        json!({"serial":"A"}),
    )));
    // The same database, now with a plugins folder without the device plugin.
    let partial = tempfile::tempdir().unwrap();
    std::fs::copy(
        flowhost_tests::plugin("sensor"),
        partial.path().join("sensor.wasm"),
    )
    .unwrap();
    let without = Host {
        db: db.url.clone(),
        plugins: partial.path().to_path_buf(),
    };
    let out = without.ingest(&line("device", "bms", "D-2", json!({"serial":"B"})));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "accepted 1, duplicates 0, refused 0"
    );
    without.process();
    assert!(
        without.export("canonical", "device").is_empty(),
        "waits for its plugin"
    );
    assert!(without.parked().is_empty(), "waiting is not parking");
    host.process();
    assert_eq!(host.export("canonical", "device").len(), 2);
}

#[test]
fn a_database_that_cannot_be_opened_is_one_clear_line() {
    let host = Host::new("postgres://postgres@127.0.0.1:1/nothing");
    let out = host.run(&["parked"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr
            .starts_with("error: cannot open the database postgres://postgres@127.0.0.1:1/nothing"),
        "{stderr}"
    );
}

#[test]
fn a_nul_character_is_refused_by_its_line_and_the_batch_is_kept_on_both_backends() {
    for db in Scratch::both() {
        let host = Host::new(&db.url);
        let input = line("device", "bms", "D-1", json!({"serial":"A"}))
            + &line("device", "bms", "D-2", json!({"serial":"B\u{0}C"}))
            + &line("device", "bms", "D-3", json!({"serial":"C"}));
        let out = host.ingest(&input);
        let stderr = text(&out.stderr);
        assert_eq!(
            text(&out.stdout).trim(),
            "accepted 2, duplicates 0, refused 1",
            "{}: {stderr}",
            db.backend
        );
        assert!(
            stderr.contains("line 2: `payload.serial` contains a NUL character"),
            "{}: {stderr}",
            db.backend
        );
    }
}
