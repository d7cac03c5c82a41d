//! Numbers come back out as they went in, views compare them by exact value, and lineage
//! keeps the sources of a string and a number apart.

use flowhost_tests::{Host, Http, Scratch, Server, block_until_ok, line};
use serde_json::json;

fn raw_line(model: &str, id: &str, payload: &str) -> String {
    format!(
        "{{\"model\":\"{model}\",\"source\":{{\"system\":\"bms\"}},\"id\":\"{id}\",\"occurred_at\":\"2026-03-01T10:00:00Z\",\"payload\":{payload}}}\n"
    )
}

#[test]
fn big_and_precise_numbers_are_kept_and_compared_exactly() {
    for db in Scratch::both() {
        let host = Host::new(&db.url);
        let input = raw_line("device", "D-1", r#"{"serial":"S1","n":100000000000000000000}"#)
            + &raw_line("device", "D-1", r#"{"serial":"S1","n":100000000000000000001}"#)
            // The same value as the first, spelt otherwise: a duplicate.
            + &raw_line("device", "D-1", r#"{"serial":"S1","n":1.00000000000000000000e20}"#)
            + &raw_line("device", "D-2", r#"{"serial":"S1","n":"1","m":1.50}"#)
            + &raw_line("device", "D-3", r#"{"serial":"S1","n":1}"#)
            + &line("sensor", "bms", "T-1", json!({"code": "T1", "device_id": "D-1"}))
            + &raw_line("reading", "R-1", r#"{"sensor_id":"T-1","value":0.1000000000000000055511151231257827}"#);
        let out = host.ingest(&input);
        assert!(
            flowhost_tests::text(&out.stdout).contains("accepted 6, duplicates 1, refused 0"),
            "{}",
            flowhost_tests::text(&out.stdout)
        );
        host.process();

        let device = host.export("canonical", "device");
        assert_eq!(device.len(), 1, "{device:?}");
        let text = device[0].to_string();
        // Two distinct big numbers, then "1" and 1 as two values; 1.50 as sent.
        assert!(
            text.contains(r#""n":[100000000000000000000,100000000000000000001,"1",1]"#),
            "{}: {text}",
            db.backend
        );
        assert!(text.contains(r#""m":[1.50]"#), "{text}");
        let lineage = host.export("lineage", "device");
        let n = &lineage[0]["lineage"]["n"];
        assert_eq!(n.as_array().unwrap().len(), 4, "{n}");
        assert_eq!(n[2]["value"], json!("1"));
        assert_eq!(n[2]["sources"], json!(["bms/bms/D-2"]));
        assert_eq!(n[3]["sources"], json!(["bms/bms/D-3"]));

        let values = host.export("values", "reading");
        let text = values[0].to_string();
        assert!(
            text.contains(r#""value":0.1000000000000000055511151231257827"#),
            "{}: {text}",
            db.backend
        );

        let mut server = Server::start(&host, &[]);
        let http = Http::new(&server.url());
        let body = http.get("/v1/models/device/canonical").body;
        assert!(
            body.contains("100000000000000000001") && !body.contains("1e+20"),
            "{body}"
        );
        server.stop();
    }
}

/// A payload that differs from the last only in how a number is spelt is no new
/// observation, on both channels.
#[test]
fn respelt_numbers_are_duplicates_over_http_too() {
    let db = Scratch::sqlite();
    let host = Host::new(&db.url);
    block_until_ok(&host.ingest(&raw_line("device", "D-1", r#"{"serial":"S1","n":1}"#)));
    let mut server = Server::start(&host, &[]);
    let http = Http::new(&server.url());
    let answer = http.records(
        &(raw_line("device", "D-1", r#"{"n":1.0,"serial":"S1"}"#)
            + &raw_line("device", "D-1", r#"{"serial":"S1","n":10e-1}"#)
            + &raw_line("device", "D-1", r#"{"serial":"S1","n":1.01}"#)),
    );
    assert_eq!(answer.json()["duplicates"], 2, "{}", answer.body);
    assert_eq!(answer.json()["accepted"], 1, "{}", answer.body);
    server.stop();
}
