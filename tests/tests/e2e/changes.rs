//! The change feed over HTTP (`GET /v1/changes`): one change per reference whose views a
//! projection changed, in order, with the views as exported; none when a projection changes
//! nothing; a long poll answers within a second of the projection it waited for; bad
//! parameters are refused by name.

use flowhost_tests::{Host, Http, Scratch, Server, count_by, line, wait_for};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

const WAIT: Duration = Duration::from_secs(60);

fn device(system: &str, id: &str, payload: Value) -> String {
    line("device", system, id, payload)
}

/// Waits until nothing is queued or dirty.
fn settled(url: &str) {
    wait_for("the stages to settle", WAIT, || {
        count_by(
            url,
            "SELECT 'n', (SELECT COUNT(*) FROM queue) + (SELECT COUNT(*) FROM dirty)",
        )[0]
        .1 == 0
    });
}

fn micros_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

#[test]
fn the_change_feed_follows_projections_and_only_real_changes() {
    for db in Scratch::both() {
        let host = Host::new(&db.url);
        let mut server = Server::start(&host, &[]);
        let http = Http::new(&server.url());
        let body = device("bms", "D-1", json!({"serial": "sn-1", "name": "Chiller"}))
            + &device("oem", "X-1", json!({"serial": "SN-1 ", "firmware": "1.2"}))
            + &device("bms", "D-2", json!({"serial": "sn-2", "name": "Pump"}));
        assert_eq!(http.records(&body).status, 200);
        settled(&db.url);

        // Every reference's last change carries its exported canonical and root views.
        let answer = http.get("/v1/changes?after=0");
        assert_eq!(answer.status, 200, "{}", answer.body);
        let changes = answer.lines();
        let seqs: Vec<i64> = changes.iter().map(|c| c["seq"].as_i64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        let last = *seqs.last().expect("changes");
        assert_eq!(answer.header("x-next-after"), Some(last.to_string()));
        let mut latest: HashMap<String, Value> = HashMap::new();
        for c in &changes {
            assert_eq!(c["model"], "device", "{c}");
            assert_eq!(c["version"].as_str().map(str::len), Some(64), "{c}");
            latest.insert(c["id"].as_str().unwrap().to_string(), c.clone());
        }
        let canonical = host.export("canonical", "device");
        let roots = host.export("root", "device");
        assert_eq!(latest.len(), canonical.len(), "{changes:?}");
        for (view, root) in canonical.iter().zip(&roots) {
            let c = &latest[view["id"].as_str().unwrap()];
            assert_eq!(c["canonical"], view["canonical"], "{}", db.backend);
            assert_eq!(c["root"], root["root"], "{}", db.backend);
        }
        // Filtered by model, and paged.
        let page = http.get("/v1/changes?after=0&model=device&limit=1");
        assert_eq!(page.lines().len(), 1);
        assert_eq!(page.header("x-next-after"), Some(seqs[0].to_string()));
        assert_eq!(http.get("/v1/changes?model=sensor").lines().len(), 0);

        // A newer record that asserts nothing new (a null field; its source is listed
        // already) is keyed and projected, and changes no view: no change.
        let keyed_before = count_by(&db.url, "SELECT 'n', COUNT(*) FROM keyed")[0].1;
        let same = device(
            "bms",
            "D-2",
            json!({"serial": "sn-2", "name": "Pump", "note": null}),
        );
        assert_eq!(http.records(&same).status, 200);
        wait_for("the record to be keyed", WAIT, || {
            count_by(&db.url, "SELECT 'n', COUNT(*) FROM keyed")[0].1 == keyed_before + 1
        });
        settled(&db.url);
        let none = http.get(&format!("/v1/changes?after={last}"));
        assert_eq!(none.lines().len(), 0, "{}: {}", db.backend, none.body);
        assert_eq!(none.header("x-next-after"), None);
        let metrics = http.get("/metrics").body;
        assert!(
            metrics.contains(&format!("\nflowhost_changes_last_seq {last}\n")),
            "{metrics}"
        );

        // A long poll waits for the next change and answers within a second of it.
        let base = server.url();
        let follower = std::thread::spawn(move || {
            let answer = Http::new(&base).get(&format!("/v1/changes?after={last}&wait=30"));
            (answer, micros_now())
        });
        let changed = device("bms", "D-2", json!({"serial": "sn-2", "name": "Pump 2"}));
        assert_eq!(http.records(&changed).status, 200);
        let (answer, answered_at) = follower.join().unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        let lines = answer.lines();
        assert_eq!(lines.len(), 1, "{}", answer.body);
        let id = lines[0]["id"].as_str().unwrap().to_string();
        assert_eq!(lines[0]["canonical"]["name"], json!(["Pump", "Pump 2"]));
        let updated = count_by(
            &db.url,
            &format!("SELECT reference, updated_micros FROM views WHERE reference = '{id}'"),
        )[0]
        .1;
        let after_projection = answered_at - updated;
        assert!(
            (0..1_000_000).contains(&after_projection),
            "{}: answered {after_projection} µs after the projection",
            db.backend
        );

        // Many followers waiting at once all get the next change (one watcher reads the
        // feed's end for all of them).
        let next = lines[0]["seq"].as_i64().unwrap();
        let followers: Vec<_> = (0..40)
            .map(|_| {
                let base = server.url();
                std::thread::spawn(move || {
                    Http::new(&base).get(&format!("/v1/changes?after={next}&wait=30"))
                })
            })
            .collect();
        let again = device("bms", "D-2", json!({"serial": "sn-2", "name": "Pump 3"}));
        assert_eq!(http.records(&again).status, 200);
        for f in followers {
            let answer = f.join().unwrap();
            assert_eq!(answer.status, 200, "{}", answer.body);
            let lines = answer.lines();
            assert!(!lines.is_empty(), "{}: {}", db.backend, answer.body);
            assert_eq!(lines[0]["id"], id.as_str());
        }

        // Waiting with nothing to come ends at its time with an empty answer.
        let started = std::time::Instant::now();
        let empty = http.get("/v1/changes?after=1000000000&wait=1");
        assert_eq!((empty.status, empty.body.as_str()), (200, ""));
        assert!(started.elapsed() >= Duration::from_secs(1));

        // Bad parameters are refused by name.
        for (query, words) in [
            ("wait=61", "wait must be a whole number from 0 to 60"),
            ("after=-1", "after must be a whole number"),
            ("limit=0", "limit must be"),
            ("since=3", "unknown query parameter 'since'"),
        ] {
            let a = http.get(&format!("/v1/changes?{query}"));
            assert_eq!(a.status, 400, "{query}: {}", a.body);
            assert!(a.body.contains(words), "{query}: {}", a.body);
        }
        let a = http.get("/v1/changes?model=devcie");
        assert_eq!(a.status, 404, "{}", a.body);
        assert!(server.stop().success());
    }
}
